//! A cluster of real `quorumdb` processes on loopback for the chaos suite: start, SIGKILL and
//! restart, SIGSTOP and SIGCONT, transport fault rules, leader transfer and membership changes,
//! all through the same HTTP API an operator uses, plus the final comparison of replicas.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// One node: its addresses, command line and, while it runs, its process.
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub redis_addr: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    pub paused: bool,
}

impl NodeProc {
    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(bin)
            .args(&self.args)
            .env("RUST_LOG", std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let child = self.child.as_ref().context("node is not running")?;
        kill(Pid::from_raw(child.id() as i32), sig)?;
        Ok(())
    }

    /// Whether the process died by itself (a crash); reaps it.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            if self.paused {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The processes of one cluster and an HTTP client to drive them.
pub struct ProcCluster {
    pub nodes: Vec<NodeProc>,
    bin: PathBuf,
    pub http: reqwest::Client,
    pub dir: PathBuf,
}

impl ProcCluster {
    /// Starts `n` nodes in `dir`: node 1 initialises, the others join it; returns once all vote.
    pub async fn start(bin: &Path, dir: &Path, n: u64) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).pool_max_idle_per_host(64).build()?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let redis_addr = format!("127.0.0.1:{}", free_port()?);
            let mut args: Vec<String> = [
                "start",
                "--id",
                &id.to_string(),
                "--data-dir",
                &dir.join(format!("n{id}")).display().to_string(),
                "--listen",
                &addr,
                "--heartbeat-ms",
                "50",
                "--election-timeout-ms",
                "300",
                "--pg-listen",
                "127.0.0.1:0",
                "--redis-listen",
                &redis_addr,
            ]
            .map(String::from)
            .to_vec();
            if id == 1 {
                args.push("--init".into());
            } else {
                args.extend(["--join".into(), nodes.first().map(|n: &NodeProc| n.addr.clone()).unwrap_or_default()]);
            }
            let log = dir.join(format!("n{id}.log"));
            nodes.push(NodeProc { id, addr, redis_addr, args, child: None, log, paused: false });
        }
        let mut c = Self { nodes, bin: bin.to_path_buf(), http, dir: dir.to_path_buf() };
        for i in 0..c.nodes.len() {
            c.nodes[i].spawn(&c.bin)?;
            // A joiner needs node 1 to lead already.
            if i == 0 {
                c.wait(30, "node 1 to lead", |s| s.iter().flatten().any(|s| s["role"] == "leader")).await?;
            }
        }
        let want = n as usize;
        c.wait(60, "every node to vote", |s| {
            s.iter().flatten().any(|s| s["role"] == "leader" && s["members"].as_array().map(Vec::len) == Some(want))
        })
        .await?;
        // Request ids (idempotency keys) need the newest format, which the leader moves to once
        // every member reports it.
        c.wait(30, "the newest format version on every node", |s| {
            s.iter().all(|s| s.as_ref().is_some_and(|s| s["format"] == s["max_format"]))
        })
        .await?;
        for node in &mut c.nodes {
            node.args.retain(|a| a != "--init");
        }
        Ok(c)
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[id as usize - 1]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let n = self.node(id);
        if !n.running() || n.paused {
            return None;
        }
        let r = self.http.get(format!("http://{}/v1/status", n.addr)).send().await.ok()?;
        r.json().await.ok()
    }

    pub async fn statuses(&self) -> Vec<Option<Value>> {
        futures::future::join_all(self.ids().into_iter().map(|id| self.status(id))).await
    }

    /// The leader most running nodes name, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes = std::collections::BTreeMap::new();
        for s in self.statuses().await.into_iter().flatten() {
            if let Some(l) = s["leader"].as_u64() {
                *votes.entry(l).or_insert(0) += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, v)| *v).map(|(l, _)| l)
    }

    async fn wait(&self, secs: u64, what: &str, done: impl Fn(&[Option<Value>]) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.statuses().await) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out after {secs} s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn sigkill(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id);
        if let Some(mut c) = n.child.take() {
            if n.paused {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            }
            c.kill()?;
            c.wait()?;
        }
        n.paused = false;
        Ok(())
    }

    pub fn restart(&mut self, id: u64) -> Result<()> {
        let bin = self.bin.clone();
        let n = self.node_mut(id);
        if !n.running() {
            n.spawn(&bin)?;
        }
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id);
        if n.running() && !n.paused {
            n.signal(Signal::SIGSTOP)?;
            n.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id);
        if n.running() && n.paused {
            n.signal(Signal::SIGCONT)?;
            n.paused = false;
        }
        Ok(())
    }

    /// Sets node `id`'s transport fault rules (a JSON `FaultRules`).
    pub async fn set_faults(&self, id: u64, rules: Value) -> Result<()> {
        let n = self.node(id);
        if !n.running() || n.paused {
            return Ok(());
        }
        let r = self.http.put(format!("http://{}/v1/debug/faults", n.addr)).json(&rules).send().await?;
        if !r.status().is_success() {
            bail!("node {id} refused fault rules {rules}: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Splits the cluster: each node reaches only the nodes of its own group (both directions).
    pub async fn partition(&self, groups: &[Vec<u64>]) -> Result<()> {
        for g in groups {
            let others: Vec<u64> = self.ids().into_iter().filter(|i| !g.contains(i)).collect();
            for &id in g {
                self.set_faults(id, json!({"drop_to": others, "drop_from": others})).await?;
            }
        }
        Ok(())
    }

    /// Clears every running node's fault rules (best effort: a node being restarted has none).
    pub async fn heal(&self) {
        for id in self.ids() {
            let _ = self.set_faults(id, json!({})).await;
        }
    }

    /// Asks (any node, which forwards to the leader) for leadership to move to `to`.
    pub async fn transfer_leader(&self, via: u64, to: u64) -> Result<()> {
        self.post(via, "/v1/cluster/transfer-leader", json!({"to": to})).await
    }

    pub async fn remove(&self, via: u64, id: u64) -> Result<()> {
        self.post(via, "/v1/cluster/remove", json!({"id": id})).await
    }

    pub async fn join(&self, via: u64, id: u64) -> Result<()> {
        let addr = self.node(id).addr.clone();
        self.post(via, "/v1/cluster/join", json!({"id": id, "addr": addr})).await
    }

    async fn post(&self, via: u64, path: &str, body: Value) -> Result<()> {
        let r = self
            .http
            .post(format!("http://{}{path}", self.node(via).addr))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("{path} {body}: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Resumes, restarts and heals everything, then waits until every node is a voter again
    /// and all report one leader.
    pub async fn heal_all(&mut self) -> Result<()> {
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id)?;
        }
        self.heal().await;
        let n = self.nodes.len();
        self.wait(60, "one leader named by every node", |s| {
            let leaders: Vec<Option<u64>> = s.iter().map(|s| s.as_ref().and_then(|s| s["leader"].as_u64())).collect();
            leaders.iter().all(|l| l.is_some() && *l == leaders[0])
        })
        .await?;
        // A node removed by a membership fault comes back as a voter.
        let leader = self.leader().await.context("no leader after healing")?;
        let s = self.status(leader).await.unwrap_or_default();
        let have: Vec<u64> = s["members"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_u64()).collect();
        for m in self.ids().into_iter().filter(|i| !have.contains(i)) {
            self.join(leader, m).await.with_context(|| format!("re-adding node {m}"))?;
        }
        self.wait(60, "every node a voter", |s| {
            s.iter().all(|s| s.as_ref().and_then(|s| s["members"].as_array().map(Vec::len)) == Some(n))
        })
        .await
    }

    /// Waits until every node has applied the same index, then compares their checksums and
    /// full-state digests; returns the common `(applied, checksum, digest)`.
    pub async fn converged(&self, secs: u64) -> Result<(u64, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Vec::new();
        loop {
            let mut v = Vec::new();
            for id in self.ids() {
                let r = self.http.get(format!("http://{}/v1/debug/digest", self.node(id).addr)).send().await;
                let d: Option<Value> = match r {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                v.push(d.map(|d| {
                    (
                        d["applied"].as_u64().unwrap_or(0),
                        d["checksum"].as_str().unwrap_or("").to_string(),
                        d["digest"].as_str().unwrap_or("").to_string(),
                    )
                }));
            }
            if v.iter().all(Option::is_some) {
                let v: Vec<_> = v.into_iter().flatten().collect();
                if v.iter().all(|x| x.0 == v[0].0) {
                    if v.iter().all(|x| x == &v[0]) {
                        return Ok(v[0].clone());
                    }
                    bail!("replicas diverge at applied index {}: {v:?}", v[0].0);
                }
                last = v;
            }
            if Instant::now() > deadline {
                bail!("replicas did not reach one applied index in {secs} s: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Nodes whose process ended without being killed by us: crashes.
    pub fn crashed(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(status) = n.exited() {
                out.push((n.id, status.to_string()));
            }
        }
        out
    }

    pub fn log_of(&self, id: u64) -> &Path {
        &self.node(id).log
    }
}
