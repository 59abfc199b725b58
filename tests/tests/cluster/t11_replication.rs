use quorumdb_tests::TestCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_follower_land_on_every_node() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    for i in 0..50 {
        let r = c.put(follower, &format!("k{i}"), &format!("v{i}")).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    c.wait_converged().await;
    for id in 1..=3 {
        for i in 0..50 {
            assert_eq!(c.get(id, &format!("k{i}"), "stale").await.as_deref(), Some(format!("v{i}").as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_compare_and_set() {
    let c = TestCluster::start(3).await;
    let url = |id: u64, q: &str| format!("http://{}/v1/kv/acct{q}", c.addr(id));
    // CAS on absence succeeds once.
    let r = c.http.put(url(2, "?absent=true")).body("10").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.http.put(url(3, "?absent=true")).body("99").send().await.unwrap();
    assert_eq!(r.status(), 412);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cas_failed");
    assert_eq!(body["error"]["current"], "10");
    // CAS with the right expectation wins, a stale one loses.
    assert_eq!(c.http.put(url(1, "?expect=10")).body("20").send().await.unwrap().status(), 200);
    assert_eq!(c.http.put(url(2, "?expect=10")).body("30").send().await.unwrap().status(), 412);
    assert_eq!(c.get(3, "acct", "linearizable").await.as_deref(), Some("20"));
    // Delete, then the key is gone everywhere.
    let r = c.http.delete(url(3, "")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for id in 1..=3 {
        assert_eq!(c.get(id, "acct", "linearizable").await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let c = TestCluster::start(1).await;
    let r = c.http.get(format!("http://{}/v1/kv/x?consistency=bogus", c.addr(1))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_request");
    let long = "k".repeat(5000);
    let r = c.put(1, &long, "v").await.unwrap();
    assert_eq!(r.status(), 400);
    let (s, b) = c.post(1, "/v1/cluster/join", json!({"id": "x"})).await;
    assert_eq!(s, 400, "{b}");
    let r = c.http.post(format!("http://{}/v1/cluster/join", c.addr(1))).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.http.get(format!("http://{}/v1/nope", c.addr(1))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_found");
    // Nothing was written by any of it.
    let s = c.status(1).await.unwrap();
    let (applied, _) = c.node(1).replica.reader().applied().unwrap();
    assert_eq!(s["applied"], applied.unwrap().index);
    assert_eq!(c.get(1, &"k".repeat(10), "stale").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_raft_state() {
    let c = TestCluster::start(1).await;
    c.put(1, "m", "1").await.unwrap();
    let text = c.http.get(format!("http://{}/metrics", c.addr(1))).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("quorumdb_raft_is_leader{node=\"1\"} 1"), "{text}");
    assert!(text.contains("quorumdb_raft_applied_index{node=\"1\"}"), "{text}");
    assert!(text.contains("quorumdb_write_seconds"), "{text}");
}
