//! The engine on an in-memory state, as the `sql` crate's integration tests drive it.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quorumdb_sql::catalog::TableDef;
use quorumdb_sql::command::SqlCommand;
use quorumdb_sql::memory::MemoryState;
use quorumdb_sql::{Engine, SqlError, StatementResult, TAG};
use quorumdb_state::{CommandResult, Proposer, Rejection, tagged};

pub struct Db {
    pub state: Arc<MemoryState>,
    pub engine: Engine,
}

impl Db {
    pub fn new() -> Self {
        let state = MemoryState::new();
        let engine = Engine::new(state.clone(), state.vectors());
        Self { state, engine }
    }

    pub async fn run(&self, sql: &str) -> Result<Vec<StatementResult>, SqlError> {
        let parsed = self.engine.parse(sql, &[])?;
        self.engine.execute(parsed, self.state.as_ref()).await
    }

    pub async fn ok(&self, sql: &str) -> Vec<StatementResult> {
        self.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The last statement's rows, pretty-printed.
    pub async fn rows(&self, sql: &str) -> String {
        match self.ok(sql).await.pop() {
            Some(StatementResult::Rows { batches, .. }) => pretty_format_batches(&batches).unwrap().to_string(),
            other => panic!("{sql}: no rows: {other:?}"),
        }
    }

    /// The SQLSTATE of a statement that must fail.
    pub async fn err(&self, sql: &str) -> &'static str {
        match self.run(sql).await {
            Ok(_) => panic!("{sql}: expected an error"),
            Err(e) => {
                eprintln!("{sql}: {e}");
                e.sqlstate()
            }
        }
    }

    pub async fn load(&self, table: &str, batches: &[RecordBatch]) -> Result<u64, SqlError> {
        self.engine.insert_batches(table, batches, self.state.as_ref()).await
    }

    /// Proposes a command as the engine would (in the current format); apply's rejection comes
    /// back as the error it decodes to.
    pub async fn propose(&self, cmd: &SqlCommand) -> Result<(), SqlError> {
        let bytes = cmd.encode(quorumdb_state::format::CURRENT)?;
        match self.state.propose(tagged(TAG, &bytes)).await? {
            CommandResult::Applied(_) => Ok(()),
            CommandResult::Rejected(r) => Err(SqlError::from_rejection(&Rejection::decode(&r))),
        }
    }

    pub fn def(&self, table: &str) -> TableDef {
        self.engine.catalog().unwrap().tables[table].clone()
    }
}
