//! The openraft type configuration, declared once for the whole project.
//!
//! Log entries carry a [`Command`] (see [`quorumdb_state::command`]): an application command
//! already encoded by the proposing node, so applying it never re-parses or re-plans anything.

pub use quorumdb_state::{Command, CommandResult};

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft types of QuorumDB.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
