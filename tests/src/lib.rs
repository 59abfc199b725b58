//! Test helpers: in-process clusters on loopback with temp dirs, nodes killed and restarted by
//! id, and HTTP helpers. The tests themselves live in `tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a failed test

pub mod chaos;
pub mod corpus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quorumdb_server::{Node, NodeConfig};
use serde_json::Value;

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs` with `what`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster of in-process nodes, each with its own data dir and port.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    configs: BTreeMap<u64, NodeConfig>,
    pub http: reqwest::Client,
    /// `https` for a cluster with certificates ([`Self::start_tls`]).
    pub scheme: &'static str,
    pub snapshot_every: u64,
}

impl TestCluster {
    /// Starts `n` nodes: node 1 initializes, the others join it; returns once all vote.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, 50_000).await
    }

    pub async fn start_with(n: u64, snapshot_every: u64) -> Self {
        Self::start_tweaked(n, snapshot_every, |_| {}).await
    }

    /// Starts `n` nodes, each config changed by `tweak` first.
    pub async fn start_tweaked(n: u64, snapshot_every: u64, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self::start_over(n, snapshot_every, tweak, http, "http").await
    }

    /// Starts `n` nodes with TLS on every port and between nodes: node `i` uses
    /// `node-<i>.crt`/`.key` and `ca.crt` from `certs` (as `quorumdb cert` writes them); the
    /// harness's HTTP client trusts that CA.
    pub async fn start_tls(n: u64, certs: &std::path::Path, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let ca = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"))
            .build()
            .unwrap();
        let certs = certs.to_path_buf();
        let with_tls = move |cfg: &mut NodeConfig| {
            cfg.tls = Some(quorumdb_server::tls::TlsFiles {
                cert: certs.join(format!("node-{}.crt", cfg.id)),
                key: certs.join(format!("node-{}.key", cfg.id)),
                ca: certs.join("ca.crt"),
            });
            tweak(cfg);
        };
        Self::start_over(n, 50_000, with_tls, http, "https").await
    }

    async fn start_over(
        n: u64,
        snapshot_every: u64,
        tweak: impl Fn(&mut NodeConfig),
        http: reqwest::Client,
        scheme: &'static str,
    ) -> Self {
        init_logging();
        let mut c = Self {
            dir: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            http,
            scheme,
            snapshot_every,
        };
        c.add_node_with(1, None, &tweak).await;
        c.wait_leader().await;
        let seed = c.addr(1);
        for id in 2..=n {
            c.add_node_with(id, Some(seed.clone()), &tweak).await;
        }
        c.wait_voters(n as usize).await;
        c
    }

    /// Starts node `id` (new data dir); it joins through `seed`, or initializes without one.
    pub async fn add_node(&mut self, id: u64, seed: Option<String>) {
        self.add_node_with(id, seed, |_| {}).await
    }

    /// [`Self::add_node`] with the node's config changed by `tweak` first (kept for restarts).
    pub async fn add_node_with(&mut self, id: u64, seed: Option<String>, tweak: impl FnOnce(&mut NodeConfig)) {
        let mut cfg = NodeConfig::new(id, self.dir.path().join(format!("n{id}")), "127.0.0.1:0");
        cfg.heartbeat_ms = 50;
        cfg.election_timeout_ms = 300;
        cfg.snapshot_every = self.snapshot_every;
        cfg.init = seed.is_none();
        cfg.join = seed;
        cfg.pg_listen = Some("127.0.0.1:0".into());
        cfg.redis_listen = Some("127.0.0.1:0".into());
        tweak(&mut cfg);
        let node = Node::start(cfg.clone()).await.expect("node starts");
        // Keep the ports for restarts.
        cfg.listen = node.addr.to_string();
        cfg.pg_listen = node.pg_addr.map(|a| a.to_string());
        cfg.redis_listen = node.redis_addr.map(|a| a.to_string());
        cfg.init = false;
        self.configs.insert(id, cfg);
        self.nodes.insert(id, node);
    }

    /// Node `id`'s config, as its next restart will use it.
    pub fn config_mut(&mut self, id: u64) -> &mut NodeConfig {
        self.configs.get_mut(&id).expect("a known node")
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.configs[&id].data_dir.clone()
    }

    /// The directory node `id` writes backups below (`--backup-dir`; by default
    /// `<data dir>/backups`, or what a tweak set).
    pub fn backup_dir(&self, id: u64) -> std::path::PathBuf {
        self.configs[&id].backup_dir()
    }

    /// Sends `method path` with a JSON body (or none) to node `id`; the status and JSON answer.
    pub async fn call(&self, id: u64, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}://{}{path}", self.scheme, self.addr(id));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub fn addr(&self, id: u64) -> String {
        self.configs[&id].listen.clone()
    }

    /// Node `id`'s PostgreSQL wire protocol address.
    pub fn pg_addr(&self, id: u64) -> String {
        self.configs[&id].pg_listen.clone().expect("pgwire is served")
    }

    /// Node `id`'s RESP (Redis protocol) address.
    pub fn redis_addr(&self, id: u64) -> String {
        self.configs[&id].redis_listen.clone().expect("RESP is served")
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Stops node `id` (its data stays).
    pub async fn kill(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("node is running");
        node.stop().await;
    }

    /// Starts node `id` again from its data dir, on its old port.
    pub async fn restart(&mut self, id: u64) {
        let cfg = self.configs[&id].clone();
        let node = wait_for(10, "the node to restart", || {
            let cfg = cfg.clone();
            async move { Node::start(cfg).await.ok() }
        })
        .await;
        self.nodes.insert(id, node);
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let r = self.http.get(format!("{}://{}/v1/status", self.scheme, self.addr(id))).send().await.ok()?;
        r.json().await.ok()
    }

    /// Waits until every running node applied the newest format version (a new cluster moves
    /// from 0 to it within about a second; request ids and roles need it).
    pub async fn wait_format(&self) {
        let want = u64::from(quorumdb_replication::format::CURRENT);
        for id in self.running() {
            wait_for(30, "the cluster's format version", || async move {
                (self.status(id).await?["format"].as_u64()? == want).then_some(())
            })
            .await;
        }
    }

    /// The leader every running node agrees on.
    pub async fn wait_leader(&self) -> u64 {
        wait_for(20, "a leader all running nodes agree on", || async {
            let mut leaders = Vec::new();
            for id in self.running() {
                leaders.push(self.node(id).replica.metrics().current_leader?);
            }
            leaders.dedup();
            (leaders.len() == 1 && self.nodes.contains_key(&leaders[0])).then(|| leaders[0])
        })
        .await
    }

    /// Waits until the leader committed a membership of `n` voters and every running node knows it
    /// (a follower learns the final config one heartbeat after the leader commits it).
    pub async fn wait_voters(&self, n: usize) {
        wait_for(30, "the voters to join", || async {
            let leader = self.wait_leader().await;
            let m = self.node(leader).replica.metrics();
            let committed = *m.committed_membership_config.log_id();
            let leader_done =
                m.membership_config.membership().voter_ids().count() == n && m.membership_config.log_id() == &committed;
            let all_know = self.running().into_iter().all(|id| {
                let m = self.node(id).replica.metrics();
                m.membership_config.log_id() == &committed
            });
            (leader_done && all_know).then_some(())
        })
        .await
    }

    /// Waits until every running node applied the same index and has the same checksum.
    pub async fn wait_converged(&self) -> (u64, u64) {
        wait_for(30, "replicas to converge", || async {
            let mut seen = Vec::new();
            for id in self.running() {
                let (applied, checksum) = self.node(id).replica.reader().applied().ok()?;
                seen.push((applied?.index, checksum));
            }
            seen.dedup();
            (seen.len() == 1).then(|| seen[0])
        })
        .await
    }

    pub async fn put(&self, id: u64, key: &str, value: &str) -> reqwest::Result<reqwest::Response> {
        self.http.put(format!("{}://{}/v1/kv/{key}", self.scheme, self.addr(id))).body(value.to_string()).send().await
    }

    /// `Some(value)`, `None` for 404; panics on any other answer.
    pub async fn get(&self, id: u64, key: &str, consistency: &str) -> Option<String> {
        let r = self
            .http
            .get(format!("{}://{}/v1/kv/{key}?consistency={consistency}", self.scheme, self.addr(id)))
            .send()
            .await
            .expect("get");
        match r.status().as_u16() {
            200 => Some(r.text().await.unwrap()),
            404 => None,
            s => panic!("GET {key} on node {id}: status {s}: {}", r.text().await.unwrap_or_default()),
        }
    }

    pub async fn post(&self, id: u64, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}://{}{path}", self.scheme, self.addr(id)))
            .json(&body)
            .send()
            .await
            .expect("post");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Runs SQL on node `id` at `consistency`; returns the status and the JSON body.
    pub async fn sql(&self, id: u64, sql: &str, consistency: &str) -> (u16, Value) {
        let url = format!("{}://{}/v1/sql?consistency={consistency}", self.scheme, self.addr(id));
        let r = self.http.post(url).json(&serde_json::json!({ "sql": sql })).send().await.expect("sql request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The single cell of a one-row, one-column SQL answer; panics on an error.
    pub async fn sql_value(&self, id: u64, sql: &str, consistency: &str) -> Value {
        let (s, v) = self.sql(id, sql, consistency).await;
        assert_eq!(s, 200, "{sql} on node {id}: {v}");
        v["results"][0]["rows"][0][0].clone()
    }

    pub async fn stop_all(&mut self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}
