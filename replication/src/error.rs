//! Errors of the replication layer. The server maps them to each protocol in one place.

use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// No leader is known right now (election in progress, or no quorum). Retry later.
    #[error("no leader is known right now (election in progress or quorum lost); retry")]
    NoLeader,

    /// The leader changed while the write was in flight: it may or may not have been applied.
    #[error("leadership changed while the write was in flight; its outcome is unknown: {0}")]
    OutcomeUnknown(String),

    /// A peer could not be reached.
    #[error("node {node} at {addr} is unreachable: {reason}")]
    Unreachable { node: NodeId, addr: String, reason: String },

    /// A linearizable read could not be confirmed (leadership lost, or timed out).
    #[error("could not confirm a linearizable read: {0}")]
    ReadNotConfirmed(String),

    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),

    /// Storage failed (RocksDB or the file system).
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),

    /// The Raft node stopped (shut down, or a fatal storage error).
    #[error("raft node stopped: {0}")]
    Fatal(String),

    /// An encoded message could not be decoded.
    #[error("codec error: {0}")]
    Codec(String),

    /// Invalid request from the caller.
    #[error("{0}")]
    Invalid(String),
}

impl ReplicationError {
    /// Whether the same request may succeed if simply retried (possibly on another node).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NoLeader | Self::Unreachable { .. } | Self::ReadNotConfirmed(_))
    }
}

impl From<openraft::errors::Fatal<crate::TypeConfig>> for ReplicationError {
    fn from(e: openraft::errors::Fatal<crate::TypeConfig>) -> Self {
        Self::Fatal(e.to_string())
    }
}

pub(crate) fn storage_err(e: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(e.into_string())
}
