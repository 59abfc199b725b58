//! SQL errors, each with its PostgreSQL SQLSTATE. Surfaces map them to their protocol (HTTP
//! status + JSON, pgwire error response) from [`SqlError::sqlstate`] in one place each.
//!
//! DataFusion's errors are classified by their variant where it has one (schema errors, Arrow
//! errors, our own errors passed through `External`); where DataFusion reports only text, one
//! table ([`MESSAGE_PATTERNS`]) says which message means what, each entry with its test.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use quorumdb_state::{Rejection, ReplicationError};

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
    /// A statement would change one row twice (ON CONFLICT DO UPDATE).
    #[error("{0}")]
    CardinalityViolation(String),
    /// A reference to columns that do not fit where they are used (an ON CONFLICT target no
    /// unique constraint matches).
    #[error("{0}")]
    InvalidColumnReference(String),
    /// A drop that other objects depend on (a table or view that views read), without CASCADE.
    #[error("{0}")]
    DependentObjects(String),
    /// A query failed in DataFusion (planning or execution).
    #[error("{0}")]
    Query(String),
    /// Stored data is not what it should be (a corrupt row, key or catalog).
    #[error("storage: {0}")]
    Storage(String),
    /// Reading the state failed (RocksDB or the file system).
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// The replication layer (the proposer or the read barrier) failed; the server maps it.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A vector that does not fit (dimension, NaN) or a bad vector index parameter.
    #[error("{0}")]
    DataException(String),
    #[error("{0}")]
    InvalidParameter(String),
    /// A request beyond one of the engine's limits ([`crate::limits`]).
    #[error("{0}")]
    LimitExceeded(String),
    /// An error caused by one row of a multi-row write (a bulk load): its position, from 0.
    #[error("row {row}: {source}")]
    AtRow { row: usize, source: Box<SqlError> },
    /// The role may not do this (a table privilege or a built-in role it lacks).
    #[error("permission denied: {0}")]
    InsufficientPrivilege(String),
    /// A role statement that does not fit the catalog (unknown role, role exists, bad option).
    #[error("{0}")]
    InvalidRole(String),
    /// Apply rejected the command (on every node) with this SQLSTATE.
    #[error("{message}")]
    Rejected { code: &'static str, message: String },
}

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
            Self::CardinalityViolation(_) => "21000",
            Self::DependentObjects(_) => "2BP01",
            Self::InvalidColumnReference(_) => "42P10",
            Self::Storage(_) | Self::Io(_) => "58030",
            Self::Replication(_) => "08006",
            Self::Internal(_) => "XX000",
            Self::DataException(_) => "22000",
            Self::InvalidParameter(_) => "22023",
            Self::LimitExceeded(_) => "54000",
            Self::InsufficientPrivilege(_) => "42501",
            Self::InvalidRole(_) => "42704",
            Self::Rejected { code, .. } => code,
            Self::AtRow { source, .. } => source.sqlstate(),
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::AtRow { source, .. } => source.retryable(),
            Self::Replication(e) => e.retryable(),
            e => matches!(e, Self::SerializationFailure(_)),
        }
    }

    /// This error, blamed on row `row` (when known).
    pub fn at_row(self, row: Option<usize>) -> Self {
        match (row, self) {
            (Some(row), e) if !matches!(e, Self::AtRow { .. } | Self::SerializationFailure(_)) => {
                Self::AtRow { row, source: Box::new(e) }
            }
            (_, e) => e,
        }
    }

    /// The row a multi-row write's error blames, if any.
    pub fn row(&self) -> Option<usize> {
        match self {
            Self::AtRow { row, .. } => Some(*row),
            _ => None,
        }
    }

    /// This error without the blamed row (SQL statements report the error alone).
    pub fn without_row(self) -> Self {
        match self {
            Self::AtRow { source, .. } => *source,
            e => e,
        }
    }

    /// Rebuilds the error an apply rejected a command with.
    pub fn from_rejection(r: &Rejection) -> Self {
        if r.code == "40001" {
            return Self::SerializationFailure(r.message.clone());
        }
        Self::Rejected { code: r.sqlstate(), message: r.message.clone() }
    }
}

impl From<quorumdb_vector::VectorError> for SqlError {
    fn from(e: quorumdb_vector::VectorError) -> Self {
        use quorumdb_vector::VectorError as V;
        match e {
            V::Dimension { .. } | V::NotFinite => Self::DataException(e.to_string()),
            V::Syntax(_) => Self::InvalidValue(e.to_string()),
            V::InvalidParameter(m) => Self::InvalidParameter(m),
            V::Io(e) => Self::Io(e),
            V::Corrupt(m) => Self::Internal(m),
        }
    }
}

/// What a DataFusion message that carries no kind of its own means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    UnknownTable,
    UnknownColumn,
    InvalidValue,
    DivisionByZero,
}

/// DataFusion errors that are only text: every fragment of an entry must occur in the message.
/// One test per entry (`tests::each_message_pattern_matches_datafusions_own_error`).
const MESSAGE_PATTERNS: &[(&[&str], MessageKind)] = &[
    (&["table '", "' not found"], MessageKind::UnknownTable),
    (&["No field named "], MessageKind::UnknownColumn),
    (&["Cannot cast string"], MessageKind::InvalidValue),
    (&["Divide by zero"], MessageKind::DivisionByZero),
];

fn message_kind(m: &str) -> Option<MessageKind> {
    MESSAGE_PATTERNS.iter().find(|(parts, _)| parts.iter().all(|p| m.contains(p))).map(|(_, k)| *k)
}

/// The table name in DataFusion's "table '<name>' not found", without our catalog and schema.
fn table_in(m: &str) -> String {
    let rest = m.split("table '").nth(1).unwrap_or(m);
    let full = rest.split('\'').next().unwrap_or(rest);
    full.strip_prefix("quorumdb.public.").unwrap_or(full).to_string()
}

/// The column name in DataFusion's "No field named <name>. Valid fields are …".
fn column_in(m: &str) -> String {
    let rest = m.split("No field named ").nth(1).unwrap_or(m);
    let name = rest.split(". ").next().unwrap_or(rest).trim_end_matches('.');
    name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_string()
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::SQL(e, _) => Self::Syntax(e.to_string()),
            DataFusionError::NotImplemented(m) => Self::Unsupported(m),
            DataFusionError::External(e) => match e.downcast::<SqlError>() {
                Ok(e) => *e,
                Err(e) => match e.downcast::<DataFusionError>() {
                    Ok(df) => Self::from(*df),
                    Err(e) => Self::Query(e.to_string()),
                },
            },
            DataFusionError::Context(_, inner) => Self::from(*inner),
            DataFusionError::Diagnostic(_, inner) => Self::from(*inner),
            DataFusionError::ArrowError(e, _) => Self::from(*e),
            DataFusionError::SchemaError(e, _) => match *e {
                SchemaError::FieldNotFound { field, .. } => Self::UnknownColumn(field.name),
                other => Self::Query(other.to_string()),
            },
            other => {
                let m = other.to_string();
                match message_kind(&m) {
                    Some(MessageKind::UnknownTable) => Self::UnknownTable(table_in(&m)),
                    Some(MessageKind::UnknownColumn) => Self::UnknownColumn(column_in(&m)),
                    Some(MessageKind::InvalidValue) => Self::InvalidValue(m),
                    Some(MessageKind::DivisionByZero) => Self::DivisionByZero,
                    None => Self::Query(m),
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

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The error DataFusion gives for `sql` (planned and run against one small table).
    async fn datafusion_error(sql: &str) -> DataFusionError {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT, s VARCHAR) AS VALUES (1, 'x')").await.unwrap().collect().await.unwrap();
        match ctx.sql(sql).await {
            Err(e) => e,
            Ok(df) => df.collect().await.expect_err("the statement must fail"),
        }
    }

    /// Each pattern of the table matches a message DataFusion really produces, and the error
    /// is classified as the entry says (so an entry no DataFusion error matches fails here).
    #[tokio::test]
    async fn each_message_pattern_matches_datafusions_own_error() {
        let cases: [(&str, MessageKind); 5] = [
            ("SELECT * FROM nope", MessageKind::UnknownTable),
            ("SELECT nope FROM t", MessageKind::UnknownColumn),
            ("SELECT CAST(s AS INT) FROM t", MessageKind::InvalidValue),
            ("SELECT arrow_cast(s, 'Int32') FROM t", MessageKind::InvalidValue),
            ("SELECT a / 0 FROM t", MessageKind::DivisionByZero),
        ];
        let mut used = vec![false; MESSAGE_PATTERNS.len()];
        for (sql, kind) in cases {
            let e = datafusion_error(sql).await;
            let m = e.to_string();
            if let Some(i) = MESSAGE_PATTERNS.iter().position(|(parts, _)| parts.iter().all(|p| m.contains(p))) {
                assert_eq!(MESSAGE_PATTERNS[i].1, kind, "{sql}: {m}");
                used[i] = true;
            }
            let classified = SqlError::from(e);
            let expected = match kind {
                MessageKind::UnknownTable => "42P01",
                MessageKind::UnknownColumn => "42703",
                MessageKind::InvalidValue => "22P02",
                MessageKind::DivisionByZero => "22012",
            };
            assert_eq!(classified.sqlstate(), expected, "{sql}: {classified}");
        }
        for (i, used) in used.iter().enumerate() {
            assert!(used, "no DataFusion error matches the pattern {:?}", MESSAGE_PATTERNS[i].0);
        }
    }

    #[tokio::test]
    async fn unknown_names_are_named_plainly() {
        let e = SqlError::from(datafusion_error("SELECT nope FROM t").await);
        assert_eq!(e.to_string(), "column \"nope\" does not exist");
        let e = SqlError::from(datafusion_error("SELECT * FROM nope").await);
        assert!(matches!(&e, SqlError::UnknownTable(t) if t.ends_with("nope")), "{e:?}");
    }

    #[test]
    fn replication_errors_pass_through_typed() {
        let e = SqlError::from(ReplicationError::NoLeader);
        assert!(e.retryable());
        assert!(matches!(e, SqlError::Replication(ReplicationError::NoLeader)));
        let rejected = SqlError::from_rejection(&Rejection::new("23505", "dup"));
        assert_eq!(rejected.sqlstate(), "23505");
        assert_eq!(SqlError::from_rejection(&Rejection::new("40001", "x")).sqlstate(), "40001");
    }
}
