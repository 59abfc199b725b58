//! Fault injection, switchable at run time (tests, the HTTP debug endpoint, the chaos suite):
//! for the transport, drop or delay traffic per peer or cut a node off; for the disk, slow or
//! fail the Raft log's fsyncs (read by the log store's flusher).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// The fault rules of one node. Outbound rules act in the client, inbound ones in the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRules {
    /// Cut this node off: drop everything it sends and everything it receives.
    pub isolated: bool,
    /// Drop messages to these peers.
    pub drop_to: BTreeSet<NodeId>,
    /// Drop messages from these peers.
    pub drop_from: BTreeSet<NodeId>,
    /// Delay messages to these peers by this many milliseconds.
    pub delay_ms: BTreeMap<NodeId, u64>,
    /// Delay every fsync of the Raft log by this many milliseconds (a slow disk).
    pub disk_delay_ms: u64,
    /// Fail every fsync and synced write of the Raft log (a failed disk): the node stops
    /// acknowledging anything, as it must, until it is restarted.
    pub disk_fail: bool,
}

impl FaultRules {
    /// Every peer the rules name.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.drop_to.iter().chain(&self.drop_from).chain(self.delay_ms.keys()).copied()
    }
}

/// The fate of one outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    Drop,
    /// Send it, after the delay if there is one.
    Deliver(Option<Duration>),
}

/// Shared, switchable fault rules.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<RwLock<FaultRules>>);

impl Faults {
    pub fn set(&self, rules: FaultRules) {
        *self.0.write() = rules;
    }

    pub fn get(&self) -> FaultRules {
        self.0.read().clone()
    }

    pub fn clear(&self) {
        self.set(FaultRules::default());
    }

    /// What to do with a message to `peer`.
    pub fn outbound(&self, peer: NodeId) -> Outbound {
        let r = self.0.read();
        if r.isolated || r.drop_to.contains(&peer) {
            return Outbound::Drop;
        }
        Outbound::Deliver(r.delay_ms.get(&peer).map(|ms| Duration::from_millis(*ms)))
    }

    /// The disk faults: a delay before each log fsync, and whether it fails.
    pub fn disk(&self) -> (Option<Duration>, bool) {
        let r = self.0.read();
        ((r.disk_delay_ms > 0).then(|| Duration::from_millis(r.disk_delay_ms)), r.disk_fail)
    }

    /// Whether a message from `peer` must be dropped.
    pub fn drops_inbound(&self, peer: Option<NodeId>) -> bool {
        let r = self.0.read();
        r.isolated || peer.is_some_and(|p| r.drop_from.contains(&p))
    }
}
