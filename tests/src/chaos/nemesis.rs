//! Nemeses: the faults a schedule injects, drawn from a seeded generator so a schedule replays
//! from its seed. One fault at a time is applied, held, then healed; a `kill` or `pause` may
//! land during a partition (combined faults).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::cluster::ProcCluster;

/// A kind of fault, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a node (the leader half the time), restart it after the hold.
    Kill,
    /// SIGSTOP a node (the leader half the time), SIGCONT after the hold: a leader that wakes
    /// up still believing it leads.
    Pause,
    /// A minority cut off from the majority (the leader in the minority half the time).
    Partition,
    /// Two sides that cannot reach each other, and one bridge node that reaches both.
    Bridge,
    /// A node whose messages to every peer are lost, while it still hears them.
    OneWay,
    /// Every message a node sends delayed by 20–200 ms.
    Slow,
    /// A minority partition switched on and off every few hundred milliseconds.
    Flap,
    /// Leadership moved to a random follower.
    Transfer,
    /// A voter removed from the membership and added back after the hold.
    Membership,
    /// A partition with a kill or pause inside it.
    Combined,
    /// A node's Raft log fsyncs delayed by 50–500 ms (a slow disk).
    SlowDisk,
    /// A node's Raft log fsyncs fail (a failed disk): it must stop acknowledging; after the
    /// hold it is killed and restarted on the same data, as after a disk replacement.
    DiskFail,
}

pub const ALL: [Kind; 12] = [
    Kind::Kill,
    Kind::Pause,
    Kind::Partition,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Slow,
    Kind::Flap,
    Kind::Transfer,
    Kind::Membership,
    Kind::Combined,
    Kind::SlowDisk,
    Kind::DiskFail,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Bridge => "bridge",
            Kind::OneWay => "oneway",
            Kind::Slow => "slow",
            Kind::Flap => "flap",
            Kind::Transfer => "transfer",
            Kind::Membership => "membership",
            Kind::Combined => "combined",
            Kind::SlowDisk => "slowdisk",
            Kind::DiskFail => "diskfail",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown nemesis {s:?}; known: {}", ALL.map(Kind::name).join(", ")))
    }
}

/// Draws and injects faults on one cluster.
pub struct Nemesis {
    rng: StdRng,
    kinds: Vec<Kind>,
    /// What was done, with times in ms since the schedule began.
    pub events: Vec<(u64, String)>,
    pub counts: std::collections::BTreeMap<Kind, u64>,
    started: std::time::Instant,
}

impl Nemesis {
    pub fn new(seed: u64, kinds: Vec<Kind>, started: std::time::Instant) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), kinds, events: Vec::new(), counts: Default::default(), started }
    }

    fn log(&mut self, what: String) {
        tracing::info!(target: "chaos", "{what}");
        self.events.push((self.started.elapsed().as_millis() as u64, what));
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    /// A node: the leader with probability one half (if one is known), else any.
    async fn victim(&mut self, c: &ProcCluster) -> u64 {
        let leader = c.leader().await;
        match leader {
            Some(l) if self.rng.random_bool(0.5) => l,
            _ => *c.ids().choose(&mut self.rng).unwrap_or(&1),
        }
    }

    /// A minority group (the leader in it half the time) and the rest.
    async fn split(&mut self, c: &ProcCluster) -> (Vec<u64>, Vec<u64>) {
        let mut ids = c.ids();
        ids.shuffle(&mut self.rng);
        if let Some(l) = c.leader().await
            && self.rng.random_bool(0.5)
        {
            ids.retain(|i| *i != l);
            ids.insert(0, l);
        }
        let minority = (ids.len() - 1) / 2;
        let rest = ids.split_off(minority.max(1));
        (ids, rest)
    }

    /// Waits a quiet spell, injects one fault, holds it, heals it. Returns what was done.
    pub async fn round(&mut self, c: &mut ProcCluster) -> Result<()> {
        let quiet = self.ms(300, 1500);
        tokio::time::sleep(quiet).await;
        let Some(&kind) = self.kinds.choose(&mut self.rng) else { bail!("no nemesis enabled") };
        *self.counts.entry(kind).or_default() += 1;
        let hold = self.ms(800, 4000);
        match kind {
            Kind::Kill => {
                let v = self.victim(c).await;
                self.kill_for(c, v, hold).await?;
            }
            Kind::Pause => {
                let v = self.victim(c).await;
                self.pause_for(c, v, hold).await?;
            }
            Kind::Partition => {
                let (a, b) = self.split(c).await;
                self.log(format!("partition {a:?} | {b:?}"));
                c.partition(&[a, b]).await?;
                tokio::time::sleep(hold).await;
                c.heal().await;
                self.log("heal".into());
            }
            Kind::Bridge => {
                let mut ids = c.ids();
                ids.shuffle(&mut self.rng);
                let bridge = ids.pop().unwrap_or(1);
                let half = ids.len() / 2;
                let b = ids.split_off(half);
                let a = ids;
                self.log(format!("bridge {a:?} <-{bridge}-> {b:?}"));
                for &id in &a {
                    c.set_faults(id, json!({"drop_to": b, "drop_from": b})).await?;
                }
                for &id in &b {
                    c.set_faults(id, json!({"drop_to": a, "drop_from": a})).await?;
                }
                tokio::time::sleep(hold).await;
                c.heal().await;
                self.log("heal".into());
            }
            Kind::OneWay => {
                let v = self.victim(c).await;
                let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != v).collect();
                self.log(format!("oneway: node {v} cannot send to {others:?}"));
                c.set_faults(v, json!({"drop_to": others})).await?;
                tokio::time::sleep(hold).await;
                c.heal().await;
                self.log("heal".into());
            }
            Kind::Slow => {
                let v = self.victim(c).await;
                let ms = self.rng.random_range(20..=200u64);
                let delays: serde_json::Map<String, serde_json::Value> =
                    c.ids().into_iter().filter(|i| *i != v).map(|i| (i.to_string(), json!(ms))).collect();
                self.log(format!("slow: node {v} +{ms} ms on every message it sends"));
                c.set_faults(v, json!({ "delay_ms": delays })).await?;
                tokio::time::sleep(hold).await;
                c.heal().await;
                self.log("heal".into());
            }
            Kind::Flap => {
                let (a, b) = self.split(c).await;
                self.log(format!("flap {a:?} | {b:?}"));
                let end = tokio::time::Instant::now() + hold;
                while tokio::time::Instant::now() < end {
                    c.partition(&[a.clone(), b.clone()]).await?;
                    let on = self.ms(100, 400);
                    tokio::time::sleep(on).await;
                    c.heal().await;
                    let off = self.ms(100, 400);
                    tokio::time::sleep(off).await;
                }
                self.log("heal".into());
            }
            Kind::Transfer => {
                let leader = c.leader().await;
                let followers: Vec<u64> = c.ids().into_iter().filter(|i| Some(*i) != leader).collect();
                let to = *followers.choose(&mut self.rng).unwrap_or(&1);
                let via = *c.ids().choose(&mut self.rng).unwrap_or(&1);
                let r = c.transfer_leader(via, to).await;
                self.log(format!("transfer leadership {leader:?} -> {to} via {via}: {}", outcome(&r)));
            }
            Kind::Membership => {
                let v = *c.ids().choose(&mut self.rng).unwrap_or(&1);
                let via =
                    *c.ids().iter().filter(|i| **i != v).collect::<Vec<_>>().choose(&mut self.rng).map_or(&1, |v| v);
                let r = c.remove(via, v).await;
                self.log(format!("remove node {v} via {via}: {}", outcome(&r)));
                tokio::time::sleep(hold).await;
                // Added back by whoever leads now; retried, since leadership may be moving.
                for _ in 0..20 {
                    let via = c.leader().await.filter(|l| *l != v).unwrap_or(via);
                    let r = c.join(via, v).await;
                    self.log(format!("add node {v} back via {via}: {}", outcome(&r)));
                    if r.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Kind::SlowDisk => {
                let v = self.victim(c).await;
                let ms = self.rng.random_range(50..=500u64);
                self.log(format!("slow disk: node {v} +{ms} ms per log fsync"));
                c.set_faults(v, json!({ "disk_delay_ms": ms })).await?;
                tokio::time::sleep(hold).await;
                c.heal().await;
                self.log("heal".into());
            }
            Kind::DiskFail => {
                let v = self.victim(c).await;
                self.log(format!("disk of node {v} fails"));
                c.set_faults(v, json!({ "disk_fail": true })).await?;
                tokio::time::sleep(hold).await;
                c.sigkill(v)?;
                c.restart(v)?;
                self.log(format!("node {v} restarted on its data"));
            }
            Kind::Combined => {
                let (a, b) = self.split(c).await;
                self.log(format!("partition {a:?} | {b:?}"));
                c.partition(&[a.clone(), b.clone()]).await?;
                let inner = self.ms(300, 1500);
                tokio::time::sleep(inner).await;
                let v = self.victim(c).await;
                if self.rng.random_bool(0.5) {
                    self.kill_for(c, v, hold).await?;
                } else {
                    self.pause_for(c, v, hold).await?;
                }
                c.heal().await;
                self.log("heal".into());
            }
        }
        Ok(())
    }

    async fn kill_for(&mut self, c: &mut ProcCluster, v: u64, hold: Duration) -> Result<()> {
        self.log(format!("kill node {v}"));
        c.sigkill(v)?;
        tokio::time::sleep(hold).await;
        c.restart(v)?;
        self.log(format!("restart node {v}"));
        Ok(())
    }

    async fn pause_for(&mut self, c: &mut ProcCluster, v: u64, hold: Duration) -> Result<()> {
        self.log(format!("pause node {v}"));
        c.pause(v)?;
        tokio::time::sleep(hold).await;
        c.resume(v)?;
        self.log(format!("resume node {v}"));
        Ok(())
    }
}

fn outcome(r: &Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("failed: {}", e.to_string().chars().take(160).collect::<String>()),
    }
}
