//! Golden bytes: fixed encodings checked into `tests/golden/` beside each crate's tests, so a
//! format cannot change without a test failing. Shared by the crates' golden tests (included
//! with `#[path]`; test support, not product code).
//!
//! A sample is a file of lowercase hex, 32 bytes a line. [`check`] compares what the current
//! code encodes with the file; a missing file is written only when `QUORUMDB_BLESS=1` (a new
//! sample or a new format version), never rewritten: an existing sample is a promise that
//! this exact encoding stays readable.
#![allow(dead_code)]

use std::path::PathBuf;

fn path(crate_dir: &str, name: &str) -> PathBuf {
    PathBuf::from(crate_dir).join("tests/golden").join(name)
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("hex"), 16).expect("hex digit pair"))
        .collect()
}

/// The checked-in bytes of sample `name` (`<crate>/tests/golden/<name>.hex`).
pub fn load(crate_dir: &str, name: &str) -> Vec<u8> {
    let p = path(crate_dir, &format!("{name}.hex"));
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (QUORUMDB_BLESS=1 writes it)", p.display()));
    from_hex(&text)
}

/// Checks that `encoded` is byte for byte the checked-in sample `name` (writing it first if
/// it is missing and `QUORUMDB_BLESS=1`), and returns the checked-in bytes.
pub fn check(crate_dir: &str, name: &str, encoded: &[u8]) -> Vec<u8> {
    let p = path(crate_dir, &format!("{name}.hex"));
    if !p.exists() && std::env::var("QUORUMDB_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&p, to_hex(encoded)).expect("write golden sample");
    }
    let stored = load(crate_dir, name);
    assert!(
        stored == encoded,
        "the encoding of {name} changed: a format change needs a new format version and a new sample\n stored:  {}\n encoded: {}",
        to_hex(&stored).replace('\n', ""),
        to_hex(encoded).replace('\n', "")
    );
    stored
}

/// Text samples (JSON manifests): `<name>` as is, compared exactly.
pub fn check_text(crate_dir: &str, name: &str, encoded: &str) -> String {
    let p = path(crate_dir, name);
    if !p.exists() && std::env::var("QUORUMDB_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&p, encoded).expect("write golden sample");
    }
    let stored =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (QUORUMDB_BLESS=1 writes it)", p.display()));
    assert_eq!(stored, encoded, "the encoding of {name} changed: a format change needs a new format version");
    stored
}
