//! The chaos workloads and their checkers, run by concurrent clients against random nodes:
//!
//! - **register**: read, write and compare-and-set on a few keys, over HTTP, RESP and SQL,
//!   recorded as a history for the linearizability checker ([`super::linearizable`]);
//! - **set**: unique inserts; at the end every acknowledged row is present exactly once and
//!   nothing is present that was never attempted;
//! - **bank**: transfers between accounts as two-statement transactions; every read of all
//!   balances sums to the constant total;
//! - **vectors**: point upserts into a collection; after healing every acknowledged point is
//!   found by an exact search on every node, and HNSW at high `ef` answers the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::linearizable::{Operation, RegOp, RegOut};

/// Where a node's surfaces are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: u64,
    pub http: String,
    pub redis: String,
}

/// Which surfaces register clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Http,
    Resp,
    Sql,
}

impl std::str::FromStr for Surface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(Self::Http),
            "resp" => Ok(Self::Resp),
            "sql" => Ok(Self::Sql),
            _ => Err(format!("unknown surface {s:?}; known: http, resp, sql")),
        }
    }
}

/// Settings shared by every client of a schedule.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub endpoints: Vec<Endpoint>,
    pub surfaces: Vec<Surface>,
    pub keys: usize,
    pub register_clients: usize,
    /// `linearizable` normally; `stale` only for the checker's self-test.
    pub read_consistency: String,
    /// Pause between one client's operations.
    pub think: Duration,
    /// How long a client waits for an answer before it counts the outcome unknown.
    pub timeout: Duration,
}

/// Everything the clients observed, for the checkers.
#[derive(Default)]
pub struct Observed {
    pub register: Mutex<Vec<Operation>>,
    /// Values whose insert was acknowledged / attempted with unknown outcome / refused.
    pub set_acked: Mutex<Vec<u64>>,
    pub set_unknown: Mutex<Vec<u64>>,
    pub set_failed: Mutex<Vec<u64>>,
    /// Inserts re-sent with their idempotency key after an unknown outcome.
    pub set_retries: AtomicU64,
    /// Successful reads of the bank total, and the reads that did not sum up.
    pub bank_reads: AtomicU64,
    pub bank_bad: Mutex<Vec<String>>,
    pub bank_transfers: AtomicU64,
    /// Vector points whose upsert was acknowledged, by id.
    pub vectors_acked: Mutex<Vec<(u64, [f32; VECTOR_DIM])>>,
    /// Errors a client should never see (a bad request: a bug in the harness or the server).
    pub unexpected: Mutex<Vec<String>>,
}

pub const ACCOUNTS: u64 = 8;
pub const VECTOR_DIM: usize = 4;
pub const INITIAL_BALANCE: i64 = 100;

/// Creates the tables the workloads use (through any node; retried while leadership settles).
pub async fn setup(http: &reqwest::Client, cfg: &WorkloadConfig) -> Result<()> {
    let mut sql = String::from(
        "CREATE TABLE chaos_set (v BIGINT NOT NULL); \
         CREATE TABLE bank (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL); \
         CREATE TABLE reg (k TEXT PRIMARY KEY, v BIGINT);",
    );
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {INITIAL_BALANCE})")).collect();
    sql.push_str(&format!(" INSERT INTO bank VALUES {};", accounts.join(", ")));
    let keys: Vec<String> = (0..cfg.keys).map(|k| format!("('k{k}', NULL)")).collect();
    sql.push_str(&format!(" INSERT INTO reg VALUES {};", keys.join(", ")));
    for attempt in 0..50 {
        let ep = &cfg.endpoints[attempt % cfg.endpoints.len()];
        let collection = json!({"vectors": {"size": VECTOR_DIM, "distance": "Euclid"}});
        let created = async {
            sql_call(http, &ep.http, &sql, &[], "linearizable", Duration::from_secs(5)).await?;
            let r = http
                .put(format!("http://{}/v1/collections/chaos_vec", ep.http))
                .json(&collection)
                .send()
                .await
                .map_err(|e| SqlError::Unknown(e.to_string()))?;
            if r.status().is_success() { Ok(()) } else { Err(SqlError::Unknown(r.status().to_string())) }
        };
        match created.await {
            Ok(_) => return Ok(()),
            Err(e) if attempt == 49 => return Err(anyhow::anyhow!("creating the chaos tables: {e:?}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok(())
}

/// The answer of `POST /v1/sql`, or how it failed.
#[derive(Debug)]
pub enum SqlError {
    /// The server answered with an error that says nothing was applied (a 4xx).
    Refused(String),
    /// Anything else: the statement may or may not have been applied.
    Unknown(String),
}

async fn sql_call(
    http: &reqwest::Client,
    addr: &str,
    sql: &str,
    params: &[Value],
    consistency: &str,
    timeout: Duration,
) -> Result<Value, SqlError> {
    sql_call_once(http, addr, sql, params, consistency, timeout, None).await
}

/// [`sql_call`] with an `Idempotency-Key`.
async fn sql_call_once(
    http: &reqwest::Client,
    addr: &str,
    sql: &str,
    params: &[Value],
    consistency: &str,
    timeout: Duration,
    key: Option<&str>,
) -> Result<Value, SqlError> {
    let mut req = http
        .post(format!("http://{addr}/v1/sql?consistency={consistency}"))
        .timeout(timeout)
        .json(&json!({"sql": sql, "params": params}));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.map_err(|e| SqlError::Unknown(e.to_string()))?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| SqlError::Unknown(e.to_string()))?;
    if status.is_success() {
        return Ok(body);
    }
    // 409 (a constraint), 400 and 404 are refused before anything is applied; 503 may be
    // "no leader" (nothing proposed) but also a forward that failed after proposing.
    if matches!(status.as_u16(), 400 | 404 | 409) {
        Err(SqlError::Refused(body.to_string()))
    } else {
        Err(SqlError::Unknown(format!("{status}: {body}")))
    }
}

fn rows_affected(v: &Value) -> Option<u64> {
    v["results"].as_array()?.first()?["rows_affected"].as_u64()
}

fn first_cell(v: &Value) -> Option<&Value> {
    v["results"].as_array()?.first()?["rows"].as_array()?.first()?.as_array()?.first()
}

/// The clock every history uses.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A minimal RESP client on one connection.
struct Resp {
    conn: BufReader<TcpStream>,
}

#[derive(Debug)]
enum RespReply {
    Ok,
    Bulk(Option<Vec<u8>>),
    Error(String),
}

impl Resp {
    async fn connect(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self { conn: BufReader::new(s) })
    }

    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<RespReply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend(format!("${}\r\n", a.len()).as_bytes());
            out.extend(*a);
            out.extend(b"\r\n");
        }
        self.conn.get_mut().write_all(&out).await?;
        let mut line = String::new();
        if self.conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected reply {line:?}"));
        match line.as_bytes().first() {
            Some(b'+') => Ok(RespReply::Ok),
            Some(b'-') => Ok(RespReply::Error(line[1..].to_string())),
            Some(b'$') => {
                let n: i64 = line[1..].parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(RespReply::Bulk(None));
                }
                let mut buf = vec![0; n as usize + 2];
                self.conn.read_exact(&mut buf).await?;
                buf.truncate(n as usize);
                Ok(RespReply::Bulk(Some(buf)))
            }
            _ => Err(bad()),
        }
    }
}

fn parse_value(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What every client of a schedule shares with the others.
#[derive(Clone)]
pub struct ClientShared {
    pub cfg: Arc<WorkloadConfig>,
    pub http: reqwest::Client,
    pub clock: Clock,
    pub next_value: Arc<AtomicU64>,
    pub observed: Arc<Observed>,
    pub stop: Arc<AtomicBool>,
}

/// One register client: until `stop`, picks a key, a node, a surface and an operation.
pub async fn register_client(client: usize, seed: u64, shared: ClientShared) {
    let ClientShared { cfg, http, clock, next_value, observed, stop } = shared;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resp: HashMap<u64, Resp> = HashMap::new();
    // The last value this client saw per key: what its compare-and-sets expect.
    let mut last: HashMap<String, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(ep) = cfg.endpoints.choose(&mut rng).cloned() else { return };
        let Some(&surface) = cfg.surfaces.choose(&mut rng) else { return };
        let k = rng.random_range(0..cfg.keys);
        let key = match surface {
            Surface::Sql => format!("sql:k{k}"),
            _ => format!("kv:k{k}"),
        };
        let op = match rng.random_range(0..10) {
            0..5 => RegOp::Read,
            5..8 => RegOp::Write(next_value.fetch_add(1, Ordering::Relaxed)),
            _ => match last.get(&key) {
                Some(&v) => RegOp::Cas(v, next_value.fetch_add(1, Ordering::Relaxed)),
                None => RegOp::Read,
            },
        };
        // RESP has no compare-and-set: those go over HTTP.
        let surface = if surface == Surface::Resp && matches!(op, RegOp::Cas(..)) { Surface::Http } else { surface };
        let call = clock.ns();
        let result = tokio::time::timeout(cfg.timeout, async {
            match surface {
                Surface::Http => http_op(&http, &ep.http, &format!("kv:k{k}"), op, &cfg).await,
                Surface::Resp => resp_op(&mut resp, &ep, &format!("kv:k{k}"), op).await,
                Surface::Sql => sql_op(&http, &ep.http, &format!("k{k}"), op, &cfg).await,
            }
        })
        .await;
        let ret = clock.ns();
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(unexpected)) => {
                observed.unexpected.lock().unwrap_or_else(|e| e.into_inner()).push(unexpected);
                RegOut::Unknown
            }
            Err(_) => {
                // Timed out: a RESP connection may still deliver the late answer; drop it.
                resp.remove(&ep.id);
                RegOut::Unknown
            }
        };
        if out == RegOut::Unknown && surface == Surface::Resp {
            resp.remove(&ep.id);
        }
        match (op, out) {
            (_, RegOut::Read(Some(v))) | (RegOp::Write(v) | RegOp::Cas(_, v), RegOut::Ok) => {
                last.insert(key.clone(), v);
            }
            _ => {}
        }
        let ret = (out != RegOut::Unknown).then_some(ret);
        observed.register.lock().unwrap_or_else(|e| e.into_inner()).push(Operation { client, key, op, out, call, ret });
        tokio::time::sleep(cfg.think).await;
    }
}

/// An operation over HTTP KV. `Err` only for an answer that should never come.
async fn http_op(
    http: &reqwest::Client,
    addr: &str,
    key: &str,
    op: RegOp,
    cfg: &WorkloadConfig,
) -> Result<RegOut, String> {
    let url = format!("http://{addr}/v1/kv/{key}");
    let sent = match op {
        RegOp::Read => http.get(format!("{url}?consistency={}", cfg.read_consistency)).send().await,
        RegOp::Write(v) => http.put(&url).body(v.to_string()).send().await,
        RegOp::Cas(e, v) => http.put(format!("{url}?expect={e}")).body(v.to_string()).send().await,
    };
    let Ok(r) = sent else { return Ok(RegOut::Unknown) };
    let status = r.status().as_u16();
    let Ok(body) = r.bytes().await else { return Ok(RegOut::Unknown) };
    Ok(match (op, status) {
        (RegOp::Read, 200) => match parse_value(&body) {
            Some(v) => RegOut::Read(Some(v)),
            None => return Err(format!("GET {key} answered {:?}", String::from_utf8_lossy(&body))),
        },
        (RegOp::Read, 404) => RegOut::Read(None),
        (RegOp::Write(_) | RegOp::Cas(..), 200) => RegOut::Ok,
        (RegOp::Cas(..), 412) => RegOut::CasFailed,
        (_, 400) => return Err(format!("{op:?} on {key}: 400 {}", String::from_utf8_lossy(&body))),
        _ => RegOut::Unknown,
    })
}

async fn resp_op(conns: &mut HashMap<u64, Resp>, ep: &Endpoint, key: &str, op: RegOp) -> Result<RegOut, String> {
    let conn = match conns.entry(ep.id) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => match Resp::connect(&ep.redis).await {
            Ok(c) => v.insert(c),
            Err(_) => return Ok(RegOut::Unknown),
        },
    };
    let value;
    let args: Vec<&[u8]> = match op {
        RegOp::Read => vec![b"GET", key.as_bytes()],
        RegOp::Write(v) => {
            value = v.to_string();
            vec![b"SET", key.as_bytes(), value.as_bytes()]
        }
        RegOp::Cas(..) => return Err("RESP has no compare-and-set".into()),
    };
    let reply = match conn.call(&args).await {
        Ok(r) => r,
        Err(_) => {
            conns.remove(&ep.id);
            return Ok(RegOut::Unknown);
        }
    };
    Ok(match (op, reply) {
        (RegOp::Read, RespReply::Bulk(None)) => RegOut::Read(None),
        (RegOp::Read, RespReply::Bulk(Some(b))) => match parse_value(&b) {
            Some(v) => RegOut::Read(Some(v)),
            None => return Err(format!("RESP GET {key} answered {:?}", String::from_utf8_lossy(&b))),
        },
        (RegOp::Write(_), RespReply::Ok) => RegOut::Ok,
        (_, RespReply::Error(e)) if e.starts_with("ERR syntax") || e.starts_with("ERR wrong") => {
            return Err(format!("RESP {op:?} on {key}: {e}"));
        }
        _ => RegOut::Unknown,
    })
}

async fn sql_op(
    http: &reqwest::Client,
    addr: &str,
    key: &str,
    op: RegOp,
    cfg: &WorkloadConfig,
) -> Result<RegOut, String> {
    let consistency = if op == RegOp::Read { cfg.read_consistency.as_str() } else { "linearizable" };
    let (sql, params) = match op {
        RegOp::Read => ("SELECT v FROM reg WHERE k = $1", vec![json!(key)]),
        RegOp::Write(v) => ("UPDATE reg SET v = $2 WHERE k = $1", vec![json!(key), json!(v)]),
        RegOp::Cas(e, v) => ("UPDATE reg SET v = $3 WHERE k = $1 AND v = $2", vec![json!(key), json!(e), json!(v)]),
    };
    match sql_call(http, addr, sql, &params, consistency, cfg.timeout).await {
        Ok(body) => match op {
            RegOp::Read => match first_cell(&body) {
                Some(Value::Null) => Ok(RegOut::Read(None)),
                Some(v) => v.as_u64().map(|v| RegOut::Read(Some(v))).ok_or_else(|| format!("SELECT answered {body}")),
                None => Err(format!("SELECT found no row for {key}: {body}")),
            },
            RegOp::Write(_) => match rows_affected(&body) {
                Some(1) => Ok(RegOut::Ok),
                _ => Err(format!("UPDATE answered {body}")),
            },
            RegOp::Cas(..) => match rows_affected(&body) {
                Some(1) => Ok(RegOut::Ok),
                Some(0) => Ok(RegOut::CasFailed),
                _ => Err(format!("UPDATE answered {body}")),
            },
        },
        // A conflict (40001) refuses the statement as a whole: nothing happened.
        Err(SqlError::Refused(e)) if e.contains("40001") && op != RegOp::Read => Ok(RegOut::Unknown),
        Err(SqlError::Refused(e)) => Err(format!("{op:?} on {key}: {e}")),
        Err(SqlError::Unknown(_)) => Ok(RegOut::Unknown),
    }
}

/// Inserts unique values into `chaos_set` through random nodes. An insert whose outcome is
/// unknown is re-sent (to any node) with the same `Idempotency-Key`, up to three times: the
/// final check then also proves it was applied at most once.
pub async fn set_client(seed: u64, shared: ClientShared) {
    let ClientShared { cfg, http, next_value, observed, stop, .. } = shared;
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let Some(ep) = cfg.endpoints.choose(&mut rng) else { return };
        let v = next_value.fetch_add(1, Ordering::Relaxed);
        let key = format!("set-{v}");
        let mut r = Err(SqlError::Unknown(String::new()));
        for attempt in 0..4 {
            let ep = if attempt == 0 { ep } else { cfg.endpoints.choose(&mut rng).unwrap_or(ep) };
            let sql = "INSERT INTO chaos_set VALUES ($1)";
            r = sql_call_once(&http, &ep.http, sql, &[json!(v)], "linearizable", cfg.timeout, Some(&key)).await;
            if !matches!(r, Err(SqlError::Unknown(_))) || stop.load(Ordering::Relaxed) {
                break;
            }
            observed.set_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let list = match r {
            Ok(_) => &observed.set_acked,
            Err(SqlError::Refused(e)) => {
                observed.unexpected.lock().unwrap_or_else(|e| e.into_inner()).push(format!("insert {v}: {e}"));
                &observed.set_failed
            }
            Err(SqlError::Unknown(_)) => &observed.set_unknown,
        };
        list.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        tokio::time::sleep(cfg.think).await;
    }
}

/// Moves money between two accounts in one transaction, or reads the total.
pub async fn bank_client(seed: u64, shared: ClientShared) {
    let ClientShared { cfg, http, observed, stop, .. } = shared;
    let mut rng = StdRng::seed_from_u64(seed);
    let total = ACCOUNTS as i64 * INITIAL_BALANCE;
    while !stop.load(Ordering::Relaxed) {
        let Some(ep) = cfg.endpoints.choose(&mut rng) else { return };
        if rng.random_bool(0.5) {
            let from = rng.random_range(0..ACCOUNTS);
            let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
            let amount = rng.random_range(1..=10);
            let sql = format!(
                "BEGIN; UPDATE bank SET balance = balance - {amount} WHERE id = {from}; \
                 UPDATE bank SET balance = balance + {amount} WHERE id = {to}; COMMIT"
            );
            match sql_call(&http, &ep.http, &sql, &[], "linearizable", cfg.timeout).await {
                Ok(_) => {
                    observed.bank_transfers.fetch_add(1, Ordering::Relaxed);
                }
                Err(SqlError::Refused(e)) if e.contains("40001") => {}
                Err(SqlError::Refused(e)) => {
                    observed.unexpected.lock().unwrap_or_else(|e| e.into_inner()).push(format!("transfer: {e}"));
                }
                Err(SqlError::Unknown(_)) => {}
            }
        } else {
            let sql = "SELECT sum(balance), count(*) FROM bank";
            if let Ok(body) = sql_call(&http, &ep.http, sql, &[], &cfg.read_consistency, cfg.timeout).await {
                let row = body["results"][0]["rows"][0].clone();
                observed.bank_reads.fetch_add(1, Ordering::Relaxed);
                if row[0].as_i64() != Some(total) || row[1].as_u64() != Some(ACCOUNTS) {
                    observed
                        .bank_bad
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("node {}: sum, count = {row} (want {total}, {ACCOUNTS})", ep.id));
                }
            }
        }
        tokio::time::sleep(cfg.think).await;
    }
}

/// The vector of point `id`: distinct for every id, so a point's nearest neighbour is itself.
pub fn vector_of(id: u64) -> [f32; VECTOR_DIM] {
    let f = |k: u64| ((id.wrapping_mul(k) % 1009) as f32) / 10.0;
    [(id % 1000) as f32, f(7919), f(104_729), (id / 1000) as f32]
}

/// Upserts points (one to four per request) through random nodes.
pub async fn vector_client(seed: u64, shared: ClientShared) {
    let ClientShared { cfg, http, next_value, observed, stop, .. } = shared;
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let Some(ep) = cfg.endpoints.choose(&mut rng) else { return };
        let ids: Vec<u64> = (0..rng.random_range(1..=4)).map(|_| next_value.fetch_add(1, Ordering::Relaxed)).collect();
        let points: Vec<Value> = ids.iter().map(|id| json!({"id": id, "vector": vector_of(*id)})).collect();
        let r = http
            .put(format!("http://{}/v1/collections/chaos_vec/points", ep.http))
            .timeout(cfg.timeout)
            .json(&json!({ "points": points }))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                observed
                    .vectors_acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(ids.iter().map(|id| (*id, vector_of(*id))));
            }
            Ok(r) if r.status().as_u16() == 400 => {
                let body = r.text().await.unwrap_or_default();
                observed.unexpected.lock().unwrap_or_else(|e| e.into_inner()).push(format!("upsert: {body}"));
            }
            _ => {}
        }
        tokio::time::sleep(cfg.think).await;
    }
}

/// The `ef` of the final HNSW check: the most the API allows, more than a schedule's points,
/// so the search covers the whole graph and must find every point the index holds. (At ef
/// 1000 a beam over these lattice-like vectors misses about 1 % of a parallel-built graph of
/// 3,500 points — a recall limit, not a lost point: `vector/tests/hnsw.rs`.)
const HNSW_CHECK_EF: usize = 10_000;

/// The nearest point to `vector` on node `addr`, exact or by HNSW over the whole graph.
async fn nearest(http: &reqwest::Client, addr: &str, vector: &[f32], exact: bool) -> Result<Option<u64>> {
    let params = if exact { json!({"exact": true}) } else { json!({"hnsw_ef": HNSW_CHECK_EF}) };
    let body = json!({"vector": vector, "limit": 1, "params": params, "with_payload": false});
    let r = http
        .post(format!("http://{addr}/v1/collections/chaos_vec/search?consistency=stale"))
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await?;
    let v: Value = r.json().await?;
    Ok(v["result"][0]["id"].as_u64())
}

/// The final checks of the set and bank workloads, read at `linearizable` through `addr`.
/// Returns the problems found (empty: all good).
pub async fn final_checks(http: &reqwest::Client, endpoints: &[Endpoint], observed: &Observed) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for ep in endpoints {
        // Set: every acknowledged value exactly once, nothing never attempted.
        let body = read_retrying(http, &ep.http, "SELECT v, count(*) FROM chaos_set GROUP BY v").await?;
        let mut present: BTreeMap<u64, u64> = BTreeMap::new();
        for row in body["results"][0]["rows"].as_array().context("set rows")? {
            present.insert(row[0].as_u64().context("v")?, row[1].as_u64().context("count")?);
        }
        let acked = observed.set_acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let unknown = observed.set_unknown.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lost: Vec<u64> = acked.iter().filter(|v| !present.contains_key(v)).copied().collect();
        if !lost.is_empty() {
            problems.push(format!(
                "node {}: {} acknowledged inserts lost: {:?}",
                ep.id,
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let dup: Vec<(u64, u64)> = present.iter().filter(|(_, n)| **n > 1).map(|(v, n)| (*v, *n)).collect();
        if !dup.is_empty() {
            problems.push(format!("node {}: values inserted more than once: {dup:?}", ep.id));
        }
        let attempted: std::collections::HashSet<u64> = acked.iter().chain(&unknown).copied().collect();
        let ghost: Vec<u64> = present.keys().filter(|v| !attempted.contains(v)).copied().collect();
        if !ghost.is_empty() {
            let failed = observed.set_failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let refused: Vec<u64> = ghost.iter().filter(|v| failed.contains(v)).copied().collect();
            problems.push(format!(
                "node {}: values present that were never inserted: {ghost:?} (of them refused: {refused:?}; {} acked, {} unknown, {} refused in all)",
                ep.id,
                acked.len(),
                unknown.len(),
                failed.len()
            ));
        }
        // Vectors: every acknowledged point (up to 200 of them) is its own nearest neighbour,
        // by exact search and by HNSW over the whole graph, on this node. (Read after convergence.)
        let acked = observed.vectors_acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let step = (acked.len() / 200).max(1);
        let (mut missing, mut hnsw_wrong) = (Vec::new(), Vec::new());
        for (id, v) in acked.iter().step_by(step) {
            if nearest(http, &ep.http, v, true).await? != Some(*id) {
                missing.push(*id);
            } else if nearest(http, &ep.http, v, false).await? != Some(*id) {
                hnsw_wrong.push(*id);
            }
        }
        if !missing.is_empty() {
            problems.push(format!("node {}: acknowledged vector points not found: {missing:?}", ep.id));
        }
        if !hnsw_wrong.is_empty() {
            problems.push(format!(
                "node {}: HNSW at ef {HNSW_CHECK_EF} disagrees with exact search for {hnsw_wrong:?}",
                ep.id
            ));
        }
        // Bank: the total.
        let body = read_retrying(http, &ep.http, "SELECT sum(balance), count(*) FROM bank").await?;
        let row = &body["results"][0]["rows"][0];
        if row[0].as_i64() != Some(ACCOUNTS as i64 * INITIAL_BALANCE) || row[1].as_u64() != Some(ACCOUNTS) {
            problems.push(format!("node {}: final bank sum, count = {row}", ep.id));
        }
    }
    Ok(problems)
}

async fn read_retrying(http: &reqwest::Client, addr: &str, sql: &str) -> Result<Value> {
    let mut last = String::new();
    for _ in 0..30 {
        match sql_call(http, addr, sql, &[], "linearizable", Duration::from_secs(5)).await {
            Ok(v) => return Ok(v),
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("{addr}: {sql}: {last}")
}
