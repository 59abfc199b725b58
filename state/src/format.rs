//! Format versions: how every encoding that outlives a binary says which shape it has, and how
//! a cluster of mixed binaries agrees on which shapes may be written.
//!
//! # The versioned envelope
//! Application payloads (log commands, their responses and rejections, the SQL catalog) are
//! written as `0xC1, version, body`: `0xC1` is the one byte MessagePack never uses, so it cannot
//! begin an unversioned (version 0) payload, which is plain MessagePack. `version` is one byte
//! (1..=255); `body` is MessagePack with field names (structs as maps keyed by field name, enum
//! variants by name), so fields can be added (with a default) without a new version. Version 0
//! payloads are the encodings written before versions existed; each type documents its own
//! (`docs/formats.md` describes them all, field by field). Every decoder reads every version up
//! to [`CURRENT`] and refuses newer ones with [`FormatError::TooNew`].
//!
//! # The cluster's format version
//! A node may only *write* a version every node of the cluster can read, or replicas would
//! disagree about a command. The cluster's version lives in the replicated state (key
//! [`FORMAT_KEY`], absent = 0) and changes only through the log, by the system command
//! [`SetFormat`] (tag [`SYSTEM_TAG`]), which the leader proposes once every member reports that
//! its binary reads the new version. Proposers encode with the cluster's version (capped by
//! their own); apply answers in the version of the command it applies; a node asked to apply
//! a `SetFormat` above what its binary reads stops rather than diverge. During a rolling
//! upgrade, the cluster keeps writing the old version until the last node runs the new binary.
//!
//! Node-local files (the log store's records, the state's metadata, snapshot and dump
//! manifests) carry their own format number where their layout says so; see `docs/formats.md`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A format version. 0 is the unversioned encoding of the first releases.
pub type FormatVersion = u8;

/// The version of the encodings written before versions existed.
pub const LEGACY: FormatVersion = 0;
/// The newest version this binary reads and writes. Version 2 added the system command
/// [`crate::system::Once`] (exactly-once writes); version 3 the SQL step `PutRole` and the
/// catalog's roles (users, passwords as SCRAM verifiers, privileges); version 4 the SQL step
/// `PutView` and the catalog's views; every other body is as in version 1.
pub const CURRENT: FormatVersion = 4;
/// The first byte of a versioned payload (MessagePack's "never used" byte).
pub const MARKER: u8 = 0xC1;

/// Where the cluster's format version is kept in the replicated state: one byte.
pub const FORMAT_KEY: &[u8] = b"_sys/format";
/// The router tag of the state machine's own commands (never an application's).
pub const SYSTEM_TAG: u8 = b'_';

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("format version {version} is newer than this binary reads (up to {max}); upgrade it")]
    TooNew { version: FormatVersion, max: FormatVersion },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
}

impl From<FormatError> for std::io::Error {
    fn from(e: FormatError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Splits bytes into their version and body: a versioned envelope gives its version and what
/// follows it; anything else is a version-0 payload, whole.
pub fn split(bytes: &[u8]) -> Result<(FormatVersion, &[u8]), FormatError> {
    match bytes {
        [MARKER, version, body @ ..] => {
            if *version > CURRENT {
                return Err(FormatError::TooNew { version: *version, max: CURRENT });
            }
            if *version == LEGACY {
                return Err(FormatError::Decode("a versioned payload cannot be version 0".into()));
            }
            Ok((*version, body))
        }
        [MARKER] => Err(FormatError::Decode("a versioned payload without its version byte".into())),
        _ => Ok((LEGACY, bytes)),
    }
}

/// `value` as a versioned envelope of `version` (≥ 1): the marker, the version, then
/// MessagePack with field names.
pub fn encode<T: Serialize>(version: FormatVersion, value: &T) -> Result<Vec<u8>, FormatError> {
    if version == LEGACY || version > CURRENT {
        return Err(FormatError::Encode(format!("no versioned envelope for version {version}")));
    }
    let mut out = vec![MARKER, version];
    rmp_serde::encode::write_named(&mut out, value).map_err(|e| FormatError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes MessagePack with field names (the body of a versioned envelope, or a version-0
/// payload that was written with names).
pub fn decode_named<T: DeserializeOwned>(body: &[u8]) -> Result<T, FormatError> {
    rmp_serde::from_slice(body).map_err(|e| FormatError::Decode(e.to_string()))
}

/// MessagePack with field names, no envelope (version-0 payloads that were written so).
pub fn encode_named<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    rmp_serde::to_vec_named(value).map_err(|e| FormatError::Encode(e.to_string()))
}

/// MessagePack with structs as arrays (field order), no envelope: version-0 log commands and
/// their responses were written so.
pub fn encode_positional<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    rmp_serde::to_vec(value).map_err(|e| FormatError::Encode(e.to_string()))
}

/// The cluster's format version in a state read through `get` (absent: [`LEGACY`]).
pub fn cluster_format(get: impl Fn(&[u8]) -> std::io::Result<Option<Vec<u8>>>) -> std::io::Result<FormatVersion> {
    match get(FORMAT_KEY)? {
        None => Ok(LEGACY),
        Some(v) => match v.as_slice() {
            [version] => Ok(*version),
            _ => Err(FormatError::Decode(format!("the cluster format entry has {} bytes, not 1", v.len())).into()),
        },
    }
}

/// The system command that moves the cluster to a format version (never back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetFormat {
    pub version: FormatVersion,
}

impl SetFormat {
    /// The command as it goes into the log: the system tag, then a version-1 envelope.
    pub fn command(self) -> Result<crate::Command, FormatError> {
        Ok(crate::tagged(SYSTEM_TAG, &encode(1, &self)?))
    }

    /// Decodes the payload of a system command (after its tag).
    pub fn decode(payload: &[u8]) -> Result<Self, FormatError> {
        let (_, body) = split(payload)?;
        decode_named(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[test]
    fn envelopes_round_trip_and_legacy_bytes_pass_through() {
        let bytes = encode(1, &Sample { a: 7, b: None }).unwrap();
        assert_eq!(&bytes[..2], &[MARKER, 1]);
        let (v, body) = split(&bytes).unwrap();
        assert_eq!(v, 1);
        assert_eq!(decode_named::<Sample>(body).unwrap(), Sample { a: 7, b: None });
        // A positional MessagePack payload never starts with the marker.
        let legacy = encode_positional(&Sample { a: 7, b: None }).unwrap();
        assert_eq!(split(&legacy).unwrap(), (LEGACY, &legacy[..]));
    }

    #[test]
    fn newer_and_malformed_envelopes_are_refused() {
        assert_eq!(
            split(&[MARKER, CURRENT + 1, 0x80]),
            Err(FormatError::TooNew { version: CURRENT + 1, max: CURRENT })
        );
        assert!(matches!(split(&[MARKER]), Err(FormatError::Decode(_))));
        assert!(matches!(split(&[MARKER, 0]), Err(FormatError::Decode(_))));
        assert!(encode(0, &1u8).is_err());
    }

    #[test]
    fn a_field_added_later_decodes_from_older_bytes() {
        #[derive(serde::Serialize)]
        struct Older {
            a: u32,
        }
        let bytes = encode(1, &Older { a: 3 }).unwrap();
        let (_, body) = split(&bytes).unwrap();
        assert_eq!(decode_named::<Sample>(body).unwrap(), Sample { a: 3, b: None });
    }

    #[test]
    fn the_cluster_format_reads_from_state() {
        assert_eq!(cluster_format(|_| Ok(None)).unwrap(), LEGACY);
        assert_eq!(cluster_format(|_| Ok(Some(vec![1]))).unwrap(), 1);
        assert!(cluster_format(|_| Ok(Some(vec![1, 2]))).is_err());
        let cmd = SetFormat { version: 1 }.command().unwrap();
        assert_eq!(cmd.0[0], SYSTEM_TAG);
        assert_eq!(SetFormat::decode(&cmd.0[1..]).unwrap(), SetFormat { version: 1 });
    }
}
