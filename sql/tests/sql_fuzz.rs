//! Fuzzing the SQL engine (parser, planner, DataFusion reads, the JSON rendering of results) on
//! an in-memory state, with two generators:
//!
//! - `grammar`: random requests from a small SQL grammar (CREATE TABLE / INDEX, INSERT,
//!   SELECT with expressions, joins, subqueries, aggregates, GROUP BY / ORDER BY / LIMIT, CTEs,
//!   set operations, UPDATE / DELETE, CASE, casts, unary operators, deep nesting, long IN
//!   lists) over a small fixed schema;
//! - `corpus_mutations`: the statement and query records of the SQL logic tests
//!   (`tests/slt/*.slt`), mutated (tokens deleted, duplicated, swapped or inserted, bytes
//!   flipped, text truncated, literals replaced with extremes such as 9223372036854775807,
//!   -0.0, NaN, '' or a very long string) and run on the state the file builds.
//!
//! The property, for every request: it answers `Ok` or an error with a SQLSTATE that is not an
//! internal one (XX000, 58030), it never panics, and it finishes within [`STATEMENT_TIMEOUT`].
//! A request that fails leaves the state exactly as it was (compared by a digest of every
//! key and value); the grammar also sends requests built to fail halfway (a valid write, a
//! random statement, then a statement that must fail) to check that on purpose.
//!
//! `regressions` replays every input these targets found (each kept as a case there).
//!
//! ```text
//! cargo test -p quorumdb-sql --test sql_fuzz        # CI: 200 + 400 cases, ~10 s (debug)
//! # The long mode, about 3 minutes each (debug):
//! QUORUMDB_FUZZ_CASES=8000 cargo test -p quorumdb-sql --test sql_fuzz -- --nocapture grammar
//! QUORUMDB_FUZZ_CASES=30000 cargo test -p quorumdb-sql --test sql_fuzz -- --nocapture corpus_mutations
//! QUORUMDB_FUZZ_SEED=42 ...                         # another fixed seed
//! QUORUMDB_FUZZ_VERBOSE=1 ...                       # every request and error, as it runs
//! QUORUMDB_FUZZ_PROBE=file ... -- --ignored probe   # run the requests of a file, one a line
//! ```
//!
//! By default the seed is fixed (the same cases on every CI run); with `QUORUMDB_FUZZ_CASES`
//! and no `QUORUMDB_FUZZ_SEED` it is random and printed. A failing case is shrunk by proptest
//! and printed with its SQL; a request that hangs ends the run at once (its thread stays
//! busy) and is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

mod common;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Db;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use quorumdb_sql::Engine;
use quorumdb_sql::memory::MemoryState;
use quorumdb_state::format::FormatVersion;
use quorumdb_state::{AppliedState, Command, CommandResult, Consistency, Proposer, ReadInfo, ReplicationError};

/// The longest one request may take (a debug build on a busy machine included).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Running requests and checking the property

/// How many cases a target runs: `default`, or `QUORUMDB_FUZZ_CASES`.
fn cases(default: u32) -> u32 {
    std::env::var("QUORUMDB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn long_mode() -> bool {
    std::env::var("QUORUMDB_FUZZ_CASES").is_ok()
}

/// A runner with `n` cases: a fixed seed unless `QUORUMDB_FUZZ_SEED` says otherwise (or the
/// long mode runs without one: then a random seed, printed).
fn runner(name: &str, n: u32, fixed_seed: u64) -> TestRunner {
    let seed = match std::env::var("QUORUMDB_FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None if long_mode() => rand_seed(),
        None => fixed_seed,
    };
    eprintln!("{name}: {n} cases, seed {seed} (QUORUMDB_FUZZ_SEED={seed} runs them again)");
    TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        // A failing case is shrunk, but a hang costs the timeout per step: bounded.
        max_shrink_iters: 300,
        max_shrink_time: 120_000,
        ..Config::default()
    })
}

fn rand_seed() -> u64 {
    let mut h = DefaultHasher::new();
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}

/// The runtime requests run on: several workers, so a request stuck in a loop does not stop
/// the timer that reports it.
fn runtime() -> Rt {
    Rt(Some(tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().unwrap()))
}

/// A runtime that does not wait for its tasks when dropped: a request that hung keeps its
/// thread busy, and the test must still end (and report it).
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().unwrap()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Set when a request hung: the rest of the run is skipped (its task still holds a thread, and
/// shrinking would wait out the timeout again and again), and the hung request is reported.
static HUNG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn hung() -> bool {
    HUNG.load(std::sync::atomic::Ordering::Relaxed)
}

/// A digest of every key and value of the state.
fn digest(state: &MemoryState) -> u64 {
    let mut h = DefaultHasher::new();
    state
        .scan(b"", b"", &mut |k, v| {
            k.hash(&mut h);
            v.hash(&mut h);
            true
        })
        .unwrap();
    h.finish()
}

/// What the targets saw, for the summary.
#[derive(Default)]
struct Stats {
    requests: usize,
    ok: usize,
    /// Errors by SQLSTATE.
    errors: BTreeMap<&'static str, usize>,
    /// Failed requests whose state was compared before and after.
    unchanged_checked: usize,
    /// DataFusion's own "internal error" answers (its bugs; reported, not failed: 42000).
    datafusion_internal: BTreeMap<String, usize>,
    slowest: (Duration, String),
}

impl Stats {
    fn print(&self, name: &str, elapsed: Duration) {
        eprintln!(
            "{name}: {} requests in {:.1} s: {} ok, {} errors, {} failures checked unchanged; slowest {:?}: {}",
            self.requests,
            elapsed.as_secs_f64(),
            self.ok,
            self.errors.values().sum::<usize>(),
            self.unchanged_checked,
            self.slowest.0,
            shorten(&self.slowest.1, 200),
        );
        eprintln!("{name}: errors by SQLSTATE: {:?}", self.errors);
        for (m, n) in &self.datafusion_internal {
            eprintln!("{name}: DataFusion internal error x{n}: {}", shorten(m, 300));
        }
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// SQLSTATEs that mean a bug on our side: a request must never cause them.
const INTERNAL_STATES: &[&str] = &["XX000", "58030"];

/// How a request ended (when it kept the property).
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed(&'static str),
}

/// Runs `sql` on `db` as one request (parse, describe, execute, render as JSON) and checks the
/// property: no panic, no hang, no internal error, and a failure changes nothing.
async fn check(db: &Arc<Db>, sql: &str, stats: &Mutex<Stats>) -> Result<Outcome, TestCaseError> {
    if std::env::var("QUORUMDB_FUZZ_VERBOSE").is_ok() {
        eprintln!("> {}", shorten(sql, 400));
    }
    let before = digest(&db.state);
    let started = Instant::now();
    let task = {
        let (db, sql) = (db.clone(), sql.to_string());
        tokio::spawn(async move {
            // What pgwire's extended protocol does first: describe the statement.
            if let Ok(parsed) = db.engine.prepare(&sql) {
                let _ = db.engine.describe(&parsed).await;
            }
            let results = db.run(&sql).await?;
            quorumdb_sql::json::results_json(&results)
        })
    };
    let answer = match tokio::time::timeout(STATEMENT_TIMEOUT, task).await {
        Err(_) => {
            HUNG.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("HUNG: no answer in {STATEMENT_TIMEOUT:?}: {sql}");
            return Err(TestCaseError::fail(format!("no answer in {STATEMENT_TIMEOUT:?}: {sql}")));
        }
        Ok(Err(join)) => {
            let why = match join.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            return Err(TestCaseError::fail(format!("panicked ({why}): {sql}")));
        }
        Ok(Ok(answer)) => answer,
    };
    let took = started.elapsed();
    let mut st = stats.lock().unwrap();
    st.requests += 1;
    if took > st.slowest.0 {
        st.slowest = (took, sql.to_string());
    }
    match answer {
        Ok(_) => {
            st.ok += 1;
            Ok(Outcome::Ok)
        }
        Err(e) => {
            let code = e.sqlstate();
            let message = e.to_string();
            if std::env::var("QUORUMDB_FUZZ_VERBOSE").is_ok() {
                eprintln!("< [{code}] {}", shorten(&message, 300));
            }
            *st.errors.entry(code).or_default() += 1;
            if INTERNAL_STATES.contains(&code) || message.contains("panicked") {
                return Err(TestCaseError::fail(format!("internal error [{code}] {message}: {sql}")));
            }
            if code.len() != 5 {
                return Err(TestCaseError::fail(format!("not a SQLSTATE: {code:?} ({message}): {sql}")));
            }
            if message.contains("Internal error") || message.contains("This issue was likely caused by a bug") {
                let key = message.split(['\n', '.']).next().unwrap_or("").to_string();
                *st.datafusion_internal.entry(key).or_default() += 1;
            }
            st.unchanged_checked += 1;
            drop(st);
            let after = digest(&db.state);
            if before != after {
                return Err(TestCaseError::fail(format!(
                    "the request failed ([{code}] {message}) but changed the state: {sql}"
                )));
            }
            Ok(Outcome::Failed(code))
        }
    }
}

/// A proposer that applies commands to an in-memory state and keeps every command it was
/// given with whether it applied, so the state can be rebuilt later without planning anything
/// again ([`replay`]; rejected commands count too: they take a log index).
struct Recorder {
    state: Arc<MemoryState>,
    log: Mutex<Vec<(Vec<u8>, bool)>>,
}

#[async_trait::async_trait]
impl Proposer for Recorder {
    async fn propose(&self, command: Command) -> Result<CommandResult, ReplicationError> {
        let bytes = command.0.clone();
        let r = self.state.propose(command).await?;
        self.log.lock().unwrap().push((bytes, matches!(r, CommandResult::Applied(_))));
        Ok(r)
    }

    async fn read_barrier(&self, level: Consistency) -> Result<ReadInfo, ReplicationError> {
        self.state.read_barrier(level).await
    }

    fn format(&self) -> FormatVersion {
        Proposer::format(self.state.as_ref())
    }
}

/// Runs `requests` on a fresh state and returns the commands they proposed (errors ignored).
async fn record(requests: &[String]) -> Vec<(Vec<u8>, bool)> {
    let state = MemoryState::new();
    let engine = Engine::new(state.clone(), state.vectors());
    let rec = Recorder { state, log: Mutex::new(Vec::new()) };
    for sql in requests {
        if let Ok(parsed) = engine.parse(sql, &[]) {
            let _ = engine.execute(parsed, &rec).await;
        }
    }
    rec.log.into_inner().unwrap()
}

/// A fresh database with `commands` proposed again (what [`record`] kept).
async fn replay(commands: &[(Vec<u8>, bool)]) -> Arc<Db> {
    let state = MemoryState::new();
    for (c, applied) in commands {
        let r = state.propose(Command(c.clone())).await.unwrap();
        assert_eq!(matches!(r, CommandResult::Applied(_)), *applied, "a recorded command applies again as it did");
    }
    let engine = Engine::new(state.clone(), state.vectors());
    Arc::new(Db { state, engine })
}

// ---------------------------------------------------------------------------------------
// The grammar

/// The fixed schema the grammar's requests run on, with a few rows (NULLs included).
const SCHEMA: &[&str] = &[
    "CREATE TABLE t1 (id INT PRIMARY KEY, a INT, b TEXT, c DOUBLE PRECISION, d BOOLEAN, e BIGINT DEFAULT 0)",
    "CREATE TABLE t2 (k BIGINT PRIMARY KEY, id INT, s VARCHAR(8) NOT NULL, n NUMERIC(10,2), ts TIMESTAMP, j JSON, UNIQUE (s))",
    "CREATE TABLE t3 (x INT, y TEXT, z SMALLINT, dt DATE, bin BYTEA, PRIMARY KEY (x, y))",
    "CREATE INDEX t3_z ON t3 (z)",
    "CREATE TABLE v (id INT PRIMARY KEY, emb VECTOR(3))",
    "CREATE INDEX v_emb ON v USING hnsw (emb vector_l2_ops)",
    "INSERT INTO t1 VALUES (1, 10, 'one', 1.5, true, 100), (2, 20, 'two', -2.25, false, 200), \
     (3, NULL, NULL, NULL, NULL, NULL), (4, -4, '', 0.0, true, -9223372036854775808), \
     (5, 2147483647, 'Five', 1e300, false, 9223372036854775807), (6, 6, 'six''s', -0.0, NULL, 6)",
    "INSERT INTO t2 VALUES (10, 1, 'a', 1.25, '2024-01-01 00:00:00', '{\"x\": 1}'), \
     (11, 2, 'bb', -99999999.99, '1970-01-01 00:00:00', '[1, 2]'), (12, 2, 'ccc', NULL, NULL, NULL), \
     (13, NULL, 'dddd', 0, '2038-01-19 03:14:07', 'null'), (14, 9, 'é', 12.5, '2000-02-29 12:00:00', '\"s\"')",
    "INSERT INTO t3 VALUES (1, 'a', 1, '2024-01-01', '\\x00ff'), (1, 'b', 2, NULL, NULL), \
     (2, 'a', NULL, '1999-12-31', '\\x'), (3, '', -32768, '0001-01-01', NULL), (4, 'z', 32767, NULL, '\\xdeadbeef')",
    "INSERT INTO v VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]'), (4, '[1,1,1]'), (5, NULL), (6, '[-1,0.5,2]')",
];

/// A column's kind, for picking expressions that mostly type-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Num,
    Text,
    Bool,
    Time,
    Date,
    Json,
    Bytes,
    Vector,
}

#[derive(Debug, Clone, Copy)]
struct TableSpec {
    name: &'static str,
    cols: &'static [(&'static str, Kind)],
}

const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "t1",
        cols: &[
            ("id", Kind::Int),
            ("a", Kind::Int),
            ("b", Kind::Text),
            ("c", Kind::Float),
            ("d", Kind::Bool),
            ("e", Kind::Int),
        ],
    },
    TableSpec {
        name: "t2",
        cols: &[
            ("k", Kind::Int),
            ("id", Kind::Int),
            ("s", Kind::Text),
            ("n", Kind::Num),
            ("ts", Kind::Time),
            ("j", Kind::Json),
        ],
    },
    TableSpec {
        name: "t3",
        cols: &[("x", Kind::Int), ("y", Kind::Text), ("z", Kind::Int), ("dt", Kind::Date), ("bin", Kind::Bytes)],
    },
    TableSpec { name: "v", cols: &[("id", Kind::Int), ("emb", Kind::Vector)] },
];

/// Numbers at and past the edges of every numeric type.
const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1",
    "-1",
    "32767",
    "-32768",
    "32768",
    "2147483647",
    "-2147483648",
    "2147483648",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "123456789012345678901234567890123456789012345",
    "1e308",
    "1e309",
    "-1e308",
    "1e-320",
    "0.1",
    "3.14159265358979323846264338327950288",
    "'NaN'::double precision",
    "'Infinity'::float8",
    "'-Infinity'::float8",
    "CAST('nan' AS REAL)",
];

const STRINGS: &[&str] = &[
    "''",
    "'a'",
    "'one'",
    "'Five'",
    "'it''s'",
    "'é'",
    "'日本語'",
    "'%'",
    "'_'",
    "'\\'",
    "'NULL'",
    "'[1,2,3]'",
    "'[NaN,0,0]'",
    "'[1e39,0,0]'",
    "'{\"x\": 1}'",
    "'2024-02-30'",
    "'2024-01-01 00:00:00'",
    "'  padded  '",
    "E'\\x00'",
    "'\\x00ff'",
    "'a\nb'",
];

const TYPES: &[&str] = &[
    "INT",
    "SMALLINT",
    "BIGINT",
    "REAL",
    "DOUBLE PRECISION",
    "NUMERIC",
    "NUMERIC(5,2)",
    "NUMERIC(38,10)",
    "DECIMAL(3)",
    "TEXT",
    "VARCHAR(3)",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "BYTEA",
    "JSON",
    "VECTOR(3)",
    "INTERVAL",
    "FLOAT",
];

const BINARY_OPS: &[&str] = &[
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "<>",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "OR",
    "||",
    "LIKE",
    "NOT LIKE",
    "ILIKE",
    "IS DISTINCT FROM",
    "IS NOT DISTINCT FROM",
    "&",
    "|",
    "#",
    "<<",
    ">>",
    "^",
    "<->",
    "<#>",
    "<=>",
    "~",
    "!~",
    "@>",
];

const UNARY_OPS: &[&str] = &["-", "+", "NOT", "~", "@", "|/"];

/// Scalar functions and how many arguments they get (some get the wrong number on purpose).
const FUNCTIONS: &[(&str, usize)] = &[
    ("abs", 1),
    ("coalesce", 2),
    ("coalesce", 3),
    ("nullif", 2),
    ("length", 1),
    ("char_length", 1),
    ("upper", 1),
    ("lower", 1),
    ("substr", 3),
    ("substring", 2),
    ("round", 1),
    ("round", 2),
    ("trunc", 1),
    ("ceil", 1),
    ("floor", 1),
    ("sqrt", 1),
    ("power", 2),
    ("ln", 1),
    ("log", 2),
    ("exp", 1),
    ("mod", 2),
    ("greatest", 2),
    ("least", 3),
    ("concat", 3),
    ("trim", 1),
    ("lpad", 2),
    ("rpad", 3),
    ("repeat", 2),
    ("replace", 3),
    ("left", 2),
    ("right", 2),
    ("strpos", 2),
    ("md5", 1),
    ("sha256", 1),
    ("to_hex", 1),
    ("date_trunc", 2),
    ("date_part", 2),
    ("to_timestamp", 1),
    ("now", 0),
    ("random", 0),
    ("l2_distance", 2),
    ("cosine_distance", 2),
    ("inner_product", 2),
    ("vector_dims", 1),
    ("vector_norm", 1),
    ("regexp_replace", 3),
    ("regexp_like", 2),
    ("split_part", 3),
    ("starts_with", 2),
    ("array_length", 1),
    ("make_array", 2),
    ("nanvl", 2),
    ("gcd", 2),
    ("factorial", 1),
];

const AGGREGATES: &[&str] =
    &["count", "sum", "avg", "min", "max", "stddev", "variance", "bool_and", "bool_or", "array_agg", "median"];

/// One of `items`, as a `String`.
fn one_of(items: &'static [&'static str]) -> BoxedStrategy<String> {
    select(items).prop_map(str::to_string).boxed()
}

fn literal() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (-5i64..100).prop_map(|n| n.to_string()),
        3 => select(EXTREME_NUMBERS).prop_map(str::to_string),
        3 => select(STRINGS).prop_map(str::to_string),
        1 => (1usize..20_000).prop_map(|n| format!("'{}'", "x".repeat(n))),
        2 => Just("NULL".to_string()),
        1 => Just("TRUE".to_string()),
        1 => Just("FALSE".to_string()),
        1 => (-1000.0f64..1000.0).prop_map(|f| format!("{f}")),
        1 => one_of(&["DATE '2024-01-01'", "TIMESTAMP '2024-02-29 23:59:59.999999'", "DATE '0001-01-01'",
            "TIMESTAMP '9999-12-31 23:59:59'", "INTERVAL '1 day'", "CURRENT_DATE", "'[1,2,3]'::vector",
            "ARRAY[1,2,3]", "ARRAY[]", "'{}'::json", "X'00'", "$1"]),
    ]
    .boxed()
}

/// How long a chain of operators is: mostly around the engine's nesting limit (100 levels,
/// `quorumdb_sql::limits::MAX_NESTING`), sometimes far past it.
fn chain_length() -> BoxedStrategy<usize> {
    prop_oneof![4 => 1usize..130, 1 => 130usize..5000].boxed()
}

/// Deeply nested expressions around a leaf, past and below the parser's recursion limit.
fn deep(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        (1usize..200, inner.clone()).prop_map(|(n, e)| format!("{}{e}{}", "(".repeat(n), ")".repeat(n))),
        (1usize..200, inner.clone()).prop_map(|(n, e)| format!("{}{e}", "- ".repeat(n))),
        (1usize..200, inner.clone()).prop_map(|(n, e)| format!("{}{e}", "NOT ".repeat(n))),
        (1usize..100, inner.clone()).prop_map(|(n, e)| {
            let mut s = e;
            for i in 0..n {
                s = format!("CASE WHEN {i} > 0 THEN {s} ELSE {i} END");
            }
            s
        }),
        // A long flat chain: shallow for the parser, as deep as it is long as a tree.
        (
            chain_length(),
            one_of(&["+", "*", "AND", "OR", "||", "-", "=", "UNION ALL SELECT", "::int::"]),
            inner.clone()
        )
            .prop_map(|(n, op, e)| vec![e; n].join(&format!(" {op} "))),
        // Nested calls (the parser reads each argument twice) and nested queries.
        (1usize..24, one_of(&["abs(", "coalesce(", "upper(lower(", "CAST(", "greatest(1, "]), inner).prop_map(
            |(n, f, e)| {
                let close = match f.as_str() {
                    "coalesce(" => ", 2)",
                    "upper(lower(" => "))",
                    "CAST(" => " AS TEXT)",
                    _ => ")",
                };
                format!("{}{e}{}", f.repeat(n), close.repeat(n))
            }
        ),
        (1usize..14, one_of(&["(SELECT ", "(SELECT 1 WHERE EXISTS (SELECT ", "(SELECT max(a) FROM t1 WHERE a < "]))
            .prop_map(|(n, open)| {
                let close = if open.contains("EXISTS") { "))" } else { ")" };
                format!("{}1{}", open.repeat(n), close.repeat(n))
            }),
    ]
    .boxed()
}

/// Expressions over `cols` (column names as the query may write them).
fn expr(cols: Vec<String>) -> BoxedStrategy<String> {
    let leaf = if cols.is_empty() { literal() } else { prop_oneof![3 => select(cols.clone()), 2 => literal()].boxed() };
    // Leaves of the deep and long constructs: no long strings (they repeat them thousands of times).
    let small = if cols.is_empty() {
        (-5i64..100).prop_map(|n| n.to_string()).boxed()
    } else {
        prop_oneof![select(cols.clone()), (-5i64..100).prop_map(|n| n.to_string()), one_of(&["NULL", "'s'", "1.5"])]
            .boxed()
    };
    let cols_for_sub = cols.clone();
    leaf.prop_recursive(4, 32, 3, move |inner| {
        let sub = subquery_expr(cols_for_sub.clone());
        prop_oneof![
            6 => (inner.clone(), select(BINARY_OPS), inner.clone(), any::<bool>())
                .prop_map(|(a, op, b, paren)| if paren { format!("({a} {op} {b})") } else { format!("{a} {op} {b}") }),
            2 => (select(UNARY_OPS), inner.clone()).prop_map(|(op, e)| format!("{op} {e}")),
            2 => (proptest::collection::vec((inner.clone(), inner.clone()), 1..4), proptest::option::of(inner.clone()))
                .prop_map(|(whens, otherwise)| {
                    let mut s = "CASE".to_string();
                    for (w, t) in whens {
                        s.push_str(&format!(" WHEN {w} THEN {t}"));
                    }
                    if let Some(e) = otherwise {
                        s.push_str(&format!(" ELSE {e}"));
                    }
                    s + " END"
                }),
            1 => (inner.clone(), proptest::collection::vec((inner.clone(), inner.clone()), 1..3))
                .prop_map(|(e, whens)| {
                    let arms: Vec<String> = whens.into_iter().map(|(w, t)| format!("WHEN {w} THEN {t}")).collect();
                    format!("CASE {e} {} END", arms.join(" "))
                }),
            2 => (inner.clone(), select(TYPES), any::<bool>())
                .prop_map(|(e, t, short)| if short { format!("({e})::{t}") } else { format!("CAST({e} AS {t})") }),
            1 => (inner.clone(), select(TYPES)).prop_map(|(e, t)| format!("TRY_CAST({e} AS {t})")),
            3 => (select(FUNCTIONS), proptest::collection::vec(inner.clone(), 3))
                .prop_map(|((f, n), args)| format!("{f}({})", args[..n].join(", "))),
            2 => (inner.clone(), any::<bool>(), proptest::collection::vec(inner.clone(), 1..5))
                .prop_map(|(e, not, list)| format!("{e} {}IN ({})", if not { "NOT " } else { "" }, list.join(", "))),
            1 => (small.clone(), 1usize..3000, any::<bool>()).prop_map(|(e, n, text)| {
                let items: Vec<String> =
                    (0..n).map(|i| if text { format!("'v{i}'") } else { (i as i64 - 5).to_string() }).collect();
                format!("{e} IN ({})", items.join(","))
            }),
            1 => (inner.clone(), inner.clone(), inner.clone(), any::<bool>())
                .prop_map(|(e, lo, hi, not)| format!("{e} {}BETWEEN {lo} AND {hi}", if not { "NOT " } else { "" })),
            1 => (inner.clone(), one_of(&["IS NULL", "IS NOT NULL", "IS TRUE", "IS NOT FALSE", "IS UNKNOWN"]))
                .prop_map(|(e, t)| format!("{e} {t}")),
            1 => inner.clone().prop_map(|e| format!("({e})")),
            1 => sub,
            1 => deep(small.clone()),
        ]
    })
    .boxed()
}

/// Subqueries used as expressions: scalar, EXISTS, IN.
fn subquery_expr(outer: Vec<String>) -> BoxedStrategy<String> {
    let outer_col = if outer.is_empty() { Just("1".to_string()).boxed() } else { select(outer).boxed() };
    let table = select(TABLES);
    prop_oneof![
        (select(AGGREGATES), (0..TABLES.len()).prop_flat_map(|t| (Just(t), 0..TABLES[t].cols.len())))
            .prop_map(|(agg, (t, c))| format!("(SELECT {agg}({}) FROM {})", TABLES[t].cols[c].0, TABLES[t].name)),
        (table.clone(), outer_col.clone(), any::<bool>()).prop_map(|(t, o, not)| format!(
            "{}EXISTS (SELECT 1 FROM {} WHERE {}.{} = {o})",
            if not { "NOT " } else { "" },
            t.name,
            t.name,
            t.cols[0].0
        )),
        (table, outer_col.clone()).prop_map(|(t, o)| format!("{o} IN (SELECT {} FROM {})", t.cols[0].0, t.name)),
        (outer_col).prop_map(|o| format!("(SELECT {o})")),
        Just("(SELECT id FROM t1)".to_string()),
        Just("(SELECT id FROM t1 ORDER BY id LIMIT 1)".to_string()),
    ]
    .boxed()
}

/// Expressions of each kind over some columns, built level by level (each level combines the
/// ones below it): typed, so that most of them plan and run, and reach deeper than errors do.
#[derive(Clone)]
struct Typed {
    int: BoxedStrategy<String>,
    float: BoxedStrategy<String>,
    text: BoxedStrategy<String>,
    boolean: BoxedStrategy<String>,
}

/// Columns (as written) visible to an expression, with their kinds.
type Cols = Vec<(String, Kind)>;

fn names(cols: &Cols, kinds: &[Kind]) -> Vec<String> {
    cols.iter().filter(|(_, k)| kinds.contains(k)).map(|(n, _)| n.clone()).collect()
}

fn column_or(cols: Vec<String>, literals: BoxedStrategy<String>) -> BoxedStrategy<String> {
    if cols.is_empty() { literals } else { prop_oneof![2 => select(cols), 1 => literals].boxed() }
}

fn typed(cols: &Cols) -> Typed {
    let mut t = Typed {
        int: column_or(
            names(cols, &[Kind::Int]),
            prop_oneof![
                6 => (-20i64..1000).prop_map(|n| n.to_string()),
                1 => Just("NULL".to_string()),
                1 => one_of(&["2147483647", "-2147483648", "9223372036854775807", "0", "32767"]),
            ]
            .boxed(),
        ),
        float: column_or(
            names(cols, &[Kind::Float, Kind::Num]),
            prop_oneof![
                4 => (-1000.0f64..1000.0).prop_map(|f| format!("{f:.3}")),
                1 => one_of(&["0.0", "-0.0", "1e300", "'NaN'::double precision", "'Infinity'::float8", "NULL", "0.01"]),
            ]
            .boxed(),
        ),
        text: column_or(
            names(cols, &[Kind::Text]),
            prop_oneof![
                4 => "[a-z]{0,6}".prop_map(|s| format!("'{s}'")),
                1 => select(STRINGS).prop_map(str::to_string),
                1 => Just("NULL".to_string()),
            ]
            .boxed(),
        ),
        boolean: column_or(names(cols, &[Kind::Bool]), one_of(&["TRUE", "FALSE", "NULL"])),
    };
    for _ in 0..3 {
        t = typed_level(&t);
    }
    t
}

const COMPARISONS: &[&str] = &["=", "<>", "<", "<=", ">", ">=", "IS DISTINCT FROM", "IS NOT DISTINCT FROM"];

/// One more level of typed expressions over `b`.
fn typed_level(b: &Typed) -> Typed {
    let (i, f, s, p) = (b.int.clone(), b.float.clone(), b.text.clone(), b.boolean.clone());
    let int = prop_oneof![
        3 => i.clone(),
        3 => (i.clone(), one_of(&["+", "-", "*", "/", "%"]), i.clone()).prop_map(|(a, op, c)| format!("({a} {op} {c})")),
        1 => i.clone().prop_map(|a| format!("-({a})")),
        1 => i.clone().prop_map(|a| format!("abs({a})")),
        1 => s.clone().prop_map(|a| format!("length({a})")),
        1 => (p.clone(), i.clone(), i.clone()).prop_map(|(c, a, e)| format!("CASE WHEN {c} THEN {a} ELSE {e} END")),
        1 => (i.clone(), i.clone()).prop_map(|(a, c)| format!("coalesce({a}, {c})")),
        1 => (i.clone(), i.clone()).prop_map(|(a, c)| format!("nullif({a}, {c})")),
        1 => (i.clone(), i.clone()).prop_map(|(a, c)| format!("greatest({a}, {c})")),
        1 => f.clone().prop_map(|a| format!("CAST({a} AS BIGINT)")),
        1 => one_of(&["(SELECT count(*) FROM t2)", "(SELECT max(a) FROM t1)", "(SELECT min(x) FROM t3 WHERE z > 0)"]),
    ]
    .boxed();
    let float = prop_oneof![
        3 => f.clone(),
        2 => (f.clone(), one_of(&["+", "-", "*", "/"]), prop_oneof![f.clone(), i.clone()])
            .prop_map(|(a, op, c)| format!("({a} {op} {c})")),
        1 => f.clone().prop_map(|a| format!("round({a}, 2)")),
        1 => f.clone().prop_map(|a| format!("sqrt(abs({a}))")),
        1 => i.clone().prop_map(|a| format!("CAST({a} AS DOUBLE PRECISION)")),
        1 => i.clone().prop_map(|a| format!("{a} * 1.5")),
    ]
    .boxed();
    let text = prop_oneof![
        3 => s.clone(),
        2 => (s.clone(), s.clone()).prop_map(|(a, c)| format!("({a} || {c})")),
        1 => s.clone().prop_map(|a| format!("upper({a})")),
        1 => (s.clone(), i.clone()).prop_map(|(a, n)| format!("substr({a}, {n}, 3)")),
        1 => i.clone().prop_map(|a| format!("CAST({a} AS TEXT)")),
        1 => (p.clone(), s.clone(), s.clone()).prop_map(|(c, a, e)| format!("CASE WHEN {c} THEN {a} ELSE {e} END")),
        1 => (s.clone(), s.clone()).prop_map(|(a, c)| format!("coalesce({a}, {c})")),
        1 => (s.clone(), 0i64..4).prop_map(|(a, n)| format!("repeat({a}, {n})")),
        1 => s.clone().prop_map(|a| format!("concat({a}, 'x', 1)")),
    ]
    .boxed();
    let boolean = prop_oneof![
        2 => p.clone(),
        3 => (i.clone(), select(COMPARISONS), i.clone()).prop_map(|(a, op, c)| format!("{a} {op} {c}")),
        1 => (f.clone(), select(COMPARISONS), f.clone()).prop_map(|(a, op, c)| format!("{a} {op} {c}")),
        2 => (s.clone(), select(COMPARISONS), s.clone()).prop_map(|(a, op, c)| format!("{a} {op} {c}")),
        2 => (p.clone(), one_of(&["AND", "OR"]), p.clone()).prop_map(|(a, op, c)| format!("({a} {op} {c})")),
        1 => p.clone().prop_map(|a| format!("NOT ({a})")),
        1 => (prop_oneof![i.clone(), s.clone()], one_of(&["IS NULL", "IS NOT NULL"])).prop_map(|(a, t)| format!("{a} {t}")),
        1 => (s.clone(), s.clone(), one_of(&["LIKE", "NOT LIKE", "ILIKE"])).prop_map(|(a, c, op)| format!("{a} {op} {c}")),
        1 => (i.clone(), proptest::collection::vec(i.clone(), 1..5)).prop_map(|(a, l)| format!("{a} IN ({})", l.join(", "))),
        1 => (i.clone(), i.clone(), i.clone()).prop_map(|(a, l, h)| format!("{a} BETWEEN {l} AND {h}")),
        1 => i.clone().prop_map(|a| format!("EXISTS (SELECT 1 FROM t2 WHERE t2.id = {a})")),
        1 => i.clone().prop_map(|a| format!("{a} IN (SELECT id FROM t1)")),
    ]
    .boxed();
    Typed { int, float, text, boolean }
}

/// Expressions over `cols`, mostly typed, sometimes from the untyped grammar: any kind, and
/// conditions.
fn exprs(cols: &Cols) -> (BoxedStrategy<String>, BoxedStrategy<String>) {
    let t = typed(cols);
    let chaos = expr(cols.iter().map(|(n, _)| n.clone()).collect());
    let any = prop_oneof![2 => t.int, 1 => t.float, 2 => t.text, 1 => t.boolean.clone(), 1 => chaos.clone()].boxed();
    let condition = prop_oneof![5 => t.boolean, 1 => chaos].boxed();
    (any, condition)
}

/// The expression a column of `kind` is set to in an UPDATE or ON CONFLICT: typed where the
/// grammar has that kind, else a value.
fn expr_for(kind: Kind, t: &Typed) -> BoxedStrategy<String> {
    match kind {
        Kind::Int => t.int.clone(),
        Kind::Float | Kind::Num => t.float.clone(),
        Kind::Text => t.text.clone(),
        Kind::Bool => t.boolean.clone(),
        other => value_for(other),
    }
}

fn table_cols(t: &TableSpec, prefix: &str) -> Cols {
    t.cols.iter().map(|(n, k)| (format!("{prefix}{n}"), *k)).collect()
}

/// A FROM clause and the columns it makes visible (qualified, and unqualified when unique).
fn from_clause() -> BoxedStrategy<(String, Cols)> {
    let single = select(TABLES).prop_map(|t| {
        let mut cols = table_cols(&t, "");
        cols.extend(table_cols(&t, &format!("{}.", t.name)));
        (t.name.to_string(), cols)
    });
    let join = (
        select(TABLES),
        select(TABLES),
        one_of(&["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "INNER JOIN", "LEFT OUTER JOIN"]),
        any::<bool>(),
    )
        .prop_flat_map(|(l, r, kind, cross)| {
            let mut cols = table_cols(&l, "l.");
            cols.extend(table_cols(&r, "r."));
            let on = prop_oneof![
                3 => Just(format!("l.{} = r.{}", l.cols[0].0, r.cols[0].0)),
                2 => exprs(&cols).1,
            ];
            (Just((l.name, r.name, kind, cross)), Just(cols), on)
        })
        .prop_map(|((l, r, kind, cross), cols, on)| {
            if cross {
                (format!("{l} AS l CROSS JOIN {r} AS r"), cols)
            } else {
                (format!("{l} AS l {kind} {r} AS r ON {on}"), cols)
            }
        });
    let using = Just((
        "t1 JOIN t2 USING (id)".to_string(),
        vec![("id".into(), Kind::Int), ("a".into(), Kind::Int), ("s".into(), Kind::Text), ("k".into(), Kind::Int)],
    ));
    let derived = (select(TABLES), 0u32..5, 1usize..12).prop_map(|(t, limit, n)| {
        let inner = format!("{}{}{}", "(SELECT * FROM ".repeat(n - 1), t.name, ") AS d".repeat(n - 1));
        (format!("(SELECT * FROM {inner} ORDER BY 1 LIMIT {limit}) AS sub"), table_cols(&t, "sub."))
    });
    let values = Just((
        "(VALUES (1, 'x'), (2, NULL), (NULL, 'z')) AS vals(p, q)".to_string(),
        vec![("p".into(), Kind::Int), ("q".into(), Kind::Text), ("vals.p".into(), Kind::Int)],
    ));
    prop_oneof![5 => single, 3 => join, 1 => using, 1 => derived, 1 => values].boxed()
}

/// A SELECT (a query body without set operations around it).
fn select_stmt() -> BoxedStrategy<String> {
    from_clause()
        .prop_flat_map(|(from, cols)| {
            let (e, condition) = exprs(&cols);
            let t = typed(&cols);
            let col = select(cols.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
            // Aggregates over arguments of their kind, mostly.
            let measure = prop_oneof![
                4 => (one_of(&["count", "sum", "avg", "min", "max", "stddev", "median"]), prop_oneof![t.int.clone(), t.float.clone()]),
                1 => (one_of(&["bool_and", "bool_or", "count"]), t.boolean.clone()),
                1 => (one_of(&["min", "max", "array_agg", "count"]), t.text.clone()),
                1 => (select(AGGREGATES).prop_map(str::to_string), e.clone()),
            ];
            (
                Just(from),
                any::<bool>(),
                proptest::collection::vec(e.clone(), 1..4),
                proptest::option::of(condition.clone()),
                proptest::option::weighted(
                    0.3,
                    (
                        proptest::collection::vec(col, 1..3),
                        proptest::option::of(prop_oneof![
                            2 => t.int.prop_map(|n| format!("count(*) > {n}")),
                            1 => condition,
                        ]),
                    ),
                ),
                proptest::option::weighted(0.3, measure),
                proptest::option::of((e, one_of(&["", " ASC", " DESC", " DESC NULLS LAST", " NULLS FIRST"]))),
                proptest::option::of(one_of(&["0", "1", "3", "100", "9223372036854775807", "-1", "NULL", "ALL"])),
                proptest::option::weighted(0.2, one_of(&["0", "1", "2", "9223372036854775807", "-1"])),
                any::<u8>(),
            )
        })
        .prop_map(|(from, distinct, items, filter, group, agg, order, limit, offset, star)| {
            let grouped = group.is_some() || agg.is_some();
            let mut s = String::from("SELECT ");
            if distinct {
                s.push_str("DISTINCT ");
            }
            match (&group, agg) {
                (Some((keys, _)), agg) => {
                    s.push_str(&keys.join(", "));
                    let (f, m) = agg.unwrap_or(("count".to_string(), items[0].clone()));
                    s.push_str(&format!(", {f}({m})"));
                }
                (None, Some((f, m))) => s.push_str(&format!("{f}({m}), count(*)")),
                (None, None) if star % 5 == 0 => s.push('*'),
                (None, None) => {
                    let named: Vec<String> = items.iter().enumerate().map(|(i, e)| format!("{e} AS c{i}")).collect();
                    s.push_str(&named.join(", "));
                }
            }
            s.push_str(&format!(" FROM {from}"));
            if let Some(f) = filter {
                s.push_str(&format!(" WHERE {f}"));
            }
            if let Some((keys, having)) = group {
                s.push_str(&format!(" GROUP BY {}", keys.join(", ")));
                if let Some(h) = having {
                    s.push_str(&format!(" HAVING {h}"));
                }
            }
            match (order, grouped) {
                // A grouped query orders by what it returns.
                (Some((_, dir)), true) => s.push_str(&format!(" ORDER BY 1{dir}")),
                (Some((o, dir)), false) => s.push_str(&format!(" ORDER BY {o}{dir}")),
                (None, _) => {}
            }
            if let Some(l) = limit {
                s.push_str(&format!(" LIMIT {l}"));
            }
            if let Some(o) = offset {
                s.push_str(&format!(" OFFSET {o}"));
            }
            s
        })
        .boxed()
}

/// A query: a SELECT, a set operation of two, a CTE, EXPLAIN, a nearest-neighbour search.
fn query() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select_stmt(),
        1 => (select_stmt(), one_of(&["UNION", "UNION ALL", "INTERSECT", "EXCEPT"]), select_stmt())
            .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
        1 => (select(TABLES), exprs(&vec![("w.id".to_string(), Kind::Int)]).0)
            .prop_map(|(t, e)| format!("WITH w AS (SELECT {} AS id FROM {}) SELECT {e} FROM w", t.cols[0].0, t.name)),
        1 => select_stmt().prop_map(|s| format!("EXPLAIN {s}")),
        1 => (one_of(&["<->", "<#>", "<=>"]), one_of(&["'[1,2,3]'", "'[0,0,0]'", "'[1,2]'", "'[NaN,1,1]'",
                "'[1e38,1e38,1e38]'", "NULL", "'x'"]), one_of(&["1", "3", "0", "100000", "-1", "NULL"]))
            .prop_map(|(op, q, k)| format!("SELECT id FROM v ORDER BY emb {op} {q} LIMIT {k}")),
        1 => one_of(&["SET hnsw.ef_search = 5", "SET hnsw.ef_search = 0", "SET hnsw.ef_search = 'x'",
                "SHOW hnsw.ef_search", "SET search_path = x", "SHOW TABLES", "SHOW COLUMNS FROM t1",
                "SELECT * FROM information_schema.tables", "BEGIN", "COMMIT", "ROLLBACK"]),
    ]
    .boxed()
}

/// Values a column of `kind` may be given (mostly right, sometimes not).
fn value_for(kind: Kind) -> BoxedStrategy<String> {
    let typed = match kind {
        Kind::Int => {
            prop_oneof![12 => (-50i64..50).prop_map(|n| n.to_string()), 1 => select(EXTREME_NUMBERS).prop_map(str::to_string)]
                .boxed()
        }
        Kind::Float | Kind::Num => {
            prop_oneof![12 => (-1e6f64..1e6).prop_map(|f| format!("{f:.2}")), 1 => select(EXTREME_NUMBERS).prop_map(str::to_string)]
                .boxed()
        }
        Kind::Text => prop_oneof![
            6 => "[a-z]{0,10}".prop_map(|s| format!("'{s}'")),
            2 => select(STRINGS).prop_map(str::to_string),
            1 => (0usize..50_000).prop_map(|n| format!("'{}'", "y".repeat(n))),
        ]
        .boxed(),
        Kind::Bool => one_of(&["true", "false", "'t'", "'yes'", "1", "'maybe'"]),
        Kind::Time => one_of(&[
            "'2024-01-01 00:00:00'",
            "'1970-01-01'",
            "'294277-01-01 00:00:00'",
            "'0000-01-01 00:00:00'",
            "now()",
            "'not a time'",
            "'2024-13-45 99:99:99'",
            "TIMESTAMP '2024-02-29 12:00:00'",
        ]),
        Kind::Date => {
            one_of(&["'2024-01-01'", "'0001-01-01'", "'9999-12-31'", "'5874897-12-31'", "'2023-02-29'", "CURRENT_DATE"])
        }
        Kind::Json => one_of(&[
            "'{}'",
            "'[]'",
            "'null'",
            "'{\"a\": [1, {\"b\": null}]}'",
            "'{bad json'",
            "'1e999'",
            "'\"\\u0000\"'",
        ]),
        Kind::Bytes => one_of(&["'\\x00'", "'\\xzz'", "'plain'", "'\\x'", "decode('ff', 'hex')"]),
        Kind::Vector => one_of(&[
            "'[1,2,3]'",
            "'[1,2]'",
            "'[1,2,3,4]'",
            "'[NaN,0,0]'",
            "'[inf,0,0]'",
            "'[1e39,0,0]'",
            "'[]'",
            "'[,]'",
            "ARRAY[1,2,3]",
            "ARRAY[1.5,NULL,3]",
            "'1,2,3'",
            "'[-0.0,0,0]'",
        ]),
    };
    prop_oneof![8 => typed, 1 => Just("NULL".to_string()), 1 => Just("DEFAULT".to_string()), 1 => literal()].boxed()
}

fn insert_stmt() -> BoxedStrategy<String> {
    select(TABLES)
        .prop_flat_map(|t| {
            let row = t.cols.iter().map(|c| value_for(c.1)).collect::<Vec<_>>();
            let mut cols = table_cols(&t, "");
            cols.extend(table_cols(&t, "excluded."));
            let typed = typed(&cols);
            let chaos = expr(cols.iter().map(|(n, _)| n.clone()).collect());
            let sets = select(t.cols)
                .prop_flat_map(move |(c, k)| (Just(c), prop_oneof![4 => expr_for(k, &typed), 1 => chaos.clone()]));
            let pk = t.cols[0].0;
            (
                Just(t),
                proptest::collection::vec(row, 1..4),
                any::<bool>(),
                prop_oneof![
                    3 => Just(String::new()),
                    1 => Just(format!(" ON CONFLICT ({pk}) DO NOTHING")),
                    1 => Just(" ON CONFLICT DO NOTHING".to_string()),
                    2 => sets.prop_map(move |(c, e)| format!(" ON CONFLICT ({pk}) DO UPDATE SET {c} = {e}")),
                ],
                proptest::option::weighted(0.2, one_of(&["*", "1", "id", "nope", "count(*)"])),
                proptest::option::weighted(0.15, select_stmt()),
            )
        })
        .prop_map(|(t, rows, with_cols, conflict, returning, from_query)| {
            let list = if with_cols {
                format!(" ({})", t.cols.iter().map(|c| c.0).collect::<Vec<_>>().join(", "))
            } else {
                String::new()
            };
            let source = match from_query {
                Some(q) => q,
                None => {
                    let rows: Vec<String> = rows.iter().map(|r| format!("({})", r.join(", "))).collect();
                    format!("VALUES {}", rows.join(", "))
                }
            };
            let mut s = format!("INSERT INTO {}{list} {source}{conflict}", t.name);
            if let Some(r) = returning {
                s.push_str(&format!(" RETURNING {r}"));
            }
            s
        })
        .boxed()
}

fn update_stmt() -> BoxedStrategy<String> {
    select(TABLES)
        .prop_flat_map(|t| {
            let cols = table_cols(&t, "");
            let (_, condition) = exprs(&cols);
            let typed = typed(&cols);
            let chaos = expr(cols.iter().map(|(n, _)| n.clone()).collect());
            let set = select(t.cols).prop_flat_map(move |(c, k)| {
                (Just(c), prop_oneof![6 => expr_for(k, &typed), 1 => value_for(k), 1 => chaos.clone()])
            });
            (
                Just(t),
                proptest::collection::vec(set, 1..3),
                proptest::option::of(condition),
                proptest::option::weighted(0.2, one_of(&["*", "1"])),
                any::<bool>(),
            )
        })
        .prop_map(|(t, sets, filter, returning, delete)| {
            let mut s = if delete {
                format!("DELETE FROM {}", t.name)
            } else {
                let sets: Vec<String> = sets.iter().map(|(c, e)| format!("{c} = {e}")).collect();
                format!("UPDATE {} SET {}", t.name, sets.join(", "))
            };
            if let Some(f) = filter {
                s.push_str(&format!(" WHERE {f}"));
            }
            if let Some(r) = returning {
                s.push_str(&format!(" RETURNING {r}"));
            }
            s
        })
        .boxed()
}

fn ddl_stmt() -> BoxedStrategy<String> {
    let column = (
        "[a-z]{1,3}",
        select(TYPES),
        one_of(&["", " NOT NULL", " UNIQUE", " DEFAULT 7", " DEFAULT 'x'", " PRIMARY KEY", " DEFAULT NULL"]),
    )
        .prop_map(|(n, t, c)| format!("{n} {t}{c}"));
    prop_oneof![
        3 => (0u8..4, proptest::collection::vec(column, 0..6), proptest::option::of("[a-z]{1,3}"))
            .prop_map(|(n, cols, pk)| {
                let mut body = cols;
                if let Some(pk) = pk {
                    body.push(format!("PRIMARY KEY ({pk})"));
                }
                format!("CREATE TABLE g{n} ({})", body.join(", "))
            }),
        1 => (1usize..2000).prop_map(|n| {
            let cols: Vec<String> = (0..n).map(|i| format!("c{i} INT")).collect();
            format!("CREATE TABLE wide (id INT PRIMARY KEY, {})", cols.join(", "))
        }),
        1 => (select(TABLES), any::<bool>()).prop_flat_map(|(t, unique)| (select(t.cols), select(t.cols), Just(t), Just(unique)))
            .prop_map(|(a, b, t, unique)| format!("CREATE {}INDEX ON {} ({}, {})", if unique { "UNIQUE " } else { "" }, t.name, a.0, b.0)),
        1 => (one_of(&["l2", "cosine", "ip", "bogus"]), one_of(&["", " WITH (m = 4)", " WITH (m = 0)", " WITH (m = 100000)",
                " WITH (ef_construction = 1)", " WITH (m = -1)", " WITH (nope = 1)"]))
            .prop_map(|(ops, with)| format!("CREATE INDEX ON v USING hnsw (emb vector_{ops}_ops){with}")),
        1 => (select(TABLES), "[a-z]{1,3}", select(TYPES), one_of(&["", " DEFAULT 1", " NOT NULL", " DEFAULT 'q'"]))
            .prop_map(|(t, c, ty, d)| format!("ALTER TABLE {} ADD COLUMN {c} {ty}{d}", t.name)),
        1 => select(TABLES).prop_flat_map(|t| (select(t.cols), Just(t)))
            .prop_map(|(c, t)| format!("ALTER TABLE {} DROP COLUMN {}", t.name, c.0)),
        1 => (one_of(&["g0", "g1", "t1", "t2", "t3", "v", "nope", "wide"]), one_of(&["DROP TABLE ", "DROP TABLE IF EXISTS ", "TRUNCATE "]))
            .prop_map(|(t, verb)| format!("{verb}{t}")),
        1 => one_of(&["DROP INDEX t3_z", "DROP INDEX v_emb", "DROP INDEX IF EXISTS nope", "CREATE TABLE t1 (a INT)",
            "CREATE TABLE IF NOT EXISTS t1 (a INT)", "CREATE TABLE x (a VECTOR(0))", "CREATE TABLE x (a VECTOR(100000))",
            "CREATE TABLE x (a NUMERIC(0,0))", "CREATE TABLE x (a NUMERIC(39,2))", "CREATE TABLE x (a VARCHAR(0))",
            "CREATE TABLE x (a INT, a INT)", "CREATE TABLE x ()", "CREATE VIEW w AS SELECT 1",
            "CREATE TABLE x AS SELECT * FROM t1", "ALTER TABLE t1 RENAME TO t9"]),
    ]
    .boxed()
}

/// One statement of any kind.
fn statement() -> BoxedStrategy<String> {
    prop_oneof![6 => query(), 3 => insert_stmt(), 3 => update_stmt(), 2 => ddl_stmt()].boxed()
}

/// A write that must fail whatever ran before it in its request: checked to leave the state as it was, with everything before it in
/// the same request.
const FAILING_TAILS: &[&str] = &[
    "INSERT INTO no_such_table VALUES (1)",
    "INSERT INTO t1 (id) VALUES (94), (94)",
    "INSERT INTO t2 (k, s) VALUES (99, NULL)",
    "INSERT INTO t1 (id, a) VALUES (95, 1 / 0)",
    "INSERT INTO t2 (k, s) VALUES (98, 'way too long')",
    "INSERT INTO t2 (k, s) VALUES (92, 'u'), (91, 'u')",
    "INSERT INTO t1 (id, a) VALUES (97, 'not a number')",
    "INSERT INTO t3 (x, y, z) VALUES (93, 'q', 99999)",
    "INSERT INTO v VALUES (96, '[1,2]')",
    "SELEKT 1",
];

/// One request: one to three statements, or a request built to fail at its end.
#[derive(Debug, Clone)]
enum Request {
    Plain(Vec<String>),
    /// A valid write, a random statement, then a write that must fail: nothing may stay.
    Doomed {
        before: String,
        middle: String,
        tail: &'static str,
    },
}

impl Request {
    fn sql(&self) -> String {
        match self {
            Self::Plain(s) => s.join("; "),
            Self::Doomed { before, middle, tail } => format!("{before}; {middle}; {tail}"),
        }
    }
}

fn request() -> BoxedStrategy<Request> {
    prop_oneof![
        5 => proptest::collection::vec(statement(), 1..4).prop_map(Request::Plain),
        2 => (
            one_of(&["INSERT INTO t1 VALUES (50, 5, 'fifty', 5.0, true, 5)", "UPDATE t1 SET a = a + 1",
                "DELETE FROM t2 WHERE k = 10", "CREATE TABLE fresh (id INT PRIMARY KEY)", "INSERT INTO v VALUES (50, '[5,5,5]')",
                "TRUNCATE t3", "ALTER TABLE t1 ADD COLUMN extra INT DEFAULT 3", "DROP INDEX t3_z"]),
            statement(),
            select(FAILING_TAILS),
        )
            .prop_map(|(before, middle, tail)| Request::Doomed { before: before.to_string(), middle, tail }),
    ]
    .boxed()
}

#[test]
fn grammar() {
    let rt = runtime();
    let base = rt.block_on(record(&SCHEMA.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    // The schema itself must have applied: one command per statement.
    assert_eq!(base.iter().filter(|c| c.1).count(), SCHEMA.len(), "the fuzz schema must be valid");
    let stats = Mutex::new(Stats::default());
    let started = Instant::now();
    let mut runner = runner("grammar", cases(200), 0x5eed_0001);
    let result = runner.run(&proptest::collection::vec(request(), 1..5), |requests| {
        if hung() {
            return Ok(());
        }
        rt.block_on(async {
            let db = replay(&base).await;
            for r in &requests {
                let outcome = check(&db, &r.sql(), &stats).await?;
                if let Request::Doomed { .. } = r {
                    prop_assert!(
                        matches!(outcome, Outcome::Failed(_)),
                        "a request ending in a failing write succeeded: {}",
                        r.sql()
                    );
                }
            }
            Ok(())
        })
    });
    stats.lock().unwrap().print("grammar", started.elapsed());
    if let Err(e) = result {
        panic!("grammar: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Mutations of the SQL logic test corpus

/// A file of the corpus: its records' SQL, and the commands its records apply when run in
/// order (to rebuild its state before each case).
struct CorpusFile {
    name: String,
    records: Vec<String>,
    commands: Vec<(Vec<u8>, bool)>,
}

/// The SQL of each `statement` and `query` record of a `.slt` file.
fn records(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !(line.starts_with("statement ") || line.starts_with("query ")) {
            continue;
        }
        let sql: Vec<&str> = lines.by_ref().take_while(|l| !l.trim().is_empty() && *l != "----").collect();
        if !sql.is_empty() {
            out.push(sql.join("\n"));
        }
    }
    out
}

async fn corpus() -> Vec<CorpusFile> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/slt"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let records = records(&std::fs::read_to_string(&p).unwrap());
        let commands = record(&records).await;
        files.push(CorpusFile { name: p.file_name().unwrap().to_string_lossy().into_owned(), records, commands });
    }
    assert!(files.iter().map(|f| f.records.len()).sum::<usize>() > 100, "the SQL logic test corpus is found");
    files
}

/// Replacements for a literal: the extremes of every type.
const EXTREMES: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "2147483648",
    "-2147483649",
    "32768",
    "-0.0",
    "0",
    "NaN",
    "'NaN'",
    "'Infinity'",
    "1e309",
    "-1e-400",
    "''",
    "NULL",
    "'[NaN,1,2]'",
    "'[1e39,0,0]'",
    "'[]'",
    "'9999-12-31 23:59:59.999999'",
    "'0000-00-00'",
    "99999999999999999999999999999999999999.99",
    "'\\x'",
    "'\u{0}'",
    "'\u{feff}'",
    "'\u{10ffff}'",
    "$1",
    "$0",
    "$99999999999999999999",
];

const INSERTED_TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "(",
    ")",
    ",",
    ";",
    "NULL",
    "NOT",
    "AND",
    "OR",
    "*",
    "ORDER BY",
    "GROUP BY",
    "LIMIT",
    "UNION",
    "JOIN",
    "ON",
    "::",
    "CAST",
    "AS",
    "DISTINCT",
    "CASE",
    "WHEN",
    "END",
    "IN",
    "EXISTS",
    "DEFAULT",
    "'",
    "\"",
    "--",
    "/*",
    "$1",
    "[",
    "]",
    "ALL",
    "ANY",
    "LATERAL",
    "RETURNING",
    "ON CONFLICT",
    "WITH",
    "RECURSIVE",
    "OVER ()",
    "FILTER (WHERE true)",
    "COLLATE \"C\"",
    "ESCAPE",
    "AT TIME ZONE 'UTC'",
    "INTERVAL",
    "ARRAY",
    "<->",
    "=",
];

/// One edit of a statement's text; positions are taken modulo what they index.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteToken(usize),
    DuplicateToken(usize),
    SwapTokens(usize, usize),
    InsertToken(usize, &'static str),
    FlipByte(usize, u8),
    InsertByte(usize, u8),
    Truncate(usize),
    ReplaceLiteral(usize, &'static str),
    LongLiteral(usize, usize),
    RepeatTail(usize, usize),
}

/// The tokens of `sql`, roughly (words, numbers, quoted strings, operators, whitespace), so
/// that joining them gives the text back.
fn tokens(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            i = (i + 1).min(chars.len());
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
        } else {
            i += 1;
        }
        out.push(chars[start..i].iter().collect());
    }
    out
}

fn is_literal(t: &str) -> bool {
    t.starts_with('\'') || t.chars().next().is_some_and(|c| c.is_ascii_digit())
}

fn mutate(sql: &str, mutations: &[Mutation]) -> String {
    let mut text = sql.to_string();
    for m in mutations {
        let mut toks = tokens(&text);
        let words: Vec<usize> = (0..toks.len()).filter(|&i| !toks[i].trim().is_empty()).collect();
        let word = |n: usize| if words.is_empty() { None } else { Some(words[n % words.len()]) };
        match m {
            Mutation::DeleteToken(n) => {
                if let Some(i) = word(*n) {
                    toks.remove(i);
                }
            }
            Mutation::DuplicateToken(n) => {
                if let Some(i) = word(*n) {
                    let t = toks[i].clone();
                    toks.insert(i, " ".into());
                    toks.insert(i, t);
                }
            }
            Mutation::SwapTokens(a, b) => {
                if let (Some(a), Some(b)) = (word(*a), word(*b)) {
                    toks.swap(a, b);
                }
            }
            Mutation::InsertToken(n, t) => {
                let i = if toks.is_empty() { 0 } else { n % (toks.len() + 1) };
                toks.insert(i, format!(" {t} "));
            }
            Mutation::ReplaceLiteral(n, with) => {
                let lits: Vec<usize> = (0..toks.len()).filter(|&i| is_literal(&toks[i])).collect();
                if !lits.is_empty() {
                    toks[lits[n % lits.len()]] = with.to_string();
                }
            }
            Mutation::LongLiteral(n, len) => {
                let lits: Vec<usize> = (0..toks.len()).filter(|&i| is_literal(&toks[i])).collect();
                if !lits.is_empty() {
                    toks[lits[n % lits.len()]] = format!("'{}'", "z".repeat(*len));
                }
            }
            Mutation::FlipByte(n, bits) | Mutation::InsertByte(n, bits) => {
                let mut bytes = text.into_bytes();
                if !bytes.is_empty() {
                    let i = n % bytes.len();
                    if let Mutation::FlipByte(..) = m {
                        bytes[i] ^= (*bits).max(1);
                    } else {
                        bytes.insert(i, *bits);
                    }
                }
                // Text reaches the engine as a string: invalid UTF-8 is replaced (as JSON would).
                text = String::from_utf8_lossy(&bytes).into_owned();
                continue;
            }
            Mutation::Truncate(n) => {
                let mut end = if text.is_empty() { 0 } else { n % text.len() };
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                continue;
            }
            Mutation::RepeatTail(n, times) => {
                if let Some(i) = word(*n) {
                    let tail: String = toks[i..].concat();
                    toks.push(" ".into());
                    toks.push(vec![tail; *times].join(" "));
                }
            }
        }
        text = toks.concat();
    }
    text
}

fn mutation() -> BoxedStrategy<Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        3 => pos.prop_map(Mutation::DeleteToken),
        2 => pos.prop_map(Mutation::DuplicateToken),
        2 => (pos, pos).prop_map(|(a, b)| Mutation::SwapTokens(a, b)),
        2 => (pos, select(INSERTED_TOKENS)).prop_map(|(a, t)| Mutation::InsertToken(a, t)),
        1 => (pos, any::<u8>()).prop_map(|(a, b)| Mutation::FlipByte(a, b)),
        1 => (pos, any::<u8>()).prop_map(|(a, b)| Mutation::InsertByte(a, b)),
        1 => pos.prop_map(Mutation::Truncate),
        8 => (pos, select(EXTREMES)).prop_map(|(a, t)| Mutation::ReplaceLiteral(a, t)),
        1 => (pos, 1000usize..100_000).prop_map(|(a, n)| Mutation::LongLiteral(a, n)),
        1 => (pos, 2usize..20).prop_map(|(a, n)| Mutation::RepeatTail(a, n)),
    ]
    .boxed()
}

#[test]
fn corpus_mutations() {
    let rt = runtime();
    let files = rt.block_on(corpus());
    let stats = Mutex::new(Stats::default());
    let started = Instant::now();
    let mut runner = runner("corpus_mutations", cases(400), 0x5eed_0002);
    let lens: Vec<usize> = files.iter().map(|f| f.records.len()).collect();
    let strategy = (0..files.len()).prop_flat_map(move |f| {
        let n = lens[f];
        (Just(f), proptest::collection::vec((0..n, proptest::collection::vec(mutation(), 1..4)), 1..5))
    });
    let result = runner.run(&strategy, |(f, edits)| {
        if hung() {
            return Ok(());
        }
        let file = &files[f];
        rt.block_on(async {
            let db = replay(&file.commands).await;
            for (record, mutations) in &edits {
                let sql = mutate(&file.records[*record], mutations);
                check(&db, &sql, &stats).await.map_err(|e| TestCaseError::fail(format!("{}: {e}", file.name)))?;
            }
            Ok(())
        })
    });
    stats.lock().unwrap().print("corpus_mutations", started.elapsed());
    if let Err(e) = result {
        panic!("corpus_mutations: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: every input the targets found, run on the grammar's schema.

/// `n` copies of `item` joined by `sep`.
fn chain(item: &str, sep: &str, n: usize) -> String {
    vec![item; n].join(sep)
}

/// Inputs that once panicked, hung or failed inside, each with the SQLSTATE it must now
/// answer (`None`: success).
fn regression_cases() -> Vec<(String, Option<&'static str>)> {
    let max = quorumdb_sql::limits::MAX_NESTING;
    vec![
        // grammar, seed 0x5eed0001: a chain of 1 800 ORs overflowed the stack in DataFusion
        // (names of expressions: `SchemaDisplay`, recursive per level) and aborted the process.
        (
            format!("SELECT DISTINCT b, sum(least((t1.a), {})) FROM t1 GROUP BY b", chain("t1.b", " OR ", 1800)),
            Some("54000"),
        ),
        // Found while bounding it: 128 levels overflow in ORDER BY, 500 in a SELECT list, 250
        // in an aggregate (debug build, 2 MiB stack).
        (format!("SELECT id FROM t1 ORDER BY {}", chain("a", " + ", 128)), Some("54000")),
        (format!("SELECT {}", chain("d", " OR ", 500)), Some("54000")),
        (format!("SELECT sum(least(a, {})) FROM t1", chain("a", " + ", 250)), Some("54000")),
        (format!("UPDATE t1 SET a = {} WHERE id = 1", chain("1", " + ", 250)), Some("54000")),
        (format!("SELECT 1{}", "::int".repeat(250)), Some("54000")),
        (chain("SELECT 1", " UNION ALL ", 300), Some("54000")),
        // Far past the limit: refused before a tree is built (dropping it would overflow too).
        (format!("SELECT {}", chain("1", "+", 200_000)), Some("54000")),
        // Just within the limit, in the shapes that overflowed first: they must run.
        (format!("SELECT id FROM t1 ORDER BY {}", chain("a", " + ", max - 6)), None),
        (format!("SELECT sum(least(a, {})) FROM t1", chain("a", " + ", max - 8)), None),
        (format!("SELECT id FROM t1 WHERE {}", chain("a = 1", " OR ", max - 6)), None),
        (format!("SELECT count(*) FROM t1 GROUP BY {}", chain("a", " + ", max - 8)), None),
        (format!("SELECT sum(c) OVER (PARTITION BY b ORDER BY {}) FROM t1", chain("a", " + ", max - 20)), None),
        // grammar, seed 0x5eed0001, after the depth limit: 42 nested calls never answered (the
        // parser reads each argument twice: 2^42 reads); 18 took 3 s (debug).
        (
            format!(
                "EXPLAIN SELECT DISTINCT ({}1.5{})::DOUBLE PRECISION AS c0, -(t3.z) IN (SELECT id FROM t1) AS c1 \
                 FROM t3 WHERE y > dt ORDER BY (z / 874) DESC",
                "abs(".repeat(42),
                ")".repeat(42)
            ),
            Some("54000"),
        ),
        (format!("SELECT {}1{}", "abs(".repeat(18), ")".repeat(18)), Some("54000")),
        (format!("SELECT {}1{}", "coalesce(".repeat(18), ", 2)".repeat(18)), Some("54000")),
        (format!("SELECT {}1{}", "abs(".repeat(12), ")".repeat(12)), None),
        // Found with them: 18 nested scalar subqueries, and 10 nested derived tables, overflowed
        // the stack (debug: a level of the parser or planner takes 130-180 KiB, more than the
        // 128 KiB at which they move to a new stack segment); planning 12 took 0.6 s.
        (format!("SELECT {}1{}", "(SELECT ".repeat(18), ")".repeat(18)), Some("54000")),
        (format!("SELECT * FROM {}t1{}", "(SELECT * FROM ".repeat(12), ") s".repeat(12)), Some("54000")),
        (format!("SELECT * FROM {}t1{}", "(SELECT * FROM ".repeat(7), ") s".repeat(7)), None),
        // SQLite's corpus (select5.test): a 59-table join overflowed a 2 MiB stack in DataFusion's
        // join elimination (debug build) and aborted the node; nodes plan on 16 MiB stacks now,
        // and a statement names at most `MAX_RELATIONS` tables.
        (
            format!(
                "SELECT count(*) FROM {}",
                (0..=quorumdb_sql::limits::MAX_RELATIONS).map(|_| "t1").collect::<Vec<_>>().join(", ")
            ),
            Some("54000"),
        ),
        (format!("SELECT {}1{}", "(SELECT ".repeat(7), ")".repeat(7)), None),
        (format!("SELECT 1 WHERE EXISTS {}(SELECT 1){}", "(SELECT 1 WHERE EXISTS ".repeat(6), ")".repeat(6)), None),
        // corpus_mutations (constraints.slt), QUORUMDB_FUZZ_CASES=30000: describing it (what
        // pgwire's Parse does) allocated a slot per parameter up to $2147483648, 48 GiB: the
        // process aborted.
        ("UPDATE t1 SET b = $2147483648 WHERE id = 1".to_string(), Some("54000")),
        ("SELECT $65535".to_string(), Some("42P02")),
    ]
}

#[test]
fn regressions() {
    let rt = runtime();
    let base = rt.block_on(record(&SCHEMA.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    let stats = Mutex::new(Stats::default());
    rt.block_on(async {
        for (sql, expected) in regression_cases() {
            let db = replay(&base).await;
            let outcome = check(&db, &sql, &stats).await.unwrap_or_else(|e| panic!("{e}"));
            let want = expected.map_or(Outcome::Ok, Outcome::Failed);
            assert_eq!(outcome, want, "{}", shorten(&sql, 300));
        }
    });
}

/// grammar, QUORUMDB_FUZZ_CASES=6000: statements after a ROLLBACK in one request were planned,
/// reported done ("INSERT 2") and never applied (and a failing one did not fail the request).
/// Now, as in PostgreSQL, what follows a ROLLBACK is a transaction of its own.
#[test]
fn statements_after_rollback_in_a_request_apply() {
    let rt = runtime();
    let base = rt.block_on(record(&SCHEMA.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    let stats = Mutex::new(Stats::default());
    rt.block_on(async {
        let db = replay(&base).await;
        let sql = "DELETE FROM t2 WHERE k = 10; ROLLBACK; INSERT INTO t2 (k, s) VALUES (92, 'u'), (91, 'u')";
        assert_eq!(check(&db, sql, &stats).await.unwrap(), Outcome::Failed("23505"));
        let sql =
            "INSERT INTO t1 (id) VALUES (700); ROLLBACK; INSERT INTO t1 (id) VALUES (701); DELETE FROM t2 WHERE k = 10";
        assert_eq!(check(&db, sql, &stats).await.unwrap(), Outcome::Ok);
        let ids = db.rows("SELECT id FROM t1 WHERE id >= 700 UNION ALL SELECT k FROM t2 WHERE k = 10").await;
        assert!(ids.contains("701") && !ids.contains("700") && !ids.contains("10"), "{ids}");
    });
}

/// Runs the requests in the file `QUORUMDB_FUZZ_PROBE` names (one per line, `\n` escaped as
/// `\\n`) on the grammar's schema, each checked as the targets check theirs; for
/// investigating a case by hand.
#[test]
#[ignore]
fn probe() {
    let Ok(path) = std::env::var("QUORUMDB_FUZZ_PROBE") else { return };
    let text = std::fs::read_to_string(path).unwrap();
    let rt = runtime();
    let base = rt.block_on(record(&SCHEMA.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    let stats = Mutex::new(Stats::default());
    rt.block_on(async {
        for line in text.lines().filter(|l| !l.is_empty()) {
            let sql = line.replace("\\n", "\n");
            let db = replay(&base).await;
            let started = Instant::now();
            let outcome = check(&db, &sql, &stats).await;
            eprintln!("{:?} in {:?}: {}", outcome, started.elapsed(), shorten(&sql, 120));
        }
    });
}
