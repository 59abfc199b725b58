//! What every protocol surface of a node shares: the replica, the SQL engine, the vector
//! indexes, where the node's other surfaces listen, and its data directory. HTTP, gRPC,
//! pgwire and RESP each take a [`NodeContext`] and nothing from one another.

use std::sync::Arc;

use quorumdb_replication::Replica;
use quorumdb_sql::{Engine, VectorIndexes};

/// The handles a node's surfaces serve requests with. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub replica: Replica,
    pub sql: Arc<Engine>,
    pub vectors: Arc<VectorIndexes>,
    pub surfaces: Arc<Surfaces>,
    /// Checks passwords against the catalog's roles, for every surface.
    pub auth: Arc<crate::auth::Authenticator>,
    /// This node's data directory (backups take their checkpoint under it).
    pub data_dir: std::path::PathBuf,
    /// The only directory backups are written below (`--backup-dir`, absolute).
    pub backup_dir: std::path::PathBuf,
}

/// This node's other client surfaces, reported by `/v1/status` so clients (the shell) can find
/// them from the node's main address.
#[derive(Debug, Default)]
pub struct Surfaces {
    pub pg_addr: Option<std::net::SocketAddr>,
    pub redis_addr: Option<std::net::SocketAddr>,
    /// The password pgwire and RESP clients must give, if configured (before roles exist).
    pub password: Option<String>,
    /// With logins required, status routes still answer without one (`--public-status`).
    pub public_status: bool,
    /// The node's certificates: TLS on every port and between nodes.
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    /// The HTTP client for forwarding admin requests to the leader.
    pub peer_http: crate::tls::PeerHttp,
}
