//! Errors of the client commands, shown to their user and never mapped to a protocol: the
//! shell's in [`ShellError`]. The loaders, `backup` and `restore` return `anyhow` errors with
//! context, printed by the binary as `error: …`.

/// Errors of `quorumdb shell`, a client: shown to its user, never mapped to a protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// The server rejected the statement.
    #[error("{severity}:  {message}")]
    Server { severity: String, code: String, message: String, detail: Option<String>, hint: Option<String> },
    /// The client library failed without a server error (protocol or I/O).
    #[error("{0}")]
    Protocol(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection broke while a write ran; the shell reconnected but cannot tell whether
    /// the write was applied.
    #[error("connection lost; the statement may or may not have been applied")]
    OutcomeUnknown,
    /// The connection broke inside a `BEGIN` block: the block is gone, nothing of it applied.
    #[error("connection lost inside a transaction block; the block was rolled back, nothing of it was applied")]
    TransactionLost,
    /// No member could be reached.
    #[error("no node of the cluster is reachable ({0})")]
    NoNode(String),
    /// A cluster admin call failed.
    #[error("{0}")]
    Admin(String),
    /// A command or argument the shell cannot use.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
}
