//! The state machine's own commands (tag [`SYSTEM_TAG`]), and exactly-once writes.
//!
//! - [`SetFormat`] moves the cluster's format version (see [`crate::format`]); it is written in
//!   a version-1 envelope whatever the cluster's version, so every binary reads it.
//! - [`Once`] (format 2) wraps an application command with a client's request id: the first
//!   time the id is applied, the inner command is applied and its result remembered under the
//!   id, in the replicated state, until [`ONCE_TTL_MS`] after the proposer's clock said; a
//!   command carrying a remembered id changes nothing and answers the remembered result. So a
//!   client that retries after a timeout or an unknown outcome never applies its write twice
//!   (the Raft dissertation's client sessions, §6.3, keyed by request instead of by session).
//!   Expired records are purged a few at a time by later `Once` commands, deterministically
//!   (the clock is the command's, not the node's).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult};
use crate::format::{self, FormatError, FormatVersion, SYSTEM_TAG, SetFormat};

/// The first format version that has [`Once`].
pub const ONCE_FORMAT: FormatVersion = 2;
/// Longest request id, in bytes.
pub const MAX_ID_LEN: usize = 255;
/// How long a request id is remembered after it was proposed.
pub const ONCE_TTL_MS: u64 = 10 * 60 * 1000;
/// Most expired records one command purges.
pub const PURGE_PER_COMMAND: usize = 32;
/// Where a request id's record is kept: this prefix, then the id.
pub const ONCE_PREFIX: &[u8] = b"_sys/once/";
/// The expiry index: this prefix, the expiry (ms, big-endian), then the id; empty values.
pub const ONCE_EXPIRY_PREFIX: &[u8] = b"_sys/once-exp/";

/// A system command of format 2 or later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemCommand {
    SetFormat(SetFormat),
    Once(Once),
}

/// An application command applied at most once per request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Once {
    /// The client's request id (an HTTP `Idempotency-Key`, a gRPC `request_id`), plus `#n`
    /// for the n-th command one request proposes.
    pub id: String,
    /// A hash of the request as the client sent it: the same id with another request is
    /// refused, not answered with the first request's result.
    pub fingerprint: u64,
    /// The proposer's clock, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The wrapped command, tag included.
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
}

/// What is remembered of an applied request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceRecord {
    pub expires_ms: u64,
    pub fingerprint: u64,
    pub result: CommandResult,
}

impl Once {
    /// Checks a client's request id before anything is proposed.
    pub fn check_id(id: &str) -> Result<(), String> {
        if id.is_empty() {
            return Err("the request id is empty".into());
        }
        if id.len() > MAX_ID_LEN {
            return Err(format!("the request id is {} bytes; the limit is {MAX_ID_LEN}", id.len()));
        }
        if id.chars().any(char::is_control) {
            return Err("the request id has control characters".into());
        }
        Ok(())
    }

    /// The log command: the system tag, then a version-`version` envelope (at least
    /// [`ONCE_FORMAT`]).
    pub fn command(self, version: FormatVersion) -> Result<Command, FormatError> {
        if version < ONCE_FORMAT {
            return Err(FormatError::Encode(format!(
                "request ids need cluster format {ONCE_FORMAT}; the cluster is at {version} (finish the upgrade)"
            )));
        }
        Ok(crate::tagged(SYSTEM_TAG, &format::encode(version, &SystemCommand::Once(self))?))
    }

    pub fn record_key(id: &str) -> Vec<u8> {
        [ONCE_PREFIX, id.as_bytes()].concat()
    }

    pub fn expiry_key(expires_ms: u64, id: &str) -> Vec<u8> {
        [ONCE_EXPIRY_PREFIX, &expires_ms.to_be_bytes(), id.as_bytes()].concat()
    }
}

/// A client request's id, given to each command the request proposes as `id#0`, `id#1`, …
/// (a request re-sent after a lost answer proposes the same sequence, so each of its commands
/// finds its own record).
#[derive(Debug)]
pub struct RequestId {
    id: String,
    fingerprint: u64,
    next: AtomicU32,
}

impl RequestId {
    /// `id` as the client gave it; `fingerprint` a hash of the request ([`fingerprint`]).
    pub fn new(id: &str, fingerprint: u64) -> Result<Self, String> {
        Once::check_id(id)?;
        if id.len() + 11 > MAX_ID_LEN {
            return Err(format!("the request id is {} bytes; the limit is {}", id.len(), MAX_ID_LEN - 11));
        }
        Ok(Self { id: id.to_string(), fingerprint, next: AtomicU32::new(0) })
    }

    /// An id a node makes up for a write it forwards to the leader on a client's behalf
    /// (pgwire, RESP, any write without a client id), so the node itself may re-send it when
    /// the leader's answer is lost: `_n<node>.<start of this process, µs>.<counter>`.
    pub fn internal(node: u64) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static BOOT: OnceLock<u64> = OnceLock::new();
        let boot = *BOOT.get_or_init(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self { id: format!("_n{node}.{boot}.{n}"), fingerprint: 0, next: AtomicU32::new(0) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps the request's next command.
    pub fn wrap(&self, command: Command, version: FormatVersion, now_ms: u64) -> Result<Command, FormatError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Once { id: format!("{}#{n}", self.id), fingerprint: self.fingerprint, now_ms, command: command.0 }
            .command(version)
    }
}

impl SystemCommand {
    /// Decodes the payload of a system command (after its tag): a version-1 envelope is a
    /// [`SetFormat`], a later one a [`SystemCommand`].
    pub fn decode(payload: &[u8]) -> Result<Self, FormatError> {
        let (version, body) = format::split(payload)?;
        if version < ONCE_FORMAT {
            return format::decode_named(body).map(SystemCommand::SetFormat);
        }
        format::decode_named(body)
    }
}

impl OnceRecord {
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        format::encode(ONCE_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let (_, body) = format::split(bytes)?;
        format::decode_named(body)
    }
}

/// FNV-1a, 64 bits: the fingerprint of a request's bytes (stable across versions).
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_round_trips_and_set_format_still_decodes() {
        let once = Once { id: "req-1#0".into(), fingerprint: 7, now_ms: 1_000, command: vec![b'k', 1, 2] };
        let cmd = once.clone().command(ONCE_FORMAT).unwrap();
        assert_eq!(cmd.0[0], SYSTEM_TAG);
        assert_eq!(SystemCommand::decode(&cmd.0[1..]).unwrap(), SystemCommand::Once(once.clone()));
        let set = SetFormat { version: 2 }.command().unwrap();
        assert_eq!(SystemCommand::decode(&set.0[1..]).unwrap(), SystemCommand::SetFormat(SetFormat { version: 2 }));
        assert!(once.command(1).is_err(), "a format-1 cluster cannot carry request ids");
    }

    #[test]
    fn ids_are_checked_and_keys_sort_by_expiry() {
        assert!(Once::check_id("abc").is_ok());
        assert!(Once::check_id("").is_err());
        assert!(Once::check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(Once::check_id("a\nb").is_err());
        assert!(Once::expiry_key(255, "z") < Once::expiry_key(256, "a"));
        let r = OnceRecord { expires_ms: 9, fingerprint: 1, result: CommandResult::Applied(vec![1]) };
        assert_eq!(OnceRecord::decode(&r.encode().unwrap()).unwrap(), r);
    }

    #[test]
    fn fingerprints_separate_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"x"]), fingerprint(&[b"x"]));
    }
}
