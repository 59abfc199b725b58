//! UPDATE and DELETE: read the target rows through DataFusion (with their hidden key and row
//! hash), compute the new rows, and record the writes with the guards of what was read. The
//! target may have an alias and be joined with other tables (`UPDATE … FROM`, `DELETE … USING`):
//! each target row is written once however many rows it joins.
//!
//! Owns the choice of guard for a target read: row guards when the `WHERE` is a primary-key
//! point (see `point.rs`), otherwise the table's version; every other table the statement
//! reads is guarded as a whole. A primary key changed by UPDATE moves the row (delete, insert).
//! A `WHERE` that is nothing but a primary-key point is read without a DataFusion plan
//! ([`Planner::read_point`]): the rows are looked up by key and the SET expressions evaluated
//! over them.

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, Expr, FromTable, Statement, TableFactor, TableWithJoins, UpdateTableFromKind,
};

use super::point::point_guards;
use super::{Planner, StatementResult, ident, object_name, parse_one, point_keys, pure_point_keys, quote, run_query};
use crate::catalog::{HASH_COLUMN, KEY_COLUMN, TableDef};
use crate::codec;
use crate::coerce::coerce_array;
use crate::command::{RowGuard, RowOp};
use crate::error::{Result, SqlError};
use crate::types::Value;

impl Planner<'_> {
    /// Reads the rows an UPDATE/DELETE targets: key, hash and every visible column, plus
    /// `extra` expressions (the new values of an UPDATE's SET, in order). Returns the batches and the row guards to record (the target table
    /// is guarded as a whole unless the read is a primary-key point whose rows it returned or
    /// that has none).
    async fn read_targets(
        &mut self,
        def: &TableDef,
        stmt_for_relations: &Statement,
        target: &Target<'_>,
        selection: Option<&Expr>,
        extra: &[Expr],
    ) -> Result<(Vec<RecordBatch>, Vec<RowGuard>)> {
        let target_refs = self.guard_relations(stmt_for_relations, Some(&def.name))?;
        // Only the plain form (no alias, no other tables) is read by key.
        let plain = target_refs == 1 && target.alias.is_none() && target.from.is_empty();
        let points = if plain { selection.and_then(|s| point_keys(def, s)) } else { None };
        // A point read may still need the table guard (see `point_guards`): its version is read
        // before the rows, so a write in between is a conflict.
        let fallback = match points {
            Some(_) => self.table_version_to_guard(def.id)?,
            None => {
                self.guard_table(def.id)?;
                None
            }
        };
        let pure = if plain { selection.and_then(|s| pure_point_keys(def, s)) } else { None };
        let batches = match pure.and_then(|keys| self.read_point(def, &keys, extra).transpose()) {
            Some(read) => vec![read?],
            None => {
                // The target's columns by the name the statement gives it (its alias, or its
                // own name), so the other tables' columns of the same name do not clash.
                let q = quote(target.alias.unwrap_or(&def.name));
                let mut select = vec![format!("{q}.{}", quote(KEY_COLUMN)), format!("{q}.{}", quote(HASH_COLUMN))];
                select.extend(def.visible().map(|c| format!("{q}.{}", quote(&def.columns[c].name))));
                select.extend(extra.iter().enumerate().map(|(i, e)| format!("{e} AS \"__new_{}\"", i + 1)));
                let mut sql = format!("SELECT {} FROM {}", select.join(", "), quote(&def.name));
                if let Some(a) = target.alias {
                    sql.push_str(&format!(" AS {}", quote(a)));
                }
                for t in target.from {
                    sql.push_str(&format!(", {t}"));
                }
                if let Some(s) = selection {
                    sql.push_str(&format!(" WHERE {s}"));
                }
                let batches = run_query(&self.ctx(true), parse_one(&sql)?).await?.1;
                if target.from.is_empty() { batches } else { first_per_key(batches)? }
            }
        };
        let Some(keys) = points else { return Ok((batches, Vec::new())) };
        match point_guards(&self.view(), def.id, &keys, &batches)? {
            Some(guards) => Ok((batches, guards)),
            None => {
                if let Some(version) = fallback {
                    self.table_guards.insert(def.id, version);
                }
                Ok((batches, Vec::new()))
            }
        }
    }

    pub(super) async fn update(&mut self, up: ast::Update) -> Result<StatementResult> {
        let from = match &up.from {
            None => &[][..],
            Some(UpdateTableFromKind::AfterSet(from)) => from.as_slice(),
            Some(UpdateTableFromKind::BeforeSet(_)) => {
                return Err(SqlError::Unsupported("UPDATE FROM … SET (the FROM list goes after SET)".into()));
            }
        };
        let TableFactor::Table { name, alias, .. } = &up.table.relation else {
            return Err(SqlError::Unsupported("UPDATE of a non-table".into()));
        };
        if !up.table.joins.is_empty() {
            return Err(SqlError::Unsupported("UPDATE with joins (list the other tables in FROM)".into()));
        }
        let target = Target { alias: alias_name(alias.as_ref())?, from };
        let def = self.catalog.table(&object_name(name)?)?.clone();
        let mut targets = Vec::new();
        let mut exprs = Vec::new();
        for a in &up.assignments {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(SqlError::Unsupported("tuple assignment".into()));
            };
            let cname = n.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
            let c = def.column_or_err(&cname)?;
            if targets.contains(&c) {
                return Err(SqlError::DuplicateColumn(cname));
            }
            targets.push(c);
            exprs.push(a.value.clone());
        }
        let stmt = Statement::Update(up.clone());
        let (batches, guards) = self.read_targets(&def, &stmt, &target, up.selection.as_ref(), &exprs).await?;
        let visible: Vec<usize> = def.visible().collect();
        let types = def.types();
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        let mut final_rows = Vec::new();
        for b in &batches {
            let keys = b.column(0).as_binary::<i32>();
            let mut old_cols: Vec<Vec<Value>> = Vec::new();
            for (j, &c) in visible.iter().enumerate() {
                old_cols.push(coerce_array(b.column(2 + j), &types[c], &def.columns[c].name)?);
            }
            let mut new_cols = Vec::new();
            for (j, &c) in targets.iter().enumerate() {
                new_cols.push(coerce_array(b.column(2 + visible.len() + j), &types[c], &def.columns[c].name)?);
            }
            for i in 0..b.num_rows() {
                let mut row: Vec<Value> = def.columns.iter().map(|_| Value::Null).collect();
                for (j, &c) in visible.iter().enumerate() {
                    row[c] = old_cols[j][i].clone();
                }
                for (j, &c) in targets.iter().enumerate() {
                    row[c] = new_cols[j][i].clone();
                }
                Self::check_row(&def, &row)?;
                let old_key = keys.value(i).to_vec();
                let bytes = codec::encode_row(&row);
                match def.key_of(&row)? {
                    Some(new_key) if new_key != old_key => {
                        deletes.push(RowOp::Delete { key: old_key });
                        writes.push(RowOp::Insert { key: Some(new_key.into()), row: bytes });
                    }
                    _ => writes.push(RowOp::Update { key: old_key, row: bytes }),
                }
                final_rows.push(row);
            }
        }
        let n = final_rows.len() as u64;
        let tag = format!("UPDATE {n}");
        let returning = self.returning(&def, target.alias, up.returning.as_deref(), &final_rows, &tag).await?;
        deletes.extend(writes);
        self.record(&def, guards, deletes);
        Ok(returning.unwrap_or(StatementResult::Done { tag, rows_affected: n }))
    }

    pub(super) async fn delete(&mut self, del: ast::Delete) -> Result<StatementResult> {
        let tables = match &del.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [twj] = tables.as_slice() else {
            return Err(SqlError::Unsupported("DELETE from several tables".into()));
        };
        if !twj.joins.is_empty() {
            return Err(SqlError::Unsupported("DELETE with joins (list the other tables in USING)".into()));
        }
        let TableFactor::Table { name, alias, .. } = &twj.relation else {
            return Err(SqlError::Unsupported("DELETE from a non-table".into()));
        };
        let target = Target { alias: alias_name(alias.as_ref())?, from: del.using.as_deref().unwrap_or_default() };
        let def = self.catalog.table(&object_name(name)?)?.clone();
        let stmt = Statement::Delete(del.clone());
        let (batches, guards) = self.read_targets(&def, &stmt, &target, del.selection.as_ref(), &[]).await?;
        let visible: Vec<usize> = def.visible().collect();
        let mut ops = Vec::new();
        let mut final_rows = Vec::new();
        for b in &batches {
            let keys = b.column(0).as_binary::<i32>();
            if del.returning.is_some() {
                let mut rows: Vec<Vec<Value>> =
                    (0..b.num_rows()).map(|_| vec![Value::Null; def.columns.len()]).collect();
                for (j, &c) in visible.iter().enumerate() {
                    let values = coerce_array(b.column(2 + j), &def.columns[c].ty, &def.columns[c].name)?;
                    for (row, v) in rows.iter_mut().zip(values) {
                        row[c] = v;
                    }
                }
                final_rows.extend(rows);
            }
            for i in 0..b.num_rows() {
                ops.push(RowOp::Delete { key: keys.value(i).to_vec() });
            }
        }
        let n = ops.len() as u64;
        let tag = format!("DELETE {n}");
        let returning = self.returning(&def, target.alias, del.returning.as_deref(), &final_rows, &tag).await?;
        self.record(&def, guards, ops);
        Ok(returning.unwrap_or(StatementResult::Done { tag, rows_affected: n }))
    }
}

/// How an UPDATE or DELETE names its target and what else it reads: `UPDATE t AS x … FROM a, b`,
/// `DELETE FROM t AS x USING a, b`.
struct Target<'a> {
    alias: Option<&'a str>,
    /// The other tables, joined with the target by the `WHERE`.
    from: &'a [TableWithJoins],
}

/// The alias of the target; an alias that renames columns is not supported.
fn alias_name(alias: Option<&ast::TableAlias>) -> Result<Option<&str>> {
    match alias {
        None => Ok(None),
        Some(a) if a.columns.is_empty() => Ok(Some(a.name.value.as_str())),
        Some(_) => Err(SqlError::Unsupported("a target alias with a column list".into())),
    }
}

/// Keeps the first row of each target key (column 0): with other tables in `FROM`/`USING`, a
/// target row joined to several of their rows is still updated or deleted once, as in
/// PostgreSQL (which also uses one of the joined rows, unspecified which, for an UPDATE).
fn first_per_key(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let keys = b.column(0).as_binary::<i32>();
        let keep: BooleanArray = (0..b.num_rows()).map(|i| Some(seen.insert(keys.value(i).to_vec()))).collect();
        out.push(filter_record_batch(&b, &keep)?);
    }
    Ok(out)
}
