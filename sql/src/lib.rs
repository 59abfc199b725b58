//! SQL for QuorumDB: the catalog, typed commands and their deterministic apply, row and key
//! encodings, and reads through DataFusion over the replicated state.
//!
//! This crate knows nothing of Raft. It sees the replicated state only through the contract in
//! `quorumdb-state` (it reads a [`quorumdb_state::AppliedState`], proposes through a
//! [`quorumdb_state::Proposer`], and is an [`quorumdb_state::Application`]):
//! - writes: [`engine::Engine`] parses (sqlparser, PostgreSQL dialect) and [`planner`] resolves
//!   each statement against the catalog into a compact [`command::SqlCommand`] (encoded rows,
//!   keys, guards); every node applies it with [`command::SqlApplication`], never re-planning;
//! - reads: DataFusion plans and runs queries over [`provider::QuorumTable`]s that stream rows
//!   from the state with key-range pushdown.

pub mod auth;
pub mod backup;
pub mod catalog;
pub mod codec;
pub mod coerce;
pub mod command;
pub mod engine;
pub mod error;
pub mod json;
pub mod limits;
pub mod memory;
pub mod names;
pub mod planner;
pub mod provider;
pub mod subquery;
pub mod types;
pub mod vector_indexes;
pub mod vector_search;

pub use command::{SqlApplication, TAG};
pub use engine::{Description, Engine, Parsed, Session};
pub use error::{Result, SqlError};
pub use planner::StatementResult;
pub use vector_indexes::VectorIndexes;
