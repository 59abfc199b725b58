//! The payload of a log entry and the result of applying it: openraft's `D` and `R` types.
//!
//! A [`Command`] is an application command already encoded by the proposing node (resolved,
//! typed, compact), prefixed by the tag byte of the application that applies it
//! ([`crate::tagged`]), so applying it never re-parses or re-plans anything. Both types are
//! encoded by openraft's serde (MessagePack with field names in the log store and on the
//! transport); `docs/formats.md` describes them.

use serde::{Deserialize, Serialize};

/// An application command as it travels through the Raft log: a tag byte, then bytes encoded
/// by that application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What applying one log entry produced, identical on every node (the response bytes may
/// differ only where an application reports node-local facts; none does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the application's encoded response.
    Applied(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Rejected by the application: nothing was written; the application's encoded
    /// [`Rejection`](crate::Rejection).
    Rejected(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Applied(b) => write!(f, "Applied({} bytes)", b.len()),
            Self::Rejected(b) => write!(f, "Rejected({})", crate::Rejection::decode(b).message),
        }
    }
}
