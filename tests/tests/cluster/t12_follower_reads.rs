//! Linearizable reads from followers observe every write acknowledged before the read began.

use quorumdb_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_see_acknowledged_writes() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    for i in 0..60u64 {
        let writer = if i % 2 == 0 { leader } else { followers[0] };
        let reader = followers[(i % 2) as usize];
        let r = c.put(writer, "register", &i.to_string()).await.unwrap();
        assert_eq!(r.status(), 200);
        for level in ["linearizable", "lease"] {
            assert_eq!(
                c.get(reader, "register", level).await.as_deref(),
                Some(i.to_string().as_str()),
                "{level} read on node {reader}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_report_staleness_and_honour_the_bound() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    c.put(leader, "s", "1").await.unwrap();
    c.wait_converged().await;
    let r = c.http.get(format!("http://{}/v1/kv/s?consistency=stale", c.addr(f))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let staleness: u64 = r.headers()["x-quorumdb-staleness-ms"].to_str().unwrap().parse().unwrap();
    assert!(staleness < 2_000, "follower heard from the leader recently: {staleness} ms");
    assert!(r.headers().contains_key("x-quorumdb-applied-index"));
    // Cut the follower off; after a while its state is too old for a 300 ms bound.
    let rules = quorumdb_replication::network::FaultRules { isolated: true, ..Default::default() };
    c.node(f).replica.set_faults(rules);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let r = c
        .http
        .get(format!("http://{}/v1/kv/s?consistency=stale&max_staleness_ms=300", c.addr(f)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Without a bound the old value is still served.
    assert_eq!(c.get(f, "s", "stale").await.as_deref(), Some("1"));
    c.node(f).replica.faults().clear();
}
