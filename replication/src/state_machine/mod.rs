//! The replicated state machine, on its own RocksDB instance.
//!
//! Owns: application data (column family `data`), and in column family `meta` the last applied
//! log id, the last membership and the running checksum of applied commands; the choice of the
//! live state directory (`STATE` names it) and the snapshots built from it or received.
//! Applications never see RocksDB: they get a [`StateTxn`] at apply time and a [`StateReader`]
//! for queries.
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
//! - **Snapshots are consistent**: a RocksDB checkpoint is one point in time, and the applied
//!   log id, membership and checksum in the manifest are read *from the checkpoint*. Building
//!   one (flush + hard links) runs on a blocking thread while apply and reads continue.
//! - **Atomic install.** A received snapshot's files become a new state directory beside the
//!   live one; rewriting the small `STATE` file (synced, renamed) is the one step that switches
//!   to it. A crash before it leaves the old state, after it the new; the unused directory is
//!   removed at the next start. Readers move to the new instance at their next call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::alias::SnapshotOf;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::encoding::{decode, encode};
use crate::error::storage_err;
use crate::snapshot::{self, CrcCache, Manifest, SnapshotDir, sync_dir, write_synced};
use crate::types::{CommandResult, LogId, SnapshotMeta, StoredMembership, TypeConfig};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_CHECKSUM: &[u8] = b"checksum";
/// The file naming the live state directory (absent: `state`).
const STATE_POINTER: &str = "STATE";
/// Complete snapshots kept (the newest may be streaming while the next is built).
const KEEP_SNAPSHOTS: usize = 2;

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

    /// A snapshot is being built: put the files kept beside the state that belong in it (index
    /// dumps) into `dest`, preferably as hard links. Called *before* the state is captured, so
    /// what is given here is at or behind the snapshot's state; the application must be able
    /// to bring such files up to any later state (as it does after a restart).
    fn snapshot_files(&self, _dest: &Path) -> std::io::Result<()> {
        Ok(())
    }

    /// The whole state was replaced (a snapshot was installed): anything kept beside it in
    /// memory must be rebuilt from the new state. `files` holds what [`Self::snapshot_files`]
    /// gave on the node that built the snapshot, if anything (the application takes copies).
    fn state_replaced(&self, _state: &StateReader, _files: Option<&Path>) {}
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

/// The live state instance, replaced as a whole when a snapshot is installed.
struct StateDb {
    current: RwLock<Arc<DB>>,
}

impl StateDb {
    fn new(db: DB) -> Arc<Self> {
        Arc::new(Self { current: RwLock::new(Arc::new(db)) })
    }

    fn db(&self) -> Arc<DB> {
        self.current.read().expect("state lock").clone()
    }

    /// Switches to `db`; the old instance closes once its last reader lets go.
    fn replace(&self, db: DB) -> Arc<DB> {
        std::mem::replace(&mut *self.current.write().expect("state lock"), Arc::new(db))
    }
}

fn open_state_db(path: &Path) -> std::io::Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(2);
    let cfs = [CF_DATA, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    DB::open_cf_descriptors(&opts, path, cfs).map_err(storage_err)
}

fn open_frozen(path: &Path) -> std::io::Result<DB> {
    let mut opts = Options::default();
    opts.set_keep_log_file_num(1);
    DB::open_cf_for_read_only(&opts, path, [CF_DATA, CF_META], false).map_err(storage_err)
}

/// The applied log id, membership and command checksum recorded in `db`.
fn read_meta(db: &DB) -> std::io::Result<(SnapshotMeta, u64)> {
    let cf = db.cf_handle(CF_META).expect("meta cf");
    let get = |k: &[u8]| db.get_cf(cf, k).map_err(storage_err);
    let last_log_id: Option<LogId> = get(KEY_APPLIED)?.map(|b| decode(&b)).transpose()?.flatten();
    let last_membership: StoredMembership = get(KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
    let checksum: u64 = get(KEY_CHECKSUM)?.map(|b| decode(&b)).transpose()?.unwrap_or(0);
    Ok((SnapshotMeta { last_log_id, last_membership }, checksum))
}

/// Read access to the applied state, concurrent with apply. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    state: Arc<StateDb>,
}

impl StateReader {
    /// The instance reads go to now (another one after a snapshot install).
    fn db(&self) -> Arc<DB> {
        self.state.db()
    }

    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let db = self.db();
        let cf = db.cf_handle(CF_DATA).expect("data cf");
        db.get_cf(cf, key).map_err(storage_err)
    }

    /// Up to `limit` pairs whose key starts with `prefix`, from `start` (inclusive) on.
    pub fn scan_prefix(&self, prefix: &[u8], start: &[u8], limit: usize) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let db = self.db();
        let cf = db.cf_handle(CF_DATA).expect("data cf");
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::new();
        for item in db.iterator_cf(cf, IteratorMode::From(from, Direction::Forward)) {
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
        let db = self.db();
        let cf = db.cf_handle(CF_DATA).expect("data cf");
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        for item in db.iterator_cf_opt(cf, ro, IteratorMode::From(start, Direction::Forward)) {
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
        let db = self.db();
        let cf = db.cf_handle(CF_DATA).expect("data cf");
        f(&StateView { snap: db.snapshot(), cf })
    }

    /// A frozen image of the state as of now: a RocksDB checkpoint written to `dir` (which must
    /// not exist; SST files are hard links, so it is cheap) and opened read-only. Every read of
    /// the returned reader sees that one point in time, however long it takes (backups).
    /// The caller removes `dir` once the reader is dropped.
    pub fn checkpoint(&self, dir: &Path) -> std::io::Result<StateReader> {
        let db = self.db();
        rocksdb::checkpoint::Checkpoint::new(&db).and_then(|c| c.create_checkpoint(dir)).map_err(storage_err)?;
        Ok(StateReader { state: StateDb::new(open_frozen(dir)?) })
    }

    /// The last applied log id and the running checksum of applied commands, read together.
    pub fn applied(&self) -> std::io::Result<(Option<LogId>, u64)> {
        let db = self.db();
        let snap = db.snapshot();
        let cf = db.cf_handle(CF_META).expect("meta cf");
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
        let db = self.db();
        let cf = db.cf_handle(CF_DATA).expect("data cf");
        let mut h = Fnv64::new();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
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

/// The openraft state machine: applies entries through the [`Application`]. Cheap to clone
/// (handles), for work moved to blocking threads.
#[derive(Clone)]
pub struct StateMachineStore {
    state: Arc<StateDb>,
    app: Arc<dyn Application>,
    /// The data directory: the live state directory, `STATE`, and `snapshots/`.
    root: PathBuf,
    snapshot_dir: PathBuf,
    crcs: Arc<CrcCache>,
}

/// The live state directory named by `root/STATE` (`state` before any install).
fn live_state_name(root: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(root.join(STATE_POINTER)) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("state".to_string()),
        Err(e) => Err(e),
    }
}

impl StateMachineStore {
    /// Opens (or creates) the state in `dir` (the directory `dir/STATE` names, `dir/state` at
    /// first), with snapshots in `dir/snapshots`, and removes what an interrupted snapshot
    /// build or install left behind.
    pub fn open(dir: &Path, app: Arc<dyn Application>) -> std::io::Result<Self> {
        let live = live_state_name(dir)?;
        // State directories that are not live: an install that crashed before switching, or
        // the previous state after one that switched.
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if (name == "state" || name.starts_with("state-")) && name != live && e.file_type()?.is_dir() {
                tracing::info!(dir = %e.path().display(), "removing a state directory that is not live");
                std::fs::remove_dir_all(e.path())?;
            }
        }
        let state = StateDb::new(open_state_db(&dir.join(&live))?);
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        snapshot::clean_leftovers(&snapshot_dir)?;
        app.opened(&StateReader { state: state.clone() })?;
        Ok(Self { state, app, root: dir.to_path_buf(), snapshot_dir, crcs: Default::default() })
    }

    pub fn reader(&self) -> StateReader {
        StateReader { state: self.state.clone() }
    }

    /// Where snapshots are built and incoming transfers are written before install.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> std::io::Result<Option<T>> {
        let db = self.state.db();
        let cf = db.cf_handle(CF_META).expect("meta cf");
        match db.get_cf(cf, key).map_err(storage_err)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }
}

/// Builds snapshots from a RocksDB checkpoint, off the apply path.
#[derive(Clone)]
pub struct SnapshotBuilder {
    state: Arc<StateDb>,
    app: Arc<dyn Application>,
    snapshot_dir: PathBuf,
    crcs: Arc<CrcCache>,
}

impl SnapshotBuilder {
    /// Application files first, then the checkpoint (see [`Application::snapshot_files`]);
    /// the meta is read from the checkpoint itself, so it matches the data exactly.
    fn build(&self) -> std::io::Result<(SnapshotMeta, PathBuf, u64)> {
        let tmp = self.snapshot_dir.join(format!("build-{}.tmp", snapshot::now_nanos()));
        std::fs::create_dir_all(&tmp)?;
        let result = (|| {
            self.app.snapshot_files(&tmp.join(snapshot::APP_DIR))?;
            let state_dir = tmp.join(snapshot::STATE_DIR);
            let db = self.state.db();
            rocksdb::checkpoint::Checkpoint::new(&db)
                .and_then(|c| c.create_checkpoint(&state_dir))
                .map_err(storage_err)?;
            drop(db);
            let (meta, checksum) = read_meta(&open_frozen(&state_dir)?)?;
            let files = self.crcs.entries(&tmp)?;
            for f in &files {
                // Checkpoint copies (CURRENT, MANIFEST, OPTIONS, WAL) are not synced by RocksDB.
                if !f.path.ends_with(".sst") {
                    std::fs::File::open(tmp.join(&f.path))?.sync_all()?;
                }
            }
            let manifest = Manifest {
                format: snapshot::FORMAT,
                meta: meta.clone(),
                checksum,
                created_ms: crate::network::now_ms(),
                files,
            };
            manifest.write(&tmp)?;
            let dest = self.snapshot_dir.join(snapshot::dir_name(&meta));
            std::fs::rename(&tmp, &dest)?;
            sync_dir(Some(&self.snapshot_dir))?;
            snapshot::prune(&self.snapshot_dir, KEEP_SNAPSHOTS)?;
            Ok((meta, dest, manifest.total_bytes()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> std::io::Result<SnapshotOf<TypeConfig, SnapshotDir>> {
        let me = self.clone();
        let started = std::time::Instant::now();
        let (meta, path, bytes) =
            tokio::task::spawn_blocking(move || me.build()).await.map_err(std::io::Error::other)??;
        let secs = started.elapsed().as_secs_f64();
        metrics::histogram!("quorumdb_snapshot_build_seconds").record(secs);
        metrics::gauge!("quorumdb_snapshot_bytes").set(bytes as f64);
        tracing::info!(%meta, bytes, elapsed_ms = (secs * 1000.0) as u64, path = %path.display(), "built snapshot");
        Ok(Snapshot { meta, snapshot: SnapshotDir { path } })
    }
}

impl StateMachineStore {
    /// Makes the snapshot in `src` the live state (see the module docs): its state files go
    /// into a new state directory, `STATE` is switched to it, the new instance replaces the
    /// old one. Returns the path the snapshot is kept at afterwards (to serve to others).
    fn install_blocking(&self, meta: &SnapshotMeta, src: &Path) -> std::io::Result<(PathBuf, u64)> {
        let manifest = Manifest::read(src)?;
        if manifest.meta.last_log_id != meta.last_log_id {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("snapshot is at {:?}, expected {:?}", manifest.meta.last_log_id, meta.last_log_id),
            ));
        }
        // Sizes only: every file's CRC was checked as it was received or built.
        for f in &manifest.files {
            let size = std::fs::metadata(src.join(&f.path))?.len();
            if size != f.size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("snapshot file {} has {size} bytes, expected {}", f.path, f.size),
                ));
            }
        }
        let name = format!("state-{:020}-{}", manifest.index(), snapshot::now_nanos());
        let new_dir = self.root.join(&name);
        let prefix = format!("{}/", snapshot::STATE_DIR);
        for f in &manifest.files {
            if let Some(rel) = f.path.strip_prefix(&prefix) {
                snapshot::link_or_copy(&src.join(&f.path), &new_dir.join(rel))?;
            }
        }
        std::fs::create_dir_all(&new_dir)?;
        sync_dir(Some(&new_dir))?;
        // The switch. Before it the old state is live, after it the new one.
        write_synced(&self.root.join(STATE_POINTER), name.as_bytes())?;
        let db = open_state_db(&new_dir)?;
        let (got, _) = read_meta(&db)?;
        if got.last_log_id != meta.last_log_id {
            return Err(std::io::Error::other(format!(
                "installed state is at {:?}, expected {:?}",
                got.last_log_id, meta.last_log_id
            )));
        }
        let old = self.state.replace(db);
        retire(old);
        // Keep the snapshot, to serve to others and to restart from.
        let keep = self.snapshot_dir.join(snapshot::dir_name(meta));
        std::fs::rename(src, &keep)?;
        sync_dir(Some(&self.snapshot_dir))?;
        snapshot::prune(&self.snapshot_dir, KEEP_SNAPSHOTS)?;
        Ok((keep, manifest.total_bytes()))
    }
}

/// Closes a replaced state instance once no reader holds it, then deletes its directory.
fn retire(old: Arc<DB>) {
    let dir = old.path().to_path_buf();
    std::thread::spawn(move || {
        let mut old = old;
        for _ in 0..600 {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the replaced state");
                    }
                    return;
                }
                Err(still_shared) => old = still_shared,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // A reader held on for a minute: the next start removes the directory.
        tracing::warn!(dir = %dir.display(), "replaced state still in use; it is removed at the next start");
    });
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotDir;
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
        let db = self.state.db();
        let mut overlay = Overlay {
            db: &db,
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
        let data_cf = db.cf_handle(CF_DATA).expect("data cf");
        let meta_cf = db.cf_handle(CF_META).expect("meta cf");
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
        db.write_opt(batch, &wo).map_err(storage_err)?;
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
        SnapshotBuilder {
            state: self.state.clone(),
            app: self.app.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            crcs: self.crcs.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotDir) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        let me = self.clone();
        let m = meta.clone();
        let (kept, bytes) = tokio::task::spawn_blocking(move || me.install_blocking(&m, &snapshot.path))
            .await
            .map_err(std::io::Error::other)??;
        let app_files = kept.join(snapshot::APP_DIR);
        self.app.state_replaced(&self.reader(), app_files.exists().then_some(app_files.as_path()));
        metrics::histogram!("quorumdb_snapshot_install_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(%meta, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::io::Result<Option<SnapshotOf<TypeConfig, SnapshotDir>>> {
        let Some(path) = snapshot::complete(&self.snapshot_dir)?.pop() else { return Ok(None) };
        let manifest = Manifest::read(&path)?;
        Ok(Some(Snapshot { meta: manifest.meta, snapshot: SnapshotDir { path } }))
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

    #[tokio::test]
    async fn snapshot_install_switches_state_atomically_and_survives_restarts() {
        let a_dir = tempfile::tempdir().unwrap();
        let mut a = StateMachineStore::open(a_dir.path(), Arc::new(TestApp)).unwrap();
        apply_all(&mut a, (1..=50).map(|i| entry(i, &format!("k{i}=v{i}"))).collect()).await;
        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.unwrap().index, 50);
        let manifest = Manifest::read(&snap.snapshot.path).unwrap();
        assert!(manifest.files.iter().any(|f| f.path.ends_with(".sst")), "a checkpoint: {manifest:?}");
        crate::snapshot::verify(&snap.snapshot.path, &manifest).unwrap();
        let want = (a.reader().applied().unwrap(), a.reader().state_digest().unwrap());

        let b_dir = tempfile::tempdir().unwrap();
        {
            let mut b = StateMachineStore::open(b_dir.path(), Arc::new(TestApp)).unwrap();
            apply_all(&mut b, vec![entry(1, "old=1")]).await;
            // Receive it as the transport would: a copy in b's snapshot directory.
            let incoming = b.snapshot_dir().join("incoming-00000000000000000050");
            for f in &manifest.files {
                let to = incoming.join(&f.path);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(snap.snapshot.path.join(&f.path), to).unwrap();
            }
            manifest.write(&incoming).unwrap();
            let reader = b.reader();
            b.install_snapshot(&snap.meta, SnapshotDir { path: incoming.clone() }).await.unwrap();
            // Readers taken before the install see the new state too.
            assert_eq!((reader.applied().unwrap(), reader.state_digest().unwrap()), want);
            assert_eq!(reader.get(b"old").unwrap(), None);
            let kept = b.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(kept.meta.last_log_id, snap.meta.last_log_id);
            assert!(!incoming.exists(), "the received snapshot is kept under its final name");
            // Applying on after the install works on the new instance.
            apply_all(&mut b, vec![entry(51, "k51=v51")]).await;
        }
        // A crash mid-install leaves a state directory that STATE does not name: it is removed,
        // and the state STATE names is the one that opens.
        let stray = b_dir.path().join("state-00000000000000000099-1");
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("CURRENT"), b"junk").unwrap();
        let b = StateMachineStore::open(b_dir.path(), Arc::new(TestApp)).unwrap();
        assert!(!stray.exists());
        assert_eq!(b.reader().applied().unwrap().0.unwrap().index, 51);
        assert_eq!(b.reader().get(b"k51").unwrap().as_deref(), Some(&b"v51"[..]));
        assert_eq!(b.reader().get(b"k7").unwrap().as_deref(), Some(&b"v7"[..]));
        let dirs: Vec<String> = std::fs::read_dir(b_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state"))
            .collect();
        assert_eq!(dirs.len(), 1, "only the live state directory is left: {dirs:?}");
    }
}
