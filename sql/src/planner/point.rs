//! Primary-key point statements: which `WHERE` clauses pin a statement to known primary keys,
//! and the row guards such a statement records instead of guarding the whole table.
//!
//! A point guard is the hash of the row under each pinned key (or that it is absent) as the
//! statement read it; a concurrent write to any other row of the table does not invalidate it.
//! Anything this module cannot prove to be a point (OR, ranges, casts of the key column, a key
//! column left unbound) is not one, and the caller falls back to a table guard.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::sql::sqlparser::ast::{self, Expr};

use super::ident;
use crate::catalog::TableDef;
use crate::codec;
use crate::command::RowGuard;
use crate::values::{coerce_texts, literal_text};

/// The primary keys a `WHERE` pins down by equality on every key column (joined by AND),
/// if it does.
pub fn point_keys(def: &TableDef, selection: &Expr) -> Option<Vec<Vec<u8>>> {
    if def.primary_key.is_empty() {
        return None;
    }
    let mut eq: BTreeMap<usize, Option<String>> = BTreeMap::new();
    fn walk(def: &TableDef, e: &Expr, eq: &mut BTreeMap<usize, Option<String>>) {
        match e {
            Expr::BinaryOp { left, op: ast::BinaryOperator::And, right } => {
                walk(def, left, eq);
                walk(def, right, eq);
            }
            Expr::Nested(inner) => walk(def, inner, eq),
            Expr::BinaryOp { left, op: ast::BinaryOperator::Eq, right } => {
                let col = |x: &Expr| match x {
                    Expr::Identifier(i) => def.column(&ident(i)),
                    Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == def.name => {
                        def.column(&ident(&p[1]))
                    }
                    _ => None,
                };
                let (c, lit) = match (col(left), col(right)) {
                    (Some(c), None) => (c, right),
                    (None, Some(c)) => (c, left),
                    _ => return,
                };
                if let Some(Some(t)) = literal_text(lit)
                    && def.primary_key.contains(&c)
                {
                    eq.insert(c, Some(t));
                }
            }
            _ => {}
        }
    }
    walk(def, selection, &mut eq);
    let mut key = Vec::new();
    for &c in &def.primary_key {
        let text = eq.get(&c)?.clone();
        let v = coerce_texts(&[text], &def.columns[c].ty, &def.columns[c].name).ok()?.remove(0);
        codec::encode_key_value(&mut key, &v, &def.columns[c].ty).ok()?;
    }
    Some(vec![key])
}

/// The row guards of a point read of `keys`: each key's row hash as read in `batches` (hidden
/// key in column 0, row hash in column 1), or absent.
pub(super) fn point_guards(keys: &[Vec<u8>], batches: &[RecordBatch]) -> Vec<RowGuard> {
    let mut found = BTreeMap::new();
    for b in batches {
        let k = b.column(0).as_binary::<i32>();
        let h = b.column(1).as_primitive::<UInt64Type>();
        for i in 0..b.num_rows() {
            found.insert(k.value(i).to_vec(), h.value(i));
        }
    }
    keys.iter().map(|key| RowGuard { key: key.clone(), hash: found.get(key).copied() }).collect()
}
