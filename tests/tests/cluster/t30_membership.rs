use quorumdb_tests::TestCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_nodes() {
    let mut c = TestCluster::start(3).await;
    for i in 0..20 {
        c.put(1, &format!("a{i}"), "x").await.unwrap();
    }
    // A fourth node joins through a follower and gets all data.
    let first_leader = c.wait_leader().await;
    let follower = (1..=3).find(|i| *i != first_leader).unwrap();
    c.add_node(4, Some(c.addr(follower))).await;
    c.wait_voters(4).await;
    c.wait_converged().await;
    assert_eq!(c.get(4, "a19", "linearizable").await.as_deref(), Some("x"));

    // Joining again is a no-op, not an error.
    let (s, b) = c.post(1, "/v1/cluster/join", json!({"id": 4, "addr": c.addr(4)})).await;
    assert_eq!(s, 200, "{b}");
    // The same id at another address is refused.
    let (s, _) = c.post(1, "/v1/cluster/join", json!({"id": 4, "addr": "127.0.0.1:1"})).await;
    assert_eq!(s, 409);

    // Remove a non-leader voter; the rest keep working.
    let leader = c.wait_leader().await;
    let victim = (1..=4).find(|i| *i != leader).unwrap();
    let (s, b) = c.post(victim, "/v1/cluster/remove", json!({"id": victim})).await;
    assert_eq!(s, 200, "{b}");
    c.kill(victim).await;
    c.wait_voters(3).await;
    let l = c.wait_leader().await;
    let members: Vec<u64> =
        c.status(l).await.unwrap()["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert!(!members.contains(&victim), "{members:?}");
    assert_eq!(c.put(l, "after", "1").await.unwrap().status(), 200);
}
