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

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::sql::sqlparser::ast::{self, Expr};

use super::ident;
use crate::catalog::TableDef;
use crate::codec;
use crate::coerce::{coerce_texts, literal_text};
use crate::command::RowGuard;
use crate::error::Result;
use crate::provider::BatchView;

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
