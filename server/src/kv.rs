//! KV operations shared by the HTTP, gRPC and RESP surfaces: validation, proposing through the
//! replica, decoding the replicated result, reads at a consistency level (a key whose expiry
//! passed on this node's clock reads as absent, on every surface), and the leader's purge of
//! expired keys.

use quorumdb_replication::kv::{self, KvCommand, KvResponse, MAX_KEY_LEN};
use quorumdb_replication::{CommandResult, Consistency, Proposer, ReadInfo, Replica, ReplicationError};
use quorumdb_state::Rejection;
use quorumdb_state::system::RequestId;

use crate::error::ServerError;

/// The most bytes one KV write (all its keys and values) may carry, on every surface.
pub const MAX_COMMAND_BYTES: usize = 8 << 20;

fn check_key(key: &[u8]) -> Result<(), ServerError> {
    if key.is_empty() {
        return Err(ServerError::BadRequest("the key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ServerError::BadRequest(format!("the key is {} bytes; the limit is {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

/// Proposes a KV command and returns its replicated response.
pub async fn write(replica: &Replica, cmd: KvCommand) -> Result<KvResponse, ServerError> {
    write_as(replica, cmd, None).await
}

/// [`write`] as part of a client request with an id: applied at most once.
pub async fn write_as(replica: &Replica, cmd: KvCommand, req: Option<&RequestId>) -> Result<KvResponse, ServerError> {
    for key in cmd.keys() {
        check_key(key)?;
    }
    metrics::counter!("quorumdb_kv_writes_total").increment(1);
    let encoded = cmd.encode(replica.format()).map_err(ReplicationError::from)?;
    if encoded.0.len() > MAX_COMMAND_BYTES {
        return Err(ServerError::BadRequest(format!(
            "the write is {} bytes; one KV write may carry at most {} MiB of keys and values",
            encoded.0.len(),
            MAX_COMMAND_BYTES >> 20
        )));
    }
    match replica.write_as(encoded, req).await? {
        CommandResult::Applied(bytes) => Ok(KvResponse::decode(&bytes).map_err(ReplicationError::from)?),
        CommandResult::Rejected(bytes) => Err(ServerError::Rejected(Rejection::decode(&bytes))),
    }
}

/// Reads a key at `level`.
pub async fn get(
    replica: &Replica,
    key: &[u8],
    level: Consistency,
) -> Result<(Option<Vec<u8>>, ReadInfo), ServerError> {
    check_key(key)?;
    metrics::counter!("quorumdb_kv_reads_total").increment(1);
    let info = replica.read_barrier(level).await?;
    Ok((kv::get(replica.reader(), key, kv::now_ms())?, info))
}

/// How often the leader looks for expired keys to purge.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Most keys one purge command removes, so it stays a small log entry.
const PURGE_LIMIT: u32 = 1_000;

/// While this node leads, proposes [`KvCommand::PurgeExpired`] whenever a stored key's expiry
/// has passed, so expired keys do not pile up. Reads never depend on it: they hide expired
/// keys themselves. Runs until `stop` turns true.
pub async fn purge_expired(replica: Replica, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
        if replica.metrics().state != openraft::ServerState::Leader {
            continue;
        }
        let now = kv::now_ms();
        match kv::next_expiry(replica.reader()) {
            Ok(Some(at)) if at <= now => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the KV expiry index");
                continue;
            }
        }
        match write(&replica, KvCommand::PurgeExpired { now_ms: now, limit: PURGE_LIMIT }).await {
            Ok(KvResponse::Count { n }) => {
                metrics::counter!("quorumdb_kv_expired_purged_total").increment(n);
                tracing::debug!(n, "purged expired keys");
            }
            Ok(other) => tracing::warn!(?other, "unexpected answer to a purge"),
            Err(e) => tracing::debug!(error = %e, "purging expired keys failed; will retry"),
        }
    }
}

/// Parses a consistency level and optional staleness bound from request parameters.
pub fn consistency(level: Option<&str>, max_staleness_ms: Option<u64>) -> Result<Consistency, ServerError> {
    let mut c: Consistency = level.unwrap_or("linearizable").parse()?;
    if let Consistency::Stale { max_staleness } = &mut c {
        *max_staleness = max_staleness_ms.filter(|ms| *ms > 0).map(std::time::Duration::from_millis);
    } else if max_staleness_ms.is_some() {
        return Err(ServerError::BadRequest("max_staleness_ms applies only to consistency=stale".into()));
    }
    Ok(c)
}
