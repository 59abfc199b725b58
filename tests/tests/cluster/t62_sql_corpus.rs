//! SQLite's classic sqllogictest format through pgwire on a 3-node cluster, records
//! round-robin over the nodes (`quorumdb_tests::corpus`, the runner `scripts/slt_corpus.sh`
//! uses on the public corpus): the committed sample (`tests/corpus/sample.test`, PostgreSQL's
//! answers) passes record for record — correlated subqueries with non-equality correlation in
//! the select list, `WHERE` and `ORDER BY`, repeated output names, a view, hashed and sorted
//! results.
//! The runner itself must fail a wrong answer: a copy of the sample with one expected value
//! changed fails exactly that record.

use quorumdb_tests::TestCluster;
use quorumdb_tests::corpus::{Outcome, Target};

fn urls(c: &TestCluster) -> Vec<String> {
    (1..=3)
        .map(|id| {
            let (host, port) = c.pg_addr(id).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
            format!("host={host} port={port} user=postgres")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_passes_on_every_node() {
    let c = TestCluster::start(3).await;
    c.wait_voters(3).await;
    c.wait_format().await; // views need the current format
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sample.test");
    let mut target = Target::new(urls(&c), "postgresql");
    let report = target.run_file(&sample).await.unwrap();
    let misses: Vec<String> =
        report.misses.iter().map(|m| format!("line {}: {} -> {}", m.line, m.sql, m.detail)).collect();
    assert!(misses.is_empty(), "{misses:#?}");
    assert_eq!((report.passed, report.skipped), (17, 1));

    // The file's tables were dropped: the same file passes again on the same cluster.
    let again = target.run_file(&sample).await.unwrap();
    assert_eq!((again.passed, again.failed, again.errored), (17, 0, 0));

    // One changed expected value: that record, and only it, fails.
    let text = std::fs::read_to_string(&sample).unwrap();
    let wrong = text.replacen("114.000", "114.001", 1);
    assert_ne!(text, wrong);
    let path = tempfile::tempdir().unwrap();
    let file = path.path().join("wrong.test");
    std::fs::write(&file, wrong).unwrap();
    let report = target.run_file(&file).await.unwrap();
    assert_eq!((report.passed, report.failed, report.errored), (16, 1, 0), "{:#?}", report.misses);
    assert_eq!(report.misses[0].outcome, Outcome::Fail);
    assert!(report.misses[0].sql.contains("avg(b)"), "{:?}", report.misses[0]);
}
