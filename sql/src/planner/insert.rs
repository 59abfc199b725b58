//! INSERT: rows from VALUES or a SELECT, ON CONFLICT (DO NOTHING / DO UPDATE), RETURNING, and
//! the bulk load [`Planner::insert_batches`], which inserts Arrow batches exactly as INSERT
//! would.
//!
//! Owns turning a source into full rows (defaults, coercions, NOT NULL), primary-key
//! duplicates within the statement and against the rows the batch sees, and the row guards of
//! ON CONFLICT (the hash of each conflicting row, or that a key is still absent). An INSERT
//! that reads nothing records no guard: apply's own key check decides.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, ConflictTarget, Expr, Ident, OnConflictAction, OnInsert, SelectItem, SetExpr, Statement,
    TableObject,
};

use super::{Planner, StatementResult, ident, mem_context, object_name, parse_one, quote, run_user_query};
use crate::catalog::{IndexDef, RowDecoder, TableDef};
use crate::codec;
use crate::coerce::{coerce_array, coerce_texts, literal_text};
use crate::command::{RowGuard, RowOp};
use crate::error::{Result, SqlError};
use crate::provider::BatchView;
use crate::types::{ColumnType, Value, build_array};

/// An inserted row whose key exists (ON CONFLICT): the key, the stored bytes and row, and the
/// row the INSERT proposed (`excluded`).
struct Conflict {
    key: Vec<u8>,
    old_bytes: Vec<u8>,
    old_row: Vec<Value>,
    proposed: Vec<Value>,
}

impl Planner<'_> {
    /// The rows an INSERT's source produces, as values of the target columns.
    async fn insert_source(
        &mut self,
        def: &TableDef,
        targets: &[usize],
        source: ast::Query,
    ) -> Result<Vec<Vec<Value>>> {
        // Fast path: VALUES of plain literals.
        if let SetExpr::Values(values) = source.body.as_ref()
            && source.with.is_none()
            && source.order_by.is_none()
            && source.limit_clause.is_none()
        {
            // `None`: the DEFAULT keyword.
            let cells: Option<Vec<Vec<Option<Option<String>>>>> = values
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|e| match e {
                            Expr::Identifier(i)
                                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
                            {
                                Some(None)
                            }
                            e => literal_text(e).map(Some),
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .collect();
            if let Some(rows) = cells {
                for r in &rows {
                    check_arity(r.len(), targets.len())?;
                }
                let mut cols = Vec::with_capacity(targets.len());
                for (j, &c) in targets.iter().enumerate() {
                    let col = &def.columns[c];
                    let col_texts: Vec<Option<String>> = rows.iter().map(|r| r[j].clone().flatten()).collect();
                    let mut values = coerce_texts(&col_texts, &col.ty, &col.name)?;
                    if rows.iter().any(|r| r[j].is_none()) {
                        let default = match &col.default {
                            Some(d) => self.eval_default(d, col).await?,
                            None => Value::Null,
                        };
                        for (i, r) in rows.iter().enumerate() {
                            if r[j].is_none() {
                                values[i] = default.clone();
                            }
                        }
                    }
                    cols.push(values);
                }
                return Ok(transpose(cols, rows.len()));
            }
        }
        let stmt = Statement::Query(Box::new(source));
        self.guard_relations(&stmt, None)?;
        let (_, batches) = run_user_query(&self.ctx(false), stmt).await?;
        let mut out = Vec::new();
        for b in batches {
            check_arity(b.num_columns(), targets.len())?;
            let mut cols = Vec::with_capacity(targets.len());
            for (j, &c) in targets.iter().enumerate() {
                cols.push(coerce_array(b.column(j), &def.columns[c].ty, &def.columns[c].name)?);
            }
            out.extend(transpose(cols, b.num_rows()));
        }
        Ok(out)
    }

    pub(super) async fn insert(&mut self, ins: ast::Insert) -> Result<StatementResult> {
        let TableObject::TableName(tn) = &ins.table else {
            return Err(SqlError::Unsupported("INSERT into a table function".into()));
        };
        let def = self.catalog.table(&object_name(tn)?)?.clone();
        let targets: Vec<usize> = if ins.columns.is_empty() {
            def.visible().collect()
        } else {
            let mut t = Vec::new();
            for c in &ins.columns {
                let n = c.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
                let i = def.column_or_err(&n)?;
                if t.contains(&i) {
                    return Err(SqlError::DuplicateColumn(n));
                }
                t.push(i);
            }
            t
        };
        let Some(source) = ins.source else {
            return Err(SqlError::Unsupported("INSERT without VALUES or SELECT".into()));
        };
        let partial = self.insert_source(&def, &targets, *source).await?;
        self.insert_rows(&def, &targets, partial, ins.on.as_ref(), ins.returning.as_deref())
            .await
            .map_err(SqlError::without_row)
    }

    /// A bulk load: the rows of `batches` (columns matched to the table's by name; columns
    /// not given take their defaults) inserted exactly as `INSERT INTO table (cols) VALUES …`
    /// would — same coercions, checks and errors, which carry the failing row's position
    /// (counted from 0 across the batches) when one row is to blame.
    pub async fn insert_batches(&mut self, table: &str, batches: &[RecordBatch]) -> Result<u64> {
        let def = self.catalog.table(table)?.clone();
        let Some(first) = batches.first() else { return Ok(0) };
        let schema = first.schema();
        let mut targets = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let i = def.column_or_err(f.name())?;
            if targets.contains(&i) {
                return Err(SqlError::DuplicateColumn(f.name().clone()));
            }
            targets.push(i);
        }
        let mut partial = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        let mut offset = 0;
        for b in batches {
            if b.schema().fields() != schema.fields() {
                return Err(SqlError::InvalidValue("every batch of a load must have the same columns".into()));
            }
            let mut cols = Vec::with_capacity(targets.len());
            for (j, &c) in targets.iter().enumerate() {
                let col = &def.columns[c];
                cols.push(coerce_array(b.column(j), &col.ty, &col.name).map_err(|e| {
                    let row = failing_row(b.column(j), &col.ty, &col.name);
                    e.at_row(row.map(|r| r + offset))
                })?);
            }
            partial.extend(transpose(cols, b.num_rows()));
            offset += b.num_rows();
        }
        match self.insert_rows(&def, &targets, partial, None, None).await? {
            StatementResult::Done { rows_affected, .. } => Ok(rows_affected),
            StatementResult::Rows { .. } => Err(SqlError::Internal("a load returned rows".into())),
        }
    }

    /// Inserts rows given as values of the `targets` columns (the rest take their defaults):
    /// the part of INSERT after its source was evaluated. A row-level error names the row.
    async fn insert_rows(
        &mut self,
        def: &TableDef,
        targets: &[usize],
        partial: Vec<Vec<Value>>,
        on: Option<&OnInsert>,
        returning_items: Option<&[SelectItem]>,
    ) -> Result<StatementResult> {
        // Defaults for the columns not given, evaluated once per statement.
        let mut defaults: Vec<Value> = Vec::with_capacity(def.columns.len());
        for (i, c) in def.columns.iter().enumerate() {
            defaults.push(match &c.default {
                Some(d) if !c.dropped && !targets.contains(&i) => self.eval_default(d, c).await?,
                _ => Value::Null,
            });
        }
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(partial.len());
        for (i, p) in partial.into_iter().enumerate() {
            let mut row = defaults.clone();
            for (v, &c) in p.into_iter().zip(targets) {
                row[c] = v;
            }
            Self::check_row(def, &row).map_err(|e| e.at_row(Some(i)))?;
            rows.push(row);
        }

        let view = self.view();
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        let mut final_rows = Vec::new();
        let mut seen = BTreeSet::new();
        let conflict = match on {
            None => None,
            Some(OnInsert::OnConflict(oc)) => Some((arbiters(def, oc)?, &oc.action)),
            Some(other) => return Err(SqlError::Unsupported(format!("{other}"))),
        };
        let conflict_action = conflict.as_ref().map(|(_, action)| *action);
        let mut updates: Vec<Conflict> = Vec::new();
        let decoder = RowDecoder::new(def);
        // The arbiters' values of the rows this statement inserts, one set per arbiter.
        let mut proposed: Vec<BTreeSet<Vec<u8>>> = Vec::new();
        let mut table_guarded = false;
        for (i, row) in rows.into_iter().enumerate() {
            let key = def.key_of(&row).map_err(|e| e.at_row(Some(i)))?;
            let Some((arbiters, action)) = &conflict else {
                // A plain INSERT: a key given twice, or one that exists, is a violation (apply
                // checks the unique indexes).
                if let Some(k) = &key
                    && (!seen.insert(k.clone()) || view.get(&codec::row_key(def.id, k))?.is_some())
                {
                    return Err(SqlError::UniqueViolation(format!(
                        "duplicate key value violates unique constraint \"{}\"",
                        def.pkey_name()
                    ))
                    .at_row(Some(i)));
                }
                ops.push(RowOp::Insert { key: key.map(Into::into), row: codec::encode_row(&row) });
                final_rows.push(row);
                continue;
            };
            // A row that conflicts with one inserted earlier by this statement: skipped by DO
            // NOTHING; DO UPDATE would change that row a second time.
            proposed.resize_with(arbiters.len(), BTreeSet::new);
            let mut again = false;
            for (a, values) in arbiters.iter().zip(proposed.iter_mut()) {
                if let Some(v) = a.values(def, &row, key.as_deref())? {
                    again |= !values.insert(v);
                }
            }
            if again {
                if matches!(action, OnConflictAction::DoNothing) {
                    continue;
                }
                return Err(SqlError::CardinalityViolation(
                    "ON CONFLICT DO UPDATE command cannot affect row a second time".into(),
                ));
            }
            // The stored row it conflicts with, through the first arbiter that finds one.
            let mut existing = None;
            for a in arbiters {
                if let Some(owner) = a.owner(def, &view, &row, key.as_deref())?
                    && let Some(bytes) = view.get(&codec::row_key(def.id, &owner))?
                {
                    existing = Some((owner, bytes));
                    break;
                }
            }
            match (existing, action) {
                (Some((owner, old)), OnConflictAction::DoNothing) => {
                    guards.push(RowGuard { key: owner, hash: Some(codec::row_hash(&old)) });
                }
                (Some((owner, old)), OnConflictAction::DoUpdate(_)) => {
                    let old_row = decoder.decode(&old)?;
                    updates.push(Conflict { key: owner, old_bytes: old, old_row, proposed: row });
                }
                (None, _) => {
                    if let Some(k) = &key {
                        // Not an arbiter, the primary key still may not be taken.
                        if !arbiters.contains(&Arbiter::PrimaryKey) && view.get(&codec::row_key(def.id, k))?.is_some() {
                            return Err(SqlError::UniqueViolation(format!(
                                "duplicate key value violates unique constraint \"{}\"",
                                def.pkey_name()
                            ))
                            .at_row(Some(i)));
                        }
                        guards.push(RowGuard { key: k.clone(), hash: None });
                    }
                    // That no row holds these values of a unique index is guarded by the
                    // table's version: a concurrent insert of them is a conflict, and the
                    // statement is planned again (where it finds that row).
                    if !table_guarded && arbiters.iter().any(|a| matches!(a, Arbiter::Unique(_))) {
                        self.guard_table(def.id)?;
                        table_guarded = true;
                    }
                    ops.push(RowOp::Insert { key: key.map(Into::into), row: codec::encode_row(&row) });
                    final_rows.push(row);
                }
            }
        }
        if let Some(OnConflictAction::DoUpdate(du)) = conflict_action
            && !updates.is_empty()
        {
            let new_rows = self.on_conflict_update(def, du, &updates).await?;
            for (Conflict { key, old_bytes, .. }, new_row) in updates.iter().zip(new_rows) {
                guards.push(RowGuard { key: key.clone(), hash: Some(codec::row_hash(old_bytes)) });
                let Some(new_row) = new_row else { continue };
                Self::check_row(def, &new_row)?;
                if !def.primary_key.is_empty() && def.key_of(&new_row)?.as_deref() != Some(key.as_slice()) {
                    return Err(SqlError::Unsupported("ON CONFLICT DO UPDATE changing the primary key".into()));
                }
                ops.push(RowOp::Update { key: key.clone(), row: codec::encode_row(&new_row) });
                final_rows.push(new_row);
            }
        }
        let n = final_rows.len() as u64;
        let returning = self.returning(def, None, returning_items, &final_rows, &format!("INSERT 0 {n}")).await?;
        self.record(def, guards, ops);
        Ok(returning.unwrap_or(StatementResult::Done { tag: format!("INSERT 0 {n}"), rows_affected: n }))
    }

    /// Evaluates `DO UPDATE SET … [WHERE …]` for each conflicting row; `None` where the WHERE
    /// is not true (the row is left alone).
    async fn on_conflict_update(
        &mut self,
        def: &TableDef,
        du: &ast::DoUpdate,
        updates: &[Conflict],
    ) -> Result<Vec<Option<Vec<Value>>>> {
        // A table of (existing columns, excluded columns as __excluded_<name>).
        let visible: Vec<usize> = def.visible().collect();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for &c in &visible {
            let col = &def.columns[c];
            fields.push(Field::new(&col.name, col.ty.arrow(), true));
            arrays.push(build_array(&col.ty, updates.iter().map(|u| &u.old_row[c]))?);
        }
        for &c in &visible {
            let col = &def.columns[c];
            fields.push(Field::new(format!("__excluded_{}", col.name), col.ty.arrow(), true));
            arrays.push(build_array(&col.ty, updates.iter().map(|u| &u.proposed[c]))?);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        let rewrite = |e: &Expr| -> Expr {
            let mut e = e.clone();
            let _ = ast::visit_expressions_mut(&mut e, |x| {
                if let Expr::CompoundIdentifier(parts) = x
                    && parts.len() == 2
                {
                    let q = ident(&parts[0]);
                    let col = ident(&parts[1]);
                    if q == "excluded" {
                        *x = Expr::Identifier(Ident::with_quote('"', format!("__excluded_{col}")));
                    } else if q == def.name {
                        *x = Expr::Identifier(Ident::with_quote('"', col));
                    }
                }
                ControlFlow::<()>::Continue(())
            });
            e
        };
        let mut targets = Vec::new();
        let mut exprs = Vec::new();
        for a in &du.assignments {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(SqlError::Unsupported("tuple assignment".into()));
            };
            let cname = n.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
            targets.push(def.column_or_err(&cname)?);
            exprs.push(rewrite(&a.value).to_string());
        }
        let cond = du.selection.as_ref().map(|s| rewrite(s).to_string()).unwrap_or_else(|| "true".into());
        exprs.push(format!("({cond}) IS TRUE"));
        let results = eval_over(self.base, "__conflicts", batch, &exprs).await?;
        let mut out = Vec::with_capacity(updates.len());
        let mut assigned: Vec<Vec<Value>> = Vec::new();
        for (j, &c) in targets.iter().enumerate() {
            assigned.push(coerce_array(&results[j], &def.columns[c].ty, &def.columns[c].name)?);
        }
        let keep = results[targets.len()].as_boolean().clone();
        for (i, u) in updates.iter().enumerate() {
            if !keep.value(i) {
                out.push(None);
                continue;
            }
            let mut row = u.old_row.clone();
            for (j, &c) in targets.iter().enumerate() {
                row[c] = assigned[j][i].clone();
            }
            out.push(Some(row));
        }
        Ok(out)
    }
}

/// An INSERT must give exactly one value per target column (PostgreSQL: 42601).
fn check_arity(given: usize, targets: usize) -> Result<()> {
    if given != targets {
        let more = if given > targets { "more" } else { "fewer" };
        return Err(SqlError::Syntax(format!(
            "INSERT has {more} expressions than target columns ({given} for {targets})"
        )));
    }
    Ok(())
}

/// The first row of `array` that does not convert to `ty` (the error path of a bulk load,
/// which converts whole columns at once).
fn failing_row(array: &ArrayRef, ty: &ColumnType, column: &str) -> Option<usize> {
    (0..array.len()).find(|&i| coerce_array(&array.slice(i, 1), ty, column).is_err())
}

fn transpose(cols: Vec<Vec<Value>>, n: usize) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = (0..n).map(|_| Vec::with_capacity(cols.len())).collect();
    for col in cols {
        for (i, v) in col.into_iter().enumerate() {
            rows[i].push(v);
        }
    }
    rows
}

/// Evaluates SQL expressions over the rows of `batch` (registered as `name`), one output
/// column per expression.
async fn eval_over(base: &SessionState, name: &str, batch: RecordBatch, exprs: &[String]) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    let ctx = mem_context(base, name, batch)?;
    let stmt = parse_one(&format!("SELECT {} FROM {}", exprs.join(", "), quote(name)))?;
    let (schema, batches) = run_user_query(&ctx, stmt).await?;
    let merged = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
    if merged.num_rows() != n {
        return Err(SqlError::Internal("expression evaluation changed the row count".into()));
    }
    Ok(merged.columns().to_vec())
}

/// What an ON CONFLICT clause detects conflicts on: the primary key or a unique index.
#[derive(Debug, PartialEq)]
enum Arbiter {
    PrimaryKey,
    Unique(IndexDef),
}

impl Arbiter {
    /// The values `row` has in this arbiter (encoded); `None` where they cannot conflict (a
    /// NULL in a unique index, or a table without primary key).
    fn values(&self, def: &TableDef, row: &[Value], key: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        match self {
            Arbiter::PrimaryKey => Ok(key.map(<[u8]>::to_vec)),
            Arbiter::Unique(ix) => def.unique_entry_key(ix, row),
        }
    }

    /// The key of the stored row `row` would conflict with here, if one may exist.
    fn owner(&self, def: &TableDef, view: &BatchView, row: &[Value], key: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        match self {
            Arbiter::PrimaryKey => Ok(key.map(<[u8]>::to_vec)),
            Arbiter::Unique(ix) => match def.unique_entry_key(ix, row)? {
                Some(entry) => Ok(view.get(&entry)?),
                None => Ok(None),
            },
        }
    }
}

/// The arbiters of `ON CONFLICT [target]`, as PostgreSQL infers them: the primary key or the
/// unique index whose columns are exactly the target's, the constraint named by
/// `ON CONSTRAINT`, or — with no target, for DO NOTHING only — every unique one.
fn arbiters(def: &TableDef, oc: &ast::OnConflict) -> Result<Vec<Arbiter>> {
    let unique = def.indexes.iter().filter(|ix| ix.unique && ix.is_btree());
    let mut all: Vec<(String, Vec<usize>, Arbiter)> = Vec::new();
    if !def.primary_key.is_empty() {
        all.push((def.pkey_name(), def.primary_key.clone(), Arbiter::PrimaryKey));
    }
    all.extend(unique.map(|ix| (ix.name.clone(), ix.columns.clone(), Arbiter::Unique(ix.clone()))));
    let no_match = || {
        SqlError::InvalidColumnReference(
            "there is no unique or exclusion constraint matching the ON CONFLICT specification".into(),
        )
    };
    match &oc.conflict_target {
        Some(ConflictTarget::Columns(cols)) => {
            let mut wanted: Vec<usize> = cols.iter().map(|c| def.column_or_err(&ident(c))).collect::<Result<_>>()?;
            wanted.sort();
            wanted.dedup();
            let found = all.into_iter().find(|(_, columns, _)| {
                let mut columns = columns.clone();
                columns.sort();
                columns == wanted
            });
            Ok(vec![found.ok_or_else(no_match)?.2])
        }
        Some(ConflictTarget::OnConstraint(name)) => {
            let name = object_name(name)?;
            match all.into_iter().find(|(n, _, _)| *n == name) {
                Some((_, _, a)) => Ok(vec![a]),
                None => Err(SqlError::InvalidColumnReference(format!(
                    "constraint \"{name}\" for table \"{}\" does not exist",
                    def.name
                ))),
            }
        }
        None if matches!(oc.action, OnConflictAction::DoUpdate(_)) => {
            Err(SqlError::Syntax("ON CONFLICT DO UPDATE requires inference specification or constraint name".into()))
        }
        None => Ok(all.into_iter().map(|(_, _, a)| a).collect()),
    }
}
