//! Durable replicated write benchmark against a running cluster's HTTP KV API.
//!
//! `cargo run --release -p quorumdb-examples --bin kv_bench -- --target 127.0.0.1:7001 --clients 64 --seconds 15`
//! Each client PUTs 256-byte values to its own keys over keep-alive connections for the given
//! time and records every request's latency; prints writes/s and p50/p90/p99.

use std::time::{Duration, Instant};

use clap::Parser;
use quorumdb_examples::percentile_ms;

#[derive(Parser)]
struct Args {
    /// Node to send writes to (host:port); a follower forwards to the leader.
    #[arg(long, default_value = "127.0.0.1:7001")]
    target: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let value = "v".repeat(a.value_size);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (target, value) = (a.target.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r =
                    http.put(format!("http://{target}/v1/kv/bench/{c}/{}", i % 1000)).body(value.clone()).send().await;
                match r {
                    Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    println!(
        "{{\"clients\": {}, \"writes\": {}, \"errors\": {errors}, \"writes_per_s\": {:.0}, \"p50_ms\": {:.2}, \"p90_ms\": {:.2}, \"p99_ms\": {:.2}}}",
        a.clients,
        all.len(),
        all.len() as f64 / a.seconds as f64,
        percentile_ms(&all, 0.5),
        percentile_ms(&all, 0.9),
        percentile_ms(&all, 0.99)
    );
    Ok(())
}
