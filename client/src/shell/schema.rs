//! `.tables` and `.schema`: the catalog queries the shell sends and the `CREATE TABLE` text it
//! prints.
//!
//! Table names come from `information_schema.tables`. A table's columns, defaults, NOT NULL
//! and indexes come from `pg_catalog` through the same queries as psql 15's `\d TABLE` (a
//! relation lookup by name, the `pg_attribute` column list, the `pg_index` list), so any
//! server psql can describe, PostgreSQL or QuorumDB, answers them.

/// Lists the user tables (one column, `name`).
pub const TABLES_SQL: &str = "SELECT table_name AS name FROM information_schema.tables \
     WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY table_name";

/// A column as `.schema` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: String,
    pub default: Option<String>,
    pub not_null: bool,
}

/// An index as `.schema` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub primary: bool,
    /// `CREATE [UNIQUE] INDEX …` (`pg_get_indexdef`).
    pub definition: Option<String>,
    /// `PRIMARY KEY (a, b)` (`pg_get_constraintdef`), for the primary key.
    pub constraint: Option<String>,
}

/// A regular expression matching exactly `name` (psql's `\d` takes a pattern).
fn exact_pattern(name: &str) -> String {
    let mut p = String::from("^(");
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(")$");
    p
}

/// A string as a SQL literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// psql's lookup of a relation by name: answers `oid, nspname, relname`.
pub fn lookup_sql(table: &str) -> String {
    format!(
        "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n\
         WHERE c.relname OPERATOR(pg_catalog.~) {} COLLATE pg_catalog.default\n  \
         AND pg_catalog.pg_table_is_visible(c.oid)\n  AND c.relkind IN ('r','p')\n\
         ORDER BY 2, 3;",
        quote_literal(&exact_pattern(table))
    )
}

/// psql's column list of a relation: `attname, format_type, default, attnotnull, …`.
pub fn columns_sql(oid: &str) -> String {
    format!(
        "SELECT a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n  \
         (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n   FROM pg_catalog.pg_attrdef d\n   \
         WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n  a.attnotnull\n\
         FROM pg_catalog.pg_attribute a\nWHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped\n\
         ORDER BY a.attnum;",
        quote_literal(oid)
    )
}

/// psql's index list of a relation: `relname, indisprimary, indisunique, indisclustered,
/// indisvalid, pg_get_indexdef, pg_get_constraintdef, …`.
pub fn indexes_sql(oid: &str) -> String {
    format!(
        "SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, \
         pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),\n  \
         pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, \
         i.indisreplident, c2.reltablespace\n\
         FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i\n  \
         LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid \
         AND contype IN ('p','u','x'))\n\
         WHERE c.oid = {} AND c.oid = i.indrelid AND i.indexrelid = c2.oid\n\
         ORDER BY i.indisprimary DESC, c2.relname;",
        quote_literal(oid)
    )
}

/// An identifier as SQL must spell it: bare if lower-case letters, digits and `_`, else quoted.
pub fn quote_ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

/// The `CREATE TABLE` statement of a table, then its secondary indexes' `CREATE INDEX`.
pub fn create_table_text(table: &str, columns: &[ColumnDef], indexes: &[IndexDef]) -> String {
    let mut lines: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut l = format!("    {} {}", quote_ident(&c.name), c.ty);
            if let Some(d) = &c.default {
                l.push_str(&format!(" DEFAULT {d}"));
            }
            if c.not_null {
                l.push_str(" NOT NULL");
            }
            l
        })
        .collect();
    lines
        .extend(indexes.iter().filter(|i| i.primary).filter_map(|i| i.constraint.as_ref().map(|c| format!("    {c}"))));
    let mut out = format!("CREATE TABLE {} (\n{}\n);\n", quote_ident(table), lines.join(",\n"));
    for i in indexes.iter().filter(|i| !i.primary) {
        if let Some(d) = &i.definition {
            out.push_str(&format!("{d};\n"));
        }
    }
    out
}

/// PostgreSQL's text form of a boolean.
pub fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("t" | "true" | "TRUE" | "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, default: Option<&str>, not_null: bool) -> ColumnDef {
        ColumnDef { name: name.into(), ty: ty.into(), default: default.map(str::to_string), not_null }
    }

    #[test]
    fn create_table_with_key_defaults_and_indexes() {
        let cols = [
            col("id", "bigint", None, true),
            col("Name", "character varying(20)", Some("'x'::text"), false),
            col("score", "double precision", None, false),
        ];
        let idx = [
            IndexDef {
                primary: true,
                definition: Some("CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)".into()),
                constraint: Some("PRIMARY KEY (id)".into()),
            },
            IndexDef {
                primary: false,
                definition: Some("CREATE INDEX t_score ON public.t USING btree (score)".into()),
                constraint: None,
            },
        ];
        assert_eq!(
            create_table_text("t", &cols, &idx),
            "CREATE TABLE t (\n    id bigint NOT NULL,\n    \"Name\" character varying(20) DEFAULT 'x'::text,\n    \
             score double precision,\n    PRIMARY KEY (id)\n);\n\
             CREATE INDEX t_score ON public.t USING btree (score);\n"
        );
        assert_eq!(create_table_text("My T", &cols[..1], &[]), "CREATE TABLE \"My T\" (\n    id bigint NOT NULL\n);\n");
    }

    #[test]
    fn identifiers_and_literals_are_quoted_when_needed() {
        assert_eq!(quote_ident("users"), "users");
        assert_eq!(quote_ident("_t1"), "_t1");
        assert_eq!(quote_ident("Users"), "\"Users\"");
        assert_eq!(quote_ident("a b"), "\"a b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn lookup_matches_exactly_one_name() {
        assert_eq!(exact_pattern("users"), "^(users)$");
        assert_eq!(exact_pattern("a.b$c"), "^(a\\.b\\$c)$");
        let q = lookup_sql("it's");
        assert!(q.contains("OPERATOR(pg_catalog.~) '^(it''s)$'"), "{q}");
    }

    #[test]
    fn booleans() {
        assert!(is_true(Some("t")));
        assert!(!is_true(Some("f")));
        assert!(!is_true(None));
    }
}
