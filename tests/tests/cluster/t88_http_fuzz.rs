//! Fuzzing the HTTP API of a 1-node cluster: random and mutated bodies (JSON, JSON lines,
//! Arrow IPC, raw bytes), paths and query strings to every endpoint of `server/src/http`
//! (SQL, KV, fault rules, cluster administration, backups into a temp dir, collections and
//! their points and searches, bulk loads).
//!
//! The property, for every request: an answer within the client's timeout, with a status
//! that is a success, a 4xx or 503 — never another 5xx — and, for every error, the JSON error
//! body `{"error": {"code", "message", ...}}`. A write that fails changes nothing (the
//! digest of the state's data is compared before and after). After the run the node is still
//! healthy: `GET /v1/status` answers with a leader, and a KV write, a KV read and SQL work.
//! Every violation is collected (the run goes on) and reported with its request at the end.
//!
//! ```text
//! cargo test -p quorumdb-tests --test cluster -- t88                        # CI: 2,000 requests, ~15 s
//! QUORUMDB_FUZZ_CASES=20000 cargo test -p quorumdb-tests --test cluster -- t88 --nocapture
//! QUORUMDB_FUZZ_SEED=7 ...                                                  # another fixed seed
//! ```
//!
//! The seed is fixed unless `QUORUMDB_FUZZ_SEED` says otherwise, or the long mode
//! (`QUORUMDB_FUZZ_CASES`) runs without one: then it is random, and printed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use quorumdb_tests::TestCluster;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

/// How long one request may take: a hang is a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The table the SQL and bulk-load bodies aim at, and the collection the vector bodies do.
const TABLE: &str = "fz";
const COLLECTION: &str = "fzc";

fn cases() -> usize {
    std::env::var("QUORUMDB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn seed() -> u64 {
    match std::env::var("QUORUMDB_FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None if std::env::var("QUORUMDB_FUZZ_CASES").is_ok() => rand::rng().next_u64(),
        None => 0x5eed_0088,
    }
}

/// One request to send.
#[derive(Debug, Clone)]
struct Req {
    /// The endpoint, for the summary.
    endpoint: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Vec<u8>,
    /// A write: if it fails, the state must not change.
    write: bool,
}

impl Req {
    fn new(endpoint: &'static str, method: &'static str, path: impl Into<String>, body: Vec<u8>) -> Self {
        Req {
            endpoint,
            method,
            path: path.into(),
            content_type: Some("application/json".into()),
            idempotency_key: None,
            body,
            write: false,
        }
    }

    fn writes(mut self) -> Self {
        self.write = true;
        self
    }

    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body = if body.len() > 300 {
            let mut end = 300;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &body[..end], self.body.len())
        } else {
            body.into_owned()
        };
        format!("{} {} [{:?}] {body}", self.method, self.path, self.content_type)
    }
}

// ---------------------------------------------------------------------------------------
// Random values and mutations

const WEIRD_STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "fz",
    "fzc",
    "NaN",
    "Infinity",
    "-0",
    "null",
    "true",
    "1e999",
    "9223372036854775808",
    "é",
    "日本語",
    "\u{0}",
    "\u{feff}",
    "\u{10ffff}",
    "../../etc/passwd",
    "%ff",
    "\\x00",
    "'; DROP TABLE fz; --",
    "[1,2,3]",
    "{\"a\":1}",
    "linearizable",
    "stale",
    "Cosine",
    "Euclid",
    "Dot",
    "127.0.0.1:1",
];

fn random_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => WEIRD_STRINGS[rng.random_range(0..WEIRD_STRINGS.len())].to_string(),
        1 => "x".repeat(rng.random_range(0..5000)),
        2 if rng.random_bool(0.1) => "y".repeat(rng.random_range(100_000..1_200_000)),
        3 => (0..rng.random_range(0..20)).map(|_| char::from(rng.random_range(32u8..127))).collect(),
        4 => (0..rng.random_range(0..10)).filter_map(|_| char::from_u32(rng.random_range(0..0x11_0000))).collect(),
        _ => format!("k{}", rng.random_range(0..20)),
    }
}

fn random_number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => json!(i64::MAX),
        1 => json!(i64::MIN),
        2 => json!(u64::MAX),
        3 => json!(-1),
        4 => json!(0),
        5 => json!(rng.random_range(-10.0..10.0)),
        6 => json!(1e300),
        7 => json!(-0.0),
        8 => serde_json::from_str("1e400").unwrap_or(json!(0)),
        _ => json!(rng.random_range(-5..20)),
    }
}

/// A random JSON value, at most `depth` levels deep.
fn random_json(rng: &mut StdRng, depth: usize) -> Value {
    let kinds = if depth == 0 { 4 } else { 6 };
    match rng.random_range(0..kinds) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => random_number(rng),
        3 => json!(random_string(rng)),
        4 => Value::Array((0..rng.random_range(0..5)).map(|_| random_json(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.random_range(0..5)).map(|_| (random_string(rng), random_json(rng, depth - 1))).collect(),
        ),
    }
}

/// A JSON value nested `n` arrays deep (serde_json stops at 128).
fn deep_json(n: usize) -> Vec<u8> {
    format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()
}

/// `v` with one random change somewhere in it.
fn mutate_json(rng: &mut StdRng, v: &mut Value) {
    // Walk down to a random node, as a JSON pointer.
    let mut pointer = String::new();
    let mut here: &Value = v;
    while rng.random_bool(0.6) {
        let (step, next) = match here {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.random_range(0..a.len());
                (i.to_string(), &a[i])
            }
            Value::Object(o) if !o.is_empty() => {
                let i = rng.random_range(0..o.len());
                let Some((k, child)) = o.iter().nth(i) else { break };
                (k.replace('~', "~0").replace('/', "~1"), child)
            }
            _ => break,
        };
        pointer.push('/');
        pointer.push_str(&step);
        here = next;
    }
    let Some(node) = v.pointer_mut(&pointer) else { return };
    match rng.random_range(0..9) {
        0 => *node = random_json(rng, 2),
        1 => *node = random_number(rng),
        2 => *node = json!(random_string(rng)),
        3 => *node = Value::Null,
        4 => match node {
            Value::Object(o) if !o.is_empty() => {
                let i = rng.random_range(0..o.len());
                if let Some(k) = o.keys().nth(i).cloned() {
                    o.remove(&k);
                }
            }
            other => *other = json!({}),
        },
        5 => match node {
            Value::Object(o) => {
                o.insert(random_string(rng), random_json(rng, 1));
            }
            other => *other = json!([other.clone()]),
        },
        6 => match node {
            Value::Array(a) if !a.is_empty() => {
                let n = rng.random_range(1..3000);
                let first = a[0].clone();
                a.extend(std::iter::repeat_n(first, n));
            }
            other => *other = json!([other.clone(), other.clone()]),
        },
        7 => *node = json!([node.clone()]),
        _ => *node = Value::Array(vec![]),
    }
}

/// `bytes` damaged: truncated, a byte flipped, junk inserted or appended, invalid UTF-8.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.random());
        return;
    }
    match rng.random_range(0..6) {
        0 => bytes.truncate(rng.random_range(0..bytes.len())),
        1 => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        2 => {
            let i = rng.random_range(0..=bytes.len());
            let junk: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
            bytes.splice(i..i, junk);
        }
        3 => bytes.extend_from_slice(b"}]\",,\x00\xff"),
        4 => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = 0xff;
        }
        _ => {
            let mut with_bom = vec![0xef, 0xbb, 0xbf];
            with_bom.append(bytes);
            *bytes = with_bom;
        }
    }
}

/// A body from a valid-looking `template`: as it is, mutated as JSON, damaged as bytes, or
/// replaced by random JSON, a deep nesting, junk or nothing.
fn body_from(rng: &mut StdRng, template: Value) -> Vec<u8> {
    let mut v = template;
    match rng.random_range(0..30) {
        0..=11 => serde_json::to_vec(&v).unwrap(),
        12..=20 => {
            for _ in 0..rng.random_range(1..4) {
                mutate_json(rng, &mut v);
            }
            serde_json::to_vec(&v).unwrap()
        }
        21..=24 => {
            let mut b = serde_json::to_vec(&v).unwrap();
            mutate_bytes(rng, &mut b);
            b
        }
        25 => serde_json::to_vec(&random_json(rng, 3)).unwrap(),
        26 => deep_json(rng.random_range(100..2000)),
        27 => (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
        _ => Vec::new(),
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A path segment: usually a known name, sometimes a strange one (percent-encoded as needed).
fn segment(rng: &mut StdRng, known: &[&str]) -> String {
    let raw = match rng.random_range(0..20) {
        0..=15 => pick(rng, known).to_string(),
        16 => "%ff%fe".to_string(),
        17 => "a%2Fb".to_string(),
        18 => "z".repeat(rng.random_range(60..5000)),
        _ => random_string(rng).chars().take(200).collect(),
    };
    // Keep '%' escapes we wrote on purpose; encode everything else that is not plain.
    raw.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "%-_.~".contains(c) { c.to_string() } else { encode(c) })
        .collect()
}

fn encode(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect()
}

/// `?consistency=…&max_staleness_ms=…`, sometimes with nonsense.
fn read_params(rng: &mut StdRng) -> String {
    match rng.random_range(0..16) {
        0..=8 => String::new(),
        9 => "?consistency=linearizable".into(),
        10 => "?consistency=stale&max_staleness_ms=100".into(),
        11 | 12 => "?consistency=lease".into(),
        13 => format!("?consistency={}", segment(rng, &["bogus", "STALE", ""])),
        14 => format!("?max_staleness_ms={}", pick(rng, &["-1", "abc", "18446744073709551616", "1e3", ""])),
        _ => "?consistency=stale".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Requests, endpoint by endpoint

const SQL: &[&str] = &[
    "SELECT * FROM fz WHERE id = $1",
    "SELECT count(*) FROM fz",
    "INSERT INTO fz (id, v, n) VALUES ($1, $2, $3)",
    "INSERT INTO fz (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
    "UPDATE fz SET n = n + $1 WHERE id = $2",
    "DELETE FROM fz WHERE id = $1",
    "SELECT $1::int + 1",
    "SELECT $1, $2, $3",
    "SELECT id FROM fz ORDER BY emb <-> $1 LIMIT 3",
    "INSERT INTO fz (id, emb) VALUES ($1, $2)",
    "INSERT INTO fz (id) VALUES (900); INSERT INTO nope VALUES (1)",
    "INSERT INTO fz (id) VALUES (901); INSERT INTO fz (id) VALUES (901)",
    "BEGIN; UPDATE fz SET n = 0; ROLLBACK",
    "SELECT * FROM fzc ORDER BY vector <-> '[1,2,3]' LIMIT 2",
    "SELECT abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(abs(1))))))))))))))))))))",
    "SELECT 1 +",
    "",
    ";",
    "SET hnsw.ef_search = $1",
    "SELECT * FROM information_schema.tables",
    "EXPLAIN SELECT * FROM fz WHERE id > $1",
    "TRUNCATE nope",
];

fn sql_req(rng: &mut StdRng) -> Req {
    let sql = if rng.random_bool(0.1) { random_string(rng) } else { pick(rng, SQL).to_string() };
    // As many parameters as the statement uses, mostly of a fitting kind.
    let wanted = (1..=3).rev().find(|n| sql.contains(&format!("${n}"))).unwrap_or(0);
    let count = if rng.random_bool(0.8) { wanted } else { rng.random_range(0..5) };
    let params: Vec<Value> = (0..count)
        .map(|_| match rng.random_range(0..6) {
            0..=2 => json!(rng.random_range(-5..2000)),
            3 => json!(format!("p{}", rng.random_range(0..9))),
            4 => json!("[1,2,3]"),
            _ => random_json(rng, 1),
        })
        .collect();
    let template = json!({"sql": sql, "params": params});
    let body = if rng.random_bool(0.6) { serde_json::to_vec(&template).unwrap() } else { body_from(rng, template) };
    Req::new("POST /v1/sql", "POST", format!("/v1/sql{}", read_params(rng)), body).writes()
}

fn kv_key(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => "k".repeat(rng.random_range(4000..4200)),
        1 => segment(rng, &["fz/a", "fz/b"]),
        _ => pick(rng, &["fz/a", "fz/b", "fz/c", "fz%2Fd", "fz/%C3%A9", "fz/a/b/c"]).to_string(),
    }
}

fn kv_req(rng: &mut StdRng) -> Req {
    let key = kv_key(rng);
    match rng.random_range(0..6) {
        0..=2 => {
            let query = match rng.random_range(0..8) {
                0 => "?absent=true".to_string(),
                1 => "?expect=v1".to_string(),
                2 => "?expect=v1&absent=true".to_string(),
                3 => format!("?absent={}", pick(rng, &["yes", "1", "", "TRUE"])),
                4 => format!("?expect={}", segment(rng, &["x"])),
                _ => String::new(),
            };
            let body = match rng.random_range(0..5) {
                0 => Vec::new(),
                1 => vec![b'v'; rng.random_range(1_000_000..3_000_000)],
                2 => (0..rng.random_range(0..300)).map(|_| rng.random()).collect(),
                _ => random_string(rng).into_bytes(),
            };
            let mut r = Req::new("PUT /v1/kv/{key}", "PUT", format!("/v1/kv/{key}{query}"), body).writes();
            r.content_type = None;
            r
        }
        3 => Req::new("GET /v1/kv/{key}", "GET", format!("/v1/kv/{key}{}", read_params(rng)), Vec::new()),
        4 => Req::new("DELETE /v1/kv/{key}", "DELETE", format!("/v1/kv/{key}"), Vec::new()).writes(),
        _ => {
            let query =
                pick(rng, &["", "?prefix=fz/", "?limit=0", "?limit=-1", "?limit=99999999999999999999", "?start=%ff"]);
            Req::new("GET /v1/kv", "GET", format!("/v1/kv{query}"), Vec::new())
        }
    }
}

/// Fault rules, kept harmless: a failed disk stops the node until a restart (by design), and a
/// long disk delay holds every write as long; delays beyond the limit (a minute) are sent, and
/// must be refused.
fn faults_req(rng: &mut StdRng) -> Req {
    let template = json!({
        "isolated": false,
        "drop_to": [],
        "drop_from": [],
        "delay_ms": {},
        "disk_delay_ms": 0,
        "disk_fail": false,
    });
    let mut body = body_from(rng, template);
    if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(&body) {
        if o.get("disk_fail").is_some_and(|v| v != &json!(false)) {
            o.insert("disk_fail".into(), json!(false));
        }
        let small = |v: &Value| v.as_u64().is_none_or(|n| n <= 20 || n > 60_000);
        if o.get("disk_delay_ms").is_some_and(|v| !small(v)) {
            o.insert("disk_delay_ms".into(), json!(5));
        }
        if let Some(Value::Object(d)) = o.get_mut("delay_ms") {
            for v in d.values_mut() {
                if !small(v) {
                    *v = json!(5);
                }
            }
        }
        body = serde_json::to_vec(&o).unwrap();
    }
    Req::new("PUT /v1/debug/faults", "PUT", "/v1/debug/faults", body)
}

fn cluster_req(rng: &mut StdRng, own_addr: &str) -> Req {
    match rng.random_range(0..5) {
        0 => {
            let addr = *pick(rng, &["127.0.0.1:1", "localhost:2", "[::1]:3", own_addr, "bad", "a:0", "host:99999"]);
            let template = json!({"id": rng.random_range(0..5), "addr": addr});
            Req::new("POST /v1/cluster/join", "POST", "/v1/cluster/join", body_from(rng, template))
        }
        1 => {
            let template = json!({"id": rng.random_range(0..4)});
            Req::new("POST /v1/cluster/remove", "POST", "/v1/cluster/remove", body_from(rng, template))
        }
        2 => {
            let template = json!({"to": rng.random_range(0..4)});
            Req::new(
                "POST /v1/cluster/transfer-leader",
                "POST",
                "/v1/cluster/transfer-leader",
                body_from(rng, template),
            )
        }
        3 => Req::new("POST /v1/cluster/init", "POST", "/v1/cluster/init", body_from(rng, json!({}))),
        _ => Req::new("POST /v1/cluster/snapshot", "POST", "/v1/cluster/snapshot", body_from(rng, json!({}))),
    }
}

/// Backups into `tmp`, the node's `--backup-dir` (relative names land there too), or refused
/// before anything is written (`..`, the backup dir itself, a file on the way).
fn backup_req(rng: &mut StdRng, tmp: &std::path::Path, n: usize) -> Req {
    let fresh = tmp.join(format!("b{n}"));
    let to: Value = match rng.random_range(0..14) {
        0..=6 => json!(fresh),
        7 => json!(tmp),
        8 => json!(tmp.join("file")),
        9 => json!(tmp.join("file").join("below")),
        10 => json!(tmp.join("z".repeat(rng.random_range(200..5000)))),
        11 => json!(pick(rng, &["relative", "", ".", "..", "../x", "~/x", "\u{0}"])),
        12 => json!(tmp.join("nul\u{0}byte")),
        _ => random_number(rng),
    };
    let mut template = json!({"to": to});
    let mut body = serde_json::to_vec(&template).unwrap();
    match rng.random_range(0..10) {
        0 => body = Vec::new(),
        1 => body.truncate(body.len() / 2),
        2 => template["extra"] = json!(1),
        3 => body = b"{\"to\": [\"/\"]}".to_vec(),
        _ => {}
    }
    if rng.random_bool(0.2) {
        body = serde_json::to_vec(&template).unwrap();
    }
    Req::new("POST /v1/backup", "POST", "/v1/backup", body)
}

const COLLECTIONS: &[&str] = &[
    COLLECTION, COLLECTION, COLLECTION, COLLECTION, COLLECTION, COLLECTION, "fzc2", "fz", "nope", "bad-name", "1abc",
    "_x",
];

fn vector(rng: &mut StdRng, dim: usize) -> Value {
    Value::Array((0..dim).map(|_| json!(rng.random_range(-1.0..1.0))).collect())
}

fn collection_req(rng: &mut StdRng) -> Req {
    let name = segment(rng, COLLECTIONS);
    let base = format!("/v1/collections/{name}");
    match rng.random_range(0..10) {
        0 => {
            let template = json!({
                "vectors": {"size": *pick(rng, &[3, 3, 3, 1, 0, 16_000, 16_001, 100_000]), "distance": *pick(rng, &["Cosine", "Euclid", "Dot", "l2", "x"])},
                "hnsw_config": {"m": *pick(rng, &[16, 16, 16, 2, 1, 101, 0]), "ef_construct": *pick(rng, &[100, 100, 100, 4, 3, 1001])},
            });
            Req::new("PUT /v1/collections/{name}", "PUT", base, body_from(rng, template)).writes()
        }
        1..=3 => {
            let dim = if rng.random_bool(0.8) { 3 } else { *pick(rng, &[2, 4, 0]) };
            let points: Vec<Value> = (0..rng.random_range(1..6))
                .map(|i| {
                    let tag = *pick(rng, &["a", "b"]);
                    json!({
                        "id": i + rng.random_range(0..50),
                        "vector": vector(rng, dim),
                        "payload": {"tag": tag, "n": rng.random_range(0..10)},
                    })
                })
                .collect();
            let body = body_from(rng, json!({"points": points}));
            Req::new("PUT /v1/collections/{name}/points", "PUT", format!("{base}/points"), body).writes()
        }
        4 => {
            let points = if rng.random_bool(0.7) {
                json!([rng.random_range(0..60), rng.random_range(0..60)])
            } else {
                json!([rng.random_range(0..60), -1, "7", 1.5, u64::MAX])
            };
            let template = json!({"points": points});
            Req::new("POST .../points/delete", "POST", format!("{base}/points/delete"), body_from(rng, template))
                .writes()
        }
        5..=6 => {
            let edgy = rng.random_bool(0.3);
            let limit = if edgy { *pick(rng, &[0, 10_000, 10_001]) } else { rng.random_range(1..10) };
            let ef = if edgy { *pick(rng, &[0, 100_000]) } else { 50 };
            let template = json!({
                "vector": vector(rng, if edgy { 2 } else { 3 }),
                "limit": limit,
                "filter": {"must": [{"key": "tag", "match": {"value": "a"}}]},
                "with_payload": true,
                "with_vector": rng.random_bool(0.5),
                "params": {"hnsw_ef": ef, "exact": rng.random_bool(0.3)},
            });
            let path = if rng.random_bool(0.5) { "search" } else { "points/search" };
            Req::new("POST .../search", "POST", format!("{base}/{path}{}", read_params(rng)), body_from(rng, template))
        }
        7 => {
            let search = json!({"vector": vector(rng, 3), "limit": 2});
            let template = json!({"searches": [search.clone(), search]});
            let path = if rng.random_bool(0.5) { "search/batch" } else { "points/search/batch" };
            Req::new("POST .../search/batch", "POST", format!("{base}/{path}"), body_from(rng, template))
        }
        8 => {
            let id = segment(rng, &["1", "2", "-1", "99999999999999999999", "x", "0"]);
            Req::new("GET .../points/{id}", "GET", format!("{base}/points/{id}{}", read_params(rng)), Vec::new())
        }
        _ => {
            if rng.random_bool(0.15) {
                Req::new("DELETE /v1/collections/{name}", "DELETE", base, Vec::new()).writes()
            } else if rng.random_bool(0.5) {
                Req::new("GET /v1/collections/{name}", "GET", format!("{base}{}", read_params(rng)), Vec::new())
            } else {
                Req::new("GET /v1/collections", "GET", format!("/v1/collections{}", read_params(rng)), Vec::new())
            }
        }
    }
}

/// A valid Arrow IPC stream of rows for the table (or of columns it does not have).
fn arrow_stream(rng: &mut StdRng) -> Vec<u8> {
    let n = rng.random_range(0..20);
    let ids: ArrayRef = Arc::new(Int32Array::from_iter((0..n).map(|i| Some(1000 + i))));
    let (schema, columns): (Schema, Vec<ArrayRef>) = match rng.random_range(0..4) {
        0 => (
            Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("v", DataType::Utf8, true)]),
            vec![ids, Arc::new(StringArray::from_iter((0..n).map(|i| Some(format!("r{i}")))))],
        ),
        1 => (
            Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("n", DataType::Float64, true)]),
            vec![
                Arc::new(Int64Array::from_iter((0..n).map(|i| (i % 3 != 0).then_some(i64::MAX - i as i64)))),
                Arc::new(Float64Array::from_iter((0..n).map(|i| Some(f64::from(i) / 0.0)))),
            ],
        ),
        2 => (
            Schema::new(vec![Field::new("nope", DataType::Boolean, true)]),
            vec![Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0))))],
        ),
        _ => (Schema::new(vec![Field::new("id", DataType::Int32, false)]), vec![ids]),
    };
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    out
}

/// A valid stream with one little-endian i64 of its record batch message (the first one equal
/// to `find`) replaced by `with`: a corrupt length the stream claims.
fn corrupt_arrow_stream(find: impl Fn(&datafusion::arrow::ipc::Message) -> i64, with: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![7001, 7002, 7003]))]).unwrap();
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    // Messages: 0xFFFFFFFF, the metadata's length (i32), the metadata, the body.
    let mut at = 0;
    loop {
        let len = i32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap()) as usize;
        let meta = at + 8..at + 8 + len;
        let message = datafusion::arrow::ipc::root_as_message(&out[meta.clone()]).unwrap();
        if message.header_type() == datafusion::arrow::ipc::MessageHeader::RecordBatch {
            let old = find(&message).to_le_bytes();
            let i = out[meta.clone()].windows(8).position(|w| w == old).unwrap() + meta.start;
            out[i..i + 8].copy_from_slice(&with.to_le_bytes());
            return out;
        }
        at = meta.end + message.bodyLength() as usize;
    }
}

/// Requests that once broke the property, sent first in every run.
fn known_bad(tmp: &std::path::Path) -> Vec<Req> {
    let arrow = |body: Vec<u8>| {
        let mut r = Req::new("POST /v1/tables/{t}/rows", "POST", "/v1/tables/fz/rows", body).writes();
        r.content_type = Some("application/vnd.apache.arrow.stream".into());
        r
    };
    vec![
        // A record batch claiming a 71 PB body: arrow's StreamReader allocated it up front and
        // the process aborted.
        arrow(corrupt_arrow_stream(|m| m.bodyLength(), 0x00ff_0000_0000_0000)),
        // A buffer claiming 18 EB: arrow panicked slicing it (the connection was dropped).
        arrow(corrupt_arrow_stream(
            |m| m.header_as_record_batch().and_then(|b| b.buffers()).map_or(0, |b| b.get(b.len() - 1).length()),
            0x00ff_0000_0000_0000,
        )),
        // A disk delay of u64::MAX ms was accepted: the log's fsync thread slept for good.
        Req::new(
            "PUT /v1/debug/faults",
            "PUT",
            "/v1/debug/faults",
            br#"{"disk_delay_ms": 18446744073709551615}"#.to_vec(),
        ),
        // Plain-text rejections of axum's extractors (query string, path, body size).
        Req::new("GET /v1/kv", "GET", "/v1/kv?limit=-1", Vec::new()),
        Req::new("POST /v1/sql", "POST", "/v1/sql?max_staleness_ms=x", br#"{"sql": "SELECT 1"}"#.to_vec()),
        Req::new("GET /v1/collections/{name}", "GET", "/v1/collections/%ff", Vec::new()),
        Req::new("PUT /v1/kv/{key}", "PUT", "/v1/kv/fz/big", vec![b'v'; 3 << 20]).writes(),
        // A backup into the temp dir that must work.
        Req::new(
            "POST /v1/backup",
            "POST",
            "/v1/backup",
            serde_json::to_vec(&json!({"to": tmp.join("known")})).unwrap(),
        ),
    ]
}

fn ndjson(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..rng.random_range(0..30) {
        let mut row =
            json!({"id": 2000 + i, "v": format!("l{i}"), "n": i, "f": 1.5, "b": true, "emb": [1.0, 2.0, 3.0]});
        if rng.random_bool(0.3) {
            mutate_json(rng, &mut row);
        }
        out.extend(serde_json::to_vec(&row).unwrap());
        out.push(b'\n');
    }
    out
}

fn bulk_req(rng: &mut StdRng) -> Req {
    let table = segment(rng, &[TABLE, TABLE, TABLE, "nope", COLLECTION]);
    let (ctype, mut body) = match rng.random_range(0..8) {
        0..=2 => ("application/x-ndjson", ndjson(rng)),
        3..=4 => ("application/vnd.apache.arrow.stream", arrow_stream(rng)),
        5 => ("application/vnd.apache.arrow.stream", (0..rng.random_range(0..3000)).map(|_| rng.random()).collect()),
        6 => ("application/jsonl", random_string(rng).into_bytes()),
        _ => {
            let ctype = *pick(rng, &["application/json", "text/csv", "", "application/x-ndjson; charset=utf-8"]);
            (ctype, ndjson(rng))
        }
    };
    if rng.random_bool(0.4) {
        for _ in 0..rng.random_range(1..4) {
            mutate_bytes(rng, &mut body);
        }
    }
    if rng.random_bool(0.02) {
        body = vec![b'{'; 17 << 20];
    }
    let mut r = Req::new("POST /v1/tables/{t}/rows", "POST", format!("/v1/tables/{table}/rows"), body).writes();
    r.content_type = (!ctype.is_empty()).then(|| ctype.to_string());
    r
}

const MISC: &[(&str, &str)] = &[
    ("GET /v1/status", "/v1/status"),
    ("GET /v1/debug/digest", "/v1/debug/digest"),
    ("GET /v1/debug/faults", "/v1/debug/faults"),
    ("GET /metrics", "/metrics"),
];

fn misc_req(rng: &mut StdRng) -> Req {
    let (endpoint, path) = *pick(rng, MISC);
    Req::new(endpoint, "GET", path, Vec::new())
}

fn request(rng: &mut StdRng, own_addr: &str, tmp: &std::path::Path, n: usize) -> Req {
    let mut r = match rng.random_range(0..100) {
        0..=29 => sql_req(rng),
        30..=44 => kv_req(rng),
        45..=49 => faults_req(rng),
        50..=56 => cluster_req(rng, own_addr),
        57..=60 => backup_req(rng, tmp, n),
        61..=84 => collection_req(rng),
        85..=96 => bulk_req(rng),
        _ => misc_req(rng),
    };
    if r.write && rng.random_bool(0.05) {
        r.idempotency_key = Some(match rng.random_range(0..4) {
            0 => "ké".to_string(),
            1 => "x".repeat(rng.random_range(100..2000)),
            2 => String::new(),
            _ => format!("fuzz-{}", rng.random_range(0..5)),
        });
    }
    r
}

// ---------------------------------------------------------------------------------------
// Sending and judging

/// What was wrong with one answer (or the lack of one).
fn judge(status: u16, content_type: &str, body: &[u8], raw_ok: bool) -> Result<(), String> {
    let is_error = status >= 400;
    if is_error && status != 503 && status >= 500 {
        return Err(format!("status {status}"));
    }
    if !is_error && raw_ok {
        return Ok(());
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("status {status} with content-type {content_type:?}, not JSON"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("status {status}: the body is not JSON: {e}"))?;
    if is_error && !(v["error"]["code"].is_string() && v["error"]["message"].is_string()) {
        return Err(format!("status {status}: not the JSON error body: {v}"));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    /// Answers by endpoint and status.
    statuses: BTreeMap<&'static str, BTreeMap<u16, usize>>,
    /// Failed writes whose state was compared before and after.
    unchanged_checked: usize,
    /// Large bodies the server refused without reading them, closing the connection.
    closed_early: usize,
    /// Violations: (what, request), the first of each kind.
    violations: BTreeMap<String, (usize, String)>,
}

impl Tally {
    fn violation(&mut self, what: String, req: &Req) {
        let e = self.violations.entry(format!("{}: {what}", req.endpoint)).or_insert((0, req.describe()));
        e.0 += 1;
    }
}

async fn send(http: &reqwest::Client, base: &str, r: &Req) -> reqwest::Result<(u16, String, Vec<u8>)> {
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
    let mut b = http.request(method, format!("{base}{}", r.path)).body(r.body.clone());
    if let Some(c) = &r.content_type {
        b = b.header("content-type", c.as_str());
    }
    if let Some(k) = &r.idempotency_key
        && let Ok(v) = reqwest::header::HeaderValue::from_bytes(k.as_bytes())
    {
        b = b.header("idempotency-key", v);
    }
    let resp = b.send().await?;
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp.bytes().await?.to_vec();
    Ok((status, ctype, body))
}

/// Every key and value of the state's data, but the node's own system keys (`_sys/…`: the
/// cluster's format version moves up by itself shortly after the start).
fn state(c: &TestCluster) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    c.node(1)
        .replica
        .reader()
        .scan_range(b"", b"", &mut |k, v| {
            if !k.starts_with(b"_sys/") {
                out.insert(k.to_vec(), v.to_vec());
            }
            true
        })
        .unwrap();
    out
}

/// The keys whose values differ between two states, shown lossily.
fn changed(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t88_http_fuzz() {
    // The node's backup dir: backups go there, or are refused.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("file"), b"not a directory").unwrap();
    let backups = tmp.path().to_path_buf();
    let c = TestCluster::start_tweaked(1, 50_000, |cfg| cfg.backup_dir = Some(backups.clone())).await;
    let base = format!("http://{}", c.addr(1));

    // The table and the collection the bodies aim at.
    let (s, v) = c
        .sql(
            1,
            "CREATE TABLE fz (id INT PRIMARY KEY, v TEXT, n BIGINT DEFAULT 0, f DOUBLE PRECISION, b BOOLEAN, emb VECTOR(3)); \
             INSERT INTO fz (id, v, n, emb) VALUES (1, 'one', 1, '[1,0,0]'), (2, 'two', 2, '[0,1,0]'), (3, NULL, NULL, NULL)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) =
        c.call(1, "PUT", "/v1/collections/fzc", Some(json!({"vectors": {"size": 3, "distance": "Cosine"}}))).await;
    assert_eq!(s, 200, "{v}");

    // A connection per request: one the server closed (after refusing a body it did not read)
    // is never reused.
    let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).pool_max_idle_per_host(0).build().unwrap();
    let (n, seed) = (cases(), seed());
    println!("t88: {n} requests, seed {seed} (QUORUMDB_FUZZ_SEED={seed} sends them again)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut prev: Option<Req> = None;
    let verbose = std::env::var("QUORUMDB_FUZZ_VERBOSE").is_ok();
    let started = Instant::now();
    let known = known_bad(tmp.path());
    let first = known.len();
    let mut known = known.into_iter();
    for i in 0..first + n {
        let req = match known.next() {
            Some(r) => r,
            None => request(&mut rng, &c.addr(1), tmp.path(), i),
        };
        let before = req.write.then(|| state(&c));
        let answer = send(&http, &base, &req).await;
        match answer {
            Err(e) if e.is_timeout() => tally.violation(format!("no answer in {CLIENT_TIMEOUT:?}"), &req),
            Err(e) => {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                if req.body.len() > 64 << 10 && why.contains("error writing a body to connection") {
                    // The server answered (or closed) before reading a large body it refused on
                    // its path or query string alone, as HTTP allows: not an error of the server.
                    tally.closed_early += 1;
                } else {
                    eprintln!("t88: request {i} got no answer: {why}");
                    tally.violation(format!("no answer: {why}"), &req)
                }
            }
            Ok((status, ctype, body)) => {
                *tally.statuses.entry(req.endpoint).or_default().entry(status).or_default() += 1;
                if verbose {
                    let answer = String::from_utf8_lossy(&body).chars().take(200).collect::<String>();
                    println!("t88: {i}: {} -> {status} {answer}", req.describe());
                }
                let raw_ok = req.endpoint == "GET /v1/kv/{key}" || req.endpoint == "GET /metrics";
                if let Err(why) = judge(status, &ctype, &body, raw_ok) {
                    let body = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
                    tally.violation(format!("{why} ({body})"), &req);
                }
                if let Some(before) = &before
                    && status >= 400
                    && req.idempotency_key.is_none()
                {
                    tally.unchanged_checked += 1;
                    let keys = changed(before, &state(&c));
                    if !keys.is_empty() {
                        let previous = prev.as_ref().map(Req::describe).unwrap_or_default();
                        eprintln!("t88: request {i} changed {keys:?}; the one before: {previous}");
                        tally.violation(format!("failed with {status} but changed the state"), &req);
                    }
                }
            }
        }
        // Fault rules never outlive the request that set them.
        if req.endpoint == "PUT /v1/debug/faults" {
            c.node(1).replica.set_faults(Default::default());
        }
        prev = Some(req);
    }
    let elapsed = started.elapsed();

    // The node is still healthy.
    let status = c.status(1).await.expect("GET /v1/status answers after the run");
    assert_eq!(status["leader"], json!(1), "{status}");
    let r = c.put(1, "fz/health", "ok").await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "a KV write after the run: {}", r.text().await.unwrap_or_default());
    assert_eq!(c.get(1, "fz/health", "linearizable").await.as_deref(), Some("ok"));
    let count = c.sql_value(1, "SELECT count(*) FROM fz", "linearizable").await;
    assert!(count.as_i64().is_some_and(|n| n >= 3), "{count}");

    println!(
        "t88: {} requests in {:.1} s; {} failed writes checked unchanged; {} large bodies refused unread",
        first + n,
        elapsed.as_secs_f64(),
        tally.unchanged_checked,
        tally.closed_early
    );
    for (endpoint, statuses) in &tally.statuses {
        println!("t88: {endpoint}: {statuses:?}");
    }
    for (what, (count, req)) in &tally.violations {
        println!("t88: VIOLATION x{count}: {what}\n      first: {req}");
    }
    assert!(tally.violations.is_empty(), "{} kinds of violations (listed above)", tally.violations.len());
}
