//! `quorumdb_sql::backup` on the in-memory state: every table exported as an Arrow IPC file
//! (the visible columns, in key order, batch after batch), and the manifest's DDL recreating
//! tables whose definitions and rows equal the originals once the files are loaded back
//! through `Engine::insert_batches` (the path `quorumdb restore` takes over HTTP).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::fs::File;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quorumdb_sql::backup::{self, TYPE_METADATA, TableEntry};
use quorumdb_sql::catalog::{IndexKind, TableDef};

mod common;
use common::Db;

/// What a table definition means, without ids and dropped columns: (visible columns as
/// name/type/nullable/default, primary key names, indexes as name/unique/kind/column names).
type Shape = (Vec<(String, String, bool, Option<String>)>, Vec<String>, Vec<(String, bool, IndexKind, Vec<String>)>);

fn shape(def: &TableDef) -> Shape {
    let name = |c: &usize| def.columns[*c].name.clone();
    let cols = def
        .visible()
        .map(|i| {
            let c = &def.columns[i];
            (c.name.clone(), c.ty.sql_name(), c.nullable, c.default.clone())
        })
        .collect();
    let mut indexes: Vec<_> = def
        .indexes
        .iter()
        .map(|ix| (ix.name.clone(), ix.unique, ix.kind, ix.columns.iter().map(name).collect()))
        .collect();
    indexes.sort_by(|a: &(String, _, _, _), b| a.0.cmp(&b.0));
    (cols, def.primary_key.iter().map(name).collect(), indexes)
}

fn read_file(dir: &std::path::Path, t: &TableEntry) -> Vec<RecordBatch> {
    let reader = FileReader::try_new(File::open(dir.join(&t.file)).unwrap(), None).unwrap();
    reader.collect::<Result<Vec<_>, _>>().unwrap()
}

const SETUP: &str = "
    CREATE TABLE every_type (
        id BIGINT PRIMARY KEY, i INT NOT NULL DEFAULT 7, s SMALLINT, d DOUBLE PRECISION, r REAL,
        n NUMERIC(12,3), t TEXT DEFAULT 'x''y', v VARCHAR(10), b BOOLEAN, ts TIMESTAMP DEFAULT now(),
        dt DATE, bin BYTEA, j JSON, e VECTOR(3), UNIQUE (v));
    CREATE INDEX every_type_ds ON every_type (d, s);
    CREATE UNIQUE INDEX every_type_it ON every_type (i, t);
    CREATE INDEX every_type_e ON every_type USING hnsw (e vector_cosine_ops) WITH (m = 8, ef_construction = 32);
    CREATE TABLE \"Mixed Case\" (\"Key\" TEXT, k2 INT, \"select\" TEXT, PRIMARY KEY (k2, \"Key\"));
    CREATE TABLE log (msg TEXT, at DATE);
    CREATE TABLE empty (id INT PRIMARY KEY);
";

#[tokio::test]
async fn tables_export_as_arrow_files_and_their_ddl_and_rows_load_back_equal() {
    let db = Db::new();
    db.ok(SETUP).await;
    db.ok("INSERT INTO every_type VALUES
            (3, 1, -2, 1.5, 0.25, 12.345, 'hello', 'v1', true, '2024-01-02 03:04:05.5', '2024-01-02',
             '\\x00ff', '{\"a\": [1, 2]}', '[1,2,3]'),
            (1, 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         INSERT INTO every_type (id, v) VALUES (2, 'v2')")
        .await;
    db.ok("INSERT INTO \"Mixed Case\" VALUES ('b', 1, 'x'), ('a', 1, NULL), ('a', 0, 'y')").await;
    // Rows written before a column was added read its default; a dropped column is gone.
    db.ok("INSERT INTO log VALUES ('first', '2020-01-01'), ('second', NULL)").await;
    db.ok("ALTER TABLE log ADD COLUMN level INT DEFAULT 5; ALTER TABLE log DROP COLUMN at").await;
    db.ok("INSERT INTO log (msg) VALUES ('third')").await;
    // Enough rows for several batches in one file.
    let values: Vec<String> = (0..20_000).map(|i| format!("({}, 'row {i}')", 1000 + i)).collect();
    db.ok(&format!("INSERT INTO every_type (id, t) VALUES {}", values.join(", "))).await;

    let dir = tempfile::tempdir().unwrap();
    let entries = backup::export_tables(db.state.as_ref(), dir.path()).unwrap();
    let names: Vec<&str> = entries.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Mixed Case", "empty", "every_type", "log"]);
    let files: Vec<&str> = entries.iter().map(|t| t.file.as_str()).collect();
    assert_eq!(files[1..], ["empty.arrow", "every_type.arrow", "log.arrow"]);
    assert!(files[0].starts_with("table-") && files[0].ends_with(".arrow"), "{files:?}");

    let et = &entries[2];
    assert_eq!(
        et.create_table,
        "CREATE TABLE \"every_type\" (\"id\" bigint NOT NULL, \"i\" integer NOT NULL DEFAULT 7, \
         \"s\" smallint, \"d\" double precision, \"r\" real, \"n\" numeric(12,3), \"t\" text DEFAULT 'x''y', \
         \"v\" varchar(10), \"b\" boolean, \"ts\" timestamp DEFAULT now(), \"dt\" date, \"bin\" bytea, \
         \"j\" json, \"e\" vector(3), PRIMARY KEY (\"id\"), UNIQUE (\"v\"))"
    );
    assert_eq!(
        et.indexes,
        [
            "CREATE INDEX \"every_type_ds\" ON \"every_type\" (\"d\", \"s\")",
            "CREATE UNIQUE INDEX \"every_type_it\" ON \"every_type\" (\"i\", \"t\")",
            "CREATE INDEX \"every_type_e\" ON \"every_type\" USING hnsw (\"e\" vector_cosine_ops) \
             WITH (m = 8, ef_construction = 32)",
        ]
    );
    assert_eq!(et.primary_key, ["id"]);
    assert_eq!(entries[0].primary_key, ["k2", "Key"]);
    assert!(entries[3].primary_key.is_empty());
    assert_eq!(entries.iter().map(|t| t.rows).collect::<Vec<_>>(), [3, 0, 20_003, 3]);

    for t in &entries {
        // Size and CRC as recorded; the rows as counted; the columns with their SQL types.
        assert_eq!(backup::file_crc32(&dir.path().join(&t.file)).unwrap(), (t.bytes, t.crc32), "{}", t.name);
        let batches = read_file(dir.path(), t);
        assert_eq!(batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(), t.rows, "{}", t.name);
        let reader = FileReader::try_new(File::open(dir.path().join(&t.file)).unwrap(), None).unwrap();
        let schema = reader.schema();
        let cols: Vec<(String, String)> =
            schema.fields().iter().map(|f| (f.name().clone(), f.metadata()[TYPE_METADATA].clone())).collect();
        let want: Vec<(String, String)> = t.columns.iter().map(|c| (c.name.clone(), c.ty.clone())).collect();
        assert_eq!(cols, want, "{}", t.name);
    }
    assert!(read_file(dir.path(), et).len() >= 3, "20 003 rows are written in several batches");
    // Key order in the file; the log's rows in insertion order, the added column filled in.
    let log = pretty_format_batches(&read_file(dir.path(), &entries[3])).unwrap().to_string();
    assert_eq!(
        log,
        "+--------+-------+\n| msg    | level |\n+--------+-------+\n| first  | 5     |\n\
         | second | 5     |\n| third  | 5     |\n+--------+-------+"
    );
    let mixed = pretty_format_batches(&read_file(dir.path(), &entries[0])).unwrap().to_string();
    assert_eq!(
        mixed,
        "+-----+----+--------+\n| Key | k2 | select |\n+-----+----+--------+\n| a   | 0  | y      |\n\
         | a   | 1  |        |\n| b   | 1  | x      |\n+-----+----+--------+"
    );

    // Restore into a new state: tables, rows, then the indexes.
    let copy = Db::new();
    let ddl: Vec<&str> = entries.iter().map(|t| t.create_table.as_str()).collect();
    copy.ok(&ddl.join(";\n")).await;
    for t in &entries {
        let batches = read_file(dir.path(), t);
        for chunk in batches.chunks(2) {
            copy.engine.insert_batches(&t.name, chunk, copy.state.as_ref()).await.unwrap();
        }
    }
    let indexes: Vec<&str> = entries.iter().flat_map(|t| t.indexes.iter().map(String::as_str)).collect();
    copy.ok(&indexes.join(";\n")).await;
    for name in ["every_type", "Mixed Case", "log", "empty"] {
        assert_eq!(shape(&copy.def(name)), shape(&db.def(name)), "{name}");
    }
    for q in [
        "SELECT * FROM every_type ORDER BY id",
        "SELECT * FROM \"Mixed Case\" ORDER BY k2, \"Key\"",
        "SELECT * FROM log",
        "SELECT id FROM every_type WHERE v = 'v2'",
        "SELECT id FROM every_type ORDER BY e <=> '[1,2,2]' LIMIT 1",
    ] {
        assert_eq!(copy.rows(q).await, db.rows(q).await, "{q}");
    }
    // A second export of the copy has the same rows, file by file.
    let dir2 = tempfile::tempdir().unwrap();
    let again = backup::export_tables(copy.state.as_ref(), dir2.path()).unwrap();
    for (a, b) in entries.iter().zip(&again) {
        assert_eq!((&a.create_table, &a.indexes, a.rows), (&b.create_table, &b.indexes, b.rows));
        let (x, y) = (read_file(dir.path(), a), read_file(dir2.path(), b));
        assert_eq!(pretty_format_batches(&x).unwrap().to_string(), pretty_format_batches(&y).unwrap().to_string());
    }
}

#[tokio::test]
async fn a_failed_export_leaves_no_files() {
    let db = Db::new();
    db.ok("CREATE TABLE a (id INT PRIMARY KEY); CREATE TABLE b (id INT PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap();
    // b.arrow is in the way: a is written, then b fails and a is removed again.
    std::fs::write(dir.path().join("b.arrow"), b"not mine").unwrap();
    assert!(backup::export_tables(db.state.as_ref(), dir.path()).is_err());
    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["b.arrow"]);
}
