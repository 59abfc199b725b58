//! The SQL logic tests (`tests/slt/*.slt`) on the SQL engine over an in-memory state: the same
//! files the cluster runner (`tests/tests/slt/main.rs`) sends through `POST /v1/sql`, with the
//! same rendering (`quorumdb_sql::json` then `slt/harness.rs`), in seconds.
//!
//! ```text
//! cargo test -p quorumdb-sql --test slt                 # every file
//! cargo test -p quorumdb-sql --test slt -- dml nulls    # files whose name contains "dml" or "nulls"
//! cargo test -p quorumdb-sql --test slt -- --complete dml   # rewrite dml.slt's expected output
//! ```
//!
//! `--complete` (or `SLT_COMPLETE=1`) rewrites each selected file with what the engine answers;
//! review the diff before committing it. Records guarded with `onlyif nodes3` (cluster-only
//! behaviour) are skipped here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "slt/harness.rs"]
mod harness;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use harness::{SltDb, SqlFailure};
use quorumdb_sql::memory::MemoryState;
use quorumdb_sql::{Engine, SqlError};
use sqllogictest::Runner;

/// One database: the engine on an in-memory state, shared by the file's connections.
struct MemoryDb {
    state: Arc<MemoryState>,
    engine: Arc<Engine>,
}

fn failure(e: SqlError) -> SqlFailure {
    SqlFailure { code: Some(e.sqlstate().to_string()), message: e.to_string(), node: None }
}

#[async_trait::async_trait]
impl harness::Answer for MemoryDb {
    async fn results(&mut self, sql: &str) -> Result<Vec<serde_json::Value>, SqlFailure> {
        let parsed = self.engine.parse(sql, &[]).map_err(failure)?;
        let results = self.engine.execute(parsed, self.state.as_ref()).await.map_err(failure)?;
        let json = quorumdb_sql::json::results_json(&results).map_err(failure)?;
        Ok(json.get("results").and_then(|r| r.as_array()).cloned().unwrap_or_default())
    }
}

async fn run_file(path: std::path::PathBuf, complete: bool, color: bool) -> Result<(), String> {
    let state = MemoryState::new();
    let engine = Arc::new(Engine::new(state.clone(), state.vectors()));
    let mut runner = Runner::new(move || {
        let db = SltDb(MemoryDb { state: state.clone(), engine: engine.clone() });
        async move { Ok::<_, SqlFailure>(db) }
    });
    runner.add_label("quorumdb");
    runner.add_label("memory");
    harness::check_or_complete(&mut runner, &path, complete, color).await
}

fn main() -> ExitCode {
    let args = harness::parse_args();
    let color = std::io::stdout().is_terminal();
    let variants = [("memory".to_string(), ())];
    harness::run_all(&args, &variants, Duration::from_secs(120), |path, (), complete| run_file(path, complete, color))
}
