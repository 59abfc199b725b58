//! Runs sqllogictest files in SQLite's classic format (its public `test/` corpus: `select1.test`,
//! `evidence/*`, `index/`, `random/`) through the PostgreSQL wire protocol, record by record, and
//! counts what passes — against QuorumDB or against PostgreSQL itself, so both are measured by
//! the same code.
//!
//! The rules are the classic runner's: `skipif`/`onlyif` against one label (`postgresql`),
//! `hash-threshold`, `nosort`/`rowsort`/`valuesort`, one value per result line, and values
//! rendered by the type letter the record expects — `I` an integer (`atoi`-style), `R` with three
//! decimals, `T` as text with `(empty)` for the empty string and `@` for unprintable bytes;
//! `NULL` for null. Records are parsed by the `sqllogictest` crate; this module only runs them.
//!
//! Records go round-robin over the connections given, so in a cluster every node answers some.

use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use sqllogictest::{Condition, DefaultColumnType, QueryExpect, Record, SortMode, StatementExpect};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Results of more values than this are compared by hash: the classic runner's default, which
/// the corpus' expected results assume (a file may change it with `hash-threshold`).
pub const DEFAULT_HASH_THRESHOLD: usize = 8;

/// How long one record may run before it counts as an error.
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);

/// How one record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Answered, but not what the file expects (a wrong result, or success where an error was due).
    Fail,
    /// An error where the file expects success.
    Error,
}

/// A record that did not pass.
#[derive(Debug, Clone)]
pub struct Miss {
    pub line: u32,
    pub outcome: Outcome,
    pub sql: String,
    pub detail: String,
}

/// Counts for one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub path: PathBuf,
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub skipped: u64,
    pub misses: Vec<Miss>,
}

impl FileReport {
    pub fn run(&self) -> u64 {
        self.passed + self.failed + self.errored
    }

    /// Passed records as a percentage of those run (100 when none ran).
    pub fn pass_rate(&self) -> f64 {
        if self.run() == 0 { 100.0 } else { 100.0 * self.passed as f64 / self.run() as f64 }
    }
}

/// Connections to the servers under test, used round-robin, one record each.
pub struct Target {
    urls: Vec<String>,
    clients: Vec<Option<Client>>,
    next: usize,
    label: String,
}

impl Target {
    /// `urls` are libpq-style connection strings (`host=127.0.0.1 port=5432 user=postgres`).
    pub fn new(urls: Vec<String>, label: &str) -> Self {
        let clients = urls.iter().map(|_| None).collect();
        Target { urls, clients, next: 0, label: label.to_string() }
    }

    async fn client(&mut self, i: usize) -> Result<&Client, String> {
        if self.clients[i].as_ref().is_none_or(Client::is_closed) {
            let (client, conn) =
                tokio_postgres::connect(&self.urls[i], NoTls).await.map_err(|e| format!("connect: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.clients[i] = Some(client);
        }
        self.clients[i].as_ref().ok_or_else(|| "no connection".to_string())
    }

    /// Runs `sql` on the next connection: the rows as text (`None` for null), or the error.
    pub async fn execute(&mut self, sql: &str) -> Result<Execution, String> {
        let i = self.next % self.urls.len();
        self.next += 1;
        let client = self.client(i).await?;
        match tokio::time::timeout(RECORD_TIMEOUT, client.simple_query(sql)).await {
            Err(_) => {
                // The connection may still be busy with it: start the next record on a new one.
                self.clients[i] = None;
                Err(format!("no answer within {RECORD_TIMEOUT:?}"))
            }
            Ok(Err(e)) => Err(match e.as_db_error() {
                Some(db) => format!("{} {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
            Ok(Ok(messages)) => {
                let mut out = Execution::default();
                for m in messages {
                    match m {
                        SimpleQueryMessage::Row(row) => {
                            out.rows.push((0..row.len()).map(|c| row.get(c).map(str::to_string)).collect());
                        }
                        SimpleQueryMessage::CommandComplete(n) => out.affected = n,
                        _ => {}
                    }
                }
                Ok(out)
            }
        }
    }

    /// Runs one file from a clean slate; tables and views it created are dropped afterwards.
    pub async fn run_file(&mut self, path: &Path) -> Result<FileReport, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let records = sqllogictest::parse_with_name::<DefaultColumnType>(
            &preprocess(&text, &self.label),
            path.display().to_string(),
        )
        .map_err(|e| e.to_string())?;
        let mut report = FileReport { path: path.to_path_buf(), ..FileReport::default() };
        let mut threshold = DEFAULT_HASH_THRESHOLD;
        let mut created: Vec<(bool, String)> = Vec::new();
        for record in records {
            let (line, conditions, sql) = match &record {
                Record::Statement { loc, conditions, sql, .. } | Record::Query { loc, conditions, sql, .. } => {
                    (loc.line(), conditions, sql.clone())
                }
                Record::HashThreshold { threshold: t, .. } => {
                    threshold = *t as usize;
                    continue;
                }
                Record::Halt { .. } => break,
                _ => continue,
            };
            if conditions.iter().any(|c| skips(c, &self.label)) {
                report.skipped += 1;
                continue;
            }
            let result = self.execute(&sql).await;
            if let (Some(object), Ok(_)) = (created_object(&sql), &result) {
                created.push(object);
            }
            let (outcome, detail) = match &record {
                Record::Statement { expected, .. } => judge_statement(expected, result),
                Record::Query { expected, .. } => judge_query(expected, result, threshold),
                _ => continue,
            };
            match outcome {
                Outcome::Pass => report.passed += 1,
                Outcome::Fail => report.failed += 1,
                Outcome::Error => report.errored += 1,
            }
            if outcome != Outcome::Pass {
                report.misses.push(Miss { line, outcome, sql, detail });
            }
        }
        // Views before tables, newest first, so nothing depends on what is dropped.
        for (view, name) in created.iter().rev().filter(|(v, _)| *v).chain(created.iter().rev().filter(|(v, _)| !v)) {
            let kind = if *view { "VIEW" } else { "TABLE" };
            let _ = self.execute(&format!("DROP {kind} IF EXISTS {name}")).await;
        }
        Ok(report)
    }
}

/// What a statement answered.
#[derive(Debug, Default)]
pub struct Execution {
    pub rows: Vec<Vec<Option<String>>>,
    pub affected: u64,
}

/// What the parser cannot take from a classic file, resolved for `label`: comments after
/// conditions (`skipif mysql # empty RHS`), and conditions on `halt` (`onlyif mssql` + `halt`
/// stops the file only on that engine; the parser would stop it everywhere).
fn preprocess(text: &str, label: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with("skipif") || line.starts_with("onlyif") {
            pending.push(line.split('#').next().unwrap_or(line).trim_end());
            continue;
        }
        if line.trim() == "halt" {
            let skipped = pending.iter().any(|c| match c.split_whitespace().collect::<Vec<_>>()[..] {
                ["skipif", l] => l == label,
                ["onlyif", l] => l != label,
                _ => false,
            });
            pending.clear();
            if skipped {
                continue;
            }
        }
        for condition in pending.drain(..) {
            out.push_str(condition);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn skips(condition: &Condition, label: &str) -> bool {
    match condition {
        Condition::OnlyIf { label: l } => l != label,
        Condition::SkipIf { label: l } => l == label,
    }
}

/// `(is_view, name)` of the table or view a `CREATE` statement makes.
fn created_object(sql: &str) -> Option<(bool, String)> {
    let words: Vec<String> = sql.split_whitespace().take(8).map(str::to_ascii_uppercase).collect();
    if words.first().map(String::as_str) != Some("CREATE") {
        return None;
    }
    let mut i = 1;
    while words.get(i).is_some_and(|w| ["TEMP", "TEMPORARY", "OR", "REPLACE"].contains(&w.as_str())) {
        i += 1;
    }
    let view = match words.get(i).map(String::as_str) {
        Some("VIEW") => true,
        Some("TABLE") => false,
        _ => return None,
    };
    i += 1;
    if words.get(i).map(String::as_str) == Some("IF") {
        i += 3;
    }
    let raw = sql.split_whitespace().nth(i)?;
    let name: String = raw.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '"').collect();
    (!name.is_empty()).then_some((view, name))
}

fn judge_statement(expected: &StatementExpect, result: Result<Execution, String>) -> (Outcome, String) {
    match (expected, result) {
        (StatementExpect::Error(_), Err(_)) => (Outcome::Pass, String::new()),
        (StatementExpect::Error(_), Ok(_)) => (Outcome::Fail, "succeeded, an error was expected".into()),
        (_, Err(e)) => (Outcome::Error, e),
        (StatementExpect::Count(n), Ok(done)) if done.affected != *n => {
            (Outcome::Fail, format!("{} rows affected, {n} expected", done.affected))
        }
        _ => (Outcome::Pass, String::new()),
    }
}

fn judge_query(
    expected: &QueryExpect<DefaultColumnType>,
    result: Result<Execution, String>,
    threshold: usize,
) -> (Outcome, String) {
    let (types, sort_mode, results) = match (expected, result) {
        (QueryExpect::Error(_), Err(_)) => return (Outcome::Pass, String::new()),
        (QueryExpect::Error(_), Ok(_)) => return (Outcome::Fail, "succeeded, an error was expected".into()),
        (_, Err(e)) => return (Outcome::Error, e),
        (QueryExpect::Results { types, sort_mode, results, .. }, Ok(done)) => {
            if let Some(row) = done.rows.first()
                && row.len() != types.len()
            {
                return (Outcome::Fail, format!("{} columns, {} expected", row.len(), types.len()));
            }
            let rows: Vec<Vec<String>> = done
                .rows
                .iter()
                .map(|row| row.iter().zip(types).map(|(v, t)| render(v.as_deref(), t)).collect())
                .collect();
            (rows, *sort_mode, results)
        }
    };
    let values = arrange(types, sort_mode);
    let actual = if threshold > 0 && values.len() > threshold { vec![hash(&values)] } else { values };
    if actual == *results || tokens(&actual) == tokens(results) {
        return (Outcome::Pass, String::new());
    }
    let show = |v: &[String]| v.iter().take(12).cloned().collect::<Vec<_>>().join(" | ");
    (Outcome::Fail, format!("got [{}], expected [{}]", show(&actual), show(results)))
}

/// The values in the order the file lists them, one per line.
fn arrange(mut rows: Vec<Vec<String>>, sort_mode: Option<SortMode>) -> Vec<String> {
    match sort_mode {
        Some(SortMode::RowSort) => {
            rows.sort();
            rows.into_iter().flatten().collect()
        }
        Some(SortMode::ValueSort) => {
            let mut values: Vec<String> = rows.into_iter().flatten().collect();
            values.sort();
            values
        }
        _ => rows.into_iter().flatten().collect(),
    }
}

/// `N values hashing to <md5>`: the MD5 of every value followed by a newline.
pub fn hash(values: &[String]) -> String {
    let mut md5 = Md5::new();
    for v in values {
        md5.update(v.as_bytes());
        md5.update(b"\n");
    }
    let digest: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{} values hashing to {digest}", values.len())
}

fn tokens(lines: &[String]) -> Vec<&str> {
    lines.iter().flat_map(|l| l.split_whitespace()).collect()
}

/// A value as the classic runner prints it for the type letter the record expects.
pub fn render(value: Option<&str>, ty: &DefaultColumnType) -> String {
    let Some(v) = value else { return "NULL".into() };
    match ty {
        DefaultColumnType::Integer => leading_integer(v).to_string(),
        DefaultColumnType::FloatingPoint => format!("{:.3}", leading_float(v)),
        _ if v.is_empty() => "(empty)".into(),
        _ => v.chars().map(|c| if (' '..='~').contains(&c) { c } else { '@' }).collect(),
    }
}

/// The integer a C `atoll` reads from the start of `v`, after an exact parse of a decimal
/// (`-7305.0000` is -7305; `1.9` is 1; `t`/`f` are 1/0).
fn leading_integer(v: &str) -> i64 {
    match v {
        "t" => return 1,
        "f" => return 0,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return i;
    }
    if let Ok(f) = v.parse::<f64>() {
        return f.trunc() as i64;
    }
    let t = v.trim_start();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let n: String = digits.chars().take_while(char::is_ascii_digit).collect();
    sign * n.parse::<i64>().unwrap_or(0)
}

/// The number a C `atof` reads from `v` (0 when it is not a number).
fn leading_float(v: &str) -> f64 {
    v.trim().parse::<f64>().unwrap_or_else(|_| leading_integer(v) as f64)
}

/// Every `*.test` file at or below `path`, sorted.
pub fn test_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.extend(test_files(&p));
            } else if p.extension().is_some_and(|e| e == "test") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_classic_runner() {
        assert_eq!(render(None, &DefaultColumnType::Integer), "NULL");
        assert_eq!(render(Some("-7305.0000"), &DefaultColumnType::Integer), "-7305");
        assert_eq!(render(Some("12"), &DefaultColumnType::FloatingPoint), "12.000");
        assert_eq!(render(Some("0.1235"), &DefaultColumnType::FloatingPoint), "0.123");
        assert_eq!(render(Some(""), &DefaultColumnType::Text), "(empty)");
        assert_eq!(render(Some("a\tb"), &DefaultColumnType::Text), "a@b");
    }

    #[test]
    fn hashes_like_the_classic_runner() {
        // md5("1\n2\n") computed independently (`printf '1\n2\n' | md5sum`).
        assert_eq!(hash(&["1".into(), "2".into()]), "2 values hashing to 6ddb4095eb719e2a9f0a3f95677d24e0");
    }

    #[test]
    fn resolves_conditional_halts() {
        let text = "onlyif mssql # not here\nhalt\n\nskipif mysql # comment\nquery I\nSELECT 1\n----\n1\n";
        assert_eq!(preprocess(text, "postgresql"), "\nskipif mysql\nquery I\nSELECT 1\n----\n1\n");
        assert_eq!(preprocess("skipif mysql\nhalt\n", "postgresql"), "halt\n");
    }

    #[test]
    fn finds_created_objects() {
        assert_eq!(created_object("CREATE TABLE t1(a INTEGER)"), Some((false, "t1".into())));
        assert_eq!(created_object("create view v1 AS SELECT 1"), Some((true, "v1".into())));
        assert_eq!(created_object("CREATE TABLE IF NOT EXISTS t2 (x int)"), Some((false, "t2".into())));
        assert_eq!(created_object("CREATE INDEX i ON t(a)"), None);
    }
}
