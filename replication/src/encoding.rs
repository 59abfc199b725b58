//! How the stores encode the records they persist (log entries, the vote, the committed and
//! purged log ids, the state's applied log id, membership and checksum): MessagePack with
//! field names, so a field added later (with a default) still decodes old records. The
//! layout of each store carries its own version (see [`crate::log_store`] and
//! [`crate::state_machine`]); `docs/formats.md` gives every field.

pub fn encode<T: serde::Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    quorumdb_state::format::encode_named(v).map_err(std::io::Error::from)
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::io::Result<T> {
    quorumdb_state::format::decode_named(b).map_err(std::io::Error::from)
}
