//! The chaos suite: real `quorumdb` processes on loopback, concurrent clients running the
//! register, set and bank workloads ([`workload`]) while a seeded nemesis ([`nemesis`]) kills,
//! pauses, partitions, slows and reconfigures the cluster ([`cluster`]); afterwards everything
//! is healed and checked: the register history for linearizability ([`linearizable`]), the set
//! for lost and duplicated rows, the bank for its total, and every replica's applied index,
//! checksum and full-state digest for equality. Run by `quorumdb-chaos` (long mode) and by the
//! cluster test `t22_chaos` (CI's short mode).

pub mod cluster;
pub mod linearizable;
pub mod nemesis;
pub mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use cluster::ProcCluster;
use nemesis::{Kind, Nemesis};
use workload::{Clock, Endpoint, Observed, Surface, WorkloadConfig};

/// How one schedule runs.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The `quorumdb` binary.
    pub bin: PathBuf,
    pub nodes: u64,
    pub seconds: u64,
    pub nemeses: Vec<Kind>,
    pub surfaces: Vec<Surface>,
    pub keys: usize,
    pub register_clients: usize,
    pub read_consistency: String,
    /// Where each schedule's data, node logs and history go.
    pub out: PathBuf,
    /// Keep the directory of a schedule that passed.
    pub keep: bool,
}

/// What one schedule found.
#[derive(Debug, Default)]
pub struct ScheduleReport {
    pub seed: u64,
    pub seconds: f64,
    pub register_ops: usize,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub checked_ops: usize,
    pub set_acked: usize,
    pub set_retries: u64,
    pub bank_transfers: u64,
    pub bank_reads: u64,
    pub vectors_acked: usize,
    pub faults: Vec<(Kind, u64)>,
    pub applied: u64,
    /// Everything that went wrong; empty when the schedule passed.
    pub problems: Vec<String>,
    /// The directory holding the history and node logs (removed on success unless kept).
    pub dir: PathBuf,
}

impl ScheduleReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line for the schedule's log.
    pub fn line(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        format!(
            "seed={:<20} {} {:>5.1}s register ops={} (ok {}, unknown {}, checked {}) set acked={} (retried {}) bank transfers={} reads={} vectors={} \
             faults=[{}] applied={}{}",
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            self.seconds,
            self.register_ops,
            self.ops_ok,
            self.ops_unknown,
            self.checked_ops,
            self.set_acked,
            self.set_retries,
            self.bank_transfers,
            self.bank_reads,
            self.vectors_acked,
            faults.join(" "),
            self.applied,
            if self.passed() { String::new() } else { format!("\n  problems: {}", self.problems.join("\n  ")) }
        )
    }
}

/// The seed of schedule `i` of a run started with `seed` (so any schedule replays alone).
pub fn schedule_seed(seed: u64, i: u64) -> u64 {
    // SplitMix64 of the pair: well spread, stable across versions.
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs one schedule from `seed` and checks it. An `Err` is a harness failure (the cluster
/// could not even start); everything the checks find is in the report's `problems`.
pub async fn run_schedule(cfg: &ScheduleConfig, seed: u64) -> Result<ScheduleReport> {
    let dir = cfg.out.join(format!("seed-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let mut report = ScheduleReport { seed, dir: dir.clone(), ..Default::default() };
    let mut c = ProcCluster::start(&cfg.bin, &dir, cfg.nodes).await.context("starting the cluster")?;
    let endpoints: Vec<Endpoint> =
        c.nodes.iter().map(|n| Endpoint { id: n.id, http: n.addr.clone(), redis: n.redis_addr.clone() }).collect();
    let wcfg = Arc::new(WorkloadConfig {
        endpoints: endpoints.clone(),
        surfaces: cfg.surfaces.clone(),
        keys: cfg.keys,
        register_clients: cfg.register_clients,
        read_consistency: cfg.read_consistency.clone(),
        think: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
    });
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    workload::setup(&http, &wcfg).await?;

    let clock = Clock(Instant::now());
    let observed = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    let shared = workload::ClientShared {
        cfg: wcfg.clone(),
        http: http.clone(),
        clock,
        next_value: next_value.clone(),
        observed: observed.clone(),
        stop: stop.clone(),
    };
    for i in 0..wcfg.register_clients {
        let seed = schedule_seed(seed, 1000 + i as u64);
        tasks.push(tokio::spawn(workload::register_client(i, seed, shared.clone())));
    }
    tasks.push(tokio::spawn(workload::set_client(schedule_seed(seed, 2000), shared.clone())));
    tasks.push(tokio::spawn(workload::vector_client(schedule_seed(seed, 4000), shared.clone())));
    for i in 0..2 {
        tasks.push(tokio::spawn(workload::bank_client(schedule_seed(seed, 3000 + i), shared.clone())));
    }

    // Faults until the time is up, then heal and let the clients run on a healthy cluster.
    let mut nemesis = Nemesis::new(seed, cfg.nemeses.clone(), clock.0);
    let deadline = clock.0 + Duration::from_secs(cfg.seconds);
    let mut problems = Vec::new();
    while Instant::now() < deadline {
        if let Err(e) = nemesis.round(&mut c).await {
            problems.push(format!("nemesis: {e:#}"));
            break;
        }
        for (id, status) in c.crashed() {
            problems.push(format!("node {id} exited by itself ({status}); see {}", c.log_of(id).display()));
            c.restart(id)?;
        }
    }
    if let Err(e) = c.heal_all().await {
        problems.push(format!("healing: {e:#}"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    // Checks.
    let history = observed.register.lock().unwrap_or_else(|e| e.into_inner()).clone();
    write_history(&dir, &history, &nemesis.events)?;
    report.register_ops = history.len();
    report.ops_ok = history.iter().filter(|o| o.ret.is_some()).count();
    report.ops_unknown = history.len() - report.ops_ok;
    let lin = tokio::task::spawn_blocking(move || linearizable::check(&history, 50_000_000)).await?;
    report.checked_ops = lin.operations;
    for v in &lin.violations {
        problems.push(describe(v));
    }
    for k in &lin.gave_up {
        problems.push(format!("checker gave up on key {k} (budget exhausted)"));
    }
    // Replicas first (the vector checks read each node's own state), then the workloads.
    match c.converged(60).await {
        Ok((applied, _, _)) => report.applied = applied,
        Err(e) => problems.push(format!("{e:#}")),
    }
    match workload::final_checks(&http, &endpoints, &observed).await {
        Ok(p) => problems.extend(p),
        Err(e) => problems.push(format!("final reads: {e:#}")),
    }
    problems.extend(
        observed.bank_bad.lock().unwrap_or_else(|e| e.into_inner()).iter().take(5).map(|b| format!("bank read: {b}")),
    );
    let unexpected = observed.unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !unexpected.is_empty() {
        problems.push(format!("{} unexpected answers, e.g. {}", unexpected.len(), unexpected[0]));
    }
    for (id, status) in c.crashed() {
        problems.push(format!("node {id} exited by itself ({status}); see {}", c.log_of(id).display()));
    }
    for n in &c.nodes {
        if let Ok(log) = std::fs::read_to_string(c.log_of(n.id))
            && let Some(line) = log.lines().find(|l| l.contains("panicked"))
        {
            problems.push(format!("node {} panicked: {line}", n.id));
        }
    }
    report.set_acked = observed.set_acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    report.set_retries = observed.set_retries.load(Ordering::Relaxed);
    report.bank_transfers = observed.bank_transfers.load(Ordering::Relaxed);
    report.bank_reads = observed.bank_reads.load(Ordering::Relaxed);
    report.vectors_acked = observed.vectors_acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    report.faults = nemesis.counts.into_iter().collect();
    report.seconds = started.elapsed().as_secs_f64();
    report.problems = problems;
    drop(c);
    if report.passed() && !cfg.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// A violation in one line per operation the search got stuck at.
pub fn describe(v: &linearizable::Verdict) -> String {
    match v {
        linearizable::Verdict::Violation { key, stuck_at } => {
            let ops: Vec<String> = stuck_at
                .iter()
                .map(|o| {
                    let ret = o.ret.map_or("?".to_string(), |r| format!("{:.3}", r as f64 / 1e9));
                    format!("client {} {:?} -> {:?} [{:.3}s, {ret}s]", o.client, o.op, o.out, o.call as f64 / 1e9)
                })
                .collect();
            format!("not linearizable: key {key}; no order explains:\n      {}", ops.join("\n      "))
        }
        other => format!("{other:?}"),
    }
}

/// Writes the register history (one JSON operation per line) and the nemesis's actions.
fn write_history(dir: &Path, history: &[linearizable::Operation], events: &[(u64, String)]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for op in history {
        serde_json::to_writer(&mut f, op)?;
        f.write_all(b"\n")?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("nemesis.log"))?);
    for (ms, what) in events {
        writeln!(f, "{ms:>8} ms  {what}")?;
    }
    Ok(())
}
