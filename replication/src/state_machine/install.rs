//! Installing a received snapshot: its state files become a new state directory beside the
//! live one, and rewriting the `STATE` pointer (synced) is the one step that switches to it.

use std::path::{Path, PathBuf};

use super::store::{STATE_POINTER, open_state_db, read_meta, retire};
use super::{KEEP_SNAPSHOTS, StateMachineStore};
use crate::snapshot::{self, Manifest, sync_dir, write_synced};
use crate::types::SnapshotMeta;

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl StateMachineStore {
    /// Makes the snapshot in `src` the live state (see the module docs): its state files go
    /// into a new state directory, `STATE` is switched to it, the new instance replaces the
    /// old one. Returns the path the snapshot is kept at afterwards (to serve to others).
    pub(super) fn install_blocking(&self, meta: &SnapshotMeta, src: &Path) -> std::io::Result<(PathBuf, u64)> {
        let manifest = Manifest::read(src)?;
        if manifest.meta.last_log_id != meta.last_log_id {
            return Err(invalid(format!(
                "snapshot is at {:?}, expected {:?}",
                manifest.meta.last_log_id, meta.last_log_id
            )));
        }
        // Sizes only: every file's CRC was checked as it was received or built.
        for f in &manifest.files {
            let size = std::fs::metadata(src.join(&f.path))?.len();
            if size != f.size {
                return Err(invalid(format!("snapshot file {} has {size} bytes, expected {}", f.path, f.size)));
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
