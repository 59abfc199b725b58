use quorumdb_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let mut leaders = 0;
    for id in 1..=3 {
        let s = c.status(id).await.unwrap();
        assert_eq!(s["leader"], leader, "node {id} agrees on the leader");
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
        leaders += usize::from(s["role"] == "leader");
    }
    assert_eq!(leaders, 1, "exactly one node says it leads");
}
