//! The encoding of openraft messages and our own transport payloads inside
//! [`pb::Envelope`](super::pb::Envelope): MessagePack with field names in `data`, and the
//! payload's format version in `format` (see [`quorumdb_state::format`]; every version so far
//! has the same bodies, so version 0 senders and version 1 receivers understand each other).

use quorumdb_state::format;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pb::Envelope;

/// The format version this binary writes into envelopes.
pub const ENVELOPE_FORMAT: u32 = 1;

pub fn encode<T: Serialize>(v: &T) -> Result<Envelope, tonic::Status> {
    let data = format::encode_named(v).map_err(|e| tonic::Status::internal(format!("cannot encode a message: {e}")))?;
    Ok(Envelope { data, format: ENVELOPE_FORMAT })
}

pub fn decode<T: DeserializeOwned>(e: &Envelope) -> Result<T, tonic::Status> {
    if e.format > u32::from(format::CURRENT) {
        return Err(tonic::Status::invalid_argument(format!(
            "message format {} is newer than this node reads ({})",
            e.format,
            format::CURRENT
        )));
    }
    format::decode_named(&e.data)
        .map_err(|err| tonic::Status::invalid_argument(format!("undecodable raft message: {err}")))
}
