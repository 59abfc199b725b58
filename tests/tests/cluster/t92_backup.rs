//! Backups in Arrow: a backup taken through a follower of a 3-node cluster (tables of every
//! column type with NULLs, a composite key, hidden row ids, DEFAULT now(), UNIQUE, a secondary
//! index, VECTOR columns under HNSW indexes and a collection) holds every acknowledged write at
//! one applied index, in Arrow IPC files the manifest describes; `quorumdb restore` (the real
//! binary) loads it into a new cluster where every table is equal row by row and vector
//! searches answer the same (the exact neighbours); a backup of the copy has identical files.
//! Refusals: a backup into a non-empty directory or out of the node's `--backup-dir`, a restore
//! over an existing table or from a corrupted file — with nothing written. (t93 tests the
//! confinement to `--backup-dir` in detail.)

use std::fs::File;
use std::path::Path;

use datafusion::arrow::ipc::reader::FileReader;
use quorumdb_client::backup::{RestoreOptions, restore};
use quorumdb_sql::backup::{Manifest, file_crc32};
use quorumdb_tests::TestCluster;
use serde_json::{Value, json};

const DIM: usize = 8;

/// A deterministic value in [0, 1) for `seed` (the SplitMix64 finalizer).
fn unit(seed: u64) -> f32 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

fn vector(i: u64, dim: usize) -> Vec<f32> {
    (0..dim as u64).map(|d| unit(i * 64 + d)).collect()
}

fn text(v: &[f32]) -> String {
    quorumdb_vector::metric::format(v)
}

/// The ids of the `k` nearest of `points` to `q`, exactly (L2 or cosine distance).
fn exact(points: &[(i64, Vec<f32>)], q: &[f32], k: usize, cosine: bool) -> Vec<i64> {
    let dist = |p: &[f32]| -> f64 {
        if cosine {
            let dot: f64 = p.iter().zip(q).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let norm = |v: &[f32]| v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (norm(p) * norm(q))
        } else {
            p.iter().zip(q).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum()
        }
    };
    let mut d: Vec<(f64, i64)> = points.iter().map(|(id, p)| (dist(p), *id)).collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.into_iter().take(k).map(|(_, id)| id).collect()
}

async fn ok(c: &TestCluster, node: u64, sql: &str) -> Value {
    let (s, v) = c.sql(node, sql, "linearizable").await;
    assert_eq!(s, 200, "{sql}: {v}");
    v
}

/// The rows of the last statement of `sql`.
async fn rows(c: &TestCluster, node: u64, sql: &str) -> Vec<Value> {
    let v = ok(c, node, sql).await;
    let results = v["results"].as_array().unwrap();
    results.last().unwrap()["rows"].as_array().unwrap().clone()
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Creates and fills the tables; returns the vectors of `embeddings` and of the collection.
async fn fill(c: &TestCluster, leader: u64) -> (Vec<(i64, Vec<f32>)>, Vec<(i64, Vec<f32>)>) {
    ok(
        c,
        leader,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, i INT NOT NULL DEFAULT 7, s SMALLINT, d DOUBLE PRECISION, \
           r REAL, n NUMERIC(12,3), t TEXT, v VARCHAR(20) UNIQUE, b BOOLEAN, ts TIMESTAMP DEFAULT now(), \
           dt DATE, bin BYTEA, j JSON, e VECTOR(4));
         CREATE INDEX items_d ON items (d);
         CREATE TABLE pairs (a TEXT, b INT, note VARCHAR(40), PRIMARY KEY (a, b));
         CREATE TABLE events (msg TEXT NOT NULL, at TIMESTAMP DEFAULT now(), level SMALLINT);
         CREATE TABLE embeddings (id BIGINT PRIMARY KEY, label TEXT, e VECTOR(8) NOT NULL);
         CREATE INDEX embeddings_e ON embeddings USING hnsw (e vector_l2_ops) WITH (m = 16, ef_construction = 100)",
    )
    .await;
    let create = json!({"vectors": {"size": DIM, "distance": "Cosine"}, "hnsw_config": {"m": 12, "ef_construct": 80}});
    let (s, v) = c.call(leader, "PUT", "/v1/collections/docs", Some(create)).await;
    assert_eq!(s, 200, "{v}");

    // items: every type, NULLs in every nullable column on every 7th row, defaults on every 11th.
    for start in (0..2_000u64).step_by(250) {
        let mut values = Vec::new();
        let mut defaults = Vec::new();
        for i in start..start + 250 {
            if i % 11 == 0 {
                defaults.push(format!("({}, {})", i * 3, sql_str(&format!("only v {i}"))));
            } else if i % 7 == 0 {
                values.push(format!(
                    "({}, {}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
                    i * 3,
                    i % 100
                ));
            } else {
                values.push(format!(
                    "({id}, {ii}, {s}, {d}, {r}, {n_int}.{n_frac:03}, {t}, {v}, {b}, {ts}, {dt}, {bin}, {j}, {e})",
                    id = i * 3,
                    ii = i % 100,
                    s = (i % 600) as i64 - 300,
                    d = i as f64 * 0.001 - 1.0,
                    r = (i % 50) as f32 / 8.0,
                    n_int = i,
                    n_frac = (i * 7) % 1000,
                    t = sql_str(&format!("text {i}: 'quoted', ü ✓")),
                    v = sql_str(&format!("v{i}")),
                    b = i % 2 == 0,
                    ts = sql_str(&format!(
                        "2024-{:02}-{:02} 03:04:05.{:06}",
                        1 + i % 12,
                        1 + i % 28,
                        i * 37 % 1_000_000
                    )),
                    dt = sql_str(&format!("19{:02}-{:02}-{:02}", i % 100, 1 + i % 12, 1 + i % 28)),
                    bin = sql_str(&format!("\\x{:02x}{:02x}00ff", i % 256, i / 256)),
                    j = sql_str(&format!("{{\"k\": {i}, \"a\": [1, \"x\", null]}}")),
                    e = sql_str(&text(&vector(i + 100_000, 4))),
                ));
            }
        }
        ok(c, leader, &format!("INSERT INTO items VALUES {}", values.join(", "))).await;
        ok(c, leader, &format!("INSERT INTO items (id, v) VALUES {}", defaults.join(", "))).await;
    }
    // pairs: a composite key.
    let values: Vec<String> = (0..500)
        .map(|i| {
            let note = if i % 5 == 0 { "NULL".to_string() } else { sql_str(&format!("note {i}")) };
            format!("({}, {i}, {note})", sql_str(&format!("k{}", i % 10)))
        })
        .collect();
    ok(c, leader, &format!("INSERT INTO pairs VALUES {}", values.join(", "))).await;
    // events: hidden row ids, at from DEFAULT now(), several requests.
    for start in (0..300).step_by(100) {
        let values: Vec<String> = (start..start + 100)
            .map(|i| {
                format!(
                    "({}, {})",
                    sql_str(&format!("event {}", i % 37)),
                    if i % 3 == 0 { "NULL".into() } else { (i % 9).to_string() }
                )
            })
            .collect();
        ok(c, leader, &format!("INSERT INTO events (msg, level) VALUES {}", values.join(", "))).await;
    }
    // embeddings: 3 000 points under an HNSW index.
    let points: Vec<(i64, Vec<f32>)> = (0..3_000).map(|i| (i as i64, vector(i, DIM))).collect();
    for chunk in points.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(id, v)| {
                let label = if id % 4 == 0 { "NULL".into() } else { sql_str(&format!("p{id}")) };
                format!("({id}, {label}, {})", sql_str(&text(v)))
            })
            .collect();
        ok(c, leader, &format!("INSERT INTO embeddings VALUES {}", values.join(", "))).await;
    }
    // The collection: 1 000 points with payloads.
    let docs: Vec<(i64, Vec<f32>)> = (0..1_000).map(|i| (i as i64, vector(i + 50_000, DIM))).collect();
    for chunk in docs.chunks(250) {
        let points: Vec<Value> = chunk
            .iter()
            .map(|(id, v)| json!({"id": id, "vector": v, "payload": {"group": id % 5, "name": format!("doc {id}")}}))
            .collect();
        let (s, v) = c.call(leader, "PUT", "/v1/collections/docs/points", Some(json!({"points": points}))).await;
        assert_eq!(s, 200, "{v}");
    }
    (points, docs)
}

/// Every table's rows, as `/v1/sql` answers them, in a defined order.
const DUMPS: [&str; 6] = [
    "SELECT * FROM items ORDER BY id",
    "SELECT * FROM pairs ORDER BY a, b",
    "SELECT * FROM events ORDER BY msg, at, level",
    "SELECT * FROM events",
    "SELECT * FROM embeddings ORDER BY id",
    "SELECT * FROM docs ORDER BY id",
];

/// The nearest neighbours through SQL (L2, `embeddings`) and the collections API (cosine).
async fn searches(c: &TestCluster, node: u64, queries: &[Vec<f32>]) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut out = Vec::new();
    for q in queries {
        let sql = format!("SET hnsw.ef_search = 400; SELECT id FROM embeddings ORDER BY e <-> '{}' LIMIT 10", text(q));
        let by_sql = ids(&rows(c, node, &sql).await);
        let (s, v) = c
            .call(node, "POST", "/v1/collections/docs/search", Some(json!({"vector": q, "limit": 10, "ef": 400})))
            .await;
        assert_eq!(s, 200, "{v}");
        let by_api = v["result"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
        out.push((by_sql, by_api));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

async fn run_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorumdb-node")).args(args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "quorumdb {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_through_a_follower_restores_into_a_new_cluster_with_equal_tables_and_searches() {
    // The nodes of both clusters write backups below `work` (`--backup-dir`).
    let work = tempfile::tempdir().unwrap();
    let backups = work.path().to_path_buf();
    let mut c = TestCluster::start_tweaked(3, 50_000, |cfg| cfg.backup_dir = Some(backups.clone())).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (points, docs) = fill(&c, leader).await;
    let dir = work.path().join("backup");

    // Refused: a path out of the backup dir; a non-empty directory (left as it was).
    let (s, v) = c.post(follower, "/v1/backup", json!({"to": "../outside"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let busy = work.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let (s, v) = c.post(follower, "/v1/backup", json!({"to": busy})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not empty"), "{v}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // A write acknowledged by the leader just before the backup is in it: the follower waits
    // for it (linearizable) before its checkpoint.
    ok(&c, leader, "INSERT INTO pairs VALUES ('last', 1, 'acknowledged just before')").await;
    let started = std::time::Instant::now();
    let (s, answer) = c.post(follower, "/v1/backup", json!({"to": dir})).await;
    let backup_secs = started.elapsed().as_secs_f64();
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["node_id"], follower);
    let total_rows: u64 = 2_000 + 501 + 300 + 3_000 + 1_000;
    assert_eq!(answer["rows"], total_rows);
    let (s, v) = c.post(follower, "/v1/backup", json!({"to": dir})).await;
    assert_eq!(s, 400, "a second backup into the same directory is refused: {v}");

    // The manifest, and files that read back with arrow's IPC FileReader.
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(m.applied_index, answer["applied_index"].as_u64().unwrap());
    assert!(m.applied_index > 0 && m.applied_term > 0, "{m:?}");
    assert_eq!(m.node_id, follower);
    let names: Vec<&str> = m.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["docs", "embeddings", "events", "items", "pairs"]);
    let expected_rows = [1_000, 3_000, 300, 2_000, 501];
    for (t, want) in m.tables.iter().zip(expected_rows) {
        assert_eq!(t.rows, want, "{}", t.name);
        assert_eq!(t.file, format!("{}.arrow", t.name));
        let path = dir.join(&t.file);
        assert_eq!(file_crc32(&path).unwrap(), (t.bytes, t.crc32), "{}", t.name);
        let reader = FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        let cols: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(cols, t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
        let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(n as u64, want, "{}", t.name);
    }
    let items = &m.tables[3];
    assert!(items.create_table.contains("\"ts\" timestamp DEFAULT now()"), "{}", items.create_table);
    assert!(items.create_table.contains("\"i\" integer NOT NULL DEFAULT 7"), "{}", items.create_table);
    assert!(items.create_table.ends_with("PRIMARY KEY (\"id\"), UNIQUE (\"v\"))"), "{}", items.create_table);
    assert_eq!(items.indexes, ["CREATE INDEX \"items_d\" ON \"items\" (\"d\")"]);
    assert_eq!(m.tables[4].primary_key, ["a", "b"]);
    assert!(m.tables[2].primary_key.is_empty());
    assert_eq!(
        m.tables[1].indexes,
        [
            "CREATE INDEX \"embeddings_e\" ON \"embeddings\" USING hnsw (\"e\" vector_l2_ops) WITH (m = 16, ef_construction = 100)"
        ]
    );
    assert!(
        m.tables[0].indexes[0]
            .contains("USING hnsw (\"vector\" vector_cosine_ops) WITH (m = 12, ef_construction = 80)")
    );
    // Nothing of the checkpoint stays in the node's data dir.
    let leftovers: Vec<_> = std::fs::read_dir(c.data_dir(follower))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("backup-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let queries: Vec<Vec<f32>> = (0..5).map(|q| vector(900_000 + q, DIM)).collect();
    let before = searches(&c, follower, &queries).await;
    for (q, (by_sql, by_api)) in queries.iter().zip(&before) {
        assert_eq!(by_sql, &exact(&points, q, 10, false));
        assert_eq!(by_api, &exact(&docs, q, 10, true));
    }
    let mut dumps = Vec::new();
    for q in DUMPS {
        dumps.push(rows(&c, follower, q).await);
    }
    // Writes after the backup are not in it.
    ok(&c, leader, "INSERT INTO pairs VALUES ('after', 1, NULL)").await;
    c.stop_all().await;

    // A new cluster.
    let mut d = TestCluster::start_tweaked(3, 50_000, |cfg| cfg.backup_dir = Some(backups.clone())).await;
    let d_leader = d.wait_leader().await;
    let target = d.addr((1..=3).find(|&i| i != d_leader).unwrap());
    let opts = RestoreOptions::new(&target);

    // Refused before anything is written: a corrupted file (one byte flipped)…
    let corrupt = work.path().join("corrupt");
    copy_dir(&dir, &corrupt);
    let mut bytes = std::fs::read(corrupt.join("items.arrow")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(corrupt.join("items.arrow"), bytes).unwrap();
    let e = restore(&corrupt, &opts).await.unwrap_err().to_string();
    assert!(e.contains("items.arrow") && e.contains("CRC-32") && e.contains("nothing was restored"), "{e}");
    // …and a table that exists already.
    ok(&d, d_leader, "CREATE TABLE pairs (x INT PRIMARY KEY)").await;
    let e = format!("{:#}", restore(&dir, &opts).await.unwrap_err());
    assert!(e.contains("already has table") && e.contains("pairs"), "{e}");
    for t in ["items", "docs", "embeddings", "events"] {
        let (s, v) = d.sql(d_leader, &format!("SELECT * FROM {t}"), "linearizable").await;
        assert_eq!((s, v["error"]["code"].as_str()), (404, Some("42P01")), "{t}: {v}");
    }
    ok(&d, d_leader, "DROP TABLE pairs").await;

    // The restore, through the real binary, in small batches.
    let out =
        run_cli(&["restore", "--from", dir.to_str().unwrap(), "--node", &target, "--batch-rows", "700", "--quiet"])
            .await;
    assert!(out.contains(&format!("restored 5 tables, {total_rows} rows and 3 indexes")), "{out}");
    let restore_rate: f64 = out
        .lines()
        .last()
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);

    // Every table equal row by row, on every node; the searches the same.
    d.wait_converged().await;
    for node in 1..=3 {
        for (q, want) in DUMPS.iter().zip(&dumps) {
            assert_eq!(&rows(&d, node, q).await, want, "node {node}: {q}");
        }
        assert_eq!(searches(&d, node, &queries).await, before, "node {node}");
    }
    let restored = d.node(d_leader).sql.catalog().unwrap();
    assert_eq!(restored.tables["items"].indexes.len(), 2, "the UNIQUE constraint and items_d");

    // A backup of the copy (through the binary, into a path relative to the node's backup dir)
    // has the same manifest entries and files.
    let again = work.path().join("again");
    let out = run_cli(&["backup", "--to", "again", "--node", &target]).await;
    assert!(out.contains(&format!("backup of 5 tables, {total_rows} rows")), "{out}");
    let m2 = Manifest::read(&again).unwrap();
    for (a, b) in m.tables.iter().zip(&m2.tables) {
        assert_eq!((&a.create_table, &a.indexes, a.rows), (&b.create_table, &b.indexes, b.rows));
        assert_eq!((a.bytes, a.crc32), (b.bytes, b.crc32), "{}: the same bytes", a.name);
    }
    println!(
        "backup: {total_rows} rows in {backup_secs:.2} s ({:.0} rows/s, {} bytes); restore: {restore_rate:.0} rows/s",
        total_rows as f64 / backup_secs,
        answer["bytes"]
    );
    d.stop_all().await;
}
