//! SQL benchmarks.
//!
//! In-process (no network, no Raft; the engine over the in-memory state):
//! `cargo run --release -p quorumdb-examples --bin sql_bench -- local --rows 100000 --queries 20000`
//! prints the latency of primary-key point SELECTs (fast path), the same lookup planned by
//! DataFusion, and single-row INSERT planning+apply.
//!
//! Against a cluster over HTTP (`POST /v1/sql`):
//! `cargo run --release -p quorumdb-examples --bin sql_bench -- http --target 127.0.0.1:7001 --clients 32 --seconds 10`
//! inserts rows with concurrent clients, then runs point SELECTs; prints ops/s and p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use quorumdb_sql::Engine;
use quorumdb_sql::memory::MemoryState;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Local {
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
    },
    Http {
        #[arg(long, default_value = "127.0.0.1:7001")]
        target: String,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn report(name: &str, mut lat: Vec<Duration>, elapsed: Duration) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "{name:<40} {:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.len()
    );
}

async fn local(rows: usize, queries: usize) -> anyhow::Result<()> {
    let state = MemoryState::new();
    let engine = Engine::new(state.clone());
    let run = |sql: String| {
        let (engine, state) = (&engine, state.clone());
        async move {
            let p = engine.parse(&sql, &[])?;
            engine.execute(p, state.as_ref()).await
        }
    };
    run("CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT)".into()).await?;
    let t = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, 'owner{i}', {})", i * 7 % 1000)).collect();
        run(format!("INSERT INTO accounts VALUES {}", values.join(", "))).await?;
    }
    println!("loaded {rows} rows in 1000-row INSERTs: {:.0} rows/s", rows as f64 / t.elapsed().as_secs_f64());

    for (name, sql) in [
        ("point SELECT (fast path)", "SELECT * FROM accounts WHERE id = {}"),
        ("point SELECT (DataFusion, pk pushdown)", "SELECT owner, balance + 0 AS b FROM accounts WHERE id = {}"),
    ] {
        let mut lat = Vec::with_capacity(queries);
        let start = Instant::now();
        for q in 0..queries {
            let id = (q * 7919) % rows;
            let t = Instant::now();
            let r = run(sql.replace("{}", &id.to_string())).await?;
            lat.push(t.elapsed());
            assert_eq!(r.len(), 1);
        }
        report(name, lat, start.elapsed());
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    for q in 0..queries.min(5000) {
        let t = Instant::now();
        run(format!("INSERT INTO accounts VALUES ({}, 'new', 1)", rows + q)).await?;
        lat.push(t.elapsed());
    }
    report("single-row INSERT (plan + apply)", lat, start.elapsed());
    let mut lat = Vec::new();
    let start = Instant::now();
    for q in 0..queries.min(5000) {
        let t = Instant::now();
        run(format!("UPDATE accounts SET balance = balance + 1 WHERE id = {}", (q * 13) % rows)).await?;
        lat.push(t.elapsed());
    }
    report("point UPDATE (plan + apply)", lat, start.elapsed());
    Ok(())
}

async fn http(target: String, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let sql = move |s: String| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let r = client.post(format!("http://{target}/v1/sql")).json(&serde_json::json!({"sql": s})).send().await?;
            anyhow::ensure!(r.status().is_success(), "{}", r.text().await?);
            anyhow::Ok(())
        }
    };
    sql("DROP TABLE IF EXISTS bench; CREATE TABLE bench (id BIGINT PRIMARY KEY, payload TEXT, n BIGINT)".into())
        .await?;
    let inserted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (phase, write) in [("INSERT one row per request", true), ("point SELECT by primary key", false)] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let sql = sql.clone();
            let inserted = inserted.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let s = if write {
                        format!(
                            "INSERT INTO bench VALUES ({}, '{}', {i})",
                            c as u64 * 1_000_000_000 + i,
                            "x".repeat(100)
                        )
                    } else {
                        let n = inserted.load(std::sync::atomic::Ordering::Relaxed).max(1);
                        format!("SELECT * FROM bench WHERE id = {}", (c as u64 % 4) * 1_000_000_000 + i % n.min(1000))
                    };
                    if sql(s).await.is_ok() {
                        lat.push(t.elapsed());
                        if write {
                            inserted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        report(&format!("{phase} ({clients} clients)"), all, start.elapsed());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Local { rows, queries } => local(rows, queries).await,
        Mode::Http { target, clients, seconds } => http(target, clients, seconds).await,
    }
}
