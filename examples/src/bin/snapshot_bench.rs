//! Snapshot benchmark: how long a node with ~1 GB of state takes to build a snapshot, and how
//! long a brand-new node takes to catch up from it, against simply copying the same files
//! over a loopback TCP connection.
//!
//! `cargo run -p quorumdb-examples --bin snapshot_bench -- --quorumdb target/debug/quorumdb --mb 1000`
//!
//! Starts node 1 (`--init`), fills it with `--mb` MB of poorly compressible KV values, asks
//! for a snapshot and times it until status shows it; starts node 2 with an empty data dir
//! (`--join`) and times it until it has applied everything; then copies node 1's snapshot
//! files over 127.0.0.1 (fsync per file, as the receiver does) and with `cp`. Prints JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure ends the run with its message

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// The quorumdb binary to run.
    #[arg(long, default_value = "target/debug/quorumdb")]
    quorumdb: PathBuf,
    /// Where the nodes keep their data (emptied first).
    #[arg(long, default_value = "/tmp/quorumdb-snapshot-bench")]
    dir: PathBuf,
    /// State to load, in MB.
    #[arg(long, default_value_t = 1000)]
    mb: u64,
    /// Size of one value, in KB (one log entry each).
    #[arg(long, default_value_t = 512)]
    value_kb: usize,
    #[arg(long, default_value_t = 17601)]
    port: u16,
    /// Node 1's snapshot policy: its log is purged to `snapshot_every / 5` entries below the
    /// snapshot, so node 2 can only catch up from the snapshot.
    #[arg(long, default_value_t = 50)]
    snapshot_every: u64,
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(a: &Args, id: u64, join: Option<&str>) -> anyhow::Result<Node> {
    let addr = format!("127.0.0.1:{}", a.port + id as u16 - 1);
    let mut cmd = Command::new(&a.quorumdb);
    cmd.args(["start", "--id", &id.to_string(), "--listen", &addr, "--pg-listen", "off", "--redis-listen", "off"])
        .arg("--data-dir")
        .arg(a.dir.join(format!("n{id}")))
        .args(["--snapshot-every", &a.snapshot_every.to_string()]);
    match join {
        Some(seed) => cmd.args(["--join", seed]),
        None => cmd.arg("--init"),
    };
    let log = std::fs::File::create(a.dir.join(format!("n{id}.log")))?;
    Ok(Node(cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null()).spawn()?))
}

async fn status(http: &reqwest::Client, addr: &str) -> Option<Value> {
    http.get(format!("http://{addr}/v1/status")).send().await.ok()?.json().await.ok()
}

async fn wait<T, F: std::future::Future<Output = Option<T>>>(secs: u64, what: &str, f: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir`, with sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), e.metadata().unwrap().len()));
        }
    }
    out
}

/// Copies `files` over a loopback TCP connection into `dest`, fsyncing each file.
fn tcp_copy(files: &[(PathBuf, u64)], dest: &Path) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(dest)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dest = dest.to_path_buf();
    let sizes: Vec<u64> = files.iter().map(|f| f.1).collect();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        for (i, size) in sizes.iter().enumerate() {
            let mut f = std::fs::File::create(dest.join(format!("f{i}")))?;
            let mut left = *size;
            while left > 0 {
                let n = s.read(&mut buf[..(left.min(1 << 20)) as usize])?;
                anyhow::ensure!(n > 0, "connection closed");
                f.write_all(&buf[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    for (p, _) in files {
        std::io::copy(&mut std::fs::File::open(p)?, &mut s)?;
    }
    receiver.join().expect("receiver thread")?;
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let (a1, a2) = (format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", a.port + 1));
    let _n1 = start(&a, 1, None)?;
    wait(30, "node 1 to lead", || async { status(&http, &a1).await?["leader"].as_u64() }).await;

    // Load: values of printable pseudo-random bytes (RocksDB's LZ4 barely shrinks them).
    let values = (a.mb * 1024 / a.value_kb as u64).max(1);
    let load_started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut inflight = Vec::new();
    for i in 0..values {
        let v = quorumdb_examples::noise_text(&mut seed, a.value_kb * 1024);
        let (http, url) = (http.clone(), format!("http://{a1}/v1/kv/bench{i:06}"));
        inflight.push(tokio::spawn(async move { http.put(url).body(v).send().await.map(|r| r.status()) }));
        if inflight.len() == 8 {
            for t in inflight.drain(..) {
                anyhow::ensure!(t.await??.is_success(), "a load write failed");
            }
        }
        if (i + 1) % (values / 10).max(1) == 0 {
            eprintln!("loaded {} of {values} values", i + 1);
        }
    }
    for t in inflight {
        anyhow::ensure!(t.await??.is_success(), "a load write failed");
    }
    let load_s = load_started.elapsed().as_secs_f64();
    let applied = status(&http, &a1).await.and_then(|s| s["applied"].as_u64()).unwrap_or(0);

    // Snapshot build, timed until status shows it.
    let build_started = Instant::now();
    http.post(format!("http://{a1}/v1/cluster/snapshot")).send().await?.error_for_status()?;
    wait(600, "the snapshot", || async { (status(&http, &a1).await?["snapshot"].as_u64()? >= applied).then_some(()) })
        .await;
    let build_s = build_started.elapsed().as_secs_f64();
    let snaps = a.dir.join("n1/snapshots");
    let newest = std::fs::read_dir(&snaps)?.flatten().map(|e| e.path()).max().expect("a snapshot directory");
    let snap_files = files(&newest);
    let bytes: u64 = snap_files.iter().map(|f| f.1).sum();

    // Catch-up of a new node.
    let join_started = Instant::now();
    let _n2 = start(&a, 2, Some(&a1))?;
    let transfer = wait(3600, "node 2 to catch up", || async {
        let s = status(&http, &a2).await?;
        if s["applied"].as_u64()? < applied {
            return None;
        }
        s["snapshot_transfers"].as_array()?.iter().find(|t| t["direction"] == "receive").cloned()
    })
    .await;
    let catch_up_s = join_started.elapsed().as_secs_f64();
    let transfer_s =
        (transfer["updated_ms"].as_u64().unwrap_or(0) - transfer["started_ms"].as_u64().unwrap_or(0)) as f64 / 1000.0;

    // The baselines: the same files over loopback TCP, and cp.
    let tcp_s = tcp_copy(&snap_files, &a.dir.join("tcp-copy"))?.as_secs_f64();
    let cp_started = Instant::now();
    let ok = Command::new("cp").arg("-r").arg(&newest).arg(a.dir.join("cp-copy")).status()?.success();
    Command::new("sync").status()?;
    anyhow::ensure!(ok, "cp failed");
    let cp_s = cp_started.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "state_mb": (mb * 10.0).round() / 10.0,
            "files": snap_files.len(),
            "load_s": (load_s * 10.0).round() / 10.0,
            "snapshot_build_s": (build_s * 100.0).round() / 100.0,
            "catch_up_s": (catch_up_s * 100.0).round() / 100.0,
            "catch_up_mb_per_s": (mb / catch_up_s).round(),
            "stream_s": transfer_s,
            "stream_mb_per_s": (mb / transfer_s.max(1e-3)).round(),
            "tcp_copy_s": (tcp_s * 100.0).round() / 100.0,
            "tcp_copy_mb_per_s": (mb / tcp_s).round(),
            "cp_s": (cp_s * 100.0).round() / 100.0,
            "catch_up_vs_tcp_copy": ((tcp_s / catch_up_s) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
