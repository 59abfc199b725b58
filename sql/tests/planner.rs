//! The planner's guards, read off the command it builds ([`Planner::finish`]) before anything is
//! proposed, and the `WHERE` shapes [`point_keys`] treats as primary-key points.
//!
//! [`Planner::finish`]: quorumdb_sql::planner::Planner::finish
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use quorumdb_sql::StatementResult;
use quorumdb_sql::catalog::TableDef;
use quorumdb_sql::codec;
use quorumdb_sql::command::{RowGuard, RowOp, SqlCommand, Step, table_version};
use quorumdb_sql::planner::point_keys;
use quorumdb_sql::types::Value;
use quorumdb_state::AppliedState;

mod common;
use common::Db;

/// Plans `sql` as one batch against the current state, proposing nothing.
async fn plan(db: &Db, sql: &str) -> SqlCommand {
    let mut planner = db.engine.planner().unwrap();
    for s in db.engine.parse(sql, &[]).unwrap().statements {
        planner.plan(s).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    planner.finish().unwrap_or_else(|| panic!("{sql}: the batch wrote nothing"))
}

/// Proposes a planned command as the engine would; the SQLSTATE if apply rejects it.
async fn apply(db: &Db, cmd: &SqlCommand) -> Result<(), &'static str> {
    db.propose(cmd).await.map_err(|e| e.sqlstate())
}

/// The only write step of `cmd`: its row guards and operations.
fn the_write(cmd: &SqlCommand) -> (&[RowGuard], &[RowOp]) {
    let writes: Vec<_> = cmd
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Write { guards, ops, .. } => Some((guards.as_slice(), ops.as_slice())),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 1, "{cmd:?}");
    writes[0]
}

fn key(def: &TableDef, values: &[Value]) -> Vec<u8> {
    let types: Vec<_> = def.primary_key.iter().map(|&c| &def.columns[c].ty).collect();
    codec::encode_key(&values.iter().collect::<Vec<_>>(), &types).unwrap()
}

/// The guard a row as it is stored now satisfies.
fn current_guard(db: &Db, def: &TableDef, key: Vec<u8>) -> RowGuard {
    let hash = db.state.get(&codec::row_key(def.id, &key)).unwrap().map(|b| codec::row_hash(&b));
    RowGuard { key, hash }
}

fn version(db: &Db, def: &TableDef) -> u64 {
    table_version(|k| db.state.get(k), def.id).unwrap()
}

async fn five_rows() -> Db {
    let db = Db::new();
    db.ok("CREATE TABLE t (id INT PRIMARY KEY, v INT, w TEXT)").await;
    db.ok("INSERT INTO t VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c'), (4, 40, 'd'), (5, 50, 'e')").await;
    db
}

#[tokio::test]
async fn a_point_update_or_delete_guards_exactly_the_rows_it_read() {
    let db = five_rows().await;
    let t = db.def("t");
    for sql in
        ["UPDATE t SET v = v + 1 WHERE id = 3", "DELETE FROM t WHERE id = 3", "UPDATE t SET v = 0 WHERE 3 = t.id"]
    {
        let cmd = plan(&db, sql).await;
        assert!(cmd.table_guards.is_empty(), "{sql}: a point statement guards no table: {cmd:?}");
        let (guards, ops) = the_write(&cmd);
        assert_eq!(guards, [current_guard(&db, &t, key(&t, &[Value::Int(3)]))], "{sql}");
        assert!(guards[0].hash.is_some());
        assert_eq!(ops.len(), 1, "{sql}");
    }
    // A key with no row: the guard says it must still be absent.
    let cmd = plan(&db, "DELETE FROM t WHERE id = 42").await;
    let (guards, ops) = the_write(&cmd);
    assert_eq!(guards, [RowGuard { key: key(&t, &[Value::Int(42)]), hash: None }]);
    assert!(ops.is_empty());
}

#[tokio::test]
async fn a_point_guard_holds_against_writes_to_other_rows_and_fails_on_its_own_row() {
    let db = five_rows().await;
    let cmd = plan(&db, "UPDATE t SET v = v + 1 WHERE id = 3").await;
    db.ok("UPDATE t SET v = 0 WHERE id = 4").await;
    assert_eq!(apply(&db, &cmd).await, Ok(()), "another row changed: the point guard still holds");
    let cmd = plan(&db, "UPDATE t SET v = v + 1 WHERE id = 3").await;
    db.ok("UPDATE t SET w = 'changed' WHERE id = 3").await;
    assert_eq!(apply(&db, &cmd).await, Err("40001"));
    // An absent key's guard fails once the key is taken.
    let cmd = plan(&db, "DELETE FROM t WHERE id = 42").await;
    db.ok("INSERT INTO t VALUES (42, 0, 'x')").await;
    assert_eq!(apply(&db, &cmd).await, Err("40001"));
    assert!(db.rows("SELECT v, w FROM t WHERE id = 3").await.contains("| 31 | changed |"));
}

#[tokio::test]
async fn a_non_point_update_or_delete_guards_the_table_version() {
    let db = five_rows().await;
    let t = db.def("t");
    let before = version(&db, &t);
    assert!(before > 0);
    for sql in [
        "UPDATE t SET v = 0 WHERE v > 20",
        "UPDATE t SET v = 0",
        "UPDATE t SET v = 0 WHERE id = 1 OR id = 2",
        "UPDATE t SET v = 0 WHERE id > 4",
        "UPDATE t SET v = 0 WHERE id IN (1, 2)",
        "DELETE FROM t WHERE w = 'a'",
        "DELETE FROM t WHERE CAST(id AS TEXT) = '1'",
        // The target table read twice: its rows are not pinned by the outer WHERE alone.
        "DELETE FROM t WHERE id = 1 AND v IN (SELECT v FROM t)",
    ] {
        let cmd = plan(&db, sql).await;
        assert_eq!(cmd.table_guards, [(t.id, before)], "{sql}");
        let (guards, _) = the_write(&cmd);
        assert!(guards.is_empty(), "{sql}: {guards:?}");
    }
    // Any write to the table since the plan, even to another row, fails it.
    let cmd = plan(&db, "UPDATE t SET v = 0 WHERE v > 40").await;
    db.ok("UPDATE t SET w = 'z' WHERE id = 1").await;
    assert!(version(&db, &t) > before);
    assert_eq!(apply(&db, &cmd).await, Err("40001"));
    assert!(db.rows("SELECT v FROM t WHERE id = 5").await.contains("| 50 |"), "the stale plan applied nothing");
}

#[tokio::test]
async fn other_tables_a_write_reads_are_guarded_as_a_whole() {
    let db = five_rows().await;
    db.ok("CREATE TABLE s (id INT PRIMARY KEY, v INT)").await;
    db.ok("INSERT INTO s VALUES (1, 1)").await;
    let (t, s) = (db.def("t"), db.def("s"));
    let cmd = plan(&db, "UPDATE t SET v = (SELECT max(v) FROM s) WHERE id = 2").await;
    assert_eq!(cmd.table_guards, [(s.id, version(&db, &s))]);
    assert_eq!(the_write(&cmd).0, [current_guard(&db, &t, key(&t, &[Value::Int(2)]))]);
    let cmd = plan(&db, "INSERT INTO t SELECT id + 100, v, 'copy' FROM s").await;
    assert_eq!(cmd.table_guards, [(s.id, version(&db, &s))], "the source is guarded, not the target");
    assert!(the_write(&cmd).0.is_empty());
}

#[tokio::test]
async fn an_insert_that_reads_nothing_records_no_guard() {
    let db = five_rows().await;
    let cmd = plan(&db, "INSERT INTO t VALUES (6, 60, 'f'), (7, DEFAULT, 'g')").await;
    assert!(cmd.table_guards.is_empty());
    let (guards, ops) = the_write(&cmd);
    assert!(guards.is_empty());
    assert_eq!(ops.len(), 2);
    // Concurrent writes to the table do not invalidate it: only apply's key check decides.
    db.ok("UPDATE t SET v = 0").await;
    assert_eq!(apply(&db, &cmd).await, Ok(()));
    let cmd = plan(&db, "INSERT INTO t VALUES (8, 80, 'h')").await;
    db.ok("INSERT INTO t VALUES (8, 0, 'first')").await;
    assert_eq!(apply(&db, &cmd).await, Err("23505"));
}

#[tokio::test]
async fn on_conflict_guards_each_key_it_decided_on() {
    let db = five_rows().await;
    let t = db.def("t");
    let cmd = plan(&db, "INSERT INTO t VALUES (1, 0, 'x'), (9, 90, 'i') ON CONFLICT (id) DO NOTHING").await;
    assert!(cmd.table_guards.is_empty());
    let (guards, ops) = the_write(&cmd);
    assert_eq!(
        guards,
        [current_guard(&db, &t, key(&t, &[Value::Int(1)])), RowGuard { key: key(&t, &[Value::Int(9)]), hash: None }]
    );
    assert_eq!(ops.len(), 1, "only the new key is inserted");
    let cmd = plan(&db, "INSERT INTO t VALUES (2, 1, 'x') ON CONFLICT (id) DO UPDATE SET v = t.v + excluded.v").await;
    assert_eq!(the_write(&cmd).0, [current_guard(&db, &t, key(&t, &[Value::Int(2)]))]);
}

#[tokio::test]
async fn on_conflict_on_a_unique_index_guards_the_row_it_found_or_the_table() {
    let db = five_rows().await;
    db.ok("CREATE UNIQUE INDEX t_v ON t (v)").await;
    let t = db.def("t");
    // A conflict found through the index: the row it names is guarded, not the table.
    let cmd = plan(&db, "INSERT INTO t VALUES (7, 10, 'x') ON CONFLICT (v) DO UPDATE SET w = 'y'").await;
    assert!(cmd.table_guards.is_empty());
    assert_eq!(the_write(&cmd).0, [current_guard(&db, &t, key(&t, &[Value::Int(1)]))]);
    // No row holds v = 70 when planned; another insert of it lands first: the plan fails as a
    // conflict (40001, and is planned again) rather than as a unique violation.
    let cmd = plan(&db, "INSERT INTO t VALUES (8, 70, 'x') ON CONFLICT (v) DO NOTHING").await;
    assert_eq!(cmd.table_guards.len(), 1);
    db.ok("INSERT INTO t VALUES (9, 70, 'first')").await;
    assert_eq!(apply(&db, &cmd).await, Err("40001"));
    // Planned again, it finds that row and does nothing.
    let r = db.ok("INSERT INTO t VALUES (8, 70, 'x') ON CONFLICT (v) DO NOTHING").await;
    assert!(matches!(r.as_slice(), [StatementResult::Done { rows_affected: 0, .. }]), "{r:?}");
}

#[tokio::test]
async fn every_command_pins_the_catalog_version_and_ddl_moves_it() {
    let db = five_rows().await;
    let v0 = db.engine.catalog().unwrap().version;
    assert!(v0 > 0);
    let create = plan(&db, "CREATE TABLE x (a INT)").await;
    let update = plan(&db, "UPDATE t SET v = 1 WHERE id = 1").await;
    assert_eq!((create.catalog_version, update.catalog_version), (v0, v0));
    assert!(matches!(create.steps.as_slice(), [Step::CreateTable(d)] if d.name == "x"));
    // Another DDL lands first: both plans are stale, and nothing of them applies.
    db.ok("CREATE INDEX t_v ON t (v)").await;
    assert!(db.engine.catalog().unwrap().version > v0);
    assert_eq!(apply(&db, &create).await, Err("40001"));
    assert_eq!(apply(&db, &update).await, Err("40001"));
    assert!(!db.engine.catalog().unwrap().tables.contains_key("x"));
    // Building an index reads every row: it also guards the table.
    let t = db.def("t");
    let cmd = plan(&db, "CREATE INDEX t_w ON t (w)").await;
    assert_eq!(cmd.table_guards, [(t.id, version(&db, &t))]);
    db.ok("INSERT INTO t VALUES (10, 100, 'j')").await;
    assert_eq!(apply(&db, &cmd).await, Err("40001"));
}

#[tokio::test]
async fn planning_sees_the_batch_s_earlier_statements_and_orders_the_steps() {
    let db = Db::new();
    let cmd =
        plan(&db, "CREATE TABLE n (id INT PRIMARY KEY, v INT); INSERT INTO n VALUES (1, 1); UPDATE n SET v = 2").await;
    assert!(matches!(
        cmd.steps.as_slice(),
        [Step::CreateTable(_), Step::Write { ops: a, .. }, Step::Write { ops: b, .. }]
            if matches!(a.as_slice(), [RowOp::Insert { .. }]) && matches!(b.as_slice(), [RowOp::Update { .. }])
    ));
    assert!(cmd.table_guards.is_empty(), "a table created in the batch has nothing to guard");
    assert_eq!(apply(&db, &cmd).await, Ok(()));
    assert!(db.rows("SELECT v FROM n").await.contains("| 2 |"));
}

// ---- point_keys ----

fn expr(sql: &str) -> Expr {
    Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).unwrap().parse_expr().unwrap()
}

async fn point_tables() -> (TableDef, TableDef) {
    let db = Db::new();
    db.ok("CREATE TABLE t (id INT PRIMARY KEY, other INT, name TEXT)").await;
    db.ok("CREATE TABLE c (a INT, b TEXT, x INT, PRIMARY KEY (a, b))").await;
    (db.def("t"), db.def("c"))
}

#[tokio::test]
async fn point_keys_for_equalities_on_every_key_column() {
    let (t, c) = point_tables().await;
    let one = Some(vec![key(&t, &[Value::Int(1)])]);
    for w in ["id = 1", "1 = id", "t.id = 1", "(id = 1)", "id = '1'", "id = 1 AND name = 'n'", "other = 2 AND (id = 1)"]
    {
        assert_eq!(point_keys(&t, &expr(w)), one, "{w}");
    }
    assert_eq!(point_keys(&t, &expr("id = -7")), Some(vec![key(&t, &[Value::Int(-7)])]));
    let ab = Some(vec![key(&c, &[Value::Int(1), Value::Text("x".into())])]);
    for w in ["a = 1 AND b = 'x'", "b = 'x' AND a = 1", "x > 3 AND b = 'x' AND c.a = 1"] {
        assert_eq!(point_keys(&c, &expr(w)), ab, "{w}");
    }
}

#[tokio::test]
async fn point_keys_refuse_what_is_not_a_point() {
    let (t, c) = point_tables().await;
    for w in [
        "id > 1",
        "id >= 1 AND id <= 1",
        "id BETWEEN 1 AND 1",
        "id = 1 OR id = 2",
        "id = 1 OR other = 2",
        "NOT (id = 1)",
        "id <> 1",
        "CAST(id AS TEXT) = '1'",
        "id::text = '1'",
        "id + 0 = 1",
        "id = other",
        "id = NULL",
        "id IS NULL",
        "id = 1.5",
        "id = 'one'",
        "other = 1",
        "s.id = 1",
        // Not yet a point shape (a table guard, not a row guard per key).
        "id IN (1, 2)",
        // Two different values for one key column: no row matches, so no key is pinned.
        "id = 1 AND id = 2",
    ] {
        assert_eq!(point_keys(&t, &expr(w)), None, "{w}");
    }
    for w in ["a = 1", "b = 'x'", "a = 1 AND b > 'x'", "a = 1 OR b = 'x'", "a = 1 AND x = 2"] {
        assert_eq!(point_keys(&c, &expr(w)), None, "{w}");
    }
}

/// The rows of each statement's result, or the rows it affected.
async fn counts(db: &Db, sql: &str) -> Vec<u64> {
    db.ok(sql)
        .await
        .iter()
        .map(|r| match r {
            StatementResult::Rows { batches, .. } => batches.iter().map(|b| b.num_rows() as u64).sum(),
            StatementResult::Done { rows_affected, .. } => *rows_affected,
        })
        .collect()
}

#[tokio::test]
async fn a_key_equality_beside_another_filter_is_not_a_pure_point_read() {
    let db = five_rows().await;
    let t = db.def("t");
    // Row 1 exists, but the rest of the WHERE filters it out.
    assert_eq!(counts(&db, "SELECT * FROM t WHERE id = 1 AND v = 99").await, [0]);
    assert_eq!(counts(&db, "SELECT id, v FROM t WHERE v = 99 AND id = 1").await, [0]);
    assert_eq!(counts(&db, "SELECT id FROM t WHERE id = 1 AND id = 2").await, [0]);
    assert_eq!(counts(&db, "SELECT id FROM t WHERE id = 1 AND v = 10").await, [1]);
    // A write with such a WHERE changes nothing, and does not conflict with itself.
    let sql = "UPDATE t SET w = 'no' WHERE id = 1 AND v = 99; DELETE FROM t WHERE id = 2 AND w = 'zz'";
    assert_eq!(counts(&db, sql).await, [0, 0]);
    // It cannot guard the row it skipped by the row's absence: it guards the table.
    let cmd = plan(&db, "UPDATE t SET w = 'no' WHERE id = 1 AND v = 99").await;
    let (guards, ops) = the_write(&cmd);
    assert!(ops.is_empty() && guards.is_empty(), "{cmd:?}");
    assert_eq!(cmd.table_guards, [(t.id, version(&db, &t))]);
    db.ok("UPDATE t SET v = 99 WHERE id = 1").await;
    assert_eq!(apply(&db, &cmd).await, Err("40001"), "the row now matches: the plan that skipped it is stale");
    assert_eq!(counts(&db, "UPDATE t SET w = 'yes' WHERE id = 1 AND v = 99").await, [1]);
    // When the row matches, the guard is the row as read.
    let cmd = plan(&db, "UPDATE t SET w = 'again' WHERE id = 1 AND v = 99").await;
    assert!(cmd.table_guards.is_empty());
    assert_eq!(the_write(&cmd).0, [current_guard(&db, &t, key(&t, &[Value::Int(1)]))]);
}
