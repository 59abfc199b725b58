//! Errors of the replication layer: [`ReplicationError`] is shared with the applications
//! (it lives in `quorumdb-state`); here are the conversions from RocksDB and openraft errors.
//! The server maps it to each protocol in one place.

pub use quorumdb_state::ReplicationError;

/// A RocksDB error as the I/O error openraft's storage traits carry.
pub(crate) fn storage_err(e: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(e.into_string())
}

/// The Raft node stopped.
pub(crate) fn fatal(e: openraft::errors::Fatal<crate::TypeConfig>) -> ReplicationError {
    ReplicationError::Fatal(e.to_string())
}
