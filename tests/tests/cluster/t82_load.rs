//! The loader (`quorumdb load`) against a 3-node cluster, through a follower: CSV, Parquet
//! and JSON-lines files round-trip exactly; bad rows are reported with their lines while every
//! other row loads; `.npy` vectors go into a table's VECTOR column and a collection, where a
//! nearest-neighbour search finds them. Replicas converge afterwards.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use quorumdb_client::load::{TableLoadOptions, load_table};
use quorumdb_client::vectors::{LoadOptions, TableVectorOptions, load_vectors, load_vectors_into_table};
use quorumdb_tests::TestCluster;
use serde_json::{Value, json};

/// One row of the round-trip files: id, n, x, name, ok, day, at.
type Row =
    (i64, Option<i32>, Option<f64>, Option<&'static str>, Option<bool>, Option<&'static str>, Option<&'static str>);

const ROWS: [Row; 6] = [
    (1, Some(10), Some(1.5), Some("plain"), Some(true), Some("2024-01-02"), Some("2024-01-02 03:04:05")),
    (2, Some(-7), Some(-0.25), Some("a, comma"), Some(false), Some("1999-12-31"), Some("2000-02-29 23:59:59")),
    (3, None, None, None, None, None, None),
    (
        4,
        Some(2_000_000_000),
        Some(1e10),
        Some("say \"hi\""),
        Some(true),
        Some("1970-01-01"),
        Some("1970-01-01 00:00:00"),
    ),
    (5, Some(0), Some(3.0), Some("two\nlines, \"both\""), None, Some("2038-01-19"), Some("2038-01-19 03:14:08")),
    (6, Some(42), Some(0.125), Some("ünïcødé ✓"), Some(false), None, Some("2024-06-30 12:00:00.5")),
];

/// The rows as `SELECT *` answers them in JSON.
fn expected() -> Vec<Value> {
    ROWS.iter().map(|(id, n, x, name, ok, day, at)| json!([id, n, x, name, ok, day, at])).collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn write_csv(path: &Path) {
    let mut text = String::from("id,n,x,name,ok,day,at\n");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for (id, n, x, name, ok, day, at) in ROWS {
        let fields = [
            id.to_string(),
            opt(n.map(|v| v.to_string())),
            opt(x.map(|v| v.to_string())),
            opt(name.map(csv_field)),
            opt(ok.map(|v| v.to_string())),
            opt(day.map(str::to_string)),
            opt(at.map(str::to_string)),
        ];
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn days(d: &str) -> i32 {
    chrono_free_date(d) as i32
}

/// Days since 1970-01-01 of `YYYY-MM-DD` (civil calendar).
fn chrono_free_date(d: &str) -> i64 {
    let p: Vec<i64> = d.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (if p[1] <= 2 { p[0] - 1 } else { p[0] }, p[1], p[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn micros(ts: &str) -> i64 {
    let (d, t) = ts.split_once(' ').unwrap();
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let p: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let frac_us: i64 = format!("{frac:0<6}")[..6].parse().unwrap();
    (chrono_free_date(d) * 86_400 + p[0] * 3600 + p[1] * 60 + p[2]) * 1_000_000 + frac_us
}

fn write_parquet(path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("n", DataType::Int32, true),
        Field::new("x", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.0))),
        Arc::new(Int32Array::from_iter(ROWS.iter().map(|r| r.1))),
        Arc::new(Float64Array::from_iter(ROWS.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter(ROWS.iter().map(|r| r.3))),
        Arc::new(BooleanArray::from_iter(ROWS.iter().map(|r| r.4))),
        Arc::new(Date32Array::from_iter(ROWS.iter().map(|r| r.5.map(days)))),
        Arc::new(TimestampMicrosecondArray::from_iter(ROWS.iter().map(|r| r.6.map(micros)))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    // Two row groups' worth of batches, so the reader crosses a boundary.
    w.write(&batch.slice(0, 3)).unwrap();
    w.flush().unwrap();
    w.write(&batch.slice(3, 3)).unwrap();
    w.close().unwrap();
}

fn write_jsonl(path: &Path) {
    // Keys in another order than the table's columns, one in upper case; a blank line.
    let mut text = String::new();
    for (id, n, x, name, ok, day, at) in ROWS {
        text.push_str(&json!({"at": at, "name": name, "ID": id, "ok": ok, "x": x, "n": n, "day": day}).to_string());
        text.push('\n');
        if id == 3 {
            text.push('\n');
        }
    }
    std::fs::write(path, text).unwrap();
}

async fn select_all(c: &TestCluster, node: u64, sql: &str) -> (Vec<Value>, Vec<String>) {
    let (s, v) = c.sql(node, sql, "linearizable").await;
    assert_eq!(s, 200, "{sql}: {v}");
    let types = v["results"][0]["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap().to_string());
    (v["results"][0]["rows"].as_array().unwrap().clone(), types.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_parquet_and_json_lines_round_trip_through_a_follower() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let other = (1..=3).find(|&i| i != follower).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = c.addr(follower);

    // CSV into a new table: columns and types inferred by Arrow, the key given.
    let csv = dir.path().join("rows.csv");
    write_csv(&csv);
    let mut o = TableLoadOptions::new(&target, "from_csv");
    o.primary_key = Some("id".into());
    o.batch_rows = 4;
    let r = load_table(&csv, &o).await.unwrap();
    assert_eq!((r.loaded, r.rejected.len(), r.created), (6, 0, true), "{r:?}");
    let (rows, types) = select_all(&c, other, "SELECT * FROM from_csv ORDER BY id").await;
    assert_eq!(rows, expected());
    assert_eq!(types, ["bigint", "bigint", "double precision", "text", "boolean", "date", "timestamp"]);
    // Loading the same file again: every row is a duplicate key, reported, nothing changes.
    let r = load_table(&csv, &o).await.unwrap();
    assert_eq!(r.loaded, 0);
    let lines: Vec<(u64, &str)> = r.rejected.iter().map(|x| (x.line, x.code.as_str())).collect();
    // Row 5's text spans two lines, so row 6 starts on line 8.
    assert_eq!(lines, [(2, "23505"), (3, "23505"), (4, "23505"), (5, "23505"), (6, "23505"), (8, "23505")]);

    // Parquet into a new table: the file's own types.
    let pq = dir.path().join("rows.parquet");
    write_parquet(&pq);
    let mut o = TableLoadOptions::new(&target, "from_parquet");
    o.primary_key = Some("id".into());
    let r = load_table(&pq, &o).await.unwrap();
    assert_eq!((r.loaded, r.rejected.len()), (6, 0), "{r:?}");
    let (rows, types) = select_all(&c, other, "SELECT * FROM from_parquet ORDER BY id").await;
    assert_eq!(rows, expected());
    assert_eq!(types, ["bigint", "integer", "double precision", "text", "boolean", "date", "timestamp"]);

    // JSON lines into an existing table: keys matched to columns by name (then ignoring
    // case), a column the file lacks takes its default.
    let (s, v) = c
        .sql(
            follower,
            "CREATE TABLE from_json (extra TEXT DEFAULT 'd', at TIMESTAMP, day DATE, ok BOOLEAN, name TEXT, \
             x DOUBLE PRECISION, n INT, id BIGINT PRIMARY KEY)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let jsonl = dir.path().join("rows.jsonl");
    write_jsonl(&jsonl);
    let r = load_table(&jsonl, &TableLoadOptions::new(&target, "from_json")).await.unwrap();
    assert_eq!((r.loaded, r.rejected.len(), r.created), (6, 0, false), "{r:?}");
    let (rows, _) = select_all(&c, other, "SELECT id, n, x, name, ok, day, at FROM from_json ORDER BY id").await;
    assert_eq!(rows, expected());
    assert_eq!(c.sql_value(other, "SELECT count(*) FROM from_json WHERE extra = 'd'", "linearizable").await, 6);

    // A file column the table lacks is an error before anything is sent.
    let e = load_table(&csv, &TableLoadOptions::new(&target, "from_json")).await;
    assert!(e.is_ok(), "the CSV's columns all exist in from_json");
    let (s, v) = c.sql(follower, "CREATE TABLE narrow (id BIGINT PRIMARY KEY)", "linearizable").await;
    assert_eq!(s, 200, "{v}");
    let e = load_table(&csv, &TableLoadOptions::new(&target, "narrow")).await.unwrap_err();
    assert!(e.to_string().contains("no column"), "{e}");
    assert_eq!(c.sql_value(other, "SELECT count(*) FROM narrow", "linearizable").await, 0);
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_with_their_lines_and_every_other_row_loads() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (s, v) = c
        .sql(
            follower,
            "CREATE TABLE people (id INT PRIMARY KEY, age INT, name TEXT NOT NULL); INSERT INTO people VALUES (7, 1, 'old')",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // 40 records on 41 lines after the header; the bad ones:
    let mut text = String::from("id;age;name\n");
    let mut line = 1u64;
    let mut bad = Vec::new();
    for id in 1..=40u64 {
        line += 1;
        let rec = match id {
            3 => "3;30;\"multi\nline\"".to_string(), // fine, but takes two lines
            5 => {
                bad.push((line, "22P02"));
                "5;abc;five".to_string()
            }
            7 => {
                bad.push((line, "23505")); // the key exists already
                "7;70;seven".to_string()
            }
            12 => {
                bad.push((line, "23502")); // NULL (empty) in a NOT NULL column
                "12;120;".to_string()
            }
            14 => {
                bad.push((line, "23505")); // a duplicate of id 13, in the same batch
                "13;140;again".to_string()
            }
            22 => {
                bad.push((line, "parse"));
                "22;220".to_string()
            }
            31 => {
                bad.push((line, "22003"));
                "31;99999999999;big".to_string()
            }
            id => format!("{id};{};p{id}", id * 10),
        };
        text.push_str(&rec);
        text.push('\n');
        if id == 3 {
            line += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, text).unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let target = c.addr(follower);
    let mut o = TableLoadOptions::new(&target, "people");
    o.csv.delimiter = b';';
    o.batch_rows = 8;
    o.in_flight = 3;
    o.rejects = Some(rejects.clone());
    let r = load_table(&path, &o).await.unwrap();
    let got: Vec<(u64, &str)> = r.rejected.iter().map(|x| (x.line, x.code.as_str())).collect();
    assert_eq!(got, bad, "{:#?}", r.rejected);
    assert_eq!(r.loaded, 40 - 6);
    assert_eq!(c.sql_value(leader, "SELECT count(*) FROM people", "linearizable").await, 1 + 34);
    // The good rows around the bad ones are there; the bad ones are not (id 7 is the old row).
    assert_eq!(c.sql_value(leader, "SELECT name FROM people WHERE id = 3", "linearizable").await, "multi\nline");
    assert_eq!(c.sql_value(leader, "SELECT name FROM people WHERE id = 7", "linearizable").await, "old");
    assert_eq!(c.sql_value(leader, "SELECT name FROM people WHERE id = 13", "linearizable").await, "p13");
    assert_eq!(c.sql_value(leader, "SELECT count(*) FROM people WHERE id IN (5, 12, 22, 31)", "linearizable").await, 0);
    // The rejects file has one JSON line per rejected row, with the row's values.
    let lines: Vec<Value> =
        std::fs::read_to_string(&rejects).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["line"], bad[0].0);
    assert_eq!(lines[0]["row"], json!({"id": "5", "age": "abc", "name": "five"}));
    assert!(lines[0]["error"].as_str().unwrap().contains("age"), "{}", lines[0]);
    c.wait_converged().await;
}

fn write_npy(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn vector(i: usize) -> Vec<f32> {
    (0..8).map(|d| ((i * 7 + d * 13) % 31) as f32 + (i as f32) / 1000.0).collect()
}

fn pg_vector(v: &[f32]) -> String {
    format!("[{}]", v.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npy_vectors_load_into_a_vector_column_and_a_collection() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("v.npy");
    let data: Vec<u8> = (0..300).flat_map(vector).flat_map(f32::to_le_bytes).collect();
    write_npy(&npy, "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 8), }", &data);
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, (0..300).map(|i| format!("{}\n", 1000 + i)).collect::<String>()).unwrap();
    let target = c.addr(follower);

    // Into a table (created), then indexed.
    let o = TableVectorOptions {
        target: target.clone(),
        table: "emb".into(),
        column: "e".into(),
        id_column: "id".into(),
        ids: Some(ids.clone()),
        first_id: 0,
        batch_rows: 64,
        in_flight: 2,
        rejects: None,
        progress: false,
    };
    let r = load_vectors_into_table(&npy, &o).await.unwrap();
    assert_eq!((r.loaded, r.rejected.len(), r.created), (300, 0, true), "{r:?}");
    let (s, v) = c.sql(follower, "CREATE INDEX emb_e ON emb USING hnsw (e vector_l2_ops)", "linearizable").await;
    assert_eq!(s, 200, "{v}");
    let q = format!("SELECT id, e FROM emb ORDER BY e <-> '{}' LIMIT 1", pg_vector(&vector(137)));
    let (rows, _) = select_all(&c, leader, &q).await;
    assert_eq!(rows[0][0], 1137);
    assert_eq!(rows[0][1], pg_vector(&vector(137)));
    // Loading again into the existing table: every id is taken, every row rejected.
    let r = load_vectors_into_table(&npy, &TableVectorOptions { in_flight: 1, ..o }).await.unwrap();
    assert_eq!((r.loaded, r.rejected.len()), (0, 300));
    assert!(r.rejected.iter().all(|x| x.code == "23505"));

    // Into a collection.
    let lo = LoadOptions {
        target: &target,
        collection: "npyc",
        create: Some("Euclid"),
        batch: 100,
        first_id: 0,
        limit: None,
        payloads: None,
        ids: Some(&ids),
        progress: false,
    };
    let r = load_vectors(&npy, &lo).await.unwrap();
    assert_eq!((r.loaded, r.rejected), (300, 0), "{r:?}");
    let (s, v) =
        c.call(leader, "POST", "/v1/collections/npyc/search", Some(json!({"vector": vector(42), "limit": 1}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"][0]["id"], 1042, "{v}");
    c.wait_converged().await;
}
