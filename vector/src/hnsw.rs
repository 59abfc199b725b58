//! One HNSW index: an `hnsw_rs` graph over `(id, vector)` points, with deletions as
//! tombstones, filtered search, and dump/load of the graph.
//!
//! Ids are chosen by the owner (the SQL crate allocates them deterministically at apply, one
//! per row version), never reused within one index. A deleted id stays in the graph as a
//! tombstone that searches skip; the owner rebuilds a graph without them from
//! [`HnswIndex::for_each_live`] when they pile up.
//!
//! Concurrency: inserts take `&self` (hnsw_rs locks per node), so searches run while the
//! owner's apply thread inserts. A writer mutex orders inserts against dumps and compaction.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::Distance;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VectorError};
use crate::flat::FlatGraph;
use crate::metric::Metric;

/// What an index is: dimension, metric and the graph parameters of `CREATE INDEX ... WITH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub dim: usize,
    pub metric: Metric,
    /// Links per node (`m`).
    pub m: usize,
    /// Candidate list size while building (`ef_construction`).
    pub ef_construction: usize,
}

impl IndexSpec {
    pub const DEFAULT_M: usize = 16;
    /// pgvector's defaults. On clustered 128-dimensional data (the recall test, the bench)
    /// they give recall@10 >= 0.99 at ef_search 40.
    pub const DEFAULT_EF_CONSTRUCTION: usize = 64;
    /// The default `ef_search` (`SET hnsw.ef_search`).
    pub const DEFAULT_EF_SEARCH: usize = 40;

    pub fn new(dim: usize, metric: Metric) -> Self {
        Self { dim, metric, m: Self::DEFAULT_M, ef_construction: Self::DEFAULT_EF_CONSTRUCTION }
    }

    /// Checks the parameters are in the ranges pgvector accepts.
    pub fn validate(&self) -> Result<()> {
        if !(2..=100).contains(&self.m) {
            return Err(VectorError::InvalidParameter(format!("m must be between 2 and 100, not {}", self.m)));
        }
        if !(4..=1000).contains(&self.ef_construction) || self.ef_construction < 2 * self.m {
            return Err(VectorError::InvalidParameter(format!(
                "ef_construction must be between 4 and 1000 and at least 2 * m, not {}",
                self.ef_construction
            )));
        }
        if !(1..=16000).contains(&self.dim) {
            return Err(VectorError::InvalidParameter(format!(
                "HNSW indexes support 1..16000 dimensions, not {}",
                self.dim
            )));
        }
        Ok(())
    }
}

/// The graph's distance: the metric's non-negative, order-preserving form.
#[derive(Debug, Clone, Copy)]
pub struct GraphDistance(pub Metric);

impl Distance<f32> for GraphDistance {
    #[inline]
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        self.0.graph_distance(a, b)
    }
}

type Graph = Hnsw<'static, f32, GraphDistance>;

/// Which ids the graph holds and which of them are deleted.
#[derive(Default)]
struct Ids {
    present: Vec<u64>,
    dead: Vec<u64>,
    points: usize,
    dead_count: usize,
}

fn bit(set: &[u64], id: u64) -> bool {
    set.get((id / 64) as usize).is_some_and(|w| w & (1 << (id % 64)) != 0)
}

fn set_bit(set: &mut Vec<u64>, id: u64, on: bool) -> bool {
    let w = (id / 64) as usize;
    if set.len() <= w {
        if !on {
            return false;
        }
        set.resize(w + 1, 0);
    }
    let was = set[w] & (1 << (id % 64)) != 0;
    if on {
        set[w] |= 1 << (id % 64);
    } else {
        set[w] &= !(1 << (id % 64));
    }
    was
}

/// A search hit: the point's id and its graph distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub graph_distance: f32,
}

/// What a dump directory says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpManifest {
    pub format: u32,
    pub spec: IndexSpec,
    /// An opaque value from the owner (the SQL crate's index generation); a dump whose
    /// generation differs is not loaded.
    pub generation: u64,
    /// Ids below this were all inserted when the dump was taken (and the dump holds no id at
    /// or above it: ids are allocated in order).
    pub watermark: u64,
    pub points: usize,
    pub graph_crc32: u32,
    pub data_crc32: u32,
}

const DUMP_FORMAT: u32 = 1;
/// Builds smaller than this insert one point at a time (see `insert_parallel`).
const PARALLEL_BUILD_MIN: usize = 2_000;
const BASENAME: &str = "graph";

pub struct HnswIndex {
    spec: IndexSpec,
    graph: Graph,
    ids: RwLock<Ids>,
    writer: Mutex<()>,
    /// A flat copy of the graph for fast searches ([`Self::refresh`]), and the points
    /// inserted since it was made (searched exactly).
    flat: RwLock<Option<Arc<FlatGraph>>>,
    delta: RwLock<Vec<(u64, Vec<f32>)>>,
    refreshing: AtomicBool,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex").field("spec", &self.spec).field("points", &self.points()).finish()
    }
}

fn new_graph(spec: &IndexSpec, capacity: usize) -> Graph {
    Hnsw::new(spec.m, capacity.max(1024), 16, spec.ef_construction, GraphDistance(spec.metric))
}

impl HnswIndex {
    pub fn new(spec: IndexSpec) -> Self {
        Self::with_capacity(spec, 0)
    }

    /// An empty index expecting about `capacity` points.
    pub fn with_capacity(spec: IndexSpec, capacity: usize) -> Self {
        Self::from_graph(spec, new_graph(&spec, capacity), Ids::default())
    }

    fn from_graph(spec: IndexSpec, graph: Graph, ids: Ids) -> Self {
        Self {
            spec,
            graph,
            ids: RwLock::new(ids),
            writer: Mutex::new(()),
            flat: RwLock::default(),
            delta: RwLock::default(),
            refreshing: AtomicBool::new(false),
        }
    }

    pub fn spec(&self) -> &IndexSpec {
        &self.spec
    }

    /// Points in the graph, tombstones included.
    pub fn points(&self) -> usize {
        self.ids.read().points
    }

    /// Points not deleted.
    pub fn live(&self) -> usize {
        let ids = self.ids.read();
        ids.points - ids.dead_count
    }

    pub fn tombstones(&self) -> usize {
        self.ids.read().dead_count
    }

    /// True when tombstones outnumber live points enough that a compaction pays off.
    pub fn needs_compaction(&self) -> bool {
        let ids = self.ids.read();
        ids.dead_count >= 1000 && ids.dead_count > ids.points - ids.dead_count
    }

    pub fn contains(&self, id: u64) -> bool {
        let ids = self.ids.read();
        bit(&ids.present, id) && !bit(&ids.dead, id)
    }

    /// Adds a point. The vector must have the index's dimension and be finite (the caller
    /// validated it when the row was written). Inserting an id the graph already holds (a
    /// reloaded dump meeting the same command again) only revives it: ids are never reused
    /// for another vector.
    pub fn insert(&self, id: u64, vector: &[f32]) {
        assert_eq!(vector.len(), self.spec.dim, "vector dimension checked before insert");
        let _w = self.writer.lock();
        {
            let mut ids = self.ids.write();
            if bit(&ids.present, id) {
                if set_bit(&mut ids.dead, id, false) {
                    ids.dead_count -= 1;
                }
                return;
            }
        }
        let v = self.spec.metric.prepare(vector);
        self.graph.insert_slice((&v, id as usize));
        {
            let mut ids = self.ids.write();
            set_bit(&mut ids.present, id, true);
            ids.points += 1;
        }
        // The flat guard is held while the delta changes, so a search sees a flat copy and
        // the delta that goes with it (see `search`).
        let flat = self.flat.read();
        if flat.is_some() {
            self.delta.write().push((id, v));
        }
    }

    /// Adds many new points at once, on all cores (hnsw_rs's rayon insert): for building a
    /// graph from existing rows. Same preconditions as [`Self::insert`]; the ids must be new.
    /// The graph differs from a sequential build's (order of insertion), not its quality.
    pub fn insert_parallel(&self, points: &[(u64, Vec<f32>)]) {
        if points.len() < PARALLEL_BUILD_MIN {
            // Concurrent inserts into a near-empty graph can leave points unreachable from
            // the entry point; a small graph is built one point at a time (still fast).
            for (id, v) in points {
                self.insert(*id, v);
            }
            return;
        }
        let _w = self.writer.lock();
        let prepared: Vec<(u64, Vec<f32>)> = points
            .iter()
            .map(|(id, v)| {
                assert_eq!(v.len(), self.spec.dim, "vector dimension checked before insert");
                (*id, self.spec.metric.prepare(v))
            })
            .collect();
        let slices: Vec<(&[f32], usize)> = prepared.iter().map(|(id, v)| (v.as_slice(), *id as usize)).collect();
        self.graph.parallel_insert_slice(&slices);
        let mut ids = self.ids.write();
        for (id, _) in &prepared {
            if !set_bit(&mut ids.present, *id, true) {
                ids.points += 1;
            }
        }
        drop(ids);
        let flat = self.flat.read();
        if flat.is_some() {
            self.delta.write().extend(prepared);
        }
    }

    /// Whether the flat copy is missing or enough points were inserted since it was made
    /// that [`Self::refresh`] pays off.
    pub fn wants_refresh(&self) -> bool {
        if self.refreshing.load(Ordering::Relaxed) {
            return false;
        }
        match &*self.flat.read() {
            None => self.points() > 0,
            Some(f) => self.delta.read().len() > (f.len() / 16).max(1024),
        }
    }

    /// Makes a new flat copy of the graph for searches. Blocks inserts while it copies
    /// (about a millisecond per thousand points); returns at once if another refresh runs.
    pub fn refresh(&self) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _w = self.writer.lock();
        let mut points = Vec::with_capacity(self.points());
        // hnsw_rs's point iterator panics on a graph without an entry point (no points).
        if self.points() > 0 {
            for p in self.graph.get_point_indexation() {
                let neighbours: Vec<Vec<u64>> =
                    p.get_neighborhood_id().iter().map(|l| l.iter().map(|n| n.d_id as u64).collect()).collect();
                points.push((p.get_origin_id() as u64, p.get_point_id().0 as usize, p.get_v().to_vec(), neighbours));
            }
        }
        let flat = FlatGraph::build(self.spec.metric, self.spec.dim, points).map(Arc::new);
        // Swapped together: no search may pair the new copy's absence of a point with an
        // already cleared delta.
        let mut current = self.flat.write();
        let mut delta = self.delta.write();
        *current = flat;
        delta.clear();
        drop(delta);
        drop(current);
        self.refreshing.store(false, Ordering::Release);
    }

    /// Marks a point deleted; searches skip it from now on.
    pub fn delete(&self, id: u64) {
        let mut ids = self.ids.write();
        if bit(&ids.present, id) && !set_bit(&mut ids.dead, id, true) {
            ids.dead_count += 1;
        }
    }

    /// The `k` nearest live points that `accept` lets through, nearest first, exploring
    /// `ef` candidates (at least `k`). `accept` is called at most once per point.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, accept: Option<&dyn Fn(u64) -> bool>) -> Vec<Hit> {
        if k == 0 || self.points() == 0 {
            return Vec::new();
        }
        let q = self.spec.metric.prepare(query);
        // hnsw_rs needs ef >= 2 with a filter (a filtered result list must keep one point).
        let ef = ef.max(k).max(2);
        let has_dead = self.tombstones() > 0;
        // The graph may ask about the same point many times; answer each once.
        let memo: std::cell::RefCell<std::collections::HashMap<u64, bool>> = Default::default();
        let filter = |id: u64| -> bool {
            if !has_dead && accept.is_none() {
                return true;
            }
            if let Some(&ok) = memo.borrow().get(&id) {
                return ok;
            }
            let ok = {
                let ids = self.ids.read();
                !bit(&ids.dead, id)
            } && accept.is_none_or(|f| f(id));
            memo.borrow_mut().insert(id, ok);
            ok
        };
        // The flat copy and its delta are read as one pair: `refresh` swaps the copy and
        // clears the delta under both write guards.
        let (flat, mut hits) = {
            let current = self.flat.read();
            let Some(flat) = current.clone() else {
                drop(current);
                return self.search_graph(&q, k, ef, accept.is_none() && !has_dead, &filter);
            };
            // An exact look at the points inserted since the copy was made.
            let delta = self.delta.read();
            drop(current);
            let hits: Vec<(u64, f32)> = delta
                .iter()
                .filter(|(id, _)| filter(*id))
                .map(|(id, v)| (*id, self.spec.metric.graph_distance(&q, v)))
                .collect();
            (flat, hits)
        };
        let seen: std::collections::HashSet<u64> = hits.iter().map(|h| h.0).collect();
        let from_flat = flat.search(&q, k, ef, &filter);
        hits.extend(from_flat.into_iter().filter(|h| !seen.contains(&h.0)));
        hits.sort_by(|a, b| a.1.total_cmp(&b.1));
        hits.truncate(k);
        hits.into_iter().map(|(id, d)| Hit { id, graph_distance: d }).collect()
    }

    /// A search of hnsw_rs's own graph (before the first flat copy exists).
    fn search_graph(&self, q: &[f32], k: usize, ef: usize, unfiltered: bool, filter: &dyn Fn(u64) -> bool) -> Vec<Hit> {
        let hits = if unfiltered {
            self.graph.search(q, k, ef)
        } else {
            let f = |id: &usize| filter(*id as u64);
            self.graph.search_filter(q, k, ef, Some(&f))
        };
        hits.into_iter().map(|n| Hit { id: n.d_id as u64, graph_distance: n.distance }).collect()
    }

    /// Calls `f` with the id and (prepared) vector of every live point.
    pub fn for_each_live(&self, f: &mut dyn FnMut(u64, &[f32])) {
        let ids = self.ids.read();
        if ids.points == 0 {
            return; // hnsw_rs's iterator panics on an empty graph
        }
        for p in self.graph.get_point_indexation() {
            let id = p.get_origin_id() as u64;
            if !bit(&ids.dead, id) {
                f(id, p.get_v());
            }
        }
    }

    /// Writes the graph to `dir` (replaced atomically: written beside it, then renamed).
    /// Blocks inserts while it runs.
    pub fn dump(&self, dir: &Path, generation: u64, watermark: u64) -> Result<DumpManifest> {
        let _w = self.writer.lock();
        let parent = dir.parent().ok_or_else(|| VectorError::InvalidParameter("dump dir has no parent".into()))?;
        std::fs::create_dir_all(parent)?;
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let points = self.points();
        if points > 0 {
            self.graph.file_dump(&tmp, BASENAME).map_err(|e| VectorError::Corrupt(format!("dump failed: {e}")))?;
        }
        let crc = |name: &str| -> Result<u32> {
            let p = tmp.join(format!("{BASENAME}.hnsw.{name}"));
            if !p.exists() {
                return Ok(0);
            }
            let f = std::fs::File::open(&p)?;
            f.sync_all()?;
            Ok(crc32(&std::fs::read(&p)?))
        };
        let manifest = DumpManifest {
            format: DUMP_FORMAT,
            spec: self.spec,
            generation,
            watermark,
            points,
            graph_crc32: crc("graph")?,
            data_crc32: crc("data")?,
        };
        let m = serde_json::to_vec_pretty(&manifest).map_err(|e| VectorError::Corrupt(e.to_string()))?;
        write_synced(&tmp.join("manifest.json"), &m)?;
        let old = dir.with_extension("old");
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        let _ = std::fs::remove_dir_all(&old);
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    }

    /// Reads a dump written by [`Self::dump`]. `None` when there is none; an error when it
    /// is damaged or does not match `spec`/`generation` (the caller rebuilds instead).
    pub fn load(dir: &Path, spec: &IndexSpec, generation: u64) -> Result<Option<(HnswIndex, DumpManifest)>> {
        let mpath = dir.join("manifest.json");
        if !mpath.exists() {
            return Ok(None);
        }
        let manifest: DumpManifest = serde_json::from_slice(&std::fs::read(&mpath)?)
            .map_err(|e| VectorError::Corrupt(format!("manifest: {e}")))?;
        if manifest.format != DUMP_FORMAT || manifest.spec != *spec || manifest.generation != generation {
            return Err(VectorError::Corrupt("the dump is of another index or generation".into()));
        }
        if manifest.points == 0 {
            return Ok(Some((HnswIndex::new(*spec), manifest)));
        }
        let mut files = Vec::with_capacity(2);
        for (name, want) in [("graph", manifest.graph_crc32), ("data", manifest.data_crc32)] {
            let bytes = std::fs::read(dir.join(format!("{BASENAME}.hnsw.{name}")))?;
            if crc32(&bytes) != want {
                return Err(VectorError::Corrupt(format!("checksum mismatch in {name} file")));
            }
            files.push(bytes);
        }
        // hnsw_rs's reader trusts its files (a bad count aborts the process, a short data file
        // ends it): they are checked first, whole (see `dump_check`).
        let expected = crate::dump_check::Expected {
            dim: spec.dim,
            m: spec.m,
            ef_construction: spec.ef_construction,
            watermark: manifest.watermark,
        };
        crate::dump_check::check(&files[0], &files[1], &expected)?;
        drop(files);
        // hnsw_rs ties the graph's lifetime to its loader; the loader is a few paths and
        // options, kept for the life of the process (one per load).
        let io: &'static HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
        let graph = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.load_hnsw_with_dist::<f32, GraphDistance>(GraphDistance(spec.metric))
        }))
        .map_err(|_| VectorError::Corrupt("the graph file could not be read".into()))?
        .map_err(|e| VectorError::Corrupt(e.to_string()))?;
        let mut ids = Ids::default();
        for p in graph.get_point_indexation() {
            set_bit(&mut ids.present, p.get_origin_id() as u64, true);
            ids.points += 1;
        }
        if ids.points != manifest.points {
            return Err(VectorError::Corrupt(format!(
                "{} points in the graph, {} in the manifest",
                ids.points, manifest.points
            )));
        }
        Ok(Some((HnswIndex::from_graph(*spec, graph, ids), manifest)))
    }

    /// Ids present in the graph (tombstones included), for reconciling a loaded dump.
    pub fn present_ids(&self) -> Vec<u64> {
        let ids = self.ids.read();
        let mut out = Vec::with_capacity(ids.points);
        for (w, word) in ids.present.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                let b = word.trailing_zeros() as u64;
                out.push(w as u64 * 64 + b);
                word &= word - 1;
            }
        }
        out
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
