//! The PostgreSQL wire protocol on a 3-node cluster, through a follower: tokio-postgres
//! (prepared statements, parameters and results of every type in binary, SQLSTATEs,
//! transaction blocks, session settings, timeouts and cancellation), the real `psql` running a
//! script whose output is compared with the expected text, psycopg, and password auth.

use std::process::Command;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use quorumdb_tests::{TestCluster, wait_for};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

async fn connect(addr: &str, password: Option<&str>) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(addr, &password.map(|p| format!("password={p}")).unwrap_or_default()).await
}

/// Connects with `extra` appended to the connection string (`key=value` pairs).
async fn connect_with(addr: &str, extra: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let conf = format!("host={host} port={port} user=app dbname=quorumdb connect_timeout=5 {extra}");
    let (client, conn) = tokio_postgres::connect(&conf, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Parameters for the test's INSERT: `id` and NULL for every other column.
fn null_row(id: &i64) -> Vec<&(dyn ToSql + Sync)> {
    vec![
        id,
        &None::<i16>,
        &None::<i32>,
        &None::<f32>,
        &None::<f64>,
        &None::<bool>,
        &None::<&str>,
        &None::<&str>,
        &None::<NaiveDate>,
        &None::<NaiveDateTime>,
        &None::<&[u8]>,
        &None::<&str>,
    ]
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

async fn follower(c: &TestCluster) -> u64 {
    let leader = c.wait_leader().await;
    c.running().into_iter().find(|id| *id != leader).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_types_errors_and_transactions() {
    let c = TestCluster::start(3).await;
    let f = follower(&c).await;
    let db = connect(&c.pg_addr(f), None).await.unwrap();
    db.batch_execute(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, i2 SMALLINT, i4 INTEGER, f4 REAL, f8 DOUBLE PRECISION, b BOOLEAN, \
         s TEXT, v VARCHAR(10), d DATE, ts TIMESTAMP, n NUMERIC(10,2), by BYTEA, e VECTOR(3))",
    )
    .await
    .unwrap();

    // Parameter types are inferred from the target columns.
    let ins = db.prepare("INSERT INTO t (id, i2, i4, f4, f8, b, s, v, d, ts, by, e) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)").await.unwrap();
    assert_eq!(
        ins.params(),
        &[
            Type::INT8,
            Type::INT2,
            Type::INT4,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::BOOL,
            Type::TEXT,
            Type::TEXT,
            Type::DATE,
            Type::TIMESTAMP,
            Type::BYTEA,
            Type::TEXT
        ]
    );
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let ts: NaiveDateTime = day.and_hms_micro_opt(23, 59, 58, 123_450).unwrap();
    for id in 1..=3i64 {
        let n = db
            .execute(
                &ins,
                &[
                    &id,
                    &(id as i16),
                    &(id as i32 * 1000),
                    &1.5f32,
                    &-2.25f64,
                    &(id % 2 == 0),
                    &"it's \"q\"",
                    &"short",
                    &day,
                    &ts,
                    &vec![0u8, 255, 7],
                    &"[1,2.5,-3]",
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // NULLs of every type.
    db.execute(&ins, &null_row(&4)).await.unwrap();
    db.execute("UPDATE t SET n = $1::numeric WHERE id = $2", &[&"12.5", &1i64]).await.unwrap();

    // Results come back typed (tokio-postgres asks for binary).
    let sel = db.prepare("SELECT id, i2, i4, f4, f8, b, s, v, d, ts, by, e FROM t WHERE id = $1").await.unwrap();
    assert_eq!(sel.params(), &[Type::INT8]);
    let cols: Vec<&Type> = sel.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(cols[..4], [&Type::INT8, &Type::INT2, &Type::INT4, &Type::FLOAT4]);
    let r = db.query_one(&sel, &[&2i64]).await.unwrap();
    assert_eq!(r.get::<_, i64>(0), 2);
    assert_eq!(r.get::<_, i16>(1), 2);
    assert_eq!(r.get::<_, i32>(2), 2000);
    assert_eq!(r.get::<_, f32>(3), 1.5);
    assert_eq!(r.get::<_, f64>(4), -2.25);
    assert!(r.get::<_, bool>(5));
    assert_eq!(r.get::<_, String>(6), "it's \"q\"");
    assert_eq!(r.get::<_, String>(7), "short");
    assert_eq!(r.get::<_, NaiveDate>(8), day);
    assert_eq!(r.get::<_, NaiveDateTime>(9), ts);
    assert_eq!(r.get::<_, Vec<u8>>(10), vec![0u8, 255, 7]);
    assert_eq!(r.get::<_, String>(11), "[1,2.5,-3]");
    let r = db.query_one(&sel, &[&4i64]).await.unwrap();
    assert!((1..12).all(|i| r.try_get::<_, Option<String>>(i).map(|v| v.is_none()).unwrap_or(true)));
    assert_eq!(r.get::<_, Option<i32>>(2), None);
    // Text results (simple protocol) are PostgreSQL's text forms.
    let rows = db.simple_query("SELECT n, ts, b, by FROM t WHERE id = 1").await.unwrap();
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let row = row.unwrap();
    assert_eq!(
        (row.get(0), row.get(1), row.get(2), row.get(3)),
        (Some("12.50"), Some("2024-02-29 23:59:58.12345"), Some("f"), Some("\\x00ff07"))
    );

    // Errors carry SQLSTATEs, and the connection stays usable.
    let e = db.execute(&ins, &null_row(&1)).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(code(&db.simple_query("SELEC 1").await.unwrap_err()), "42601");
    assert_eq!(code(&db.simple_query("SELECT * FROM nope").await.unwrap_err()), "42P01");
    assert_eq!(code(&db.simple_query("SELECT 1/0").await.unwrap_err()), "22012");
    assert_eq!(code(&db.simple_query("INSERT INTO t (id, i4) VALUES (9, 'x')").await.unwrap_err()), "22P02");
    assert_eq!(code(&db.simple_query("INSERT INTO t (id, v) VALUES (9, 'much too long')").await.unwrap_err()), "22001");
    // A parameter whose type cannot be inferred is text, which the cast parses.
    assert_eq!(db.query_one("SELECT $1::int + 1", &[&"4"]).await.unwrap().get::<_, i64>(0), 5);
    assert_eq!(code(&db.prepare("SELECT 1; SELECT 2").await.unwrap_err()), "42601");
    assert_eq!(db.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0), 4);

    // Session settings.
    assert_eq!(db.query_one("SHOW consistency", &[]).await.unwrap().get::<_, String>(0), "linearizable");
    db.batch_execute("SET consistency = 'stale'; SET hnsw.ef_search = 64").await.unwrap();
    assert_eq!(db.query_one("SHOW consistency", &[]).await.unwrap().get::<_, String>(0), "stale");
    assert_eq!(db.query_one("SHOW hnsw.ef_search", &[]).await.unwrap().get::<_, String>(0), "64");
    assert_eq!(code(&db.simple_query("SET consistency = 'eventual'").await.unwrap_err()), "22023");
    assert_eq!(code(&db.simple_query("SET no_such_setting = 1").await.unwrap_err()), "42704");
    db.batch_execute("SET consistency = 'linearizable'; SET application_name = 'tests'").await.unwrap();
    // Settings given when connecting (`options`, libpq's PGOPTIONS) hold for the session.
    let opts = connect_with(&c.pg_addr(f), "options='-c consistency=lease -cstatement_timeout=2s'").await.unwrap();
    assert_eq!(opts.query_one("SHOW consistency", &[]).await.unwrap().get::<_, String>(0), "lease");
    assert_eq!(opts.query_one("SHOW statement_timeout", &[]).await.unwrap().get::<_, String>(0), "2000ms");
    assert_eq!(opts.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0), 4);
    for bad in ["options='-c consistency=eventual'", "options='-c no_such_setting=1'", "options=consistency"] {
        let e = connect_with(&c.pg_addr(f), bad).await.err().unwrap_or_else(|| panic!("{bad}: connected"));
        assert!(["22023", "42704"].contains(&code(&e).as_str()), "{bad}: {e}");
    }

    // A transaction block applies atomically at COMMIT, and only then.
    let other = connect(&c.pg_addr(c.wait_leader().await), None).await.unwrap();
    let mut db = db;
    let tx = db.transaction().await.unwrap();
    assert_eq!(tx.execute("INSERT INTO t (id, i4) VALUES (10, 1), (11, 1)", &[]).await.unwrap(), 2);
    assert_eq!(tx.execute("UPDATE t SET i4 = i4 + 1 WHERE id >= 10", &[]).await.unwrap(), 2);
    // The block reads its own writes; others do not see them yet.
    assert_eq!(tx.query_one("SELECT sum(i4) FROM t WHERE id >= 10", &[]).await.unwrap().get::<_, i64>(0), 4);
    assert_eq!(other.query_one("SELECT count(*) FROM t WHERE id >= 10", &[]).await.unwrap().get::<_, i64>(0), 0);
    tx.commit().await.unwrap();
    assert_eq!(other.query_one("SELECT sum(i4) FROM t WHERE id >= 10", &[]).await.unwrap().get::<_, i64>(0), 4);
    let tx = db.transaction().await.unwrap();
    tx.execute("DELETE FROM t WHERE id = 10", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(other.query_one("SELECT count(*) FROM t WHERE id = 10", &[]).await.unwrap().get::<_, i64>(0), 1);
    // A failed statement aborts the block: later statements are refused, COMMIT rolls back.
    let tx = db.transaction().await.unwrap();
    tx.execute("UPDATE t SET i4 = 100 WHERE id = 10", &[]).await.unwrap();
    assert_eq!(code(&tx.execute("INSERT INTO t (id) VALUES (10)", &[]).await.unwrap_err()), "23505");
    assert_eq!(code(&tx.execute("SELECT 1", &[]).await.unwrap_err()), "25P02");
    let _ = tx.commit().await;
    assert_eq!(other.query_one("SELECT i4 FROM t WHERE id = 10", &[]).await.unwrap().get::<_, Option<i32>>(0), Some(2));
    // A block whose write would now change other rows than it reported fails at COMMIT.
    let tx = db.transaction().await.unwrap();
    assert_eq!(tx.execute("UPDATE t SET i4 = 7 WHERE id >= 10", &[]).await.unwrap(), 2);
    other.execute("DELETE FROM t WHERE id = 11", &[]).await.unwrap();
    assert_eq!(code(&tx.commit().await.unwrap_err()), "40001");
    assert_eq!(other.query_one("SELECT i4 FROM t WHERE id = 10", &[]).await.unwrap().get::<_, Option<i32>>(0), Some(2));

    // statement_timeout and cancellation stop a long query with 57014; the session goes on.
    let slow = "SELECT count(*) FROM generate_series(1, 5000000000)";
    db.batch_execute("SET statement_timeout = 300").await.unwrap();
    assert_eq!(code(&db.simple_query(slow).await.unwrap_err()), "57014");
    db.batch_execute("SET statement_timeout = 0").await.unwrap();
    let token = db.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await
    });
    assert_eq!(code(&db.simple_query(slow).await.unwrap_err()), "57014");
    canceller.await.unwrap().unwrap();
    assert_eq!(db.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0), 5);
    c.wait_converged().await;
}

/// Runs `psql` with `args`; stdout and stderr.
fn psql(addr: &str, args: &[&str]) -> (String, String) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("psql")
        .args(["-X", "-h", host, "-p", port, "-U", "app", "-d", "quorumdb"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql runs (apt-get install postgresql-client; scripts/setup.sh does)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_and_describe_through_a_follower() {
    let c = TestCluster::start(3).await;
    let f = follower(&c).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/pg");
    let (out, err) = psql(&c.pg_addr(f), &["-f", &format!("{dir}/script.sql")]);
    let expected = std::fs::read_to_string(format!("{dir}/script.out")).unwrap();
    if out != expected {
        let _ = std::fs::write(std::env::temp_dir().join("quorumdb-psql-script.out"), &out);
    }
    assert_eq!(
        out, expected,
        "psql output differs (actual written to $TMPDIR/quorumdb-psql-script.out); stderr:\n{err}"
    );
    let errors: Vec<&str> = err.lines().map(|l| l.split_once("ERROR:").map_or(l, |(_, e)| e.trim())).collect();
    assert_eq!(
        errors,
        [
            "duplicate key value violates unique constraint \"items_pkey\"",
            "relation \"missing\" does not exist",
            "division by zero"
        ],
        "{err}"
    );
    // Every node answers the same afterwards (the script ran through a follower).
    c.wait_converged().await;
    for id in c.running() {
        let (out, _) = psql(&c.pg_addr(id), &["-At", "-c", "SELECT count(*), sum(qty) FROM items"]);
        assert_eq!(out, "4|17\n", "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_round_trip() {
    let c = TestCluster::start(1).await;
    let addr = c.pg_addr(1);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/pg/psycopg_check.py");
    let out = Command::new("/usr/bin/python3")
        .args([script, host, port])
        .output()
        .expect("python3 with psycopg (apt-get install python3-psycopg; scripts/setup.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "psycopg script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "ok 3 rows; 23505; 22012");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quorumdb_server::NodeConfig::new(1, dir.path().join("n1"), "127.0.0.1:0");
    cfg.init = true;
    cfg.pg_listen = Some("127.0.0.1:0".into());
    cfg.password = Some("s3cret".into());
    let node = quorumdb_server::Node::start(cfg).await.unwrap();
    let addr = node.pg_addr.unwrap().to_string();
    wait_for(20, "a leader", || async { node.replica.metrics().current_leader.map(|_| ()) }).await;
    // tokio-postgres refuses when the server asks for a password it was not given.
    let e = connect(&addr, None).await.unwrap_err();
    assert!(e.to_string().contains("invalid configuration"), "{e}");
    let e = connect(&addr, Some("wrong")).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_PASSWORD), "{e}");
    let db = connect(&addr, Some("s3cret")).await.unwrap();
    assert_eq!(db.query_one("SELECT 41 + 1", &[]).await.unwrap().get::<_, i64>(0), 42);
    drop(db);
    node.stop().await;
}
