//! The shell's PostgreSQL connection to one node, and failover to another.
//!
//! SQL goes over the wire protocol (`tokio-postgres`, simple query protocol: text values and
//! column names). The node is found through its main address (`/v1/status` gives its
//! `pg_addr` and the members). When the connection breaks, the session reconnects to another
//! member, re-applies the session settings (`consistency`, `hnsw.ef_search`) and says which
//! node it is on now. A statement whose outcome is unknown is never re-sent unless it only
//! reads: a write (or `COMMIT`) is reported as "may or may not have been applied", and a
//! statement inside a `BEGIN` block as the block being lost (the server applies nothing of a
//! block before its `COMMIT`).

use std::time::Duration;

use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

use super::admin::{self, Status};
use super::format::ResultSet;
use super::split::{is_read_only, leading_words};
use crate::error::ShellError;

/// The session settings a reconnect re-applies, as `SET` knows them.
const TRACKED: [&str; 2] = ["consistency", "hnsw.ef_search"];

/// Who the shell logs in as.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

/// Where the shell's SQL goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The node's id, when known (always, unless connected with `--pg` alone).
    pub node: Option<u64>,
    /// The node's main (HTTP/gRPC) address, for admin commands.
    pub main_addr: Option<String>,
    pub pg_addr: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node {
            Some(id) => write!(f, "node {id} (PostgreSQL protocol at {})", self.pg_addr),
            None => write!(f, "{}", self.pg_addr),
        }
    }
}

/// What one statement returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A statement with a result set (even an empty one).
    Rows(ResultSet),
    /// A statement without one, and the rows it affected.
    Done(u64),
}

/// A connection that follows the cluster.
pub struct Session {
    login: Login,
    pub http: reqwest::Client,
    client: Option<Client>,
    pub endpoint: Endpoint,
    /// The members as last seen: `(id, main address)`.
    members: Vec<(u64, String)>,
    /// Settings to re-apply after a reconnect: `(name, value as written in SET)`.
    settings: Vec<(String, String)>,
    /// A `BEGIN` succeeded and no `COMMIT`/`ROLLBACK` yet: a lost connection loses the block.
    in_transaction: bool,
}

/// `(host, port)` of a `host:port` address (IPv6 hosts may be bracketed).
fn host_port(addr: &str) -> Result<(String, u16), ShellError> {
    let bad = || ShellError::Usage(format!("{addr:?} is not a host:port address"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

async fn connect_pg(login: &Login, addr: &str) -> Result<Client, ShellError> {
    let (host, port) = host_port(addr)?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&login.user)
        .dbname(&login.dbname)
        .application_name("quorumdb shell")
        .connect_timeout(Duration::from_secs(5));
    if let Some(p) = &login.password {
        cfg.password(p);
    }
    let failed = |e: tokio_postgres::Error| {
        let mut reason = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
        if login.password.is_none() && reason.contains("password missing") {
            reason = "the server wants a password: give --password or set QUORUMDB_PASSWORD".into();
        }
        ShellError::Connect { addr: addr.to_string(), reason }
    };
    let tls = crate::pg_tls().map_err(|reason| ShellError::Connect { addr: addr.to_string(), reason })?;
    let client = match tls {
        // The cluster has certificates (QUORUMDB_CA): TLS, the server's certificate checked.
        Some(tls) => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = cfg.connect(tls).await.map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        }
        None => {
            let (client, connection) = cfg.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!("PostgreSQL connection ended: {e}");
    }
}

/// Whether an error means the node or the connection is gone (rather than the statement
/// failing): an I/O or closed-connection error, or the server saying it is shutting down.
fn connection_broken(e: &tokio_postgres::Error, client: &Client) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // Not 57P03: QuorumDB answers it when no leader is reachable, on a live connection.
            code.starts_with("08") || matches!(code, "57P01" | "57P02")
        }
        None => {
            e.is_closed()
                || client.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

fn server_error(e: &tokio_postgres::Error) -> ShellError {
    match e.as_db_error() {
        Some(db) => ShellError::Server {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        },
        None => ShellError::Protocol(e.to_string()),
    }
}

/// The replies of one simple-query exchange.
fn replies(messages: Vec<SimpleQueryMessage>) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut current: Option<ResultSet> = None;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                current =
                    Some(ResultSet { columns: cols.iter().map(|c| c.name().to_string()).collect(), rows: vec![] });
            }
            SimpleQueryMessage::Row(row) => {
                let rs = current.get_or_insert_with(|| ResultSet {
                    columns: row.columns().iter().map(|c| c.name().to_string()).collect(),
                    rows: vec![],
                });
                rs.rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => match current.take() {
                Some(rs) => out.push(Reply::Rows(rs)),
                None => out.push(Reply::Done(n)),
            },
            _ => {}
        }
    }
    out.extend(current.map(Reply::Rows));
    out
}

/// `SET [SESSION] name {=|TO} value` / `RESET name` of a tracked setting: its name and the
/// new value (`None`: back to the default). `SET LOCAL` lasts one transaction: not tracked.
pub fn tracked_setting(sql: &str) -> Option<(String, Option<String>)> {
    let s = sql.trim().trim_end_matches(';').trim();
    let mut words = s.splitn(2, char::is_whitespace);
    let verb = words.next()?.to_ascii_lowercase();
    let rest = words.next().unwrap_or("").trim_start();
    let (name, value) = match verb.as_str() {
        "reset" => (rest.trim().to_ascii_lowercase(), None),
        "set" => {
            let rest = match rest.split_once(char::is_whitespace) {
                Some((w, r)) if w.eq_ignore_ascii_case("session") => r.trim_start(),
                _ => rest,
            };
            let end = rest.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(rest.len());
            let (name, after) = rest.split_at(end);
            let after = after.trim_start();
            let value = if let Some(v) = after.strip_prefix('=') {
                v
            } else if after.get(..2).is_some_and(|w| w.eq_ignore_ascii_case("to")) {
                &after[2..]
            } else {
                return None;
            };
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            let value = (!value.eq_ignore_ascii_case("default")).then(|| value.to_string());
            (name.to_ascii_lowercase(), value)
        }
        _ => return None,
    };
    TRACKED.contains(&name.as_str()).then_some((name, value))
}

/// Whether a transaction block is open after `sql` succeeded, given whether one was before.
pub fn transaction_after(sql: &str, before: bool) -> bool {
    match leading_words(sql, 1).first().map(String::as_str) {
        Some("BEGIN" | "START") => true,
        Some("COMMIT" | "ROLLBACK" | "END" | "ABORT") => false,
        _ => before,
    }
}

impl Session {
    /// Connects through a node's main address (`host`), or straight to a PostgreSQL protocol
    /// address (`pg`; `host`, if also given, still serves admin commands and failover).
    pub async fn open(login: Login, host: Option<&str>, pg: Option<&str>) -> Result<Session, ShellError> {
        // Admin calls log in as the shell does (where the cluster requires a login).
        let http = admin::http_client(&login.user, login.password.as_deref())?;
        let mut s = Session {
            login,
            http,
            client: None,
            endpoint: Endpoint::default(),
            members: vec![],
            settings: vec![],
            in_transaction: false,
        };
        let status = match host {
            Some(h) => Some(admin::status(&s.http, &admin::normalize_addr(h)).await?),
            None => None,
        };
        if let Some(st) = &status {
            s.members = st.member_addrs();
        }
        match (pg, status) {
            (Some(pg), status) => {
                s.endpoint = Endpoint {
                    node: status.as_ref().map(|st| st.id),
                    main_addr: status.as_ref().map(|st| st.addr.clone()),
                    pg_addr: pg.to_string(),
                };
                s.client = Some(connect_pg(&s.login, pg).await?);
            }
            (None, Some(st)) => {
                let Some(pg_addr) = st.pg_addr.clone() else {
                    return Err(ShellError::Connect {
                        addr: st.addr,
                        reason: "the node serves no PostgreSQL protocol (start it with --pg-listen)".into(),
                    });
                };
                match connect_pg(&s.login, &pg_addr).await {
                    Ok(c) => {
                        s.endpoint = Endpoint { node: Some(st.id), main_addr: Some(st.addr.clone()), pg_addr };
                        s.client = Some(c);
                    }
                    Err(e) if s.members.len() > 1 => {
                        eprintln!("WARNING: {e}; trying the other members");
                        s.endpoint = Endpoint { node: Some(st.id), main_addr: Some(st.addr.clone()), pg_addr };
                        s.reconnect().await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            (None, None) => return Err(ShellError::Usage("give --host (a node's main address) or --pg".into())),
        }
        Ok(s)
    }

    /// A token that cancels the running statement (Ctrl-C).
    pub fn cancel_token(&self) -> Option<CancelToken> {
        self.client.as_ref().map(Client::cancel_token)
    }

    /// The main address admin commands go to.
    pub fn admin_addr(&self) -> Result<String, ShellError> {
        self.endpoint
            .main_addr
            .clone()
            .ok_or_else(|| ShellError::Usage("cluster commands need --host (a node's main address)".into()))
    }

    /// The members as last seen, refreshed from the connected node when it answers.
    pub async fn members(&mut self) -> Result<Vec<(u64, String)>, ShellError> {
        let addr = self.admin_addr()?;
        match admin::status(&self.http, &addr).await {
            Ok(st) => self.members = st.member_addrs(),
            Err(e) if self.members.is_empty() => return Err(e),
            Err(_) => {}
        }
        Ok(self.members.clone())
    }

    /// The current value of a tracked setting, if this session set it.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn remember(&mut self, name: String, value: Option<String>) {
        self.settings.retain(|(n, _)| *n != name);
        if let Some(v) = value {
            self.settings.push((name, v));
        }
    }

    /// Runs one statement (or a `;`-separated batch), following the cluster if the node is
    /// gone; see the module docs for when a statement is retried.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<Reply>, ShellError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            // Nothing was sent yet, so reconnecting first is safe, unless the statement belongs
            // to a block that died with the connection: running it alone would be wrong.
            self.client = None;
            self.reconnect().await?;
            if std::mem::take(&mut self.in_transaction) {
                return Err(ShellError::TransactionLost);
            }
        }
        let Some(client) = self.client.as_ref() else { return Err(not_connected()) };
        let result = client.simple_query(sql).await;
        let broken = match &result {
            Err(e) if connection_broken(e, client) => true,
            // QuorumDB answers 57P03 both when no leader is reachable (the node is fine: report
            // it) and from a node that is stopping (move on): ask the node which it is.
            Err(e) if e.code().is_some_and(|c| c.code() == "57P03") => self.node_gone().await,
            _ => false,
        };
        match result {
            Ok(messages) => {
                if let Some((name, value)) = tracked_setting(sql) {
                    self.remember(name, value);
                }
                self.in_transaction = transaction_after(sql, self.in_transaction);
                Ok(replies(messages))
            }
            Err(e) if broken => {
                tracing::debug!("connection lost during a statement: {e}");
                let in_transaction = std::mem::take(&mut self.in_transaction);
                self.client = None;
                self.reconnect().await?;
                let commits = matches!(leading_words(sql, 1).first().map(String::as_str), Some("COMMIT" | "END"));
                if in_transaction && !commits {
                    return Err(ShellError::TransactionLost);
                }
                if !is_read_only(sql) || in_transaction {
                    return Err(ShellError::OutcomeUnknown);
                }
                let Some(client) = self.client.as_ref() else { return Err(not_connected()) };
                client.simple_query(sql).await.map(replies).map_err(|e| server_error(&e))
            }
            Err(e) => Err(server_error(&e)),
        }
    }

    /// Whether the connected node is down or stopping, by its status on the main address.
    async fn node_gone(&self) -> bool {
        let Some(addr) = &self.endpoint.main_addr else { return false };
        admin::status(&self.http, addr).await.map_or(true, |st| st.role == "shutdown")
    }

    /// Finds a live member, connects to its PostgreSQL address, re-applies the session
    /// settings and says where the shell is now.
    async fn reconnect(&mut self) -> Result<(), ShellError> {
        let lost = self.endpoint.clone();
        let mut tried = Vec::new();
        let mut candidates: Vec<(u64, String)> = self.members.clone();
        // Other nodes first, starting after the lost one; the lost node last (it may be back).
        if let Some(pos) = candidates.iter().position(|(id, _)| Some(*id) == lost.node) {
            candidates.rotate_left(pos + 1);
        }
        if candidates.is_empty() {
            // Connected with --pg alone: the only place to go is where we were.
            candidates.push((0, String::new()));
        }
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for (id, main) in &candidates {
                let (endpoint, status) = if main.is_empty() {
                    (lost.clone(), None)
                } else {
                    match admin::status(&self.http, main).await {
                        Ok(st) if st.pg_addr.is_some() => (
                            Endpoint {
                                node: Some(st.id),
                                main_addr: Some(main.clone()),
                                pg_addr: st.pg_addr.clone().unwrap_or_default(),
                            },
                            Some(st),
                        ),
                        Ok(_) => {
                            tried.push(format!("node {id}: no PostgreSQL protocol"));
                            continue;
                        }
                        Err(e) => {
                            tried.push(format!("node {id}: {e}"));
                            continue;
                        }
                    }
                };
                match connect_pg(&self.login, &endpoint.pg_addr).await {
                    Ok(client) => {
                        self.client = Some(client);
                        if let Some(st) = status {
                            self.refresh_members(&st);
                        }
                        self.endpoint = endpoint;
                        self.reapply_settings().await;
                        if lost.pg_addr.is_empty() || lost == self.endpoint {
                            eprintln!("reconnected to {}", self.endpoint);
                        } else {
                            eprintln!("connection to {} lost; now connected to {}", lost, self.endpoint);
                        }
                        return Ok(());
                    }
                    Err(e) => tried.push(e.to_string()),
                }
            }
        }
        tried.dedup();
        Err(ShellError::NoNode(tried.join("; ")))
    }

    fn refresh_members(&mut self, st: &Status) {
        let m = st.member_addrs();
        if !m.is_empty() {
            self.members = m;
        }
    }

    async fn reapply_settings(&mut self) {
        let Some(client) = &self.client else { return };
        for (name, value) in &self.settings {
            if let Err(e) = client.simple_query(&format!("SET {name} = {value}")).await {
                eprintln!("WARNING: could not restore {name} = {value} on the new node: {}", server_error(&e));
            }
        }
    }
}

/// After a successful `reconnect` there is a client; this is what it would say otherwise.
fn not_connected() -> ShellError {
    ShellError::NoNode("no connection after reconnecting".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses() {
        assert_eq!(host_port("127.0.0.1:5433").unwrap(), ("127.0.0.1".into(), 5433));
        assert_eq!(host_port("[::1]:5433").unwrap(), ("::1".into(), 5433));
        assert_eq!(host_port("db.example:1").unwrap(), ("db.example".into(), 1));
        assert!(host_port("nohost").is_err());
        assert!(host_port(":5433").is_err());
        assert!(host_port("h:99999").is_err());
    }

    #[test]
    fn transaction_blocks_are_tracked() {
        assert!(transaction_after("BEGIN", false));
        assert!(transaction_after("start transaction", false));
        assert!(transaction_after("INSERT INTO t VALUES (1)", true));
        assert!(!transaction_after("INSERT INTO t VALUES (1)", false));
        assert!(!transaction_after("COMMIT", true));
        assert!(!transaction_after("rollback", true));
        assert!(!transaction_after("END", true));
    }

    #[test]
    fn settings_are_tracked() {
        let t = |s: &str| tracked_setting(s);
        assert_eq!(t("SET consistency = 'stale'"), Some(("consistency".into(), Some("'stale'".into()))));
        assert_eq!(t("set CONSISTENCY to lease;"), Some(("consistency".into(), Some("lease".into()))));
        assert_eq!(t("SET SESSION hnsw.ef_search=64"), Some(("hnsw.ef_search".into(), Some("64".into()))));
        assert_eq!(t("SET consistency TO DEFAULT"), Some(("consistency".into(), None)));
        assert_eq!(t("RESET consistency"), Some(("consistency".into(), None)));
        assert_eq!(t("SET LOCAL consistency = 'stale'"), None);
        assert_eq!(t("SET statement_timeout = 5"), None);
        assert_eq!(t("SET consistency"), None);
        assert_eq!(t("SELECT 1"), None);
        assert_eq!(t("settle"), None);
        assert_eq!(t("SET consistency aé"), None);
    }
}
