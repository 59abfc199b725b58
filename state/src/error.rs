//! The errors shared across the replication seam: [`ReplicationError`], what proposing a
//! command or waiting for a read can fail with (applications pass it through untouched, and
//! each surface maps it in one place), and [`Rejection`], the deterministic refusal of a
//! command by its application, identical on every node.

use serde::{Deserialize, Serialize};

use crate::format::{self, FormatVersion};

/// Why a write or a read barrier failed in the replication layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// No leader is known right now (election in progress, or no quorum). Retry later.
    #[error("no leader is known right now (election in progress or quorum lost); retry")]
    NoLeader,

    /// The write may or may not have been applied: the leader changed while it was in flight,
    /// or it reached the leader and the answer was lost.
    #[error("the write's outcome is unknown: {0}")]
    OutcomeUnknown(String),

    /// A peer could not be reached; nothing was delivered to it.
    #[error("node {node} at {addr} is unreachable: {reason}")]
    Unreachable { node: u64, addr: String, reason: String },

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
    /// Whether the same request may succeed if simply retried (possibly on another node):
    /// nothing of it took effect and the cause is transient.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::NoLeader | Self::Unreachable { .. } | Self::ReadNotConfirmed(_))
    }
}

impl From<format::FormatError> for ReplicationError {
    fn from(e: format::FormatError) -> Self {
        Self::Codec(e.to_string())
    }
}

/// Why an application rejected a command: the same on every node, carried back to the
/// proposer. `code` is a PostgreSQL SQLSTATE (the KV table uses the same classes: `22023` for
/// an invalid value, `22003` for an overflow), so every surface maps rejections one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    /// SQLSTATE of the rejections older commands carried only as text.
    pub const LEGACY_TEXT_CODE: &'static str = "22023";
    /// SQLSTATE of a command that could not be applied for an internal reason (a panic).
    pub const INTERNAL_CODE: &'static str = "XX000";

    /// The SQLSTATEs apply rejects commands with; a rejection carrying any other code (sent by
    /// a newer binary, say) reads as an internal error.
    pub const CODES: [&'static str; 16] = [
        "23505", "23502", "42P01", "42P07", "42P16", "22P02", "22001", "22003", "22000", "22023", "58030", "XX000",
        "40001", "0A000", "42704", "42501",
    ];

    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    /// The SQLSTATE, one of [`Self::CODES`].
    pub fn sqlstate(&self) -> &'static str {
        Self::CODES.iter().find(|c| **c == self.code).copied().unwrap_or(Self::INTERNAL_CODE)
    }

    /// Encoded for a proposer that wrote its command in `version`: an envelope from version 1
    /// on; for version 0, MessagePack with field names (the KV table's version-0 rejections
    /// were plain text; it writes those itself).
    pub fn encode(&self, version: FormatVersion) -> Vec<u8> {
        let encoded =
            if version == format::LEGACY { format::encode_named(self) } else { format::encode(version, self) };
        // Two strings always encode; should that ever fail, the message alone still says why.
        encoded.unwrap_or_else(|_| self.message.clone().into_bytes())
    }

    /// Decodes a rejection of any version: an envelope, a version-0 MessagePack map, or the
    /// version-0 KV table's plain text.
    pub fn decode(bytes: &[u8]) -> Self {
        match format::split(bytes) {
            Ok((format::LEGACY, body)) => format::decode_named(body).unwrap_or_else(|_| Self::legacy_text(body)),
            Ok((_, body)) => format::decode_named(body)
                .unwrap_or_else(|e| Self::new(Self::INTERNAL_CODE, format!("undecodable rejection: {e}"))),
            Err(e) => Self::new(Self::INTERNAL_CODE, format!("undecodable rejection: {e}")),
        }
    }

    fn legacy_text(body: &[u8]) -> Self {
        Self::new(Self::LEGACY_TEXT_CODE, String::from_utf8_lossy(body).into_owned())
    }

    /// The rejection of a command whose apply panicked (a bug): logged where it happened,
    /// reported to the client as an internal error.
    pub fn internal(what: &str) -> Self {
        Self::new(Self::INTERNAL_CODE, format!("internal error while applying the command: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_decode_from_every_version() {
        let r = Rejection::new("23505", "duplicate key");
        assert_eq!(Rejection::decode(&r.encode(1)), r);
        assert_eq!(Rejection::decode(&r.encode(0)), r);
        assert_eq!(Rejection::decode(b"value is not an integer"), Rejection::new("22023", "value is not an integer"));
        assert_eq!(Rejection::decode(&[format::MARKER, 9]).code, "XX000");
        assert_eq!(Rejection::new("23505", "x").sqlstate(), "23505");
        assert_eq!(Rejection::new("99999", "x").sqlstate(), "XX000");
    }

    #[test]
    fn retryable_means_nothing_happened() {
        assert!(ReplicationError::NoLeader.retryable());
        assert!(!ReplicationError::OutcomeUnknown("x".into()).retryable());
        assert!(!ReplicationError::Invalid("x".into()).retryable());
    }
}
