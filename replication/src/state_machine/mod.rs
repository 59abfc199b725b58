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
//! - **Nothing from the log stops the node by accident.** A command whose apply panics is
//!   rejected (logged, counted in `quorumdb_apply_panics_total`), as is one that does not
//!   decode; a commit hook that panics is logged and its structure rebuilt by its owner. The
//!   one deliberate stop: a `SetFormat` system command above what this binary reads (see
//!   [`quorumdb_state::format`]) — applying on would let this replica diverge.
//! - **Exactly once.** A `Once` system command applies its inner command only the first time
//!   its request id is seen, remembering the result in the replicated state; a retry answers
//!   that result and writes nothing ([`quorumdb_state::system`]).
//!
//! Layout: [`store`] (the RocksDB instances and their metadata), [`overlay`] (one batch's
//! staged writes), [`reader`] (reads, views, digests), [`build`] and [`install`] (snapshots).

mod build;
mod install;
mod overlay;
mod reader;
mod store;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::alias::SnapshotOf;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use quorumdb_state::format::{self, FormatError, SetFormat};
use quorumdb_state::system::{
    ONCE_EXPIRY_PREFIX, ONCE_PREFIX, ONCE_TTL_MS, Once, OnceRecord, PURGE_PER_COMMAND, SystemCommand,
};
use quorumdb_state::{Application, CommandResult, Rejection, SharedState, StateTxn};
use rocksdb::{WriteBatch, WriteOptions};

pub use build::SnapshotBuilder;
use overlay::Overlay;
pub use reader::{PinnedView, StateDigest, StateReader};
use store::{CF_DATA, CF_META, KEY_APPLIED, KEY_CHECKSUM, KEY_MEMBERSHIP, StateDb, cf, live_state_name, open_state_db};

use crate::encoding::{decode, encode};
use crate::error::storage_err;
use crate::snapshot::{self, CrcCache, Manifest, SnapshotDir};
use crate::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// Complete snapshots kept (the newest may be streaming while the next is built).
const KEEP_SNAPSHOTS: usize = 2;

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

/// The greatest key of a column family, if any.
fn last_key(db: &rocksdb::DB, cf: &rocksdb::ColumnFamily) -> std::io::Result<Option<Vec<u8>>> {
    match db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
        Some(item) => Ok(Some(item.map_err(storage_err)?.0.to_vec())),
        None => Ok(None),
    }
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// Runs a commit hook; a panic inside it is logged and counted, never propagated (the hook's
/// owner marks what it was updating for rebuild).
fn run_hook(hook: quorumdb_state::CommitHook) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(hook)) {
        metrics::counter!("quorumdb_commit_hook_panics_total").increment(1);
        tracing::error!(panic = %panic_message(&*panic), "a commit hook panicked");
    }
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

/// Removes a state directory that is not live. The thread retiring it after an install in
/// this process may be removing it at the same moment (a store reopened in-process right after
/// an install): the two removals race, so a vanished entry or a directory another remover is
/// still emptying is retried. A directory that will not go is left for the next start; it is
/// never read.
fn remove_stale(path: &Path) {
    for attempt in 0..50 {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => return,
            Err(e) if attempt == 49 => {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove a state directory that is not live");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
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
                remove_stale(&e.path());
            }
        }
        let state = StateDb::new(open_state_db(&dir.join(&live))?);
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        snapshot::clean_leftovers(&snapshot_dir)?;
        let reader: SharedState = Arc::new(StateReader { state: state.clone() });
        app.opened(&reader)?;
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
        match db.get_cf(cf(&db, CF_META)?, key).map_err(storage_err)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Applies an application command (tag and payload): its response, its rejection, or the
    /// rejection of a panic inside it. An I/O error reading the state stops apply.
    fn apply_app(&self, command: &[u8], txn: &mut dyn StateTxn, index: u64) -> std::io::Result<CommandResult> {
        match catch_unwind(AssertUnwindSafe(|| self.app.apply(command, txn))) {
            Ok(Ok(Ok(response))) => Ok(CommandResult::Applied(response)),
            Ok(Ok(Err(rejection))) => Ok(CommandResult::Rejected(rejection)),
            Ok(Err(e)) => {
                tracing::error!(index, error = %e, "the state could not be read while applying; apply stops");
                Err(e)
            }
            Err(panic) => {
                let what = panic_message(&*panic);
                metrics::counter!("quorumdb_apply_panics_total").increment(1);
                tracing::error!(index, panic = %what, "applying a command panicked; it is rejected");
                Ok(CommandResult::Rejected(Rejection::internal(&what).encode(format::CURRENT)))
            }
        }
    }
}

/// Moves the cluster's format version (never back). An error stops the node: its binary
/// cannot read what the cluster now writes.
fn apply_set_format(set: SetFormat, txn: &mut dyn StateTxn, index: u64) -> std::io::Result<CommandResult> {
    if set.version > format::CURRENT {
        tracing::error!(index, version = set.version, max = format::CURRENT, "the cluster moved to a newer format");
        return Err(FormatError::TooNew { version: set.version, max: format::CURRENT }.into());
    }
    let current = format::cluster_format(|k| txn.get(k))?;
    if set.version > current {
        txn.put(format::FORMAT_KEY, &[set.version]);
        tracing::info!(index, from = current, to = set.version, "cluster format version raised");
    }
    Ok(CommandResult::Applied(Vec::new()))
}

fn reject(code: &str, message: String) -> CommandResult {
    CommandResult::Rejected(Rejection::new(code, message).encode(format::LEGACY))
}

impl StateMachineStore {
    /// Applies one log command, keeping its writes if it applied and discarding them if it was
    /// rejected. An error stops apply (see the module docs); a malformed command is a
    /// deterministic rejection.
    fn apply_command(&self, cmd: &[u8], overlay: &mut Overlay<'_>, index: u64) -> std::io::Result<CommandResult> {
        let result = match cmd.split_first() {
            Some((&format::SYSTEM_TAG, payload)) => match SystemCommand::decode(payload) {
                Ok(SystemCommand::SetFormat(set)) => apply_set_format(set, overlay, index)?,
                Ok(SystemCommand::Once(once)) => return self.apply_once(once, overlay, index),
                Err(e @ FormatError::TooNew { .. }) => return Err(e.into()),
                Err(e) => reject(Rejection::INTERNAL_CODE, format!("undecodable system command: {e}")),
            },
            _ => self.apply_app(cmd, overlay, index)?,
        };
        match &result {
            CommandResult::Applied(_) => overlay.keep(),
            CommandResult::Rejected(_) => overlay.discard(),
        }
        Ok(result)
    }

    /// Applies a command at most once per request id (see [`quorumdb_state::system`]): a
    /// remembered id answers its remembered result and changes nothing; a new one applies the
    /// inner command and remembers its result, applied or rejected. Purges a few expired ids.
    fn apply_once(&self, once: Once, overlay: &mut Overlay<'_>, index: u64) -> std::io::Result<CommandResult> {
        let key = Once::record_key(&once.id);
        let remembered = match overlay.get(&key)? {
            Some(bytes) => Some(OnceRecord::decode(&bytes)?),
            None => None,
        };
        if let Some(rec) = remembered.as_ref().filter(|r| r.expires_ms > once.now_ms) {
            overlay.discard();
            if rec.fingerprint != once.fingerprint {
                return Ok(reject(
                    "22023",
                    format!("request id {:?} was already used for a different request", once.id),
                ));
            }
            metrics::counter!("quorumdb_duplicate_requests_total").increment(1);
            return Ok(rec.result.clone());
        }
        if once.command.first() == Some(&format::SYSTEM_TAG) {
            overlay.discard();
            return Ok(reject(Rejection::INTERNAL_CODE, "a request id cannot wrap a system command".into()));
        }
        let result = self.apply_app(&once.command, overlay, index)?;
        if matches!(result, CommandResult::Rejected(_)) {
            // The rejection is remembered; the command's own writes are not kept.
            overlay.discard();
        }
        purge_expired_ids(overlay, once.now_ms)?;
        let expires_ms = once.now_ms.saturating_add(ONCE_TTL_MS);
        // An expired record of the same id (unless just purged): its expiry entry goes too.
        if let Some(old) = &remembered {
            overlay.delete(&Once::expiry_key(old.expires_ms, &once.id));
        }
        let rec = OnceRecord { expires_ms, fingerprint: once.fingerprint, result: result.clone() };
        overlay.put(&key, &rec.encode()?);
        overlay.put(&Once::expiry_key(expires_ms, &once.id), &[]);
        overlay.keep();
        Ok(result)
    }
}

/// Removes up to [`PURGE_PER_COMMAND`] request ids whose records expired by `now_ms`.
fn purge_expired_ids(txn: &mut dyn StateTxn, now_ms: u64) -> std::io::Result<()> {
    let end = [ONCE_EXPIRY_PREFIX, &now_ms.saturating_add(1).to_be_bytes()].concat();
    let mut expired = Vec::new();
    txn.scan(ONCE_EXPIRY_PREFIX, &end, &mut |k, _| {
        expired.push(k.to_vec());
        expired.len() < PURGE_PER_COMMAND
    })?;
    for k in expired {
        if let Some(id) = k.get(ONCE_EXPIRY_PREFIX.len() + 8..) {
            txn.delete(&[ONCE_PREFIX, id].concat());
        }
        txn.delete(&k);
    }
    Ok(())
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
        let mut overlay = Overlay::new(&db);
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
                    overlay.begin(index);
                    let result = self.apply_command(&cmd.0, &mut overlay, index)?;
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
        let data_cf = cf(&db, CF_DATA)?;
        let meta_cf = cf(&db, CF_META)?;
        let mut batch = WriteBatch::default();
        // Range deletions first: every staged point write came after the ranges it survived.
        for (start, end) in &overlay.batch.ranges {
            if !end.is_empty() {
                batch.delete_range_cf(data_cf, start, end);
            } else if let Some(last) = last_key(&db, data_cf)?.filter(|k| k.as_slice() >= start.as_slice()) {
                // No end: just past the greatest key there is (`last` + 0x00 is the next string).
                batch.delete_range_cf(data_cf, start.as_slice(), [last.as_slice(), &[0u8]].concat().as_slice());
            }
        }
        for (k, v) in std::mem::take(&mut overlay.batch.points) {
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
        for hook in std::mem::take(&mut overlay.batch_hooks) {
            run_hook(hook);
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
        let reader: SharedState = Arc::new(self.reader());
        self.app.state_replaced(&reader, app_files.exists().then_some(app_files.as_path()));
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
    use openraft::storage::RaftSnapshotBuilder;

    use super::*;
    use quorumdb_state::Command;

    /// Writes `key=value` for "key=value", then rejects commands ending in "!" after staging.
    struct TestApp;
    impl Application for TestApp {
        fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> std::io::Result<quorumdb_state::Applied> {
            let s = std::str::from_utf8(command).unwrap();
            if s == "panic" {
                panic!("injected apply panic");
            }
            if let Some(k) = s.strip_prefix("hook-panics=") {
                txn.put(k.as_bytes(), b"kept");
                txn.on_commit(Box::new(|| panic!("injected hook panic")));
                return Ok(Ok(Vec::new()));
            }
            let (k, v) = s.trim_end_matches('!').split_once('=').unwrap();
            let seen = txn.get(k.as_bytes()).unwrap();
            txn.put(k.as_bytes(), v.as_bytes());
            if s.ends_with('!') {
                return Ok(Err(b"rejected".to_vec()));
            }
            Ok(Ok(seen.unwrap_or_default()))
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

    fn system(index: u64, cmd: quorumdb_state::Command) -> crate::types::Entry {
        openraft::Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(1, 1, index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    #[tokio::test]
    async fn a_panicking_apply_or_hook_is_contained_and_the_node_applies_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path(), Arc::new(TestApp)).unwrap();
        apply_all(&mut sm, vec![entry(1, "a=1"), entry(2, "panic"), entry(3, "hook-panics=h"), entry(4, "b=2")]).await;
        let r = sm.reader();
        assert_eq!(r.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(r.get(b"h").unwrap().as_deref(), Some(&b"kept"[..]), "a hook's panic does not undo its command");
        assert_eq!(r.get(b"b").unwrap().as_deref(), Some(&b"2"[..]), "entries after the panics applied");
        assert_eq!(r.applied().unwrap().0.unwrap().index, 4);
        let result = sm.apply_app(b"panic", &mut Overlay::new(&sm.state.db()), 5).unwrap();
        let CommandResult::Rejected(bytes) = result else { panic!("a panic is a rejection: {result:?}") };
        let rejection = Rejection::decode(&bytes);
        assert_eq!(rejection.code, "XX000");
        assert!(rejection.message.contains("injected apply panic"), "{rejection:?}");
    }

    #[tokio::test]
    async fn set_format_raises_the_cluster_format_once_and_a_newer_one_stops_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path(), Arc::new(TestApp)).unwrap();
        assert_eq!(quorumdb_state::AppliedState::format(&sm.reader()).unwrap(), format::LEGACY);
        let set = |v| SetFormat { version: v }.command().unwrap();
        apply_all(&mut sm, vec![system(1, set(1)), system(2, set(0))]).await;
        assert_eq!(quorumdb_state::AppliedState::format(&sm.reader()).unwrap(), 1, "never moves back");
        // A version this binary does not read: apply fails (the node stops), nothing is written.
        let too_new = quorumdb_state::tagged(format::SYSTEM_TAG, &[format::MARKER, format::CURRENT + 1, 0x80]);
        let items: Vec<std::io::Result<EntryResponder<TypeConfig>>> = vec![Ok((system(3, too_new), None))];
        assert!(sm.apply(futures::stream::iter(items)).await.is_err());
        assert_eq!(sm.reader().applied().unwrap().0.unwrap().index, 2);
    }
}
