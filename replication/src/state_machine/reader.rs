//! Read access to the applied state, concurrent with apply: [`StateReader`] (the applications'
//! [`AppliedState`]), point-in-time views, frozen checkpoints for backups, and the digest that
//! compares replicas.

use std::path::Path;
use std::sync::Arc;

use quorumdb_state::AppliedState;
use rocksdb::{DB, Direction, IteratorMode, ReadOptions};

use super::Fnv64;
use super::store::{CF_DATA, CF_META, KEY_APPLIED, KEY_CHECKSUM, StateDb, cf, open_frozen};
use crate::encoding::decode;
use crate::error::storage_err;
use crate::types::LogId;

/// What [`StateReader::digest`] reports: where the state is and a digest of all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    pub applied: Option<LogId>,
    pub checksum: u64,
    pub digest: u64,
    /// How many data keys the digest covers.
    pub keys: u64,
}

/// Read access to the applied state, concurrent with apply. Cheap to clone; follows the live
/// instance across snapshot installs.
#[derive(Clone)]
pub struct StateReader {
    pub(super) state: Arc<StateDb>,
}

/// Iterates `start..end` (empty `end`: no end) of column family `data`, through `iter`.
fn scan_with<'a, I>(iter: I, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a,
{
    for item in iter {
        let (k, v) = item.map_err(storage_err)?;
        if !f(&k, &v) {
            break;
        }
    }
    Ok(())
}

fn bounded(end: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    if !end.is_empty() {
        ro.set_iterate_upper_bound(end.to_vec());
    }
    ro
}

impl StateReader {
    /// The instance reads go to now (another one after a snapshot install).
    fn db(&self) -> Arc<DB> {
        self.state.db()
    }

    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let db = self.db();
        db.get_cf(cf(&db, CF_DATA)?, key).map_err(storage_err)
    }

    /// Calls `f` for each pair in `start..end` (empty `end`: no end) in key order, all read at
    /// one point in time (a RocksDB iterator pins its sequence number); stops when `f` returns
    /// `false`. Blocking: call it from a blocking thread for long scans.
    pub fn scan_range(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        let db = self.db();
        scan_with(db.iterator_cf_opt(cf(&db, CF_DATA)?, bounded(end), IteratorMode::From(start, Direction::Forward)), f)
    }

    /// Runs `f` with a view of the state at one point in time (a RocksDB snapshot), so several
    /// reads agree with each other even while commands are applied.
    pub fn view<R>(&self, f: impl FnOnce(&PinnedView<'_>) -> R) -> std::io::Result<R> {
        let db = self.db();
        let data = cf(&db, CF_DATA)?;
        Ok(f(&PinnedView { snap: db.snapshot(), cf: data }))
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
        applied_in(&db, &db.snapshot())
    }

    /// A digest of every data key and value: equal on replicas with equal state.
    pub fn state_digest(&self) -> std::io::Result<u64> {
        Ok(self.digest()?.digest)
    }

    /// The applied log id, the running checksum and the digest of every data key and value, all
    /// read from one point in time, so two replicas that report the same applied index must
    /// report the same checksum and digest. Blocking: it reads the whole state.
    pub fn digest(&self) -> std::io::Result<StateDigest> {
        let db = self.db();
        let snap = db.snapshot();
        let (applied, checksum) = applied_in(&db, &snap)?;
        let mut h = Fnv64::new();
        let mut keys = 0u64;
        scan_with(snap.iterator_cf(cf(&db, CF_DATA)?, IteratorMode::Start), &mut |k, v| {
            h.write(&(k.len() as u32).to_le_bytes());
            h.write(k);
            h.write(&(v.len() as u32).to_le_bytes());
            h.write(v);
            keys += 1;
            true
        })?;
        Ok(StateDigest { applied, checksum, digest: h.0, keys })
    }
}

/// The last applied log id and the running checksum as `snap` holds them.
fn applied_in(db: &DB, snap: &rocksdb::SnapshotWithThreadMode<'_, DB>) -> std::io::Result<(Option<LogId>, u64)> {
    let meta = cf(db, CF_META)?;
    let applied = match snap.get_cf(meta, KEY_APPLIED).map_err(storage_err)? {
        Some(b) => decode(&b)?,
        None => None,
    };
    let checksum = match snap.get_cf(meta, KEY_CHECKSUM).map_err(storage_err)? {
        Some(b) => decode(&b)?,
        None => 0,
    };
    Ok((applied, checksum))
}

impl AppliedState for StateReader {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        StateReader::get(self, key)
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        self.scan_range(start, end, f)
    }
}

/// The applied state at one point in time (see [`StateReader::view`]).
pub struct PinnedView<'a> {
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
    cf: &'a rocksdb::ColumnFamily,
}

impl PinnedView<'_> {
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.snap.get_cf(self.cf, key).map_err(storage_err)
    }

    /// Calls `f` for each pair in `start..end` (empty `end`: no end) in key order; stops when
    /// `f` returns `false`.
    pub fn scan_range(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        scan_with(self.snap.iterator_cf_opt(self.cf, bounded(end), IteratorMode::From(start, Direction::Forward)), f)
    }
}
