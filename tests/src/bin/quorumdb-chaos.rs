//! `quorumdb-chaos`: the fault-injection suite's long mode. Runs seeded schedules against real
//! `quorumdb` processes on loopback, prints one line per schedule and a summary, keeps the
//! history and node logs of every failing schedule, and exits non-zero if any failed.
//!
//!   quorumdb-chaos --schedules 100 --seconds 60 --seed 1
//!   quorumdb-chaos --replay <schedule seed>          # one schedule again, kept
//!   quorumdb-chaos --self-test                       # stale reads must be caught

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quorumdb_tests::chaos::linearizable::{self, Operation};
use quorumdb_tests::chaos::nemesis::{ALL, Kind};
use quorumdb_tests::chaos::workload::Surface;
use quorumdb_tests::chaos::{ScheduleConfig, run_schedule, schedule_seed};

#[derive(Parser, Debug)]
#[command(
    about = "Fault-injection schedules against a real QuorumDB cluster, checked for linearizability and lost writes"
)]
struct Args {
    /// How many schedules to run.
    #[arg(long, default_value_t = 10)]
    schedules: u64,
    /// How long each schedule injects faults.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The run's seed; schedule i runs from a seed derived from it (printed on its line).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only the schedule with this seed (as printed), keeping its directory.
    #[arg(long)]
    replay: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Comma-separated nemeses (default: all).
    #[arg(long, value_delimiter = ',')]
    nemeses: Vec<Kind>,
    /// Surfaces register clients use.
    #[arg(long, value_delimiter = ',', default_value = "http,resp,sql")]
    surfaces: Vec<Surface>,
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Register clients (the set and bank workloads add three more).
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Consistency of reads: `linearizable` (the claim under test), `lease`, or `stale`.
    #[arg(long, default_value = "linearizable")]
    read_consistency: String,
    /// Checks the checker: runs one schedule of stale reads under partitions and succeeds only
    /// if the checker reports a violation.
    #[arg(long)]
    self_test: bool,
    /// Where schedules keep data, logs and histories.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// Keep the directories of schedules that passed.
    #[arg(long)]
    keep: bool,
    /// Only check a recorded register history (a schedule's `history.jsonl`) and print the
    /// verdict.
    #[arg(long)]
    check_history: Option<PathBuf>,
    /// The quorumdb binary (default: `quorumdb` next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
}

fn check_history(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            println!("cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut history = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match serde_json::from_str::<Operation>(line) {
            Ok(op) => history.push(op),
            Err(e) => {
                println!("{}:{}: {e}", path.display(), n + 1);
                return ExitCode::FAILURE;
            }
        }
    }
    let r = linearizable::check(&history, 50_000_000);
    println!(
        "{} operations on {} keys ({} of unknown outcome never observed): {}",
        r.operations,
        r.keys,
        r.unseen_unknown,
        if r.ok() { "linearizable" } else { "NOT linearizable" }
    );
    for v in &r.violations {
        println!("{}", quorumdb_tests::chaos::describe(v));
    }
    for k in &r.gave_up {
        println!("gave up on key {k}");
    }
    if r.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn default_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    let dir = me.parent().map(PathBuf::from).unwrap_or_default();
    ["quorumdb", "quorumdb-node"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("quorumdb"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if let Some(path) = &a.check_history {
        return check_history(path);
    }
    let mut cfg = ScheduleConfig {
        bin: a.bin.clone().unwrap_or_else(default_bin),
        nodes: a.nodes,
        seconds: a.seconds,
        nemeses: if a.nemeses.is_empty() { ALL.to_vec() } else { a.nemeses.clone() },
        surfaces: a.surfaces.clone(),
        keys: a.keys,
        register_clients: a.clients,
        read_consistency: a.read_consistency.clone(),
        out: a.out.clone(),
        keep: a.keep,
    };
    if a.self_test {
        cfg.read_consistency = "stale".into();
        cfg.nemeses = vec![Kind::Partition, Kind::Slow];
        cfg.surfaces = vec![Surface::Http];
        cfg.keep = true;
        let r = match run_schedule(&cfg, a.replay.unwrap_or(a.seed)).await {
            Ok(r) => r,
            Err(e) => {
                println!("self-test could not run: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        println!("{}", r.line());
        return if r.problems.iter().any(|p| p.starts_with("not linearizable")) {
            println!("self-test passed: stale reads were caught ({})", r.dir.display());
            ExitCode::SUCCESS
        } else {
            println!("self-test FAILED: stale reads under partitions went unnoticed");
            ExitCode::FAILURE
        };
    }
    let seeds: Vec<u64> = match a.replay {
        Some(s) => {
            cfg.keep = true;
            vec![s]
        }
        None => (0..a.schedules).map(|i| schedule_seed(a.seed, i)).collect(),
    };
    println!(
        "chaos: {} schedule(s) of {} s, {} nodes, nemeses {:?}, surfaces {:?}, reads {}, binary {}",
        seeds.len(),
        cfg.seconds,
        cfg.nodes,
        cfg.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>(),
        cfg.surfaces,
        cfg.read_consistency,
        cfg.bin.display()
    );
    let (mut passed, mut failed, mut ops, mut checked, mut faults) = (0u64, 0u64, 0usize, 0usize, 0u64);
    let started = std::time::Instant::now();
    for (i, seed) in seeds.iter().enumerate() {
        match run_schedule(&cfg, *seed).await {
            Ok(r) => {
                println!("[{:>3}] {}", i + 1, r.line());
                ops += r.register_ops + r.set_acked + r.bank_transfers as usize + r.bank_reads as usize;
                checked += r.checked_ops;
                faults += r.faults.iter().map(|(_, n)| n).sum::<u64>();
                if r.passed() {
                    passed += 1;
                } else {
                    failed += 1;
                    println!(
                        "      history and logs: {}; replay: quorumdb-chaos --replay {} --seconds {}",
                        r.dir.display(),
                        seed,
                        cfg.seconds
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("[{:>3}] seed={seed} ERROR {e:#}", i + 1);
            }
        }
    }
    println!(
        "summary: {} schedules, {passed} passed, {failed} failed; {ops} operations ({checked} register operations checked for linearizability), {faults} faults injected, {:.0} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
