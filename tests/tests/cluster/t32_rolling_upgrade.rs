//! A rolling upgrade of a 3-node cluster: nodes acting as the previous binary (they read and
//! write only format version 0) are restarted one at a time as the current binary. The
//! cluster keeps serving throughout, keeps writing version 0 while any node reads only it,
//! moves to the current version by itself once the last node is upgraded, and a node whose
//! binary is too old for the cluster is refused when it tries to join.

use std::time::Duration;

use quorumdb_replication::Proposer;
use quorumdb_replication::format::{CURRENT, LEGACY};
use quorumdb_tests::{TestCluster, wait_for};

/// One KV write and one SQL write through every running node, each checked on every node.
async fn write_everywhere(c: &TestCluster, round: &str) {
    for id in c.running() {
        let key = format!("{round}-{id}");
        let r = c.put(id, &key, round).await.unwrap();
        assert_eq!(r.status(), 200, "PUT through node {id} in {round}");
        let (s, v) = c.sql(id, &format!("INSERT INTO t VALUES ('{key}', {id})"), "linearizable").await;
        assert_eq!(s, 200, "INSERT through node {id} in {round}: {v}");
    }
    for id in c.running() {
        for from in c.running() {
            assert_eq!(c.get(id, &format!("{round}-{from}"), "linearizable").await.as_deref(), Some(round));
        }
    }
}

/// The format every running node reports (status) and would encode with (its proposer).
async fn formats(c: &TestCluster) -> Vec<(u64, u64, u8)> {
    let mut out = Vec::new();
    for id in c.running() {
        let s = c.status(id).await.expect("status");
        out.push((id, s["format"].as_u64().expect("format in status"), c.node(id).replica.format()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_moves_the_format_only_once_every_node_reads_it() {
    let mut c = TestCluster::start_tweaked(3, 50_000, |cfg| cfg.max_format = LEGACY).await;
    let (s, v) = c.sql(1, "CREATE TABLE t (k TEXT PRIMARY KEY, n INT)", "linearizable").await;
    assert_eq!(s, 200, "{v}");
    write_everywhere(&c, "before").await;
    assert!(formats(&c).await.iter().all(|(_, f, p)| *f == 0 && *p == 0), "{:?}", formats(&c).await);

    for (step, id) in [2u64, 3, 1].into_iter().enumerate() {
        c.kill(id).await;
        // The cluster serves with one node down.
        write_everywhere(&c, &format!("down-{id}")).await;
        c.config_mut(id).max_format = CURRENT;
        c.restart(id).await;
        c.wait_voters(3).await;
        write_everywhere(&c, &format!("upgraded-{id}")).await;
        if step < 2 {
            // Give the leader several chances to move the format: it must not while a node
            // still reads only version 0.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let f = formats(&c).await;
            assert!(f.iter().all(|(_, f, p)| *f == 0 && *p == 0), "after upgrading node {id}: {f:?}");
        }
    }
    // Every node runs the current binary: the leader raises the format through the log.
    wait_for(20, "every node to apply the new format version", || async {
        let f = formats(&c).await;
        f.iter().all(|(_, f, p)| *f == u64::from(CURRENT) && *p == CURRENT).then_some(())
    })
    .await;
    write_everywhere(&c, "after").await;
    c.wait_converged().await;
    let digests: Vec<u64> = c.running().iter().map(|&i| c.node(i).replica.reader().state_digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replicas diverged: {digests:?}");
    for id in c.running() {
        let n = c.sql_value(id, "SELECT count(*) FROM t", "linearizable").await;
        assert_eq!(n, 3 + 3 * (2 + 3) + 3, "node {id} holds every row");
    }

    // A node whose binary reads only version 0 cannot join a cluster that writes version 1.
    let seed = c.addr(1);
    c.add_node_with(4, Some(seed), |cfg| cfg.max_format = LEGACY).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members = c.status(1).await.expect("status")["members"].clone();
    let learners = c.status(1).await.expect("status")["learners"].clone();
    let ids =
        |v: &serde_json::Value| v.as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect::<Vec<_>>();
    assert!(!ids(&members).contains(&4) && !ids(&learners).contains(&4), "members {members}, learners {learners}");
    // Upgraded, it joins.
    c.kill(4).await;
    c.config_mut(4).max_format = CURRENT;
    c.config_mut(4).join = Some(c.addr(1));
    c.restart(4).await;
    c.wait_voters(4).await;
}
