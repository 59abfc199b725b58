//! Building snapshots: application files first, then a RocksDB checkpoint of the state, then the
//! manifest, all on a blocking thread while apply and reads go on.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::alias::SnapshotOf;
use openraft::storage::{RaftSnapshotBuilder, Snapshot};
use quorumdb_state::Application;

use super::KEEP_SNAPSHOTS;
use super::store::{StateDb, open_frozen, read_meta};
use crate::error::storage_err;
use crate::snapshot::{self, CrcCache, Manifest, SnapshotDir, sync_dir};
use crate::types::{SnapshotMeta, TypeConfig};

/// Builds snapshots from a RocksDB checkpoint, off the apply path.
#[derive(Clone)]
pub struct SnapshotBuilder {
    pub(super) state: Arc<StateDb>,
    pub(super) app: Arc<dyn Application>,
    pub(super) snapshot_dir: PathBuf,
    pub(super) crcs: Arc<CrcCache>,
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
                created_ms: quorumdb_state::now_ms(),
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
