//! Structure-aware edits of JSON samples (manifests), for the fuzz targets of crates that
//! read JSON: included with `#[path]` beside `fuzz.rs` (needs `serde_json`). Byte-level
//! mutations of JSON mostly stop at the parser; these keep the document valid and put extreme
//! or hostile values where the reader expects ordinary ones.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// Values put in place of a sample's: integer limits, wrong types, hostile paths.
fn replacements() -> Vec<Value> {
    vec![
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(i64::MAX),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(0),
        json!(1),
        json!(-1),
        json!(i64::MIN),
        json!(1e300),
        json!(0.5),
        json!(null),
        json!(true),
        json!(""),
        json!(".."),
        json!("../x"),
        json!("/abs"),
        json!("a//b"),
        json!("a/./b"),
        json!("a\u{0}b"),
        json!("x".repeat(300)),
        json!([]),
        json!({}),
    ]
}

/// Paths (object keys and array positions) to every value of `v`, the root included.
fn paths(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                at.push(json!(k));
                paths(c, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                at.push(json!(i));
                paths(c, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            Value::String(k) => cur.get_mut(k.as_str())?,
            Value::Number(n) => cur.get_mut(n.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// One edit: replace a value, remove a key or element, or duplicate an array element.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Index),
    Remove(Index),
    Duplicate(Index),
}

fn apply(doc: &mut Value, edit: &Edit) {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let pick = |i: &Index| all[i.index(all.len())].clone();
    match edit {
        Edit::Replace(at, with) => {
            let r = replacements();
            if let Some(v) = get_mut(doc, &pick(at)) {
                *v = r[with.index(r.len())].clone();
            }
        }
        Edit::Remove(at) | Edit::Duplicate(at) => {
            let path = pick(at);
            let Some((last, parent)) = path.split_last() else { return };
            let Some(p) = get_mut(doc, parent) else { return };
            match (p, last) {
                (Value::Object(m), Value::String(k)) => {
                    if matches!(edit, Edit::Remove(_)) {
                        m.remove(k);
                    }
                }
                (Value::Array(a), Value::Number(n)) => {
                    let i = n.as_u64().unwrap_or(0) as usize;
                    if matches!(edit, Edit::Remove(_)) {
                        a.remove(i);
                    } else {
                        let e = a[i].clone();
                        a.insert(i, e);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `sample` (a JSON document) with one to four structural edits, pretty or compact.
pub fn edited(sample: &[u8]) -> BoxedStrategy<Vec<u8>> {
    let doc: Value = serde_json::from_slice(sample).expect("a JSON sample");
    let edit = prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(a, w)| Edit::Replace(a, w)),
        1 => any::<Index>().prop_map(Edit::Remove),
        1 => any::<Index>().prop_map(Edit::Duplicate),
    ];
    (vec(edit, 1..=4), any::<bool>())
        .prop_map(move |(edits, pretty)| {
            let mut d = doc.clone();
            for e in &edits {
                apply(&mut d, e);
            }
            if pretty { serde_json::to_vec_pretty(&d) } else { serde_json::to_vec(&d) }.expect("JSON encodes")
        })
        .boxed()
}
