//! Snapshot directories: consistent point-in-time images of the state machine at one log id.
//!
//! Owns the on-disk layout of a snapshot, its manifest and the file checks; the state machine
//! decides when to build and install one, the transport streams one file by file.
//!
//! ```text
//! snapshots/snap-<index:020>-<build time>/
//!   manifest.json   format, snapshot meta (log id, membership), command checksum, and every
//!                   file below with its size and CRC32 — written last, so a directory with a
//!                   manifest is complete
//!   state/…         a RocksDB checkpoint of the state instance (SST files are hard links to
//!                   the live ones: no copy), catalog included (it is state)
//!   app/<tag>/…     files applications keep beside the state (HNSW index dumps)
//! ```
//! A snapshot is built under a `build-*.tmp` name and renamed when complete; a transfer is
//! received under `incoming-<index:020>` and renamed once installed. Leftovers of a crash are
//! removed when the node starts.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::SnapshotMeta;

/// The layout version written into every manifest.
pub const FORMAT: u32 = 2;
pub const MANIFEST: &str = "manifest.json";
/// The subdirectory holding the RocksDB checkpoint.
pub const STATE_DIR: &str = "state";
/// The subdirectory holding application files.
pub const APP_DIR: &str = "app";

/// A snapshot as openraft passes it around: a complete snapshot directory on local disk.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    pub path: PathBuf,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the snapshot directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub crc32: u32,
}

/// What a snapshot directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub meta: SnapshotMeta,
    /// The running checksum of applied commands at `meta.last_log_id`.
    pub checksum: u64,
    /// When it was built (ms since the epoch), on the node that built it.
    pub created_ms: u64,
    pub files: Vec<FileEntry>,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl Manifest {
    pub fn index(&self) -> u64 {
        self.meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0)
    }

    /// The sum of the files' sizes (saturating: the sizes come from a file or a peer, and a
    /// damaged one must not overflow; the total is only for progress reports).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().fold(0u64, |total, f| total.saturating_add(f.size))
    }

    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(dir.join(MANIFEST))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("bad snapshot manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(invalid(format!("snapshot format {} (this build reads {FORMAT})", m.format)));
        }
        for f in &m.files {
            // The path names a file inside the snapshot, never outside it.
            if f.path.is_empty() || f.path.starts_with('/') || f.path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(invalid(format!("bad file name in snapshot manifest: {:?}", f.path)));
            }
        }
        Ok(m)
    }

    /// Writes the manifest (synced, atomically) into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_synced(&dir.join(MANIFEST), &bytes)
    }

    /// The same snapshot, file for file (what a resumed transfer must continue).
    pub fn same_as(&self, other: &Manifest) -> bool {
        self.meta.last_log_id == other.meta.last_log_id && self.checksum == other.checksum && self.files == other.files
    }
}

/// Writes `bytes` to `path` through a temporary file, fsynced and renamed.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent())
}

/// Makes renames and new entries in `dir` durable.
pub fn sync_dir(dir: Option<&Path>) -> std::io::Result<()> {
    if let Some(d) = dir {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// A new directory name for a snapshot at `meta`: by index, then by time, so names sort
/// oldest first and a later build at the same index (with newer application files) is the
/// current one.
pub fn dir_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}", meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0), now_nanos())
}

/// Nanoseconds since the Unix epoch: unique-enough suffixes for directory names.
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Every regular file under `dir`, as (relative `/` path, absolute path), sorted. The
/// snapshot's own manifest and RocksDB's info logs are left out: they are not state.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        let here = if rel.is_empty() { base.to_path_buf() } else { base.join(rel) };
        for e in std::fs::read_dir(&here)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(base, &child, out)?;
            } else if ty.is_file() && child != MANIFEST && !name.starts_with("LOG") {
                out.push((child, e.path()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, "", &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// CRC32 of a whole file, read in 1 MiB pieces.
pub fn file_crc32(path: &Path) -> std::io::Result<u32> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// CRCs of immutable files (SSTs, hard-linked into every snapshot) computed once per inode.
#[derive(Default)]
pub struct CrcCache(Mutex<HashMap<(u64, u64, u64, i64), u32>>);

impl CrcCache {
    /// The manifest entries of every file under `dir`.
    pub fn entries(&self, dir: &Path) -> std::io::Result<Vec<FileEntry>> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (rel, abs) in list_files(dir)? {
            let md = std::fs::metadata(&abs)?;
            let key = (md.dev(), md.ino(), md.size(), md.mtime_nsec() + md.mtime() * 1_000_000_000);
            let immutable = rel.ends_with(".sst");
            let cached = if immutable { self.0.lock().get(&key).copied() } else { None };
            let crc = match cached {
                Some(c) => c,
                None => file_crc32(&abs)?,
            };
            if immutable {
                seen.insert(key, crc);
            }
            out.push(FileEntry { path: rel, size: md.size(), crc32: crc });
        }
        // Keep only what the newest snapshot uses: the cache does not grow without bound.
        *self.0.lock() = seen;
        Ok(out)
    }
}

/// Checks every file of `manifest` under `dir`: present, of the right size and CRC.
pub fn verify(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let size = std::fs::metadata(&p).map_err(|e| invalid(format!("snapshot file {}: {e}", f.path)))?.len();
        if size != f.size {
            return Err(invalid(format!("snapshot file {} has {size} bytes, expected {}", f.path, f.size)));
        }
        if file_crc32(&p)? != f.crc32 {
            return Err(invalid(format!("snapshot file {} failed its checksum", f.path)));
        }
    }
    Ok(())
}

/// The complete snapshots in `dir`, oldest first.
pub fn complete(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("snap-") && p.join(MANIFEST).exists() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Removes all but the newest `keep` complete snapshots.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let all = complete(dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        tracing::debug!(path = %old.display(), "removing old snapshot");
        std::fs::remove_dir_all(old)?;
    }
    Ok(())
}

/// Removes what a crash can leave in the snapshot directory: half-built snapshots and
/// directories without a manifest. Incoming transfers are kept (they resume).
pub fn clean_leftovers(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stale = name.ends_with(".tmp") || (name.starts_with("snap-") && !p.join(MANIFEST).exists());
        // Single-file snapshots of the previous format.
        let old_format = name.ends_with(".snap") || name.ends_with(".recv");
        if stale || old_format {
            tracing::info!(path = %p.display(), "removing an unfinished snapshot");
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

/// Puts `src` at `dest`: a hard link for immutable files (RocksDB SSTs, never modified after
/// they are written), a synced copy for everything else.
pub fn link_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let immutable = src.extension().is_some_and(|x| x == "sst");
    if immutable && std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)?;
    File::open(dest)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_verify_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/000001.sst"), vec![7u8; 3000]).unwrap();
        std::fs::write(dir.path().join("state/CURRENT"), b"MANIFEST-000001\n").unwrap();
        std::fs::write(dir.path().join("state/LOG"), b"not state").unwrap();
        std::fs::create_dir_all(dir.path().join("app/1")).unwrap();
        std::fs::write(dir.path().join("app/1/manifest.json"), b"{}").unwrap();
        let cache = CrcCache::default();
        let files = cache.entries(dir.path()).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["app/1/manifest.json", "state/000001.sst", "state/CURRENT"],
            "an application's own manifest is a file like any other"
        );
        let m = Manifest { format: FORMAT, meta: SnapshotMeta::default(), checksum: 9, created_ms: 1, files };
        m.write(dir.path()).unwrap();
        let back = Manifest::read(dir.path()).unwrap();
        assert!(back.same_as(&m));
        verify(dir.path(), &back).unwrap();
        // A cached CRC is reused for the same inode; a damaged file is caught by verify.
        assert_eq!(cache.entries(dir.path()).unwrap(), m.files);
        let mut bytes = std::fs::read(dir.path().join("state/CURRENT")).unwrap();
        bytes[0] ^= 1;
        std::fs::write(dir.path().join("state/CURRENT"), bytes).unwrap();
        assert!(verify(dir.path(), &back).is_err());
        std::fs::write(dir.path().join("state/CURRENT"), b"MANIFEST-000001\n").unwrap();
        verify(dir.path(), &back).unwrap();
        std::fs::remove_file(dir.path().join("app/1/manifest.json")).unwrap();
        assert!(verify(dir.path(), &back).is_err());
        // A manifest naming a file outside the snapshot is refused.
        let mut evil = m.clone();
        evil.files[0].path = "../../etc/passwd".into();
        evil.write(dir.path()).unwrap();
        assert!(Manifest::read(dir.path()).is_err());
    }

    #[test]
    fn leftovers_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for n in ["snap-00000000000000000001-1", "snap-00000000000000000002-1", "snap-00000000000000000002-2"] {
            std::fs::create_dir_all(d.join(n)).unwrap();
            std::fs::write(d.join(n).join(MANIFEST), b"{}").unwrap();
        }
        std::fs::create_dir_all(d.join("snap-00000000000000000004")).unwrap(); // no manifest
        std::fs::create_dir_all(d.join("build-1.tmp")).unwrap();
        std::fs::create_dir_all(d.join("incoming-00000000000000000009")).unwrap();
        clean_leftovers(d).unwrap();
        prune(d, 2).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            ["incoming-00000000000000000009", "snap-00000000000000000002-1", "snap-00000000000000000002-2"]
        );
    }
}
