//! The `quorumdb` server: one node's network surfaces wired to its replica.
//!
//! Owns every network surface (HTTP/JSON, gRPC client API, the Raft transport mounted on the
//! same port), the command line and config file, the error mapping to each protocol
//! ([`error`]), Prometheus metrics and the local demo cluster. Replication itself lives in
//! `quorumdb-replication`; this crate never touches RocksDB. The client commands (`quorumdb
//! load`, `backup`, `restore`, `shell`) live in `quorumdb-client`: [`cli`] only parses them and
//! calls in there, and no client code lives here.

/// The allocator the node's binaries use (`#[global_allocator]` in each `main`): mimalloc,
/// because a node allocates and frees many small buffers per row and per request (staged
/// writes, encoded rows and keys, protocol frames), where glibc's malloc spent a fifth of a
/// bulk load's CPU.
pub use mimalloc::MiMalloc as Allocator;

pub mod auth;
pub mod backup;
pub mod bulk;
pub mod cli;
pub mod collections;
pub mod config;
pub mod context;
pub mod demo;
pub mod error;
pub mod grpc;
pub mod http;
pub mod kv;
pub mod node;
pub mod pg;
pub mod request;
pub mod resp;
pub mod sql;
pub mod telemetry;
pub mod tls;

pub use config::NodeConfig;
pub use error::ServerError;
pub use node::Node;
