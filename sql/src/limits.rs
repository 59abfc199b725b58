//! The engine's limits: what a request, a table and the catalog may hold at most. Each is
//! checked before anything is proposed, and exceeding one is SQLSTATE 54000
//! (`program_limit_exceeded`) with the limit named, never a slow or failed apply.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Statement, visit_expressions};

use crate::error::{Result, SqlError};

/// Statements in one request (one simple query, one HTTP body).
pub const MAX_STATEMENTS: usize = 1_000;
/// Items in one `IN (…)` list.
pub const MAX_IN_LIST: usize = 100_000;
/// Tables (and vector collections, which are tables) in the catalog.
pub const MAX_TABLES: usize = 10_000;
/// Columns in one table (PostgreSQL's limit).
pub const MAX_COLUMNS: usize = 1_600;
/// Dimensions of a `VECTOR(n)` column (pgvector's limit).
pub const MAX_VECTOR_DIM: u32 = 16_000;

/// Checks a parsed request against the request limits. (Nesting depth is bounded by the
/// parser's recursion limit, which answers 42601.)
pub fn check_request(statements: &[Statement]) -> Result<()> {
    if statements.len() > MAX_STATEMENTS {
        return Err(SqlError::LimitExceeded(format!(
            "a request may hold at most {MAX_STATEMENTS} statements; this one has {}",
            statements.len()
        )));
    }
    for s in statements {
        let long = visit_expressions(s, |e| match e {
            Expr::InList { list, .. } if list.len() > MAX_IN_LIST => ControlFlow::Break(list.len()),
            _ => ControlFlow::Continue(()),
        });
        if let ControlFlow::Break(n) = long {
            return Err(SqlError::LimitExceeded(format!(
                "an IN list may hold at most {MAX_IN_LIST} items; this one has {n} (use a table or ANY($1) with an array)"
            )));
        }
    }
    Ok(())
}

/// Checks that a table with `columns` columns may be added to a catalog of `tables` tables.
pub fn check_new_table(tables: usize, columns: usize) -> Result<()> {
    if tables >= MAX_TABLES {
        return Err(SqlError::LimitExceeded(format!("the catalog holds {tables} tables, the most it may hold")));
    }
    if columns > MAX_COLUMNS {
        return Err(SqlError::LimitExceeded(format!(
            "a table may have at most {MAX_COLUMNS} columns; this one has {columns}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()
    }

    #[test]
    fn requests_beyond_the_limits_are_refused_with_54000() {
        assert!(check_request(&parse("SELECT 1; SELECT 2")).is_ok());
        let many = "SELECT 1;".repeat(MAX_STATEMENTS + 1);
        let e = check_request(&parse(&many)).unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
        let items: Vec<String> = (0..=MAX_IN_LIST).map(|i| i.to_string()).collect();
        let e = check_request(&parse(&format!("SELECT 1 WHERE 1 IN ({})", items.join(",")))).unwrap_err();
        assert!(e.to_string().contains("IN list"), "{e}");
        let ok: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert!(check_request(&parse(&format!("SELECT 1 WHERE 1 IN ({})", ok.join(",")))).is_ok());
        assert_eq!(check_new_table(MAX_TABLES, 1).unwrap_err().sqlstate(), "54000");
        assert_eq!(check_new_table(1, MAX_COLUMNS + 1).unwrap_err().sqlstate(), "54000");
        assert!(check_new_table(1, 3).is_ok());
    }
}
