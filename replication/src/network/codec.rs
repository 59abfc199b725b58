//! MessagePack encoding of openraft messages inside [`pb::Envelope`](super::pb::Envelope).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pb::Envelope;

pub fn encode<T: Serialize>(v: &T) -> Envelope {
    Envelope { data: rmp_serde::to_vec_named(v).expect("raft messages always encode") }
}

pub fn decode<T: DeserializeOwned>(e: &Envelope) -> Result<T, tonic::Status> {
    rmp_serde::from_slice(&e.data)
        .map_err(|err| tonic::Status::invalid_argument(format!("undecodable raft message: {err}")))
}
