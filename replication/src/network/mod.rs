//! The Raft transport over tonic gRPC, and the fault layer tests and the dashboard use.
//!
//! Owns: the client side openraft drives ([`NetworkFactory`]), the server side that feeds
//! incoming RPCs to the local Raft ([`TransportService`]), the encoding of openraft messages
//! ([`codec`]), per-peer fault injection ([`Faults`]) and snapshot transfers ([`transfer`]):
//! snapshot files travel as a resumable stream of CRC-checked chunks, so memory stays bounded
//! whatever the snapshot size and a cut-off transfer continues where it stopped.

mod client;
pub mod codec;
mod fault;
mod server;
mod tls;
pub mod transfer;

pub mod pb {
    tonic::include_proto!("quorumdb.raft");
}

pub use client::{NetworkFactory, PeerClient, TransportError, check_peer_addr};
pub use fault::{FaultRules, Faults, Outbound};
pub use server::{ForwardReply, TransportService};
pub use tls::PeerTls;
pub use transfer::{TransferStatus, Transfers};

/// gRPC metadata key naming the sending node, so receivers can apply inbound faults.
pub const FROM_HEADER: &str = "x-quorumdb-from";
