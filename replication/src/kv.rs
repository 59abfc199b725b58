//! The built-in key-value table: the first [`Application`] on the replicated state machine.
//!
//! Owns the `k/`, `kx/` and `kt/` key prefixes of the state. Commands are the plain `set`,
//! `delete` and compare-and-set of the HTTP/gRPC API plus the Redis-shaped ones the RESP
//! surface needs: conditional set with expiry ([`KvCommand::Put`]), multi-key delete and set,
//! integer increment and the purge of expired keys. Reads go straight to the applied state
//! through a [`StateReader`].
//!
//! # Layout
//! - `k/<key>` → the value, raw bytes, exactly what `GET /v1/kv/<key>` returns.
//! - `kx/<key>` → when the key expires: milliseconds since the Unix epoch, `u64` big-endian.
//!   No `kx/` entry: the key never expires.
//! - `kt/<expiry: u64 big-endian><key>` → empty: the same expiry ordered by time, so the purge
//!   finds the keys that are due without scanning the table.
//!
//! `kx/` and `kt/` are siblings of `k/`, not inside it, because every byte string is a valid user
//! key: nothing under `k/` could be reserved.
//!
//! # Format
//! Commands and responses are version-0 positional MessagePack (structs as arrays in field
//! order, enum variants by name) or versioned envelopes with field names (see
//! [`quorumdb_state::format`]); a command is answered in its own version. Version-0 rejections
//! were the message as plain text; later ones are a [`Rejection`] with a SQLSTATE (`22P02` not
//! an integer, `22003` overflow). `docs/formats.md` gives every field.
//!
//! # To ensure correctness
//! - **Apply never reads a clock.** A command whose outcome depends on whether a key is still
//!   live (`NX`/`XX`, `INCR`, `DEL`'s count, compare-and-set, the previous value it reports)
//!   carries its proposer's clock (`now_ms`), and apply compares expiries with that. Every
//!   replica applies the same command with the same `now_ms`, so they agree. Commands logged
//!   before expiry existed have no `now_ms` and see every stored key as live, as they did then.
//! - **Expiry entries travel with their key.** `kx/<key>` exists exactly when
//!   `kt/<t><key>` exists with the same `t`, and only while `k/<key>` exists: every command that
//!   writes or removes a key goes through [`write_key`] or [`remove_key`], which keep the three
//!   together.
//! - **Reads use the reader's clock.** A key whose expiry has passed reads as absent on every
//!   surface (HTTP, gRPC, RESP, listing), even before a command removes it. A command that
//!   meets an expired key removes it; the rest are removed by [`KvCommand::PurgeExpired`], which
//!   the leader proposes when it sees keys due.

use quorumdb_state::format::{self, FormatError, FormatVersion};
use quorumdb_state::{Application, Applied, Command, Rejection, StateTxn, prefix_end, tagged};
use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

pub use quorumdb_state::now_ms;

use crate::state_machine::{PinnedView, StateReader};

/// The [`Router`](crate::Router) tag of KV commands.
pub const TAG: u8 = b'k';

/// Where KV keys live in the state machine's keyspace.
pub const PREFIX: &[u8] = b"k/";
/// Expiry of a key, by key.
const EXPIRY_BY_KEY: &[u8] = b"kx/";
/// Expiry of a key, by time.
const EXPIRY_BY_TIME: &[u8] = b"kt/";

/// Largest key the KV table accepts, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// The rejection of an increment on a value that is not a 64-bit decimal integer.
pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
/// The rejection of an increment whose result does not fit in 64 bits.
pub const OVERFLOW: &str = "increment or decrement would overflow";
/// SQLSTATEs of those rejections.
const NOT_AN_INTEGER_CODE: &str = "22P02";
const OVERFLOW_CODE: &str = "22003";

/// A KV command as it is stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key`, removing any expiry.
    Set {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(default)]
        now_ms: Option<u64>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(default)]
        now_ms: Option<u64>,
    },
    /// Sets `key` to `value` only if its current value is `expected` (`None`: key absent).
    CompareAndSet {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected: Option<ByteBuf>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(default)]
        now_ms: Option<u64>,
    },
    /// Redis `SET`: sets `key` if `condition` holds, with `expiry`.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        condition: Condition,
        expiry: Expiry,
        now_ms: u64,
    },
    /// Removes every key of `keys` (duplicates allowed); answers how many were live.
    DeleteMany { keys: Vec<ByteBuf>, now_ms: u64 },
    /// Sets every pair, in order, atomically; removes their expiries.
    SetMany { pairs: Vec<(ByteBuf, ByteBuf)>, now_ms: u64 },
    /// Adds `delta` to the decimal integer at `key` (absent: 0), keeping its expiry.
    IncrBy {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        delta: i64,
        now_ms: u64,
    },
    /// Removes up to `limit` keys whose expiry is at or before `now_ms`; answers how many.
    PurgeExpired { now_ms: u64, limit: u32 },
}

/// When a [`KvCommand::Put`] takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Always,
    /// Only if the key is absent (Redis `NX`).
    IfAbsent,
    /// Only if the key is present (Redis `XX`).
    IfPresent,
}

/// The expiry a [`KvCommand::Put`] leaves on its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// No expiry.
    Never,
    /// Whatever the key had (Redis `KEEPTTL`).
    Keep,
    /// At this time, in ms since the Unix epoch. A time not after the command's `now_ms`
    /// removes the key.
    At(u64),
}

/// The result of a KV command, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The command took effect; `previous` is the value it replaced or removed.
    Done { previous: Option<ByteBuf> },
    /// A compare-and-set (or a `Put`'s condition) found another value (or none) and changed
    /// nothing.
    CasFailed { current: Option<ByteBuf> },
    /// How many keys the command removed.
    Count { n: u64 },
    /// The value an increment produced.
    Integer { value: i64 },
}

impl KvCommand {
    /// A plain set, stamped with this node's clock.
    pub fn set(key: Vec<u8>, value: Vec<u8>) -> Self {
        Self::Set { key, value, now_ms: Some(now_ms()) }
    }

    /// A delete, stamped with this node's clock.
    pub fn delete(key: Vec<u8>) -> Self {
        Self::Delete { key, now_ms: Some(now_ms()) }
    }

    /// A compare-and-set, stamped with this node's clock.
    pub fn compare_and_set(key: Vec<u8>, expected: Option<Vec<u8>>, value: Vec<u8>) -> Self {
        Self::CompareAndSet { key, expected: expected.map(ByteBuf::from), value, now_ms: Some(now_ms()) }
    }

    /// The user keys the command names (none for the purge).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Self::Set { key, .. }
            | Self::Delete { key, .. }
            | Self::CompareAndSet { key, .. }
            | Self::Put { key, .. }
            | Self::IncrBy { key, .. } => vec![key],
            Self::DeleteMany { keys, .. } => keys.iter().map(|k| &k[..]).collect(),
            Self::SetMany { pairs, .. } => pairs.iter().map(|(k, _)| &k[..]).collect(),
            Self::PurgeExpired { .. } => vec![],
        }
    }

    /// Encodes the command for the log in `version`, tagged for the [`Router`](crate::Router).
    pub fn encode(&self, version: FormatVersion) -> Result<Command, FormatError> {
        Ok(tagged(TAG, &encode_in(version, self)?))
    }

    /// Decodes a command (without its tag) of any version; returns it with its version.
    pub fn decode(bytes: &[u8]) -> Result<(Self, FormatVersion), FormatError> {
        decode_any(bytes)
    }
}

impl KvResponse {
    /// Encodes a response in `version` (the version of the command it answers).
    pub fn encode(&self, version: FormatVersion) -> Result<Vec<u8>, FormatError> {
        encode_in(version, self)
    }

    /// Decodes a response of any version.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        decode_any(bytes).map(|(r, _)| r)
    }
}

/// Version 0: positional MessagePack; later: a versioned envelope with field names.
fn encode_in<T: Serialize>(version: FormatVersion, value: &T) -> Result<Vec<u8>, FormatError> {
    if version == format::LEGACY { format::encode_positional(value) } else { format::encode(version, value) }
}

fn decode_any<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, FormatVersion), FormatError> {
    let (version, body) = format::split(bytes)?;
    Ok((format::decode_named(body)?, version))
}

/// A rejection in the form a proposer of `version` reads: text in version 0.
fn reject(version: FormatVersion, code: &str, message: &str) -> Vec<u8> {
    if version == format::LEGACY { message.as_bytes().to_vec() } else { Rejection::new(code, message).encode(version) }
}

fn prefixed(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k
}

fn state_key(key: &[u8]) -> Vec<u8> {
    prefixed(PREFIX, key)
}

fn expiry_key(key: &[u8]) -> Vec<u8> {
    prefixed(EXPIRY_BY_KEY, key)
}

fn timeline_key(at: u64, key: &[u8]) -> Vec<u8> {
    let mut k = prefixed(EXPIRY_BY_TIME, &at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn decode_expiry(bytes: &[u8]) -> std::io::Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| std::io::Error::other("corrupt KV expiry entry"))?;
    Ok(u64::from_be_bytes(raw))
}

/// Whether a key with `expiry` is live at `now` (no `now`: a command logged before expiry
/// existed, which sees every stored key as live).
fn is_live(expiry: Option<u64>, now: Option<u64>) -> bool {
    match (expiry, now) {
        (Some(at), Some(now)) => now < at,
        _ => true,
    }
}

/// A key as one command sees it.
struct Stored {
    /// The value if the key is live.
    live: Option<Vec<u8>>,
    /// Whether anything is stored for the key (live or expired).
    exists: bool,
    expiry: Option<u64>,
}

fn load(txn: &dyn StateTxn, key: &[u8], now: Option<u64>) -> std::io::Result<Stored> {
    let Some(value) = txn.get(&state_key(key))? else {
        return Ok(Stored { live: None, exists: false, expiry: None });
    };
    let expiry = txn.get(&expiry_key(key))?.map(|b| decode_expiry(&b)).transpose()?;
    let live = is_live(expiry, now).then_some(value);
    Ok(Stored { live, exists: true, expiry })
}

/// Writes `key`'s value and moves its expiry from `old` to `new`.
fn write_key(txn: &mut dyn StateTxn, key: &[u8], value: &[u8], old: Option<u64>, new: Option<u64>) {
    txn.put(&state_key(key), value);
    if old == new {
        return;
    }
    if let Some(t) = old {
        txn.delete(&timeline_key(t, key));
    }
    match new {
        Some(t) => {
            txn.put(&expiry_key(key), &t.to_be_bytes());
            txn.put(&timeline_key(t, key), &[]);
        }
        None => txn.delete(&expiry_key(key)),
    }
}

/// Removes `key` and its expiry entries.
fn remove_key(txn: &mut dyn StateTxn, key: &[u8], expiry: Option<u64>) {
    txn.delete(&state_key(key));
    if let Some(t) = expiry {
        txn.delete(&expiry_key(key));
        txn.delete(&timeline_key(t, key));
    }
}

/// Parses a value as Redis does for `INCR`: an optional `-`, then decimal digits without
/// leading zeros (`0` itself excepted), fitting in an `i64`.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == bytes.len(),
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn byte_buf(v: Option<Vec<u8>>) -> Option<ByteBuf> {
    v.map(ByteBuf::from)
}

/// The KV table's apply logic.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvApp;

impl KvApp {
    fn run(
        cmd: KvCommand,
        txn: &mut dyn StateTxn,
    ) -> std::io::Result<Result<KvResponse, (&'static str, &'static str)>> {
        let response = match cmd {
            KvCommand::Set { key, value, now_ms } => {
                let s = load(txn, &key, now_ms)?;
                write_key(txn, &key, &value, s.expiry, None);
                KvResponse::Done { previous: byte_buf(s.live) }
            }
            KvCommand::Delete { key, now_ms } => {
                let s = load(txn, &key, now_ms)?;
                remove_key(txn, &key, s.expiry);
                KvResponse::Done { previous: byte_buf(s.live) }
            }
            KvCommand::CompareAndSet { key, expected, value, now_ms } => {
                let s = load(txn, &key, now_ms)?;
                if s.live.as_deref() == expected.as_deref().map(|v| &v[..]) {
                    write_key(txn, &key, &value, s.expiry, None);
                    KvResponse::Done { previous: byte_buf(s.live) }
                } else {
                    KvResponse::CasFailed { current: byte_buf(s.live) }
                }
            }
            KvCommand::Put { key, value, condition, expiry, now_ms } => {
                let s = load(txn, &key, Some(now_ms))?;
                let allowed = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => s.live.is_none(),
                    Condition::IfPresent => s.live.is_some(),
                };
                if !allowed {
                    return Ok(Ok(KvResponse::CasFailed { current: byte_buf(s.live) }));
                }
                let new = match expiry {
                    Expiry::Never => None,
                    Expiry::Keep => s.live.as_ref().and(s.expiry),
                    Expiry::At(t) => Some(t),
                };
                if is_live(new, Some(now_ms)) {
                    write_key(txn, &key, &value, s.expiry, new);
                } else if s.exists {
                    remove_key(txn, &key, s.expiry);
                }
                KvResponse::Done { previous: byte_buf(s.live) }
            }
            KvCommand::DeleteMany { keys, now_ms } => {
                let mut n = 0;
                for key in keys {
                    let s = load(txn, &key, Some(now_ms))?;
                    if s.exists {
                        remove_key(txn, &key, s.expiry);
                    }
                    n += u64::from(s.live.is_some());
                }
                KvResponse::Count { n }
            }
            KvCommand::SetMany { pairs, now_ms } => {
                for (key, value) in pairs {
                    let s = load(txn, &key, Some(now_ms))?;
                    write_key(txn, &key, &value, s.expiry, None);
                }
                KvResponse::Done { previous: None }
            }
            KvCommand::IncrBy { key, delta, now_ms } => {
                let s = load(txn, &key, Some(now_ms))?;
                let current = match &s.live {
                    Some(v) => match parse_integer(v) {
                        Some(i) => i,
                        None => return Ok(Err((NOT_AN_INTEGER_CODE, NOT_AN_INTEGER))),
                    },
                    None => 0,
                };
                let Some(value) = current.checked_add(delta) else {
                    return Ok(Err((OVERFLOW_CODE, OVERFLOW)));
                };
                let keep = s.live.as_ref().and(s.expiry);
                write_key(txn, &key, value.to_string().as_bytes(), s.expiry, keep);
                KvResponse::Integer { value }
            }
            KvCommand::PurgeExpired { now_ms, limit } => {
                let start = EXPIRY_BY_TIME.to_vec();
                let end = match now_ms.checked_add(1) {
                    Some(t) => prefixed(EXPIRY_BY_TIME, &t.to_be_bytes()),
                    None => prefix_end(EXPIRY_BY_TIME),
                };
                let mut due = Vec::new();
                txn.scan(&start, &end, &mut |k, _| {
                    due.push(k[EXPIRY_BY_TIME.len()..].to_vec());
                    due.len() < limit as usize
                })?;
                let mut n = 0;
                for entry in due {
                    let (at, key) = entry.split_at(8);
                    let at = decode_expiry(at)?;
                    // The by-key entry names the same time unless the invariant broke; remove
                    // the key only then, and the stray timeline entry in any case.
                    if txn.get(&expiry_key(key))?.map(|b| decode_expiry(&b)).transpose()? == Some(at) {
                        remove_key(txn, key, Some(at));
                        n += 1;
                    } else {
                        txn.delete(&timeline_key(at, key));
                    }
                }
                KvResponse::Count { n }
            }
        };
        Ok(Ok(response))
    }
}

impl Application for KvApp {
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> std::io::Result<Applied> {
        let (cmd, version) = match KvCommand::decode(command) {
            Ok(decoded) => decoded,
            Err(e) => {
                let version = format::split(command).map_or(format::LEGACY, |(v, _)| v);
                return Ok(Err(reject(version, Rejection::INTERNAL_CODE, &format!("undecodable KV command: {e}"))));
            }
        };
        Ok(match Self::run(cmd, txn)? {
            Ok(response) => {
                response.encode(version).map_err(|e| reject(version, Rejection::INTERNAL_CODE, &e.to_string()))
            }
            Err((code, message)) => Err(reject(version, code, message)),
        })
    }
}

fn live_in(view: &PinnedView<'_>, key: &[u8], now: u64) -> std::io::Result<Option<Vec<u8>>> {
    let Some(value) = view.get(&state_key(key))? else { return Ok(None) };
    let expiry = view.get(&expiry_key(key))?.map(|b| decode_expiry(&b)).transpose()?;
    Ok(is_live(expiry, Some(now)).then_some(value))
}

/// Reads one key from the applied state: its value if it is live at `now` (ms since the epoch).
pub fn get(reader: &StateReader, key: &[u8], now: u64) -> std::io::Result<Option<Vec<u8>>> {
    reader.view(|v| live_in(v, key, now))?
}

/// Reads several keys at one point in time; each value if the key is live at `now`.
pub fn get_many(reader: &StateReader, keys: &[&[u8]], now: u64) -> std::io::Result<Vec<Option<Vec<u8>>>> {
    reader.view(|v| keys.iter().map(|k| live_in(v, k, now)).collect())?
}

/// How long `key` lives at `now`: `None` if it is absent, `Some(None)` if it never expires,
/// else the milliseconds left.
pub fn time_to_live(reader: &StateReader, key: &[u8], now: u64) -> std::io::Result<Option<Option<u64>>> {
    reader.view(|v| {
        if v.get(&state_key(key))?.is_none() {
            return Ok(None);
        }
        match v.get(&expiry_key(key))?.map(|b| decode_expiry(&b)).transpose()? {
            None => Ok(Some(None)),
            Some(at) if now < at => Ok(Some(Some(at - now))),
            Some(_) => Ok(None),
        }
    })?
}

/// Calls `f(key, value, expiry)` for each key live at `now` that starts with `prefix`, from
/// `start` (inclusive) on, in key order, all read at one point in time, until `f` returns
/// `false`. Blocking: call it from a blocking thread for long scans.
pub fn for_each_live(
    reader: &StateReader,
    prefix: &[u8],
    start: &[u8],
    now: u64,
    mut f: impl FnMut(&[u8], &[u8], Option<u64>) -> bool,
) -> std::io::Result<()> {
    let from = state_key(if start > prefix { start } else { prefix });
    let end = prefix_end(&state_key(prefix));
    reader.view(|v| {
        let mut failed = None;
        v.scan_range(&from, &end, &mut |k, value| {
            let key = &k[PREFIX.len()..];
            let expiry = match v.get(&expiry_key(key)).and_then(|b| b.map(|b| decode_expiry(&b)).transpose()) {
                Ok(e) => e,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            };
            !is_live(expiry, Some(now)) || f(key, value, expiry)
        })?;
        failed.map_or(Ok(()), Err)
    })?
}

/// Lists up to `limit` keys live at `now` starting with `prefix`, from `start` on, with their
/// values.
pub fn scan(
    reader: &StateReader,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
    now: u64,
) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut rows = Vec::new();
    if limit == 0 {
        return Ok(rows);
    }
    for_each_live(reader, prefix, start, now, |k, v, _| {
        rows.push((k.to_vec(), v.to_vec()));
        rows.len() < limit
    })?;
    Ok(rows)
}

/// The earliest expiry of any stored key, live or not (`None`: no key expires).
pub fn next_expiry(reader: &StateReader) -> std::io::Result<Option<u64>> {
    let end = prefix_end(EXPIRY_BY_TIME);
    let mut first = None;
    reader.scan_range(EXPIRY_BY_TIME, &end, &mut |k, _| {
        first = Some(k[EXPIRY_BY_TIME.len()..].to_vec());
        false
    })?;
    first.map(|k| decode_expiry(&k[..8.min(k.len())])).transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use quorumdb_state::CommitHook;

    /// A state held in memory; rejected commands are rolled back as the real store does.
    #[derive(Default, Clone)]
    struct MemTxn(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateTxn for MemTxn {
        fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], value: &[u8]) {
            self.0.insert(key.to_vec(), value.to_vec());
        }
        fn delete(&mut self, key: &[u8]) {
            self.0.remove(key);
        }
        fn delete_range(&mut self, start: &[u8], end: &[u8]) {
            self.0.retain(|k, _| !quorumdb_state::keys::in_range(k, start, end));
        }
        fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
            for (k, v) in self.0.range(start.to_vec()..) {
                if !quorumdb_state::keys::in_range(k, start, end) || !f(k, v) {
                    break;
                }
            }
            Ok(())
        }
        fn log_index(&self) -> u64 {
            1
        }
        fn on_commit(&mut self, _f: CommitHook) {}
    }

    /// Applies `cmd` encoded in `version`; a rejection comes back as its message.
    fn apply_in(state: &mut MemTxn, cmd: &KvCommand, version: FormatVersion) -> Result<KvResponse, Rejection> {
        let mut txn = state.clone();
        match KvApp.apply(&cmd.encode(version).unwrap().0[1..], &mut txn).unwrap() {
            Ok(bytes) => {
                *state = txn;
                Ok(KvResponse::decode(&bytes).unwrap())
            }
            Err(e) => Err(Rejection::decode(&e)),
        }
    }

    fn apply(state: &mut MemTxn, cmd: KvCommand) -> Result<KvResponse, String> {
        apply_in(state, &cmd, format::CURRENT).map_err(|r| r.message)
    }

    #[test]
    fn every_version_applies_alike_and_answers_in_its_own() {
        for version in [format::LEGACY, format::CURRENT] {
            let mut s = MemTxn::default();
            let set = KvCommand::set(b"n".to_vec(), b"x".to_vec());
            let bytes = set.encode(version).unwrap().0;
            assert_eq!(bytes[1] == format::MARKER, version != format::LEGACY);
            assert_eq!(KvCommand::decode(&bytes[1..]).unwrap(), (set.clone(), version));
            assert_eq!(apply_in(&mut s, &set, version), Ok(done(None)));
            let incr = KvCommand::IncrBy { key: b"n".to_vec(), delta: 1, now_ms: 1 };
            let raw = KvApp.apply(&incr.encode(version).unwrap().0[1..], &mut s.clone()).unwrap().unwrap_err();
            // Version 0 answered rejections in plain text; later versions carry a SQLSTATE.
            assert_eq!(raw.first() == Some(&format::MARKER), version != format::LEGACY);
            let r = Rejection::decode(&raw);
            assert_eq!(r.message, NOT_AN_INTEGER);
            assert_eq!(r.code, if version == format::LEGACY { "22023" } else { "22P02" });
        }
        let mut s = MemTxn::default();
        let garbage = KvApp.apply(&[0xc1, 1, 0xff], &mut s).unwrap().unwrap_err();
        assert_eq!(Rejection::decode(&garbage).code, "XX000");
    }

    fn put(key: &str, value: &str, condition: Condition, expiry: Expiry, now_ms: u64) -> KvCommand {
        KvCommand::Put { key: key.into(), value: value.into(), condition, expiry, now_ms }
    }

    fn live(state: &MemTxn, key: &str, now: u64) -> Option<Vec<u8>> {
        load(state, key.as_bytes(), Some(now)).unwrap().live
    }

    fn done(previous: Option<&str>) -> KvResponse {
        KvResponse::Done { previous: previous.map(|p| ByteBuf::from(p.as_bytes())) }
    }

    #[test]
    fn conditions_see_expired_keys_as_absent_at_the_commands_time() {
        let mut s = MemTxn::default();
        assert_eq!(
            apply(&mut s, put("a", "1", Condition::IfPresent, Expiry::Never, 100)),
            Ok(KvResponse::CasFailed { current: None })
        );
        assert_eq!(apply(&mut s, put("a", "1", Condition::IfAbsent, Expiry::At(1_000), 100)), Ok(done(None)));
        // Still live at 999: NX fails, XX succeeds and (without KEEPTTL) drops the expiry.
        assert!(matches!(
            apply(&mut s, put("a", "2", Condition::IfAbsent, Expiry::Never, 999)),
            Ok(KvResponse::CasFailed { .. })
        ));
        assert_eq!(apply(&mut s, put("a", "2", Condition::IfPresent, Expiry::At(2_000), 999)), Ok(done(Some("1"))));
        // At 2000 the key is expired: NX succeeds and reports no previous value.
        assert_eq!(apply(&mut s, put("a", "3", Condition::IfAbsent, Expiry::Never, 2_000)), Ok(done(None)));
        assert_eq!(live(&s, "a", u64::MAX), Some(b"3".to_vec()));
        // The old timeline entry went with the expiry.
        assert_eq!(s.0.keys().filter(|k| k.starts_with(b"kt/") || k.starts_with(b"kx/")).count(), 0);
    }

    #[test]
    fn keep_ttl_and_past_expiry() {
        let mut s = MemTxn::default();
        apply(&mut s, put("a", "1", Condition::Always, Expiry::At(500), 0)).unwrap();
        apply(&mut s, put("a", "2", Condition::Always, Expiry::Keep, 10)).unwrap();
        assert_eq!(live(&s, "a", 499), Some(b"2".to_vec()));
        assert_eq!(live(&s, "a", 500), None);
        // An expiry not after the command's time removes the key.
        apply(&mut s, put("b", "1", Condition::Always, Expiry::At(10), 10)).unwrap();
        assert!(s.0.keys().all(|k| !k.ends_with(b"b")));
    }

    #[test]
    fn delete_many_counts_live_keys_once() {
        let mut s = MemTxn::default();
        apply(&mut s, put("a", "1", Condition::Always, Expiry::Never, 0)).unwrap();
        apply(&mut s, put("b", "1", Condition::Always, Expiry::At(50), 0)).unwrap();
        let keys = ["a", "a", "b", "c"].iter().map(|k| ByteBuf::from(k.as_bytes())).collect();
        assert_eq!(apply(&mut s, KvCommand::DeleteMany { keys, now_ms: 60 }), Ok(KvResponse::Count { n: 1 }));
        assert!(s.0.is_empty(), "the expired key and its entries are gone too: {:?}", s.0);
    }

    #[test]
    fn increments_check_the_value_and_overflow_and_keep_the_expiry() {
        let mut s = MemTxn::default();
        let incr = |delta| KvCommand::IncrBy { key: b"n".to_vec(), delta, now_ms: 10 };
        assert_eq!(apply(&mut s, incr(5)), Ok(KvResponse::Integer { value: 5 }));
        assert_eq!(apply(&mut s, incr(-7)), Ok(KvResponse::Integer { value: -2 }));
        apply(&mut s, put("n", "9223372036854775806", Condition::Always, Expiry::At(100), 10)).unwrap();
        assert_eq!(apply(&mut s, incr(1)), Ok(KvResponse::Integer { value: i64::MAX }));
        let before = s.0.clone();
        assert_eq!(apply(&mut s, incr(1)), Err(OVERFLOW.to_string()));
        assert_eq!(s.0, before, "a rejected increment changes nothing");
        assert_eq!(live(&s, "n", 99), Some(i64::MAX.to_string().into_bytes()));
        assert_eq!(live(&s, "n", 100), None, "INCR kept the expiry");
        apply(&mut s, KvCommand::set(b"t".to_vec(), b"01".to_vec())).unwrap();
        let t = KvCommand::IncrBy { key: b"t".to_vec(), delta: 1, now_ms: 10 };
        assert_eq!(apply(&mut s, t), Err(NOT_AN_INTEGER.to_string()));
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-12"), Some(-12));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1.5", b"9223372036854775808", b"abc"] {
            assert_eq!(parse_integer(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn set_many_is_atomic_and_clears_expiries() {
        let mut s = MemTxn::default();
        apply(&mut s, put("a", "0", Condition::Always, Expiry::At(100), 0)).unwrap();
        let pairs = [("a", "1"), ("b", "2"), ("a", "3")]
            .iter()
            .map(|(k, v)| (ByteBuf::from(k.as_bytes()), ByteBuf::from(v.as_bytes())))
            .collect();
        apply(&mut s, KvCommand::SetMany { pairs, now_ms: 1 }).unwrap();
        assert_eq!(live(&s, "a", 1_000), Some(b"3".to_vec()));
        assert_eq!(live(&s, "b", 1_000), Some(b"2".to_vec()));
    }

    #[test]
    fn purge_removes_only_due_keys_up_to_the_limit() {
        let mut s = MemTxn::default();
        for (i, at) in [10u64, 20, 30, 40].iter().enumerate() {
            apply(&mut s, put(&format!("k{i}"), "v", Condition::Always, Expiry::At(*at), 0)).unwrap();
        }
        apply(&mut s, put("forever", "v", Condition::Always, Expiry::Never, 0)).unwrap();
        assert_eq!(apply(&mut s, KvCommand::PurgeExpired { now_ms: 30, limit: 2 }), Ok(KvResponse::Count { n: 2 }));
        assert_eq!(apply(&mut s, KvCommand::PurgeExpired { now_ms: 30, limit: 10 }), Ok(KvResponse::Count { n: 1 }));
        let left: Vec<_> = s.0.keys().filter(|k| k.starts_with(b"k/")).cloned().collect();
        assert_eq!(left, vec![b"k/forever".to_vec(), b"k/k3".to_vec()]);
        assert_eq!(s.0.keys().filter(|k| k.starts_with(b"kt/")).count(), 1);
    }

    #[test]
    fn commands_logged_before_expiry_existed_still_decode() {
        // The shape `Set`, `Delete` and `CompareAndSet` had: no `now_ms`.
        #[derive(Serialize)]
        enum Old {
            Set {
                #[serde(with = "serde_bytes")]
                key: Vec<u8>,
                #[serde(with = "serde_bytes")]
                value: Vec<u8>,
            },
        }
        let bytes = rmp_serde::to_vec(&Old::Set { key: b"a".to_vec(), value: b"1".to_vec() }).unwrap();
        let cmd: KvCommand = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(cmd, KvCommand::Set { key: b"a".to_vec(), value: b"1".to_vec(), now_ms: None });
    }
}
