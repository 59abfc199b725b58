//! The replicated state machine, on its own RocksDB instance.
//!
//! Owns: application data (column family `data`), and in column family `meta` the last applied
//! log id, the last membership, the running checksum of applied commands and the name of the
//! current snapshot file. Applications never see RocksDB: they get a [`StateTxn`] at apply time
//! and a [`StateReader`] for queries.
//!
//! # To ensure correctness
//! - **Atomic apply.** Every batch of entries openraft hands to `apply` becomes one RocksDB
//!   `WriteBatch` holding the data writes *and* the new last-applied log id, membership and
//!   checksum. A crash leaves either all of it or none of it, so restart never replays or skips
//!   an entry. The batch is not fsynced: the log is durable, and an unsynced apply lost in a
//!   crash is simply applied again from it.
//! - **Deterministic.** A command's outcome depends only on the command and the state before it.
//!   A command the application rejects has its staged writes discarded and changes nothing on
//!   any node; the rejection is still part of the checksum.
//! - **Visible before acknowledged.** Responses are sent only after the batch is written, so a
//!   client that got an answer can read its write.
//! - **Snapshots are consistent** images taken through a RocksDB snapshot (reads at one
//!   sequence number), built in the background while apply continues, and installed with one
//!   synced `WriteBatch` that replaces the data and the metadata together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::alias::SnapshotOf;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::encoding::{decode, encode};
use crate::error::storage_err;
use crate::snapshot::{SnapshotFile, SnapshotHeader, SnapshotReader, SnapshotWriter, read_header, sync_dir};
use crate::types::{CommandResult, LogId, SnapshotMeta, StoredMembership, TypeConfig};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_CHECKSUM: &[u8] = b"checksum";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// A deterministic application of commands to the replicated key-value state.
///
/// The crate is generic over this trait: the built-in KV table implements it now, SQL and
/// vectors later. Implementations must be deterministic — the same command on the same state
/// gives the same writes and the same result on every node.
pub trait Application: Send + Sync + 'static {
    /// Applies one command. `Ok(response)` keeps the writes staged in `txn`; `Err(error)`
    /// discards them all (the command fails identically everywhere and changes nothing).
    /// Both byte strings are the application's own encoding, returned to the proposer.
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> Result<Vec<u8>, Vec<u8>>;

    /// The state was opened, before any command is applied: load what is kept beside it.
    fn opened(&self, _state: &StateReader) -> std::io::Result<()> {
        Ok(())
    }

    /// The whole state was replaced (a snapshot was installed): anything kept beside it in
    /// memory must be rebuilt from the new state.
    fn state_replaced(&self, _state: &StateReader) {}
}

/// The state as one command sees it while it is applied: the committed state plus the writes
/// of earlier commands of the same batch plus its own.
pub trait StateTxn {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Deletes every key in `start..end`.
    fn delete_range(&mut self, start: &[u8], end: &[u8]);
    /// Calls `f` for each pair in `start..end`, in key order, as this command sees them; stops
    /// when `f` returns `false`.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>;
    /// The log index of the entry being applied (the same on every node).
    fn log_index(&self) -> u64;
    /// Runs `f` once this command's writes are durable in the state and before anyone is told
    /// it was applied (nor any later command applied); dropped if the command is rejected.
    /// For in-memory structures kept beside the state (vector indexes).
    fn on_commit(&mut self, f: CommitHook);
}

/// Work to run after a command's writes are committed (see [`StateTxn::on_commit`]).
pub type CommitHook = Box<dyn FnOnce() + Send>;

/// Staged writes: point writes plus range deletions that came before all of them.
#[derive(Default)]
struct Staged {
    points: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Staged {
    fn covered(&self, key: &[u8]) -> bool {
        self.ranges.iter().any(|(s, e)| key >= s.as_slice() && key < e.as_slice())
    }
    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        if start >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self.points.range(start.to_vec()..end.to_vec()).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.points.remove(&k);
        }
        self.ranges.push((start.to_vec(), end.to_vec()));
    }
    /// Layers `later` over `self`.
    fn absorb(&mut self, later: Staged) {
        for (s, e) in later.ranges {
            self.delete_range(&s, &e);
        }
        self.points.extend(later.points);
    }
}

/// Writes staged by one apply batch, layered over the database.
struct Overlay<'a> {
    db: &'a DB,
    batch: Staged,
    command: Staged,
    index: u64,
    batch_hooks: Vec<CommitHook>,
    command_hooks: Vec<CommitHook>,
}

impl StateTxn for Overlay<'_> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        for layer in [&self.command, &self.batch] {
            if let Some(v) = layer.points.get(key) {
                return Ok(v.clone());
            }
            if layer.covered(key) {
                return Ok(None);
            }
        }
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        self.db.get_cf(cf, key).map_err(storage_err)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.command.points.insert(key.to_vec(), Some(value.to_vec()));
    }
    fn delete(&mut self, key: &[u8]) {
        self.command.points.insert(key.to_vec(), None);
    }
    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        self.command.delete_range(start, end);
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if start >= end {
            return Ok(());
        }
        // Merge the database's pairs (minus what the layers delete) with the layers' points.
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        for item in self.db.iterator_cf_opt(cf, ro, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(storage_err)?;
            if !self.batch.covered(&k) && !self.command.covered(&k) {
                merged.insert(k.to_vec(), Some(v.to_vec()));
            }
        }
        for (k, v) in self.batch.points.range(start.to_vec()..end.to_vec()) {
            if !self.command.covered(k) {
                merged.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in self.command.points.range(start.to_vec()..end.to_vec()) {
            merged.insert(k.clone(), v.clone());
        }
        for (k, v) in &merged {
            if let Some(v) = v
                && !f(k, v)
            {
                break;
            }
        }
        Ok(())
    }
    fn log_index(&self) -> u64 {
        self.index
    }
    fn on_commit(&mut self, f: CommitHook) {
        self.command_hooks.push(f);
    }
}

/// Read access to the applied state, concurrent with apply. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

impl StateReader {
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        self.db.get_cf(cf, key).map_err(storage_err)
    }

    /// Up to `limit` pairs whose key starts with `prefix`, from `start` (inclusive) on.
    pub fn scan_prefix(&self, prefix: &[u8], start: &[u8], limit: usize) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(from, Direction::Forward)) {
            let (k, v) = item.map_err(storage_err)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Calls `f` for each pair in `start..end` in key order, all read at one point in time (a
    /// RocksDB iterator pins its sequence number); stops when `f` returns `false`. Blocking:
    /// call it from a blocking thread for long scans.
    pub fn scan_range(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        for item in self.db.iterator_cf_opt(cf, ro, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(storage_err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` with a view of the state at one point in time (a RocksDB snapshot), so several
    /// reads agree with each other even while commands are applied.
    pub fn view<R>(&self, f: impl FnOnce(&StateView<'_>) -> R) -> R {
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        f(&StateView { snap: self.db.snapshot(), cf })
    }

    /// A frozen image of the state as of now: a RocksDB checkpoint written to `dir` (which must
    /// not exist; SST files are hard links, so it is cheap) and opened read-only. Every read of
    /// the returned reader sees that one point in time, however long it takes (backups).
    /// The caller removes `dir` once the reader is dropped.
    pub fn checkpoint(&self, dir: &Path) -> std::io::Result<StateReader> {
        let db = self.db.clone();
        rocksdb::checkpoint::Checkpoint::new(&db).and_then(|c| c.create_checkpoint(dir)).map_err(storage_err)?;
        let frozen = DB::open_cf_for_read_only(&Options::default(), dir, [CF_DATA, CF_META], false)
            .map_err(storage_err)?;
        Ok(StateReader { db: Arc::new(frozen) })
    }

    /// The last applied log id and the running checksum of applied commands, read together.
    pub fn applied(&self) -> std::io::Result<(Option<LogId>, u64)> {
        let snap = self.db.snapshot();
        let cf = self.db.cf_handle(CF_META).expect("meta cf");
        let applied = match snap.get_cf(cf, KEY_APPLIED).map_err(storage_err)? {
            Some(b) => decode(&b)?,
            None => None,
        };
        let checksum = match snap.get_cf(cf, KEY_CHECKSUM).map_err(storage_err)? {
            Some(b) => decode(&b)?,
            None => 0,
        };
        Ok((applied, checksum))
    }

    /// A digest of every data key and value: equal on replicas with equal state.
    pub fn state_digest(&self) -> std::io::Result<u64> {
        let cf = self.db.cf_handle(CF_DATA).expect("data cf");
        let mut h = Fnv64::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(storage_err)?;
            h.write(&(k.len() as u32).to_le_bytes());
            h.write(&k);
            h.write(&(v.len() as u32).to_le_bytes());
            h.write(&v);
        }
        Ok(h.0)
    }
}

/// The applied state at one point in time (see [`StateReader::view`]).
pub struct StateView<'a> {
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
    cf: &'a rocksdb::ColumnFamily,
}

impl StateView<'_> {
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.snap.get_cf(self.cf, key).map_err(storage_err)
    }

    /// Calls `f` for each pair in `start..end` in key order; stops when `f` returns `false`.
    pub fn scan_range(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        for item in self.snap.iterator_cf_opt(self.cf, ro, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(storage_err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for replica comparison (not for security).
struct Fnv64(u64);
impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Folds one applied command into the running checksum.
fn fold_checksum(prev: u64, index: u64, command: &[u8], result: &CommandResult) -> u64 {
    let mut h = Fnv64(prev);
    h.write(&index.to_le_bytes());
    h.write(command);
    h.write(&[matches!(result, CommandResult::Applied(_)) as u8]);
    h.0
}

/// The openraft state machine: applies entries through the [`Application`].
pub struct StateMachineStore {
    db: Arc<DB>,
    app: Arc<dyn Application>,
    snapshot_dir: PathBuf,
}

impl StateMachineStore {
    /// Opens (or creates) the state at `dir/state`, with snapshots in `dir/snapshots`.
    pub fn open(dir: &Path, app: Arc<dyn Application>) -> std::io::Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_DATA, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir.join("state"), cfs).map_err(storage_err)?);
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        // Leftovers of a crash during a build or a transfer.
        for e in std::fs::read_dir(&snapshot_dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp" || x == "recv") {
                let _ = std::fs::remove_file(p);
            }
        }
        app.opened(&StateReader { db: db.clone() })?;
        Ok(Self { db, app, snapshot_dir })
    }

    pub fn reader(&self) -> StateReader {
        StateReader { db: self.db.clone() }
    }

    /// Where incoming snapshot transfers are written before install.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> std::io::Result<Option<T>> {
        let cf = self.db.cf_handle(CF_META).expect("meta cf");
        match self.db.get_cf(cf, key).map_err(storage_err)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn current_snapshot_path(&self) -> std::io::Result<Option<PathBuf>> {
        Ok(self.meta::<String>(KEY_SNAPSHOT)?.map(|n| self.snapshot_dir.join(n)))
    }
}

/// Builds snapshots from a RocksDB snapshot, off the apply path.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        // One committed log id per index: the index names the snapshot.
        Some(l) => format!("{:020}.snap", l.index),
        None => "empty.snap".to_string(),
    }
}

/// Records `name` as the current snapshot and deletes every other snapshot file.
fn set_current_snapshot(db: &DB, dir: &Path, name: &str) -> std::io::Result<()> {
    let cf = db.cf_handle(CF_META).expect("meta cf");
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.put_cf_opt(cf, KEY_SNAPSHOT, encode(&name.to_string())?, &wo).map_err(storage_err)?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "snap") && p.file_name().is_some_and(|f| f != name) {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> std::io::Result<SnapshotOf<TypeConfig, SnapshotFile>> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let started = std::time::Instant::now();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let snap = db.snapshot();
            let meta_cf = db.cf_handle(CF_META).expect("meta cf");
            let get = |k: &[u8]| snap.get_cf(meta_cf, k).map_err(storage_err);
            let last_log_id: Option<LogId> = get(KEY_APPLIED)?.map(|b| decode(&b)).transpose()?.flatten();
            let last_membership: StoredMembership =
                get(KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
            let checksum: u64 = get(KEY_CHECKSUM)?.map(|b| decode(&b)).transpose()?.unwrap_or(0);
            let meta = SnapshotMeta { last_log_id, last_membership };
            let name = snapshot_name(&meta);
            let header = SnapshotHeader { meta: meta.clone(), checksum };
            let mut w = SnapshotWriter::create(dir.join(&name), &header)?;
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snap);
            let data_cf = db.cf_handle(CF_DATA).expect("data cf");
            for item in db.iterator_cf_opt(data_cf, ro, IteratorMode::Start) {
                let (k, v) = item.map_err(storage_err)?;
                w.record(&k, &v)?;
            }
            let path = w.finish()?;
            drop(snap);
            set_current_snapshot(&db, &dir, &name)?;
            Ok(Snapshot { meta, snapshot: SnapshotFile { path } })
        })
        .await
        .map_err(std::io::Error::other)??;
        metrics::histogram!("quorumdb_snapshot_build_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(meta = %res.meta, elapsed_ms = started.elapsed().as_millis() as u64, "built snapshot");
        Ok(res)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> std::io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.meta::<Option<LogId>>(KEY_APPLIED)?.flatten();
        let membership = self.meta::<StoredMembership>(KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> std::io::Result<()>
    where
        Strm: futures::Stream<Item = std::io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut overlay = Overlay {
            db: &self.db,
            batch: Staged::default(),
            command: Staged::default(),
            index: 0,
            batch_hooks: Vec::new(),
            command_hooks: Vec::new(),
        };
        let mut checksum: u64 = self.meta(KEY_CHECKSUM)?.unwrap_or(0);
        let mut last_applied = None;
        let mut membership = None;
        let mut responses = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.index();
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Applied(Vec::new()),
                EntryPayload::Normal(cmd) => {
                    overlay.index = index;
                    let result = match self.app.apply(&cmd.0, &mut overlay) {
                        Ok(resp) => {
                            let staged = std::mem::take(&mut overlay.command);
                            overlay.batch.absorb(staged);
                            let hooks = std::mem::take(&mut overlay.command_hooks);
                            overlay.batch_hooks.extend(hooks);
                            CommandResult::Applied(resp)
                        }
                        Err(err) => {
                            overlay.command = Staged::default();
                            overlay.command_hooks.clear();
                            CommandResult::Rejected(err)
                        }
                    };
                    checksum = fold_checksum(checksum, index, &cmd.0, &result);
                    result
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id()), m.clone()));
                    CommandResult::Applied(Vec::new())
                }
            };
            last_applied = Some(entry.log_id());
            if let Some(r) = responder {
                responses.push((r, result));
            }
        }
        let Some(last_applied) = last_applied else { return Ok(()) };
        let n_writes = overlay.batch.points.len() + overlay.batch.ranges.len();
        let data_cf = self.db.cf_handle(CF_DATA).expect("data cf");
        let meta_cf = self.db.cf_handle(CF_META).expect("meta cf");
        let mut batch = WriteBatch::default();
        // Range deletions first: every staged point write came after the ranges it survived.
        for (start, end) in &overlay.batch.ranges {
            batch.delete_range_cf(data_cf, start, end);
        }
        for (k, v) in overlay.batch.points {
            match v {
                Some(v) => batch.put_cf(data_cf, k, v),
                None => batch.delete_cf(data_cf, k),
            }
        }
        batch.put_cf(meta_cf, KEY_APPLIED, encode(&Some(last_applied))?);
        batch.put_cf(meta_cf, KEY_CHECKSUM, encode(&checksum)?);
        if let Some(m) = membership {
            batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode(&m)?);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo).map_err(storage_err)?;
        metrics::counter!("quorumdb_applied_writes_total").increment(n_writes as u64);
        for hook in overlay.batch_hooks {
            hook();
        }
        for (r, result) in responses {
            r.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshot_dir: self.snapshot_dir.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> std::io::Result<()> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut reader = SnapshotReader::open(&snapshot.path)?;
            if reader.header.meta.last_log_id != meta.last_log_id {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "snapshot file is at {:?}, expected {:?}",
                        reader.header.meta.last_log_id, meta.last_log_id
                    ),
                ));
            }
            let data_cf = db.cf_handle(CF_DATA).expect("data cf");
            let meta_cf = db.cf_handle(CF_META).expect("meta cf");
            let mut batch = WriteBatch::default();
            // Replace everything: clear the whole data range, then put the snapshot's records.
            if let Some(item) = db.iterator_cf(data_cf, IteratorMode::End).next() {
                let (last, _) = item.map_err(storage_err)?;
                batch.delete_range_cf(data_cf, [].as_slice(), &last[..]);
                batch.delete_cf(data_cf, &last[..]);
            }
            while let Some((k, v)) = reader.next_record()? {
                batch.put_cf(data_cf, k, v);
            }
            batch.put_cf(meta_cf, KEY_APPLIED, encode(&meta.last_log_id)?);
            batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode(&meta.last_membership)?);
            batch.put_cf(meta_cf, KEY_CHECKSUM, encode(&reader.header.checksum)?);
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo).map_err(storage_err)?;
            // Keep the installed image as our current snapshot, to serve to others.
            let name = snapshot_name(&meta);
            let dest = dir.join(&name);
            if snapshot.path != dest {
                if snapshot.path.parent() == Some(dir.as_path()) {
                    std::fs::rename(&snapshot.path, &dest)?;
                } else if std::fs::hard_link(&snapshot.path, &dest).is_err() {
                    std::fs::copy(&snapshot.path, &dest)?;
                }
                sync_dir(Some(&dir))?;
            }
            set_current_snapshot(&db, &dir, &name)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.app.state_replaced(&self.reader());
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::io::Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>> {
        let Some(path) = self.current_snapshot_path()? else { return Ok(None) };
        if !path.exists() {
            return Ok(None);
        }
        let header = read_header(&path)?;
        Ok(Some(Snapshot { meta: header.meta, snapshot: SnapshotFile { path } }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    /// Writes `key=value` for "key=value", then rejects commands ending in "!" after staging.
    struct TestApp;
    impl Application for TestApp {
        fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> Result<Vec<u8>, Vec<u8>> {
            let s = std::str::from_utf8(command).unwrap();
            let (k, v) = s.trim_end_matches('!').split_once('=').unwrap();
            let seen = txn.get(k.as_bytes()).unwrap();
            txn.put(k.as_bytes(), v.as_bytes());
            if s.ends_with('!') {
                return Err(b"rejected".to_vec());
            }
            Ok(seen.unwrap_or_default())
        }
    }

    fn entry(index: u64, cmd: &str) -> crate::types::Entry {
        openraft::Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(1, 1, index),
            payload: EntryPayload::Normal(Command(cmd.as_bytes().to_vec())),
        }
    }

    async fn apply_all(sm: &mut StateMachineStore, entries: Vec<crate::types::Entry>) {
        let items: Vec<std::io::Result<EntryResponder<TypeConfig>>> =
            entries.into_iter().map(|e| Ok((e, None))).collect();
        sm.apply(futures::stream::iter(items)).await.unwrap();
    }

    #[tokio::test]
    async fn rejected_command_changes_nothing_and_checksums_are_deterministic() {
        let mut sums = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let mut sm = StateMachineStore::open(dir.path(), Arc::new(TestApp)).unwrap();
            // One batch: a write, a rejected overwrite of it, a write that reads the batch's state.
            apply_all(&mut sm, vec![entry(1, "a=1"), entry(2, "a=2!"), entry(3, "b=3")]).await;
            let r = sm.reader();
            assert_eq!(r.get(b"a").unwrap().as_deref(), Some(&b"1"[..]), "the rejected write left no trace");
            assert_eq!(r.get(b"b").unwrap().as_deref(), Some(&b"3"[..]));
            let (applied, sum) = r.applied().unwrap();
            assert_eq!(applied.unwrap().index, 3, "the rejected entry still counts as applied");
            sums.push((sum, r.state_digest().unwrap()));
        }
        assert_eq!(sums[0], sums[1], "same commands, same checksum and digest");
        assert_ne!(sums[0].0, 0);
    }
}
