//! How the stores encode what they persist (log entries, votes, metadata, snapshot headers):
//! MessagePack with field names, so a field added later still decodes old records.

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(std::io::Error::other)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::io::Result<T> {
    rmp_serde::from_slice(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
