//! HNSW behaviour: recall against exact search, filters, tombstones, compaction, dump/load.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use quorumdb_vector::{HnswIndex, IndexSpec, Metric, TopK};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Clustered vectors that look like embeddings: points around cluster centres in a
/// low-dimensional latent space, mapped linearly into `dim` dimensions, plus a little noise.
/// Queries come from the same distribution as the data (same map and centres; other draws).
fn dataset(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut shape = StdRng::seed_from_u64(dim as u64);
    let latent = 16;
    let clusters = 64;
    let map: Vec<Vec<f32>> = (0..dim).map(|_| (0..latent).map(|_| shape.random_range(-1.0..1.0)).collect()).collect();
    let centres: Vec<Vec<f32>> =
        (0..clusters).map(|_| (0..latent).map(|_| shape.random_range(-3.0..3.0)).collect()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..clusters)];
            let z: Vec<f32> = c.iter().map(|x| x + rng.random_range(-1.0..1.0)).collect();
            map.iter()
                .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + rng.random_range(-0.05..0.05))
                .collect()
        })
        .collect()
}

fn exact(data: &[Vec<f32>], q: &[f32], k: usize, metric: Metric, keep: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut top = TopK::new(k);
    for (i, v) in data.iter().enumerate() {
        if keep(i as u64) {
            top.push(metric.distance(q, v), i as u64);
        }
    }
    top.into_sorted().into_iter().map(|(_, id)| id).collect()
}

fn build(data: &[Vec<f32>], metric: Metric) -> HnswIndex {
    let index = HnswIndex::with_capacity(IndexSpec::new(data[0].len(), metric), data.len());
    for (i, v) in data.iter().enumerate() {
        index.insert(i as u64, v);
    }
    index
}

fn recall(index: &HnswIndex, data: &[Vec<f32>], queries: &[Vec<f32>], ef: usize, metric: Metric) -> f64 {
    let k = 10;
    let mut found = 0;
    for q in queries {
        let truth = exact(data, q, k, metric, |_| true);
        let got: Vec<u64> = index.search(q, k, ef, None).iter().map(|h| h.id).collect();
        found += truth.iter().filter(|t| got.contains(t)).count();
    }
    found as f64 / (queries.len() * k) as f64
}

#[test]
fn recall_at_10_is_at_least_095_at_the_default_ef() {
    let data = dataset(20_000, 128, 1);
    let queries = dataset(200, 128, 2);
    let ef = IndexSpec::DEFAULT_EF_SEARCH;
    // 15k points, then the flat copy, then 5k more (searched exactly until the next copy).
    let index = build(&data[..15_000], Metric::L2);
    let r = recall(&index, &data[..15_000], &queries, ef, Metric::L2);
    println!("recall@10 (L2, 15k x 128, ef={ef}, hnsw_rs search) = {r:.4}");
    assert!(r >= 0.95, "hnsw_rs search: recall@10 {r}");
    index.refresh();
    assert!(!index.wants_refresh());
    for (i, v) in data.iter().enumerate().skip(15_000) {
        index.insert(i as u64, v);
    }
    let r = recall(&index, &data, &queries, ef, Metric::L2);
    println!("recall@10 (L2, 20k x 128, ef={ef}, flat copy of 15k + 5k exact) = {r:.4}");
    assert!(r >= 0.95, "flat + delta: recall@10 {r}");
    assert!(index.wants_refresh());
    index.refresh();
    let r = recall(&index, &data, &queries, ef, Metric::L2);
    println!("recall@10 (L2, 20k x 128, ef={ef}, flat copy) = {r:.4}");
    assert!(r >= 0.95, "flat: recall@10 {r}");
}

#[test]
fn a_parallel_build_is_as_good() {
    let data = dataset(10_000, 64, 12);
    let queries = dataset(100, 64, 13);
    let index = HnswIndex::with_capacity(IndexSpec::new(64, Metric::L2), data.len());
    let points: Vec<(u64, Vec<f32>)> = data.iter().enumerate().map(|(i, v)| (i as u64, v.clone())).collect();
    index.insert_parallel(&points);
    assert_eq!(index.points(), 10_000);
    let r = recall(&index, &data, &queries, IndexSpec::DEFAULT_EF_SEARCH, Metric::L2);
    assert!(r >= 0.95, "recall@10 {r}");
    index.refresh();
    let r = recall(&index, &data, &queries, IndexSpec::DEFAULT_EF_SEARCH, Metric::L2);
    assert!(r >= 0.95, "flat: recall@10 {r}");
}

#[test]
fn cosine_and_inner_product_indexes_find_the_true_neighbours() {
    let data = dataset(3_000, 32, 3);
    let queries = dataset(50, 32, 4);
    for metric in [Metric::Cosine, Metric::InnerProduct] {
        let index = build(&data, metric);
        let r = recall(&index, &data, &queries, 100, metric);
        println!("recall@10 ({metric}, 3k x 32, ef=100) = {r:.4}");
        assert!(r >= 0.95, "{metric}: recall@10 {r}");
    }
}

#[test]
fn filtered_search_returns_k_hits_that_all_pass_the_filter() {
    let data = dataset(5_000, 32, 5);
    let index = build(&data, Metric::L2);
    for (modulus, flat) in [(2u64, false), (10, false), (50, false), (2, true), (10, true), (50, true)] {
        if flat {
            index.refresh();
        }
        let keep = move |id: u64| id.is_multiple_of(modulus);
        for q in dataset(20, 32, 6) {
            let hits = index.search(&q, 10, 64, Some(&keep));
            assert_eq!(hits.len(), 10, "modulus {modulus}");
            assert!(hits.iter().all(|h| keep(h.id)));
            let truth = exact(&data, &q, 10, Metric::L2, keep);
            let found = truth.iter().filter(|t| hits.iter().any(|h| h.id == **t)).count();
            assert!(found >= 8, "modulus {modulus}: {found}/10 of the true filtered neighbours");
        }
    }
}

#[test]
fn deleted_points_never_come_back_and_compaction_keeps_the_answers() {
    let data = dataset(4_000, 16, 7);
    let index = build(&data, Metric::L2);
    for id in (0..4_000u64).filter(|i| !i.is_multiple_of(3)) {
        index.delete(id);
    }
    assert_eq!(index.live(), 1334);
    assert!(index.needs_compaction());
    let queries = dataset(30, 16, 8);
    let before: Vec<Vec<u64>> =
        queries.iter().map(|q| index.search(q, 10, 200, None).iter().map(|h| h.id).collect()).collect();
    for (q, got) in queries.iter().zip(&before) {
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|id| id.is_multiple_of(3)));
        assert_eq!(*got, exact(&data, q, 10, Metric::L2, |id| id.is_multiple_of(3)));
    }
    index.refresh();
    for (q, want) in queries.iter().zip(&before) {
        let got: Vec<u64> = index.search(q, 10, 200, None).iter().map(|h| h.id).collect();
        assert_eq!(got, *want, "flat copy");
    }
    // A graph rebuilt from the live points (what compaction does) answers the same.
    let compact = HnswIndex::with_capacity(*index.spec(), index.live());
    let mut live = Vec::new();
    index.for_each_live(&mut |id, v| live.push((id, v.to_vec())));
    live.sort_by_key(|(id, _)| *id);
    for (id, v) in &live {
        compact.insert(*id, v);
    }
    assert_eq!((compact.points(), compact.tombstones()), (1334, 0));
    for (q, want) in queries.iter().zip(&before) {
        let got: Vec<u64> = compact.search(q, 10, 200, None).iter().map(|h| h.id).collect();
        assert_eq!(got, *want);
    }
    // A deleted id inserted again (a replayed command) is revived, not duplicated.
    index.insert(1, &data[1]);
    assert!(index.contains(1));
    assert_eq!(index.points(), 4_000);
}

#[test]
fn a_dump_loads_back_with_the_same_answers_and_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ix");
    let data = dataset(3_000, 24, 9);
    let spec = IndexSpec::new(24, Metric::Cosine);
    let index = HnswIndex::with_capacity(spec, data.len());
    for (i, v) in data.iter().enumerate() {
        index.insert(i as u64, v);
    }
    let m = index.dump(&path, 7, 3_000).unwrap();
    assert_eq!((m.points, m.watermark, m.generation), (3_000, 3_000, 7));
    let (loaded, manifest) = HnswIndex::load(&path, &spec, 7).unwrap().unwrap();
    assert_eq!(manifest.watermark, 3_000);
    assert_eq!(loaded.points(), 3_000);
    for q in dataset(20, 24, 10) {
        let a: Vec<u64> = index.search(&q, 10, 80, None).iter().map(|h| h.id).collect();
        let b: Vec<u64> = loaded.search(&q, 10, 80, None).iter().map(|h| h.id).collect();
        assert_eq!(a, b);
    }
    // Another generation or spec is refused; so is a damaged file.
    assert!(HnswIndex::load(&path, &spec, 8).is_err());
    assert!(HnswIndex::load(&path, &IndexSpec::new(24, Metric::L2), 7).is_err());
    let graph = path.join("graph.hnsw.graph");
    let mut bytes = std::fs::read(&graph).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&graph, bytes).unwrap();
    assert!(HnswIndex::load(&path, &spec, 7).is_err());
    assert!(HnswIndex::load(&dir.path().join("none"), &spec, 7).unwrap().is_none());
}

#[test]
fn searches_run_while_points_are_inserted() {
    let data = dataset(6_000, 32, 11);
    let index = std::sync::Arc::new(build(&data[..1_000], Metric::L2));
    let writer = {
        let index = index.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            for (i, v) in data.iter().enumerate().skip(1_000) {
                index.insert(i as u64, v);
                if i % 1_500 == 0 {
                    index.refresh();
                }
            }
        })
    };
    let mut searches = 0;
    while !writer.is_finished() {
        let hits = index.search(&data[searches % 1_000], 5, 40, None);
        assert!(!hits.is_empty());
        searches += 1;
    }
    writer.join().unwrap();
    assert_eq!(index.points(), 6_000);
    assert!(searches > 0);
}

#[test]
fn an_empty_graph_refreshes_dumps_and_loads() {
    // A node restarted with an indexed but empty table refreshes and reloads an empty graph.
    let spec = IndexSpec::new(4, Metric::L2);
    let ix = HnswIndex::new(spec);
    ix.refresh();
    let mut n = 0;
    ix.for_each_live(&mut |_, _| n += 1);
    assert_eq!(n, 0);
    let dir = tempfile::tempdir().unwrap();
    ix.dump(&dir.path().join("d"), 1, 0).unwrap();
    let (back, m) = HnswIndex::load(&dir.path().join("d"), &spec, 1).unwrap().unwrap();
    assert_eq!(m.points, 0);
    back.refresh();
    assert!(back.search(&[0.0; 4], 3, 10, None).is_empty());
}

#[test]
fn small_builds_reach_every_point() {
    // A LIMIT k search of a table with n >= k rows must find k: a small graph built in one go
    // (CREATE INDEX on a small table) has every point reachable, before and after a refresh.
    for n in 1..=40usize {
        let data = dataset(n, 3, n as u64);
        let points: Vec<(u64, Vec<f32>)> = data.iter().cloned().enumerate().map(|(i, v)| (i as u64, v)).collect();
        let index = HnswIndex::with_capacity(IndexSpec::new(3, Metric::L2), n);
        index.insert_parallel(&points);
        for refreshed in [false, true] {
            if refreshed {
                index.refresh();
            }
            for q in &data {
                let got = index.search(q, n.min(4), 40, None);
                assert_eq!(got.len(), n.min(4), "n={n} refreshed={refreshed}");
                let want = exact(&data, q, n.min(4), Metric::L2, |_| true);
                assert_eq!(got.iter().map(|h| h.id).collect::<Vec<_>>(), want, "n={n} refreshed={refreshed}");
            }
        }
    }
}

/// The vectors of the chaos suite's vector workload (`tests/src/chaos/workload.rs`): distinct,
/// on a few planes, many points on a line with equal coordinates — a shape HNSW's pruning
/// handles badly.
fn grid_vector(id: u64) -> Vec<f32> {
    let f = |k: u64| ((id.wrapping_mul(k) % 1009) as f32) / 10.0;
    vec![(id % 1000) as f32, f(7919), f(104_729), (id / 1000) as f32]
}

#[test]
fn every_point_of_a_parallel_build_is_reachable() {
    // The chaos suite's check: a node that rebuilt its index from rows after a restart (a
    // parallel build of ~3,000 of these points) did not find some points at ef 1000, though
    // exact search did. They were in the graph and reachable: a beam of 1,000 over this
    // lattice-like data stops short of them (29-83 of 3,500 missed at ef 1000, none at an ef
    // that covers the graph). So an ef that covers the graph finds every point: the index
    // holds every point it was given and every one is reachable from the entry point.
    let mut rng = StdRng::seed_from_u64(14);
    for round in 0..4 {
        let mut ids: Vec<u64> = (0..6_000).filter(|_| rng.random_bool(0.6)).collect();
        ids.truncate(3_500);
        let points: Vec<(u64, Vec<f32>)> = ids.iter().map(|&id| (id, grid_vector(id))).collect();
        let index = HnswIndex::with_capacity(IndexSpec::new(4, Metric::L2), points.len());
        index.insert_parallel(&points);
        index.refresh();
        let lost: Vec<u64> = points
            .iter()
            .filter(|(id, v)| index.search(v, 1, points.len(), None).first().map(|h| h.id) != Some(*id))
            .map(|p| p.0)
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} points not found: {:?}",
            lost.len(),
            points.len(),
            &lost[..lost.len().min(20)]
        );
    }
}
