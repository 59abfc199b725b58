//! Golden text of the HNSW dump manifest (`manifest.json` beside the graph files). The graph
//! files themselves are `hnsw_rs`'s own format, guarded by the CRCs in this manifest.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

use quorumdb_vector::{HnswIndex, IndexSpec, Metric};

#[test]
fn dump_manifest() {
    let spec = IndexSpec { dim: 3, metric: Metric::Cosine, m: 16, ef_construction: 64 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("7-2");
    HnswIndex::new(spec).dump(&path, 9, 0).unwrap();
    let text = std::fs::read_to_string(path.join("manifest.json")).unwrap();
    golden::check_text(env!("CARGO_MANIFEST_DIR"), "dump-manifest.json", &text);
    let (_, m) = HnswIndex::load(&path, &spec, 9).unwrap().expect("a dump");
    assert_eq!((m.generation, m.points), (9, 0));
}
