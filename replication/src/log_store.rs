//! The Raft log, durable on its own RocksDB instance.
//!
//! Owns: log entries (column family `logs`, keyed by big-endian index so RocksDB order is log
//! order), the vote, the committed log id and the last purged log id (column family `meta`).
//! Never touches the state machine's instance.
//!
//! # To ensure correctness
//! - **Durable before acknowledged.** [`RaftLogStorage::append`] writes the entries to RocksDB
//!   without waiting for fsync and hands its [`IOFlushed`] callback to the *flusher* thread. The
//!   flusher collects every callback queued while the previous fsync ran, calls
//!   `flush_wal(sync = true)` once, and only then completes them all: many appends share one fsync
//!   (group commit), and openraft never counts an entry as persisted before it is on disk.
//!   Entries are readable as soon as `append` returns, which openraft allows.
//! - **Votes are synced.** `save_vote` writes with `sync = true` before returning: a node must
//!   never forget whom it voted for.
//! - **No holes.** Entries arrive consecutive; `truncate_after` deletes a suffix (synced, so a
//!   conflicting suffix cannot come back after a crash) and `purge` deletes a prefix after first
//!   recording the last purged id, so `get_log_state` is right at every point of a crash.
//! - Vote and log writes are serialized by openraft (`&mut self`), so no locking is needed here.
//! - **Disk faults can be injected** ([`Faults`]: a delay before each fsync, or fsyncs that
//!   fail): a failed fsync fails the appends it covered and every synced write, so openraft
//!   stops the node instead of acknowledging what is not on disk.
//!
//! # Format
//! Keys of `logs` are the index as 8 bytes big-endian; values are openraft's `Entry` as
//! MessagePack with field names (its `Normal` payload is our [`Command`](crate::Command)). `meta`
//! holds `vote`, `committed` and `last_purged` the same way, and `format`: the layout version,
//! one byte (absent in logs written before it existed, which have the same layout).
//! `docs/formats.md` gives every field.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::encoding::{decode, encode};
use crate::error::storage_err;
use crate::network::Faults;
use crate::types::{Entry, LogId, TypeConfig, Vote};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_FORMAT: &[u8] = b"format";
/// The layout version of the log store.
const LOG_FORMAT: u8 = 1;

/// A column family handle; every instance is opened with both families, so a missing one is
/// an error (not a log store), never a panic.
fn cf<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no column family {name:?}: not a log store"))
    })
}

/// The durable Raft log. Cheap to clone readers from; one writer (openraft's log task).
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
    faults: Faults,
}

/// A read handle on the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

impl LogStore {
    /// Opens (or creates) the log at `path` and starts its flusher thread.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_with_faults(path, Faults::default())
    }

    /// [`Self::open`], with injected disk faults (slow or failing fsyncs) read from `faults`.
    pub fn open_with_faults(path: &Path, faults: Faults) -> std::io::Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The log is written once, read back mostly from the memtable, and deleted by prefix.
        opts.set_max_total_wal_size(256 << 20);
        let cfs = [CF_LOGS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs).map_err(storage_err)?);
        match db.get_cf(cf(&db, CF_META)?, KEY_FORMAT).map_err(storage_err)?.as_deref() {
            None => db.put_cf(cf(&db, CF_META)?, KEY_FORMAT, [LOG_FORMAT]).map_err(storage_err)?,
            Some([v]) if *v <= LOG_FORMAT => {}
            Some(other) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("log store format {other:?} is newer than this binary reads ({LOG_FORMAT})"),
                ));
            }
        }
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let flush_db = db.clone();
        let flush_faults = faults.clone();
        std::thread::Builder::new().name("raft-log-flush".into()).spawn(move || flusher(flush_db, rx, flush_faults))?;
        Ok(Self { db, flusher: tx, faults })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> std::io::Result<Option<T>> {
        read_meta(&self.db, key)
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> std::io::Result<()> {
        if sync {
            injected_disk_fault(&self.faults)?;
        }
        let cf = cf(&self.db, CF_META)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.put_cf_opt(cf, key, encode(value)?, &wo).map_err(storage_err)
    }
}

/// Applies the injected disk faults to one fsync: waits out the delay, fails if the disk does.
fn injected_disk_fault(faults: &Faults) -> std::io::Result<()> {
    let (delay, fail) = faults.disk();
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    if fail {
        metrics::counter!("quorumdb_log_injected_disk_failures_total").increment(1);
        return Err(std::io::Error::other("injected disk failure"));
    }
    Ok(())
}

/// Completes `append` callbacks in groups, one WAL fsync per group.
fn flusher(db: Arc<DB>, rx: mpsc::Receiver<IOFlushed<TypeConfig>>, faults: Faults) {
    let fsyncs = metrics::counter!("quorumdb_log_fsyncs_total");
    let grouped = metrics::histogram!("quorumdb_log_appends_per_fsync");
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let result = match injected_disk_fault(&faults) {
            Ok(()) => db.flush_wal(true).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        fsyncs.increment(1);
        grouped.record(group.len() as f64);
        for cb in group {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(format!("WAL fsync failed: {e}"))),
            };
            cb.io_completed(r);
        }
    }
    // The sender was dropped: the store is closed. Dropping `db` here releases the instance.
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> std::io::Result<Option<T>> {
    match db.get_cf(cf(db, CF_META)?, key).map_err(storage_err)? {
        Some(b) => Ok(Some(decode(&b)?)),
        None => Ok(None),
    }
}

fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn key_index(k: &[u8]) -> std::io::Result<u64> {
    let raw: [u8; 8] = k.try_into().map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a log key of {} bytes, not 8", k.len()))
    })?;
    Ok(u64::from_be_bytes(raw))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        read_entries(&self.db, range)
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        read_meta(&self.db, KEY_VOTE)
    }
}

fn read_entries<RB: RangeBounds<u64>>(db: &DB, range: RB) -> std::io::Result<Vec<Entry>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, CF_LOGS)?, IteratorMode::From(&index_key(start), Direction::Forward)) {
        let (k, v) = item.map_err(storage_err)?;
        if !range.contains(&key_index(&k)?) {
            break;
        }
        out.push(decode(&v)?);
    }
    Ok(out)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_entry = match self.db.iterator_cf(cf(&self.db, CF_LOGS)?, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(storage_err)?;
                Some(decode::<Entry>(&v)?.log_id)
            }
            None => None,
        };
        // After a crash between recording a purge and deleting its entries, leftovers below
        // the purge point must not make the log look shorter than it is.
        let last = match (last_entry, last_purged) {
            (Some(e), Some(p)) if p.index > e.index => Some(p),
            (Some(e), _) => Some(e),
            (None, p) => p,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { db: self.db.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        // Not synced: losing it only means re-discovering the commit index from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> std::io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let cf = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode(&entry)?);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo).map_err(storage_err)?;
        // Durability is the flusher's job; the callback fires after the group's fsync.
        self.flusher.send(callback).map_err(|_| std::io::Error::other("log flusher thread stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> std::io::Result<()> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let cf = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(from), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        injected_disk_fault(&self.faults)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(storage_err)
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        // Record the purge point first: a crash between the two writes leaves extra entries
        // below it, which readers never ask for, rather than a hole above it.
        self.put_meta(KEY_LAST_PURGED, &log_id, false)?;
        let cf = cf(&self.db, CF_LOGS)?;
        self.db.delete_range_cf(cf, index_key(0), index_key(log_id.index + 1)).map_err(storage_err)
    }
}
