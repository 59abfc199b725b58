//! The vector crate's errors. The SQL crate converts them to SQLSTATEs, the server to HTTP
//! and gRPC statuses.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum VectorError {
    #[error("expected {expected} dimensions, not {actual}")]
    Dimension { expected: usize, actual: usize },
    #[error("NaN and infinity are not allowed in vectors")]
    NotFinite,
    #[error("invalid input syntax for type vector: {0}")]
    Syntax(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("vector index I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("vector index files are unusable: {0}")]
    Corrupt(String),
}

pub type Result<T, E = VectorError> = std::result::Result<T, E>;
