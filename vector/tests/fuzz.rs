//! Fuzz target of the HNSW dump reader: `HnswIndex::load` of a dump directory whose files
//! (the manifest, the graph file, the data file) are mutated, and what the owner does with a
//! loaded graph (insert, delete, refresh, search). Mutated graph and data files come with
//! their CRCs recomputed in the manifest most of the time, so the edits reach `hnsw_rs`'s
//! reader instead of stopping at the checksum (what a writer bug or a tampered file would
//! leave). Whatever the files, loading returns and never panics, hangs or ends the process.
//! See `state/tests/support/fuzz.rs` (cases: `QUORUMDB_FUZZ_CASES`, default 2,000).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

#[path = "../../state/tests/support/fuzz.rs"]
mod fuzz;

#[path = "../../state/tests/support/fuzz_json.rs"]
mod fuzz_json;

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use quorumdb_vector::{HnswIndex, IndexSpec, Metric};

const SPEC: IndexSpec = IndexSpec { dim: 3, metric: Metric::Cosine, m: 16, ef_construction: 64 };
const GENERATION: u64 = 9;
const MANIFEST: &str = "manifest.json";
const GRAPH: &str = "graph.hnsw.graph";
const DATA: &str = "graph.hnsw.data";

/// A dump of a small graph (ids with gaps, a few deleted), as its three files' bytes.
struct Dump {
    manifest: Vec<u8>,
    graph: Vec<u8>,
    data: Vec<u8>,
}

fn dump() -> &'static Dump {
    static DUMP: OnceLock<Dump> = OnceLock::new();
    DUMP.get_or_init(|| {
        let ix = HnswIndex::new(SPEC);
        for i in 0..40u64 {
            let f = i as f32;
            ix.insert(i * 3, &[f.sin(), f.cos(), 0.5 + f / 40.0]);
        }
        ix.delete(6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7-2");
        ix.dump(&path, GENERATION, 120).unwrap();
        let read = |name: &str| std::fs::read(path.join(name)).unwrap();
        Dump { manifest: read(MANIFEST), graph: read(GRAPH), data: read(DATA) }
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// Which file a case edits.
#[derive(Debug, Clone, Copy)]
enum Target {
    Manifest,
    Graph,
    Data,
    GraphAndData,
}

/// One case: the files as written, and whether the manifest's CRCs were recomputed.
#[derive(Debug, Clone)]
struct Case {
    target: Target,
    fix_crcs: bool,
    manifest: fuzz::Bytes,
    graph: fuzz::Bytes,
    data: fuzz::Bytes,
}

fn cases() -> impl Strategy<Value = Case> {
    let d = dump();
    let binary_tokens: &'static [&'static [u8]] = &[
        &[0xff; 8],
        &[0; 8],
        &[0x80, 0, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0x80],
        &[0xff, 0xff, 0xff, 0x7f],
        &[0x7f, 0x67, 0x2a, 0x00], // MAGICDESCR_2 (no longer readable)
        &[0x71, 0x67, 0x2a, 0x00], // MAGICDESCR_3
        &[0x6f, 0x67, 0x0a, 0x00], // MAGICLAYER
        &[0x8f, 0x67, 0x0a, 0x00], // MAGICPOINT
        &[0x00, 0x00, 0x7f, 0xa6], // MAGICDATAP
        &[0x10],
        &[0x11],
        &[0x04, 0, 0, 0, 0, 0, 0, 0],
        &[0x0c, 0, 0, 0, 0, 0, 0, 0],
    ];
    let graph = fuzz::mutated(vec![d.graph.clone()], binary_tokens);
    let data = fuzz::mutated(vec![d.data.clone()], binary_tokens);
    let manifest =
        prop_oneof![fuzz::mutated(vec![d.manifest.clone()], fuzz::JSON_TOKENS), fuzz_json::edited(&d.manifest)];
    prop_oneof![
        1 => manifest.prop_map(|m| Case {
            target: Target::Manifest, fix_crcs: false, manifest: fuzz::Bytes(m),
            graph: fuzz::Bytes(d.graph.clone()), data: fuzz::Bytes(d.data.clone()),
        }),
        3 => (graph, prop::bool::weighted(0.8)).prop_map(|(g, fix_crcs)| Case {
            target: Target::Graph, fix_crcs, manifest: fuzz::Bytes(d.manifest.clone()),
            graph: fuzz::Bytes(g), data: fuzz::Bytes(d.data.clone()),
        }),
        2 => (fuzz::mutated(vec![d.data.clone()], binary_tokens), prop::bool::weighted(0.8)).prop_map(|(x, fix_crcs)| Case {
            target: Target::Data, fix_crcs, manifest: fuzz::Bytes(d.manifest.clone()),
            graph: fuzz::Bytes(d.graph.clone()), data: fuzz::Bytes(x),
        }),
        1 => (fuzz::mutated(vec![d.graph.clone()], binary_tokens), data).prop_map(|(g, x)| Case {
            target: Target::GraphAndData, fix_crcs: true, manifest: fuzz::Bytes(d.manifest.clone()),
            graph: fuzz::Bytes(g), data: fuzz::Bytes(x),
        }),
    ]
}

/// Writes the case's files into `dir` (the manifest's CRCs recomputed if the case says so).
fn write(dir: &Path, case: &Case) {
    let mut manifest = case.manifest.0.clone();
    if case.fix_crcs {
        let mut m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        m["graph_crc32"] = crc32(&case.graph.0).into();
        m["data_crc32"] = crc32(&case.data.0).into();
        manifest = serde_json::to_vec_pretty(&m).unwrap();
    }
    std::fs::write(dir.join(MANIFEST), manifest).unwrap();
    std::fs::write(dir.join(GRAPH), &case.graph.0).unwrap();
    std::fs::write(dir.join(DATA), &case.data.0).unwrap();
}

/// Loads the dump in `dir` and, if it loads, uses it as the SQL layer's index upkeep does.
fn load_and_use(dir: &Path) -> Result<bool, quorumdb_vector::VectorError> {
    let Some((ix, m)) = HnswIndex::load(dir, &SPEC, GENERATION)? else { return Ok(false) };
    assert_eq!(ix.points(), m.points);
    let present = ix.present_ids();
    assert_eq!(present.len(), ix.points());
    ix.insert(1_000, &[1.0, 0.0, 0.0]);
    for id in present.iter().take(3) {
        ix.delete(*id);
    }
    let _ = ix.search(&[0.5, 0.5, 0.5], 5, 40, None);
    ix.refresh();
    let _ = ix.search(&[0.5, 0.5, 0.5], 5, 40, Some(&|id| id % 2 == 0));
    let mut n = 0;
    ix.for_each_live(&mut |_, v| {
        assert_eq!(v.len(), SPEC.dim);
        n += 1;
    });
    assert_eq!(n, ix.live());
    Ok(true)
}

/// Panics `hnsw_rs` raises inside `HnswIndex::load` (which turns them into errors): counted,
/// and kept out of the output; every other panic goes to the default hook.
static CAUGHT: AtomicU64 = AtomicU64::new(0);

fn quiet_hnsw_rs_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("hnsw_rs")) {
                CAUGHT.fetch_add(1, Ordering::Relaxed);
            } else {
                default(info);
            }
        }));
    });
}

#[test]
fn hnsw_dump_load_never_panics() {
    quiet_hnsw_rs_panics();
    let dir = fuzz::scratch_dir();
    let (loaded, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(fuzz::config());
    let started = std::time::Instant::now();
    let result = runner.run(&cases(), |case| {
        let what = match case.target {
            Target::Manifest => &case.manifest.0,
            Target::Graph | Target::GraphAndData => &case.graph.0,
            Target::Data => &case.data.0,
        };
        fuzz::bounded("HnswIndex::load", what, || {
            write(dir.path(), &case);
            match load_and_use(dir.path()) {
                Ok(_) => loaded.fetch_add(1, Ordering::Relaxed),
                Err(_) => refused.fetch_add(1, Ordering::Relaxed),
            };
        });
        Ok(())
    });
    eprintln!(
        "hnsw_dump_load_never_panics: {} cases in {:.1} s: {} loaded, {} refused ({} of them panics inside hnsw_rs, caught by load)",
        runner.config().cases,
        started.elapsed().as_secs_f64(),
        loaded.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        CAUGHT.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The unedited dump loads, and the checked-in manifest sample is a loadable empty dump.
#[test]
fn the_seeds_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dump();
    let case = Case {
        target: Target::Graph,
        fix_crcs: false,
        manifest: fuzz::Bytes(d.manifest.clone()),
        graph: fuzz::Bytes(d.graph.clone()),
        data: fuzz::Bytes(d.data.clone()),
    };
    write(dir.path(), &case);
    assert!(load_and_use(dir.path()).unwrap());
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join(MANIFEST), fuzz::golden_text(env!("CARGO_MANIFEST_DIR"), "dump-manifest.json"))
        .unwrap();
    assert!(load_and_use(empty.path()).unwrap());
}

// Regressions: dumps the fuzzer built (CRCs recomputed) that ended the test process before
// `HnswIndex::load` checked the files' structure itself (`dump_check`). Each must now be
// refused with an error.

const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_DESCR_2: u32 = 0x002a_677f;

/// Offset of the first point record in a graph file (after its layer's magic and count).
fn first_point(graph: &[u8]) -> usize {
    let at = graph.windows(4).position(|w| w == MAGIC_POINT.to_ne_bytes()).unwrap();
    assert_eq!(graph[at - 12..at - 8], MAGIC_LAYER.to_ne_bytes(), "a point record follows its layer's header");
    at
}

/// Loads the seed dump after `edit` changed its graph and data files (CRCs recomputed).
fn load_edited(edit: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> Result<bool, quorumdb_vector::VectorError> {
    let d = dump();
    let (mut graph, mut data) = (d.graph.clone(), d.data.clone());
    edit(&mut graph, &mut data);
    let case = Case {
        target: Target::GraphAndData,
        fix_crcs: true,
        manifest: fuzz::Bytes(d.manifest.clone()),
        graph: fuzz::Bytes(graph),
        data: fuzz::Bytes(data),
    };
    let dir = fuzz::scratch_dir();
    write(dir.path(), &case);
    load_and_use(dir.path())
}

#[test]
fn regression_a_huge_neighbour_count_is_refused() {
    // hnsw_rs reserved room for 2^40 neighbours: "memory allocation of ... bytes failed", abort.
    let r = load_edited(|graph, _| {
        let p = first_point(graph) + 4 + 8 + 1 + 4;
        graph[p..p + 8].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn regression_a_point_id_far_above_the_watermark_is_refused() {
    // The id bitsets grew to 2^44 words for one id of 2^50: an allocation failure, abort.
    let r = load_edited(|graph, data| {
        let p = first_point(graph) + 4;
        graph[p..p + 8].copy_from_slice(&(1u64 << 50).to_ne_bytes());
        data[16..24].copy_from_slice(&(1u64 << 50).to_ne_bytes());
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn regression_a_truncated_data_file_is_refused() {
    // hnsw_rs ended the process (`std::process::exit(1)`) on a short read of a vector.
    let r = load_edited(|_, data| {
        data.pop();
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn regression_a_version_2_graph_file_is_refused() {
    // hnsw_rs reads the version-2 description (version 4 without its level scale), then ends
    // the process (`std::process::exit(1)`) at the first vector.
    let r = load_edited(|graph, _| {
        graph[..4].copy_from_slice(&MAGIC_DESCR_2.to_ne_bytes());
        graph.drain(6..14);
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn regression_a_vector_shorter_than_the_dimension_is_refused() {
    // hnsw_rs read `dim` floats from a 4-byte record (past the end of its buffer) and loaded.
    let r = load_edited(|_, data| {
        data[24..32].copy_from_slice(&4u64.to_ne_bytes());
        data.drain(36..44);
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn regression_a_nan_neighbour_distance_is_refused() {
    // Found by a long run (200,000 cases), shrunk to one edit: a neighbour's distance made NaN.
    // hnsw_rs loaded the graph; the first insert after the load sorted that neighbour list and
    // panicked ("user-provided comparison function does not correctly implement a total
    // order", hnsw_rs/src/hnsw.rs:1277), outside the load's catch_unwind.
    let r = load_edited(|graph, _| {
        const AT: usize = 6184;
        assert_eq!(graph[AT..AT + 4], [0xaf, 0x3c, 0x8d, 0x3f], "the seed dump is the one the case was found in");
        graph[AT..AT + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]); // a NaN
    });
    assert!(r.is_err(), "{r:?}");
}
