//! The state's RocksDB instances: opening the live one (named by the `STATE` file), read-only
//! frozen ones (checkpoints), the metadata kept beside the data, and retiring an instance a
//! snapshot install replaced.
//!
//! Column families: `data` (applications' keys) and `meta`: `applied` (last applied log id),
//! `membership`, `checksum` (running checksum of applied commands), each MessagePack with field
//! names, and `format` (this layout's version, one byte; absent in stores written before it
//! existed, which have the same layout).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options};

use crate::encoding::decode;
use crate::error::storage_err;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

pub(super) const CF_DATA: &str = "data";
pub(super) const CF_META: &str = "meta";
pub(super) const KEY_APPLIED: &[u8] = b"applied";
pub(super) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(super) const KEY_CHECKSUM: &[u8] = b"checksum";
pub(super) const KEY_FORMAT: &[u8] = b"format";
/// The layout version of the state store's `meta` column family.
pub(super) const STORE_FORMAT: u8 = 1;
/// The file naming the live state directory (absent: `state`).
pub(super) const STATE_POINTER: &str = "STATE";

/// A column family handle. Every instance is opened with both families, so a missing one
/// means the directory is not a state store: an error, never a panic.
pub(super) fn cf<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} has no column family {name:?}: not a state store", db.path().display()),
        )
    })
}

/// The live state instance, replaced as a whole when a snapshot is installed.
pub(super) struct StateDb {
    current: RwLock<Arc<DB>>,
}

impl StateDb {
    pub(super) fn new(db: DB) -> Arc<Self> {
        Arc::new(Self { current: RwLock::new(Arc::new(db)) })
    }

    pub(super) fn db(&self) -> Arc<DB> {
        self.current.read().clone()
    }

    /// Switches to `db`; the old instance closes once its last reader lets go.
    pub(super) fn replace(&self, db: DB) -> Arc<DB> {
        std::mem::replace(&mut *self.current.write(), Arc::new(db))
    }
}

pub(super) fn open_state_db(path: &Path) -> std::io::Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(2);
    let cfs = [CF_DATA, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(storage_err)?;
    match db.get_cf(cf(&db, CF_META)?, KEY_FORMAT).map_err(storage_err)?.as_deref() {
        None => db.put_cf(cf(&db, CF_META)?, KEY_FORMAT, [STORE_FORMAT]).map_err(storage_err)?,
        Some([v]) if *v <= STORE_FORMAT => {}
        Some(other) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state store format {other:?} is newer than this binary reads ({STORE_FORMAT})"),
            ));
        }
    }
    Ok(db)
}

pub(super) fn open_frozen(path: &Path) -> std::io::Result<DB> {
    let mut opts = Options::default();
    opts.set_keep_log_file_num(1);
    DB::open_cf_for_read_only(&opts, path, [CF_DATA, CF_META], false).map_err(storage_err)
}

/// The applied log id, membership and command checksum recorded in `db`.
pub(super) fn read_meta(db: &DB) -> std::io::Result<(SnapshotMeta, u64)> {
    let meta = cf(db, CF_META)?;
    let get = |k: &[u8]| db.get_cf(meta, k).map_err(storage_err);
    let last_log_id: Option<LogId> = get(KEY_APPLIED)?.map(|b| decode(&b)).transpose()?.flatten();
    let last_membership: StoredMembership = get(KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
    let checksum: u64 = get(KEY_CHECKSUM)?.map(|b| decode(&b)).transpose()?.unwrap_or(0);
    Ok((SnapshotMeta { last_log_id, last_membership }, checksum))
}

/// The live state directory named by `root/STATE` (`state` before any install).
pub(super) fn live_state_name(root: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(root.join(STATE_POINTER)) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("state".to_string()),
        Err(e) => Err(e),
    }
}

/// Closes a replaced state instance once no reader holds it, then deletes its directory.
pub(super) fn retire(old: Arc<DB>) {
    let dir = old.path().to_path_buf();
    let spawned = std::thread::Builder::new().name("retire-state".into()).spawn(move || {
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
    if let Err(e) = spawned {
        // The directory is not live any more: the next start removes it.
        tracing::warn!(error = %e, "cannot start the thread that removes the replaced state");
    }
}
