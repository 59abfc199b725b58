//! The client side of the transport: what openraft calls to reach a peer.
//!
//! One lazily connected HTTP/2 channel per peer address, shared by every RPC to that peer
//! (openraft's replication, heartbeat and snapshot clients, and forwarded writes). Errors map to
//! openraft's vocabulary: a peer we cannot connect to, or that a fault rule drops, is
//! `Unreachable` (openraft backs off); any other transport failure or a timeout is a
//! `NetworkError` (openraft retries).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::{Channel, Endpoint};

use super::FROM_HEADER;
use super::codec::{decode, encode};
use super::fault::{Faults, Outbound};
use super::pb::raft_transport_client::RaftTransportClient;
use super::pb::{Envelope, SnapshotChunk};
use super::transfer::{Resume, SnapshotOffer, Transfers};
use crate::snapshot::{Manifest, SnapshotDir};
use crate::types::{NodeId, TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Creates peer clients for openraft; also used for forwarded writes and read-index calls.
#[derive(Clone)]
pub struct NetworkFactory {
    me: NodeId,
    faults: Faults,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    transfers: Transfers,
    /// Snapshot streaming pace in bytes per second (0: as fast as the network goes).
    snapshot_rate: u64,
}

impl NetworkFactory {
    pub fn new(me: NodeId, faults: Faults, transfers: Transfers, snapshot_rate: u64) -> Self {
        Self { me, faults, channels: Default::default(), transfers, snapshot_rate }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// A client for the peer `target` at `addr` (host:port), over a cached channel.
    pub fn client(&self, target: NodeId, addr: &str) -> PeerClient {
        let mut channels = self.channels.lock().expect("channel cache lock");
        let channel = channels
            .entry(addr.to_string())
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .expect("node addresses are host:port")
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_lazy()
            })
            .clone();
        PeerClient {
            me: self.me,
            target,
            addr: addr.to_string(),
            faults: self.faults.clone(),
            transfers: self.transfers.clone(),
            snapshot_rate: self.snapshot_rate,
            client: RaftTransportClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.client(target, &node.addr)
    }
}

/// A connection to one peer.
#[derive(Clone)]
pub struct PeerClient {
    me: NodeId,
    pub target: NodeId,
    pub addr: String,
    faults: Faults,
    transfers: Transfers,
    snapshot_rate: u64,
    pub(crate) client: RaftTransportClient<Channel>,
}

/// Why an RPC to a peer failed, before openraft-specific mapping.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("network: {0}")]
    Network(String),
}

impl TransportError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<TypeConfig, E> {
        match self {
            Self::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&self)),
            Self::Network(_) => RPCError::Network(NetworkError::new(&self)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Self::Unreachable(_) => StreamingError::Unreachable(Unreachable::new(&self)),
            Self::Network(_) => StreamingError::Network(NetworkError::new(&self)),
        }
    }
}

fn from_status(s: tonic::Status) -> TransportError {
    match s.code() {
        tonic::Code::Unavailable => TransportError::Unreachable(s.message().to_string()),
        _ => TransportError::Network(format!("{}: {}", s.code(), s.message())),
    }
}

impl PeerClient {
    /// Applies fault rules, then wraps the request with our id and a deadline.
    pub(crate) async fn prepare<T>(&self, msg: T, ttl: Duration) -> Result<tonic::Request<T>, TransportError> {
        match self.faults.outbound(self.target) {
            Outbound::Drop => {
                return Err(TransportError::Unreachable(format!("fault rule drops messages to node {}", self.target)));
            }
            Outbound::Deliver(Some(delay)) => tokio::time::sleep(delay).await,
            Outbound::Deliver(None) => {}
        }
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(FROM_HEADER, self.me.to_string().parse().expect("numeric id"));
        req.set_timeout(ttl);
        Ok(req)
    }

    /// One unary call with the deadline enforced on our side too.
    pub(crate) async fn call<T, R, F, Fut>(&self, msg: T, ttl: Duration, f: F) -> Result<R, TransportError>
    where
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let req = self.prepare(msg, ttl).await?;
        match tokio::time::timeout(ttl, f(self.client.clone(), req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(from_status(status)),
            Err(_) => Err(TransportError::Network(format!("no answer from node {} within {ttl:?}", self.target))),
        }
    }

    async fn envelope_call<Req, Resp, F, Fut>(&self, req: &Req, ttl: Duration, f: F) -> Result<Resp, TransportError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<Envelope>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Envelope>, tonic::Status>>,
    {
        let env = self.call(encode(req), ttl, f).await?;
        decode(&env).map_err(|s| TransportError::Network(s.message().to_string()))
    }

    /// Offers the snapshot, then streams what the receiver does not have yet: file by file
    /// from its resume point, in CRC-checked chunks, at most four chunks in memory, paced to
    /// the configured rate.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        chunk_size: usize,
    ) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        let dir = snapshot.snapshot.path.clone();
        let d = dir.clone();
        let manifest = tokio::task::spawn_blocking(move || Manifest::read(&d))
            .await
            .map_err(|e| TransportError::Network(e.to_string()))?
            .map_err(|e| TransportError::Network(format!("reading snapshot manifest: {e}")))?;
        let offer = SnapshotOffer { from: self.me, manifest: manifest.clone() };
        let resume: Resume = self
            .envelope_call(&offer, Duration::from_secs(60), |mut c, r| async move { c.offer_snapshot(r).await })
            .await?;
        let files = manifest.files.clone();
        let total = manifest.total_bytes();
        let start: u64 = files.iter().take(resume.file as usize).map(|f| f.size).sum::<u64>() + resume.offset;
        let mut tracker = self.transfers.start("send", self.target, manifest.index(), total, start);
        let header = encode(&(self.me, vote, snapshot.meta.clone())).data;
        let rate = self.snapshot_rate;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(start);
        let producer = tokio::spawn(async move {
            let began = std::time::Instant::now();
            let mut header = Some(header);
            let mut position = start;
            for (i, entry) in files.iter().enumerate().skip(resume.file as usize) {
                let mut offset = if i == resume.file as usize { resume.offset } else { 0 };
                if offset >= entry.size {
                    continue;
                }
                let mut file = tokio::fs::File::open(dir.join(&entry.path)).await?;
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                while offset < entry.size {
                    let want = chunk_size.min((entry.size - offset) as usize);
                    let mut buf = vec![0u8; want];
                    file.read_exact(&mut buf).await?;
                    let chunk = SnapshotChunk {
                        header: header.take().unwrap_or_default(),
                        offset,
                        crc32: crc32fast::hash(&buf),
                        data: buf,
                        done: false,
                        file: i as u32,
                    };
                    offset += want as u64;
                    position += want as u64;
                    if tx.send(chunk).await.is_err() {
                        return Ok(position);
                    }
                    let _ = progress_tx.send(position);
                    if rate > 0 {
                        let due = Duration::from_secs_f64((position - start) as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(began.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            let last = SnapshotChunk {
                header: header.take().unwrap_or_default(),
                offset: 0,
                crc32: crc32fast::hash(&[]),
                data: Vec::new(),
                done: true,
                file: files.len() as u32,
            };
            let _ = tx.send(last).await;
            Ok::<_, std::io::Error>(position)
        });
        let req = self.prepare(tokio_stream::wrappers::ReceiverStream::new(rx), Duration::from_secs(24 * 3600)).await?;
        let mut client = self.client.clone();
        let mut call = std::pin::pin!(client.install_snapshot(req));
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                Ok(()) = progress_rx.changed() => tracker.advance(*progress_rx.borrow()),
            }
        };
        let sent = producer.await.map_err(|e| TransportError::Network(e.to_string()));
        let outcome = (|| {
            let env = result.map_err(from_status)?.into_inner();
            sent?.map_err(|e| TransportError::Network(format!("reading snapshot files: {e}")))?;
            decode(&env).map_err(|s| TransportError::Network(s.message().to_string()))
        })();
        if outcome.is_ok() {
            tracker.advance(total);
        }
        tracker.finish(outcome.is_ok());
        outcome
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.envelope_call(&rpc, option.soft_ttl(), |mut c, r| async move { c.append_entries(r).await })
            .await
            .map_err(TransportError::into_rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.envelope_call(&rpc, option.soft_ttl(), |mut c, r| async move { c.vote(r).await })
            .await
            .map_err(TransportError::into_rpc)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.envelope_call(&rpc, option.soft_ttl(), |mut c, r| async move { c.pre_vote(r).await })
            .await
            .map_err(TransportError::into_rpc)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk = option.snapshot_chunk_size().unwrap_or(SNAPSHOT_CHUNK).max(64 << 10);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.send_snapshot(vote, snapshot, chunk) => res.map_err(TransportError::into_streaming),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.envelope_call(&req, option.soft_ttl(), |mut c, r| async move { c.transfer_leader(r).await })
            .await
            .map_err(TransportError::into_rpc)
    }
}
