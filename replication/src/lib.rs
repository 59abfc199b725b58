//! Raft replication for QuorumDB.
//!
//! This crate owns everything between "a command was proposed" and "every node applied it":
//! the openraft type configuration ([`types`]), the durable Raft log on its own RocksDB
//! instance ([`log_store`]), the replicated state machine on a second RocksDB instance
//! ([`state_machine`]) that is generic over an [`Application`], the tonic transport between
//! nodes with a switchable fault layer ([`network`]), and [`Replica`], the facade the server
//! uses to write (forwarding to the leader), to read at a consistency level and to change
//! membership.
//!
//! It knows Raft and storage, never SQL: applications plug in through [`Application`], which
//! sees only a key-value transaction ([`StateTxn`]) and never a RocksDB type. The built-in
//! key-value table ([`kv`]) is the first application.

mod encoding;
pub mod error;
pub mod kv;
pub mod log_store;
pub mod network;
pub mod replica;
pub mod router;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use error::ReplicationError;
pub use replica::{Consistency, Member, NodeStatus, ReadInfo, Replica, ReplicaConfig};
pub use router::{Router, tagged};
pub use state_machine::{Application, CommitHook, StateReader, StateTxn, StateView};
pub use types::{Command, CommandResult, NodeId, TypeConfig};
