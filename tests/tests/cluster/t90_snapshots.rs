//! Snapshots and log compaction: a follower that missed a compacted stretch of the log, a new
//! node joining a cluster with 100k rows and an HNSW index, and real processes killed while a
//! snapshot is streamed to them or built.

use std::time::Duration;

use quorumdb_tests::{TestCluster, wait_for};
use serde_json::{Value, json};

use crate::t50_processes::{Proc, free_port, status};

/// A deterministic 8-dimensional point, distinct for every `i`.
fn point(i: u64) -> Vec<f32> {
    (0..8u64)
        .map(|d| {
            let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (d + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 31;
            x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 29;
            (x % 1_000_000) as f32 / 1_000_000.0
        })
        .collect()
}

fn vector_text(v: &[f32]) -> String {
    quorumdb_vector::metric::format(v)
}

/// Ids of the 10 nearest rows of `table` to `q` on `node` (linearizable), at `ef`.
async fn nearest(c: &TestCluster, node: u64, table: &str, q: &[f32], ef: u32) -> Vec<i64> {
    let sql = format!("SET hnsw.ef_search = {ef}; SELECT id FROM {table} ORDER BY v <-> '{}' LIMIT 10", vector_text(q));
    let (s, v) = c.sql(node, &sql, "linearizable").await;
    assert_eq!(s, 200, "{v}");
    v["results"][1]["rows"].as_array().unwrap().iter().map(|r| r[0].as_i64().unwrap()).collect()
}

fn snapshot_dirs(c: &TestCluster, id: u64) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(c.data_dir(id).join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn receive_transfer(st: &Value) -> Option<Value> {
    st["snapshot_transfers"].as_array()?.iter().find(|t| t["direction"] == "receive").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_compacted_log_catches_up_by_snapshot() {
    // A snapshot every 100 entries, 20 kept below it.
    let mut c = TestCluster::start_with(3, 100).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let ddl = "CREATE TABLE pts (id BIGINT PRIMARY KEY, tag TEXT, v VECTOR(8)); \
               CREATE INDEX pts_v ON pts USING hnsw (v)";
    assert_eq!(c.sql(leader, ddl, "linearizable").await.0, 200);
    c.kill(follower).await;
    for i in 0..320u64 {
        let sql = format!("INSERT INTO pts VALUES ({i}, 't{}', '{}')", i % 5, vector_text(&point(i)));
        let (s, v) = c.sql(leader, &sql, "linearizable").await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(c.sql(leader, "DELETE FROM pts WHERE id % 10 = 3", "linearizable").await.0, 200);
    assert_eq!(c.put(leader, "kv-key", "kv-value").await.unwrap().status(), 200);
    let follower_was = c.status(leader).await.unwrap();
    wait_for(30, "the leader to purge its log", || async {
        let st = c.status(leader).await?;
        (st["purged"].as_u64()? > 150).then_some(())
    })
    .await;
    assert!(follower_was["last_log_index"].as_u64().unwrap() > 300);

    c.restart(follower).await;
    c.wait_converged().await;
    let st = c.status(follower).await.unwrap();
    assert!(st["snapshot"].as_u64().is_some_and(|i| i > 100), "caught up by snapshot: {st}");
    let t = receive_transfer(&st).unwrap_or_else(|| panic!("a received snapshot in status: {st}"));
    assert_eq!(t["state"], "done", "{t}");
    assert_eq!(t["bytes"], t["total"], "{t}");
    // Checksums (of applied commands) and digests (of the data) equal everywhere.
    let leader_st = c.status(leader).await.unwrap();
    assert_eq!(st["checksum"], leader_st["checksum"]);
    let digest = |id: u64| c.node(id).replica.reader().state_digest().unwrap();
    assert_eq!(digest(follower), digest(leader));
    assert_eq!(c.get(follower, "kv-key", "stale").await.as_deref(), Some("kv-value"));
    let count = c.sql_value(follower, "SELECT count(*) FROM pts", "stale").await;
    assert_eq!(count, json!(288));
    for q in 0..5 {
        let q = point(1000 + q);
        assert_eq!(nearest(&c, follower, "pts", &q, 200).await, nearest(&c, leader, "pts", &q, 200).await);
    }
    // Old snapshots are cleaned up: at most two complete ones, nothing half-built.
    for id in [leader, follower] {
        let dirs = snapshot_dirs(&c, id);
        assert!(dirs.iter().filter(|d| d.starts_with("snap-")).count() <= 2, "node {id}: {dirs:?}");
        assert!(!dirs.iter().any(|d| d.ends_with(".tmp") || d.starts_with("incoming-")), "node {id}: {dirs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_a_cluster_with_100k_rows_and_a_vector_index() {
    let mut c = TestCluster::start_with(3, 20).await;
    let leader = c.wait_leader().await;
    let ddl = "CREATE TABLE items (id BIGINT PRIMARY KEY, cat INT NOT NULL, name TEXT, v VECTOR(8))";
    assert_eq!(c.sql(leader, ddl, "linearizable").await.0, 200);
    const ROWS: u64 = 100_000;
    let url = format!("http://{}/v1/tables/items/rows", c.addr(leader));
    for start in (0..ROWS).step_by(5_000) {
        let mut body = String::new();
        for i in start..start + 5_000 {
            let row = json!({"id": i, "cat": i % 97, "name": format!("item {i}"), "v": point(i)});
            body.push_str(&row.to_string());
            body.push('\n');
        }
        let r = c.http.post(&url).header("content-type", "application/x-ndjson").body(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let ix = "CREATE INDEX items_v ON items USING hnsw (v) WITH (m = 12, ef_construction = 64)";
    assert_eq!(c.sql(leader, ix, "linearizable").await.0, 200);
    // The graph is built in the background and then dumped; the snapshot carries the dump.
    let dumps = quorumdb_sql::vector_indexes::dump_dir(&c.data_dir(leader));
    wait_for(120, "the leader's graph dump", || async {
        let found =
            std::fs::read_dir(&dumps).ok()?.filter_map(|e| e.ok()).any(|e| e.path().join("manifest.json").exists());
        found.then_some(())
    })
    .await;
    // A snapshot taken while the graph was still building (the policy's) carries no dump; one
    // at a later index does.
    assert_eq!(c.put(leader, "after-dump", "1").await.unwrap().status(), 200);
    assert_eq!(c.post(leader, "/v1/cluster/snapshot", json!({})).await.0, 200);
    let applied = c.status(leader).await.unwrap()["applied"].as_u64().unwrap();
    wait_for(30, "a snapshot with everything and a purged log", || async {
        let st = c.status(leader).await?;
        (st["snapshot"].as_u64()? >= applied && st["purged"].as_u64()? > 0).then_some(())
    })
    .await;

    c.add_node(4, Some(c.addr(leader))).await;
    c.wait_voters(4).await;
    c.wait_converged().await;
    let st = c.status(4).await.unwrap();
    assert!(st["snapshot"].as_u64().is_some_and(|i| i >= applied), "joined by snapshot: {st}");
    let t = receive_transfer(&st).unwrap_or_else(|| panic!("a received snapshot in status: {st}"));
    assert_eq!(t["state"], "done", "{t}");
    assert!(t["total"].as_u64().unwrap() > 1_000_000, "{t}");

    // Linearizable reads on the new node answer as on the leader.
    for sql in [
        "SELECT count(*), sum(cat), min(id), max(id) FROM items",
        "SELECT cat, count(*) FROM items GROUP BY cat ORDER BY cat LIMIT 5",
        "SELECT id, name, v FROM items WHERE id IN (0, 4242, 99999)",
    ] {
        let (s1, a) = c.sql(4, sql, "linearizable").await;
        let (s2, b) = c.sql(leader, sql, "linearizable").await;
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        assert_eq!(a["results"], b["results"], "{sql}");
    }
    assert_eq!(c.sql_value(4, "SELECT count(*) FROM items", "linearizable").await, json!(ROWS));
    // The graph came with the snapshot (the leader's dump, byte for byte: not rebuilt), and
    // searches answer as on the leader.
    let manifests = |id: u64| -> Vec<Vec<u8>> {
        let dir = quorumdb_sql::vector_indexes::dump_dir(&c.data_dir(id));
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| std::fs::read(e.ok()?.path().join("manifest.json")).ok()).collect())
            .unwrap_or_default();
        out.sort();
        out
    };
    assert!(!manifests(leader).is_empty());
    assert_eq!(manifests(4), manifests(leader), "the new node adopted the leader's graph dump");
    for q in 0..20 {
        let q = point(500_000 + q);
        assert_eq!(nearest(&c, 4, "items", &q, 200).await, nearest(&c, leader, "items", &q, 200).await);
    }
    // Writes after the join reach it through the log.
    assert_eq!(c.sql(4, "UPDATE items SET name = 'changed' WHERE id = 7", "linearizable").await.0, 200);
    assert_eq!(c.sql_value(leader, "SELECT name FROM items WHERE id = 7", "linearizable").await, json!("changed"));
    c.wait_converged().await;
    let digest = |id: u64| c.node(id).replica.reader().state_digest().unwrap();
    assert_eq!(digest(4), digest(leader));
}

fn node_args(id: u64, dir: &std::path::Path, addr: &str, seed: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "start",
        "--id",
        &id.to_string(),
        "--data-dir",
        &dir.join(format!("n{id}")).display().to_string(),
        "--listen",
        addr,
        "--heartbeat-ms",
        "50",
        "--election-timeout-ms",
        "300",
        "--pg-listen",
        "off",
        "--redis-listen",
        "off",
        "--snapshot-every",
        "50",
        // 4 MB/s: slow enough to kill the receiver mid-transfer.
        "--snapshot-rate-mb",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match seed {
        Some(s) => args.extend(["--join".to_string(), s.to_string()]),
        None => args.push("--init".into()),
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_receiver_resumes_and_killed_builder_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let addrs: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut n1 =
        Proc { id: 1, args: node_args(1, dir.path(), &addrs[0], None), child: None, log: dir.path().join("n1.log") };
    n1.spawn();
    wait_for(30, "node 1 to lead", || async { status(&http, &addrs[0]).await?["leader"].as_u64() }).await;
    // ~40 MB of poorly compressible values.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..400 {
        let value = quorumdb_examples::noise_text(&mut seed, 100_000);
        let r = http.put(format!("http://{}/v1/kv/big{i:03}", addrs[0])).body(value).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(http.post(format!("http://{}/v1/cluster/snapshot", addrs[0])).send().await.unwrap().status(), 200);
    wait_for(60, "a snapshot and a purged log on node 1", || async {
        let st = status(&http, &addrs[0]).await?;
        (st["purged"].as_u64()? > 0).then_some(())
    })
    .await;

    // Node 2 joins and receives the snapshot; kill it once more than 20 MB arrived.
    let mut n2 = Proc {
        id: 2,
        args: node_args(2, dir.path(), &addrs[1], Some(&addrs[0])),
        child: None,
        log: dir.path().join("n2.log"),
    };
    n2.spawn();
    let total = wait_for(120, "20 MB of the snapshot sent to node 2", || async {
        let st = status(&http, &addrs[0]).await?;
        let t = st["snapshot_transfers"].as_array()?.iter().find(|t| t["direction"] == "send")?.clone();
        (t["bytes"].as_u64()? > 20_000_000).then(|| t["total"].as_u64().unwrap())
    })
    .await;
    n2.sigkill();
    n2.spawn();
    // It resumes from its durable progress rather than from zero, and catches up.
    let t = wait_for(120, "node 2 to finish receiving", || async {
        let st = status(&http, &addrs[1]).await?;
        let t = receive_transfer(&st)?;
        (t["state"] == "done").then_some(t)
    })
    .await;
    assert!(t["resumed_from"].as_u64().unwrap() >= 8 << 20, "resumed, not restarted: {t}");
    assert_eq!(t["total"].as_u64().unwrap(), total);
    let converged = || async {
        wait_for(60, "both nodes on the same index and checksum", || async {
            let a = status(&http, &addrs[0]).await?;
            let b = status(&http, &addrs[1]).await?;
            let key = |s: &Value| (s["applied"].as_u64(), s["checksum"].as_str().map(String::from));
            (a["members"].as_array()?.len() == 2 && key(&a) == key(&b)).then_some(())
        })
        .await
    };
    converged().await;

    // Kill node 1 right as it starts building a snapshot; also leave what a crash mid-build
    // and mid-install would: a half-built snapshot, a state directory that is not live.
    for i in 0..60 {
        let r = http.put(format!("http://{}/v1/kv/small{i}", addrs[0])).body("x").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let _ = http.post(format!("http://{}/v1/cluster/snapshot", addrs[0])).send().await;
    n1.sigkill();
    let n1_dir = dir.path().join("n1");
    std::fs::create_dir_all(n1_dir.join("snapshots/build-1.tmp/state")).unwrap();
    std::fs::write(n1_dir.join("snapshots/build-1.tmp/state/000009.sst"), b"half").unwrap();
    std::fs::create_dir_all(n1_dir.join("state-00000000000000000001-1")).unwrap();
    n1.args.retain(|a| a != "--init");
    n1.spawn();
    converged().await;
    assert!(!n1_dir.join("snapshots/build-1.tmp").exists());
    assert!(!n1_dir.join("state-00000000000000000001-1").exists());
    for (i, a) in addrs.iter().enumerate() {
        for k in ["big000", "big399", "small0", "small59"] {
            let r = http.get(format!("http://{a}/v1/kv/{k}?consistency=linearizable")).send().await.unwrap();
            assert_eq!(r.status(), 200, "node {} lost {k}", i + 1);
        }
    }
}
