//! SQL benchmarks.
//!
//! In-process (no network, no Raft; the engine over the in-memory state):
//! `cargo run --release -p quorumdb-examples --bin sql_bench -- local --rows 100000 --queries 20000`
//! prints the latency of primary-key point SELECTs (fast path), the same lookup planned by
//! DataFusion, and single-row INSERT planning+apply.
//!
//! Against a cluster over HTTP (`POST /v1/sql`):
//! `cargo run --release -p quorumdb-examples --bin sql_bench -- http --target 127.0.0.1:7001 --rows 1000000`
//! loads rows with batched INSERTs (rows/s), then measures single-row INSERTs and primary-key
//! SELECTs at each consistency level (ops/s, p50/p99), then times an aggregate and a join over
//! all rows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure ends the run with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use quorumdb_examples::percentile_ms;
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
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds per closed-loop phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rows loaded with batched INSERTs (then aggregated and joined).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
    },
}

fn report(name: &str, mut lat: Vec<Duration>, elapsed: Duration) {
    lat.sort();
    println!(
        "{name:<40} {:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        lat.len()
    );
}

async fn local(rows: usize, queries: usize) -> anyhow::Result<()> {
    let state = MemoryState::new();
    let engine = Engine::new(state.clone(), state.vectors());
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
    // The bulk-load entry point (what `POST /v1/tables/{t}/rows` runs): 10k-row Arrow
    // batches of text, converted and checked as INSERT would.
    run("CREATE TABLE bulk (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT)".into()).await?;
    let t = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
        use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
        let col = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|&i| f(i))))
        };
        let batch = RecordBatch::try_from_iter([
            ("id", col(&|i| i.to_string())),
            ("owner", col(&|i| format!("owner{i}"))),
            ("balance", col(&|i| (i * 7 % 1000).to_string())),
        ])?;
        engine.insert_batches("bulk", &[batch], state.as_ref()).await?;
    }
    println!(
        "loaded {rows} rows with Engine::insert_batches (10k-row batches): {:.0} rows/s",
        rows as f64 / t.elapsed().as_secs_f64()
    );

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

/// Posts one SQL request; the error body when it fails.
async fn post(client: &reqwest::Client, target: &str, level: &str, sql: String) -> anyhow::Result<()> {
    let r = client
        .post(format!("http://{target}/v1/sql?consistency={level}"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "{}", r.text().await?);
    Ok(())
}

/// Runs `make(client, i)` requests from `clients` tasks for `seconds`; reports ops/s.
async fn closed_loop<F>(name: &str, target: &str, level: &'static str, clients: usize, seconds: u64, make: F)
where
    F: Fn(usize, u64) -> String + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (make, target) = (make.clone(), target.to_string());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match post(&client, &target, level, make(c, i)).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    report(&format!("{name} [{level}, {clients} clients]"), all, start.elapsed());
    if errors > 0 {
        println!("    ({errors} failed requests)");
    }
}

async fn http(target: String, clients: usize, seconds: u64, rows: u64, batch: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    post(
        &client,
        &target,
        "linearizable",
        "DROP TABLE IF EXISTS bench; DROP TABLE IF EXISTS dim; \
         CREATE TABLE bench (id BIGINT PRIMARY KEY, payload TEXT, n BIGINT); \
         CREATE TABLE dim (id BIGINT PRIMARY KEY, name TEXT)"
            .into(),
    )
    .await?;
    let dims: Vec<String> = (0..1000).map(|i| format!("({i}, 'group{}')", i % 37)).collect();
    post(&client, &target, "linearizable", format!("INSERT INTO dim VALUES {}", dims.join(", "))).await?;

    // Batched INSERTs: `rows` rows in statements of `batch` rows, from `clients` tasks.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, target) = (next.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let first = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if first >= rows {
                    return anyhow::Ok(());
                }
                let values: Vec<String> = (first..(first + batch).min(rows))
                    .map(|i| format!("({i}, 'payload-{i:08}', {})", i * 7919 % 100_003))
                    .collect();
                post(&client, &target, "linearizable", format!("INSERT INTO bench VALUES {}", values.join(", ")))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let el = start.elapsed();
    println!(
        "batched INSERT ({batch} rows/statement, {clients} clients)   {:>9.0} rows/s   ({rows} rows in {:.1} s)",
        rows as f64 / el.as_secs_f64(),
        el.as_secs_f64()
    );

    closed_loop("single-row INSERT", &target, "linearizable", clients, seconds, move |c, i| {
        format!("INSERT INTO bench VALUES ({}, 'x', {i})", 1_000_000_000 + c as u64 * 10_000_000 + i)
    })
    .await;
    for level in ["linearizable", "lease", "stale"] {
        closed_loop("point SELECT by primary key", &target, level, clients, seconds, move |c, i| {
            format!("SELECT * FROM bench WHERE id = {}", (c as u64 * 7_777 + i * 104_729) % rows)
        })
        .await;
    }
    for (name, q) in [
        (
            "aggregate over all rows",
            "SELECT n % 100 AS g, count(*), sum(n), max(payload) FROM bench GROUP BY g ORDER BY g",
        ),
        (
            "join + aggregate over all rows",
            "SELECT d.name, count(*) AS c, avg(b.n) FROM bench b JOIN dim d ON d.id = b.n % 1000 GROUP BY d.name ORDER BY c DESC LIMIT 5",
        ),
    ] {
        let t = Instant::now();
        post(&client, &target, "linearizable", q.into()).await?;
        println!("{name:<40} {:>9.3} s   ({} rows in bench)", t.elapsed().as_secs_f64(), rows);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Local { rows, queries } => local(rows, queries).await,
        Mode::Http { target, clients, seconds, rows, batch } => http(target, clients, seconds, rows, batch).await,
    }
}
