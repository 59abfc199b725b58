//! A node that missed writes catches up: from the log, or from a snapshot when the leader
//! has already purged the entries it needs.

use quorumdb_tests::TestCluster;

async fn missed_writes_are_caught_up(snapshot_every: u64, writes: usize) -> serde_json::Value {
    let mut c = TestCluster::start_with(3, snapshot_every).await;
    let leader = c.wait_leader().await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    c.kill(lagging).await;
    for i in 0..writes {
        let r = c.put(leader, &format!("m{i:04}"), &i.to_string()).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    c.restart(lagging).await;
    c.wait_converged().await;
    for i in (0..writes).step_by(7) {
        assert_eq!(c.get(lagging, &format!("m{i:04}"), "stale").await, Some(i.to_string()));
    }
    let s = c.status(lagging).await.unwrap();
    let digest = |id: u64| c.node(id).replica.reader().state_digest().unwrap();
    assert_eq!(digest(lagging), digest(leader), "state digests equal");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_the_log() {
    let s = missed_writes_are_caught_up(50_000, 200).await;
    assert!(s["snapshot"].is_null(), "no snapshot needed: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_a_snapshot() {
    // Snapshots every 40 entries and keeps 8 below them: 300 missed writes are long purged.
    let s = missed_writes_are_caught_up(40, 300).await;
    assert!(s["snapshot"].as_u64().is_some_and(|i| i > 0), "the node installed a snapshot: {s}");
}

/// A follower that was down while 300 MiB of 512 KiB entries were written catches up from the
/// log: AppendEntries are bounded by bytes and their deadlines grow with their size, so no
/// batch times out forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_by_300_mib_of_large_entries_catches_up() {
    use futures::StreamExt;
    let mut c = TestCluster::start_with(3, 50_000).await;
    let leader = c.wait_leader().await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    c.kill(lagging).await;
    let value = "v".repeat(512 * 1024);
    let statuses: Vec<u16> = {
        let (c, value) = (&c, &value);
        futures::stream::iter(0..600)
            .map(|i| async move {
                c.put(leader, &format!("big{i:03}"), value).await.map(|r| r.status().as_u16()).unwrap_or(0)
            })
            .buffer_unordered(4)
            .collect()
            .await
    };
    assert!(statuses.iter().all(|s| *s == 200), "every large write acknowledged");
    let target = c.node(leader).replica.reader().applied().unwrap().0.unwrap().index;
    c.restart(lagging).await;
    let started = std::time::Instant::now();
    quorumdb_tests::wait_for(120, "the follower to catch up", || async {
        let applied = c.node(lagging).replica.reader().applied().ok()?.0?.index;
        (applied >= target).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    println!("caught up 300 MiB of 512 KiB entries in {secs:.1} s ({:.0} MiB/s)", 300.0 / secs);
    assert_eq!(c.get(lagging, "big599", "stale").await.map(|v| v.len()), Some(512 * 1024));
    let s = c.status(lagging).await.unwrap();
    assert!(s["snapshot"].is_null(), "caught up from the log, not a snapshot: {s}");
}
