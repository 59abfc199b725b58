//! Read barriers shared by every connection of a node: many clients' reads wait on one
//! barrier instead of one each.
//!
//! Correctness rests on one rule: a caller is served only by a barrier *started after it
//! asked*. Callers queue; one driver task takes the whole queue, runs a single barrier and
//! answers everyone it took; callers that arrived meanwhile wait for the next round. A
//! barrier started after a read was received reflects every write acknowledged before that
//! read was sent, which is what linearizability asks of the read.

use std::sync::{Arc, Mutex};

use quorumdb_replication::{Consistency, Replica, ReplicationError};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), ReplicationError>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    driving: bool,
}

/// Coalesces barriers at one level (linearizable or lease).
pub struct ReadBarriers {
    replica: Replica,
    level: Consistency,
    queue: Arc<Mutex<Queue>>,
}

/// A copy of a barrier's error for each caller it answers (the error type is not `Clone`).
fn copy(e: &ReplicationError) -> ReplicationError {
    match e {
        ReplicationError::NoLeader => ReplicationError::NoLeader,
        ReplicationError::Fatal(s) => ReplicationError::Fatal(s.clone()),
        ReplicationError::ReadNotConfirmed(s) => ReplicationError::ReadNotConfirmed(s.clone()),
        other => ReplicationError::ReadNotConfirmed(other.to_string()),
    }
}

impl ReadBarriers {
    pub fn new(replica: Replica, level: Consistency) -> Self {
        Self { replica, level, queue: Arc::default() }
    }

    /// Returns once a barrier that started after this call completed.
    pub async fn wait(&self) -> Result<(), ReplicationError> {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.push(tx);
            !std::mem::replace(&mut q.driving, true)
        };
        if start_driver {
            tokio::spawn(drive(self.replica.clone(), self.level, self.queue.clone()));
        }
        rx.await.unwrap_or_else(|_| Err(ReplicationError::ReadNotConfirmed("the read barrier task stopped".into())))
    }
}

/// Runs barriers while anyone waits for one.
async fn drive(replica: Replica, level: Consistency, queue: Arc<Mutex<Queue>>) {
    loop {
        let round = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.waiting.is_empty() {
                q.driving = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        metrics::counter!("quorumdb_resp_read_barriers_total").increment(1);
        let result = replica.read_barrier(level).await.map(|_| ());
        for waiter in round {
            let _ = waiter.send(result.as_ref().map(|_| ()).map_err(copy));
        }
    }
}
