//! Snapshot transfers: the receiving side's incoming directory, whose durable progress lets a
//! cut-off transfer resume instead of starting over, and the progress both sides report in
//! status, metrics and logs.
//!
//! A transfer is two calls. `OfferSnapshot` carries the manifest; the receiver keeps
//! `snapshots/incoming-<index>/` (manifest, files so far, `progress.json`) across failures and
//! restarts, so for the same snapshot it answers where its durable progress ends, and for
//! another one it starts a fresh directory. `InstallSnapshot` then streams the missing bytes,
//! file by file; each chunk is CRC-checked, each finished file is checked against the
//! manifest's CRC, and progress is fsynced every [`SYNC_EVERY`] bytes and at every file end.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Manifest, write_synced};
use crate::types::NodeId;
use quorumdb_state::now_ms;

/// Received bytes between two durable progress records.
const SYNC_EVERY: u64 = 8 << 20;
const PROGRESS: &str = "progress.json";

/// The sender's announcement of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotOffer {
    pub from: NodeId,
    pub manifest: Manifest,
}

/// Where the sender starts: file number and byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub file: u32,
    pub offset: u64,
}

/// Durable receive progress: every byte before `offset` of `file` is on disk, with CRC `crc`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Progress {
    file: u32,
    offset: u64,
    crc: u32,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// The directory a snapshot at `index` is received into.
pub fn incoming_dir(snapshot_dir: &Path, index: u64) -> PathBuf {
    snapshot_dir.join(format!("incoming-{index:020}"))
}

/// A snapshot being received.
pub struct Incoming {
    pub dir: PathBuf,
    pub manifest: Manifest,
    progress: Progress,
    /// The file being written and the CRC of everything in it so far.
    current: Option<(File, crc32fast::Hasher)>,
    unsynced: u64,
}

impl Incoming {
    /// Answers an offer: resumes the transfer of the same snapshot, or starts a new one (and
    /// drops any other incoming snapshot).
    pub fn offer(snapshot_dir: &Path, manifest: &Manifest) -> std::io::Result<Resume> {
        let dir = incoming_dir(snapshot_dir, manifest.index());
        for e in std::fs::read_dir(snapshot_dir)? {
            let p = e?.path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("incoming-") && p != dir {
                std::fs::remove_dir_all(&p)?;
            }
        }
        let same = Manifest::read(&dir).is_ok_and(|m| m.same_as(manifest));
        if !same {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            manifest.write(&dir)?;
            write_progress(&dir, &Progress::default())?;
        }
        let mut me = Self::open(snapshot_dir, manifest.index())?;
        me.skip_empty()?;
        Ok(Resume { file: me.progress.file, offset: me.progress.offset })
    }

    /// Opens the incoming snapshot at `index` where its durable progress ends.
    pub fn open(snapshot_dir: &Path, index: u64) -> std::io::Result<Self> {
        let dir = incoming_dir(snapshot_dir, index);
        let manifest = Manifest::read(&dir)?;
        let mut progress: Progress =
            std::fs::read(dir.join(PROGRESS)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if progress.file as usize > manifest.files.len() {
            progress = Progress::default();
        }
        if let Some(f) = manifest.files.get(progress.file as usize) {
            let on_disk = std::fs::metadata(dir.join(&f.path)).map(|m| m.len()).unwrap_or(0);
            if on_disk < progress.offset || progress.offset > f.size {
                // The record is ahead of the file: this file starts over.
                progress = Progress { file: progress.file, offset: 0, crc: 0 };
            }
        }
        Ok(Self { dir, manifest, progress, current: None, unsynced: 0 })
    }

    pub fn resume_point(&self) -> Resume {
        Resume { file: self.progress.file, offset: self.progress.offset }
    }

    /// Bytes of the snapshot already on disk.
    pub fn received_bytes(&self) -> u64 {
        let done: u64 = self.manifest.files.iter().take(self.progress.file as usize).map(|f| f.size).sum();
        done + self.progress.offset
    }

    pub fn is_complete(&self) -> bool {
        self.progress.file as usize >= self.manifest.files.len()
    }

    /// Drops the transfer bookkeeping once every file is in: what is left is the snapshot.
    pub fn finish(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(PROGRESS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Creates the empty files at the current position (no bytes will come for them).
    fn skip_empty(&mut self) -> std::io::Result<()> {
        let mut moved = false;
        while let Some(f) = self.manifest.files.get(self.progress.file as usize) {
            if f.size != 0 {
                break;
            }
            let p = self.dir.join(&f.path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            File::create(&p)?.sync_all()?;
            self.progress = Progress { file: self.progress.file + 1, offset: 0, crc: 0 };
            moved = true;
        }
        if moved {
            write_progress(&self.dir, &self.progress)?;
        }
        Ok(())
    }

    fn current(&mut self) -> std::io::Result<&mut (File, crc32fast::Hasher)> {
        let opened = match self.current.take() {
            Some(open) => open,
            None => self.open_current()?,
        };
        Ok(self.current.insert(opened))
    }

    /// Opens the file being received, cut back to its durable progress.
    fn open_current(&self) -> std::io::Result<(File, crc32fast::Hasher)> {
        {
            let Some(entry) = self.manifest.files.get(self.progress.file as usize) else {
                return Err(invalid(format!("no file {} in the snapshot manifest", self.progress.file)));
            };
            let path = self.dir.join(&entry.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut f = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
            // Bytes written after the last durable record are written again.
            f.set_len(self.progress.offset)?;
            f.seek(SeekFrom::End(0))?;
            let h = crc32fast::Hasher::new_with_initial_len(self.progress.crc, self.progress.offset);
            Ok((f, h))
        }
    }

    /// Writes one chunk; it must continue exactly where the progress is.
    pub fn write(&mut self, file: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if file != self.progress.file || offset != self.progress.offset {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "snapshot chunk for file {file} at {offset}, expected file {} at {}",
                    self.progress.file, self.progress.offset
                ),
            ));
        }
        let Some(entry) = self.manifest.files.get(file as usize).cloned() else {
            return Err(invalid(format!("snapshot chunk for file {file}, which the manifest does not have")));
        };
        if offset + data.len() as u64 > entry.size {
            return Err(invalid(format!("snapshot file {} is longer than its manifest says", entry.path)));
        }
        let len = data.len() as u64;
        let done = offset + len == entry.size;
        let sync = done || self.unsynced + len >= SYNC_EVERY;
        let (f, h) = self.current()?;
        f.write_all(data)?;
        h.update(data);
        // The CRC of the file so far, once its bytes are on disk.
        let synced_crc = if sync {
            if done {
                f.sync_all()?
            } else {
                f.sync_data()?
            }
            Some(h.clone().finalize())
        } else {
            None
        };
        self.progress.offset += len;
        self.unsynced += len;
        let Some(crc) = synced_crc else { return Ok(()) };
        if done {
            self.current = None;
            if crc != entry.crc32 {
                let _ = std::fs::remove_file(self.dir.join(&entry.path));
                self.progress = Progress { file, offset: 0, crc: 0 };
                write_progress(&self.dir, &self.progress)?;
                return Err(invalid(format!("snapshot file {} failed its checksum", entry.path)));
            }
            self.progress = Progress { file: file + 1, offset: 0, crc: 0 };
            self.unsynced = 0;
            write_progress(&self.dir, &self.progress)?;
            self.skip_empty()?;
        } else {
            self.progress.crc = crc;
            self.unsynced = 0;
            write_progress(&self.dir, &self.progress)?;
        }
        Ok(())
    }
}

fn write_progress(dir: &Path, p: &Progress) -> std::io::Result<()> {
    write_synced(&dir.join(PROGRESS), &serde_json::to_vec(p).map_err(std::io::Error::other)?)
}

/// One transfer as status reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferStatus {
    /// `send` or `receive`.
    pub direction: &'static str,
    pub peer: NodeId,
    pub snapshot_index: u64,
    /// Bytes of the snapshot the receiver has (what was resumed included).
    pub bytes: u64,
    pub total: u64,
    /// Where this attempt started (more than 0: a resumed transfer).
    pub resumed_from: u64,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    pub started_ms: u64,
    pub updated_ms: u64,
}

/// The latest snapshot transfer per direction and peer, shared by the transport's two sides.
#[derive(Debug, Clone, Default)]
pub struct Transfers(Arc<Mutex<BTreeMap<(&'static str, NodeId), TransferStatus>>>);

impl Transfers {
    pub fn list(&self) -> Vec<TransferStatus> {
        self.0.lock().values().cloned().collect()
    }

    pub(crate) fn start(
        &self,
        direction: &'static str,
        peer: NodeId,
        snapshot_index: u64,
        total: u64,
        resumed_from: u64,
    ) -> Tracker {
        let now = now_ms();
        let status = TransferStatus {
            direction,
            peer,
            snapshot_index,
            bytes: resumed_from,
            total,
            resumed_from,
            state: "running",
            started_ms: now,
            updated_ms: now,
        };
        self.0.lock().insert((direction, peer), status);
        tracing::info!(direction, peer, snapshot_index, total, resumed_from, "snapshot transfer started");
        Tracker { transfers: self.clone(), key: (direction, peer), logged_tenth: resumed_from * 10 / total.max(1) }
    }
}

/// Reports one transfer's progress.
pub(crate) struct Tracker {
    transfers: Transfers,
    key: (&'static str, NodeId),
    logged_tenth: u64,
}

impl Tracker {
    pub fn advance(&mut self, bytes: u64) {
        let (direction, peer) = self.key;
        let total = {
            let mut all = self.transfers.0.lock();
            let Some(s) = all.get_mut(&self.key) else { return };
            s.bytes = bytes;
            s.updated_ms = now_ms();
            s.total
        };
        let metric =
            if direction == "send" { "quorumdb_snapshot_send_bytes" } else { "quorumdb_snapshot_receive_bytes" };
        metrics::gauge!(metric, "peer" => peer.to_string()).set(bytes as f64);
        let tenth = bytes * 10 / total.max(1);
        if tenth > self.logged_tenth {
            self.logged_tenth = tenth;
            tracing::info!(direction, peer, bytes, total, "snapshot transfer {}%", tenth * 10);
        }
    }

    pub fn finish(self, ok: bool) {
        let (direction, peer) = self.key;
        if let Some(s) = self.transfers.0.lock().get_mut(&self.key) {
            s.state = if ok { "done" } else { "failed" };
            s.updated_ms = now_ms();
            let secs = (s.updated_ms.saturating_sub(s.started_ms)) as f64 / 1000.0;
            let sent = s.bytes - s.resumed_from;
            tracing::info!(
                direction,
                peer,
                ok,
                bytes = sent,
                mb_per_s = (sent as f64 / 1e6 / secs.max(1e-3)) as u64,
                "snapshot transfer ended"
            );
        }
        let counter =
            if ok { "quorumdb_snapshot_transfers_total" } else { "quorumdb_snapshot_transfer_failures_total" };
        metrics::counter!(counter, "direction" => direction).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CrcCache, FORMAT};
    use crate::types::SnapshotMeta;

    fn sample() -> (tempfile::TempDir, Manifest) {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("state")).unwrap();
        std::fs::write(src.path().join("state/a.sst"), (0..40_000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        std::fs::write(src.path().join("state/empty"), b"").unwrap();
        std::fs::write(src.path().join("state/z"), b"zzz").unwrap();
        let files = CrcCache::default().entries(src.path()).unwrap();
        let m = Manifest { format: FORMAT, meta: SnapshotMeta::default(), checksum: 1, created_ms: 0, files };
        (src, m)
    }

    fn send(inc: &mut Incoming, src: &Path, from: Resume, chunk: usize, stop_after: Option<usize>) -> usize {
        let mut sent = 0;
        for (i, f) in inc.manifest.files.clone().iter().enumerate().skip(from.file as usize) {
            let bytes = std::fs::read(src.join(&f.path)).unwrap();
            let start = if i == from.file as usize { from.offset as usize } else { 0 };
            let mut off = start;
            while off < bytes.len() {
                if stop_after == Some(sent) {
                    return sent;
                }
                let end = (off + chunk).min(bytes.len());
                inc.write(i as u32, off as u64, &bytes[off..end]).unwrap();
                sent += 1;
                off = end;
            }
        }
        sent
    }

    #[test]
    fn resumes_from_durable_progress_and_checks_files() {
        let (src, m) = sample();
        let snaps = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(snaps.path().join("incoming-00000000000000000099")).unwrap();
        let r = Incoming::offer(snaps.path(), &m).unwrap();
        assert_eq!(r, Resume::default());
        assert!(!snaps.path().join("incoming-00000000000000000099").exists(), "other incoming dropped");
        let mut inc = Incoming::open(snaps.path(), 0).unwrap();
        send(&mut inc, src.path(), r, 7_000, Some(3));
        drop(inc);
        // Progress is recorded every 16 MiB and at file ends: the cut-off file starts over.
        let r = Incoming::offer(snaps.path(), &m).unwrap();
        assert_eq!(r, Resume { file: 0, offset: 0 });
        let mut inc = Incoming::open(snaps.path(), 0).unwrap();
        send(&mut inc, src.path(), r, 7_000, Some(6));
        drop(inc);
        // a.sst is done; the empty file is skipped; z is next.
        let r = Incoming::offer(snaps.path(), &m).unwrap();
        assert_eq!(r, Resume { file: 2, offset: 0 });
        let mut inc = Incoming::open(snaps.path(), 0).unwrap();
        // A chunk out of place is refused.
        assert!(inc.write(2, 1, b"zz").is_err());
        // A damaged file is refused and starts over.
        assert!(inc.write(2, 0, b"zzy").is_err());
        assert_eq!(inc.resume_point(), Resume { file: 2, offset: 0 });
        let from = inc.resume_point();
        send(&mut inc, src.path(), from, 7_000, None);
        assert!(inc.is_complete());
        crate::snapshot::verify(&inc.dir, &m).unwrap();
        assert_eq!(inc.received_bytes(), m.total_bytes());
    }
}
