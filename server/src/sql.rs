//! SQL on a node: runs requests on the engine at a consistency level (the replica is the
//! engine's proposer; a request with an id proposes through [`RequestProposer`], applied at
//! most once). Results become JSON in `quorumdb_sql::json`.

use std::sync::Arc;

use quorumdb_replication::{Consistency, ReadInfo, Replica, RequestProposer};
use quorumdb_sql::{Engine, Parsed, Session, StatementResult};
use quorumdb_state::system::RequestId;
use serde_json::Value;

use crate::error::ServerError;

/// Runs a request: reads wait for `level` first; writes go through Raft.
pub async fn execute(
    engine: &Arc<Engine>,
    replica: &Replica,
    sql: &str,
    params: &[Value],
    level: Consistency,
    request: Option<&RequestId>,
    user: Option<&str>,
) -> Result<(Vec<StatementResult>, Option<ReadInfo>), ServerError> {
    let parsed = engine.parse(sql, params)?;
    run(engine, replica, parsed, level, &mut Session::default(), request, user).await
}

/// Runs a parsed request in `session` (HTTP: a fresh one; pgwire: the connection's): reads
/// wait for `level` first; writes go through Raft. `user` (the login, when the cluster requires
/// one) is checked by the engine against what the statements need, on the catalog they run on.
pub async fn run(
    engine: &Engine,
    replica: &Replica,
    parsed: Parsed,
    level: Consistency,
    session: &mut Session,
    request: Option<&RequestId>,
    user: Option<&str>,
) -> Result<(Vec<StatementResult>, Option<ReadInfo>), ServerError> {
    let info = if parsed.read_only { Some(replica.read_barrier(level).await?) } else { None };
    metrics::counter!("quorumdb_sql_requests_total", "kind" => if parsed.read_only { "read" } else { "write" })
        .increment(1);
    let results = engine.execute_in(parsed, &RequestProposer { replica, request }, session, user).await?;
    Ok((results, info))
}
