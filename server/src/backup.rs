//! Backups: `POST /v1/backup` with `{"to": "/absolute/dir"}` writes every table of this node's
//! state into `dir`, on this node's file system, as Arrow IPC files plus `manifest.json`
//! ([`quorumdb_sql::backup`] describes the layout).
//!
//! The backup is consistent and complete: a linearizable read barrier first (every write
//! acknowledged before the request is applied here), then a RocksDB checkpoint of the state
//! under the data dir (`backup-tmp-*`, hard links, removed afterwards) that every table is
//! read from, so all tables are as of one applied index, recorded in the manifest. The files
//! are written on a blocking thread as the rows stream; writes go on meanwhile. `dir` must not
//! exist or be empty; on failure what was written is removed. Restore is a client
//! (`quorumdb restore`) that replays the files through the bulk-load path.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use quorumdb_replication::{Consistency, StateReader};
use quorumdb_sql::backup::{self as format, Manifest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::NodeContext;
use crate::error::ServerError;

/// The prefix of the checkpoint directories under the data dir.
const TMP_PREFIX: &str = "backup-tmp-";

#[derive(Deserialize)]
struct BackupBody {
    to: PathBuf,
}

pub async fn backup(State(s): State<NodeContext>, body: Bytes) -> Result<Json<Value>, ServerError> {
    let body: BackupBody = serde_json::from_slice(&body)
        .map_err(|e| ServerError::BadRequest(format!("the body must be JSON {{\"to\": \"/absolute/dir\"}}: {e}")))?;
    let to = body.to;
    if !to.is_absolute() {
        return Err(ServerError::BadRequest(format!(
            "the backup directory must be an absolute path (on the node's file system), not {}",
            to.display()
        )));
    }
    let created = prepare_dir(&to)?;
    let started = Instant::now();
    let result = async {
        s.replica.read_barrier(Consistency::Linearizable).await?;
        let (reader, data_dir, id, dir) = (s.replica.reader().clone(), s.data_dir.clone(), s.replica.id, to.clone());
        tokio::task::spawn_blocking(move || write_backup(&reader, &data_dir, &dir, id))
            .await
            .map_err(|e| ServerError::Io(std::io::Error::other(e)))?
    }
    .await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(&to);
            }
            tracing::warn!(dir = %to.display(), error = %e, "backup failed");
            return Err(e);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = manifest.tables.iter().map(|t| t.bytes).sum();
    tracing::info!(
        dir = %to.display(),
        applied_index = manifest.applied_index,
        tables = manifest.tables.len(),
        rows,
        bytes,
        seconds,
        "backup written"
    );
    let tables: Vec<Value> = manifest
        .tables
        .iter()
        .map(|t| json!({"name": t.name, "rows": t.rows, "bytes": t.bytes, "file": t.file}))
        .collect();
    Ok(Json(json!({
        "dir": to,
        "applied_index": manifest.applied_index,
        "applied_term": manifest.applied_term,
        "node_id": manifest.node_id,
        "tables": tables,
        "rows": rows,
        "bytes": bytes,
        "seconds": seconds,
    })))
}

/// Checks that `dir` is usable (missing, or an empty directory) and creates it if missing;
/// `true` when it was created.
fn prepare_dir(dir: &Path) -> Result<bool, ServerError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| ServerError::BadRequest(format!("cannot read {}: {e}", dir.display())))?;
            if entries.next().is_some() {
                return Err(ServerError::BadRequest(format!(
                    "the backup directory {} is not empty: give a new or empty directory",
                    dir.display()
                )));
            }
            Ok(false)
        }
        Ok(_) => Err(ServerError::BadRequest(format!("{} exists and is not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| ServerError::BadRequest(format!("cannot create {}: {e}", dir.display())))?;
            Ok(true)
        }
        Err(e) => Err(ServerError::BadRequest(format!("cannot use {}: {e}", dir.display()))),
    }
}

/// Takes the checkpoint and writes the files and the manifest (blocking).
fn write_backup(reader: &StateReader, data_dir: &Path, to: &Path, node_id: u64) -> Result<Manifest, ServerError> {
    let tmp = tempfile::Builder::new().prefix(TMP_PREFIX).tempdir_in(data_dir)?;
    let frozen = reader.checkpoint(&tmp.path().join("state"))?;
    let (applied, _) = frozen.applied()?;
    let applied_index = applied.as_ref().map_or(0, |l| l.index);
    let applied_term = applied.as_ref().map_or(0, |l| l.leader_id.term);
    let tables = format::export_tables(&frozen, to)?;
    // The checkpoint goes before its directory.
    drop(frozen);
    drop(tmp);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let created_unix_ms = now.as_millis() as u64;
    let manifest = Manifest {
        format: format::FORMAT.into(),
        version: format::VERSION,
        applied_index,
        applied_term,
        created_at: chrono::DateTime::from_timestamp_millis(created_unix_ms as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default(),
        created_unix_ms,
        node_id,
        server_version: env!("CARGO_PKG_VERSION").into(),
        excludes: vec!["the KV table (/v1/kv, Redis protocol)".into()],
        tables,
    };
    if let Err(e) = manifest.write(to) {
        for t in &manifest.tables {
            let _ = std::fs::remove_file(to.join(&t.file));
        }
        let _ = std::fs::remove_file(to.join(format!("{}.tmp", format::MANIFEST_FILE)));
        return Err(e.into());
    }
    Ok(manifest)
}

/// Removes checkpoints a backup left behind when the node stopped in the middle of it.
pub fn remove_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            tracing::info!(path = %e.path().display(), "removing the checkpoint of an interrupted backup");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
