//! Tab completion for the interactive shell: SQL keywords, table names (refreshed by the
//! shell after DDL), dot-commands and their arguments. [`completions`] is the pure part;
//! [`ShellHelper`] plugs it into rustyline.

use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::LEVELS;

const KEYWORDS: &[&str] = &[
    "ADD",
    "ALL",
    "ALTER",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "AVG",
    "BEGIN",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "CASE",
    "CAST",
    "COLUMN",
    "COMMIT",
    "CONSISTENCY",
    "COUNT",
    "CREATE",
    "CROSS",
    "DATE",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DOUBLE",
    "DROP",
    "ELSE",
    "END",
    "EXISTS",
    "EXPLAIN",
    "FALSE",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "HNSW",
    "IF",
    "ILIKE",
    "IN",
    "INDEX",
    "INNER",
    "INSERT",
    "INT",
    "INTEGER",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MAX",
    "MIN",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "PRECISION",
    "PRIMARY",
    "REAL",
    "RESET",
    "RETURNING",
    "RIGHT",
    "ROLLBACK",
    "SELECT",
    "SET",
    "SHOW",
    "SMALLINT",
    "SUM",
    "TABLE",
    "TEXT",
    "THEN",
    "TIMESTAMP",
    "TRUE",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USING",
    "VALUES",
    "VARCHAR",
    "VECTOR",
    "WHEN",
    "WHERE",
    "WITH",
];

const COMMANDS: &[&str] = &[
    ".consistency",
    ".exit",
    ".help",
    ".join",
    ".leader",
    ".mode",
    ".nodes",
    ".quit",
    ".read",
    ".remove",
    ".schema",
    ".snapshot",
    ".tables",
    ".timer",
    ".transfer",
];

/// Where the word being completed starts in `line` (cursor at `pos`), and the candidates.
pub fn completions(line: &str, pos: usize, tables: &[String]) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_' || *c == '.')
        .last()
        .map_or(pos, |(i, _)| i);
    let word = &before[start..];
    let lead = before.trim_start();
    let matching = |options: &mut dyn Iterator<Item = String>| -> Vec<String> {
        let mut v: Vec<String> =
            options.filter(|o| o.get(..word.len()).is_some_and(|p| p.eq_ignore_ascii_case(word))).collect();
        v.sort();
        v.dedup();
        v
    };
    if lead.starts_with('.') {
        let first_word = !lead.contains(char::is_whitespace);
        if first_word {
            return (start, matching(&mut COMMANDS.iter().map(|c| c.to_string())));
        }
        let cmd = lead.split_whitespace().next().unwrap_or_default();
        let args: Vec<String> = match cmd {
            ".mode" => ["table", "csv", "json", "line"].iter().map(|s| s.to_string()).collect(),
            ".consistency" => LEVELS.iter().map(|s| s.to_string()).collect(),
            ".timer" => vec!["on".into(), "off".into()],
            ".schema" => tables.to_vec(),
            _ => vec![],
        };
        return (start, matching(&mut args.into_iter()));
    }
    if word.is_empty() {
        return (pos, vec![]);
    }
    let lower = word.chars().all(|c| !c.is_uppercase());
    let keywords = KEYWORDS.iter().map(|k| if lower { k.to_lowercase() } else { k.to_string() });
    let mut out = matching(&mut tables.iter().cloned());
    out.extend(matching(&mut keywords.collect::<Vec<_>>().into_iter()));
    (start, out)
}

/// The rustyline helper: completion only (no hints, highlighting or validation; statement
/// boundaries are the shell's business, see `split`).
pub struct ShellHelper {
    pub tables: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let tables = self.tables.lock().map(|t| t.clone()).unwrap_or_default();
        let (start, words) = completions(line, pos, &tables);
        Ok((start, words.into_iter().map(|w| Pair { display: w.clone(), replacement: w }).collect()))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<String> {
        vec!["users".into(), "orders".into(), "Upper".into()]
    }

    #[test]
    fn keywords_keep_the_typed_case() {
        assert_eq!(completions("SEL", 3, &[]), (0, vec!["SELECT".to_string()]));
        assert_eq!(completions("sel", 3, &[]), (0, vec!["select".to_string()]));
        assert_eq!(completions("select * fr", 11, &[]), (9, vec!["from".to_string()]));
    }

    #[test]
    fn table_names_complete() {
        let (start, c) = completions("select * from us", 16, &tables());
        assert_eq!(start, 14);
        assert_eq!(c, vec!["users".to_string(), "using".to_string()]);
        let (_, c) = completions("select * from o", 15, &tables());
        assert_eq!(
            c,
            vec![
                "orders".to_string(),
                "offset".to_string(),
                "on".to_string(),
                "or".to_string(),
                "order".to_string(),
                "outer".to_string()
            ]
        );
    }

    #[test]
    fn dot_commands_and_their_arguments() {
        assert_eq!(completions(".ta", 3, &[]), (0, vec![".tables".to_string()]));
        assert_eq!(completions(".t", 2, &[]).1, vec![".tables", ".timer", ".transfer"]);
        assert_eq!(completions(".mode c", 7, &[]), (6, vec!["csv".to_string()]));
        assert_eq!(completions(".consistency ", 13, &[]).1, vec!["lease", "linearizable", "stale"]);
        assert_eq!(completions(".schema u", 9, &tables()).1, vec!["Upper", "users"]);
        assert!(completions(".nodes x", 8, &tables()).1.is_empty());
    }

    #[test]
    fn nothing_to_complete() {
        assert_eq!(completions("select ", 7, &tables()), (7, vec![]));
        assert_eq!(completions("", 0, &tables()), (0, vec![]));
        // The cursor in the middle of the line completes the word before it.
        assert_eq!(completions("sel x", 3, &[]), (0, vec!["select".to_string()]));
    }
}
