//! The Redis commands the RESP surface answers, and a connection's session state
//! (authentication, read consistency, the read barrier it may reuse).
//!
//! Supported: `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO 2`, `SELECT 0`, `SET` (`NX`, `XX`, `GET`,
//! `EX`, `PX`, `EXAT`, `PXAT`, `KEEPTTL`), `GET`, `DEL`/`UNLINK`, `EXISTS`, `MGET`, `MSET`,
//! `INCR`, `INCRBY`, `DECR`, `DECRBY`, `TTL`, `PTTL`, `KEYS`, `SCAN`, `DBSIZE`, `INFO`,
//! `QUORUMDB.CONSISTENCY`, and harmless answers to what clients send on connect (`COMMAND`,
//! `CONFIG GET`, `CLIENT ...`). Anything else is `-ERR unknown command`.
//!
//! `SCAN` walks keys in byte order. Its cursor is a number (clients parse it as one) that names
//! the next key to examine in a table on this node, so a scan resumes exactly where it stopped
//! however keys change meanwhile: every key present for the whole scan is returned exactly
//! once; keys added or removed during it may or may not be. Cursors are per node (a cursor
//! from another node, or evicted after [`MAX_CURSORS`] newer ones, is an error).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use quorumdb_replication::kv::{self as kvstate, ByteBuf, Condition, Expiry, KvCommand, KvResponse};
use quorumdb_replication::{Consistency, StateReader};
use quorumdb_sql::auth::{Need, Privilege};

use super::Reply;
use super::barrier::ReadBarriers;
use super::glob::Glob;
use crate::context::NodeContext;
use crate::error::{ServerError, to_resp};

/// Cursors a node remembers for `SCAN`; the oldest is forgotten first.
pub const MAX_CURSORS: usize = 10_000;
/// Most keys `KEYS` returns; past it the client is told to use `SCAN`.
const MAX_KEYS_REPLY: usize = 1_000_000;
/// Largest `SCAN ... COUNT`.
const MAX_SCAN_COUNT: i64 = 100_000;
/// The Redis version we answer to clients that check it.
const REDIS_VERSION: &str = "7.0.0";

/// What every connection of a node shares.
pub struct Shared {
    pub state: NodeContext,
    pub connected: AtomicUsize,
    linearizable: ReadBarriers,
    lease: ReadBarriers,
    next_client: AtomicU64,
    cursors: Mutex<Cursors>,
    started: Instant,
    port: u16,
}

impl Shared {
    pub fn new(state: NodeContext, port: u16) -> Self {
        // Cursor numbers start at this node's clock, so one from before a restart is unknown
        // rather than silently pointing elsewhere.
        let first = kvstate::now_ms().saturating_mul(1_000).max(1);
        let replica = state.replica.clone();
        Self {
            linearizable: ReadBarriers::new(replica.clone(), Consistency::Linearizable),
            lease: ReadBarriers::new(replica, Consistency::Lease),
            state,
            connected: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            cursors: Mutex::new(Cursors { next: first, by_id: HashMap::new(), order: VecDeque::new() }),
            started: Instant::now(),
            port,
        }
    }

    fn reader(&self) -> StateReader {
        self.state.replica.reader().clone()
    }
}

/// `SCAN` cursor number → the key (inclusive) where the scan resumes.
struct Cursors {
    next: u64,
    by_id: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
}

impl Cursors {
    fn add(&mut self, resume: Vec<u8>) -> u64 {
        let id = self.next;
        self.next += 1;
        self.by_id.insert(id, resume);
        self.order.push_back(id);
        while self.order.len() > MAX_CURSORS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        id
    }
}

/// One client connection's state.
pub struct Session {
    shared: Arc<Shared>,
    id: u64,
    /// Logged in with the legacy `--password` (while the catalog has no login roles).
    authenticated: bool,
    /// The role logged in as with `AUTH user password` (once the catalog has login roles).
    user: Option<String>,
    level: Consistency,
    /// A read barrier was taken after every command parsed so far arrived, and no write of
    /// this connection came after it: reads may use the local state as it is.
    barrier_valid: bool,
    name: Option<Vec<u8>>,
    /// The client asked to close (`QUIT`).
    pub quit: bool,
    /// The client's address (failed logins are throttled per address).
    pub peer: Option<std::net::IpAddr>,
}

type CmdResult = Result<Reply, ServerError>;

fn bad(msg: impl Into<String>) -> ServerError {
    ServerError::BadRequest(msg.into())
}

fn wrong_args(name: &str) -> ServerError {
    bad(format!("wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

fn syntax() -> ServerError {
    bad("syntax error")
}

fn int_arg(arg: &[u8]) -> Result<i64, ServerError> {
    kvstate::parse_integer(arg).ok_or_else(|| bad(kvstate::NOT_AN_INTEGER))
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn bulk_or_nil(v: Option<impl Into<Vec<u8>>>) -> Reply {
    v.map_or(Reply::Nil, Reply::bulk)
}

/// Compares without stopping at the first difference, so timing does not reveal the password.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The command's name for metrics: from a fixed list, so clients cannot grow the label set.
fn metric_name(cmd: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "PING",
        "ECHO",
        "QUIT",
        "AUTH",
        "HELLO",
        "SELECT",
        "SET",
        "GET",
        "DEL",
        "UNLINK",
        "EXISTS",
        "MGET",
        "MSET",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "TTL",
        "PTTL",
        "KEYS",
        "SCAN",
        "DBSIZE",
        "INFO",
        "COMMAND",
        "CONFIG",
        "CLIENT",
        "QUORUMDB.CONSISTENCY",
    ];
    KNOWN.iter().find(|k| **k == cmd).copied().unwrap_or("unknown")
}

fn level_name(level: &Consistency) -> String {
    match level {
        Consistency::Linearizable => "linearizable".into(),
        Consistency::Lease => "lease".into(),
        Consistency::Stale { max_staleness: None } => "stale".into(),
        Consistency::Stale { max_staleness: Some(d) } => format!("stale {}", d.as_millis()),
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>) -> Self {
        let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
        let authenticated = shared.state.surfaces.password.is_none();
        Self {
            shared,
            id,
            authenticated,
            user: None,
            level: Consistency::Linearizable,
            barrier_valid: false,
            name: None,
            quit: false,
            peer: None,
        }
    }

    /// New bytes arrived: commands parsed from now on may postdate the last read barrier.
    pub fn new_arrivals(&mut self) {
        self.barrier_valid = false;
    }

    /// Runs one command and gives its reply (errors included).
    pub async fn execute(&mut self, args: Vec<Vec<u8>>) -> Reply {
        let Some(first) = args.first() else { return Reply::error("ERR empty command") };
        let cmd = upper(first);
        metrics::counter!("quorumdb_resp_commands_total", "command" => metric_name(&cmd)).increment(1);
        if !matches!(cmd.as_str(), "AUTH" | "HELLO" | "QUIT")
            && let Err(e) = self.authorize(&cmd)
        {
            return Reply::Error(to_resp(&e));
        }
        let reply = match self.dispatch(&cmd, &args).await {
            Ok(reply) => reply,
            Err(e) => Reply::Error(to_resp(&e)),
        };
        if matches!(reply, Reply::Error(_)) {
            metrics::counter!("quorumdb_resp_errors_total").increment(1);
        }
        reply
    }

    async fn dispatch(&mut self, cmd: &str, args: &[Vec<u8>]) -> CmdResult {
        let n = args.len();
        let exact = |want: usize| if n == want { Ok(()) } else { Err(wrong_args(cmd)) };
        let at_least = |want: usize| if n >= want { Ok(()) } else { Err(wrong_args(cmd)) };
        match cmd {
            "PING" => match n {
                1 => Ok(Reply::Simple("PONG".into())),
                2 => Ok(Reply::bulk(args[1].clone())),
                _ => Err(wrong_args(cmd)),
            },
            "ECHO" => exact(2).map(|_| Reply::bulk(args[1].clone())),
            "QUIT" => {
                self.quit = true;
                Ok(Reply::Ok)
            }
            "AUTH" => match n {
                2 => Ok(self.authenticate(b"default", &args[1])),
                3 => Ok(self.authenticate(&args[1], &args[2])),
                _ => Err(wrong_args(cmd)),
            },
            "HELLO" => Ok(self.hello(args)),
            "SELECT" => {
                exact(2)?;
                match int_arg(&args[1])? {
                    0 => Ok(Reply::Ok),
                    _ => Err(bad("DB index is out of range (QuorumDB has one database, 0)")),
                }
            }
            "SET" => {
                at_least(3)?;
                self.set(args).await
            }
            "GET" => {
                exact(2)?;
                Ok(bulk_or_nil(self.read_keys(&args[1..2]).await?.pop().flatten()))
            }
            "MGET" => {
                at_least(2)?;
                Ok(Reply::Array(self.read_keys(&args[1..]).await?.into_iter().map(bulk_or_nil).collect()))
            }
            "EXISTS" => {
                at_least(2)?;
                Ok(Reply::Integer(self.read_keys(&args[1..]).await?.iter().filter(|v| v.is_some()).count() as i64))
            }
            "DEL" | "UNLINK" => {
                at_least(2)?;
                let keys = args[1..].iter().map(|k| ByteBuf::from(k.clone())).collect();
                match self.write(KvCommand::DeleteMany { keys, now_ms: kvstate::now_ms() }).await? {
                    KvResponse::Count { n } => Ok(Reply::Integer(n as i64)),
                    other => Err(unexpected(other)),
                }
            }
            "MSET" => {
                if n < 3 || n.is_multiple_of(2) {
                    return Err(wrong_args(cmd));
                }
                let pairs =
                    args[1..].chunks(2).map(|p| (ByteBuf::from(p[0].clone()), ByteBuf::from(p[1].clone()))).collect();
                self.write(KvCommand::SetMany { pairs, now_ms: kvstate::now_ms() }).await?;
                Ok(Reply::Ok)
            }
            "INCR" | "DECR" => {
                exact(2)?;
                self.incr(&args[1], if cmd == "INCR" { 1 } else { -1 }).await
            }
            "INCRBY" | "DECRBY" => {
                exact(3)?;
                let by = int_arg(&args[2])?;
                let delta = if cmd == "INCRBY" {
                    by
                } else {
                    by.checked_neg().ok_or_else(|| bad("decrement would overflow"))?
                };
                self.incr(&args[1], delta).await
            }
            "TTL" | "PTTL" => {
                exact(2)?;
                self.read_ready().await?;
                let ttl = kvstate::time_to_live(self.shared.state.replica.reader(), &args[1], kvstate::now_ms())?;
                Ok(Reply::Integer(match ttl {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(ms)) if cmd == "PTTL" => ms as i64,
                    Some(Some(ms)) => ms.div_ceil(1000) as i64,
                }))
            }
            "KEYS" => {
                exact(2)?;
                self.keys(&args[1]).await
            }
            "SCAN" => {
                at_least(2)?;
                self.scan(args).await
            }
            "DBSIZE" => {
                exact(1)?;
                self.read_ready().await?;
                let (keys, _) = self.count_keys().await?;
                Ok(Reply::Integer(keys as i64))
            }
            "INFO" => self.info(&args[1..]).await,
            "COMMAND" => Ok(command_reply(args)),
            "CONFIG" => config_reply(args),
            "CLIENT" => self.client(args),
            "QUORUMDB.CONSISTENCY" => self.consistency(args),
            _ => {
                let shown: Vec<String> =
                    args[1..].iter().take(8).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                Err(bad(format!(
                    "unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    shown.join(" ")
                )))
            }
        }
    }

    /// RESP's one authorisation check, before every command: a login where the catalog
    /// requires one, then what the command does to the KV table (reads need `readonly`,
    /// writes `readwrite`, as built-in roles; `admin` may do all).
    fn authorize(&self, cmd: &str) -> Result<(), ServerError> {
        let state = &self.shared.state;
        if !state.sql.catalog()?.auth_required() {
            return if self.authenticated {
                Ok(())
            } else {
                Err(ServerError::Unauthenticated("Authentication required.".into()))
            };
        }
        let Some(user) = &self.user else {
            return Err(ServerError::Unauthenticated("Authentication required: AUTH <user> <password>.".into()));
        };
        let privilege = match cmd {
            "GET" | "MGET" | "EXISTS" | "TTL" | "PTTL" | "KEYS" | "SCAN" | "DBSIZE" => Privilege::Select,
            "SET" | "DEL" | "UNLINK" | "MSET" | "INCR" | "INCRBY" | "DECR" | "DECRBY" => Privilege::Insert,
            _ => return Ok(()),
        };
        Ok(state.sql.authorize_needs(Some(user), &[Need::AnyTable(privilege)])?)
    }

    /// The client presented a TLS certificate the cluster CA signed for `user`: logged in as
    /// that role if it may log in.
    pub fn login_by_certificate(&mut self, user: String) {
        if self.shared.state.sql.catalog().is_ok_and(|c| c.roles.get(&user).is_some_and(|r| r.login)) {
            self.user = Some(user);
        }
    }

    fn authenticate(&mut self, user: &[u8], given: &[u8]) -> Reply {
        let state = &self.shared.state;
        if let Ok(catalog) = state.sql.catalog()
            && catalog.auth_required()
        {
            let (user, password) = (String::from_utf8_lossy(user), String::from_utf8_lossy(given));
            return match state.auth.check(&catalog, self.peer, "resp", &user, &password) {
                Ok(()) => {
                    self.user = Some(user.into_owned());
                    Reply::Ok
                }
                Err(ServerError::Unauthenticated(m)) if m.starts_with("too many") => Reply::error(format!("ERR {m}")),
                Err(_) => Reply::error("WRONGPASS invalid username-password pair or user is disabled."),
            };
        }
        match &self.shared.state.surfaces.password {
            None => Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            Some(p) if same_secret(p.as_bytes(), given) => {
                self.authenticated = true;
                Reply::Ok
            }
            Some(_) => {
                metrics::counter!("quorumdb_resp_auth_failures_total").increment(1);
                Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
            }
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`; only RESP2 is spoken.
    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        let mut i = 1;
        if let Some(v) = args.get(1) {
            match kvstate::parse_integer(v) {
                Some(2) => {}
                Some(_) => return Reply::error("NOPROTO sorry, this protocol version is not supported"),
                None => return Reply::error("ERR Protocol version is not an integer or out of range"),
            }
            i = 2;
        }
        while i < args.len() {
            match upper(&args[i]).as_str() {
                "AUTH" if i + 2 < args.len() => {
                    if let Reply::Error(e) = self.authenticate(&args[i + 1], &args[i + 2]) {
                        return Reply::Error(e);
                    }
                    i += 3;
                }
                "SETNAME" if i + 1 < args.len() => {
                    self.name = Some(args[i + 1].clone());
                    i += 2;
                }
                other => return Reply::error(format!("ERR Syntax error in HELLO option '{other}'")),
            }
        }
        if self.authorize("HELLO").is_err() {
            return Reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        let role = if self.is_leader() { "master" } else { "replica" };
        let pairs: Vec<(&str, Reply)> = vec![
            ("server", Reply::bulk("redis")),
            ("version", Reply::bulk(REDIS_VERSION)),
            ("proto", Reply::Integer(2)),
            ("id", Reply::Integer(self.id as i64)),
            ("mode", Reply::bulk("standalone")),
            ("role", Reply::bulk(role)),
            ("modules", Reply::Array(vec![])),
        ];
        Reply::Array(pairs.into_iter().flat_map(|(k, v)| [Reply::bulk(k), v]).collect())
    }

    fn is_leader(&self) -> bool {
        self.shared.state.replica.metrics().state == openraft::ServerState::Leader
    }

    /// Waits until the local state may serve a read at this connection's level.
    async fn read_ready(&mut self) -> Result<(), ServerError> {
        if !self.barrier_valid {
            match self.level {
                Consistency::Linearizable => self.shared.linearizable.wait().await?,
                Consistency::Lease => self.shared.lease.wait().await?,
                stale @ Consistency::Stale { .. } => {
                    self.shared.state.replica.read_barrier(stale).await?;
                }
            }
            self.barrier_valid = true;
        }
        Ok(())
    }

    /// The live values of `keys`, read together after a read barrier.
    async fn read_keys(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, ServerError> {
        self.read_ready().await?;
        metrics::counter!("quorumdb_kv_reads_total").increment(keys.len() as u64);
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        Ok(kvstate::get_many(self.shared.state.replica.reader(), &keys, kvstate::now_ms())?)
    }

    async fn write(&mut self, cmd: KvCommand) -> Result<KvResponse, ServerError> {
        // Whatever the outcome, later reads must see this write: they need a new barrier.
        self.barrier_valid = false;
        crate::kv::write(&self.shared.state.replica, cmd).await
    }

    async fn incr(&mut self, key: &[u8], delta: i64) -> CmdResult {
        match self.write(KvCommand::IncrBy { key: key.to_vec(), delta, now_ms: kvstate::now_ms() }).await? {
            KvResponse::Integer { value } => Ok(Reply::Integer(value)),
            other => Err(unexpected(other)),
        }
    }

    /// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
    async fn set(&mut self, args: &[Vec<u8>]) -> CmdResult {
        let now = kvstate::now_ms();
        let (mut condition, mut expiry, mut get) = (Condition::Always, Expiry::Never, false);
        let mut expiry_given = false;
        let mut i = 3;
        while i < args.len() {
            let opt = upper(&args[i]);
            match opt.as_str() {
                "NX" | "XX" if condition == Condition::Always => {
                    condition = if opt == "NX" { Condition::IfAbsent } else { Condition::IfPresent };
                }
                "GET" => get = true,
                "KEEPTTL" if !expiry_given => {
                    expiry = Expiry::Keep;
                    expiry_given = true;
                }
                "EX" | "PX" | "EXAT" | "PXAT" if !expiry_given && i + 1 < args.len() => {
                    i += 1;
                    let v = int_arg(&args[i])?;
                    let invalid = || bad("invalid expire time in 'set' command");
                    if v <= 0 {
                        return Err(invalid());
                    }
                    let v = v as u64;
                    let at = match opt.as_str() {
                        "EX" => v.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
                        "PX" => v.checked_add(now),
                        "EXAT" => v.checked_mul(1000),
                        _ => Some(v),
                    };
                    // Keep times within what i64 milliseconds can say, as Redis does.
                    expiry = Expiry::At(at.filter(|t| *t <= i64::MAX as u64).ok_or_else(invalid)?);
                    expiry_given = true;
                }
                _ => return Err(syntax()),
            }
            i += 1;
        }
        let cmd = KvCommand::Put { key: args[1].clone(), value: args[2].clone(), condition, expiry, now_ms: now };
        let (done, previous) = match self.write(cmd).await? {
            KvResponse::Done { previous } => (true, previous),
            KvResponse::CasFailed { current } => (false, current),
            other => return Err(unexpected(other)),
        };
        Ok(match (get, done) {
            (true, _) => bulk_or_nil(previous.map(ByteBuf::into_vec)),
            (false, true) => Reply::Ok,
            (false, false) => Reply::Nil,
        })
    }

    async fn keys(&mut self, pattern: &[u8]) -> CmdResult {
        self.read_ready().await?;
        let glob = Glob::new(pattern);
        let reader = self.shared.reader();
        let (keys, complete) = blocking(move || {
            let prefix = glob.literal_prefix();
            let (mut keys, mut complete) = (Vec::new(), true);
            kvstate::for_each_live(&reader, &prefix, b"", kvstate::now_ms(), |k, _, _| {
                if glob.matches(k) {
                    if keys.len() == MAX_KEYS_REPLY {
                        complete = false;
                        return false;
                    }
                    keys.push(Reply::bulk(k));
                }
                true
            })?;
            Ok((keys, complete))
        })
        .await?;
        if !complete {
            return Err(bad(format!("KEYS matched more than {MAX_KEYS_REPLY} keys; use SCAN")));
        }
        Ok(Reply::Array(keys))
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`
    async fn scan(&mut self, args: &[Vec<u8>]) -> CmdResult {
        let cursor: u64 =
            std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("invalid cursor"))?;
        let (mut glob, mut count, mut only_strings) = (Glob::new(b"*"), 10usize, true);
        let mut i = 2;
        while i < args.len() {
            let value = args.get(i + 1).ok_or_else(syntax)?;
            match upper(&args[i]).as_str() {
                "MATCH" => glob = Glob::new(value),
                "COUNT" => {
                    let c = int_arg(value)?;
                    if c < 1 {
                        return Err(syntax());
                    }
                    count = c.min(MAX_SCAN_COUNT) as usize;
                }
                // Every key of the KV table is a string.
                "TYPE" => only_strings = value.eq_ignore_ascii_case(b"string"),
                _ => return Err(syntax()),
            }
            i += 2;
        }
        let start = match cursor {
            0 => Vec::new(),
            c => {
                let cursors = self.shared.cursors.lock().unwrap_or_else(|p| p.into_inner());
                cursors.by_id.get(&c).cloned().ok_or_else(|| {
                    bad("invalid cursor: unknown on this node (expired, or from another node); start again from 0")
                })?
            }
        };
        if !only_strings {
            return Ok(Reply::Array(vec![Reply::bulk("0"), Reply::Array(vec![])]));
        }
        self.read_ready().await?;
        let reader = self.shared.reader();
        let (keys, resume) = blocking(move || {
            let prefix = glob.literal_prefix();
            let (mut keys, mut examined, mut resume) = (Vec::new(), 0, None);
            kvstate::for_each_live(&reader, &prefix, &start, kvstate::now_ms(), |k, _, _| {
                if examined == count {
                    resume = Some(k.to_vec());
                    return false;
                }
                examined += 1;
                if glob.matches(k) {
                    keys.push(Reply::bulk(k));
                }
                true
            })?;
            Ok((keys, resume))
        })
        .await?;
        let next = match resume {
            None => 0,
            Some(key) => self.shared.cursors.lock().unwrap_or_else(|p| p.into_inner()).add(key),
        };
        Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)]))
    }

    /// How many keys are live, and how many of those expire.
    async fn count_keys(&self) -> Result<(u64, u64), ServerError> {
        let reader = self.shared.reader();
        blocking(move || {
            let (mut keys, mut expires) = (0u64, 0u64);
            kvstate::for_each_live(&reader, b"", b"", kvstate::now_ms(), |_, _, expiry| {
                keys += 1;
                expires += u64::from(expiry.is_some());
                true
            })?;
            Ok((keys, expires))
        })
        .await
    }

    /// `INFO [section ...]`: server, clients, replication (our Raft view) and keyspace.
    async fn info(&mut self, sections: &[Vec<u8>]) -> CmdResult {
        let wanted: Vec<String> = sections.iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
        let all = wanted.is_empty() || wanted.iter().any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
        let show = |name: &str| all || wanted.iter().any(|w| w == name);
        let mut text = String::new();
        if show("server") {
            text += &format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nquorumdb_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                self.shared.port,
                self.shared.started.elapsed().as_secs(),
            );
        }
        if show("clients") {
            text +=
                &format!("# Clients\r\nconnected_clients:{}\r\n\r\n", self.shared.connected.load(Ordering::Relaxed));
        }
        if show("replication") {
            let st = self.shared.state.replica.status()?;
            let role = if st.role == "leader" { "master" } else { "slave" };
            let members: Vec<String> = st.members.iter().map(|m| m.id.to_string()).collect();
            text += &format!(
                "# Replication\r\nrole:{role}\r\nconnected_slaves:{}\r\nquorumdb_node_id:{}\r\nquorumdb_role:{}\r\nquorumdb_term:{}\r\nquorumdb_leader_id:{}\r\nquorumdb_leader_addr:{}\r\nquorumdb_members:{}\r\nquorumdb_committed_index:{}\r\nquorumdb_applied_index:{}\r\nquorumdb_read_consistency:{}\r\n\r\n",
                if st.role == "leader" { st.members.len().saturating_sub(1) } else { 0 },
                st.id,
                st.role,
                st.term,
                st.leader.map(|l| l.to_string()).unwrap_or_default(),
                st.leader_addr.unwrap_or_default(),
                members.join(","),
                st.committed.unwrap_or(0),
                st.applied.unwrap_or(0),
                level_name(&self.level),
            );
        }
        if show("keyspace") {
            // This node's applied state as it is: INFO never waits for a quorum.
            let (keys, expires) = self.count_keys().await?;
            text += "# Keyspace\r\n";
            if keys > 0 {
                text += &format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
        }
        Ok(Reply::bulk(text))
    }

    /// `CLIENT SETNAME|GETNAME|ID|SETINFO|INFO|LIST`
    fn client(&mut self, args: &[Vec<u8>]) -> CmdResult {
        let sub = args.get(1).map(|a| upper(a)).ok_or_else(|| wrong_args("client"))?;
        match (sub.as_str(), args.len()) {
            ("SETNAME", 3) => {
                if args[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                    return Err(bad("Client names cannot contain spaces, newlines or special characters."));
                }
                self.name = (!args[2].is_empty()).then(|| args[2].clone());
                Ok(Reply::Ok)
            }
            ("GETNAME", 2) => Ok(bulk_or_nil(self.name.clone())),
            ("ID", 2) => Ok(Reply::Integer(self.id as i64)),
            ("SETINFO", 4) => Ok(Reply::Ok),
            ("INFO" | "LIST", 2) => {
                let name = self.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                Ok(Reply::bulk(format!("id={} name={name} db=0\n", self.id)))
            }
            _ => {
                Err(bad(format!("unknown subcommand or wrong number of arguments for 'client|{}'", sub.to_lowercase())))
            }
        }
    }

    /// `QUORUMDB.CONSISTENCY [linearizable | lease | stale [max_staleness_ms]]`: this
    /// connection's read level, shown or changed.
    fn consistency(&mut self, args: &[Vec<u8>]) -> CmdResult {
        match args.len() {
            1 => Ok(Reply::bulk(level_name(&self.level))),
            2 | 3 => {
                let level = String::from_utf8_lossy(&args[1]).into_owned();
                let bound = match args.get(2) {
                    Some(ms) => Some(u64::try_from(int_arg(ms)?).map_err(|_| bad("max_staleness_ms must be >= 0"))?),
                    None => None,
                };
                self.level = crate::kv::consistency(Some(&level), bound)?;
                self.barrier_valid = false;
                Ok(Reply::Ok)
            }
            _ => Err(wrong_args("quorumdb.consistency")),
        }
    }
}

fn unexpected(r: KvResponse) -> ServerError {
    bad(format!("unexpected KV response {r:?}"))
}

/// Runs a scan on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(format!("scan task failed: {e}"))))?
        .map_err(ServerError::Io)
}

/// `COMMAND`, `COMMAND DOCS|INFO|COUNT`: clients ask for them on connect (for hints); we give
/// empty answers, which they accept.
fn command_reply(args: &[Vec<u8>]) -> Reply {
    match args.get(1).map(|a| upper(a)).as_deref() {
        Some("COUNT") => Reply::Integer(27),
        Some("INFO") => Reply::Array(args[2..].iter().map(|_| Reply::Nil).collect()),
        _ => Reply::Array(vec![]),
    }
}

/// `CONFIG GET pattern ...` with the few parameters benchmark tools read; the rest of
/// `CONFIG` is configured with QuorumDB's own flags instead.
fn config_reply(args: &[Vec<u8>]) -> CmdResult {
    const PARAMS: &[(&str, &str)] =
        &[("save", ""), ("appendonly", "no"), ("databases", "1"), ("maxmemory", "0"), ("timeout", "0")];
    match args.get(1).map(|a| upper(a)).as_deref() {
        Some("GET") if args.len() >= 3 => {
            let globs: Vec<Glob> = args[2..].iter().map(|p| Glob::new(&p.to_ascii_lowercase())).collect();
            let found = PARAMS
                .iter()
                .filter(|(name, _)| globs.iter().any(|g| g.matches(name.as_bytes())))
                .flat_map(|(name, value)| [Reply::bulk(*name), Reply::bulk(*value)]);
            Ok(Reply::Array(found.collect()))
        }
        Some("RESETSTAT") => Ok(Reply::Ok),
        Some(sub) => Err(bad(format!("CONFIG {sub} is not supported; QuorumDB is configured with its own flags"))),
        None => Err(wrong_args("config")),
    }
}
