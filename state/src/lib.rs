//! The contract between QuorumDB's replicated log and the applications that run on it.
//!
//! `replication` implements this crate (Raft, the log, the RocksDB state machine); `sql` and
//! the built-in KV table implement [`Application`] and read through [`AppliedState`]. Neither side
//! sees the other's types: an application never sees RocksDB or openraft, and the replication
//! layer never sees SQL.
//!
//! Owns:
//! - [`app`]: what the state machine offers applications at apply time ([`Application`],
//!   [`StateTxn`], [`CommitHook`]) and for queries ([`AppliedState`]);
//! - [`router`]: several applications on one state machine, by a tag byte per command, and the
//!   state machine's own system commands;
//! - [`command`]: the log's payload ([`Command`]) and what applying it produced
//!   ([`CommandResult`]), shared with openraft;
//! - [`format`]: the versioned encodings of everything that is persisted or crosses nodes,
//!   and the cluster's format version, which moves only through the log;
//! - [`system`]: the state machine's own commands, and exactly-once writes by request id
//!   ([`system::Once`]);
//! - [`propose`]: how an application proposes commands and waits for reads ([`Proposer`],
//!   [`Consistency`]);
//! - [`error`]: the replication errors applications pass through ([`ReplicationError`]) and
//!   the deterministic rejection of a command ([`Rejection`]);
//! - [`keys`]: byte-string key ranges and the wall clock, one copy each.

pub mod app;
pub mod command;
pub mod error;
pub mod format;
pub mod keys;
pub mod propose;
pub mod router;
pub mod system;

pub use app::{Application, Applied, AppliedState, CommitHook, SharedState, StateTxn, try_scan};
pub use command::{Command, CommandResult};
pub use error::{Rejection, ReplicationError};
pub use format::FormatVersion;
pub use keys::{now_ms, prefix_end};
pub use propose::{Consistency, Proposer, ReadInfo};
pub use router::{Router, tagged};
