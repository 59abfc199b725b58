//! The PostgreSQL wire protocol surface (`--pg-listen`, default 127.0.0.1:5433), on `pgwire`.
//!
//! Owns per-connection sessions: the simple and extended query protocols (prepared statements
//! with parameters in text or binary format, described with inferred types), session settings
//! (`SET`/`SHOW consistency`, `hnsw.ef_search`, `statement_timeout`, and the usual driver
//! settings), explicit transaction blocks, cancellation, password authentication, and the
//! catalog queries `psql`'s `\d` commands send ([`catalog`]). Statements run on the node's SQL
//! engine exactly as over HTTP: reads at the session's consistency level, writes through Raft.
//!
//! A transaction block (`BEGIN` … `COMMIT`) answers each statement from a plan against the
//! current state plus the block's earlier writes, proposes nothing until `COMMIT`, then plans
//! the whole block again and applies it as one atomic command — unless a write would now change
//! a different number of rows than it reported, which fails the `COMMIT` with 40001 and applies
//! nothing (read-committed-like: reads inside the block are not re-checked).

mod catalog;
mod conn;
mod frames;
mod types;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::{self, Statement};
use futures::{Sink, stream};
use pgwire::api::auth::{
    AuthDriver, AuthOutcome, AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    cleartext::CleartextPasswordAuth,
    mechanism::{AuthMechanism, AuthMechanismFactory, AuthState},
    sasl::SaslMechanisms,
    sasl::scram::{ScramAuth, ScramSecret},
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use quorumdb_replication::Consistency;
use quorumdb_sql::{Description, Parsed, Session, SqlError, StatementResult};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

use crate::context::NodeContext;
use crate::error::{ServerError, to_pg};

/// The server version clients see: the PostgreSQL release whose protocol and catalog we follow.
const SERVER_VERSION: &str = "15.0";

/// Accepts PostgreSQL clients until `stop` turns true.
pub async fn serve(listener: TcpListener, state: NodeContext, mut stop: watch::Receiver<bool>) {
    let manager = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        query: Arc::new(QueryHandler { state: state.clone(), parser: Arc::new(Parser { state: state.clone() }) }),
        startup: Arc::new(Startup::new(
            state.surfaces.password.clone(),
            manager.clone(),
            state.sql.clone(),
            state.auth.clone(),
        )),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let handlers = handlers.clone();
                let tls = state.surfaces.tls.as_ref().map(|t| t.acceptor());
                metrics::counter!("quorumdb_pg_connections_total").increment(1);
                tokio::spawn(async move {
                    if let Err(e) = conn::serve(socket, peer, tls, handlers).await {
                        tracing::debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a PostgreSQL connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Handlers {
    query: Arc<QueryHandler>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Startup and authentication

fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = SERVER_VERSION.to_owned();
    p
}

/// Once the catalog has roles that log in: SCRAM-SHA-256 against their verifiers (what `psql`
/// and drivers use by default; the password never crosses the wire). Before that: any user and
/// database name, and the configured `--password` if there is one.
struct Startup {
    driver: AuthDriver<DefaultServerParameterProvider>,
    password: Option<CleartextPasswordAuth<PasswordSource>>,
    scram: SaslMechanisms,
    engine: Arc<quorumdb_sql::Engine>,
    auth: Arc<crate::auth::Authenticator>,
}

impl Startup {
    fn new(
        password: Option<String>,
        manager: Arc<ConnectionManager>,
        engine: Arc<quorumdb_sql::Engine>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> Self {
        let scram = ScramAuth::new(Arc::new(RoleSecrets(engine.clone())));
        Self {
            driver: AuthDriver::new(server_parameters()).with_connection_manager(manager),
            password: password.map(|p| CleartextPasswordAuth::new(Arc::new(PasswordSource(p)))),
            scram: SaslMechanisms::new(vec![Arc::new(scram)]),
            engine,
            auth,
        }
    }

    fn logins_required(&self) -> bool {
        self.engine.catalog().is_ok_and(|c| c.auth_required())
    }

    /// `certified`: the client presented a certificate (signed by the cluster CA) for the
    /// user it logs in as, which is a login as good as its password.
    fn mechanism(&self, certified: Option<&str>) -> Box<dyn AuthMechanism> {
        if self.logins_required() {
            if let Some(user) = certified
                && self.engine.catalog().is_ok_and(|c| c.roles.get(user).is_some_and(|r| r.login))
            {
                return Box::new(Trust);
            }
            return Box::new(CheckedSasl { inner: self.scram.create(), first: true, auth: self.auth.clone() });
        }
        match &self.password {
            Some(p) => p.create(),
            None => Box::new(Trust),
        }
    }
}

/// SCRAM, with the layout of the client's first message checked before `pgwire` parses it
/// (its parser trusts the length inside and panics on one that points past the message).
/// Failed logins count against the client's address, as on every surface ([`crate::auth::Throttle`]).
struct CheckedSasl {
    inner: Box<dyn AuthMechanism>,
    first: bool,
    auth: Arc<crate::auth::Authenticator>,
}

#[async_trait]
impl AuthMechanism for CheckedSasl {
    async fn begin(&mut self, client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        if let Err(e) = self.auth.throttle.admit(Some(client.socket_addr().ip()), "pg") {
            return Ok(AuthState::Failed(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                e.to_string(),
            )))));
        }
        self.inner.begin(client).await
    }

    async fn next(
        &mut self,
        client: &(dyn ClientInfo + Send + Sync),
        message: pgwire::messages::startup::PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        if std::mem::take(&mut self.first)
            && let pgwire::messages::startup::PasswordMessageFamily::Raw(body) = &message
            && let Err(e) = frames::check_sasl_initial(body)
        {
            return Ok(AuthState::Failed(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "08P01".into(),
                format!("invalid SASL initial response: {e}"),
            )))));
        }
        let outcome = self.inner.next(client, message).await;
        let ip = Some(client.socket_addr().ip());
        match &outcome {
            Ok(AuthState::Ok { .. }) => self.auth.throttle.succeeded(ip),
            Ok(AuthState::Failed(_)) | Err(_) => self.auth.throttle.failed(ip),
            Ok(_) => {}
        }
        outcome
    }
}

/// The SCRAM verifiers of the catalog's roles.
#[derive(Debug)]
struct RoleSecrets(Arc<quorumdb_sql::Engine>);

#[async_trait]
impl AuthSource for RoleSecrets {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let catalog = self.0.catalog().map_err(sql_error)?;
        let Some(v) = catalog.login_verifier(user) else {
            metrics::counter!("quorumdb_auth_failures_total", "surface" => "pg").increment(1);
            return Err(PgWireError::InvalidPassword(user.to_owned()));
        };
        let secret = ScramSecret::Verifier {
            salt: v.salt.clone(),
            iterations: v.iterations as usize,
            stored_key: v.stored_key.clone(),
            server_key: v.server_key.clone(),
        };
        Ok((secret, None))
    }
}

#[derive(Debug)]
struct PasswordSource(String);

#[async_trait]
impl AuthSource for PasswordSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }
}

/// The user a client's TLS certificate names (its common name), set when the connection
/// negotiated TLS with one.
pub(crate) struct CertificateUser(pub String);

/// No authentication configured (or a certificate already authenticated): let in.
struct Trust;

#[async_trait]
impl AuthMechanism for Trust {
    async fn begin(&mut self, _client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        Ok(AuthState::Ok { final_message: None, identity: None })
    }
    async fn next(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
        _message: pgwire::messages::startup::PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        Ok(AuthState::Ok { final_message: None, identity: None })
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                // `options=-c name=value` (libpq's PGOPTIONS): settings for the whole session.
                if let Some(options) = startup.parameters.get("options") {
                    let session = session_of(client);
                    let mut session = session.lock().await;
                    for (name, value) in startup_options(options)? {
                        session.set(&name, Some(value))?;
                    }
                }
                let certificate = client.session_extensions().get::<CertificateUser>();
                let certified = certificate
                    .as_ref()
                    .map(|c| c.0.as_str())
                    .filter(|u| startup.parameters.get("user").map(String::as_str) == Some(*u));
                self.driver.begin_authentication(client, self.mechanism(certified)).await?
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => self.driver.advance_authentication(client, m).await?,
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { final_message, .. } => {
                if self.logins_required() {
                    let user = client.metadata().get("user").cloned();
                    session_of(client).lock().await.user = user;
                }
                self.driver.complete_authentication(client, final_message).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// One connection's settings and open transaction block.
struct PgSession {
    engine: Session,
    consistency: Consistency,
    statement_timeout: Option<Duration>,
    /// Other settings drivers set (`client_encoding`, `DateStyle`, …), echoed by `SHOW`.
    other: BTreeMap<String, String>,
    block: Option<Block>,
    /// The role this connection logged in as (set when the cluster required a login).
    user: Option<String>,
}

impl Default for PgSession {
    fn default() -> Self {
        Self {
            engine: Session::default(),
            consistency: Consistency::Linearizable,
            statement_timeout: None,
            other: BTreeMap::new(),
            block: None,
            user: None,
        }
    }
}

/// An open transaction block: its statements so far and what each was answered.
#[derive(Default)]
struct Block {
    statements: Vec<Statement>,
    reported: Vec<StatementResult>,
    /// A statement failed: everything but ROLLBACK/COMMIT is refused until the block ends.
    failed: bool,
}

type SessionRef = Arc<Mutex<PgSession>>;

fn session_of<C: ClientInfo>(client: &C) -> SessionRef {
    let s: Arc<SessionRef> =
        client.session_extensions().get_or_insert_with(|| Arc::new(Mutex::new(PgSession::default())));
    (*s).clone()
}

/// Settings PostgreSQL drivers commonly set; accepted and echoed, without effect here.
const PASSIVE_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "standard_conforming_strings",
    "timezone",
    "time zone",
    "client_min_messages",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "bytea_output",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
    "default_transaction_isolation",
    "transaction_isolation",
    "jit",
    "max_parallel_workers_per_gather",
];

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

fn sql_error(e: SqlError) -> PgWireError {
    to_pg(&ServerError::Sql(e))
}

/// A `SET`/`SHOW` the pgwire layer owns: the setting's name and, for SET, its value text.
fn our_setting(s: &Statement) -> Option<(String, Option<String>)> {
    let value_text = |e: &ast::Expr| quorumdb_sql::coerce::literal_text(e).flatten().unwrap_or_else(|| e.to_string());
    let (name, value) = match s {
        Statement::Set(ast::Set::SingleAssignment { variable, values, .. }) => {
            let v: Vec<String> = values.iter().map(value_text).collect();
            (variable.to_string().to_lowercase(), Some(v.join(", ")))
        }
        Statement::Set(ast::Set::SetTimeZone { value, .. }) => ("timezone".to_string(), Some(value_text(value))),
        Statement::Set(ast::Set::SetNames { charset_name, .. }) => {
            ("client_encoding".to_string(), Some(charset_name.to_string()))
        }
        Statement::ShowVariable { variable } => {
            (variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join("."), None)
        }
        _ => return None,
    };
    let name = match name.as_str() {
        "time zone" | "time.zone" => "timezone".to_string(),
        _ => name,
    };
    (name != "hnsw.ef_search").then_some((name, value))
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len()));
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "min" => n * 60e3,
        "h" => n * 3600e3,
        "us" => n / 1e3,
        _ => return None,
    };
    Some(Duration::from_secs_f64(ms / 1e3))
}

/// A one-column text result, as `SHOW` answers.
fn show(name: &str, value: String) -> StatementResult {
    catalog::text_rows(&[name], vec![vec![Some(value)]], "SHOW")
}

impl PgSession {
    /// `SET`/`SHOW` of a setting this layer owns; `None` if `s` is not one.
    fn setting(&mut self, s: &Statement) -> Option<PgWireResult<StatementResult>> {
        let (name, value) = our_setting(s)?;
        Some(self.set(&name, value))
    }

    /// Sets `name` to `value`, or (`None`) shows it.
    fn set(&mut self, name: &str, value: Option<String>) -> PgWireResult<StatementResult> {
        match (name, value) {
            ("consistency", Some(v)) => match v.trim().to_ascii_lowercase().parse::<Consistency>() {
                Ok(c) => {
                    self.consistency = c;
                    Ok(StatementResult::done("SET"))
                }
                Err(_) => Err(user_error(
                    "22023",
                    format!("invalid value for parameter \"consistency\": \"{v}\" (linearizable, lease or stale)"),
                )),
            },
            ("consistency", None) => Ok(show("consistency", consistency_name(&self.consistency).into())),
            ("statement_timeout", Some(v)) => match parse_timeout(&v) {
                Some(d) => {
                    self.statement_timeout = (!d.is_zero()).then_some(d);
                    Ok(StatementResult::done("SET"))
                }
                None => Err(user_error("22023", format!("invalid value for parameter \"statement_timeout\": \"{v}\""))),
            },
            ("statement_timeout", None) => Ok(show(
                "statement_timeout",
                self.statement_timeout.map_or("0".into(), |d| format!("{}ms", d.as_millis())),
            )),
            ("transaction_read_only", None) => Ok(show("transaction_read_only", "off".into())),
            ("server_version", None) => Ok(show("server_version", SERVER_VERSION.into())),
            ("all", None) => Err(user_error("0A000", "SHOW ALL is not supported")),
            (n, v) if PASSIVE_SETTINGS.contains(&n) => match v {
                Some(v) => {
                    self.other.insert(n.to_string(), v);
                    Ok(StatementResult::done("SET"))
                }
                None => Ok(show(n, self.other.get(n).cloned().unwrap_or_else(|| default_of(n).into()))),
            },
            (n, _) => Err(user_error("42704", format!("unrecognized configuration parameter \"{n}\""))),
        }
    }
}

/// The `name=value` pairs of a startup packet's `options` (`-c name=value`, `-cname=value` or
/// `--name=value`, separated by spaces; `\ ` is a space inside a value), names lower-cased.
fn startup_options(options: &str) -> PgWireResult<Vec<(String, String)>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => words.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
            c => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    let bad = |w: &str| user_error("22023", format!("invalid startup option \"{w}\": expected -c name=value"));
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = match w.as_str() {
            "-c" => words.next().ok_or_else(|| bad(&w))?,
            _ => match w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
                Some(rest) => rest.to_string(),
                None => return Err(bad(&w)),
            },
        };
        let (name, value) = setting.split_once('=').ok_or_else(|| bad(&setting))?;
        pairs.push((name.trim().replace('-', "_").to_ascii_lowercase(), value.to_string()));
    }
    Ok(pairs)
}

fn default_of(name: &str) -> &'static str {
    match name {
        "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "search_path" => "public",
        "standard_conforming_strings" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "extra_float_digits" => "1",
        _ => "",
    }
}

fn consistency_name(c: &Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Lease => "lease",
        Consistency::Stale { .. } => "stale",
    }
}

fn is_begin(s: &Statement) -> bool {
    matches!(s, Statement::StartTransaction { .. })
}
fn is_commit(s: &Statement) -> bool {
    matches!(s, Statement::Commit { .. })
}
fn is_rollback(s: &Statement) -> bool {
    matches!(s, Statement::Rollback { .. })
}

// ---------------------------------------------------------------------------------------------
// Running statements

/// What one statement answered, in pgwire's terms.
enum Answer {
    Result(StatementResult),
    Begin,
    End(&'static str),
}

struct QueryHandler {
    state: NodeContext,
    parser: Arc<Parser>,
}

impl QueryHandler {
    /// Runs a request under the session's statement timeout.
    async fn run(&self, session: &SessionRef, parsed: Parsed) -> PgWireResult<Vec<Answer>> {
        let mut s = session.lock().await;
        // Every request comes through here: the login it runs as (checked by the engine against
        // the catalog each statement runs on). A connection opened before logins were required
        // has none.
        let user = if self.state.sql.catalog().map_err(sql_error)?.auth_required() {
            match s.user.clone() {
                Some(u) => Some(u),
                None => {
                    return Err(user_error(
                        "28000",
                        "this cluster now requires a login: reconnect with a user and password",
                    ));
                }
            }
        } else {
            None
        };
        let timeout = s.statement_timeout;
        let fut = self.run_in(&mut s, parsed, user.as_deref());
        match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or_else(|_| Err(user_error("57014", "canceling statement due to statement timeout"))),
            None => fut.await,
        }
    }

    async fn run_in(&self, s: &mut PgSession, parsed: Parsed, user: Option<&str>) -> PgWireResult<Vec<Answer>> {
        let special = |st: &Statement| is_begin(st) || is_commit(st) || is_rollback(st) || our_setting(st).is_some();
        if s.block.is_none() && !parsed.statements.iter().any(special) {
            // The common case: the request is one implicit transaction.
            return Ok(self.execute(s, parsed, user).await?.into_iter().map(Answer::Result).collect());
        }
        let mut out = Vec::with_capacity(parsed.statements.len());
        for st in parsed.statements {
            out.push(self.one(s, st, user).await?);
        }
        Ok(out)
    }

    /// One statement while a block is open, or next to session statements.
    async fn one(&self, s: &mut PgSession, st: Statement, user: Option<&str>) -> PgWireResult<Answer> {
        if is_begin(&st) {
            if s.block.is_none() {
                s.block = Some(Block::default());
            }
            return Ok(Answer::Begin);
        }
        if is_rollback(&st) {
            s.block = None;
            return Ok(Answer::End("ROLLBACK"));
        }
        if is_commit(&st) {
            let Some(block) = s.block.take() else { return Ok(Answer::End("COMMIT")) };
            if block.failed {
                return Ok(Answer::End("ROLLBACK"));
            }
            if !block.statements.is_empty() {
                let parsed = Parsed { read_only: false, statements: block.statements };
                self.state
                    .sql
                    .commit(parsed, &self.state.replica, &mut s.engine, &block.reported, user)
                    .await
                    .map_err(sql_error)?;
            }
            return Ok(Answer::End("COMMIT"));
        }
        if let Some(b) = &s.block
            && b.failed
        {
            return Err(user_error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        if let Some(r) = s.setting(&st) {
            return r.map(Answer::Result);
        }
        let read_only = quorumdb_sql::engine::is_read_only(&st);
        if s.block.is_none() {
            let parsed = Parsed { statements: vec![st], read_only };
            let mut r = self.execute(s, parsed, user).await?;
            return Ok(Answer::Result(r.pop().unwrap_or_else(|| StatementResult::done("SELECT"))));
        }
        if read_only {
            self.state.replica.read_barrier(s.consistency).await.map_err(|e| to_pg(&e.into()))?;
        }
        let Some(mut block) = s.block.take() else {
            return Err(user_error("XX000", "internal error: no transaction block is open"));
        };
        block.statements.push(st);
        let parsed = Parsed { statements: block.statements.clone(), read_only: false };
        let result = self.state.sql.dry_run(&parsed, &mut s.engine, user).await;
        let answer = match result {
            Ok(mut results) => {
                let last = results.last().cloned();
                block.reported = std::mem::take(&mut results);
                Ok(Answer::Result(last.unwrap_or_else(|| StatementResult::done("SELECT"))))
            }
            Err(e) => {
                block.statements.pop();
                block.failed = true;
                Err(sql_error(e))
            }
        };
        s.block = Some(block);
        answer
    }

    /// Runs a request outside a block: reads at the session's level, writes through Raft.
    async fn execute(
        &self,
        s: &mut PgSession,
        parsed: Parsed,
        user: Option<&str>,
    ) -> PgWireResult<Vec<StatementResult>> {
        metrics::counter!("quorumdb_pg_statements_total", "kind" => if parsed.read_only { "read" } else { "write" })
            .increment(1);
        let (results, _) =
            crate::sql::run(&self.state.sql, &self.state.replica, parsed, s.consistency, &mut s.engine, None, user)
                .await
                .map_err(|e| to_pg(&e))?;
        Ok(results)
    }
}

/// The command tag and row count of a tag like `INSERT 0 3` / `UPDATE 2` / `SELECT 5`.
fn tag_of(tag: &str, rows: u64) -> Tag {
    let command = tag.split_whitespace().next().unwrap_or(tag);
    match command {
        "INSERT" => Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
        "UPDATE" | "DELETE" | "SELECT" | "MOVE" | "FETCH" | "COPY" | "MERGE" => {
            Tag::new(command).with_rows(rows as usize)
        }
        _ => Tag::new(tag),
    }
}

fn to_response(answer: Answer, format: Option<&Format>) -> Response {
    match answer {
        Answer::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Answer::End(tag) => Response::TransactionEnd(Tag::new(tag)),
        Answer::Result(StatementResult::Done { tag, rows_affected }) => match tag.as_str() {
            "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
            "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&tag)),
            _ => Response::Execution(tag_of(&tag, rows_affected)),
        },
        Answer::Result(StatementResult::Rows { schema, batches, tag }) => {
            let fields = Arc::new(types::fields(&schema, format));
            let mut rows = Vec::new();
            for b in &batches {
                types::encode_batch(b, &fields, &mut rows);
            }
            let mut q = QueryResponse::new(fields, stream::iter(rows));
            let command = tag.split_whitespace().next().unwrap_or("SELECT").to_string();
            q.set_command_tag(&command);
            Response::Query(q)
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(r) = catalog::answer(&self.state, query).await {
            return Ok(r?.into_iter().map(|r| to_response(Answer::Result(r), None)).collect());
        }
        let session = session_of(client);
        let parsed = match self.state.sql.prepare(query) {
            Ok(p) => p,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(sql_error(e))))]),
        };
        // Statements before a failing one keep their answers, as in PostgreSQL.
        match self.run(&session, parsed).await {
            Ok(answers) => Ok(answers.into_iter().map(|a| to_response(a, None)).collect()),
            Err(e) => Ok(vec![Response::Error(Box::new(error_info(e)))]),
        }
    }
}

fn error_info(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::UserError(info) => *info,
        other => ErrorInfo::new("ERROR".to_owned(), "XX000".to_owned(), other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Extended query protocol

/// A prepared statement: parsed once, described once, bound and run per execution.
#[derive(Debug, Clone)]
pub struct Prepared {
    parsed: Parsed,
    description: Description,
}

struct Parser {
    state: NodeContext,
}

fn show_description(name: &str) -> Description {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    Description { params: vec![], columns: Some(Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))) }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parsed = self.state.sql.prepare(sql).map_err(sql_error)?;
        // Describe against a catalog that includes what this client already saw acknowledged
        // (a table created through another node a moment ago).
        let level = session_of(client).lock().await.consistency;
        self.state.replica.read_barrier(level).await.map_err(|e| to_pg(&e.into()))?;
        if parsed.statements.len() > 1 {
            return Err(user_error("42601", "cannot insert multiple commands into a prepared statement"));
        }
        let description = match our_setting(&parsed.statements[0]) {
            Some((name, None)) => show_description(&name),
            Some((_, Some(_))) => Description { params: vec![], columns: None },
            None => self.state.sql.describe(&parsed).await.map_err(sql_error)?,
        };
        Ok(Some(Prepared { parsed, description }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok((0..stmt.description.params.len()).map(|i| types::param_type(&[], &stmt.description.params, i)).collect())
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(stmt.description.columns.as_ref().map(|s| types::fields(s, format)).unwrap_or_default())
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt: &StoredStatement<Prepared> = &portal.statement;
        let prepared = &stmt.statement;
        let types: Vec<Type> = (0..portal.parameters.len())
            .map(|i| types::param_type(&stmt.parameter_types, &prepared.description.params, i))
            .collect();
        let params = types::decode_params(&portal.parameters, &portal.parameter_format, &types)?;
        let parsed = prepared.parsed.bind(&params).map_err(sql_error)?;
        let session = session_of(client);
        let mut answers = self.run(&session, parsed).await?;
        let answer = answers.pop().unwrap_or(Answer::Result(StatementResult::done("SELECT")));
        Ok(to_response(answer, Some(&portal.result_column_format)))
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let d = &stmt.statement.description;
        let params = (0..d.params.len().max(stmt.parameter_types.len()))
            .map(|i| types::param_type(&stmt.parameter_types, &d.params, i))
            .collect();
        let columns = d.columns.as_ref().map(|s| types::fields(s, None)).unwrap_or_default();
        Ok(DescribeStatementResponse::new(params, columns))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let d = &portal.statement.statement.description;
        let columns =
            d.columns.as_ref().map(|s| types::fields(s, Some(&portal.result_column_format))).unwrap_or_default();
        Ok(DescribePortalResponse::new(columns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_postgres() {
        assert_eq!(parse_timeout("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("soon"), None);
    }

    #[test]
    fn startup_options_are_read_like_libpq_s() {
        let pairs = |o: &str| startup_options(o).map_err(|e| e.to_string());
        assert_eq!(
            pairs("-c consistency=lease  -cstatement_timeout=2s --application-name=a\\ b").unwrap(),
            vec![
                ("consistency".to_string(), "lease".to_string()),
                ("statement_timeout".to_string(), "2s".to_string()),
                ("application_name".to_string(), "a b".to_string()),
            ]
        );
        assert_eq!(pairs("").unwrap(), vec![]);
        for bad in ["consistency=lease", "-c", "-c consistency", "-x y=z"] {
            assert!(pairs(bad).is_err(), "{bad}");
        }
    }

    /// Fuzz target of the startup packet's `options`: whatever the string, `startup_options`
    /// returns (pairs or an error) and never panics. Cases: `QUORUMDB_FUZZ_CASES` (default
    /// 2,000), like the crates' `tests/fuzz.rs` targets (state/tests/support/fuzz.rs).
    mod fuzz {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::startup_options;

        fn config() -> ProptestConfig {
            let cases = std::env::var("QUORUMDB_FUZZ_CASES").map_or(2_000, |v| v.trim().parse().expect("a number"));
            ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
        }

        const SEEDS: &[&str] = &[
            "-c consistency=lease  -cstatement_timeout=2s --application-name=a\\ b",
            "-c search_path=public,\\ x -c DateStyle=ISO\\,\\ MDY",
            "--client-encoding=UTF8",
        ];
        const TOKENS: &[&str] =
            &["-c", "-c ", "--", "-", "=", "==", " ", "\t", "\\", "\\ ", "\u{a0}", "\u{3000}", "é", "x", "-C", "\n"];

        /// Random text, option fragments run together, and the seeds with fragments inserted.
        fn options() -> impl Strategy<Value = String> {
            let token = || proptest::sample::select(TOKENS).prop_map(str::to_string);
            prop_oneof![
                any::<String>(),
                vec(prop_oneof![3 => token(), 1 => any::<char>().prop_map(String::from)], 0..24)
                    .prop_map(|parts| parts.concat()),
                (proptest::sample::select(SEEDS), vec((any::<proptest::sample::Index>(), token()), 1..6)).prop_map(
                    |(seed, edits)| {
                        let mut chars: Vec<char> = seed.chars().collect();
                        for (at, t) in edits {
                            let i = at.index(chars.len() + 1);
                            chars.splice(i..i, t.chars());
                        }
                        chars.into_iter().collect()
                    }
                ),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn startup_options_never_panic(options in options()) {
                if let Ok(pairs) = startup_options(&options) {
                    for (name, _) in &pairs {
                        prop_assert!(!name.contains('-'));
                        prop_assert_eq!(&name.to_ascii_lowercase(), name);
                    }
                }
            }
        }
    }

    #[test]
    fn tags_carry_row_counts() {
        let t = |tag: &str, n| format!("{:?}", tag_of(tag, n));
        assert!(t("INSERT 0 3", 3).contains('3'));
        assert!(t("CREATE TABLE", 0).contains("CREATE TABLE"));
    }
}
