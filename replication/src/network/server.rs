//! The server side of the transport: feeds incoming RPCs to the local Raft.
//!
//! Besides openraft's own RPCs it answers two calls followers make to the leader: forwarded
//! client writes, and the read index for linearizable reads served by followers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::FROM_HEADER;
use super::codec::{decode, encode};
use super::fault::Faults;
use super::pb::raft_transport_server::RaftTransport;
use super::pb::{Envelope, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use crate::snapshot::SnapshotFile;
use crate::types::{Command, CommandResult, NodeId, Raft, SnapshotMeta, TypeConfig, Vote};

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

/// Milliseconds since the Unix epoch: the clock used for "last contact with the leader".
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The Raft transport service of one node.
#[derive(Clone)]
pub struct TransportService {
    raft: Raft,
    faults: Faults,
    snapshot_dir: PathBuf,
    /// When this node last heard from a leader (ms since epoch), for stale-read reporting.
    last_leader_contact: Arc<AtomicU64>,
}

impl TransportService {
    pub fn new(raft: Raft, faults: Faults, snapshot_dir: PathBuf, last_leader_contact: Arc<AtomicU64>) -> Self {
        Self { raft, faults, snapshot_dir, last_leader_contact }
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

async fn receive_snapshot(
    dir: &std::path::Path,
    mut stream: Streaming<SnapshotChunk>,
) -> Result<(Vote, SnapshotMeta, PathBuf), Status> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!("incoming-{}-{}.recv", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| Status::internal(e.to_string()))?;
        let mut header = None;
        let mut expected_offset = 0u64;
        let progress = metrics::gauge!("quorumdb_snapshot_receive_bytes");
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if header.is_none() {
                let h: (Vote, SnapshotMeta) = decode(&Envelope { data: chunk.header.clone() })?;
                header = Some(h);
            }
            if chunk.offset != expected_offset {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at {} but expected {expected_offset}",
                    chunk.offset
                )));
            }
            if crc32fast::hash(&chunk.data) != chunk.crc32 {
                return Err(Status::data_loss(format!("snapshot chunk at {} failed its checksum", chunk.offset)));
            }
            file.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            expected_offset += chunk.data.len() as u64;
            progress.set(expected_offset as f64);
            if chunk.done {
                file.sync_all().await.map_err(|e| Status::internal(e.to_string()))?;
                let (vote, meta) =
                    header.take().ok_or_else(|| Status::invalid_argument("snapshot stream without header"))?;
                return Ok((vote, meta));
            }
        }
        Err(Status::aborted("snapshot stream ended before its last chunk"))
    }
    .await;
    match result {
        Ok((vote, meta)) => Ok((vote, meta, path)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
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
        Ok(Response::new(encode(&resp)))
    }

    async fn vote(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)))
    }

    async fn pre_vote(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.pre_vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)))
    }

    async fn transfer_leader(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let rpc: TransferLeaderRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self.raft.handle_transfer_leader(rpc).await.map_err(fatal)?;
        Ok(Response::new(encode(&resp)))
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<Envelope>, Status> {
        self.check_inbound(&req)?;
        let (vote, meta, path) = receive_snapshot(&self.snapshot_dir, req.into_inner()).await?;
        tracing::info!(%meta, "received snapshot; installing");
        let snapshot = openraft::storage::Snapshot { meta, snapshot: SnapshotFile { path: path.clone() } };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await;
        // Installed snapshots are moved to their final name; remove what is left (a refused one).
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Response::new(encode(&resp.map_err(fatal)?)))
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
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Ok(Response::new(encode(&reply)))
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        self.check_inbound(&req)?;
        let policy = if req.get_ref().policy == 1 { ReadPolicy::LeaseRead } else { ReadPolicy::ReadIndex };
        match self.raft.get_read_linearizer(policy).await {
            Ok(lin) => Ok(Response::new(ReadIndexResponse { index: lin.read_log_id().index() })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}
