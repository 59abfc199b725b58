//! The catalog queries PostgreSQL clients send, answered from our catalog.
//!
//! `psql`'s describe commands (`\d`, `\dt`, `\di`, `\d table`) query `pg_catalog` with
//! PostgreSQL-specific syntax (`OPERATOR(pg_catalog.~)`, `::regclass`, correlated subqueries)
//! that DataFusion does not run. They are recognised here by their shape (psql 15's queries)
//! and answered from the table definitions, with the columns psql reads; any other query of
//! `pg_catalog` tables answers no rows, which psql and drivers read as "nothing of that kind"
//! (no rules, policies, triggers, publications, inheritance…). Table OIDs are `16384 + id`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use pgwire::error::PgWireResult;
use quorumdb_sql::StatementResult;
use quorumdb_sql::catalog::{Catalog, IndexKind, TableDef};
use quorumdb_sql::types::ColumnType;
use regex::Regex;

use crate::context::NodeContext;

/// OIDs of user tables start here, as in PostgreSQL.
const FIRST_OID: u64 = 16384;

fn table_oid(t: &TableDef) -> u64 {
    FIRST_OID + u64::from(t.id)
}

/// A text result: `columns` names and rows of optional cells (None = NULL), a `SELECT n`.
fn rows(columns: &[&str], data: Vec<Vec<Option<String>>>) -> StatementResult {
    let n = data.len();
    text_rows(columns, data, &format!("SELECT {n}"))
}

/// A text result with its command tag.
pub(super) fn text_rows(columns: &[&str], data: Vec<Vec<Option<String>>>, tag: &str) -> StatementResult {
    let schema =
        Arc::new(Schema::new(columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>()));
    // A missing cell is NULL, so every array has one entry per row.
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| Arc::new(data.iter().map(|r| r.get(i).cloned().flatten()).collect::<StringArray>()) as ArrayRef)
        .collect();
    let batch = text_batch(schema.clone(), arrays, data.len());
    StatementResult::Rows { schema, batches: vec![batch], tag: tag.to_string() }
}

/// A batch of `rows` rows from one UTF-8 array per field of `schema`, each `rows` long: it
/// matches the schema by construction, so building it cannot fail.
#[allow(clippy::expect_used)]
fn text_batch(schema: SchemaRef, arrays: Vec<ArrayRef>, rows: usize) -> RecordBatch {
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, arrays, &options).expect("one nullable UTF-8 array per field, rows long")
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn flag(b: bool) -> Option<String> {
    s(if b { "t" } else { "f" })
}

/// The name pattern psql turned `\d name*` into: `'^(name.*)$'` after `OPERATOR(pg_catalog.~)`.
fn name_pattern(q: &str) -> Option<Regex> {
    let at = q.find("relname OPERATOR(pg_catalog.~) '")?;
    let rest = &q[at + "relname OPERATOR(pg_catalog.~) '".len()..];
    let end = rest.find('\'')?;
    Regex::new(&rest[..end]).ok()
}

/// The OID in `… = '16385'` after `marker`.
fn oid_after(q: &str, marker: &str) -> Option<u64> {
    let at = q.find(marker)?;
    let rest = q[at + marker.len()..].trim_start().trim_start_matches('=').trim_start().trim_start_matches('\'');
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// PostgreSQL's `format_type` of a column type.
fn format_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Text { max_len: Some(n) } => format!("character varying({n})"),
        ColumnType::Timestamp => "timestamp without time zone".into(),
        other => other.sql_name(),
    }
}

fn index_def(t: &TableDef, idx_name: &str, unique: bool, cols: &[usize], kind: &IndexKind) -> String {
    let names: Vec<&str> = cols.iter().map(|&c| t.columns[c].name.as_str()).collect();
    match kind {
        IndexKind::BTree => format!(
            "CREATE {}INDEX {idx_name} ON public.{} USING btree ({})",
            if unique { "UNIQUE " } else { "" },
            t.name,
            names.join(", ")
        ),
        IndexKind::Hnsw { metric, m, ef_construction } => format!(
            "CREATE INDEX {idx_name} ON public.{} USING hnsw ({} {}) WITH (m='{m}', ef_construction='{ef_construction}')",
            t.name,
            names.join(", "),
            metric.opclass()
        ),
    }
}

/// Answers `query` if it is a catalog query of a PostgreSQL client; `None` otherwise.
pub async fn answer(state: &NodeContext, query: &str) -> Option<PgWireResult<Vec<StatementResult>>> {
    if !query.contains("pg_catalog.") {
        return None;
    }
    let catalog = match state.sql.catalog() {
        Ok(c) => c,
        Err(e) => return Some(Err(crate::error::to_pg(&e.into()))),
    };
    let result = if query.contains("FROM pg_catalog.pg_class c") && query.contains("as \"Schema\"") {
        Some(list_relations(&catalog, query))
    } else if query.contains("c.relname OPERATOR(pg_catalog.~)") && query.contains("SELECT c.oid,") {
        Some(lookup(&catalog, query))
    } else if query.contains("c.relchecks, c.relkind, c.relhasindex") {
        oid_after(query, "WHERE c.oid").map(|oid| table_info(&catalog, oid))
    } else if query.contains("FROM pg_catalog.pg_attribute a") && query.contains("a.attnum > 0") {
        oid_after(query, "WHERE a.attrelid").map(|oid| columns(&catalog, oid))
    } else if query.contains("pg_catalog.pg_index i") && query.contains("indisprimary") {
        oid_after(query, "WHERE c.oid").map(|oid| indexes(&catalog, oid))
    } else {
        None
    };
    // Any other catalog query (rules, policies, publications, inheritance, statistics…): none.
    Some(Ok(vec![result.unwrap_or_else(|| rows(&[], vec![]))]))
}

fn find_oid(catalog: &Catalog, oid: u64) -> Option<&TableDef> {
    catalog.tables.values().find(|t| table_oid(t) == oid)
}

/// `\d`, `\dt`, `\di` (optionally with a pattern).
fn list_relations(catalog: &Catalog, q: &str) -> StatementResult {
    let kinds = q.split("c.relkind IN (").nth(1).and_then(|r| r.split(')').next()).unwrap_or("");
    let pattern = name_pattern(q);
    let matches = |name: &str| pattern.as_ref().is_none_or(|p| p.is_match(name));
    let with_table = q.contains("as \"Table\"");
    let mut data = Vec::new();
    for t in catalog.tables.values() {
        if kinds.contains("'r'") && matches(&t.name) {
            let mut row = vec![s("public"), s(&t.name), s("table"), s("quorumdb")];
            if with_table {
                row.push(None);
            }
            data.push(row);
        }
        if kinds.contains("'i'") {
            let mut names: Vec<String> = Vec::new();
            if !t.primary_key.is_empty() {
                names.push(format!("{}_pkey", t.name));
            }
            names.extend(t.indexes.iter().map(|i| i.name.clone()));
            for n in names.into_iter().filter(|n| matches(n)) {
                let mut row = vec![s("public"), s(n), s("index"), s("quorumdb")];
                if with_table {
                    row.push(s(&t.name));
                }
                data.push(row);
            }
        }
    }
    data.sort();
    let mut cols = vec!["Schema", "Name", "Type", "Owner"];
    if with_table {
        cols.push("Table");
    }
    rows(&cols, data)
}

/// `\d name`: which relations the name matches.
fn lookup(catalog: &Catalog, q: &str) -> StatementResult {
    let pattern = name_pattern(q);
    let data = catalog
        .tables
        .values()
        .filter(|t| pattern.as_ref().is_none_or(|p| p.is_match(&t.name)))
        .map(|t| vec![s(table_oid(t)), s("public"), s(&t.name)])
        .collect();
    rows(&["oid", "nspname", "relname"], data)
}

/// The relation flags psql reads before describing a table (psql 15's column list).
fn table_info(catalog: &Catalog, oid: u64) -> StatementResult {
    let cols = [
        "relchecks",
        "relkind",
        "relhasindex",
        "relhasrules",
        "relhastriggers",
        "relrowsecurity",
        "relforcerowsecurity",
        "relhasoids",
        "relispartition",
        "reloptions",
        "reltablespace",
        "reloftype",
        "relpersistence",
        "relreplident",
        "amname",
    ];
    let data = find_oid(catalog, oid)
        .map(|t| {
            vec![
                s(0),
                s("r"),
                flag(!t.primary_key.is_empty() || !t.indexes.is_empty()),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                flag(false),
                s(""),
                s(0),
                s(""),
                s("p"),
                s("d"),
                s("heap"),
            ]
        })
        .into_iter()
        .collect();
    rows(&cols, data)
}

/// `\d table`'s column list: name, type, default, not null, collation, identity, generated.
fn columns(catalog: &Catalog, oid: u64) -> StatementResult {
    let cols = ["attname", "format_type", "default", "attnotnull", "attcollation", "attidentity", "attgenerated"];
    let data = find_oid(catalog, oid)
        .map(|t| {
            t.visible()
                .map(|i| {
                    let c = &t.columns[i];
                    vec![s(&c.name), s(format_type(&c.ty)), c.default.clone(), flag(!c.nullable), None, s(""), s("")]
                })
                .collect()
        })
        .unwrap_or_default();
    rows(&cols, data)
}

/// `\d table`'s "Indexes:" footer (psql 15's column list).
fn indexes(catalog: &Catalog, oid: u64) -> StatementResult {
    let cols = [
        "relname",
        "indisprimary",
        "indisunique",
        "indisclustered",
        "indisvalid",
        "pg_get_indexdef",
        "pg_get_constraintdef",
        "contype",
        "condeferrable",
        "condeferred",
        "indisreplident",
        "reltablespace",
    ];
    let mut data = Vec::new();
    if let Some(t) = find_oid(catalog, oid) {
        if !t.primary_key.is_empty() {
            let name = format!("{}_pkey", t.name);
            let key: Vec<&str> = t.primary_key.iter().map(|&c| t.columns[c].name.as_str()).collect();
            data.push(vec![
                s(&name),
                flag(true),
                flag(true),
                flag(false),
                flag(true),
                s(index_def(t, &name, true, &t.primary_key, &IndexKind::BTree)),
                s(format!("PRIMARY KEY ({})", key.join(", "))),
                s("p"),
                flag(false),
                flag(false),
                flag(false),
                s(0),
            ]);
        }
        for i in &t.indexes {
            let constraint = i.unique.then(|| {
                let key: Vec<&str> = i.columns.iter().map(|&c| t.columns[c].name.as_str()).collect();
                format!("UNIQUE ({})", key.join(", "))
            });
            data.push(vec![
                s(&i.name),
                flag(false),
                flag(i.unique),
                flag(false),
                flag(true),
                s(index_def(t, &i.name, i.unique, &i.columns, &i.kind)),
                constraint.clone(),
                constraint.map(|_| "u".to_string()),
                flag(false),
                flag(false),
                flag(false),
                s(0),
            ]);
        }
    }
    rows(&cols, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_oids_are_found() {
        let q = "WHERE c.relname OPERATOR(pg_catalog.~) '^(us.*)$' COLLATE pg_catalog.default";
        assert!(name_pattern(q).unwrap().is_match("users"));
        assert!(!name_pattern(q).unwrap().is_match("orders"));
        assert_eq!(oid_after("FROM x WHERE c.oid = '16390';", "WHERE c.oid"), Some(16390));
        assert_eq!(oid_after("WHERE a.attrelid = '16385' AND a.attnum > 0", "a.attrelid"), Some(16385));
        assert_eq!(format_type(&ColumnType::Text { max_len: Some(20) }), "character varying(20)");
    }
}
