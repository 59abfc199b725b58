//! Primary-key point statements: which `WHERE` clauses pin a statement to known primary keys,
//! and the row guards such a statement records instead of guarding the whole table.
//!
//! A point guard is the hash of the row under each pinned key as the statement read it, or
//! that the key has no row; a concurrent write to any other row of the table does not
//! invalidate it. Anything this module cannot prove to be a point (OR, ranges, casts of a key
//! column, a key column left unbound or bound to two values) is not one, and the caller guards
//! the whole table.
//!
//! A `WHERE` may pin the keys and filter further (`id = 1 AND v = 2`): the keys still bound
//! what the statement reads, but only a *pure* point (nothing but key equalities) may be
//! answered by reading the keys' rows alone, and a row the rest of the `WHERE` filtered out
//! cannot be guarded by its hash (the read never saw it): the table is guarded instead.
//!
//! An UPDATE or DELETE whose `WHERE` is a pure point reads its target rows here, by key, with
//! no DataFusion plan ([`Planner::read_point`]): planning a query costs about a millisecond,
//! a key lookup a few microseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BinaryArray, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::sqlparser::ast::{self, Expr, ExprWithAlias};

use super::{Planner, ident};
use crate::catalog::{HASH_COLUMN, KEY_COLUMN, RowDecoder, TableDef};
use crate::codec;
use crate::coerce::{coerce_texts, literal_text};
use crate::command::RowGuard;
use crate::error::Result;
use crate::provider::BatchView;
use crate::types::build_array;

/// The primary keys a `WHERE` pins down by equality on every key column (joined by AND),
/// if it does. The rest of the `WHERE` may filter further.
pub fn point_keys(def: &TableDef, selection: &Expr) -> Option<Vec<Vec<u8>>> {
    pinned_key(def, selection).map(|(key, _)| vec![key])
}

/// [`point_keys`], when the `WHERE` is nothing but those equalities: reading the keys' rows
/// answers it, with nothing else to evaluate.
pub fn pure_point_keys(def: &TableDef, selection: &Expr) -> Option<Vec<Vec<u8>>> {
    pinned_key(def, selection).filter(|&(_, pure)| pure).map(|(key, _)| vec![key])
}

/// The key pinned by `selection`, and whether every conjunct is one of its key equalities.
fn pinned_key(def: &TableDef, selection: &Expr) -> Option<(Vec<u8>, bool)> {
    if def.primary_key.is_empty() {
        return None;
    }
    let mut eq: BTreeMap<usize, Vec<Option<String>>> = BTreeMap::new();
    let mut pure = true;
    walk(def, selection, &mut eq, &mut pure);
    let mut key = Vec::new();
    for &c in &def.primary_key {
        let col = &def.columns[c];
        let values = coerce_texts(eq.get(&c)?, &col.ty, &col.name).ok()?;
        // `id = 1 AND id = 2` matches no row: no key to pin.
        if values.windows(2).any(|w| w[0] != w[1]) {
            return None;
        }
        codec::encode_key_value(&mut key, &values[0], &col.ty).ok()?;
    }
    Some((key, pure))
}

/// Collects the `key column = literal` conjuncts of `e`; `pure` turns false at any other.
fn walk(def: &TableDef, e: &Expr, eq: &mut BTreeMap<usize, Vec<Option<String>>>, pure: &mut bool) {
    match e {
        Expr::BinaryOp { left, op: ast::BinaryOperator::And, right } => {
            walk(def, left, eq, pure);
            walk(def, right, eq, pure);
        }
        Expr::Nested(inner) => walk(def, inner, eq, pure),
        Expr::BinaryOp { left, op: ast::BinaryOperator::Eq, right } => match key_equality(def, left, right) {
            Some((c, text)) => eq.entry(c).or_default().push(Some(text)),
            None => *pure = false,
        },
        _ => *pure = false,
    }
}

/// `(key column, literal text)` when `left = right` compares a primary-key column of `def`
/// with a non-NULL literal.
fn key_equality(def: &TableDef, left: &Expr, right: &Expr) -> Option<(usize, String)> {
    let col = |x: &Expr| match x {
        Expr::Identifier(i) => def.column(&ident(i)),
        Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == def.name => def.column(&ident(&p[1])),
        _ => None,
    };
    let (c, lit) = match (col(left), col(right)) {
        (Some(c), None) => (c, right),
        (None, Some(c)) => (c, left),
        _ => return None,
    };
    let text = literal_text(lit)??;
    def.primary_key.contains(&c).then_some((c, text))
}

/// The row guards of a point read of `keys`: each row the read returned, by the hash it was
/// read with, and each key without a row in `view`, as absent. `None` when a key has a row the
/// read did not return (the rest of the `WHERE` filtered it out): "absent" would never hold
/// and the version the read skipped is unknown, so the caller guards the table instead.
pub(super) fn point_guards(
    view: &BatchView,
    table: u32,
    keys: &[Vec<u8>],
    batches: &[RecordBatch],
) -> Result<Option<Vec<RowGuard>>> {
    let mut found = BTreeMap::new();
    for b in batches {
        let k = b.column(0).as_binary::<i32>();
        let h = b.column(1).as_primitive::<UInt64Type>();
        for i in 0..b.num_rows() {
            found.insert(k.value(i), h.value(i));
        }
    }
    let mut guards = Vec::with_capacity(keys.len());
    for key in keys {
        let hash = match found.get(key.as_slice()) {
            Some(&h) => Some(h),
            None if view.get(&codec::row_key(table, key))?.is_some() => return Ok(None),
            None => None,
        };
        guards.push(RowGuard { key: key.clone(), hash });
    }
    Ok(Some(guards))
}

impl Planner<'_> {
    /// The rows stored under `keys` (those that exist) as one batch of the columns an
    /// UPDATE/DELETE reads its targets with — key, hash, every visible column, then each of
    /// `extra` evaluated over the row — read by key lookups in the batch's view, not through a
    /// query plan. `Ok(None)` when an expression cannot be evaluated over the row alone (a
    /// subquery, a function only a full plan resolves, an evaluation error): the caller plans
    /// the read instead, and that answer (or error) is the authoritative one.
    pub(super) fn read_point(&self, def: &TableDef, keys: &[Vec<u8>], extra: &[Expr]) -> Result<Option<RecordBatch>> {
        let view = self.view();
        let decoder = RowDecoder::new(def);
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = view.get(&codec::row_key(def.id, key))? {
                found.push((key.as_slice(), codec::row_hash(&bytes), decoder.decode(&bytes)?));
            }
        }
        let n = found.len();
        let row_schema = def.schema(false);
        let row_columns = def
            .visible()
            .map(|c| build_array(&def.columns[c].ty, found.iter().map(|(_, _, row)| &row[c])))
            .collect::<Result<Vec<_>>>()?;
        let mut fields =
            vec![Field::new(KEY_COLUMN, DataType::Binary, false), Field::new(HASH_COLUMN, DataType::UInt64, false)];
        fields.extend(row_schema.fields().iter().map(|f| f.as_ref().clone()));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(found.iter().map(|(key, _, _)| *key))),
            Arc::new(UInt64Array::from_iter_values(found.iter().map(|&(_, hash, _)| hash))),
        ];
        columns.extend(row_columns.iter().cloned());
        if !extra.is_empty() {
            let opts = RecordBatchOptions::new().with_row_count(Some(n));
            let rows = RecordBatch::try_new_with_options(row_schema, row_columns, &opts)?;
            let Some(values) = evaluate(self.base, &def.name, &rows, extra) else { return Ok(None) };
            for (i, v) in values.into_iter().enumerate() {
                fields.push(Field::new(format!("__new_{}", i + 1), v.data_type().clone(), true));
                columns.push(v);
            }
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &opts)?))
    }
}

/// Each of `exprs` evaluated over every row of `rows` (the visible columns of table `table`),
/// coerced and simplified as a planned query's expressions are (`now()` is this statement's
/// start) but with no query plan; `None` when one cannot be.
fn evaluate(state: &SessionState, table: &str, rows: &RecordBatch, exprs: &[Expr]) -> Option<Vec<ArrayRef>> {
    let schema = DFSchema::try_from_qualified_schema(TableReference::bare(table), rows.schema().as_ref()).ok()?;
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .with_config_options(state.config_options().clone())
        .with_current_time()
        .build();
    let simplifier = ExprSimplifier::new(context);
    exprs
        .iter()
        .map(|e| {
            let sql = ExprWithAlias { expr: e.clone(), alias: None };
            let logical = state.create_logical_expr_from_sql_expr(sql, &schema).ok()?;
            let simple = simplifier.simplify(simplifier.coerce(logical, &schema).ok()?).ok()?;
            let physical = state.create_physical_expr(simple, &schema).ok()?;
            physical.evaluate(rows).ok()?.into_array(rows.num_rows()).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Int64Type};

    use super::*;
    use crate::engine::Engine;
    use crate::memory::MemoryState;
    use crate::planner::parse_expr;
    use crate::types::Value;

    async fn db() -> (std::sync::Arc<MemoryState>, Engine) {
        let state = MemoryState::new();
        let engine = Engine::new(state.clone(), state.vectors());
        for sql in [
            "CREATE TABLE t (id INT PRIMARY KEY, n BIGINT, v TEXT)",
            "INSERT INTO t VALUES (1, 10, 'a'), (2, 20, NULL)",
        ] {
            engine.execute(engine.parse(sql, &[]).unwrap(), state.as_ref()).await.unwrap();
        }
        (state, engine)
    }

    fn key(id: i32) -> Vec<u8> {
        let mut k = Vec::new();
        codec::encode_key_value(&mut k, &Value::Int(i64::from(id)), &crate::types::ColumnType::Int32).unwrap();
        k
    }

    fn exprs(sql: &[&str]) -> Vec<Expr> {
        sql.iter().map(|s| parse_expr(s).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_point_read_returns_the_rows_and_the_set_values_without_a_plan() {
        let (_state, engine) = db().await;
        let def = engine.catalog().unwrap().table("t").unwrap().clone();
        let planner = engine.planner().unwrap();
        let batch: RecordBatch = planner
            .read_point(&def, &[key(2), key(99), key(1)], &exprs(&["n * 2 + 1", "upper(coalesce(v, 'none'))"]))
            .unwrap()
            .expect("plain expressions are evaluated over the row");
        // Key, hash, id, n, v, then the two SET values; the missing key has no row.
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), 7);
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), key(2).as_slice());
        assert_eq!(batch.column(5).data_type(), &DataType::Int64);
        assert_eq!(batch.column(5).as_primitive::<Int64Type>().values().to_vec(), vec![41, 21]);
        let upper = batch.column(6).as_string::<i32>();
        assert_eq!((upper.value(0), upper.value(1)), ("NONE", "A"));
    }

    #[tokio::test]
    async fn what_the_row_alone_cannot_answer_is_left_to_a_plan() {
        let (_state, engine) = db().await;
        let def = engine.catalog().unwrap().table("t").unwrap().clone();
        let planner = engine.planner().unwrap();
        for e in ["(SELECT max(n) FROM t)", "nope + 1", "n / 0"] {
            assert!(planner.read_point(&def, &[key(1)], &exprs(&[e])).unwrap().is_none(), "{e}");
        }
        // With no SET values (a DELETE) there is nothing to evaluate.
        assert_eq!(planner.read_point(&def, &[key(1)], &[]).unwrap().map(|b| b.num_rows()), Some(1));
    }

    #[tokio::test]
    async fn a_point_read_sees_the_batch_s_earlier_writes() {
        let (_state, engine) = db().await;
        let def = engine.catalog().unwrap().table("t").unwrap().clone();
        let mut planner = engine.planner().unwrap();
        for sql in ["UPDATE t SET n = 7 WHERE id = 1", "DELETE FROM t WHERE id = 2"] {
            let stmt = engine.parse(sql, &[]).unwrap().statements.remove(0);
            planner.plan(stmt).await.unwrap();
        }
        let batch = planner.read_point(&def, &[key(1), key(2)], &exprs(&["n + 1"])).unwrap().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(0), 8);
    }
}
