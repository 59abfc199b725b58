//! The SQL engine on the in-memory state: statements, constraints, pushdown, conflicts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::sync::Arc;

use quorumdb_sql::memory::MemoryState;
use quorumdb_sql::{Engine, StatementResult};

mod common;
use common::Db;

fn affected(r: &[StatementResult]) -> Vec<u64> {
    r.iter()
        .map(|r| match r {
            StatementResult::Done { rows_affected, .. } => *rows_affected,
            StatementResult::Rows { batches, .. } => batches.iter().map(|b| b.num_rows() as u64).sum(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_update_delete() {
    let db = Db::new();
    db.ok("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION, n INT DEFAULT 7)").await;
    let r = db.ok("INSERT INTO t (id, name, score) VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0)").await;
    assert_eq!(affected(&r), vec![3]);
    assert!(db.rows("SELECT id, name, score, n FROM t ORDER BY id").await.contains("| 2  | b    |       | 7 |"));
    let r = db.ok("UPDATE t SET score = coalesce(score, 0) + 1 WHERE id >= 2").await;
    assert_eq!(affected(&r), vec![2]);
    assert!(db.rows("SELECT score FROM t WHERE id = 2").await.contains("| 1.0   |"));
    let r = db.ok("DELETE FROM t WHERE name = 'a'").await;
    assert_eq!(affected(&r), vec![1]);
    assert!(db.rows("SELECT count(*) AS c FROM t").await.contains("| 2 |"));
    // Primary key change moves the row.
    db.ok("UPDATE t SET id = id + 10").await;
    assert!(db.rows("SELECT id FROM t ORDER BY id").await.contains("| 12 |"));
    db.ok("TRUNCATE t").await;
    assert!(db.rows("SELECT count(*) AS c FROM t").await.contains("| 0 |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_reject_the_whole_batch() {
    let db = Db::new();
    db.ok("CREATE TABLE u (id INT PRIMARY KEY, email VARCHAR(5) UNIQUE, x INT NOT NULL)").await;
    db.ok("INSERT INTO u VALUES (1, 'a', 1)").await;
    assert_eq!(db.err("INSERT INTO u VALUES (2, 'b', 2), (1, 'c', 3)").await, "23505");
    assert_eq!(db.err("INSERT INTO u VALUES (3, 'a', 3)").await, "23505");
    assert_eq!(db.err("INSERT INTO u VALUES (3, 'c', NULL)").await, "23502");
    assert_eq!(db.err("INSERT INTO u VALUES ('x', 'c', 1)").await, "22P02");
    assert_eq!(db.err("INSERT INTO u VALUES (4, 'toolong', 1)").await, "22001");
    assert_eq!(db.err("INSERT INTO nope VALUES (1)").await, "42P01");
    assert_eq!(db.err("CREATE TABLE u (a INT)").await, "42P07");
    assert_eq!(db.err("INSERT INTO u VALUES (5, 'e', 5); INSERT INTO u VALUES (1, 'f', 6)").await, "23505");
    assert!(db.rows("SELECT count(*) AS c FROM u").await.contains("| 1 |"), "nothing of the failed batches applied");
    assert_eq!(db.err("UPDATE u SET email = 'a' WHERE id = 99; INSERT INTO u VALUES (2, 'a', 2)").await, "23505");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflict_and_returning() {
    let db = Db::new();
    db.ok("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)").await;
    db.ok("INSERT INTO kv VALUES ('a', 1), ('b', 2)").await;
    let r = db.ok("INSERT INTO kv VALUES ('a', 10), ('c', 3) ON CONFLICT (k) DO NOTHING").await;
    assert_eq!(affected(&r), vec![1]);
    db.ok("INSERT INTO kv VALUES ('b', 20) ON CONFLICT (k) DO UPDATE SET v = kv.v + excluded.v").await;
    assert!(db.rows("SELECT v FROM kv WHERE k = 'b'").await.contains("| 22 |"));
    let out = db.rows("INSERT INTO kv VALUES ('d', 4) RETURNING k, v * 2 AS twice").await;
    assert!(out.contains("| d | 8     |"), "{out}");
    let out = db.rows("UPDATE kv SET v = v + 1 WHERE k = 'a' RETURNING *").await;
    assert!(out.contains("| a | 2 |"), "{out}");
    let out = db.rows("DELETE FROM kv WHERE k = 'c' RETURNING v").await;
    assert!(out.contains("| 3 |"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_indexes_and_explain() {
    let db = Db::new();
    db.ok("CREATE TABLE p (id INT PRIMARY KEY, city TEXT, age INT)").await;
    db.ok("INSERT INTO p SELECT v, 'c' || (v % 10), v % 50 FROM unnest(range(0, 500)) AS r(v)").await;
    db.ok("CREATE INDEX p_city ON p (city)").await;
    let q = "SELECT count(*) AS c FROM p WHERE city = 'c3'";
    assert!(db.rows(q).await.contains("| 50 |"));
    let plan = db.rows(&format!("EXPLAIN {q}")).await;
    assert!(plan.contains("access=index p_city"), "{plan}");
    let plan = db.rows("EXPLAIN SELECT * FROM p WHERE id = 5").await;
    assert!(plan.contains("access=primary key lookup (1 key)"), "{plan}");
    let plan = db.rows("EXPLAIN SELECT * FROM p WHERE id > 5 AND id < 9").await;
    assert!(plan.contains("access=primary key range"), "{plan}");
    // The index follows updates and deletes.
    db.ok("UPDATE p SET city = 'moved' WHERE id < 100").await;
    assert!(db.rows(q).await.contains("| 40 |"));
    assert!(db.rows("SELECT count(*) AS c FROM p WHERE city = 'moved'").await.contains("| 100 |"));
    db.ok("DELETE FROM p WHERE id >= 400").await;
    assert!(db.rows(q).await.contains("| 30 |"));
    db.ok("DROP INDEX p_city").await;
    assert!(db.rows(q).await.contains("| 30 |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_plans_are_rejected_and_replanned() {
    let db = Arc::new(Db::new());
    db.ok("CREATE TABLE c (id INT PRIMARY KEY, n BIGINT)").await;
    db.ok("INSERT INTO c VALUES (1, 0), (2, 0)").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let sql = if i % 2 == 0 {
                    "UPDATE c SET n = n + 1 WHERE id = 1"
                } else {
                    "UPDATE c SET n = n + 1 WHERE n >= 0 AND id = 2"
                };
                db.ok(sql).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let out = db.rows("SELECT id, n FROM c ORDER BY id").await;
    assert!(out.contains("| 1  | 100 |") && out.contains("| 2  | 100 |"), "no lost update: {out}");
}

/// Ids of a one-column result, in order.
async fn ids(db: &Db, sql: &str) -> Vec<i64> {
    match db.ok(sql).await.pop() {
        Some(StatementResult::Rows { batches, .. }) => batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().clone();
                (0..a.len()).map(move |i| a.value(i))
            })
            .collect(),
        other => panic!("{sql}: no rows: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_index_tracks_writes_compacts_and_answers_like_exact_search() {
    let db = Db::new();
    db.ok("CREATE TABLE v (id BIGINT PRIMARY KEY, k INT, e VECTOR(8))").await;
    let vec_of = |i: i64| {
        let v: Vec<String> = (0..8u64)
            .map(|d| {
                let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ d.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                h ^= h >> 31;
                h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
                h ^= h >> 29;
                format!("{}", (h % 10_000) as f32 / 1000.0)
            })
            .collect();
        format!("[{}]", v.join(","))
    };
    let mut values = Vec::new();
    for i in 0..3_000i64 {
        values.push(format!("({i}, {}, '{}')", i % 10, vec_of(i)));
    }
    for chunk in values.chunks(500) {
        db.ok(&format!("INSERT INTO v VALUES {}", chunk.join(", "))).await;
    }
    db.ok("CREATE INDEX v_e ON v USING hnsw (e vector_l2_ops)").await;
    let vectors = db.state.vectors();
    let catalog = db.engine.catalog().unwrap();
    let (table, index) = (catalog.tables["v"].id, catalog.tables["v"].indexes[0].id);
    let wait = |want_points: usize| {
        let vectors = vectors.clone();
        async move {
            for _ in 0..600 {
                if vectors.stats(table, index).is_some_and(|(points, _)| points == want_points) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the graph never reached {want_points} points: {:?}", vectors.stats(table, index));
        }
    };
    wait(3_000).await;
    let q = vec_of(12_345);
    let nearest = format!("SET hnsw.ef_search = 400; SELECT id FROM v ORDER BY e <-> '{q}' LIMIT 10");
    let exact = format!("SELECT id FROM v ORDER BY e <-> '{q}', id LIMIT 10");
    assert_eq!(ids(&db, &nearest).await, ids(&db, &exact).await);
    // Filtered: every row returned passes, and matches the exact filtered answer.
    let filtered = format!("SET hnsw.ef_search = 400; SELECT id FROM v WHERE k = 3 ORDER BY e <-> '{q}' LIMIT 10");
    let got = ids(&db, &filtered).await;
    assert_eq!(got, ids(&db, &format!("SELECT id FROM v WHERE k = 3 ORDER BY e <-> '{q}', id LIMIT 10")).await);
    assert!(got.iter().all(|id| id % 10 == 3));

    // Deleting most rows leaves tombstones; once they outnumber the live points the graph is
    // rebuilt without them, and the answers stay exact.
    db.ok("DELETE FROM v WHERE id >= 1000").await;
    wait(1_000).await;
    assert_eq!(vectors.stats(table, index), Some((1_000, 1_000)));
    // An update is a new point plus a tombstone.
    db.ok("UPDATE v SET e = e WHERE id = 0").await;
    assert_eq!(vectors.stats(table, index), Some((1_001, 1_000)));
    assert_eq!(ids(&db, &nearest).await, ids(&db, &exact).await);
    assert!(ids(&db, &nearest).await.iter().all(|id| *id < 1000));

    // Dropping the index forgets the graph; the query is exact again.
    db.ok("DROP INDEX v_e").await;
    assert!(vectors.stats(table, index).is_none());
    assert_eq!(ids(&db, &nearest).await, ids(&db, &exact).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_loads_the_old_graph_dump_and_catches_up_from_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = quorumdb_sql::VectorIndexes::new(Some(dir.path().to_path_buf()));
    let state = MemoryState::with_vectors(vectors.clone());
    let db = Db { engine: Engine::new(state.clone(), vectors.clone()), state };
    let vec_of =
        |i: i64| format!("[{},{},{}]", (i * 7 % 101) as f32 / 3.0, (i * 13 % 89) as f32 / 5.0, (i % 17) as f32);
    db.ok("CREATE TABLE p (id BIGINT PRIMARY KEY, e VECTOR(3))").await;
    let rows: Vec<String> = (0..500i64).map(|i| format!("({i}, '{}')", vec_of(i))).collect();
    db.ok(&format!("INSERT INTO p VALUES {}", rows.join(", "))).await;
    // The background build dumps the graph when it is done.
    db.ok("CREATE INDEX p_e ON p USING hnsw (e vector_l2_ops)").await;
    let catalog = db.engine.catalog().unwrap();
    let (t, i) = (catalog.tables["p"].id, catalog.tables["p"].indexes[0].id);
    for _ in 0..200 {
        if dir.path().join(format!("{t}-{i}")).join("manifest.json").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // Changes after the dump: new rows, moved rows, deleted rows. Then a "crash": no new dump.
    let rows: Vec<String> = (500..700i64).map(|i| format!("({i}, '{}')", vec_of(i))).collect();
    db.ok(&format!("INSERT INTO p VALUES {}", rows.join(", "))).await;
    db.ok("UPDATE p SET e = '[0,0,0]' WHERE id < 20").await;
    db.ok("DELETE FROM p WHERE id >= 650").await;
    let restarted = quorumdb_sql::VectorIndexes::new(Some(dir.path().to_path_buf()));
    let state: quorumdb_state::SharedState = db.state.clone();
    restarted.open(&state).unwrap();
    // Loaded (not rebuilt: a rebuild would not be ready at once): the dump's 500 points, plus
    // the live points added since (150 new rows, 20 moved ones); the 20 old versions are
    // tombstones; rows added and deleted since the dump never enter the graph.
    assert_eq!(restarted.stats(t, i), Some((670, 650)));
    let def = &catalog.tables["p"];
    for q in 0..20i64 {
        let query: Vec<f32> = quorumdb_vector::metric::parse(&vec_of(q * 37 + 3), None).unwrap();
        let want = quorumdb_sql::vector_indexes::exact_search(
            db.state.as_ref(),
            def,
            1,
            quorumdb_vector::Metric::L2,
            &query,
            10,
            None,
        )
        .unwrap();
        let (got, path) = restarted.search(db.state.as_ref(), def, &def.indexes[0], &query, 10, 200, None).unwrap();
        assert_eq!(path, quorumdb_sql::vector_indexes::SearchPath::Hnsw);
        // The same distances in the same order (equal distances may come in either order).
        let dists = |f: &[quorumdb_sql::vector_indexes::Found]| {
            f.iter().map(|x| (x.distance * 1e6).round() as i64).collect::<Vec<_>>()
        };
        assert_eq!(dists(&got), dists(&want), "query {q}");
    }
}

/// A proposer whose cluster writes an older format: `format` over the in-memory state.
struct OldCluster {
    state: Arc<MemoryState>,
    format: quorumdb_state::format::FormatVersion,
}

#[async_trait::async_trait]
impl quorumdb_state::Proposer for OldCluster {
    async fn propose(
        &self,
        command: quorumdb_state::Command,
    ) -> Result<quorumdb_state::CommandResult, quorumdb_state::ReplicationError> {
        self.state.propose(command).await
    }

    async fn read_barrier(
        &self,
        level: quorumdb_state::Consistency,
    ) -> Result<quorumdb_state::ReadInfo, quorumdb_state::ReplicationError> {
        self.state.read_barrier(level).await
    }

    fn format(&self) -> quorumdb_state::format::FormatVersion {
        self.format
    }
}

/// Roles and views are proposed only once the cluster writes the format that carries them
/// (a node on an older binary could not apply them): before, 0A000 and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_views_wait_for_their_format() {
    let state = MemoryState::new();
    let engine = Engine::new(state.clone(), state.vectors());
    let run = |format, sql: &'static str| {
        let (engine, state) = (&engine, state.clone());
        async move {
            let cluster = OldCluster { state, format };
            engine.execute(engine.parse(sql, &[]).unwrap(), &cluster).await
        }
    };
    run(2, "CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    let e = run(2, "CREATE ROLE r LOGIN PASSWORD 'p'").await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().contains("roles need cluster format 3")), ("0A000", true), "{e}");
    let e = run(3, "CREATE VIEW v AS SELECT id FROM t").await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().contains("views need cluster format 4")), ("0A000", true), "{e}");
    assert!(engine.catalog().unwrap().views.is_empty());
    run(3, "CREATE ROLE r LOGIN PASSWORD 'p'").await.unwrap();
    run(4, "CREATE VIEW v AS SELECT id FROM t").await.unwrap();
    assert!(engine.catalog().unwrap().views.contains_key("v"));
}
