//! SQL on a cluster: follower writes and reads at each consistency level, concurrent
//! read-modify-write statements from every node, and a leader killed during SQL inserts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorumdb_tests::{TestCluster, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_sql_writes_are_read_linearizably_everywhere() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (s, v) =
        c.sql(follower, "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)", "linearizable").await;
    assert_eq!(s, 200, "{v}");
    for i in 0..30u64 {
        let writer = 1 + i % 3;
        let (s, v) = c.sql(writer, &format!("INSERT INTO items VALUES ({i}, 'n{i}')"), "linearizable").await;
        assert_eq!(s, 200, "{v}");
        // Any other node, linearizable or lease, sees every acknowledged row at once.
        let reader = 1 + (i + 1) % 3;
        let level = if i % 2 == 0 { "linearizable" } else { "lease" };
        assert_eq!(
            c.sql_value(reader, "SELECT count(*) FROM items", level).await,
            json!(i + 1),
            "node {reader} {level}"
        );
    }
    // A stale read answers locally and says how fresh it is.
    let r = c
        .http
        .post(format!("http://{}/v1/sql?consistency=stale", c.addr(follower)))
        .json(&json!({"sql": "SELECT name FROM items WHERE id = 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-quorumdb-staleness-ms"));
    assert!(r.headers().contains_key("x-quorumdb-applied-index"));
    let (s, v) = c.sql(follower, "SELECT 1", "sometimes").await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_every_node_lose_nothing() {
    let c = Arc::new(TestCluster::start(3).await);
    let (s, v) = c
        .sql(
            1,
            "CREATE TABLE counters (id INT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO counters VALUES (1, 0), (2, 0)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let acked = Arc::new(Mutex::new([0u64; 2]));
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (c, acked) = (c.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..12 {
                // Counter 1 by primary key (row guards); counter 2 by a scan (table guard).
                let (which, sql) = if t % 2 == 0 {
                    (0, "UPDATE counters SET n = n + 1 WHERE id = 1")
                } else {
                    (1, "UPDATE counters SET n = n + 1 WHERE n >= 0 AND id > 1")
                };
                let (s, v) = c.sql(1 + t % 3, sql, "linearizable").await;
                assert_eq!(s, 200, "{v}");
                acked.lock().unwrap()[which] += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = *acked.lock().unwrap();
    for id in 1..=3 {
        assert_eq!(c.sql_value(id, "SELECT n FROM counters WHERE id = 1", "linearizable").await, json!(acked[0]));
        assert_eq!(c.sql_value(id, "SELECT n FROM counters WHERE id = 2", "linearizable").await, json!(acked[1]));
    }
    c.wait_converged().await;
    let digests: Vec<u64> = (1..=3).map(|i| c.node(i).replica.reader().state_digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replica states equal: {digests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_sql_inserts_loses_no_acknowledged_row() {
    let mut c = TestCluster::start(3).await;
    let (s, v) = c
        .sql(1, "CREATE TABLE events (id BIGINT PRIMARY KEY, body TEXT, at TIMESTAMP DEFAULT now())", "linearizable")
        .await;
    assert_eq!(s, 200, "{v}");
    let old_leader = c.wait_leader().await;
    let addrs: Vec<String> = (1..=3).map(|i| c.addr(i)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (http, acked) = (c.http.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..200u64 {
                for attempt in 0..40 {
                    let addr = &addrs[(i as usize + attempt) % addrs.len()];
                    let r = http
                        .post(format!("http://{addr}/v1/sql"))
                        .json(&json!({"sql": "INSERT INTO events (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", "params": [i, format!("e{i}")]}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    if matches!(&r, Ok(r) if r.status() == 200) {
                        acked.lock().unwrap().push(i);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    wait_for(30, "50 acknowledged inserts", || async { (acked.lock().unwrap().len() >= 50).then_some(()) }).await;
    c.kill(old_leader).await;
    assert_ne!(c.wait_leader().await, old_leader);
    writer.await.unwrap();
    c.restart(old_leader).await;
    c.wait_converged().await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 190, "most inserts acknowledged: {}", acked.len());
    for id in 1..=3 {
        let (s, v) = c.sql(id, "SELECT id FROM events ORDER BY id", "linearizable").await;
        assert_eq!(s, 200, "{v}");
        let present: Vec<u64> =
            v["results"][0]["rows"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap()).collect();
        for a in &acked {
            assert!(present.binary_search(a).is_ok(), "node {id} lost acknowledged row {a}");
        }
    }
}
