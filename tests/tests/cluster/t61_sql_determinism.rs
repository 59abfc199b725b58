//! Determinism: a randomized mixed SQL workload (point and range updates, upserts, deletes,
//! `random()`, hidden row ids, INSERT … SELECT, multi-statement batches) from several clients
//! to every node, with the leader killed and restarted midway, ends with identical state on
//! every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quorumdb_tests::{TestCluster, wait_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn statement(rng: &mut StdRng) -> String {
    let k = rng.random_range(0..40);
    let t = rng.random_range(0..10);
    match rng.random_range(0..8) {
        0 => format!(
            "INSERT INTO acct VALUES ({k}, 'o{k}', 0, {t}) ON CONFLICT (id) DO UPDATE SET balance = acct.balance + 1"
        ),
        1 => format!("UPDATE acct SET balance = balance + 1, tag = (tag + 1) % 10 WHERE id = {k}"),
        2 => format!("UPDATE acct SET balance = balance - 1 WHERE tag = {t}"),
        3 => format!("DELETE FROM acct WHERE id = {k}"),
        4 => "INSERT INTO log (note, r, at) VALUES ('tick', random(), now())".to_string(),
        5 => format!("INSERT INTO log (note, r) SELECT owner, random() FROM acct WHERE tag = {t}"),
        6 => format!(
            "BEGIN; UPDATE acct SET balance = balance + 10 WHERE id = {k}; \
             INSERT INTO acct VALUES ({}, 'b', 1, {t}) ON CONFLICT (id) DO NOTHING; COMMIT;",
            (k + 1) % 40
        ),
        _ => format!("UPDATE log SET r = r * 2 WHERE r < 0.{t}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sql_workload_leaves_identical_replicas_across_a_leader_kill() {
    let mut c = TestCluster::start(3).await;
    let (s, v) = c
        .sql(
            1,
            "CREATE TABLE acct (id INT PRIMARY KEY, owner TEXT, balance BIGINT NOT NULL, tag INT); \
             CREATE INDEX acct_tag ON acct (tag); \
             CREATE TABLE log (note TEXT, r DOUBLE PRECISION, at TIMESTAMP)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let addrs: Vec<String> = (1..=3).map(|i| c.addr(i)).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (http, addrs, done) = (c.http.clone(), addrs.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client);
            let mut ok = 0;
            for i in 0..60 {
                let sql = statement(&mut rng);
                // Like a client: on a connection failure or a retryable error, try the next node.
                for attempt in 0..10 {
                    let addr = &addrs[(client as usize + i + attempt) % addrs.len()];
                    let r = http
                        .post(format!("http://{addr}/v1/sql"))
                        .json(&json!({ "sql": sql }))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let retry = match r {
                        Ok(r) if r.status() == 200 => {
                            ok += 1;
                            false
                        }
                        Ok(r) => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            eprintln!("[t61] {sql}: {body}");
                            body["error"]["retryable"] == true
                        }
                        Err(e) => {
                            eprintln!("[t61] {sql}: {e}");
                            true
                        }
                    };
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            ok
        }));
    }
    wait_for(60, "a third of the workload", || async { (done.load(Ordering::Relaxed) >= 80).then_some(()) }).await;
    let leader = c.wait_leader().await;
    c.kill(leader).await;
    c.wait_leader().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart(leader).await;
    let mut applied = 0;
    for t in clients {
        applied += t.await.unwrap();
    }
    assert!(applied >= 200, "most statements succeeded: {applied} of 240");

    c.wait_converged().await;
    let digests: Vec<u64> = (1..=3).map(|i| c.node(i).replica.reader().state_digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replica states differ: {digests:?}");
    // The same answers everywhere, read locally.
    let q = "SELECT count(*), coalesce(sum(balance), 0) FROM acct";
    let first = c.sql(1, q, "stale").await.1["results"][0]["rows"].clone();
    for id in 2..=3 {
        assert_eq!(c.sql(id, q, "stale").await.1["results"][0]["rows"], first, "node {id}");
    }
    let logs = c.sql_value(1, "SELECT count(*) FROM log", "linearizable").await;
    assert!(logs.as_u64().unwrap() > 0, "random() rows were written");
}
