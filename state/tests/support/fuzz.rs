//! Property-based fuzzing of the byte-level decoders and parsers: shared by the crates'
//! `tests/fuzz.rs` (included with `#[path]` beside `golden.rs`; test support, not product code).
//!
//! Every target states one property: whatever bytes it is given, the decoder returns (`Ok` or
//! `Err`) and never panics. Inputs are random bytes, "token soup" (a target's dictionary of
//! interesting fragments mixed with random bytes) and mutations of the checked-in golden
//! samples (bit flips, byte overwrites, truncation, insertion, removal, duplication of spans,
//! dictionary tokens). proptest catches a panic in a case, reports it as a failure and shrinks
//! it to a small input; a crash found this way is kept as an explicit regression test next to
//! its target (failure persistence files are off).
//!
//! - Cases: [`DEFAULT_CASES`] per target so CI stays fast; `QUORUMDB_FUZZ_CASES=N` overrides
//!   the count of every target (the long mode: `QUORUMDB_FUZZ_CASES=200000`).
//! - Hangs: [`bounded`] runs a case under a watchdog; a case still running after
//!   [`HANG_SECS`] prints its input and ends the test process with a failure.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// The environment variable that overrides every target's case count (the long mode).
pub const CASES_ENV: &str = "QUORUMDB_FUZZ_CASES";
/// Cases per target by default (a few seconds per target in a debug build at most).
pub const DEFAULT_CASES: u32 = 2_000;
/// A case that runs longer than this is a hang.
pub const HANG_SECS: u64 = 20;

/// The case count: `QUORUMDB_FUZZ_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    match std::env::var(CASES_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{CASES_ENV}={v:?} is not a number of cases")),
        Err(_) => default,
    }
}

/// The proptest configuration of a target with `default` cases.
pub fn config_with(default: u32) -> Config {
    Config {
        cases: cases(default),
        // A crash found becomes a named regression test beside its target, not a seed file.
        failure_persistence: None,
        max_shrink_iters: 4_096,
        ..Config::default()
    }
}

/// The proptest configuration of a target with [`DEFAULT_CASES`].
pub fn config() -> Config {
    config_with(DEFAULT_CASES)
}

/// Bytes that print as hex (and as escaped text), so a failing case can be pasted into a
/// regression test.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes: hex {} text b\"{}\"", self.0.len(), hex(&self.0), self.0.escape_ascii())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every golden sample of a crate (`<crate_dir>/tests/golden/*.hex`) whose name passes `keep`,
/// as (name, bytes), sorted by name.
pub fn golden_samples(crate_dir: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(crate_dir).join("tests/golden");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".hex").map(str::to_string))
        .filter(|n| keep(n))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden samples in {}", dir.display());
    names.into_iter().map(|n| (n.clone(), crate::golden::load(crate_dir, &n))).collect()
}

/// A text sample of a crate (`<crate_dir>/tests/golden/<name>`, e.g. a JSON manifest).
pub fn golden_text(crate_dir: &str, name: &str) -> Vec<u8> {
    let p = std::path::Path::new(crate_dir).join("tests/golden").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Fragments worth splicing into MessagePack: huge lengths of every kind (arrays, maps,
/// strings, binaries, extensions), extreme integers, the envelope marker, deep nesting.
pub const MSGPACK_TOKENS: &[&[u8]] = &[
    &[0xc1],
    &[0xc1, 0x01],
    &[0xc1, 0x02],
    &[0xc1, 0x03],
    &[0xc0],
    &[0xc2],
    &[0xc3],
    &[0x90],
    &[0x80],
    &[0xa0],
    &[0xdc, 0xff, 0xff],
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xde, 0xff, 0xff],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xd9, 0xff],
    &[0xda, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc4, 0xff],
    &[0xc5, 0xff, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xd4, 0x01, 0x00],
    &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
    &[0xce, 0xff, 0xff, 0xff, 0xff],
    &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
    &[0xca, 0x7f, 0xc0, 0, 0],
    &[0xff],
    &[0x7f],
    &[0x81, 0xa0, 0xc0],
    &[0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91],
    &[0x81, 0xa1, b'x', 0x81, 0xa1, b'x', 0x81, 0xa1, b'x', 0x81, 0xa1, b'x', 0x81, 0xa1, b'x'],
    &[0xa3, 0xff, 0xfe, 0xfd],
    &[0xa2, 0xc3, 0x28],
];

/// Fragments worth splicing into JSON manifests.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"4294967295",
    b"4294967296",
    b"-1",
    b"0",
    b"1e400",
    b"-0",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\"",
    b"\"..\"",
    b"\"../../etc/passwd\"",
    b"\"/abs\"",
    b"\"a//b\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"path\":\"x\",\"size\":18446744073709551615,\"crc32\":0}",
    b",",
    b":",
    b"\"",
];

/// One edit of a sample.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, u8),
    /// Copies a span (start, length) to another place (inserted there).
    Duplicate(Index, u8, Index),
    /// Inserts a dictionary token at a place, or writes it over the bytes there.
    Token(Index, Index, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), 1u8..64, any::<Index>()).prop_map(|(i, n, at)| Mutation::Duplicate(i, n, at)),
        2 => (any::<Index>(), any::<Index>(), any::<bool>()).prop_map(|(i, t, o)| Mutation::Token(i, t, o)),
    ]
}

/// Applies `m` to `data` (positions scale to its current length; an empty input only grows).
pub fn apply(data: &mut Vec<u8>, m: &Mutation, dict: &[&[u8]]) {
    let len = data.len();
    // Index::index needs a non-empty range: a position over the bytes, or between them.
    let at = |i: &Index| if len == 0 { None } else { Some(i.index(len)) };
    let gap = |i: &Index| i.index(len + 1);
    match m {
        Mutation::FlipBit(i, b) => {
            if let Some(p) = at(i) {
                data[p] ^= 1 << b;
            }
        }
        Mutation::SetByte(i, v) => {
            if let Some(p) = at(i) {
                data[p] = *v;
            }
        }
        Mutation::Truncate(i) => data.truncate(gap(i)),
        Mutation::Insert(i, bytes) => {
            let p = gap(i);
            data.splice(p..p, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            if let Some(p) = at(i) {
                let end = (p + *n as usize).min(len);
                data.drain(p..end);
            }
        }
        Mutation::Duplicate(i, n, to) => {
            if let Some(p) = at(i) {
                let span: Vec<u8> = data[p..(p + *n as usize).min(len)].to_vec();
                let q = gap(to);
                data.splice(q..q, span);
            }
        }
        Mutation::Token(i, t, overwrite) => {
            if dict.is_empty() {
                return;
            }
            let token = dict[t.index(dict.len())];
            let p = gap(i);
            let end = if *overwrite { (p + token.len()).min(len) } else { p };
            data.splice(p..end, token.iter().copied());
        }
    }
}

/// Random bytes, up to `max` of them.
pub fn random_bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..=max).boxed()
}

/// Dictionary tokens and random bytes, mixed: up to `max_parts` parts.
pub fn token_soup(dict: &'static [&'static [u8]], max_parts: usize) -> BoxedStrategy<Vec<u8>> {
    let part = prop_oneof![
        3 => any::<Index>().prop_map(move |i| dict[i.index(dict.len())].to_vec()),
        1 => vec(any::<u8>(), 1..8),
    ];
    vec(part, 0..=max_parts).prop_map(|parts| parts.concat()).boxed()
}

/// A sample of `seeds`, edited by one to eight mutations.
pub fn mutated(seeds: Vec<Vec<u8>>, dict: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty(), "no seeds to mutate");
    (proptest::sample::select(seeds), vec(mutation(), 1..=8))
        .prop_map(move |(mut data, edits)| {
            for m in &edits {
                apply(&mut data, m, dict);
            }
            data
        })
        .boxed()
}

/// The inputs of a byte decoder: random bytes (1 in 6), token soup (1 in 6) and mutated
/// samples (4 in 6); the samples themselves now and then, unedited.
pub fn inputs(seeds: Vec<Vec<u8>>, dict: &'static [&'static [u8]], max_random: usize) -> BoxedStrategy<Bytes> {
    let whole = proptest::sample::select(seeds.clone());
    prop_oneof![
        1 => random_bytes(max_random),
        1 => token_soup(dict, 24),
        4 => mutated(seeds, dict),
        1 => whole,
    ]
    .prop_map(Bytes)
    .boxed()
}

/// A scratch directory for targets that read files: in memory (`/dev/shm`) where there is
/// one (rewriting a file on a busy disk costs milliseconds a case), else the default temp dir.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("a scratch directory")
}

/// Cases running now, by thread: when each started, what it is and its input.
type Running = Mutex<HashMap<ThreadId, (Instant, &'static str, Vec<u8>)>>;

fn running() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    let running = RUNNING.get_or_init(Running::default);
    WATCHDOG.get_or_init(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Ok(cases) = RUNNING.get().expect("initialised").lock() else { continue };
                for (started, what, input) in cases.values() {
                    if started.elapsed() > Duration::from_secs(HANG_SECS) {
                        eprintln!("HANG: {what} still running after {HANG_SECS} s on input {:?}", Bytes(input.clone()));
                        std::process::exit(101);
                    }
                }
            }
        });
    });
    running
}

/// Runs one case of target `what` on `input` under the hang watchdog.
pub fn bounded<T>(what: &'static str, input: &[u8], f: impl FnOnce() -> T) -> T {
    let me = std::thread::current().id();
    running().lock().unwrap_or_else(|e| e.into_inner()).insert(me, (Instant::now(), what, input.to_vec()));
    // Removed on the way out, a panic's unwinding included.
    struct Done(ThreadId);
    impl Drop for Done {
        fn drop(&mut self) {
            running().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
        }
    }
    let _done = Done(me);
    f()
}
