//! The HNSW indexes of SQL tables, kept in memory beside the replicated rows, and nearest
//! neighbour search over them.
//!
//! The rows are the truth. Apply (every node, in log order) gives each indexed row version a
//! point id and records `point id ↔ row key` in the state, in the same atomic write as the row;
//! once that write is committed, a commit hook hands the graph its [`Change`]s. So after a
//! crash the state says exactly which points must exist, and [`VectorIndexes::open`] brings a
//! graph loaded from its last dump (or rebuilt, in the background) back in step.
//!
//! Graph builds (`CREATE INDEX`, recovery, compaction when tombstones pile up) run on their
//! own threads: meanwhile changes are applied to the old graph (if any) and queued for the new
//! one, and searches use the old graph or fall back to an exact scan. Searches never block
//! apply, nor apply searches.
//!
//! A change that fails inside the graph library (a panic in an insert) never stops the node:
//! the graph is marked for rebuild and rebuilt in the background from the points the state
//! says exist — read at once, inside the commit hook, where the state is exactly as of the
//! command — while later changes queue for the new graph. A thread that cannot be started
//! leaves the index building (searches stay exact) and is logged.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use quorumdb_state::{AppliedState, SharedState, try_scan};
use quorumdb_vector::{HnswIndex, IndexSpec, Metric, TopK};

use crate::catalog::{Catalog, IndexDef, IndexKind, RowDecoder, TableDef};
use crate::codec;
use crate::error::{Result, SqlError};
use crate::types::Value;

/// Dump a graph again after this many inserts (a restart then replays only the rest).
const DUMP_EVERY: u64 = 50_000;

/// A change to one index's graph, produced by apply.
#[derive(Debug, Clone)]
pub enum Change {
    Insert(u64, Vec<f32>),
    Delete(u64),
}

/// What one command does to the vector indexes, in order.
#[derive(Debug)]
pub enum VectorOp {
    /// A new (or emptied) index with its initial points.
    Create {
        table: u32,
        index: u32,
        spec: IndexSpec,
        generation: u64,
        points: Vec<(u64, Vec<f32>)>,
    },
    Changes {
        table: u32,
        index: u32,
        changes: Vec<Change>,
    },
    Drop {
        table: u32,
        index: u32,
    },
}

enum SlotState {
    Ready(Arc<HnswIndex>),
    /// A graph is being built; `current` (if any) keeps serving and receiving changes.
    Building {
        current: Option<Arc<HnswIndex>>,
        pending: Vec<Change>,
    },
}

struct Slot {
    spec: IndexSpec,
    generation: u64,
    state: Mutex<SlotState>,
    /// One past the highest point id the graph has been given.
    next: AtomicU64,
    inserts_since_dump: AtomicU64,
    /// Bumped when the slot is dropped or replaced, so a late build result is discarded.
    epoch: u64,
}

impl Slot {
    fn current(&self) -> Option<Arc<HnswIndex>> {
        match &*self.state.lock() {
            SlotState::Ready(ix) => Some(ix.clone()),
            SlotState::Building { current, .. } => current.clone(),
        }
    }
}

/// All HNSW indexes of this node's state.
pub struct VectorIndexes {
    /// Where graphs are dumped (`<dir>/<table>-<index>`); none: never dumped.
    dir: Option<PathBuf>,
    slots: RwLock<HashMap<(u32, u32), Arc<Slot>>>,
    epochs: AtomicU64,
    /// The applied state, once opened: what a graph is rebuilt from after a failed change.
    state: RwLock<Option<SharedState>>,
    /// Fault injection for tests: this many graph inserts panic (see [`Self::inject_insert_panics`]).
    failing_inserts: AtomicU32,
}

impl std::fmt::Debug for VectorIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndexes").field("dir", &self.dir).finish()
    }
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPath {
    Hnsw,
    /// Exact: the graph is still being built.
    ExactIndexBuilding,
    /// Exact: the filter let too few of the graph's candidates through.
    ExactSelectiveFilter,
    /// Exact: the graph reached fewer than `k` of its live points (a LIMIT is a promise).
    ExactGraphShort,
}

impl SearchPath {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hnsw => "hnsw",
            Self::ExactIndexBuilding => "exact (index building)",
            Self::ExactSelectiveFilter => "exact (selective filter)",
            Self::ExactGraphShort => "exact (graph short of k)",
        }
    }
}

/// A row found by a search, with its exact distance to the query.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: Vec<u8>,
    pub row: Vec<Value>,
    pub distance: f64,
}

/// A row key and its decoded physical row.
type KeyedRow = (Vec<u8>, Vec<Value>);

/// A predicate over decoded physical rows.
pub type RowPredicate<'a> = &'a dyn Fn(&[Value]) -> Result<bool>;

/// The HNSW parameters of an index definition.
pub fn spec_of(def: &TableDef, ix: &IndexDef) -> Option<IndexSpec> {
    let IndexKind::Hnsw { metric, m, ef_construction } = ix.kind else { return None };
    let crate::types::ColumnType::Vector { dim } = def.columns[*ix.columns.first()?].ty else { return None };
    Some(IndexSpec { dim: dim as usize, metric, m, ef_construction })
}

impl VectorIndexes {
    pub fn new(dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            dir,
            slots: RwLock::default(),
            epochs: AtomicU64::new(1),
            state: RwLock::default(),
            failing_inserts: AtomicU32::new(0),
        })
    }

    fn slot(&self, table: u32, index: u32) -> Option<Arc<Slot>> {
        self.slots.read().get(&(table, index)).cloned()
    }

    fn dump_dir(&self, table: u32, index: u32) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{table}-{index}")))
    }

    fn new_slot(&self, spec: IndexSpec, generation: u64, state: SlotState, next: u64) -> Arc<Slot> {
        Arc::new(Slot {
            spec,
            generation,
            state: Mutex::new(state),
            next: AtomicU64::new(next),
            inserts_since_dump: AtomicU64::new(0),
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Applies one command's operations (from its commit hook, in log order).
    pub fn apply(self: &Arc<Self>, ops: Vec<VectorOp>) {
        for op in ops {
            match op {
                VectorOp::Create { table, index, spec, generation, points } => {
                    let next = points.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
                    if let Some(d) = self.dump_dir(table, index) {
                        let _ = std::fs::remove_dir_all(d);
                    }
                    self.install(table, index, spec, generation, next, points);
                }
                VectorOp::Changes { table, index, changes } => {
                    let Some(slot) = self.slot(table, index) else { continue };
                    self.change(table, index, &slot, changes);
                }
                VectorOp::Drop { table, index } => {
                    self.slots.write().remove(&(table, index));
                    if let Some(d) = self.dump_dir(table, index) {
                        let _ = std::fs::remove_dir_all(d);
                    }
                }
            }
        }
    }

    /// Publishes an index's size as Prometheus gauges.
    fn gauges(table: u32, index: u32, ix: &HnswIndex) {
        let labels = [("table", table.to_string()), ("index", index.to_string())];
        metrics::gauge!("quorumdb_hnsw_points", &labels).set(ix.points() as f64);
        metrics::gauge!("quorumdb_hnsw_tombstones", &labels).set(ix.tombstones() as f64);
    }

    /// Makes the next `n` graph inserts panic, as a bug in the graph library would: for tests
    /// of the recovery path (the node keeps applying, the index is rebuilt).
    pub fn inject_insert_panics(&self, n: u32) {
        self.failing_inserts.store(n, Ordering::Relaxed);
    }

    fn insert_point(&self, ix: &HnswIndex, id: u64, v: &[f32]) {
        if self.failing_inserts.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            panic!("injected HNSW insert failure (point {id})");
        }
        ix.insert(id, v);
    }

    fn change(self: &Arc<Self>, table: u32, index: u32, slot: &Arc<Slot>, changes: Vec<Change>) {
        let inserts = changes.iter().filter(|c| matches!(c, Change::Insert(..))).count() as u64;
        let compact = match catch_unwind(AssertUnwindSafe(|| self.apply_changes(slot, changes))) {
            Ok(compact) => compact,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                metrics::counter!("quorumdb_hnsw_failed_changes_total").increment(1);
                tracing::error!(table, index, panic = %what, "an HNSW change failed; rebuilding the index from the state");
                self.rebuild_from_state(table, index, slot);
                return;
            }
        };
        if let Some(ix) = slot.current() {
            Self::gauges(table, index, &ix);
            if ix.wants_refresh() {
                spawn_logged(format!("hnsw-refresh-{table}-{index}"), move || ix.refresh());
            }
        }
        if let Some(points) = compact {
            tracing::info!(
                table,
                index,
                live = points.len(),
                "compacting HNSW index (tombstones outnumber live points)"
            );
            self.build_in_background(table, index, slot.clone(), points);
        } else if slot.inserts_since_dump.fetch_add(inserts, Ordering::Relaxed) + inserts >= DUMP_EVERY {
            slot.inserts_since_dump.store(0, Ordering::Relaxed);
            let (me, slot) = (self.clone(), slot.clone());
            spawn_logged(format!("hnsw-dump-{table}-{index}"), move || me.dump_slot(table, index, &slot));
        }
    }

    /// Hands `changes` to the slot's graph (or queues them for the one being built); returns
    /// the points to rebuild from when tombstones call for a compaction.
    fn apply_changes(&self, slot: &Slot, changes: Vec<Change>) -> Option<Vec<(u64, Vec<f32>)>> {
        let mut state = slot.state.lock();
        let (current, pending) = match &mut *state {
            SlotState::Ready(ix) => (Some(ix.clone()), None),
            SlotState::Building { current, pending } => (current.clone(), Some(pending)),
        };
        for c in &changes {
            match c {
                Change::Insert(id, v) => {
                    slot.next.fetch_max(id + 1, Ordering::Relaxed);
                    if let Some(ix) = &current {
                        self.insert_point(ix, *id, v);
                    }
                }
                Change::Delete(id) => {
                    if let Some(ix) = &current {
                        ix.delete(*id);
                    }
                }
            }
        }
        if let Some(p) = pending {
            p.extend(changes);
            return None;
        }
        let ix = current?;
        if !ix.needs_compaction() {
            return None;
        }
        let mut points = Vec::with_capacity(ix.live());
        ix.for_each_live(&mut |id, v| points.push((id, v.to_vec())));
        *state = SlotState::Building { current: Some(ix), pending: Vec::new() };
        Some(points)
    }

    /// Replaces a graph that a failed change may have left inconsistent: the points are read
    /// from the state now (a commit hook runs with the state exactly as of its command), the
    /// slot turns to building (later changes queue, searches are exact) and a new graph is
    /// built in the background.
    fn rebuild_from_state(self: &Arc<Self>, table: u32, index: u32, slot: &Arc<Slot>) {
        let points = self.state_points(table, index);
        *slot.state.lock() = SlotState::Building { current: None, pending: Vec::new() };
        match points {
            Ok(points) => {
                metrics::counter!("quorumdb_hnsw_rebuilds_total").increment(1);
                self.build_in_background(table, index, slot.clone(), points);
            }
            // Searches stay exact (correct, slower); the next start rebuilds from the rows.
            Err(e) => tracing::error!(table, index, error = %e, "cannot read the points to rebuild an HNSW index"),
        }
    }

    /// Every point of an index with its vector, as the applied state has them.
    fn state_points(&self, table: u32, index: u32) -> Result<Vec<(u64, Vec<f32>)>> {
        let read = self.state.read().clone();
        let read = read.ok_or_else(|| SqlError::Internal("the vector indexes were never opened".into()))?;
        let catalog = Catalog::load(read.as_ref())?;
        let def = catalog.by_id(table).ok_or_else(|| SqlError::UnknownTable(format!("table id {table}")))?;
        let ix = def
            .indexes
            .iter()
            .find(|ix| ix.id == index)
            .ok_or_else(|| SqlError::UnknownIndex(format!("index id {index}")))?;
        let (live, _) = live_points(read.as_ref(), def, ix)?;
        vectors_of(read.as_ref(), def, ix, &live)
    }

    fn build_in_background(self: &Arc<Self>, table: u32, index: u32, slot: Arc<Slot>, points: Vec<(u64, Vec<f32>)>) {
        let me = self.clone();
        spawn_logged(format!("hnsw-build-{table}-{index}"), move || {
            let started = std::time::Instant::now();
            let built = catch_unwind(AssertUnwindSafe(|| {
                let fresh = HnswIndex::with_capacity(slot.spec, points.len());
                fresh.insert_parallel(&points);
                fresh.refresh();
                fresh
            }));
            let Ok(fresh) = built else {
                // Searches stay exact (correct, slower); the next start builds it again.
                tracing::error!(table, index, "building an HNSW index panicked; it stays unbuilt");
                return;
            };
            let mut state = slot.state.lock();
            let still_ours = me.slot(table, index).is_some_and(|s| s.epoch == slot.epoch);
            if let (true, SlotState::Building { pending, .. }) = (still_ours, &mut *state) {
                for c in pending.drain(..) {
                    match c {
                        Change::Insert(id, v) => fresh.insert(id, &v),
                        Change::Delete(id) => fresh.delete(id),
                    }
                }
                Self::gauges(table, index, &fresh);
                *state = SlotState::Ready(Arc::new(fresh));
                metrics::histogram!("quorumdb_hnsw_build_seconds").record(started.elapsed().as_secs_f64());
                tracing::info!(
                    table,
                    index,
                    points = points.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "built HNSW index"
                );
            }
            drop(state);
            me.dump_slot(table, index, &slot);
        });
    }

    fn dump_slot(&self, table: u32, index: u32, slot: &Slot) {
        let Some(dir) = self.dump_dir(table, index) else { return };
        let state = slot.state.lock();
        let SlotState::Ready(ix) = &*state else { return };
        // Holding the slot lock: no change reaches the graph while it is written.
        match ix.dump(&dir, slot.generation, slot.next.load(Ordering::Relaxed)) {
            Ok(m) => tracing::debug!(table, index, points = m.points, "dumped HNSW index"),
            Err(e) => tracing::warn!(table, index, error = %e, "could not dump HNSW index"),
        }
    }

    /// Dumps every ready graph (at shutdown), so the next start loads instead of rebuilding.
    pub fn dump_all(&self) {
        let slots: Vec<((u32, u32), Arc<Slot>)> = self.slots.read().iter().map(|(k, v)| (*k, v.clone())).collect();
        for ((t, i), slot) in slots {
            self.dump_slot(t, i, &slot);
        }
    }

    /// Puts the latest dump of every graph into `dest/<table>-<index>/` as hard links (dumps
    /// are replaced whole, never modified). Whatever state follows, [`Self::open`] brings such
    /// a dump up to it, as after a restart.
    pub fn export_dumps(&self, dest: &Path) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut slots: Vec<((u32, u32), Arc<Slot>)> = self.slots.read().iter().map(|(k, v)| (*k, v.clone())).collect();
        slots.sort_by_key(|(k, _)| *k);
        for ((t, i), slot) in slots {
            // The slot lock keeps a concurrent dump from replacing the files meanwhile.
            let _state = slot.state.lock();
            let src = dir.join(format!("{t}-{i}"));
            if src.join("manifest.json").exists() {
                copy_dir_linked(&src, &dest.join(format!("{t}-{i}")))?;
            }
        }
        Ok(())
    }

    /// Forgets every graph (the state was replaced), takes the dumps that came with the new
    /// state (`files`, as [`Self::export_dumps`] wrote them) and loads the graphs again from
    /// `read`.
    pub fn reset(self: &Arc<Self>, read: &SharedState, files: Option<&Path>) -> Result<()> {
        self.slots.write().clear();
        if let (Some(dir), Some(files)) = (&self.dir, files) {
            for e in std::fs::read_dir(files)? {
                let e = e?;
                let dest = dir.join(e.file_name());
                let tmp = dest.with_extension("adopt");
                let _ = std::fs::remove_dir_all(&tmp);
                copy_dir_linked(&e.path(), &tmp)?;
                let _ = std::fs::remove_dir_all(&dest);
                std::fs::rename(&tmp, &dest)?;
            }
        }
        self.open(read)
    }

    /// Brings up the graph of every HNSW index in the state: a dump that matches the state is
    /// loaded and completed with the points added since; otherwise the graph is rebuilt in
    /// the background (searches are exact meanwhile).
    pub fn open(self: &Arc<Self>, read: &SharedState) -> Result<()> {
        *self.state.write() = Some(read.clone());
        let catalog = Catalog::load(read.as_ref())?;
        for def in catalog.tables.values() {
            for ix in &def.indexes {
                let Some(spec) = spec_of(def, ix) else { continue };
                self.open_index(read.as_ref(), def, ix, spec)?;
            }
        }
        Ok(())
    }

    fn open_index(
        self: &Arc<Self>,
        read: &dyn AppliedState,
        def: &TableDef,
        ix: &IndexDef,
        spec: IndexSpec,
    ) -> Result<()> {
        let (t, i) = (def.id, ix.id);
        let (live, (generation, next)) = live_points(read, def, ix)?;
        let loaded = match self.dump_dir(t, i).map(|d| HnswIndex::load(&d, &spec, generation)) {
            Some(Ok(Some((graph, m)))) if m.watermark <= next => Some((graph, m.watermark)),
            Some(Ok(Some(_))) => {
                tracing::warn!(table = t, index = i, "HNSW dump is ahead of the state; rebuilding");
                None
            }
            Some(Err(e)) => {
                tracing::warn!(table = t, index = i, error = %e, "HNSW dump unusable; rebuilding");
                None
            }
            _ => None,
        };
        if let Some((graph, watermark)) = loaded {
            let mut alive = std::collections::HashSet::with_capacity(live.len());
            let newer: Vec<(u64, Vec<u8>)> = live.iter().filter(|(id, _)| *id >= watermark).cloned().collect();
            alive.extend(live.iter().map(|(id, _)| *id));
            for (id, v) in vectors_of(read, def, ix, &newer)? {
                graph.insert(id, &v);
            }
            for id in graph.present_ids() {
                if !alive.contains(&id) {
                    graph.delete(id);
                }
            }
            graph.refresh();
            tracing::info!(
                table = t,
                index = i,
                points = graph.points(),
                live = graph.live(),
                "loaded HNSW index from its dump"
            );
            let slot = self.new_slot(spec, generation, SlotState::Ready(Arc::new(graph)), next);
            self.slots.write().insert((t, i), slot);
            return Ok(());
        }
        let points = vectors_of(read, def, ix, &live)?;
        self.install(t, i, spec, generation, next, points);
        Ok(())
    }

    /// A new slot for an index with these points: ready at once when empty, else built in
    /// the background (searches exact meanwhile).
    fn install(
        self: &Arc<Self>,
        table: u32,
        index: u32,
        spec: IndexSpec,
        generation: u64,
        next: u64,
        points: Vec<(u64, Vec<f32>)>,
    ) {
        let state = if points.is_empty() {
            SlotState::Ready(Arc::new(HnswIndex::new(spec)))
        } else {
            SlotState::Building { current: None, pending: Vec::new() }
        };
        let slot = self.new_slot(spec, generation, state, next);
        self.slots.write().insert((table, index), slot.clone());
        if !points.is_empty() {
            self.build_in_background(table, index, slot, points);
        }
    }

    /// Statistics of one index: (points in the graph, live points); `None` while building.
    pub fn stats(&self, table: u32, index: u32) -> Option<(usize, usize)> {
        let ix = self.slot(table, index)?.current()?;
        Some((ix.points(), ix.live()))
    }

    /// The `k` rows nearest to `query` (by the index's metric) that pass `pred`, nearest first.
    /// Uses the graph, exploring `ef` candidates, with `pred` checked as candidates are met;
    /// falls back to an exact scan while the graph is building or when the filter lets too
    /// few candidates through for `k` results.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        read: &dyn AppliedState,
        def: &TableDef,
        ix: &IndexDef,
        query: &[f32],
        k: usize,
        ef: usize,
        pred: Option<RowPredicate<'_>>,
    ) -> Result<(Vec<Found>, SearchPath)> {
        let spec = spec_of(def, ix).ok_or_else(|| SqlError::Internal(format!("{} is not an HNSW index", ix.name)))?;
        quorumdb_vector::metric::validate(query, Some(spec.dim))?;
        let column = ix.columns[0];
        let Some(graph) = self.slot(def.id, ix.id).and_then(|s| s.current()) else {
            metrics::counter!("quorumdb_vector_searches_total", "path" => "exact").increment(1);
            let rows = exact_search(read, def, column, spec.metric, query, k, pred)?;
            return Ok((rows, SearchPath::ExactIndexBuilding));
        };
        let rows = RowDecoder::new(def);
        // Each candidate is resolved (point → row) and filtered at most once.
        let resolved: RefCell<HashMap<u64, Option<KeyedRow>>> = RefCell::default();
        let failure: RefCell<Option<SqlError>> = RefCell::default();
        let budget = Cell::new((20 * ef.max(k)).max(2_000));
        let exhausted = Cell::new(false);
        let resolve = |id: u64| -> Result<Option<KeyedRow>> {
            let Some(key) = read.get(&codec::vector_point_key(def.id, ix.id, id))? else { return Ok(None) };
            let Some(bytes) = read.get(&codec::row_key(def.id, &key))? else { return Ok(None) };
            Ok(Some((key, rows.decode(&bytes)?)))
        };
        let accept = |id: u64| -> bool {
            let found = match resolve(id) {
                Ok(f) => f,
                Err(e) => {
                    failure.borrow_mut().get_or_insert(e);
                    return false;
                }
            };
            let ok = match (&found, pred) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(_), Some(_)) if budget.get() == 0 => {
                    exhausted.set(true);
                    false
                }
                (Some((_, row)), Some(p)) => {
                    budget.set(budget.get() - 1);
                    p(row).unwrap_or_else(|e| {
                        failure.borrow_mut().get_or_insert(e);
                        false
                    })
                }
            };
            resolved.borrow_mut().insert(id, if ok { found } else { None });
            ok
        };
        // Without a predicate the graph skips its own tombstones; rows are resolved after.
        let hits = graph.search(query, k, ef, pred.map(|_| &accept as &dyn Fn(u64) -> bool));
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        let mut out = Vec::with_capacity(hits.len());
        let mut cache = resolved.into_inner();
        for h in &hits {
            let found = match cache.remove(&h.id) {
                Some(f) => f,
                None => resolve(h.id)?,
            };
            if let Some((key, row)) = found
                && let Value::Vector(v) = &row[column]
            {
                let distance = spec.metric.distance(query, v);
                out.push(Found { key, row, distance });
            }
        }
        // Fewer than `k` rows while the graph holds more live points: a filter that let too
        // few candidates through, or a graph that did not reach them. Either way the exact
        // scan gives the answer the query asked for.
        if out.len() < k && (exhausted.get() || graph.live() > out.len()) {
            metrics::counter!("quorumdb_vector_searches_total", "path" => "exact").increment(1);
            let rows = exact_search(read, def, column, spec.metric, query, k, pred)?;
            let path = if pred.is_some() { SearchPath::ExactSelectiveFilter } else { SearchPath::ExactGraphShort };
            return Ok((rows, path));
        }
        metrics::counter!("quorumdb_vector_searches_total", "path" => "hnsw").increment(1);
        out.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        Ok((out, SearchPath::Hnsw))
    }
}

/// Exact k-nearest search over every row of `def` (no index).
pub fn exact_search(
    read: &dyn AppliedState,
    def: &TableDef,
    column: usize,
    metric: Metric,
    query: &[f32],
    k: usize,
    pred: Option<RowPredicate<'_>>,
) -> Result<Vec<Found>> {
    let rows = RowDecoder::new(def);
    let prefix = codec::rows_prefix(def.id);
    let mut top = TopK::new(k);
    try_scan(
        |f| read.scan(&prefix, &codec::prefix_end(&prefix), f),
        |key, bytes| -> Result<bool> {
            let row = rows.decode(bytes)?;
            let Value::Vector(v) = &row[column] else { return Ok(true) };
            if v.len() != query.len() {
                return Ok(true);
            }
            let d = metric.distance(query, v);
            if d >= top.bound() || d.is_nan() {
                return Ok(true);
            }
            if let Some(p) = pred
                && !p(&row)?
            {
                return Ok(true);
            }
            top.push(d, (key[prefix.len()..].to_vec(), row));
            Ok(true)
        },
    )?;
    Ok(top.into_sorted().into_iter().map(|(distance, (key, row))| Found { key, row, distance }).collect())
}

/// An index's points according to the state: `point id → row key`.
type PointRows = Vec<(u64, Vec<u8>)>;

/// The points an HNSW index has according to the state, with the index's generation and next
/// point id.
fn live_points(read: &dyn AppliedState, def: &TableDef, ix: &IndexDef) -> Result<(PointRows, (u64, u64))> {
    let (t, i) = (def.id, ix.id);
    let counter =
        |key: Vec<u8>| -> Result<u64> { Ok(read.get(&key)?.map(|b| codec::decode_u64(&b)).transpose()?.unwrap_or(0)) };
    let generation = counter(codec::vector_generation_key(t, i))?;
    let next = counter(codec::vector_next_key(t, i))?;
    let mut live = PointRows::new();
    let (start, end) = codec::vector_points_range(t, i);
    try_scan(
        |f| read.scan(&start, &end, f),
        |k, v| -> Result<bool> {
            live.push((codec::decode_u64(&k[start.len()..])?, v.to_vec()));
            Ok(true)
        },
    )?;
    Ok((live, (generation, next)))
}

/// The vectors of `points` (`point id → row key`), read from their rows; rows without a
/// vector are left out.
fn vectors_of(
    read: &dyn AppliedState,
    def: &TableDef,
    ix: &IndexDef,
    points: &[(u64, Vec<u8>)],
) -> Result<Vec<(u64, Vec<f32>)>> {
    let rows = RowDecoder::new(def);
    let mut out = Vec::with_capacity(points.len());
    for (id, row_key) in points {
        let Some(bytes) = read.get(&codec::row_key(def.id, row_key))? else { continue };
        if let Value::Vector(v) = rows.decode(&bytes)?.swap_remove(ix.columns[0]) {
            out.push((*id, v));
        }
    }
    Ok(out)
}

/// Runs `f` on a new named thread; a thread that cannot be started is logged (callers leave
/// their work to the next occasion: an index stays exact-searched, a dump waits).
fn spawn_logged(name: String, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.clone()).spawn(f) {
        tracing::error!(thread = %name, error = %e, "cannot start a thread");
    }
}

/// Hard-links (or copies, across file systems) the files of `src` into a new `dest`.
fn copy_dir_linked(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let to = dest.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// Where a node keeps its graph dumps, under its data directory.
pub fn dump_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vectors")
}
