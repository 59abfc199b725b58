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
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

use super::FROM_HEADER;
use super::codec::{decode, encode};
use super::fault::{Faults, Outbound};
use super::pb::raft_transport_client::RaftTransportClient;
use super::pb::{Envelope, SnapshotChunk};
use crate::snapshot::SnapshotFile;
use crate::types::{NodeId, TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Creates peer clients for openraft; also used for forwarded writes and read-index calls.
#[derive(Clone)]
pub struct NetworkFactory {
    me: NodeId,
    faults: Faults,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl NetworkFactory {
    pub fn new(me: NodeId, faults: Faults) -> Self {
        Self { me, faults, channels: Default::default() }
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

    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        chunk_size: usize,
    ) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let path = snapshot.snapshot.path.clone();
        let header = encode(&(vote, snapshot.meta.clone())).data;
        let target = self.target;
        let producer = tokio::spawn(async move {
            let mut file = tokio::fs::File::open(&path).await?;
            let total = file.metadata().await?.len();
            let progress = metrics::gauge!("quorumdb_snapshot_send_bytes", "peer" => target.to_string());
            let mut offset = 0u64;
            let mut first = Some(header);
            loop {
                let mut buf = vec![0u8; chunk_size];
                let mut filled = 0;
                while filled < chunk_size {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                let done = offset + filled as u64 >= total;
                let chunk = SnapshotChunk {
                    header: first.take().unwrap_or_default(),
                    offset,
                    crc32: crc32fast::hash(&buf),
                    data: buf,
                    done,
                };
                offset += filled as u64;
                progress.set(offset as f64);
                if tx.send(chunk).await.is_err() || done {
                    return Ok::<_, std::io::Error>(offset);
                }
            }
        });
        let req = self.prepare(tokio_stream::wrappers::ReceiverStream::new(rx), Duration::from_secs(3600)).await?;
        let result = self.client.clone().install_snapshot(req).await;
        let sent = producer.await.map_err(|e| TransportError::Network(e.to_string()))?;
        let env = result.map_err(from_status)?.into_inner();
        sent.map_err(|e| TransportError::Network(format!("reading snapshot file: {e}")))?;
        decode(&env).map_err(|s| TransportError::Network(s.message().to_string()))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

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
