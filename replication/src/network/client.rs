//! The client side of the transport: what openraft calls to reach a peer.
//!
//! One lazily connected HTTP/2 channel per peer address, shared by every RPC to that peer
//! (openraft's replication, heartbeat and snapshot clients, and forwarded writes).
//!
//! A failed call says, as a value, whether the request may have reached the peer
//! ([`TransportError`]): nothing was sent when a fault rule dropped it, when the connection
//! could not be made (tonic's `ConnectError` in the error's source chain), or when the peer
//! itself refused it (the status codes our handlers return only before acting); anything
//! else — a timeout, a reset, an internal error — may have been delivered. Forwarded writes need that distinction
//! (retrying an undelivered write is safe, retrying a delivered one is not); openraft maps
//! "not sent" to `Unreachable` (it backs off) and the rest to `NetworkError` (it retries).
//!
//! AppendEntries is bounded by bytes as well as by openraft's entry count: a batch larger than
//! [`MAX_APPEND_BYTES`] sends only the prefix that fits and answers `PartialSuccess`, and the
//! deadline of each call grows with its size, so a follower far behind on large entries
//! catches up batch after batch instead of timing out on every one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
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
use super::tls::PeerTls;
use super::transfer::{Resume, SnapshotOffer, Transfers};
use crate::snapshot::{Manifest, SnapshotDir};
use crate::types::{NodeId, TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Most bytes of entries one AppendEntries carries (a single larger entry still goes alone).
pub const MAX_APPEND_BYTES: usize = 8 << 20;
/// The slowest transfer-plus-fsync rate an AppendEntries deadline allows for, in bytes/s.
const MIN_APPEND_RATE: f64 = 8e6;

/// About how many bytes an entry takes on the wire.
fn entry_size(e: &openraft::alias::EntryOf<TypeConfig>) -> usize {
    64 + match &e.payload {
        openraft::EntryPayload::Normal(cmd) => cmd.0.len(),
        openraft::EntryPayload::Membership(_) => 256,
        openraft::EntryPayload::Blank => 0,
    }
}

/// Cuts `rpc` to the prefix of its entries within [`MAX_APPEND_BYTES`] (at least one); returns
/// the bytes kept and, if entries were left out, the last log id sent.
fn bound_append(rpc: &mut AppendEntriesRequest<TypeConfig>) -> (usize, Option<crate::types::LogId>) {
    let mut bytes = 0;
    let mut keep = 0;
    for e in &rpc.entries {
        let size = entry_size(e);
        if keep > 0 && bytes + size > MAX_APPEND_BYTES {
            break;
        }
        bytes += size;
        keep += 1;
    }
    if keep == rpc.entries.len() {
        return (bytes, None);
    }
    rpc.entries.truncate(keep);
    (bytes, rpc.entries.last().map(|e| e.log_id))
}

/// Creates peer clients for openraft; also used for forwarded writes and read-index calls.
#[derive(Clone)]
pub struct NetworkFactory {
    me: NodeId,
    faults: Faults,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    transfers: Transfers,
    /// Snapshot streaming pace in bytes per second (0: as fast as the network goes).
    snapshot_rate: u64,
    /// TLS for every connection to a peer, when the cluster has certificates.
    tls: Option<PeerTls>,
}

impl NetworkFactory {
    pub fn new(me: NodeId, faults: Faults, transfers: Transfers, snapshot_rate: u64, tls: Option<PeerTls>) -> Self {
        Self { me, faults, channels: Default::default(), transfers, snapshot_rate, tls }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// A client for the peer `target` at `addr` (host:port), over a cached channel. An address
    /// that is not a valid peer address gives a client whose every call fails as not sent.
    pub fn client(&self, target: NodeId, addr: &str) -> PeerClient {
        let client = self.channel(addr).map(|channel| {
            RaftTransportClient::new(channel).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20)
        });
        PeerClient {
            me: self.me,
            target,
            addr: addr.to_string(),
            faults: self.faults.clone(),
            transfers: self.transfers.clone(),
            snapshot_rate: self.snapshot_rate,
            client,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        check_peer_addr(addr)?;
        let connect_timeout = Duration::from_millis(500);
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = match &self.tls {
            Some(tls) => super::tls::connect_lazy(endpoint, tls.clone(), connect_timeout),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
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
    /// The gRPC client, or why there is none (an invalid address).
    client: Result<RaftTransportClient<Channel>, String>,
}

/// Why an RPC to a peer failed, decided where the failure is still a value: whether the
/// request may have reached the peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing reached the peer.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The peer answered with an error status, which our handlers return only before acting.
    #[error("refused by the peer: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    /// The request may have reached the peer, but no answer came back.
    #[error("no answer: {0}")]
    NoAnswer(String),
}

impl TransportError {
    /// Whether the request may have reached the peer.
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, Self::NoAnswer(_))
    }

    fn into_rpc<E: std::error::Error>(self) -> RPCError<TypeConfig, E> {
        match self {
            Self::NotSent(_) | Self::Refused { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            Self::NoAnswer(_) => RPCError::Network(NetworkError::new(&self)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Self::NotSent(_) | Self::Refused { .. } => StreamingError::Unreachable(Unreachable::new(&self)),
            Self::NoAnswer(_) => StreamingError::Network(NetworkError::new(&self)),
        }
    }
}

/// Classifies a failed call's status (see the module docs).
fn from_status(s: tonic::Status) -> TransportError {
    use tonic::Code;
    let what = format!("{}: {}", s.code(), s.message());
    let mut source = std::error::Error::source(&s);
    // A status without a source was built from the peer's answer. These codes are the ones
    // our handlers (server.rs) return only before acting on a request; any other (a deadline,
    // an internal error) may come after the peer acted.
    let refused =
        matches!(s.code(), Code::Unavailable | Code::InvalidArgument | Code::FailedPrecondition | Code::Unimplemented);
    if source.is_none() && refused {
        return TransportError::Refused { code: s.code(), message: s.message().to_string() };
    }
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return TransportError::NotSent(what);
        }
        source = e.source();
    }
    TransportError::NoAnswer(what)
}

/// Checks that `addr` is a peer address this node can dial: `host:port`, the host a name, an
/// IPv4 address or a bracketed IPv6 address, the port 1–65535, nothing else.
pub fn check_peer_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid node address {addr:?}: {why}; expected host:port"));
    let Some((host, port)) = addr.rsplit_once(':') else { return bad("no port") };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || !port.bytes().all(|b| b.is_ascii_digit()) {
        return bad("the port must be a number from 1 to 65535");
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return if v6.parse::<std::net::Ipv6Addr>().is_ok() { Ok(()) } else { bad("not an IPv6 address") };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return bad("the host must be a DNS name or an IP address");
    }
    Ok(())
}

impl PeerClient {
    /// Applies fault rules, then wraps the request with our id and a deadline.
    pub(crate) async fn prepare<T>(&self, msg: T, ttl: Duration) -> Result<tonic::Request<T>, TransportError> {
        match self.faults.outbound(self.target) {
            Outbound::Drop => {
                return Err(TransportError::NotSent(format!("fault rule drops messages to node {}", self.target)));
            }
            Outbound::Deliver(Some(delay)) => tokio::time::sleep(delay).await,
            Outbound::Deliver(None) => {}
        }
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(FROM_HEADER, tonic::metadata::MetadataValue::from(self.me));
        req.set_timeout(ttl);
        Ok(req)
    }

    /// The gRPC client, or the reason this peer cannot be called.
    fn grpc(&self) -> Result<RaftTransportClient<Channel>, TransportError> {
        self.client.clone().map_err(TransportError::NotSent)
    }

    /// One unary call with the deadline enforced on our side too.
    pub(crate) async fn call<T, R, F, Fut>(&self, msg: T, ttl: Duration, f: F) -> Result<R, TransportError>
    where
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let client = self.grpc()?;
        let req = self.prepare(msg, ttl).await?;
        match tokio::time::timeout(ttl, f(client, req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(from_status(status)),
            Err(_) => Err(TransportError::NoAnswer(format!("no answer from node {} within {ttl:?}", self.target))),
        }
    }

    async fn envelope_call<Req, Resp, F, Fut>(&self, req: &Req, ttl: Duration, f: F) -> Result<Resp, TransportError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<Envelope>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Envelope>, tonic::Status>>,
    {
        let req = encode(req).map_err(|s| TransportError::NotSent(s.message().to_string()))?;
        let env = self.call(req, ttl, f).await?;
        decode(&env).map_err(|s| TransportError::NoAnswer(s.message().to_string()))
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
            .map_err(|e| TransportError::NotSent(e.to_string()))?
            .map_err(|e| TransportError::NotSent(format!("reading snapshot manifest: {e}")))?;
        let offer = SnapshotOffer { from: self.me, manifest: manifest.clone() };
        let resume: Resume = self
            .envelope_call(&offer, Duration::from_secs(60), |mut c, r| async move { c.offer_snapshot(r).await })
            .await?;
        let files = manifest.files.clone();
        let total = manifest.total_bytes();
        let start: u64 = files.iter().take(resume.file as usize).map(|f| f.size).sum::<u64>() + resume.offset;
        let mut tracker = self.transfers.start("send", self.target, manifest.index(), total, start);
        let header = encode(&(self.me, vote, snapshot.meta.clone()))
            .map_err(|s| TransportError::NotSent(s.message().to_string()))?
            .data;
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
        let mut client = self.grpc()?;
        let req = self.prepare(tokio_stream::wrappers::ReceiverStream::new(rx), Duration::from_secs(24 * 3600)).await?;
        let mut call = std::pin::pin!(client.install_snapshot(req));
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                Ok(()) = progress_rx.changed() => tracker.advance(*progress_rx.borrow()),
            }
        };
        let sent = producer.await.map_err(|e| TransportError::NoAnswer(e.to_string()));
        let outcome = (|| {
            let env = result.map_err(from_status)?.into_inner();
            sent?.map_err(|e| TransportError::NoAnswer(format!("reading snapshot files: {e}")))?;
            decode(&env).map_err(|s| TransportError::NoAnswer(s.message().to_string()))
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
        let mut rpc = rpc;
        let (bytes, partial) = bound_append(&mut rpc);
        let ttl = option.soft_ttl() + Duration::from_secs_f64(bytes as f64 / MIN_APPEND_RATE);
        let resp = self
            .envelope_call(&rpc, ttl, |mut c, r| async move { c.append_entries(r).await })
            .await
            .map_err(TransportError::into_rpc)?;
        Ok(match (resp, partial) {
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
            (resp, _) => resp,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_host_and_port_only() {
        for good in ["127.0.0.1:7001", "node-1.cluster.local:1", "localhost:65535", "[::1]:7001", "[fe80::1]:80"] {
            assert_eq!(check_peer_addr(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1 :7001",
            " 127.0.0.1:7001",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+80",
            "http://127.0.0.1:7001",
            "a/b:1",
            "-x:1",
            "a..b:1",
            "[::1:7001",
            "[not-v6]:1",
            "host:1\n",
        ] {
            assert!(check_peer_addr(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_client_for_a_bad_address_fails_as_not_sent() {
        let factory = NetworkFactory::new(1, Faults::default(), Transfers::default(), 0, None);
        let peer = factory.client(2, "bad address:1");
        assert!(matches!(peer.grpc(), Err(TransportError::NotSent(_))));
    }

    #[test]
    fn a_status_the_peer_sent_means_not_delivered_but_a_deadline_may_have_been() {
        let refused = from_status(tonic::Status::unavailable("fault rule drops messages from this peer"));
        assert!(matches!(refused, TransportError::Refused { code: tonic::Code::Unavailable, .. }));
        assert!(!refused.maybe_delivered());
        assert!(from_status(tonic::Status::deadline_exceeded("late")).maybe_delivered());
        assert!(from_status(tonic::Status::internal("boom")).maybe_delivered());
        let reset = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert!(std::error::Error::source(&reset).is_some());
        assert!(from_status(reset).maybe_delivered(), "a transport error after sending may have been delivered");
        let connect =
            tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(std::io::Error::other("refused")))));
        assert!(!from_status(connect).maybe_delivered(), "a connection that was never made delivered nothing");
    }
}
