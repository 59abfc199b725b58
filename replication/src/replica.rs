//! A replica: one node's Raft, its two stores and its transport, behind the calls the server
//! needs — write (forwarded to the leader when this node is not it), read at a consistency
//! level, membership changes, leader transfer, status — and the background task that moves
//! the cluster's format version forward once every member's binary reads the new one (see
//! [`quorumdb_state::format`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, ReadPolicy, ServerState, SnapshotPolicy};
use quorumdb_state::format::{self, FormatVersion, SetFormat};
use quorumdb_state::system::{ONCE_FORMAT, RequestId};
use quorumdb_state::{Application, AppliedState, Consistency, Proposer, ReadInfo, now_ms};

use crate::error::{ReplicationError, fatal};
use crate::log_store::LogStore;
use crate::network::pb::raft_transport_server::RaftTransportServer;
use crate::network::pb::{NodeInfoRequest, ReadIndexRequest};
use crate::network::{
    FaultRules, Faults, ForwardReply, NetworkFactory, TransferStatus, Transfers, TransportError, TransportService,
    check_peer_addr,
};
use crate::raft::Raft;
use crate::state_machine::{StateMachineStore, StateReader};
use crate::types::{Command, CommandResult, NodeId, RaftMetrics};

/// A member of the cluster as status reports show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: Option<String>,
}

/// One node's view of itself and the cluster: what `/v1/status`, gRPC `Cluster.Status` and
/// `/metrics` report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    /// leader, follower, candidate, learner or shutdown.
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// The running checksum of applied commands (hex in JSON).
    #[serde(serialize_with = "as_hex")]
    pub checksum: u64,
    /// The voters.
    pub members: Vec<Member>,
    pub learners: Vec<Member>,
    /// The latest snapshot transfer to or from each peer, running or ended.
    pub snapshot_transfers: Vec<TransferStatus>,
    /// The cluster's format version as this node has applied it, and the newest its binary
    /// reads and writes.
    pub format: FormatVersion,
    pub max_format: FormatVersion,
}

fn as_hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

/// Tunables of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// The address peers reach this node at (host:port; gRPC and HTTP share it).
    pub addr: String,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and later purge the log) after this many applied entries.
    pub snapshot_every: u64,
    /// Applied entries to keep in the log below the snapshot (lets slow followers catch up
    /// from the log instead of a snapshot).
    pub keep_logs: u64,
    /// Pace of snapshot streaming to a peer, bytes per second (0: unlimited).
    pub snapshot_rate: u64,
    /// The newest format version this node reads and writes: [`format::CURRENT`], lower only
    /// to act as an older binary (rolling-upgrade tests).
    pub max_format: FormatVersion,
    /// TLS on calls to peers (the cluster's certificates); `None`: plain TCP.
    pub tls: Option<crate::network::PeerTls>,
}

impl ReplicaConfig {
    pub fn new(id: NodeId, addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            addr: addr.into(),
            data_dir: data_dir.into(),
            heartbeat_ms: 100,
            election_timeout_ms: (500, 1000),
            snapshot_every: 50_000,
            keep_logs: 10_000,
            snapshot_rate: 0,
            max_format: format::CURRENT,
            tls: None,
        }
    }
}

/// One node's replication machinery.
#[derive(Clone)]
pub struct Replica {
    pub id: NodeId,
    pub addr: String,
    raft: Raft,
    reader: StateReader,
    network: NetworkFactory,
    transport: TransportService,
    last_leader_contact: Arc<AtomicU64>,
    transfers: Transfers,
    max_format: FormatVersion,
}

/// How long a write waits for a leader to exist before giving up with `NoLeader`.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How often the leader checks whether the cluster's format version can move forward.
const FORMAT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What became of a write sent to the leader.
enum Forwarded {
    /// The leader answered.
    Reply(ForwardReply),
    /// It never reached the leader: trying again (there or at a new leader) is safe.
    NotDelivered(String),
}

impl Replica {
    /// Opens the stores under `config.data_dir` and starts Raft. A node with existing data
    /// resumes where it stopped; a new one waits to be initialized or added to a cluster.
    pub async fn open(config: ReplicaConfig, app: Arc<dyn Application>) -> Result<Self, ReplicationError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let faults = Faults::default();
        let log_store = LogStore::open_with_faults(&config.data_dir.join("log"), faults.clone())?;
        let sm = StateMachineStore::open(&config.data_dir, app)?;
        let reader = sm.reader();
        let snapshot_dir = sm.snapshot_dir().to_path_buf();
        let raft_config = Config {
            cluster_name: "quorumdb".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            enable_pre_vote: Some(true),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs,
            // A cut transfer resumes, so a timeout costs little; give large snapshots time.
            install_snapshot_timeout: 300_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Invalid(format!("raft config: {e}")))?;
        let transfers = Transfers::default();
        let network =
            NetworkFactory::new(config.id, faults.clone(), transfers.clone(), config.snapshot_rate, config.tls.clone());
        let raft = Raft::new(config.id, Arc::new(raft_config), network.clone(), log_store, sm).await.map_err(fatal)?;
        let last_leader_contact = Arc::new(AtomicU64::new(0));
        let transport = TransportService::new(
            (config.id, config.max_format),
            raft.clone(),
            faults,
            snapshot_dir,
            last_leader_contact.clone(),
            transfers.clone(),
        );
        let replica = Self {
            id: config.id,
            addr: config.addr,
            raft,
            reader,
            network,
            transport,
            last_leader_contact,
            transfers,
            max_format: config.max_format,
        };
        tokio::spawn(replica.clone().advance_format());
        Ok(replica)
    }

    /// The gRPC service peers talk to; mount it on this node's listener.
    pub fn transport_service(&self) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(self.transport.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    pub fn faults(&self) -> &Faults {
        self.network.faults()
    }

    pub fn set_faults(&self, rules: FaultRules) {
        self.network.faults().set(rules);
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// This node's role, without copying the rest of the metrics (the write path asks it).
    fn server_state(&self) -> ServerState {
        self.raft.metrics().borrow_watched().state
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// This node's status; applied index and checksum are read together from the state.
    pub fn status(&self) -> std::io::Result<NodeStatus> {
        let m = self.metrics();
        let (applied, checksum) = self.reader.applied()?;
        let membership = m.membership_config.membership();
        let member = |id: NodeId| Member { id, addr: membership.get_node(&id).map(|n| n.addr.clone()) };
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Ok(NodeStatus {
            id: self.id,
            addr: self.addr.clone(),
            role,
            term: m.current_term,
            leader: m.current_leader,
            leader_addr: m.current_leader.and_then(|l| membership.get_node(&l)).map(|n| n.addr.clone()),
            last_log_index: m.last_log_index,
            committed: m.cluster_committed.as_ref().map(|l| l.index),
            applied: applied.map(|l| l.index),
            snapshot: m.snapshot.as_ref().map(|l| l.index),
            purged: m.purged.as_ref().map(|l| l.index),
            checksum,
            members: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
            snapshot_transfers: self.transfers.list(),
            format: self.reader.format()?,
            max_format: self.max_format,
        })
    }

    /// Makes this node a one-member cluster. Idempotent: a node that is already part of an
    /// initialized cluster is left as it is.
    pub async fn initialize(&self) -> Result<(), ReplicationError> {
        if self.raft.is_initialized().await.map_err(fatal)? {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id, BasicNode { addr: self.addr.clone() })]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => {
                tracing::info!(error = %e, "initialize: already initialized");
                Ok(())
            }
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    /// Waits until some node is leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ReplicationError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow_watched().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReplicationError::NoLeader);
            }
            let _ = tokio::time::timeout(left, rx.changed()).await;
        }
    }

    /// Proposes `cmd` and returns what applying it produced. On a follower the write is sent
    /// to the leader; with no leader known, it waits a few seconds for an election. A write
    /// is sent again only when it provably never reached a leader, or when it carries a request
    /// id: a follower gives every write it will forward an id of its own
    /// ([`RequestId::internal`]), so a forward whose answer is lost is re-sent, not reported
    /// as an unknown outcome.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ReplicationError> {
        if self.server_state() != ServerState::Leader
            && Proposer::format(self) >= ONCE_FORMAT
            && cmd.0.first() != Some(&format::SYSTEM_TAG)
        {
            return self.write_with_id(cmd, &RequestId::internal(self.id)).await;
        }
        self.write_inner(cmd, false).await
    }

    /// Replicates `cmd` as part of request `req` ([`RequestId`]): applied at most once however
    /// often the request is re-sent, so a forward whose answer was lost is retried here too.
    /// Without `req`, the same as [`Self::write`].
    pub async fn write_as(&self, cmd: Command, req: Option<&RequestId>) -> Result<CommandResult, ReplicationError> {
        match req {
            Some(req) => self.write_with_id(cmd, req).await,
            None => self.write(cmd).await,
        }
    }

    async fn write_with_id(&self, cmd: Command, req: &RequestId) -> Result<CommandResult, ReplicationError> {
        if Proposer::format(self) < ONCE_FORMAT {
            // The cluster has not moved to the format with request ids yet (a new cluster's
            // first second, or a rolling upgrade): written without one, as before ids existed.
            tracing::debug!(id = req.id(), "cluster format below 2: the write goes without its request id");
            return self.write_inner(cmd, false).await;
        }
        let wrapped =
            req.wrap(cmd, Proposer::format(self), now_ms()).map_err(|e| ReplicationError::Invalid(e.to_string()))?;
        self.write_inner(wrapped, true).await
    }

    /// `retry_unknown`: the command is idempotent, so a forward with no answer is sent again.
    async fn write_inner(&self, cmd: Command, retry_unknown: bool) -> Result<CommandResult, ReplicationError> {
        let started = Instant::now();
        let deadline = started + LEADER_WAIT;
        // Why an earlier attempt may have been applied: then running out of time is not "no
        // leader" but an unknown outcome.
        let mut unknown: Option<String> = None;
        let result = loop {
            if self.server_state() == ServerState::Shutdown {
                // Stopped before this attempt: not proposed here.
                break Err(unknown.map_or_else(
                    || ReplicationError::Fatal("this node's Raft has stopped".into()),
                    ReplicationError::OutcomeUnknown,
                ));
            }
            let leader = match self.raft.client_write(cmd.clone()).await {
                Ok(r) => break Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_id.zip(f.leader_node),
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) if !retry_unknown => {
                    break Err(ReplicationError::OutcomeUnknown(f.to_string()));
                }
                // Leadership moved before the entry committed: proposed again (with its id).
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
                    unknown = Some(f.to_string());
                    None
                }
                Err(RaftError::APIError(e)) => break Err(ReplicationError::Invalid(e.to_string())),
                // It stopped while the entry was in flight (a failed disk): the followers may
                // still commit the entry under the next leader.
                Err(RaftError::Fatal(f)) => {
                    break Err(ReplicationError::OutcomeUnknown(format!("this node stopped during the write: {f}")));
                }
            };
            if let Some((id, node)) = leader.filter(|(id, _)| *id != self.id) {
                match self.forward_write(id, &node.addr, &cmd).await {
                    Forwarded::Reply(ForwardReply::Done(r)) => break Ok(r),
                    Forwarded::Reply(ForwardReply::OutcomeUnknown(e)) if !retry_unknown => {
                        break Err(ReplicationError::OutcomeUnknown(e));
                    }
                    Forwarded::Reply(ForwardReply::OutcomeUnknown(e)) => {
                        tracing::debug!(leader = id, %e, "a forwarded write's answer was lost; re-sending it (it has a request id)");
                        unknown = Some(e);
                    }
                    Forwarded::Reply(ForwardReply::Failed(e)) => break Err(ReplicationError::Invalid(e)),
                    Forwarded::Reply(ForwardReply::NotLeader { .. }) => {}
                    Forwarded::NotDelivered(reason) => {
                        tracing::debug!(leader = id, %reason, "a forwarded write was not delivered; retrying");
                    }
                }
            }
            if Instant::now() >= deadline {
                break Err(unknown.map_or(ReplicationError::NoLeader, ReplicationError::OutcomeUnknown));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        metrics::histogram!("quorumdb_write_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn forward_write(&self, leader: NodeId, addr: &str, cmd: &Command) -> Forwarded {
        metrics::counter!("quorumdb_forwarded_writes_total").increment(1);
        let peer = self.network.client(leader, addr);
        let req = match crate::network::codec::encode(cmd) {
            Ok(req) => req,
            Err(s) => return Forwarded::NotDelivered(s.message().to_string()),
        };
        match peer.call(req, Duration::from_secs(10), |mut c, r| async move { c.forward_write(r).await }).await {
            Ok(env) => match crate::network::codec::decode(&env) {
                Ok(reply) => Forwarded::Reply(reply),
                // The leader answered, but not in a form this node reads: it may have applied.
                Err(s) => Forwarded::Reply(ForwardReply::OutcomeUnknown(format!(
                    "undecodable answer from leader {leader}: {}",
                    s.message()
                ))),
            },
            Err(e @ (TransportError::NotSent(_) | TransportError::Refused { .. })) => {
                Forwarded::NotDelivered(e.to_string())
            }
            Err(e @ TransportError::NoAnswer(_)) => Forwarded::Reply(ForwardReply::OutcomeUnknown(format!(
                "forwarding to leader {leader} at {addr} failed during the request: {e}"
            ))),
        }
    }

    /// Waits until this node may serve a read at `level`, then says at what state.
    pub async fn read_barrier(&self, level: Consistency) -> Result<ReadInfo, ReplicationError> {
        let policy = match level {
            Consistency::Stale { max_staleness } => {
                let info = self.stale_info();
                if let (Some(bound), Some(age)) = (max_staleness, info.staleness_ms)
                    && age > bound.as_millis() as u64
                {
                    return Err(ReplicationError::ReadNotConfirmed(format!(
                        "this node last heard from a leader {age} ms ago, over the {} ms bound",
                        bound.as_millis()
                    )));
                }
                return Ok(info);
            }
            Consistency::Linearizable => ReadPolicy::ReadIndex,
            Consistency::Lease => ReadPolicy::LeaseRead,
        };
        let index = match self.raft.get_read_linearizer(policy.clone()).await {
            Ok(lin) => lin.read_log_id().index(),
            Err(RaftError::APIError(e)) => {
                let Some((leader, addr)) = self.leader().filter(|(l, _)| *l != self.id) else {
                    return Err(ReplicationError::ReadNotConfirmed(e.to_string()));
                };
                self.remote_read_index(leader, &addr, policy).await?
            }
            Err(RaftError::Fatal(f)) => return Err(fatal(f)),
        };
        let m = self
            .raft
            .wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| ReplicationError::ReadNotConfirmed(format!("waiting to apply index {index}: {e}")))?;
        Ok(ReadInfo { applied_index: m.last_applied.map(|l| l.index).unwrap_or(0), staleness_ms: Some(0) })
    }

    async fn remote_read_index(&self, leader: NodeId, addr: &str, policy: ReadPolicy) -> Result<u64, ReplicationError> {
        let peer = self.network.client(leader, addr);
        let req = ReadIndexRequest { policy: u32::from(policy == ReadPolicy::LeaseRead) };
        let resp =
            peer.call(req, Duration::from_secs(5), |mut c, r| async move { c.read_index(r).await }).await.map_err(
                |e| ReplicationError::ReadNotConfirmed(format!("asking leader {leader} for the read index: {e}")),
            )?;
        Ok(resp.index)
    }

    fn stale_info(&self) -> ReadInfo {
        let m = self.metrics();
        let staleness_ms = if m.state == ServerState::Leader {
            Some(0)
        } else {
            match self.last_leader_contact.load(Ordering::Relaxed) {
                0 => None,
                t => Some(now_ms().saturating_sub(t)),
            }
        };
        ReadInfo { applied_index: m.last_applied.map(|l| l.index).unwrap_or(0), staleness_ms }
    }

    /// Adds node `id` at `addr` as a voter: first as a learner (it catches up), then promoted.
    /// Must run on the leader. Idempotent: a node already voting with that address is left as
    /// it is.
    /// The address is checked first, and so is the node answering there: it must be node `id`
    /// and its binary must read the cluster's format version.
    pub async fn add_voter(&self, id: NodeId, addr: &str) -> Result<(), ReplicationError> {
        check_peer_addr(addr).map_err(ReplicationError::Invalid)?;
        if id == 0 {
            return Err(ReplicationError::Invalid("node ids start at 1".into()));
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let known = membership.get_node(&id).map(|n| n.addr.clone());
        let is_voter = membership.voter_ids().any(|v| v == id);
        if known.as_deref() == Some(addr) && is_voter {
            return Ok(());
        }
        if known.is_some() && known.as_deref() != Some(addr) {
            return Err(ReplicationError::Membership(format!(
                "node {id} is already a member at {}; remove it first to move it to {addr}",
                known.unwrap_or_default()
            )));
        }
        if known.is_none() {
            self.check_joiner(id, addr).await?;
            self.raft.add_learner(id, BasicNode { addr: addr.to_string() }, true).await.map_err(membership_error)?;
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Asks the node at `addr` who it is; refuses it unless it is node `id` and reads the
    /// cluster's format version.
    async fn check_joiner(&self, id: NodeId, addr: &str) -> Result<(), ReplicationError> {
        let (answered, max) = match self.node_info(id, addr).await {
            Ok(info) => info,
            Err(e) => {
                return Err(ReplicationError::Membership(format!("cannot reach node {id} at {addr} to check it: {e}")));
            }
        };
        if answered != Some(id) && answered.is_some() {
            return Err(ReplicationError::Membership(format!(
                "the node at {addr} is node {}, not node {id}",
                answered.unwrap_or_default()
            )));
        }
        let cluster = self.reader.format()?;
        if max < cluster {
            return Err(ReplicationError::Membership(format!(
                "node {id} reads format versions up to {max}, but the cluster writes version {cluster}: upgrade its binary"
            )));
        }
        Ok(())
    }

    /// The id of the node answering at `addr` (`None` if its binary predates `NodeInfo`) and
    /// the newest format version it reads.
    async fn node_info(&self, id: NodeId, addr: &str) -> Result<(Option<NodeId>, FormatVersion), TransportError> {
        let peer = self.network.client(id, addr);
        let call =
            peer.call(NodeInfoRequest {}, Duration::from_secs(2), |mut c, r| async move { c.node_info(r).await });
        match call.await {
            Ok(info) => Ok((Some(info.id), FormatVersion::try_from(info.max_format).unwrap_or(FormatVersion::MAX))),
            // A binary from before `NodeInfo` existed: format version 0.
            Err(TransportError::Refused { code: tonic::Code::Unimplemented, .. }) => Ok((None, format::LEGACY)),
            Err(e) => Err(e),
        }
    }

    /// While this node leads, moves the cluster's format version up to the newest every
    /// member reads, through the log (see [`quorumdb_state::format`]). Runs until Raft stops.
    async fn advance_format(self) {
        loop {
            tokio::time::sleep(FORMAT_CHECK_EVERY).await;
            let m = self.metrics();
            if m.state == ServerState::Shutdown {
                return;
            }
            if m.state != ServerState::Leader {
                continue;
            }
            match self.format_everyone_reads(&m).await {
                Ok(Some(target)) => match (SetFormat { version: target }).command() {
                    Ok(cmd) => match self.write(cmd).await {
                        Ok(_) => tracing::info!(version = target, "the cluster's format version moved forward"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not raise the cluster's format version; will retry")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "cannot encode a format change"),
                },
                Ok(None) => {}
                Err(why) => tracing::debug!(%why, "the cluster's format version stays for now"),
            }
        }
    }

    /// The format version the cluster can move to now, if it is above the current one: the
    /// lowest `max_format` of all members (voters and learners), all of whom must answer.
    async fn format_everyone_reads(&self, m: &RaftMetrics) -> Result<Option<FormatVersion>, String> {
        let current = self.reader.format().map_err(|e| e.to_string())?;
        if current >= self.max_format {
            return Ok(None);
        }
        let mut lowest = self.max_format;
        for (id, node) in m.membership_config.membership().nodes() {
            if *id == self.id {
                continue;
            }
            let (_, max) = self.node_info(*id, &node.addr).await.map_err(|e| format!("node {id}: {e}"))?;
            lowest = lowest.min(max);
        }
        Ok((lowest > current).then_some(lowest))
    }

    /// Removes node `id` from the cluster (voter or learner). Must run on the leader.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ReplicationError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Ok(());
        }
        if membership.voter_ids().any(|v| v == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        Ok(())
    }

    /// Hands leadership to `to`. Must run on the leader; returns once `to` leads (or errs).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ReplicationError> {
        let m = self.metrics();
        if !m.membership_config.membership().voter_ids().any(|v| v == to) {
            return Err(ReplicationError::Membership(format!("node {to} is not a voter")));
        }
        if m.current_leader == Some(to) {
            return Ok(());
        }
        self.raft.trigger().transfer_leader(to).await.map_err(fatal)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut rx = self.raft.metrics();
        while Instant::now() < deadline {
            if rx.borrow_watched().current_leader == Some(to) {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
        Err(ReplicationError::Membership(format!("node {to} did not take over leadership within 5 s")))
    }

    /// Builds a snapshot now (in the background).
    pub async fn trigger_snapshot(&self) -> Result<(), ReplicationError> {
        self.raft.trigger().snapshot().await.map_err(fatal)
    }

    /// Stops Raft; the stores close when the last handle drops.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

fn membership_error<E: std::fmt::Display>(e: RaftError<crate::TypeConfig, E>) -> ReplicationError {
    match e {
        RaftError::APIError(e) => ReplicationError::Membership(e.to_string()),
        RaftError::Fatal(f) => fatal(f),
    }
}

/// The [`Proposer`] of one client request: every command it proposes carries the request's
/// id ([`Replica::write_as`]), so re-sending the request never applies it twice.
pub struct RequestProposer<'a> {
    pub replica: &'a Replica,
    pub request: Option<&'a RequestId>,
}

#[async_trait::async_trait]
impl Proposer for RequestProposer<'_> {
    async fn propose(&self, command: Command) -> Result<CommandResult, ReplicationError> {
        self.replica.write_as(command, self.request).await
    }

    async fn read_barrier(&self, level: Consistency) -> Result<ReadInfo, ReplicationError> {
        Replica::read_barrier(self.replica, level).await
    }

    fn format(&self) -> FormatVersion {
        Proposer::format(self.replica)
    }
}

#[async_trait::async_trait]
impl Proposer for Replica {
    async fn propose(&self, command: Command) -> Result<CommandResult, ReplicationError> {
        self.write(command).await
    }

    async fn read_barrier(&self, level: Consistency) -> Result<ReadInfo, ReplicationError> {
        Replica::read_barrier(self, level).await
    }

    fn format(&self) -> FormatVersion {
        match self.reader.format() {
            Ok(v) => v.min(self.max_format),
            // Unreadable: the version every binary reads.
            Err(_) => format::LEGACY,
        }
    }
}
