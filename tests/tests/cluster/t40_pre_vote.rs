//! With pre-vote, a node cut off from the others does not inflate its term, so when the
//! partition heals it does not depose the healthy leader.

use std::time::Duration;

use quorumdb_replication::network::FaultRules;
use quorumdb_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_node_does_not_disrupt_the_leader() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let term = c.node(leader).replica.metrics().current_term;
    let cut = (1..=3).find(|i| *i != leader).unwrap();

    c.node(cut).replica.set_faults(FaultRules { isolated: true, ..Default::default() });
    // Many election timeouts (300-600 ms) pass while it is cut off.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.node(cut).replica.metrics().current_term, term, "the isolated node did not start real elections");
    assert_eq!(c.put(leader, "p", "1").await.unwrap().status(), 200, "the majority kept working");

    c.node(cut).replica.faults().clear();
    c.wait_converged().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.wait_leader().await, leader, "the leader kept its place");
    assert_eq!(c.node(leader).replica.metrics().current_term, term, "the term did not change");
    assert_eq!(c.get(cut, "p", "linearizable").await.as_deref(), Some("1"));
}
