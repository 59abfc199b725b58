//! SQL for QuorumDB: the catalog, typed commands and their deterministic apply, row and key
//! encodings, and reads through DataFusion over the replicated state.
//!
//! This crate knows nothing of Raft. It sees the replicated state only through the traits in
//! [`store`] and replicates commands through the [`engine::Backend`] the server provides:
//! - writes: [`engine::Engine`] parses (sqlparser, PostgreSQL dialect) and [`planner`] resolves
//!   each statement against the catalog into a compact [`command::SqlCommand`] (encoded rows,
//!   keys, guards); every node applies it with [`command::SqlApp`], never re-planning SQL;
//! - reads: DataFusion plans and runs queries over [`provider::QuorumTable`]s that stream rows
//!   from the state with key-range pushdown.

pub mod backup;
pub mod catalog;
pub mod codec;
pub mod command;
pub mod engine;
pub mod error;
pub mod knn;
pub mod memory;
pub mod planner;
pub mod provider;
pub mod store;
pub mod types;
pub mod values;
pub mod vectors;

pub use command::{SqlApp, TAG};
pub use engine::{Backend, Description, Engine, Parsed, Session};
pub use error::{Result, SqlError};
pub use planner::StatementResult;
pub use store::{KvRead, KvTxn, SharedRead};
pub use vectors::VectorIndexes;
