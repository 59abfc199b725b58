//! A running node: its replica plus one listener serving gRPC and HTTP, and the init/join
//! steps that make it part of a cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quorumdb_replication::kv::{self, KvApp};
use quorumdb_replication::{Replica, ReplicaConfig, Router};
use quorumdb_sql::{Engine, SqlApplication, VectorIndexes};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::context::{NodeContext, Surfaces};
use crate::error::ServerError;

/// One QuorumDB node, running.
pub struct Node {
    pub replica: Replica,
    pub sql: Arc<Engine>,
    pub vectors: Arc<VectorIndexes>,
    /// The address the node actually listens on (resolves a port 0).
    pub addr: SocketAddr,
    /// Where PostgreSQL and Redis clients connect, if served.
    pub pg_addr: Option<SocketAddr>,
    pub redis_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The pgwire and RESP accept loops.
    listeners: Vec<JoinHandle<()>>,
    joiner: Option<JoinHandle<()>>,
}

impl Node {
    /// Opens the node's data, starts serving, and initializes or joins a cluster if asked.
    /// Returns once the node serves; joining continues in the background until it succeeds.
    pub async fn start(config: NodeConfig) -> Result<Self, ServerError> {
        crate::telemetry::install_recorder();
        config.check_plaintext()?;
        let tls = config.tls.clone().map(crate::tls::Tls::load).transpose()?;
        let listener = tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| ServerError::Bind {
            what: "gRPC and HTTP",
            addr: config.listen.clone(),
            source: e,
        })?;
        let addr = listener.local_addr()?;
        let pg_listener = bind_optional(config.pg_listen.as_deref(), "PostgreSQL").await?;
        let redis_listener = bind_optional(config.redis_listen.as_deref(), "Redis").await?;
        let pg_addr = pg_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let redis_addr = redis_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let mut rc = ReplicaConfig::new(config.id, advertise.clone(), config.data_dir.clone());
        rc.heartbeat_ms = config.heartbeat_ms;
        rc.election_timeout_ms = (config.election_timeout_ms, config.election_timeout_ms * 2);
        rc.snapshot_every = config.snapshot_every;
        rc.keep_logs = config.snapshot_every / 5;
        rc.snapshot_rate = config.snapshot_rate;
        rc.max_format = config.max_format;
        rc.tls = tls.clone().map(|t| quorumdb_replication::network::PeerTls(Arc::new(move || t.client_config())));
        crate::backup::remove_leftovers(&config.data_dir);
        // Absolute now: a relative `--backup-dir` means the one under the directory started in.
        let backup_dir = std::path::absolute(config.backup_dir())?;
        let vectors = VectorIndexes::new(Some(quorumdb_sql::vector_indexes::dump_dir(&config.data_dir)));
        let apps = Router::new()
            .with(kv::TAG, Arc::new(KvApp))
            .with(quorumdb_sql::TAG, Arc::new(SqlApplication::new(vectors.clone())));
        let replica = Replica::open(rc, Arc::new(apps)).await?;
        let sql = Arc::new(Engine::new(Arc::new(replica.reader().clone()), vectors.clone()));

        let (stop, mut stopped) = watch::channel(false);
        let state = NodeContext {
            replica: replica.clone(),
            sql: sql.clone(),
            vectors: vectors.clone(),
            surfaces: Arc::new(Surfaces {
                pg_addr,
                redis_addr,
                password: config.password.clone(),
                public_status: config.public_status,
                tls: tls.clone(),
                peer_http: Default::default(),
            }),
            auth: crate::auth::authenticator(),
            data_dir: config.data_dir.clone(),
            backup_dir,
        };
        let mut listeners = Vec::new();
        if let Some(l) = pg_listener {
            listeners.push(tokio::spawn(crate::pg::serve(l, state.clone(), stopped.clone())));
            tracing::info!(addr = ?pg_addr, "serving PostgreSQL clients");
        }
        listeners.push(tokio::spawn(crate::kv::purge_expired(replica.clone(), stopped.clone())));
        if let Some(l) = redis_listener {
            listeners.push(tokio::spawn(crate::resp::serve(l, state.clone(), stopped.clone())));
            tracing::info!(addr = ?redis_addr, "serving Redis clients");
        }
        let router = crate::grpc::routes(state.clone())
            .into_axum_router()
            .merge(crate::http::router(state.clone()))
            .fallback(crate::http::not_found)
            .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::guard::middleware));
        if let Some(tls) = tls.clone() {
            listeners.push(tokio::spawn(reload_on_sighup(tls)));
        }
        let listener = crate::tls::MainListener::new(listener, tls.clone());
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let service = router.into_make_service_with_connect_info::<crate::tls::Peer>();
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "server stopped with an error");
            }
        });
        tracing::info!(id = config.id, %addr, data_dir = %config.data_dir.display(), "node listening (gRPC + HTTP)");

        if config.init {
            replica.initialize().await?;
            if let Some(password) = config.admin_password.clone() {
                listeners.push(tokio::spawn(create_admin(replica.clone(), sql.clone(), password)));
            }
        }
        let joiner = config.join.clone().map(|seed| {
            let (id, me, password) = (config.id, advertise.clone(), config.admin_password.clone());
            tokio::spawn(join_until_done(seed, id, me, password, tls.clone()))
        });
        Ok(Self { replica, sql, vectors, addr, pg_addr, redis_addr, stop, server, listeners, joiner })
    }

    /// Stops serving and shuts Raft down; the data stays for a restart.
    pub async fn stop(self) {
        if let Some(j) = &self.joiner {
            j.abort();
        }
        let _ = self.stop.send(true);
        for l in &self.listeners {
            l.abort();
        }
        // Let in-flight requests finish, but do not wait forever for idle keep-alive clients.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server).await;
        self.replica.shutdown().await;
        // The next start loads the graphs instead of rebuilding them.
        let vectors = self.vectors.clone();
        let _ = tokio::task::spawn_blocking(move || vectors.dump_all()).await;
    }
}

async fn bind_optional(addr: Option<&str>, what: &'static str) -> Result<Option<tokio::net::TcpListener>, ServerError> {
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| ServerError::Bind {
        what,
        addr: addr.to_string(),
        source: e,
    })?;
    Ok(Some(l))
}

/// Asks `seed` (any member) to add us, until it answers yes. Joining is idempotent, so a
/// restarted node that was already a member just gets "ok".
/// Gives the built-in role `admin` a login with `password` on a new cluster, once it writes
/// format 3 (roles): from then on every surface requires a login. Only the password's SCRAM
/// verifier enters the log. Does nothing if `admin` already has a login (a restart).
async fn create_admin(replica: Replica, sql: Arc<Engine>, password: String) {
    let text = format!("CREATE ROLE admin LOGIN PASSWORD '{}'", password.replace('\'', "''"));
    for attempt in 0u32.. {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if attempt == 600 {
            tracing::error!("could not create the admin login in 2 minutes; the cluster stays without logins");
            return;
        }
        if quorumdb_state::Proposer::format(&replica) < quorumdb_sql::auth::ROLES_FORMAT {
            continue;
        }
        match sql.catalog() {
            Ok(c) if c.roles.get("admin").is_some_and(|r| r.login) => return,
            Ok(_) => {}
            Err(_) => continue,
        }
        let parsed = match sql.parse(&text, &[]) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "the admin password cannot be set");
                return;
            }
        };
        match sql.execute(parsed, &replica).await {
            Ok(_) => {
                tracing::info!("created the admin login: every surface now requires a login");
                return;
            }
            Err(e) => tracing::debug!(error = %e, attempt, "creating the admin login; retrying"),
        }
    }
}

async fn join_until_done(
    seed: String,
    id: u64,
    addr: String,
    admin_password: Option<String>,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    let client = match crate::tls::peer_http(tls.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client to join the cluster");
            return;
        }
    };
    let scheme = crate::tls::scheme(tls.as_deref());
    let url = format!("{scheme}://{seed}/v1/cluster/join");
    let body = serde_json::json!({ "id": id, "addr": addr });
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut request = client.post(&url).json(&body);
        if let Some(p) = &admin_password {
            request = request.basic_auth("admin", Some(p));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%seed, "joined the cluster");
                return;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(%seed, %status, body = %text, attempt, "join refused; retrying");
            }
            Err(e) => tracing::warn!(%seed, error = %e, attempt, "join request failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Re-reads the certificate, key and CA files on every SIGHUP; new connections use them.
async fn reload_on_sighup(tls: Arc<crate::tls::Tls>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: certificates are read only at start");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: re-read the TLS certificate, key and CA"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the TLS files are not usable; keeping the ones loaded"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        use axum::serve::Listener;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = crate::tls::MainListener::new(listener, None);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (io, _) = listener.accept().await;
        let crate::tls::MaybeTls::Plain(io) = io else { panic!("no TLS configured") };
        assert!(io.nodelay().is_ok_and(|on| on), "the accepted socket must have TCP_NODELAY");
        drop(client);
    }
}
