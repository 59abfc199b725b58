//! `Engine::insert_batches` (the bulk-load entry point) on the in-memory state: the same
//! coercions, checks and SQLSTATEs as INSERT, one atomic command per call, and the failing
//! row named.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListBuilder, Float32Builder, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

mod common;
use common::Db;

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn texts(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn ints(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

#[tokio::test]
async fn rows_are_coerced_to_the_column_types_matched_by_name_with_defaults_for_the_rest() {
    let db = Db::new();
    db.ok("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(5) NOT NULL, score REAL, ok BOOLEAN, \
         born DATE, at TIMESTAMP, tag TEXT DEFAULT 'none')")
        .await;
    // Text columns for everything, in another order than the table's: as a CSV read as text.
    let b = batch(vec![
        ("at", texts(&[Some("2024-01-02 03:04:05"), None])),
        ("born", texts(&[Some("1999-12-31"), None])),
        ("ok", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        ("score", Arc::new(Float64Array::from(vec![Some(1.5), None]))),
        ("name", texts(&[Some("ab,\"c"), Some("x")])),
        ("id", ints(&[Some(2), Some(1)])),
    ]);
    assert_eq!(db.load("t", &[b]).await.unwrap(), 2);
    assert_eq!(
        db.rows("SELECT * FROM t ORDER BY id").await,
        "+----+-------+-------+------+------------+---------------------+------+\n\
         | id | name  | score | ok   | born       | at                  | tag  |\n\
         +----+-------+-------+------+------------+---------------------+------+\n\
         | 1  | x     |       |      |            |                     | none |\n\
         | 2  | ab,\"c | 1.5   | true | 1999-12-31 | 2024-01-02T03:04:05 | none |\n\
         +----+-------+-------+------+------------+---------------------+------+"
    );
}

#[tokio::test]
async fn a_bad_row_fails_the_whole_call_with_insert_s_sqlstate_and_its_position() {
    let db = Db::new();
    db.ok("CREATE TABLE t (id SMALLINT PRIMARY KEY, name VARCHAR(3) NOT NULL)").await;
    db.ok("INSERT INTO t VALUES (100, 'old')").await;
    let cases: Vec<(RecordBatch, &str, usize)> = vec![
        // not a number
        (batch(vec![("id", texts(&[Some("1"), Some("x")])), ("name", texts(&[Some("a"), Some("b")]))]), "22P02", 1),
        // too big for SMALLINT
        (batch(vec![("id", ints(&[Some(1), Some(2), Some(70_000)])), ("name", texts(&[Some("a"); 3]))]), "22003", 2),
        // too long for VARCHAR(3)
        (batch(vec![("id", ints(&[Some(1), Some(2)])), ("name", texts(&[Some("abcd"), Some("b")]))]), "22001", 0),
        // NULL in a NOT NULL column
        (batch(vec![("id", ints(&[Some(1), Some(2)])), ("name", texts(&[Some("a"), None]))]), "23502", 1),
        // a duplicate inside the call
        (batch(vec![("id", ints(&[Some(1), Some(2), Some(1)])), ("name", texts(&[Some("a"); 3]))]), "23505", 2),
        // a key already stored
        (batch(vec![("id", ints(&[Some(1), Some(100)])), ("name", texts(&[Some("a"); 2]))]), "23505", 1),
        // the primary key is NOT NULL too
        (batch(vec![("id", ints(&[None])), ("name", texts(&[Some("a")]))]), "23502", 0),
    ];
    for (b, code, row) in cases {
        let e = db.load("t", &[b]).await.unwrap_err();
        assert_eq!((e.sqlstate(), e.row()), (code, Some(row)), "{e}");
    }
    // Across batches, rows count on from the first batch.
    let b1 = batch(vec![("id", ints(&[Some(1), Some(2)])), ("name", texts(&[Some("a"); 2]))]);
    let b2 = batch(vec![("id", ints(&[Some(3), Some(2)])), ("name", texts(&[Some("a"); 2]))]);
    let e = db.load("t", &[b1, b2]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.row()), ("23505", Some(3)));
    // Nothing of any failed call was applied.
    assert_eq!(db.rows("SELECT count(*) AS n FROM t").await, "+---+\n| n |\n+---+\n| 1 |\n+---+");

    // Errors that are no row's fault.
    let e = db.load("nope", &[batch(vec![("id", ints(&[Some(1)]))])]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.row()), ("42P01", None));
    let e = db.load("t", &[batch(vec![("idx", ints(&[Some(1)]))])]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.row()), ("42703", None));
    assert_eq!(db.load("t", &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn tables_without_a_key_get_row_ids_and_unique_indexes_are_enforced_at_apply() {
    let db = Db::new();
    db.ok("CREATE TABLE log (msg TEXT, code INT)").await;
    db.ok("CREATE UNIQUE INDEX log_code ON log (code)").await;
    let b = batch(vec![("msg", texts(&[Some("a"), Some("a")])), ("code", ints(&[Some(1), Some(2)]))]);
    assert_eq!(db.load("log", &[b.clone(), b.slice(0, 0)]).await.unwrap(), 2);
    let dup = batch(vec![("msg", texts(&[Some("b")])), ("code", ints(&[Some(2)]))]);
    assert_eq!(db.load("log", &[dup]).await.unwrap_err().sqlstate(), "23505");
    let ok = batch(vec![("msg", texts(&[Some("b"), Some("c")])), ("code", ints(&[None, None]))]);
    assert_eq!(db.load("log", &[ok]).await.unwrap(), 2);
    assert_eq!(
        db.rows("SELECT msg, code FROM log WHERE code = 2").await,
        "+-----+------+\n| msg | code |\n+-----+------+\n| a   | 2    |\n+-----+------+"
    );
    assert_eq!(db.rows("SELECT count(*) AS n FROM log").await, "+---+\n| n |\n+---+\n| 4 |\n+---+");
}

#[tokio::test]
async fn vectors_load_from_float_lists_and_the_hnsw_index_finds_them() {
    let db = Db::new();
    db.ok("CREATE TABLE v (id BIGINT PRIMARY KEY, e VECTOR(3))").await;
    db.ok("CREATE INDEX v_e ON v USING hnsw (e vector_l2_ops)").await;
    let mut list = FixedSizeListBuilder::new(Float32Builder::new(), 3).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        false,
    )));
    for i in 0..100 {
        list.values().append_slice(&[i as f32, 0.5, -1.0]);
        list.append(true);
    }
    let b = batch(vec![("id", ints(&(0..100).map(Some).collect::<Vec<_>>())), ("e", Arc::new(list.finish()))]);
    assert_eq!(db.load("v", &[b]).await.unwrap(), 100);
    assert_eq!(
        db.rows("SELECT id FROM v ORDER BY e <-> '[42,0.5,-1]' LIMIT 1").await,
        "+----+\n| id |\n+----+\n| 42 |\n+----+"
    );
    // A wrong dimension is refused (as INSERT refuses it).
    let bad = batch(vec![("id", ints(&[Some(500)])), ("e", texts(&[Some("[1,2]")]))]);
    let e = db.load("v", &[bad]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.row()), ("22000", Some(0)));
}
