//! What both sqllogictest engines share: how an answer (the HTTP API's JSON results) becomes
//! sqllogictest output, the command line, and the loop that runs every file on every variant.
//!
//! Two engines run the same `tests/slt/*.slt` files: `sql/tests/slt.rs` on the SQL engine over
//! an in-memory state (seconds; `--complete` rewrites expected output), and
//! `tests/tests/slt/main.rs` on real 1- and 3-node clusters over `POST /v1/sql`. This file is
//! compiled into both (`#[path]`), so their output cannot drift apart.
//!
//! - The batch's last result decides: if it returned rows (it has `columns`), those rows are
//!   the output; otherwise the output is "statement complete" with the sum of every result's
//!   `rows_affected` (what `statement count N` checks).
//! - Cells: `null` → `NULL`, `""` → `(empty)`, other strings as they are, booleans
//!   `true`/`false`, numbers as their JSON text, arrays and objects as compact JSON.
//! - Errors display as `[SQLSTATE] message`, so `statement error 23505` matches by regex, and
//!   `statement error (23505)` matches the SQLSTATE exactly.
#![allow(dead_code)] // each engine uses its own subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqllogictest::{AsyncDB, ColumnType, DBOutput};

/// Where the `.slt` files live.
pub fn slt_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/slt"))
}

/// An error an engine answered with, or one reaching it.
#[derive(Debug)]
pub struct SqlFailure {
    /// The PostgreSQL SQLSTATE, when there is one.
    pub code: Option<String>,
    pub message: String,
    /// Which node answered (1-based), in a cluster.
    pub node: Option<usize>,
}

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = &self.code {
            write!(f, "[{code}] ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(node) = self.node {
            write!(f, " (node {node})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlFailure {}

/// A column's type letter, as written after `query`: `I` integer, `R` floating point and
/// NUMERIC, `T` text, `B` boolean, `?` anything else. Kept as written when a file is read, so
/// `--complete` rewrites a file without changing its letters. Letters are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SltType(char);

impl ColumnType for SltType {
    fn from_char(value: char) -> Option<Self> {
        Some(Self(value))
    }

    fn to_char(&self) -> char {
        self.0
    }
}

/// An engine the files run on: it answers one record's SQL with the API's `results` array.
#[async_trait::async_trait]
pub trait Answer: Send {
    async fn results(&mut self, sql: &str) -> Result<Vec<Value>, SqlFailure>;
}

/// A sqllogictest connection to an engine: the one `AsyncDB` both runners use.
pub struct SltDb<E>(pub E);

#[async_trait::async_trait]
impl<E: Answer> AsyncDB for SltDb<E> {
    type Error = SqlFailure;
    type ColumnType = SltType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>, SqlFailure> {
        Ok(to_output(&self.0.results(sql).await?))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quorumdb"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &SqlFailure) -> Option<String> {
        err.code.clone()
    }
}

/// The sqllogictest output of a batch's results (see the module docs).
pub fn to_output(results: &[Value]) -> DBOutput<SltType> {
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

/// The type letter of a SQL type name (the API's `columns[].type`).
fn column_type(sql_type: &str) -> SltType {
    let t = sql_type.to_ascii_lowercase();
    SltType(if ["bigint", "int", "smallint", "integer", "tinyint"].iter().any(|p| t.starts_with(p)) {
        'I'
    } else if ["double", "real", "float", "numeric", "decimal"].iter().any(|p| t.starts_with(p)) {
        'R'
    } else if ["text", "varchar", "char", "character", "string", "utf8"].iter().any(|p| t.starts_with(p)) {
        'T'
    } else if t.starts_with("bool") {
        'B'
    } else {
        '?'
    })
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

/// What the command line asks for. libtest options that make no sense here are accepted and
/// ignored, since `cargo test --workspace -- --test-threads=1` passes them to every binary.
#[derive(Default)]
pub struct Args {
    pub filters: Vec<String>,
    pub skips: Vec<String>,
    pub list: bool,
    pub ignored_only: bool,
    /// Rewrite each file's expected output with what the engine answers.
    pub complete: bool,
}

pub fn parse_args() -> Args {
    // libtest options that take a value as the next argument (when not written `--opt=value`).
    const WITH_VALUE: [&str; 7] =
        ["--test-threads", "--skip", "--color", "--format", "--logfile", "-Z", "--shuffle-seed"];
    let mut args = Args {
        complete: std::env::var_os("SLT_COMPLETE").is_some_and(|v| !v.is_empty() && v != "0"),
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => args.list = true,
            "--ignored" => args.ignored_only = true,
            "--complete" => args.complete = true,
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
pub fn find_files(dir: &Path) -> Vec<(String, PathBuf)> {
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

/// Runs every selected file on every variant (`label`, value), each under `timeout`, prints a
/// libtest-like report and returns the exit code. `run` gets the file, the variant's value and
/// whether to complete (rewrite) the file instead of checking it.
pub fn run_all<V: Copy + Send + 'static, F, Fut>(
    args: &Args,
    variants: &[(String, V)],
    timeout: Duration,
    run: F,
) -> ExitCode
where
    F: Fn(PathBuf, V, bool) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let dir = slt_dir();
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
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        println!("slt: cannot start a tokio runtime");
        return ExitCode::FAILURE;
    };
    println!("\nrunning {} sqllogictest files x {} variants from {}", files.len(), variants.len(), dir.display());
    let mut failures = Vec::new();
    let mut passed = 0;
    for (name, path) in &files {
        for (label, variant) in variants {
            let started = Instant::now();
            let fut = run(path.clone(), *variant, args.complete);
            let outcome = runtime.block_on(async move {
                let mut task = tokio::spawn(fut);
                match tokio::time::timeout(timeout, &mut task).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(format!("the run panicked: {join}")),
                    Err(_) => {
                        task.abort();
                        Err(format!("timed out after {} s", timeout.as_secs()))
                    }
                }
            });
            let secs = started.elapsed().as_secs_f64();
            let label = format!("{name} [{label}]");
            match outcome {
                Ok(()) => {
                    passed += 1;
                    let what = if args.complete { "completed" } else { "ok" };
                    println!("slt {label} ... {what} ({secs:.1} s)");
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

/// Checks `path` with `runner`, or rewrites its expected output when `complete`.
pub async fn check_or_complete<D, M>(
    runner: &mut sqllogictest::Runner<D, M>,
    path: &Path,
    complete: bool,
    color: bool,
) -> Result<(), String>
where
    D: sqllogictest::AsyncDB<ColumnType = SltType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner.run_file_async(path).await.map_err(|e| e.display(color).to_string())
    }
}
