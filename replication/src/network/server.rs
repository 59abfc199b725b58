//! The server side of the transport: feeds incoming RPCs to the local Raft.
//!
//! Besides openraft's own RPCs it answers two calls followers make to the leader: forwarded
//! client writes, and the read index for linearizable reads served by followers; and
//! `NodeInfo`, which says who answers here and which format versions its binary reads.
//!
//! A handler returns an error status (`UNAVAILABLE`, `INVALID_ARGUMENT`, `FAILED_PRECONDITION`)
//! only before it acts on a request: the client counts such an answer as "not delivered"
//! (see [`super::client`]), which is what makes retrying a refused forwarded write safe.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use super::FROM_HEADER;
use super::codec::{decode, encode};
use super::fault::Faults;
use super::pb::raft_transport_server::RaftTransport;
use super::pb::{Envelope, NodeInfoRequest, NodeInfoResponse, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use super::transfer::{Incoming, SnapshotOffer, Transfers};
use crate::raft::Raft;
use crate::snapshot::SnapshotDir;
use crate::types::{Command, CommandResult, NodeId, SnapshotMeta, TypeConfig, Vote};
use quorumdb_state::format::FormatVersion;
use quorumdb_state::now_ms;

/// The leader's answer to a forwarded write.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ForwardReply {
    Done(CommandResult),
    /// This node is not (or no longer) the leader; the caller retries with the hint.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The entry was appended but leadership changed before it committed: outcome unknown.
    OutcomeUnknown(String),
    Failed(String),
}

/// The Raft transport service of one node.
#[derive(Clone)]
pub struct TransportService {
    me: NodeId,
    /// The newest format version this node's binary reads (what `NodeInfo` reports).
    max_format: FormatVersion,
    raft: Raft,
    faults: Faults,
    snapshot_dir: PathBuf,
    /// When this node last heard from a leader (ms since epoch), for stale-read reporting.
    last_leader_contact: Arc<AtomicU64>,
    transfers: Transfers,
}

impl TransportService {
    pub fn new(
        (me, max_format): (NodeId, FormatVersion),
        raft: Raft,
        faults: Faults,
        snapshot_dir: PathBuf,
        last_leader_contact: Arc<AtomicU64>,
        transfers: Transfers,
    ) -> Self {
        Self { me, max_format, raft, faults, snapshot_dir, last_leader_contact, transfers }
    }

    fn check_inbound<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let from = req.metadata().get(FROM_HEADER).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok());
        if self.faults.drops_inbound(from) {
            return Err(Status::unavailable("fault rule drops messages from this peer"));
        }
        Ok(())
    }
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft node stopped: {e}"))
}

fn io_status(e: std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::InvalidData => Status::data_loss(e.to_string()),
        std::io::ErrorKind::InvalidInput => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// Receives the rest of an offered snapshot into its incoming directory; returns once every
/// file is complete and checked.
async fn receive_snapshot(
    dir: PathBuf,
    transfers: &Transfers,
    mut stream: Streaming<SnapshotChunk>,
) -> Result<(Vote, SnapshotMeta, PathBuf), Status> {
    let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
    let (from, vote, meta): (NodeId, Vote, SnapshotMeta) =
        decode(&Envelope { data: first.header.clone(), format: super::codec::ENVELOPE_FORMAT })?;
    let index = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
    let d = dir.clone();
    let opened = tokio::task::spawn_blocking(move || Incoming::open(&d, index))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::failed_precondition(format!("no offered snapshot at {index}: {e}")))?;
    let mut tracker = transfers.start("receive", from, index, opened.manifest.total_bytes(), opened.received_bytes());
    let dir = opened.dir.clone();
    let result = async {
        let mut incoming = opened;
        let mut chunk = Some(first);
        loop {
            let c = match chunk.take() {
                Some(c) => c,
                None => stream.next().await.ok_or_else(|| Status::aborted("snapshot stream ended early"))??,
            };
            if crc32fast::hash(&c.data) != c.crc32 {
                return Err(Status::data_loss(format!(
                    "snapshot chunk of file {} at {} failed its CRC",
                    c.file, c.offset
                )));
            }
            let done = c.done;
            if !c.data.is_empty() {
                // File writes (and the fsyncs every 8 MiB and at file ends) off the runtime.
                let mut inc = incoming;
                let (inc, written) = tokio::task::spawn_blocking(move || {
                    let r = inc.write(c.file, c.offset, &c.data);
                    (inc, r)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
                tracker.advance(inc.received_bytes());
                incoming = inc;
                written.map_err(io_status)?;
            }
            if done {
                if !incoming.is_complete() {
                    return Err(Status::failed_precondition("snapshot stream ended before every file was sent"));
                }
                return incoming.finish().map_err(io_status);
            }
        }
    }
    .await;
    tracker.finish(result.is_ok());
    result.map(|()| (vote, meta, dir))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.append_entries(rpc).await.map_err(fatal)?;
        if self.raft.current_leader().await.is_some() {
            self.last_leader_contact.store(now_ms(), Ordering::Relaxed);
        }
        Ok(Response::new(encode(&resp)?))
    }

    async fn vote(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)?))
    }

    async fn pre_vote(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.pre_vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)?))
    }

    async fn transfer_leader(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: TransferLeaderRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.handle_transfer_leader(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)?))
    }

    async fn offer_snapshot(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let offer: SnapshotOffer = decode(req.get_ref())?;
        let dir = self.snapshot_dir.clone();
        let resume = tokio::task::spawn_blocking(move || Incoming::offer(&dir, &offer.manifest))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(io_status)?;
        Ok(Response::new(encode(&resume)?))
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let (vote, meta, path) = receive_snapshot(self.snapshot_dir.clone(), &self.transfers, req.into_inner()).await?;
        tracing::info!(%meta, "received snapshot; installing");
        let snapshot = openraft::storage::Snapshot { meta, snapshot: SnapshotDir { path: path.clone() } };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await;
        // An installed snapshot was moved to its final name; what is left was refused (older
        // than this node's state).
        if tokio::fs::metadata(&path).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&path).await;
        }
        Ok(Response::new(encode(&resp.map_err(fatal)?)?))
    }

    async fn forward_write(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let cmd: Command = decode(req.get_ref())?;
        let reply = match self.raft.client_write(cmd).await {
            Ok(r) => ForwardReply::Done(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                ForwardReply::NotLeader { leader: f.leader_id }
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
                ForwardReply::OutcomeUnknown(f.to_string())
            }
            // The leader stopped (a failed disk) after taking the entry: the followers may still
            // commit it under the next leader.
            Err(RaftError::Fatal(f)) => ForwardReply::OutcomeUnknown(format!("the leader stopped: {f}")),
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Ok(Response::new(encode(&reply)?))
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        self.check_inbound(&req)?;
        let policy = if req.get_ref().policy == 1 { ReadPolicy::LeaseRead } else { ReadPolicy::ReadIndex };
        match self.raft.get_read_linearizer(policy).await {
            Ok(lin) => Ok(Response::new(ReadIndexResponse { index: lin.read_log_id().index() })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn node_info(&self, req: Request<NodeInfoRequest>) -> Result<Response<NodeInfoResponse>, Status> {
        self.check_inbound(&req)?;
        Ok(Response::new(NodeInfoResponse {
            id: self.me,
            max_format: u32::from(self.max_format),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
