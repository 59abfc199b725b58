//! KV operations shared by the HTTP and gRPC surfaces: validation, proposing through the
//! replica, decoding the replicated result, and reads at a consistency level.

use quorumdb_replication::kv::{self, KvCommand, KvResponse, MAX_KEY_LEN};
use quorumdb_replication::{CommandResult, Consistency, ReadInfo, Replica, ReplicationError};

use crate::error::ServerError;

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
    check_key(cmd.key())?;
    metrics::counter!("quorumdb_kv_writes_total").increment(1);
    match replica.write(cmd.encode()).await? {
        CommandResult::Applied(bytes) => KvResponse::decode(&bytes).map_err(|e| ReplicationError::Codec(e).into()),
        CommandResult::Rejected(err) => Err(ServerError::BadRequest(String::from_utf8_lossy(&err).into_owned())),
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
    Ok((kv::get(replica.reader(), key)?, info))
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
