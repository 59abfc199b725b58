//! Node configuration: command-line flags, environment variables (`QUORUMDB_*`) and an
//! optional TOML file, in that order of precedence.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::error::ServerError;

/// `quorumdb start` flags. Every flag can also come from the environment or the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct StartArgs {
    /// TOML file with any of the settings below (flags and env vars override it).
    #[arg(long, env = "QUORUMDB_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster (> 0).
    #[arg(long, env = "QUORUMDB_ID")]
    pub id: Option<u64>,
    /// Where this node keeps its data (Raft log, state, snapshots).
    #[arg(long, env = "QUORUMDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The only directory `POST /v1/backup` (`quorumdb backup`) writes below; default
    /// `<data-dir>/backups`.
    #[arg(long, env = "QUORUMDB_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Address for gRPC (Raft transport and client API) and HTTP, e.g. 127.0.0.1:7001.
    #[arg(long, env = "QUORUMDB_LISTEN")]
    pub listen: Option<String>,
    /// Address peers use to reach this node, if not the listen address.
    #[arg(long, env = "QUORUMDB_ADVERTISE")]
    pub advertise: Option<String>,
    /// Start a new cluster with this node as its first member.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster that this node (any member) belongs to.
    #[arg(long, env = "QUORUMDB_JOIN")]
    pub join: Option<String>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "QUORUMDB_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in milliseconds (the maximum is twice this).
    #[arg(long, env = "QUORUMDB_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Build a snapshot after this many log entries.
    #[arg(long, env = "QUORUMDB_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Pace snapshot streaming to a peer at this many MB/s (0: as fast as it goes), so a
    /// catching-up node does not take all the bandwidth.
    #[arg(long, env = "QUORUMDB_SNAPSHOT_RATE_MB")]
    pub snapshot_rate_mb: Option<u64>,
    /// Address for PostgreSQL clients (psql, drivers); `off` disables it. Default 127.0.0.1:5433.
    #[arg(long, env = "QUORUMDB_PG_LISTEN")]
    pub pg_listen: Option<String>,
    /// Address for Redis (RESP) clients of the KV table; `off` disables it. Default 127.0.0.1:6380.
    #[arg(long, env = "QUORUMDB_REDIS_LISTEN")]
    pub redis_listen: Option<String>,
    /// Password PostgreSQL and Redis clients must give (any user name); none: no authentication.
    #[arg(long, env = "QUORUMDB_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A file whose first line is the password of the built-in role `admin`: given with
    /// `--init`, the new cluster requires logins on every surface from its first second;
    /// given with `--join`, the node joins with it. Or `QUORUMDB_ADMIN_PASSWORD`.
    #[arg(long, env = "QUORUMDB_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// With logins required, still answer `/v1/status`, `/metrics` and health checks without one.
    #[arg(long)]
    pub public_status: bool,
    /// The node's certificate (PEM, leaf first; `quorumdb cert node` makes one): TLS on every
    /// port, and the identity the node presents to its peers. Needs `--tls-key` and `--tls-ca`.
    #[arg(long, env = "QUORUMDB_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "QUORUMDB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers' and clients' certificates must chain to it.
    #[arg(long, env = "QUORUMDB_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Serve without TLS on an address other than loopback (anyone on the network can read
    /// and forge the traffic, and any process can talk Raft to the node).
    #[arg(long)]
    pub insecure: bool,
    /// Act as a binary that reads format versions only up to this one (rolling-upgrade tests).
    #[arg(long, hide = true)]
    pub max_format_version: Option<u8>,
}

/// The config file's shape (same names as the flags, with underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    backup_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    init: Option<bool>,
    join: Option<String>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_every: Option<u64>,
    snapshot_rate_mb: Option<u64>,
    pg_listen: Option<String>,
    redis_listen: Option<String>,
    password: Option<String>,
    admin_password_file: Option<PathBuf>,
    public_status: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    insecure: Option<bool>,
}

/// A node's resolved configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    /// The directory backups are written below (`None`: `<data_dir>/backups`); see
    /// [`Self::backup_dir`].
    pub backup_dir: Option<PathBuf>,
    /// Listen address; port 0 picks a free port (tests).
    pub listen: String,
    pub advertise: Option<String>,
    pub init: bool,
    pub join: Option<String>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
    /// Snapshot streaming pace, bytes per second (0: unlimited).
    pub snapshot_rate: u64,
    /// PostgreSQL wire protocol listen address (`None`: not served).
    pub pg_listen: Option<String>,
    /// RESP (Redis protocol) listen address (`None`: not served).
    pub redis_listen: Option<String>,
    /// The password pgwire and RESP clients must give, if any.
    pub password: Option<String>,
    /// The password of the built-in role `admin` (set at `--init`, used to `--join`).
    pub admin_password: Option<String>,
    /// `/v1/status`, `/metrics` and health checks answer without a login.
    pub public_status: bool,
    /// The newest format version this node reads and writes (lower only in upgrade tests).
    pub max_format: quorumdb_replication::format::FormatVersion,
    /// Certificate, key and CA files: TLS on every port and between nodes.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Plaintext allowed on addresses other than loopback.
    pub insecure: bool,
}

/// `off` (or an empty value) turns a listener off.
fn listener_setting(value: Option<String>, default: &str) -> Option<String> {
    match value {
        None => Some(default.to_string()),
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => None,
        Some(v) => Some(v),
    }
}

impl NodeConfig {
    /// A config with defaults for everything but identity and place.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        Self {
            id,
            data_dir: data_dir.into(),
            backup_dir: None,
            listen: listen.into(),
            advertise: None,
            init: false,
            join: None,
            heartbeat_ms: 100,
            election_timeout_ms: 500,
            snapshot_every: 50_000,
            snapshot_rate: 0,
            pg_listen: None,
            redis_listen: None,
            password: None,
            admin_password: None,
            public_status: false,
            max_format: quorumdb_replication::format::CURRENT,
            tls: None,
            insecure: false,
        }
    }

    /// The directory backups are written below: `--backup-dir`, or `<data_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir.clone().unwrap_or_else(|| self.data_dir.join("backups"))
    }

    pub fn from_args(args: StartArgs) -> Result<Self, ServerError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let id = args.id.or(file.id).ok_or_else(|| ServerError::Config("--id is required".into()))?;
        if id == 0 {
            return Err(ServerError::Config("--id must be greater than 0".into()));
        }
        let data_dir =
            args.data_dir.or(file.data_dir).ok_or_else(|| ServerError::Config("--data-dir is required".into()))?;
        let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7001".into());
        let mut c = Self::new(id, data_dir, listen);
        c.backup_dir = args.backup_dir.or(file.backup_dir).filter(|d| !d.as_os_str().is_empty());
        c.advertise = args.advertise.or(file.advertise);
        c.init = args.init || file.init.unwrap_or(false);
        c.join = args.join.or(file.join);
        if c.init && c.join.is_some() {
            return Err(ServerError::Config("--init and --join exclude each other".into()));
        }
        c.heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(c.heartbeat_ms);
        c.election_timeout_ms = args.election_timeout_ms.or(file.election_timeout_ms).unwrap_or(c.election_timeout_ms);
        c.snapshot_every = args.snapshot_every.or(file.snapshot_every).unwrap_or(c.snapshot_every);
        c.snapshot_rate = args.snapshot_rate_mb.or(file.snapshot_rate_mb).unwrap_or(0).saturating_mul(1_000_000);
        c.pg_listen = listener_setting(args.pg_listen.or(file.pg_listen), "127.0.0.1:5433");
        c.redis_listen = listener_setting(args.redis_listen.or(file.redis_listen), "127.0.0.1:6380");
        c.password = args.password.or(file.password).filter(|p| !p.is_empty());
        c.public_status = args.public_status || file.public_status.unwrap_or(false);
        c.admin_password = match args.admin_password_file.or(file.admin_password_file) {
            Some(f) => {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| ServerError::Config(format!("--admin-password-file {}: {e}", f.display())))?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            None => std::env::var("QUORUMDB_ADMIN_PASSWORD").ok(),
        };
        if c.admin_password.as_deref() == Some("") {
            return Err(ServerError::Config("the admin password may not be empty".into()));
        }
        if c.election_timeout_ms < 3 * c.heartbeat_ms {
            return Err(ServerError::Config("the election timeout must be at least 3 heartbeats".into()));
        }
        for (flag, addr) in [("--advertise", &c.advertise), ("--join", &c.join)] {
            if let Some(addr) = addr {
                quorumdb_replication::network::check_peer_addr(addr)
                    .map_err(|e| ServerError::Config(format!("{flag}: {e}")))?;
            }
        }
        c.tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key), args.tls_ca.or(file.tls_ca)) {
            (Some(cert), Some(key), Some(ca)) => Some(crate::tls::TlsFiles { cert, key, ca }),
            (None, None, None) => None,
            _ => return Err(ServerError::Config("--tls-cert, --tls-key and --tls-ca go together".into())),
        };
        c.insecure = args.insecure || file.insecure.unwrap_or(false);
        c.check_plaintext()?;
        if let Some(v) = args.max_format_version {
            if v > quorumdb_replication::format::CURRENT {
                return Err(ServerError::Config(format!(
                    "--max-format-version {v}: this binary reads up to {}",
                    quorumdb_replication::format::CURRENT
                )));
            }
            c.max_format = v;
        }
        Ok(c)
    }
}

impl NodeConfig {
    /// Without TLS, a node serves only on loopback unless told `--insecure`.
    pub fn check_plaintext(&self) -> Result<(), ServerError> {
        if self.tls.is_some() || self.insecure {
            return Ok(());
        }
        let listeners = [
            ("--listen", Some(&self.listen)),
            ("--pg-listen", self.pg_listen.as_ref()),
            ("--redis-listen", self.redis_listen.as_ref()),
        ];
        for (flag, addr) in listeners {
            if let Some(addr) = addr
                && !is_loopback(addr)
            {
                return Err(ServerError::Config(format!(
                    "{flag} {addr} is not a loopback address and the node has no TLS certificate: anyone on \
                     the network could read and forge its traffic and talk Raft to it. Give --tls-cert, \
                     --tls-key and --tls-ca (`quorumdb cert` makes them), or --insecure to serve in plaintext anyway"
                )));
            }
        }
        Ok(())
    }
}

/// Whether `addr` (host:port) is a loopback address (`localhost` counts).
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_file(p: &Path) -> Result<FileConfig, ServerError> {
    let text = std::fs::read_to_string(p).map_err(|e| ServerError::Config(format!("reading {}: {e}", p.display())))?;
    toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n.toml");
        std::fs::write(&f, "id = 3\ndata_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9000\"\nheartbeat_ms = 50\n").unwrap();
        let args = StartArgs { config: Some(f.clone()), listen: Some("127.0.0.1:9001".into()), ..Default::default() };
        let c = NodeConfig::from_args(args).unwrap();
        assert_eq!((c.id, c.listen.as_str(), c.heartbeat_ms), (3, "127.0.0.1:9001", 50));

        std::fs::write(&f, "id = 3\nbogus = 1\n").unwrap();
        let err = NodeConfig::from_args(StartArgs { config: Some(f), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn plaintext_off_loopback_needs_insecure_or_tls() {
        let args = |listen: &str, insecure: bool| StartArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            listen: Some(listen.into()),
            insecure,
            ..Default::default()
        };
        assert!(NodeConfig::from_args(args("127.0.0.1:7001", false)).is_ok());
        assert!(NodeConfig::from_args(args("localhost:7001", false)).is_ok());
        assert!(NodeConfig::from_args(args("[::1]:7001", false)).is_ok());
        let err = NodeConfig::from_args(args("0.0.0.0:7001", false)).unwrap_err().to_string();
        assert!(err.contains("--listen 0.0.0.0:7001") && err.contains("--insecure"), "{err}");
        assert!(NodeConfig::from_args(args("10.0.0.5:7001", true)).is_ok());
        let pg = StartArgs { pg_listen: Some("0.0.0.0:5433".into()), ..args("127.0.0.1:7001", false) };
        assert!(NodeConfig::from_args(pg).unwrap_err().to_string().contains("--pg-listen"));
        let half = StartArgs { tls_cert: Some("/c".into()), ..args("127.0.0.1:7001", false) };
        assert!(NodeConfig::from_args(half).is_err());
    }

    #[test]
    fn backup_dir_defaults_to_one_under_the_data_dir() {
        let args = |backup_dir: Option<&str>| StartArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            backup_dir: backup_dir.map(PathBuf::from),
            ..Default::default()
        };
        let c = NodeConfig::from_args(args(None)).unwrap();
        assert_eq!(c.backup_dir(), Path::new("/tmp/x/backups"));
        let c = NodeConfig::from_args(args(Some("/srv/qdb-backups"))).unwrap();
        assert_eq!(c.backup_dir(), Path::new("/srv/qdb-backups"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n.toml");
        std::fs::write(&f, "id = 3\ndata_dir = \"/tmp/x\"\nbackup_dir = \"/srv/b\"\n").unwrap();
        let c = NodeConfig::from_args(StartArgs { config: Some(f), ..Default::default() }).unwrap();
        assert_eq!(c.backup_dir(), Path::new("/srv/b"));
    }

    #[test]
    fn addresses_are_checked_before_the_node_starts() {
        let args = |advertise: &str| StartArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            advertise: Some(advertise.into()),
            ..Default::default()
        };
        assert!(NodeConfig::from_args(args("127.0.0.1:7001")).is_ok());
        assert!(NodeConfig::from_args(args("node-1.example:7001")).is_ok());
        for bad in ["127.0.0.1 :7001", "127.0.0.1", "host:0", "host:99999", "http://x:1", "[zz]:1", ""] {
            let err = NodeConfig::from_args(args(bad)).unwrap_err();
            assert!(matches!(err, ServerError::Config(_)), "{bad:?}: {err}");
        }
    }
}
