//! Apply-side checks of [`SqlCommand`]s, driven by commands built by hand (so each check is
//! reached even where the planner would have refused first) and by SQL: key uniqueness,
//! unique indexes, NOT NULL, index maintenance, guards, and all-or-nothing rejection.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use quorumdb_sql::catalog::{RowDecoder, TableDef};
use quorumdb_sql::codec;
use quorumdb_sql::command::{RowGuard, RowOp, SqlCommand, Step, table_version};
use quorumdb_sql::types::Value;
use quorumdb_state::AppliedState;

mod common;
use common::Db;

/// Keys and values, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key and value of the state.
fn dump(db: &Db) -> Pairs {
    let mut out = Vec::new();
    db.state
        .scan(b"", &[0xff; 8], &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    out
}

fn scan(db: &Db, prefix: &[u8]) -> Pairs {
    let mut out = Vec::new();
    db.state
        .scan(prefix, &codec::prefix_end(prefix), &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    out
}

/// `(row key, decoded row)` of every stored row of `def`.
fn rows(db: &Db, def: &TableDef) -> Vec<(Vec<u8>, Vec<Value>)> {
    let prefix = codec::rows_prefix(def.id);
    let decoder = RowDecoder::new(def);
    scan(db, &prefix).into_iter().map(|(k, v)| (k[prefix.len()..].to_vec(), decoder.decode(&v).unwrap())).collect()
}

/// The stored entries of the index named `index`, and the entries its rows call for.
fn index_entries(db: &Db, def: &TableDef, index: &str) -> (Pairs, Pairs) {
    let ix = def.indexes.iter().find(|i| i.name == index).unwrap_or_else(|| panic!("no index {index}"));
    let stored = scan(db, &codec::index_prefix(def.id, ix.id));
    let mut wanted: Vec<_> = rows(db, def).iter().map(|(k, r)| def.index_entry(ix, r, k).unwrap()).collect();
    wanted.sort();
    (stored, wanted)
}

fn assert_indexes_match_rows(db: &Db, def: &TableDef) {
    for ix in &def.indexes {
        let (stored, wanted) = index_entries(db, def, &ix.name);
        assert_eq!(stored, wanted, "index {}", ix.name);
    }
}

/// A full physical row of `u` (id, email, x, city).
fn u(id: i64, email: Option<&str>, x: Option<i64>, city: &str) -> Vec<Value> {
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.into()));
    vec![Value::Int(id), text(email), x.map_or(Value::Null, Value::Int), Value::Text(city.into())]
}

fn key(def: &TableDef, row: &[Value]) -> Vec<u8> {
    def.key_of(row).unwrap().unwrap()
}

fn insert(def: &TableDef, row: &[Value]) -> RowOp {
    RowOp::Insert { key: Some(key(def, row).into()), row: codec::encode_row(row) }
}

fn update(def: &TableDef, row: &[Value]) -> RowOp {
    RowOp::Update { key: key(def, row), row: codec::encode_row(row) }
}

fn delete(def: &TableDef, id: i64) -> RowOp {
    RowOp::Delete { key: codec::encode_key(&[&Value::Int(id)], &[&def.columns[0].ty]).unwrap() }
}

fn write(db: &Db, def: &TableDef, guards: Vec<RowGuard>, ops: Vec<RowOp>) -> SqlCommand {
    let catalog_version = db.engine.catalog().unwrap().version;
    SqlCommand { catalog_version, table_guards: Vec::new(), steps: vec![Step::Write { table: def.id, guards, ops }] }
}

/// Applies `cmd`; on rejection, checks the state is byte for byte what it was and returns
/// the SQLSTATE.
async fn apply(db: &Db, cmd: &SqlCommand) -> Result<(), &'static str> {
    let before = dump(db);
    db.propose(cmd).await.map_err(|e| {
        assert_eq!(dump(db), before, "a rejected command changed the state: {cmd:?}");
        e.sqlstate()
    })
}

/// `u` with a unique index on email and a plain one on city, rows 1 and 2.
async fn users() -> (Db, TableDef) {
    let db = Db::new();
    db.ok("CREATE TABLE u (id BIGINT PRIMARY KEY, email TEXT UNIQUE, x BIGINT NOT NULL, city TEXT)").await;
    db.ok("CREATE INDEX u_city ON u (city)").await;
    db.ok("INSERT INTO u VALUES (1, 'a', 1, 'oslo'), (2, 'b', 2, 'rome')").await;
    let def = db.def("u");
    assert_eq!(def.indexes.len(), 2);
    (db, def)
}

#[tokio::test]
async fn primary_keys_are_unique_within_a_command_and_against_stored_rows() {
    let (db, t) = users().await;
    let dup =
        write(&db, &t, vec![], vec![insert(&t, &u(3, None, Some(3), "x")), insert(&t, &u(3, None, Some(4), "y"))]);
    assert_eq!(apply(&db, &dup).await, Err("23505"));
    let taken =
        write(&db, &t, vec![], vec![insert(&t, &u(4, None, Some(4), "x")), insert(&t, &u(1, None, Some(1), "y"))]);
    assert_eq!(apply(&db, &taken).await, Err("23505"));
    let twice = write(
        &db,
        &t,
        vec![],
        vec![update(&t, &u(1, Some("a"), Some(5), "oslo")), insert(&t, &u(1, None, Some(6), "y"))],
    );
    assert_eq!(apply(&db, &twice).await, Err("23505"));
    // Deleting a key and inserting it again in one statement is how UPDATE moves a row.
    let moved = write(&db, &t, vec![], vec![delete(&t, 1), insert(&t, &u(1, Some("a"), Some(7), "oslo"))]);
    assert_eq!(apply(&db, &moved).await, Ok(()));
    assert_eq!(rows(&db, &t).len(), 2);
    // Updating or deleting a row that is gone is a conflict, not a silent no-op.
    assert_eq!(apply(&db, &write(&db, &t, vec![], vec![update(&t, &u(9, None, Some(9), "x"))])).await, Err("40001"));
    assert_eq!(apply(&db, &write(&db, &t, vec![], vec![delete(&t, 9)])).await, Err("40001"));
    // Through SQL: two keys swapped by one statement.
    db.ok("UPDATE u SET id = 3 - id").await;
    assert!(db.rows("SELECT id, email FROM u ORDER BY id").await.contains("| 1  | b     |"));
    assert_indexes_match_rows(&db, &t);
}

#[tokio::test]
async fn unique_indexes_reject_duplicates_but_let_one_statement_swap_values() {
    let (db, t) = users().await;
    let taken = write(&db, &t, vec![], vec![insert(&t, &u(3, Some("a"), Some(3), "x"))]);
    assert_eq!(apply(&db, &taken).await, Err("23505"));
    let twice = write(
        &db,
        &t,
        vec![],
        vec![insert(&t, &u(3, Some("c"), Some(3), "x")), insert(&t, &u(4, Some("c"), Some(4), "y"))],
    );
    assert_eq!(apply(&db, &twice).await, Err("23505"));
    let onto = write(&db, &t, vec![], vec![update(&t, &u(2, Some("a"), Some(2), "rome"))]);
    assert_eq!(apply(&db, &onto).await, Err("23505"));
    // Two rows trading values in one statement: checked on the result, not row by row.
    let swap = write(
        &db,
        &t,
        vec![],
        vec![update(&t, &u(1, Some("b"), Some(1), "oslo")), update(&t, &u(2, Some("a"), Some(2), "rome"))],
    );
    assert_eq!(apply(&db, &swap).await, Ok(()));
    assert_indexes_match_rows(&db, &t);
    db.ok("UPDATE u SET email = CASE id WHEN 1 THEN 'a' ELSE 'b' END").await;
    assert!(db.rows("SELECT id, email FROM u ORDER BY id").await.contains("| 1  | a     |"));
    assert_indexes_match_rows(&db, &t);
    // A deleted row's value is free for the same statement's insert.
    let reuse = write(&db, &t, vec![], vec![delete(&t, 1), insert(&t, &u(5, Some("a"), Some(5), "x"))]);
    assert_eq!(apply(&db, &reuse).await, Ok(()));
    // NULLs are never equal: any number of them.
    let nulls =
        write(&db, &t, vec![], vec![insert(&t, &u(6, None, Some(6), "x")), insert(&t, &u(7, None, Some(7), "x"))]);
    assert_eq!(apply(&db, &nulls).await, Ok(()));
    assert_eq!(db.err("INSERT INTO u VALUES (8, 'b', 8, 'x')").await, "23505");
    assert_indexes_match_rows(&db, &t);
}

#[tokio::test]
async fn not_null_is_enforced_at_apply() {
    let (db, t) = users().await;
    let ins = write(&db, &t, vec![], vec![insert(&t, &u(3, Some("c"), None, "x"))]);
    assert_eq!(apply(&db, &ins).await, Err("23502"));
    let upd = write(&db, &t, vec![], vec![update(&t, &u(1, Some("a"), None, "oslo"))]);
    assert_eq!(apply(&db, &upd).await, Err("23502"));
    let ok = write(&db, &t, vec![], vec![insert(&t, &u(3, None, Some(3), "x"))]);
    assert_eq!(apply(&db, &ok).await, Ok(()), "nullable columns take NULL");
}

#[tokio::test]
async fn index_entries_are_added_removed_and_moved_with_their_rows() {
    let (db, t) = users().await;
    let entry = |id: i64, city: &str| {
        let ix = t.indexes.iter().find(|i| i.name == "u_city").unwrap();
        let row = u(id, None, Some(0), city);
        t.index_entry(ix, &row, &key(&t, &row)).unwrap()
    };
    let cities = |db: &Db| index_entries(db, &t, "u_city").0;
    assert_eq!(cities(&db), [entry(1, "oslo"), entry(2, "rome")]);
    db.ok("INSERT INTO u VALUES (3, 'c', 3, 'oslo'), (4, NULL, 4, NULL)").await;
    assert_eq!(cities(&db).len(), 4, "a NULL is indexed too");
    assert!(cities(&db).contains(&entry(3, "oslo")));
    assert_indexes_match_rows(&db, &t);
    db.ok("UPDATE u SET city = 'lima' WHERE id = 1").await;
    assert!(!cities(&db).contains(&entry(1, "oslo")) && cities(&db).contains(&entry(1, "lima")));
    db.ok("UPDATE u SET email = 'z' WHERE city = 'rome'").await;
    assert_indexes_match_rows(&db, &t);
    db.ok("UPDATE u SET id = id + 10 WHERE id = 3").await;
    assert!(!cities(&db).contains(&entry(3, "oslo")) && cities(&db).contains(&entry(13, "oslo")), "moved with the key");
    assert_indexes_match_rows(&db, &t);
    db.ok("DELETE FROM u WHERE id = 13").await;
    assert!(!cities(&db).contains(&entry(13, "oslo")));
    assert_indexes_match_rows(&db, &t);
    db.ok("DELETE FROM u").await;
    assert_eq!(scan(&db, &codec::indexes_prefix(t.id)), vec![], "no entry outlives its row");
}

#[tokio::test]
async fn stale_guards_are_rejected_with_40001_and_apply_nothing() {
    let (db, t) = users().await;
    let row1 = key(&t, &u(1, None, None, ""));
    let stored = db.state.get(&codec::row_key(t.id, &row1)).unwrap().unwrap();
    let hash = codec::row_hash(&stored);
    let ops = || vec![update(&t, &u(1, Some("a"), Some(100), "oslo"))];
    for stale in [
        RowGuard { key: row1.clone(), hash: Some(hash ^ 1) },
        RowGuard { key: row1.clone(), hash: None },
        RowGuard { key: key(&t, &u(9, None, None, "")), hash: Some(hash) },
    ] {
        assert_eq!(apply(&db, &write(&db, &t, vec![stale.clone()], ops())).await, Err("40001"), "{stale:?}");
    }
    let mut cmd = write(&db, &t, vec![], ops());
    cmd.catalog_version -= 1;
    assert_eq!(apply(&db, &cmd).await, Err("40001"), "an older catalog");
    let version = table_version(|k| db.state.get(k), t.id).unwrap();
    let mut cmd = write(&db, &t, vec![], ops());
    cmd.table_guards = vec![(t.id, version - 1)];
    assert_eq!(apply(&db, &cmd).await, Err("40001"), "an older table version");
    let err = db.propose(&cmd).await.expect_err("stale guards are rejected");
    assert!(err.retryable(), "{err}");
    // The same command with guards that hold applies.
    cmd.table_guards = vec![(t.id, version)];
    if let Step::Write { guards, .. } = &mut cmd.steps[0] {
        guards.push(RowGuard { key: row1.clone(), hash: Some(hash) });
        guards.push(RowGuard { key: key(&t, &u(9, None, None, "")), hash: None });
    }
    assert_eq!(apply(&db, &cmd).await, Ok(()));
    assert!(db.rows("SELECT x FROM u WHERE id = 1").await.contains("| 100 |"));
}

#[tokio::test]
async fn a_command_is_all_or_nothing_across_its_steps() {
    let (db, t) = users().await;
    let mut x = t.clone();
    x.id = db.engine.catalog().unwrap().next_table_id;
    x.name = "x".into();
    let step = |ops| Step::Write { table: t.id, guards: vec![], ops };
    let mut cmd = write(&db, &t, vec![], vec![insert(&t, &u(3, Some("c"), Some(3), "x")), delete(&t, 2)]);
    cmd.steps.insert(0, Step::CreateTable(x));
    cmd.steps.push(Step::Truncate { id: t.id });
    cmd.steps.push(step(vec![insert(&t, &u(4, Some("a"), Some(4), "y"))]));
    // The last step breaks a unique index: the table, the writes and the truncate before it
    // are all undone.
    cmd.steps.push(step(vec![insert(&t, &u(5, Some("a"), Some(5), "z"))]));
    assert_eq!(apply(&db, &cmd).await, Err("23505"));
    assert!(!db.engine.catalog().unwrap().tables.contains_key("x"));
    assert_eq!(rows(&db, &t).len(), 2);
    cmd.steps.pop();
    assert_eq!(apply(&db, &cmd).await, Ok(()));
    assert!(db.engine.catalog().unwrap().tables.contains_key("x"));
    assert_eq!(rows(&db, &t).iter().map(|(_, r)| r[0].clone()).collect::<Vec<_>>(), [Value::Int(4)]);
    assert_indexes_match_rows(&db, &t);
}
