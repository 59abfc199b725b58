use quorumdb_tests::TestCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let target = (1..=3).find(|i| *i != leader).unwrap();
    let via = (1..=3).find(|i| *i != leader && *i != target).unwrap();
    // Asked of a follower, which forwards to the leader.
    let (s, b) = c.post(via, "/v1/cluster/transfer-leader", json!({"to": target})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.wait_leader().await, target);
    assert_eq!(c.put(via, "t", "1").await.unwrap().status(), 200);
    // A node that is not a voter cannot take over.
    let (s, _) = c.post(target, "/v1/cluster/transfer-leader", json!({"to": 9})).await;
    assert_eq!(s, 409);
}
