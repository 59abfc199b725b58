//! sqllogictest suite: every `*.slt` file under `tests/slt/` runs against a fresh 1-node and a
//! fresh 3-node in-process cluster over the HTTP SQL API (`POST /v1/sql`).
//!
//! In the 3-node cluster the records go round-robin to every node, so followers are checked too:
//! they forward writes to the leader and serve linearizable reads.
//!
//! ```text
//! cargo test -p quorumdb-tests --test slt                 # every file
//! cargo test -p quorumdb-tests --test slt -- dml nulls    # files whose name contains "dml" or "nulls"
//! SLT_NODES=3 cargo test -p quorumdb-tests --test slt     # only the 3-node runs
//! SLT_TRACE=1 cargo test -p quorumdb-tests --test slt -- ddl   # print every request and answer
//! ```
//!
//! How an answer becomes sqllogictest output is shared with the in-memory engine's runner
//! (`sql/tests/slt.rs`, the fast one): see `sql/tests/slt/harness.rs`.
//!
//! Records may be guarded with `onlyif quorumdb` / `skipif quorumdb` (engine-specific output,
//! such as Arrow type names in `information_schema`), and `onlyif nodes1` / `onlyif nodes3`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../../sql/tests/slt/harness.rs"]
mod harness;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{SltDb, SqlFailure as SqlError};
use quorumdb_tests::TestCluster;
use serde_json::{Value, json};
use sqllogictest::Runner;

/// Cluster sizes every file runs against.
const SIZES: [u64; 2] = [1, 3];
/// How long one file may take on one cluster, cluster start included.
const FILE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request answered with a retryable error (no leader yet, say) is retried.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// One sqllogictest connection: stateless HTTP requests, spread round-robin over the nodes.
struct HttpDb {
    http: reqwest::Client,
    addrs: Arc<Vec<String>>,
    next: usize,
    trace: bool,
}

impl HttpDb {
    /// Sends `sql` to one node; `Ok(results)` or the error the node answered with.
    async fn send(&self, node: usize, sql: &str) -> Result<Vec<Value>, (SqlError, bool)> {
        let addr = &self.addrs[node];
        let fail = |code: Option<String>, message: String| SqlError { code, message, node: Some(node + 1) };
        let resp = self
            .http
            .post(format!("http://{addr}/v1/sql"))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| (fail(None, format!("request to {addr} failed: {e}")), false))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| (fail(None, format!("reading the answer failed: {e}")), false))?;
        if self.trace {
            eprintln!("[slt] node {} <- {sql}\n[slt] node {} -> {status} {text}", node + 1, node + 1);
        }
        let body: Value =
            serde_json::from_str(&text).map_err(|_| (fail(None, format!("HTTP {status}, not JSON: {text}")), false))?;
        if status.is_success() {
            return match body.get("results") {
                Some(Value::Array(results)) => Ok(results.clone()),
                _ => Err((fail(None, format!("HTTP {status} without a `results` array: {text}")), false)),
            };
        }
        let Some(err) = body.get("error") else {
            return Err((fail(None, format!("HTTP {status} without an `error` object: {text}")), false));
        };
        let code = err.get("code").and_then(Value::as_str).map(str::to_string);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
        let retryable = err.get("retryable").and_then(Value::as_bool).unwrap_or(false);
        Err((fail(code, message), retryable))
    }
}

#[async_trait::async_trait]
impl harness::Answer for HttpDb {
    async fn results(&mut self, sql: &str) -> Result<Vec<Value>, SqlError> {
        let node = self.next % self.addrs.len();
        self.next += 1;
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            match self.send(node, sql).await {
                Ok(results) => return Ok(results),
                Err((e, true)) if Instant::now() < deadline => {
                    if self.trace {
                        eprintln!("[slt] retrying after a retryable error: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// Runs one file against a fresh cluster of `nodes` nodes; `Err` holds the printable failure.
async fn run_file(path: PathBuf, nodes: u64, complete: bool, color: bool, trace: bool) -> Result<(), String> {
    let mut cluster = TestCluster::start(nodes).await;
    cluster.wait_leader().await;
    cluster.wait_format().await;
    let addrs: Arc<Vec<String>> = Arc::new(cluster.running().into_iter().map(|id| cluster.addr(id)).collect());
    let http = cluster.http.clone();
    let mut runner = Runner::new(move || {
        let db = SltDb(HttpDb { http: http.clone(), addrs: addrs.clone(), next: 0, trace });
        async move { Ok::<_, SqlError>(db) }
    });
    runner.add_label("quorumdb");
    runner.add_label(&format!("nodes{nodes}"));
    let result = harness::check_or_complete(&mut runner, &path, complete, color).await;
    cluster.stop_all().await;
    result
}

fn main() -> ExitCode {
    let args = harness::parse_args();
    let sizes: Vec<u64> = match std::env::var("SLT_NODES") {
        Ok(s) => s.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    };
    let variants: Vec<(String, u64)> =
        sizes.iter().map(|&n| (format!("{n} node{}", if n == 1 { "" } else { "s" }), n)).collect();
    let color = std::io::stdout().is_terminal();
    let trace = std::env::var_os("SLT_TRACE").is_some_and(|v| !v.is_empty() && v != "0");
    harness::run_all(&args, &variants, FILE_TIMEOUT, |path, nodes, complete| {
        run_file(path, nodes, complete, color, trace)
    })
}
