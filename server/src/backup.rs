//! Backups: `POST /v1/backup` with `{"to": "name"}` writes every table of this node's state
//! into a directory on this node's file system, as Arrow IPC files plus `manifest.json`
//! ([`quorumdb_sql::backup`] describes the layout).
//!
//! Backups are confined to the node's backup directory (`--backup-dir`, default
//! `<data-dir>/backups`, created when missing): `to` is a path relative to it, or an absolute
//! path inside it. [`resolve_target`] refuses (400, before anything is created) a `to` with a
//! `..` component, an absolute path elsewhere, the backup directory itself, and a path whose
//! existing part leads out of it through a symbolic link. The answer names the absolute
//! directory written.
//!
//! The backup is consistent and complete: a linearizable read barrier first (every write
//! acknowledged before the request is applied here), then a RocksDB checkpoint of the state
//! under the data dir (`backup-tmp-*`, hard links, removed afterwards) that every table is
//! read from, so all tables are as of one applied index, recorded in the manifest. The files
//! are written on a blocking thread as the rows stream; writes go on meanwhile. `dir` must not
//! exist or be empty; on failure what was written is removed. Restore is a client
//! (`quorumdb restore`) that replays the files through the bulk-load path.

use std::path::{Component, Path, PathBuf};
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
    let body: BackupBody = serde_json::from_slice(&body).map_err(|e| {
        ServerError::BadRequest(format!(
            "the body must be JSON {{\"to\": \"dir\"}} (relative to the backup directory, or absolute inside it): {e}"
        ))
    })?;
    let to = resolve_target(&s.backup_dir, &body.to)?;
    let created = prepare_dir(&to)?;
    // Nothing swapped a symbolic link into the path between the check and the creation.
    if std::fs::canonicalize(&to).ok().as_deref() != Some(to.as_path()) {
        if created {
            let _ = std::fs::remove_dir(&to);
        }
        return Err(ServerError::BadRequest(format!(
            "{} changed while the backup started (a symbolic link appeared in it)",
            to.display()
        )));
    }
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

/// Where a backup asked for as `to` is written: below `backup_dir` (which is created if
/// missing), or a [`ServerError::BadRequest`] — before anything but `backup_dir` is created.
///
/// `to` is relative to `backup_dir`, or absolute and inside it (as configured or with its
/// symbolic links resolved); it has no `..` component and names a directory below
/// `backup_dir`, not `backup_dir` itself. The deepest part of it that exists, symbolic links
/// resolved, must be inside the real `backup_dir`. The answer is that real part joined with
/// the rest of `to`: an absolute path without symbolic links, `.` or `..`.
pub fn resolve_target(backup_dir: &Path, to: &Path) -> Result<PathBuf, ServerError> {
    let outside = || {
        ServerError::BadRequest(format!(
            "{} is outside the backup directory {}: give a path relative to it, or an absolute path inside it \
             (the node's --backup-dir)",
            to.display(),
            backup_dir.display()
        ))
    };
    if to.components().any(|c| c == Component::ParentDir) {
        return Err(ServerError::BadRequest(format!(
            "the backup directory {} must not contain `..`: give a path relative to the backup directory {}, \
             or an absolute path inside it",
            to.display(),
            backup_dir.display()
        )));
    }
    std::fs::create_dir_all(backup_dir).map_err(|e| {
        ServerError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot create the backup directory {}: {e}", backup_dir.display()),
        ))
    })?;
    let root = std::fs::canonicalize(backup_dir).map_err(|e| {
        ServerError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot resolve the backup directory {}: {e}", backup_dir.display()),
        ))
    })?;
    let rel = if to.is_absolute() {
        to.strip_prefix(backup_dir).or_else(|_| to.strip_prefix(&root)).map_err(|_| outside())?
    } else {
        to
    };
    // Only names remain (no `..` above; roots and `.` dropped).
    let rel: PathBuf = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let itself = || {
        ServerError::BadRequest(format!(
            "{} is the backup directory {} itself: name a new or empty directory below it",
            to.display(),
            backup_dir.display()
        ))
    };
    if rel.as_os_str().is_empty() {
        return Err(itself());
    }
    let target = root.join(&rel);
    // The deepest part that exists (`root` does).
    let mut existing = target.as_path();
    loop {
        match std::fs::symlink_metadata(existing) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && existing != root => {
                existing = existing.parent().unwrap_or(&root);
            }
            Err(e) => return Err(ServerError::BadRequest(format!("cannot use {}: {e}", to.display()))),
        }
    }
    let real = std::fs::canonicalize(existing)
        .map_err(|e| ServerError::BadRequest(format!("cannot use {}: {}: {e}", to.display(), existing.display())))?;
    if !real.starts_with(&root) {
        return Err(ServerError::BadRequest(format!(
            "{} leads through a symbolic link to {}, outside the backup directory {}",
            to.display(),
            real.display(),
            backup_dir.display()
        )));
    }
    let rest = target
        .strip_prefix(existing)
        .map_err(|_| ServerError::Internal(format!("{} is not below {}", target.display(), existing.display())))?;
    let resolved = if rest.as_os_str().is_empty() { real } else { real.join(rest) };
    if resolved == root {
        return Err(itself());
    }
    Ok(resolved)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn refused(backup_dir: &Path, to: impl AsRef<Path>) -> String {
        match resolve_target(backup_dir, to.as_ref()) {
            Err(ServerError::BadRequest(m)) => m,
            other => panic!("{}: {other:?}", to.as_ref().display()),
        }
    }

    #[test]
    fn targets_stay_inside_the_backup_dir() {
        let work = tempfile::tempdir().unwrap();
        let work_path = std::fs::canonicalize(work.path()).unwrap();
        // Created when missing.
        let dir = work_path.join("backups");
        let elsewhere = work_path.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();

        // Relative names, and absolute paths inside.
        assert_eq!(resolve_target(&dir, Path::new("b1")).unwrap(), dir.join("b1"));
        assert!(dir.is_dir() && !dir.join("b1").exists(), "only the backup dir is created");
        assert_eq!(resolve_target(&dir, Path::new("./daily/b2/")).unwrap(), dir.join("daily/b2"));
        assert_eq!(resolve_target(&dir, &dir.join("b3")).unwrap(), dir.join("b3"));
        assert_eq!(resolve_target(&dir, &dir.join("./x/./b4")).unwrap(), dir.join("x/b4"));
        std::fs::create_dir(dir.join("existing")).unwrap();
        assert_eq!(resolve_target(&dir, Path::new("existing")).unwrap(), dir.join("existing"));

        // `..`, absolute paths elsewhere, the backup dir itself.
        for to in ["../x", "a/../../x", "a/..", ".."] {
            assert!(refused(&dir, to).contains("`..`"), "{to}");
        }
        assert!(refused(&dir, dir.join("../elsewhere/x")).contains("`..`"));
        for to in [elsewhere.join("x"), PathBuf::from("/tmp/elsewhere"), PathBuf::from("/"), work_path.join("backups2")]
        {
            assert!(refused(&dir, &to).contains("outside the backup directory"), "{}", to.display());
        }
        for to in [PathBuf::new(), PathBuf::from("."), PathBuf::from("./"), dir.clone()] {
            assert!(refused(&dir, &to).contains("itself"), "{}", to.display());
        }

        // Symbolic links: out of the backup dir (also dangling), or back into it.
        symlink(&elsewhere, dir.join("out")).unwrap();
        for to in [PathBuf::from("out"), PathBuf::from("out/x/y"), dir.join("out/x")] {
            assert!(refused(&dir, &to).contains("symbolic link"), "{}", to.display());
        }
        symlink(work_path.join("nowhere"), dir.join("dangling")).unwrap();
        refused(&dir, "dangling/x");
        symlink(dir.join("existing"), dir.join("in")).unwrap();
        assert_eq!(resolve_target(&dir, Path::new("in/x")).unwrap(), dir.join("existing/x"));
        symlink(&dir, dir.join("self")).unwrap();
        assert!(refused(&dir, "self").contains("itself"));
        // A file on the way.
        std::fs::write(dir.join("file"), "x").unwrap();
        refused(&dir, "file/below");
        refused(&dir, "nul\0byte");

        // A backup dir given through a symbolic link: its real path counts too.
        symlink(&dir, work_path.join("link")).unwrap();
        let via = work_path.join("link");
        assert_eq!(resolve_target(&via, Path::new("b5")).unwrap(), dir.join("b5"));
        assert_eq!(resolve_target(&via, &via.join("b6")).unwrap(), dir.join("b6"));
        assert_eq!(resolve_target(&via, &dir.join("b7")).unwrap(), dir.join("b7"));

        // Nothing was created outside.
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        let mut top: Vec<String> =
            std::fs::read_dir(&work_path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        top.sort();
        assert_eq!(top, ["backups", "elsewhere", "link"]);
    }
}
