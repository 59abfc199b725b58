//! SQL errors, each with its PostgreSQL SQLSTATE. Surfaces map them to their protocol (HTTP
//! status + JSON, pgwire error response) from [`SqlError::sqlstate`] in one place each.

use datafusion::error::DataFusionError;
use serde::{Deserialize, Serialize};

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The SQL text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A statement or feature we do not support.
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("relation \"{0}\" does not exist")]
    UnknownTable(String),
    #[error("relation \"{0}\" already exists")]
    TableExists(String),
    #[error("column \"{0}\" does not exist")]
    UnknownColumn(String),
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    #[error("index \"{0}\" does not exist")]
    UnknownIndex(String),
    /// Invalid definition (bad type, bad key, …).
    #[error("{0}")]
    InvalidDefinition(String),
    #[error("{0}")]
    UniqueViolation(String),
    #[error("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint")]
    NotNullViolation { table: String, column: String },
    /// A value that does not fit its column's type.
    #[error("{0}")]
    InvalidValue(String),
    #[error("value too long for type character varying({0})")]
    StringTooLong(u64),
    #[error("{0}")]
    NumericOutOfRange(String),
    #[error("division by zero")]
    DivisionByZero,
    #[error("there is no parameter ${0}")]
    UndefinedParameter(usize),
    /// Another write changed what this statement read; it was retried and still conflicted.
    #[error("could not serialize access due to concurrent update: {0}")]
    SerializationFailure(String),
    /// At COMMIT, a transaction block's writes planned again would change other rows than the
    /// client was told; nothing was applied.
    #[error("could not serialize access: {0}; the transaction was rolled back")]
    TransactionChanged(String),
    /// A query failed in DataFusion (planning or execution).
    #[error("{0}")]
    Query(String),
    /// Reading or applying against the state failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The replication layer (the proposer or the read barrier) failed; the server maps it.
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error: {0}")]
    Internal(String),
    /// A vector that does not fit (dimension, NaN) or a bad vector index parameter.
    #[error("{0}")]
    DataException(String),
    #[error("{0}")]
    InvalidParameter(String),
    /// Apply rejected the command (on every node) with this SQLSTATE.
    #[error("{message}")]
    Rejected { code: &'static str, message: String },
}

/// The SQLSTATEs apply can reject a command with.
const APPLY_CODES: [&str; 12] =
    ["23505", "23502", "42P01", "42P07", "42P16", "22P02", "22001", "22003", "22000", "22023", "58030", "XX000"];

impl SqlError {
    /// The PostgreSQL SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "42601",
            Self::Unsupported(_) => "0A000",
            Self::UnknownTable(_) => "42P01",
            Self::TableExists(_) => "42P07",
            Self::UnknownColumn(_) => "42703",
            Self::DuplicateColumn(_) => "42701",
            Self::UnknownIndex(_) => "42704",
            Self::InvalidDefinition(_) => "42P16",
            Self::UniqueViolation(_) => "23505",
            Self::NotNullViolation { .. } => "23502",
            Self::InvalidValue(_) => "22P02",
            Self::StringTooLong(_) => "22001",
            Self::NumericOutOfRange(_) => "22003",
            Self::UndefinedParameter(_) => "42P02",
            Self::DivisionByZero => "22012",
            Self::SerializationFailure(_) | Self::TransactionChanged(_) => "40001",
            Self::Query(_) => "42000",
            Self::Storage(_) => "58030",
            Self::Backend(_) => "08006",
            Self::Internal(_) => "XX000",
            Self::DataException(_) => "22000",
            Self::InvalidParameter(_) => "22023",
            Self::Rejected { code, .. } => code,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::SerializationFailure(_))
    }

    /// Rebuilds the error an apply rejected a command with.
    pub fn from_rejection(r: &Rejection) -> Self {
        if r.code == "40001" {
            return Self::SerializationFailure(r.message.clone());
        }
        let code = APPLY_CODES.iter().find(|c| **c == r.code).copied().unwrap_or("XX000");
        Self::Rejected { code, message: r.message.clone() }
    }
}

/// Why an apply rejected a command: the same on every node, carried back to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl From<&SqlError> for Rejection {
    fn from(e: &SqlError) -> Self {
        Self { code: e.sqlstate().to_string(), message: e.to_string() }
    }
}

impl From<std::io::Error> for SqlError {
    fn from(e: std::io::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<quorumdb_vector::VectorError> for SqlError {
    fn from(e: quorumdb_vector::VectorError) -> Self {
        use quorumdb_vector::VectorError as V;
        match e {
            V::Dimension { .. } | V::NotFinite => Self::DataException(e.to_string()),
            V::Syntax(_) => Self::InvalidValue(e.to_string()),
            V::InvalidParameter(m) => Self::InvalidParameter(m),
            V::Io(e) => Self::Storage(e.to_string()),
            V::Corrupt(m) => Self::Internal(m),
        }
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::SQL(e, _) => Self::Syntax(e.to_string()),
            DataFusionError::NotImplemented(m) => Self::Unsupported(m),
            DataFusionError::External(e) => match e.downcast::<SqlError>() {
                Ok(e) => *e,
                Err(e) => Self::Query(e.to_string()),
            },
            DataFusionError::Context(_, inner) => Self::from(*inner),
            DataFusionError::Diagnostic(_, inner) => Self::from(*inner),
            DataFusionError::ArrowError(e, _) => Self::from(*e),
            other => {
                // DataFusion reports these as planning errors; PostgreSQL has codes for them.
                let m = other.to_string();
                if let Some(rest) = m.split("table '").nth(1)
                    && m.contains("not found")
                {
                    let full = rest.split('\'').next().unwrap_or(rest);
                    Self::UnknownTable(full.strip_prefix("quorumdb.public.").unwrap_or(full).to_string())
                } else if m.contains("No field named") || m.contains("Schema error") {
                    Self::UnknownColumn(m)
                } else if m.contains("Cannot cast string") || m.contains("Cast error") {
                    Self::InvalidValue(m)
                } else if m.contains("Divide by zero") {
                    Self::DivisionByZero
                } else {
                    Self::Query(m)
                }
            }
        }
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for SqlError {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        Self::Syntax(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for SqlError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        use datafusion::arrow::error::ArrowError as A;
        match e {
            A::DivideByZero => Self::DivisionByZero,
            A::ArithmeticOverflow(_) => Self::NumericOutOfRange(e.to_string()),
            A::ExternalError(inner) => match inner.downcast::<DataFusionError>() {
                Ok(df) => Self::from(*df),
                Err(other) => Self::Query(other.to_string()),
            },
            other => Self::InvalidValue(other.to_string()),
        }
    }
}
