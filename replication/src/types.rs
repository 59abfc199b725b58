//! The openraft type configuration, declared once for the whole project.
//!
//! Log entries carry a [`Command`]: an application command already encoded by the proposing
//! node (resolved, typed, compact), so applying it never re-parses or re-plans anything.

use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub type NodeId = u64;

/// An application command as it travels through the Raft log: opaque bytes encoded by the
/// [`Application`](crate::Application) that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What applying one log entry produced, identical on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the application's encoded response.
    Applied(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Rejected by the application: nothing was written; the application's encoded error.
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
            Self::Rejected(b) => write!(f, "Rejected({})", String::from_utf8_lossy(b)),
        }
    }
}

openraft::declare_raft_types!(
    /// The Raft types of QuorumDB.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
