//! CI's short mode of the chaos suite (`quorumdb-chaos` is the long one): seeded schedules of
//! kills, pauses, partitions, slow links, leader transfers and membership changes against three
//! real processes, with every check the long mode makes; and the checker's self-test, which
//! must catch stale reads.

use std::path::PathBuf;

use quorumdb_tests::chaos::nemesis::{ALL, Kind};
use quorumdb_tests::chaos::workload::Surface;
use quorumdb_tests::chaos::{ScheduleConfig, run_schedule, schedule_seed};

fn config(out: &std::path::Path, seconds: u64) -> ScheduleConfig {
    ScheduleConfig {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_quorumdb-node")),
        nodes: 3,
        seconds,
        nemeses: ALL.to_vec(),
        surfaces: vec![Surface::Http, Surface::Resp, Surface::Sql],
        keys: 4,
        register_clients: 6,
        read_consistency: "linearizable".into(),
        out: out.to_path_buf(),
        keep: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_mode() {
    // Passing schedules remove their directories; a failing one's history and logs stay.
    let out = tempfile::tempdir().unwrap().keep();
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261203);
    let cfg = config(&out, 20);
    for i in 0..3 {
        let r = run_schedule(&cfg, schedule_seed(seed, i)).await.expect("schedule ran");
        println!("{}", r.line());
        assert!(r.passed(), "schedule {} failed; history kept in {}:\n{}", r.seed, r.dir.display(), r.line());
        assert!(r.checked_ops > 100, "the register workload ran: {}", r.line());
        assert!(r.set_acked > 10 && r.bank_transfers > 10 && r.bank_reads > 10, "{}", r.line());
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_checker_catches_stale_reads() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(out.path(), 10);
    cfg.read_consistency = "stale".into();
    cfg.nemeses = vec![Kind::Partition, Kind::Slow];
    cfg.surfaces = vec![Surface::Http];
    let r = run_schedule(&cfg, 7).await.expect("schedule ran");
    println!("{}", r.line());
    assert!(
        r.problems.iter().any(|p| p.starts_with("not linearizable")),
        "stale reads under partitions must fail the linearizability check: {}",
        r.line()
    );
}
