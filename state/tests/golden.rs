//! Golden bytes of the encodings this crate owns: the versioned envelope (through the system
//! command that moves the cluster's format) and rejections of every version.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "support/golden.rs"]
mod golden;

use quorumdb_state::Rejection;
use quorumdb_state::format::{self, SetFormat};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn set_format_v1() {
    let cmd = SetFormat { version: 1 }.command().unwrap();
    let stored = golden::check(DIR, "set-format-v1", &cmd.0);
    assert_eq!(stored[0], format::SYSTEM_TAG);
    assert_eq!(&stored[1..3], &[format::MARKER, 1]);
    assert_eq!(SetFormat::decode(&stored[1..]).unwrap(), SetFormat { version: 1 });
}

#[test]
fn rejections_v0_v1() {
    let r = Rejection::new("23505", "duplicate key value violates unique constraint \"t_pkey\"");
    for v in [format::LEGACY, 1] {
        let stored = golden::check(DIR, &format!("rejection-v{v}"), &r.encode(v));
        assert_eq!(Rejection::decode(&stored), r);
    }
    // The KV table's version-0 rejections were the message as text.
    let text = golden::check(DIR, "rejection-kv-text-v0", b"value is not an integer or out of range");
    assert_eq!(Rejection::decode(&text), Rejection::new("22023", "value is not an integer or out of range"));
}

#[test]
fn once_v2() {
    use quorumdb_state::CommandResult;
    use quorumdb_state::system::{Once, OnceRecord, SystemCommand};
    let once =
        Once { id: "req-7#0".into(), fingerprint: 0x1234, now_ms: 1_764_000_000_000, command: vec![b'k', 0xc1, 2] };
    let cmd = once.clone().command(2).unwrap();
    let stored = golden::check(DIR, "once-v2", &cmd.0);
    assert_eq!(&stored[..3], &[format::SYSTEM_TAG, format::MARKER, 2]);
    assert_eq!(SystemCommand::decode(&stored[1..]).unwrap(), SystemCommand::Once(once));
    let rec =
        OnceRecord { expires_ms: 1_764_000_600_000, fingerprint: 0x1234, result: CommandResult::Applied(vec![1, 2]) };
    let stored = golden::check(DIR, "once-record-v2", &rec.encode().unwrap());
    assert_eq!(OnceRecord::decode(&stored).unwrap(), rec);
}
