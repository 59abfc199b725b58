//! Key-range pushdown of the table provider: a scan bounded by a primary-key equality, IN list
//! or range, or by a secondary-index predicate, reads only the rows in that range — counted
//! at the state the engine reads — and answers exactly what a full scan answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use quorumdb_sql::Engine;
use quorumdb_sql::memory::MemoryState;
use quorumdb_state::AppliedState;

mod common;
use common::Db;

/// The applied state, counting the rows and index entries read through it.
struct Counting {
    inner: Arc<MemoryState>,
    rows: AtomicUsize,
    index_entries: AtomicUsize,
}

impl Counting {
    /// `q/t/<table id>/r/…` is a row, `q/t/<table id>/i/…` an index entry.
    fn count(&self, key: &[u8]) {
        if key.len() > 11 && key.starts_with(b"q/t/") {
            match &key[9..11] {
                b"r/" => self.rows.fetch_add(1, Ordering::Relaxed),
                b"i/" => self.index_entries.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }
}

impl AppliedState for Counting {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let v = self.inner.get(key)?;
        if v.is_some() {
            self.count(key);
        }
        Ok(v)
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        self.inner.scan(start, end, &mut |k, v| {
            self.count(k);
            f(k, v)
        })
    }
}

struct Counted {
    db: Db,
    reads: Arc<Counting>,
}

impl Counted {
    async fn new() -> Self {
        let state = MemoryState::new();
        let reads = Arc::new(Counting { inner: state.clone(), rows: 0.into(), index_entries: 0.into() });
        let engine = Engine::new(reads.clone(), state.vectors());
        let db = Db { state, engine };
        for t in ["p", "p_plain"] {
            let key = if t == "p" { "PRIMARY KEY" } else { "" };
            db.ok(&format!("CREATE TABLE {t} (id INT {key}, city TEXT, age INT, note TEXT)")).await;
            db.ok(&format!(
                "INSERT INTO {t} SELECT v, 'c' || (v % 10), CASE WHEN v % 7 = 0 THEN NULL ELSE v % 50 END, 'n' || v \
                 FROM unnest(range(0, 1000)) AS r(v)"
            ))
            .await;
        }
        db.ok("CREATE INDEX p_city ON p (city); CREATE INDEX p_age ON p (age)").await;
        for t in ["c", "c_plain"] {
            let key = if t == "c" { ", PRIMARY KEY (a, b)" } else { "" };
            db.ok(&format!("CREATE TABLE {t} (a INT, b INT, v TEXT{key})")).await;
            db.ok(&format!("INSERT INTO {t} SELECT v / 50, v % 50, 'v' || v FROM unnest(range(0, 1000)) AS r(v)"))
                .await;
        }
        Self { db, reads }
    }

    /// The query's rows, and how many rows and index entries it read.
    async fn read(&self, sql: &str) -> (String, usize, usize) {
        self.reads.rows.store(0, Ordering::Relaxed);
        self.reads.index_entries.store(0, Ordering::Relaxed);
        let out = self.db.rows(sql).await;
        (out, self.reads.rows.load(Ordering::Relaxed), self.reads.index_entries.load(Ordering::Relaxed))
    }

    /// Runs `sql` on the table with keys and indexes and on its plain copy (always a full scan):
    /// the results must agree. Returns the rows and index entries the keyed table's scan read.
    async fn check(&self, sql: &str) -> (usize, usize) {
        let (got, rows, entries) = self.read(sql).await;
        let plain = sql.replace("FROM p ", "FROM p_plain ").replace("FROM c ", "FROM c_plain ");
        assert_ne!(plain, sql);
        let (want, plain_rows, _) = self.read(&plain).await;
        assert_eq!(got, want, "{sql}");
        assert!(plain_rows >= 1000, "the plain copy is scanned in full: {plain_rows}");
        (rows, entries)
    }
}

#[tokio::test]
async fn primary_key_equalities_and_in_lists_read_only_their_rows() {
    let t = Counted::new().await;
    assert_eq!(t.check("SELECT id, city FROM p WHERE id = 5 ORDER BY id").await, (1, 0));
    assert_eq!(t.check("SELECT * FROM p WHERE 5 = id").await, (1, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id = 5000 ORDER BY id").await, (0, 0), "absent key");
    assert_eq!(t.check("SELECT id FROM p WHERE id IN (3, 5, 700, 5000) ORDER BY id").await, (3, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id = 3 OR id = 9 ORDER BY id").await, (2, 0));
    // The other predicates still apply to the rows the key found.
    let (out, rows, _) = t.read("SELECT count(*) AS n FROM p WHERE id = 5 AND city = 'c4'").await;
    assert!(out.contains("| 0 |") && rows == 1, "{out}");
    assert_eq!(t.check("SELECT id FROM p WHERE id = 5 AND city = 'c5' AND age IS NOT NULL ORDER BY id").await.0, 1);
}

#[tokio::test]
async fn primary_key_ranges_read_only_their_range() {
    let t = Counted::new().await;
    assert_eq!(t.check("SELECT id FROM p WHERE id >= 100 AND id < 150 ORDER BY id").await, (50, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id > 100 AND id <= 150 ORDER BY id").await, (50, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id BETWEEN 10 AND 19 ORDER BY id").await, (10, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id > 990 ORDER BY id").await, (9, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id < 5 ORDER BY id").await, (5, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE id < -5 ORDER BY id").await, (0, 0));
    // Mixed with predicates pushdown does not use: the range still bounds the scan.
    assert_eq!(t.check("SELECT id FROM p WHERE id >= 100 AND id < 200 AND note LIKE '%7' ORDER BY id").await.0, 100);
    assert_eq!(t.check("SELECT count(*) AS n FROM p WHERE id >= 100 AND id < 200 AND city = 'c3'").await.0, 100);
}

#[tokio::test]
async fn what_pushdown_cannot_bound_is_a_full_scan_with_the_same_answer() {
    let t = Counted::new().await;
    for sql in [
        "SELECT id FROM p WHERE id + 0 = 5 ORDER BY id",
        "SELECT id FROM p WHERE id = 5 OR city = 'c1' ORDER BY id",
        "SELECT id FROM p WHERE abs(id) = 5 ORDER BY id",
        "SELECT id FROM p WHERE note = 'n5' ORDER BY id",
        "SELECT id FROM p WHERE age IS NULL ORDER BY id",
        "SELECT id FROM p WHERE id <> 5 ORDER BY id",
    ] {
        let (rows, entries) = t.check(sql).await;
        assert_eq!((rows, entries), (1000, 0), "{sql}");
    }
}

#[tokio::test]
async fn secondary_index_predicates_read_only_the_matching_entries_and_rows() {
    let t = Counted::new().await;
    assert_eq!(t.check("SELECT id FROM p WHERE city = 'c3' ORDER BY id").await, (100, 100));
    assert_eq!(t.check("SELECT id FROM p WHERE city = 'nowhere' ORDER BY id").await, (0, 0));
    assert_eq!(t.check("SELECT id FROM p WHERE city IN ('c1', 'c2') ORDER BY id").await, (200, 200));
    assert_eq!(t.check("SELECT id FROM p WHERE city = 'c3' AND note LIKE '%33' ORDER BY id").await, (100, 100));
    // A range on a column with NULLs: NULLs are never in it, and never read.
    let matching = |low: i64, high: i64| (0..1000).filter(|v| v % 7 != 0 && (low..high).contains(&(v % 50))).count();
    assert_eq!(t.check("SELECT id, age FROM p WHERE age < 3 ORDER BY id").await, (matching(0, 3), matching(0, 3)));
    assert_eq!(t.check("SELECT id FROM p WHERE age >= 47 ORDER BY id").await, (matching(47, 50), matching(47, 50)));
    assert_eq!(t.check("SELECT id FROM p WHERE age = 0 ORDER BY id").await.0, matching(0, 1));
    // A primary-key bound wins over an index.
    assert_eq!(t.check("SELECT id FROM p WHERE id = 13 AND city = 'c3' ORDER BY id").await, (1, 0));
}

#[tokio::test]
async fn composite_keys_are_bounded_by_their_leading_columns() {
    let t = Counted::new().await;
    assert_eq!(t.check("SELECT a, b FROM c WHERE a = 3 AND b = 7 ORDER BY a, b").await, (1, 0));
    assert_eq!(t.check("SELECT a, b FROM c WHERE a = 3 ORDER BY a, b").await, (50, 0));
    assert_eq!(t.check("SELECT a, b FROM c WHERE a = 3 AND b >= 40 ORDER BY a, b").await, (10, 0));
    assert_eq!(t.check("SELECT a, b FROM c WHERE a IN (1, 2) AND b = 5 ORDER BY a, b").await, (2, 0));
    assert_eq!(t.check("SELECT a, b FROM c WHERE a >= 18 ORDER BY a, b").await, (100, 0));
    // Without the leading column there is no key range to read.
    assert_eq!(t.check("SELECT a, b FROM c WHERE b = 7 ORDER BY a, b").await, (1000, 0));
    assert_eq!(t.check("SELECT a, b FROM c WHERE a = 3 OR b = 7 ORDER BY a, b").await, (1000, 0));
}

#[tokio::test]
async fn a_write_batch_s_reads_see_its_pending_rows_through_pushdown() {
    let t = Counted::new().await;
    let sql = "INSERT INTO p VALUES (5000, 'c3', 1, 'new'); DELETE FROM p WHERE id = 13; \
               SELECT count(*) AS n FROM p WHERE city = 'c3'; SELECT count(*) AS n FROM p WHERE id >= 4000";
    let out = t.db.ok(sql).await;
    let counts: Vec<String> = out
        .iter()
        .skip(2)
        .map(|r| match r {
            quorumdb_sql::StatementResult::Rows { batches, .. } => {
                datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(counts[0].contains("| 100 |"), "one row in, one out: {}", counts[0]);
    assert!(counts[1].contains("| 1 |"), "{}", counts[1]);
    assert_eq!(t.check("SELECT count(*) AS n FROM p WHERE city = 'c3'").await, (100, 100));
}
