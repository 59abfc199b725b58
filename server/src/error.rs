//! Server errors, and their mapping to each protocol — HTTP here, gRPC in [`to_status`],
//! PostgreSQL in [`to_pg`], RESP in [`to_resp`] — in exactly one place each.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorumdb_replication::ReplicationError;
use quorumdb_sql::SqlError;
use quorumdb_state::Rejection;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A compare-and-set found another value.
    #[error("compare-and-set failed: the current value differs from the expected one")]
    CasFailed { current: Option<Vec<u8>> },
    /// The KV table rejected a command (the same on every node).
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// The leader could not be reached to forward an admin request.
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A setting (flag, environment variable, config file) is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be opened.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    /// A bug: something that should not fail did.
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Sql(SqlError),
    /// No valid login where one is required (a missing, unknown or wrong user or password).
    #[error("authentication required: {0}")]
    Unauthenticated(String),
}

/// SQL errors that only passed a replication error through become that replication error,
/// so each surface maps it in its one place.
impl From<SqlError> for ServerError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Replication(r) => Self::Replication(r),
            other => Self::Sql(other),
        }
    }
}

/// The HTTP status for a SQLSTATE, by class.
fn sqlstate_status(code: &str) -> StatusCode {
    match code {
        "42P01" | "42704" => StatusCode::NOT_FOUND,
        "42501" => StatusCode::FORBIDDEN,
        s if s.starts_with("23") || s == "40001" || s == "42P07" => StatusCode::CONFLICT,
        s if s.starts_with("58") || s.starts_with("XX") => StatusCode::INTERNAL_SERVER_ERROR,
        "08006" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl ServerError {
    /// A stable machine-readable code for clients (the SQLSTATE for SQL errors).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Replication(e) => Self::replication_code(e),
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::CasFailed { .. } => "cas_failed",
            Self::Forward(_) => "unreachable",
            Self::Rejected(r) => r.sqlstate(),
            Self::Io(_) | Self::Internal(_) => "internal",
            Self::Config(_) => "invalid_config",
            Self::Bind { .. } => "cannot_listen",
            Self::Sql(e) => e.sqlstate(),
            Self::Unauthenticated(_) => "unauthenticated",
        }
    }

    /// The SQLSTATE PostgreSQL clients see for this error.
    pub fn sqlstate(&self) -> &'static str {
        let replication = |e: &ReplicationError| match e {
            // "cannot connect now": drivers treat class 57 as transient.
            ReplicationError::NoLeader
            | ReplicationError::Unreachable { .. }
            | ReplicationError::ReadNotConfirmed(_)
            | ReplicationError::Fatal(_) => "57P03",
            ReplicationError::OutcomeUnknown(_) => "40003",
            ReplicationError::Membership(_) => "55000",
            ReplicationError::Invalid(_) => "22023",
            _ => "XX000",
        };
        match self {
            Self::Replication(e) => replication(e),
            Self::Sql(e) => e.sqlstate(),
            Self::Rejected(r) => r.sqlstate(),
            Self::BadRequest(_) | Self::Config(_) => "22023",
            Self::NotFound(_) => "42704",
            Self::CasFailed { .. } => "40001",
            Self::Forward(_) => "57P03",
            Self::Io(_) | Self::Bind { .. } => "58030",
            Self::Internal(_) => "XX000",
            Self::Unauthenticated(_) => "28P01",
        }
    }

    fn replication_code(e: &ReplicationError) -> &'static str {
        match e {
            ReplicationError::NoLeader => "no_leader",
            ReplicationError::OutcomeUnknown(_) => "outcome_unknown",
            ReplicationError::Unreachable { .. } => "unreachable",
            ReplicationError::ReadNotConfirmed(_) => "read_not_confirmed",
            ReplicationError::Membership(_) => "membership",
            ReplicationError::Invalid(_) => "invalid_request",
            ReplicationError::Fatal(_) => "node_stopped",
            _ => "internal",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Replication(e) => Self::replication_status(e),
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::CasFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Forward(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rejected(r) => sqlstate_status(r.sqlstate()),
            Self::Config(_) => StatusCode::BAD_REQUEST,
            Self::Io(_) | Self::Bind { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Sql(e) => sqlstate_status(e.sqlstate()),
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        }
    }

    fn replication_status(e: &ReplicationError) -> StatusCode {
        match e {
            ReplicationError::NoLeader
            | ReplicationError::Unreachable { .. }
            | ReplicationError::ReadNotConfirmed(_)
            | ReplicationError::Fatal(_) => StatusCode::SERVICE_UNAVAILABLE,
            ReplicationError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
            ReplicationError::Membership(_) => StatusCode::CONFLICT,
            ReplicationError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            Self::Replication(e) => e.retryable(),
            Self::Sql(e) => e.retryable(),
            Self::Forward(_) => true,
            _ => false,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "retryable": self.retryable(),
        });
        if let Self::CasFailed { current } = &self {
            error["current"] = current.as_ref().map(|c| String::from_utf8_lossy(c).into_owned()).into();
        }
        if let Self::Sql(e) = &self
            && let Some(row) = e.row()
        {
            error["row"] = row.into();
        }
        (self.http_status(), Json(serde_json::json!({ "error": error }))).into_response()
    }
}

/// The PostgreSQL error response for an error.
pub fn to_pg(e: &ServerError) -> pgwire::error::PgWireError {
    pgwire::error::PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".to_owned(),
        e.sqlstate().to_owned(),
        e.to_string(),
    )))
}

/// The gRPC status for an error.
pub fn to_status(e: ServerError) -> tonic::Status {
    use tonic::Code;
    let code = match e.http_status() {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Code::FailedPrecondition,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        _ => Code::Internal,
    };
    tonic::Status::new(code, format!("{}: {e}", e.code()))
}

/// A Redis client broke the protocol; the connection is answered once and closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("Protocol error: {0}")]
    Malformed(String),
    #[error("Protocol error: {0} over the limit")]
    TooLarge(&'static str),
}

/// The RESP error line for an error, without the leading `-` and the CRLF: `TRYAGAIN ...` when
/// the same command may succeed if retried (no leader yet, a read not confirmed), else
/// `ERR ...`. Line breaks in messages become spaces so the reply stays one line.
pub fn to_resp(e: &ServerError) -> String {
    let prefix = match e {
        ServerError::Unauthenticated(_) => "NOAUTH",
        ServerError::Sql(s) if s.sqlstate() == "42501" => "NOPERM",
        e if e.retryable() => "TRYAGAIN",
        _ => "ERR",
    };
    let message = match e {
        // A deterministic rejection from the state machine reads as Redis words it.
        ServerError::BadRequest(m) | ServerError::Replication(ReplicationError::Invalid(m)) => m.clone(),
        ServerError::Rejected(r) => r.message.clone(),
        ServerError::Unauthenticated(m) => m.clone(),
        other => format!("{}: {other}", other.code()),
    };
    format!("{prefix} {message}").replace(['\r', '\n'], " ")
}
