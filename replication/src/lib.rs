//! Raft replication for QuorumDB.
//!
//! This crate owns everything between "a command was proposed" and "every node applied it":
//! the openraft type configuration ([`types`]), the durable Raft log on its own RocksDB
//! instance ([`log_store`]), the replicated state machine on a second RocksDB instance
//! ([`state_machine`]) that applies commands through an [`Application`], the tonic transport
//! between nodes with a switchable fault layer ([`network`]), and [`Replica`], the facade the
//! server uses to write (forwarding to the leader), to read at a consistency level, to change
//! membership and to move the cluster's format version forward.
//!
//! It knows Raft and storage, never SQL: applications plug in through the contract in
//! `quorumdb-state` ([`Application`], [`StateTxn`], [`AppliedState`], [`Proposer`]) and never see
//! a RocksDB or openraft type. The built-in key-value table ([`kv`]) is the first application.

pub mod encoding;
pub mod error;
pub mod kv;
pub mod log_store;
pub mod network;
mod raft;
pub mod replica;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use error::ReplicationError;
pub use quorumdb_state::{
    Application, AppliedState, CommitHook, Consistency, Proposer, ReadInfo, Router, StateTxn, format, tagged,
};
pub use raft::Raft;
pub use replica::{Member, NodeStatus, Replica, ReplicaConfig, RequestProposer};
pub use state_machine::{PinnedView, StateDigest, StateReader};
pub use types::{Command, CommandResult, NodeId, TypeConfig};
