//! Backups are confined to the node's `--backup-dir`: a relative `to` lands below it, an
//! absolute path inside it works, and the answer names the absolute directory written; `..`,
//! an absolute path elsewhere, and a symbolic link inside the backup dir that leads out of it
//! are each refused with 400 and a JSON error — with nothing created outside. Without the flag
//! the backup dir is `<data-dir>/backups`.

use std::path::{Path, PathBuf};

use quorumdb_sql::backup::Manifest;
use quorumdb_tests::TestCluster;
use serde_json::{Value, json};

/// The names in `dir`, sorted (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Posts a backup into `to`; asserts it is written with the table's rows into `want` and
/// answered with that absolute directory.
async fn written(c: &TestCluster, to: Value, want: &Path) {
    let (s, v) = c.post(1, "/v1/backup", json!({ "to": to })).await;
    assert_eq!(s, 200, "{to}: {v}");
    assert_eq!(v["dir"].as_str(), Some(want.to_str().unwrap()), "{to}: {v}");
    assert!(Path::new(v["dir"].as_str().unwrap()).is_absolute());
    let m = Manifest::read(want).unwrap();
    assert_eq!((m.tables.len(), m.tables[0].rows), (1, 3), "{to}");
}

/// Posts a backup into `to`; asserts it is refused with 400 and a JSON error whose message
/// contains `why`.
async fn refused(c: &TestCluster, to: Value, why: &str) {
    let (s, v) = c.post(1, "/v1/backup", json!({ "to": to })).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{to}: {v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{to}: {message:?} should say {why:?}");
    assert_eq!(v["error"]["retryable"], json!(false), "{to}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_stay_inside_the_backup_dir() {
    let work = tempfile::tempdir().unwrap();
    let work_path = std::fs::canonicalize(work.path()).unwrap();
    // Not there yet: the node creates it.
    let backups = work_path.join("backups");
    let outside = work_path.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let elsewhere = PathBuf::from(format!("/tmp/quorumdb-t93-elsewhere-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&elsewhere);

    let dir = backups.clone();
    let mut c = TestCluster::start_tweaked(1, 50_000, |cfg| cfg.backup_dir = Some(dir.clone())).await;
    c.wait_leader().await;
    assert_eq!(c.backup_dir(1), backups);
    let (s, v) = c
        .sql(
            1,
            "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // A relative path lands below the backup dir (created on the way); so does a nested one.
    written(&c, json!("first"), &backups.join("first")).await;
    written(&c, json!("daily/2024-06-30"), &backups.join("daily/2024-06-30")).await;
    // An absolute path inside it works.
    written(&c, json!(backups.join("absolute")), &backups.join("absolute")).await;
    // A symbolic link inside that stays inside is followed; the answer names the real place.
    std::fs::create_dir(backups.join("real")).unwrap();
    std::os::unix::fs::symlink(backups.join("real"), backups.join("alias")).unwrap();
    written(&c, json!("alias/b"), &backups.join("real/b")).await;

    // `..` components, relative or absolute.
    refused(&c, json!("../x"), "`..`").await;
    refused(&c, json!("a/../../x"), "`..`").await;
    refused(&c, json!(backups.join("../outside/x")), "`..`").await;
    // Absolute paths elsewhere.
    refused(&c, json!(elsewhere), "outside the backup directory").await;
    refused(&c, json!(outside.join("x")), "outside the backup directory").await;
    refused(&c, json!(work_path.join("backups-2")), "outside the backup directory").await;
    // A symbolic link inside the backup dir that points outside, as the target or on the way.
    std::os::unix::fs::symlink(&outside, backups.join("escape")).unwrap();
    refused(&c, json!("escape"), "symbolic link").await;
    refused(&c, json!("escape/x/y"), "symbolic link").await;
    refused(&c, json!(backups.join("escape/x")), "symbolic link").await;
    std::os::unix::fs::symlink("/tmp", backups.join("tmp")).unwrap();
    refused(&c, json!(format!("tmp/quorumdb-t93-elsewhere-{}", std::process::id())), "symbolic link").await;
    // The backup dir itself, and a backup dir that is not empty (left as it was).
    refused(&c, json!(""), "itself").await;
    refused(&c, json!(backups), "itself").await;
    refused(&c, json!("first"), "not empty").await;

    // Nothing was created outside the backup dir.
    assert!(!elsewhere.exists(), "{} was created", elsewhere.display());
    assert_eq!(names(&outside), Vec::<String>::new());
    assert_eq!(names(&work_path), ["backups", "outside"]);
    assert_eq!(names(&backups), ["absolute", "alias", "daily", "escape", "first", "real", "tmp"]);
    assert_eq!(names(&backups.join("real")), ["b"]);
    c.stop_all().await;

    // Without --backup-dir: `<data-dir>/backups`.
    let mut d = TestCluster::start(1).await;
    d.wait_leader().await;
    let default = d.data_dir(1).join("backups");
    assert_eq!(d.backup_dir(1), default);
    let (s, v) = d
        .sql(
            1,
            "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    written(&d, json!("b1"), &std::fs::canonicalize(d.data_dir(1)).unwrap().join("backups/b1")).await;
    refused(&d, json!(work_path.join("b2")), "outside the backup directory").await;
    assert!(!work_path.join("b2").exists());
    d.stop_all().await;
}

/// The flag and its environment variable are documented by `quorumdb start --help`.
#[tokio::test]
async fn the_start_command_has_a_backup_dir_flag() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorumdb-node"))
        .args(["start", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("--backup-dir <BACKUP_DIR>") && help.contains("QUORUMDB_BACKUP_DIR"), "{help}");
}
