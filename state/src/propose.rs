//! How an application gets commands into the log and waits for reads: the [`Proposer`] the
//! replication layer implements (and an in-memory stand-in does in tests), and the
//! consistency levels reads are served at.

use std::time::Duration;

use crate::command::{Command, CommandResult};
use crate::error::ReplicationError;
use crate::format::FormatVersion;

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// ReadIndex: the leader confirms leadership with a quorum; the serving node waits until
    /// it has applied up to the leader's commit index. Works on followers.
    Linearizable,
    /// Leader lease: no quorum round-trip while the leader's lease is valid.
    Lease,
    /// This node's state as it is, optionally refused when older than the bound.
    Stale { max_staleness: Option<Duration> },
}

impl std::str::FromStr for Consistency {
    type Err = ReplicationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" | "strong" => Ok(Self::Linearizable),
            "lease" => Ok(Self::Lease),
            "stale" => Ok(Self::Stale { max_staleness: None }),
            other => Err(ReplicationError::Invalid(format!(
                "unknown consistency level {other:?}; expected linearizable, lease or stale"
            ))),
        }
    }
}

/// What a read was served at.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadInfo {
    /// The node's applied index when the read was allowed to proceed.
    pub applied_index: u64,
    /// Milliseconds since this node last heard from a leader (0 on the leader itself).
    pub staleness_ms: Option<u64>,
}

/// Replicates commands and orders reads: what an application needs from the replication layer.
#[async_trait::async_trait]
pub trait Proposer: Send + Sync {
    /// Proposes `command` (tagged for its application) and returns what applying it produced,
    /// once it is applied on this node too.
    async fn propose(&self, command: Command) -> Result<CommandResult, ReplicationError>;

    /// Waits until this node may serve a read at `level`, then says at what state.
    async fn read_barrier(&self, level: Consistency) -> Result<ReadInfo, ReplicationError>;

    /// The format version new commands must be encoded in: the cluster's, as this node has
    /// applied it, capped by what this node's binary writes.
    fn format(&self) -> FormatVersion;
}
