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
//! How an answer becomes sqllogictest output:
//! - the batch's last result decides: if it returned rows (it has `columns`), those rows are the
//!   output; otherwise the output is "statement complete" with the sum of every result's
//!   `rows_affected` (what `statement count N` checks);
//! - cells: `null` → `NULL`, `""` → `(empty)`, other strings as they are, booleans `true`/`false`,
//!   numbers as their JSON text, arrays and objects as compact JSON;
//! - errors display as `[SQLSTATE] message`, so `statement error 23505` matches by regex, and
//!   `statement error (23505)` matches the SQLSTATE exactly.
//!
//! Records may be guarded with `onlyif quorumdb` / `skipif quorumdb` (engine-specific output,
//! such as Arrow type names in `information_schema`), and `onlyif nodes1` / `onlyif nodes3`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumdb_tests::TestCluster;
use serde_json::{Value, json};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

/// Cluster sizes every file runs against.
const SIZES: [u64; 2] = [1, 3];
/// How long one file may take on one cluster, cluster start included.
const FILE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request answered with a retryable error (no leader yet, say) is retried.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// An error from the SQL API, or from reaching it.
#[derive(Debug)]
struct SqlError {
    /// The PostgreSQL SQLSTATE, when the server sent one.
    code: Option<String>,
    message: String,
    /// The node that answered (1-based position in the round-robin).
    node: usize,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "[{code}] {} (node {})", self.message, self.node),
            None => write!(f, "{} (node {})", self.message, self.node),
        }
    }
}

impl std::error::Error for SqlError {}

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
        let fail = |code: Option<String>, message: String| SqlError { code, message, node: node + 1 };
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
impl AsyncDB for HttpDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let node = self.next % self.addrs.len();
        self.next += 1;
        let deadline = Instant::now() + RETRY_FOR;
        let results = loop {
            match self.send(node, sql).await {
                Ok(results) => break results,
                Err((e, true)) if Instant::now() < deadline => {
                    if self.trace {
                        eprintln!("[slt] retrying after a retryable error: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((e, _)) => return Err(e),
            }
        };
        Ok(to_output(&results))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quorumdb"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &SqlError) -> Option<String> {
        err.code.clone()
    }
}

/// The sqllogictest output of a batch's results (see the module docs).
fn to_output(results: &[Value]) -> DBOutput<DefaultColumnType> {
    if let Some(last) = results.last()
        && let Some(Value::Array(columns)) = last.get("columns")
    {
        let types = columns.iter().map(|c| column_type(c.get("type").and_then(Value::as_str).unwrap_or(""))).collect();
        let rows = match last.get("rows") {
            Some(Value::Array(rows)) => rows
                .iter()
                .map(|row| match row {
                    Value::Array(cells) => cells.iter().map(cell).collect(),
                    other => vec![cell(other)],
                })
                .collect(),
            _ => Vec::new(),
        };
        return DBOutput::Rows { types, rows };
    }
    let affected = results.iter().filter_map(|r| r.get("rows_affected").and_then(Value::as_u64)).sum();
    DBOutput::StatementComplete(affected)
}

/// The sqllogictest type letter of a SQL type name (only shown on mismatch; types aren't checked).
fn column_type(sql_type: &str) -> DefaultColumnType {
    let t = sql_type.to_ascii_lowercase();
    if ["bigint", "int", "smallint", "integer", "tinyint"].iter().any(|p| t.starts_with(p)) {
        DefaultColumnType::Integer
    } else if ["double", "real", "float", "numeric", "decimal"].iter().any(|p| t.starts_with(p)) {
        DefaultColumnType::FloatingPoint
    } else if ["text", "varchar", "char", "character", "string", "utf8"].iter().any(|p| t.starts_with(p)) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

/// One cell as sqllogictest text.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) if s.is_empty() => "(empty)".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// What the command line asks for. libtest options that make no sense here are accepted and ignored,
/// since `cargo test --workspace -- --test-threads=1` passes them to every test binary.
#[derive(Default)]
struct Args {
    filters: Vec<String>,
    skips: Vec<String>,
    list: bool,
    ignored_only: bool,
}

fn parse_args() -> Args {
    // libtest options that take a value as the next argument (when not written `--opt=value`).
    const WITH_VALUE: [&str; 7] =
        ["--test-threads", "--skip", "--color", "--format", "--logfile", "-Z", "--shuffle-seed"];
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => args.list = true,
            "--ignored" => args.ignored_only = true,
            "--skip" => args.skips.extend(it.next()),
            a if a.starts_with("--skip=") => args.skips.push(a["--skip=".len()..].to_string()),
            a if WITH_VALUE.contains(&a) => {
                it.next();
            }
            a if a.starts_with('-') => {}
            _ => args.filters.push(arg),
        }
    }
    args
}

/// Every `*.slt` file under `dir`, as (name relative to `dir`, path), sorted by name.
fn find_files(dir: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "slt") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    let mut files: Vec<_> =
        paths.into_iter().map(|p| (p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().into_owned(), p)).collect();
    files.sort();
    files
}

/// Runs one file against a fresh cluster of `nodes` nodes; `Err` holds the printable failure.
async fn run_file(path: PathBuf, nodes: u64, color: bool, trace: bool) -> Result<(), String> {
    let mut cluster = TestCluster::start(nodes).await;
    cluster.wait_leader().await;
    let addrs: Arc<Vec<String>> = Arc::new(cluster.running().into_iter().map(|id| cluster.addr(id)).collect());
    let http = cluster.http.clone();
    let mut runner = Runner::new(move || {
        let db = HttpDb { http: http.clone(), addrs: addrs.clone(), next: 0, trace };
        async move { Ok::<_, SqlError>(db) }
    });
    runner.add_label("quorumdb");
    runner.add_label(&format!("nodes{nodes}"));
    let result = runner.run_file_async(&path).await;
    cluster.stop_all().await;
    result.map_err(|e| e.display(color).to_string())
}

fn main() -> ExitCode {
    let args = parse_args();
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/slt"));
    let files: Vec<_> = find_files(&dir)
        .into_iter()
        .filter(|(name, _)| args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str())))
        .filter(|(name, _)| !args.skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    if args.list {
        for (name, _) in &files {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    if args.ignored_only {
        println!("slt: no ignored tests");
        return ExitCode::SUCCESS;
    }
    let sizes: Vec<u64> = match std::env::var("SLT_NODES") {
        Ok(s) => s.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    };
    let color = std::io::stdout().is_terminal();
    let trace = std::env::var_os("SLT_TRACE").is_some_and(|v| !v.is_empty() && v != "0");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    println!("\nrunning {} sqllogictest files x {} cluster sizes from {}", files.len(), sizes.len(), dir.display());
    let mut failures = Vec::new();
    let mut passed = 0;
    for (name, path) in &files {
        for &nodes in &sizes {
            let started = Instant::now();
            let path = path.clone();
            let outcome = runtime.block_on(async move {
                let mut task = tokio::spawn(run_file(path, nodes, color, trace));
                match tokio::time::timeout(FILE_TIMEOUT, &mut task).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(format!("the run panicked: {join}")),
                    Err(_) => {
                        task.abort();
                        Err(format!("timed out after {} s", FILE_TIMEOUT.as_secs()))
                    }
                }
            });
            let secs = started.elapsed().as_secs_f64();
            let label = format!("{name} [{nodes} node{}]", if nodes == 1 { "" } else { "s" });
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!("slt {label} ... ok ({secs:.1} s)");
                }
                Err(e) => {
                    println!("slt {label} ... FAILED ({secs:.1} s)");
                    failures.push((label, e));
                }
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));

    if !failures.is_empty() {
        println!("\nfailures:");
        for (label, e) in &failures {
            println!("\n---- {label} ----\n{e}");
        }
        println!("\nfailed:");
        for (label, _) in &failures {
            println!("    {label}");
        }
    }
    let result = if failures.is_empty() { "ok" } else { "FAILED" };
    println!("\nslt result: {result}. {passed} passed; {} failed\n", failures.len());
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
