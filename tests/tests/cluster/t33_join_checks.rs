//! Membership changes are checked before anything is proposed: a malformed address, an id of
//! 0, or an address where another node answers is refused with a clear error, the membership
//! stays as it was, and the cluster keeps its leader.

use serde_json::json;

use quorumdb_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_joins_are_refused_and_the_cluster_keeps_its_leader() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let term = c.status(leader).await.unwrap()["term"].as_u64().unwrap();
    let follower = c.running().into_iter().find(|i| *i != leader).unwrap();
    for id in [leader, follower] {
        for addr in ["127.0.0.1 :9999", "127.0.0.1", "host:0", "http://127.0.0.1:9999", "a b:1", "", "[::1:5"] {
            let (s, v) = c.post(id, "/v1/cluster/join", json!({"id": 9, "addr": addr})).await;
            assert_eq!(s, 400, "join {addr:?} through node {id}: {v}");
            assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        }
        let (s, v) = c.post(id, "/v1/cluster/join", json!({"id": 0, "addr": "127.0.0.1:9999"})).await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = c.post(id, "/v1/cluster/join", json!({"id": "9", "addr": "127.0.0.1:9999"})).await;
        assert_eq!(s, 400, "{v}");
    }
    // Well-formed, but node 2 answers there: refused before the membership changes.
    let (s, v) = c.post(leader, "/v1/cluster/join", json!({"id": 9, "addr": c.addr(follower)})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("is node {follower}")), "{v}");
    // Nobody listens there: refused too.
    let (s, v) = c.post(leader, "/v1/cluster/join", json!({"id": 9, "addr": "127.0.0.1:1"})).await;
    assert_eq!(s, 409, "{v}");

    for id in c.running() {
        let st = c.status(id).await.unwrap();
        assert_eq!(st["members"].as_array().unwrap().len(), 3, "node {id}: {st}");
        assert!(st["learners"].as_array().unwrap().is_empty(), "node {id}: {st}");
        assert_eq!(st["leader"].as_u64(), Some(leader), "node {id} keeps the leader");
        assert_eq!(st["term"].as_u64(), Some(term), "no election happened");
    }
    let r = c.put(follower, "after", "ok").await.unwrap();
    assert_eq!(r.status(), 200);
}
