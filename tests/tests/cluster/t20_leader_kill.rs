//! Kill the leader during a stream of writes: nothing acknowledged is lost, on the survivors
//! and after a full restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorumdb_tests::TestCluster;

/// Writes `n` keys, each to the next node in turn, retrying on other nodes until some node
/// acknowledges it or `tries` run out. Returns the acknowledged keys.
pub async fn write_stream(
    http: reqwest::Client,
    addrs: Vec<String>,
    prefix: &str,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    for i in 0..n {
        let key = format!("{prefix}{i:05}");
        for attempt in 0..40 {
            let addr = &addrs[(i + attempt) % addrs.len()];
            let r = http
                .put(format!("http://{addr}/v1/kv/{key}"))
                .body(key.clone())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status() == 200) {
                acked.lock().unwrap().push(key.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_stream_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3).await;
    let old_leader = c.wait_leader().await;
    let addrs: Vec<String> = (1..=3).map(|i| c.addr(i)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_stream(c.http.clone(), addrs, "w", 400, acked.clone()));

    // Let some writes land, then kill the leader.
    quorumdb_tests::wait_for(30, "100 acknowledged writes", || async {
        (acked.lock().unwrap().len() >= 100).then_some(())
    })
    .await;
    c.kill(old_leader).await;
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, old_leader);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 390, "most writes were acknowledged: {}", acked.len());

    for id in c.running() {
        for k in &acked {
            assert_eq!(c.get(id, k, "linearizable").await.as_deref(), Some(k.as_str()), "node {id} lost {k}");
        }
    }

    // The old leader comes back as a follower and catches up; then everyone restarts.
    c.restart(old_leader).await;
    c.wait_converged().await;
    c.stop_all().await;
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.wait_leader().await;
    let (_, checksum) = c.wait_converged().await;
    assert_ne!(checksum, 0);
    for id in 1..=3 {
        for k in &acked {
            assert_eq!(c.get(id, k, "stale").await.as_deref(), Some(k.as_str()), "node {id} lost {k} after restart");
        }
    }
}
