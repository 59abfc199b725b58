//! Fuzzing the PostgreSQL wire protocol of a live node past the startup: after a valid
//! StartupMessage, each connection sends random, mutated and truncated frontend messages (simple
//! and extended query, describe, sync, flush, copy, password, terminate, unknown types, lengths
//! that lie). The property: the node stays up and answers — every 100 connections, and at the
//! end, a new client's `SELECT 1` and a write succeed within the client's timeout. A hang of
//! the server or an abort fails the test. (A panic inside one connection's task ends only that
//! connection: pgwire 0.42's message decoders do panic on lengths that lie — `advance out of
//! bounds`, `split_to out of bounds` — which this test shows on stderr; the node keeps serving.)
//!
//! ```text
//! cargo test -p quorumdb-tests --test cluster -- t89                       # CI: 1,000 connections
//! QUORUMDB_FUZZ_CASES=20000 cargo test -p quorumdb-tests --test cluster -- t89 --nocapture
//! ```

use std::time::Duration;

use quorumdb_tests::TestCluster;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One frontend message: type byte, length (itself included), body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn startup() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for p in ["user", "fuzz", "database", "quorumdb"] {
        body.extend(cstr(p));
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT $1::int",
    "INSERT INTO fz VALUES ($1, $2)",
    "SELECT * FROM fz WHERE id = $1",
    "BEGIN",
    "COMMIT",
    "UPDATE fz SET v = $2 WHERE id = $1",
    "SELECT",
    "",
    "SELEC 1",
];

/// A random but plausible message, or garbage.
fn random_message(rng: &mut StdRng) -> Vec<u8> {
    let sql = SQL[rng.random_range(0..SQL.len())];
    let name = if rng.random_bool(0.5) { "" } else { "s1" };
    let mut bytes = |n: usize| {
        let mut b = vec![0u8; n];
        rng.fill_bytes(&mut b);
        b
    };
    let mut m = match bytes(1)[0] % 14 {
        0 => message(b'Q', &cstr(sql)),
        1 => {
            let mut b = cstr(name);
            b.extend(cstr(sql));
            b.extend_from_slice(&[0, 1, 0, 0, 0, 23]); // one parameter type: int4
            message(b'P', &b)
        }
        2 => {
            let mut b = cstr("");
            b.extend(cstr(name));
            b.extend_from_slice(&[0, 1, 0, 1]); // one format code: binary
            b.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 1, b'x']); // two params
            b.extend_from_slice(&[0, 0]);
            message(b'B', &b)
        }
        3 => {
            let mut b = vec![if name.is_empty() { b'P' } else { b'S' }];
            b.extend(cstr(name));
            message(b'D', &b)
        }
        4 => message(b'E', &[0, 0, 0, 0, 0]),
        5 => message(b'S', &[]),
        6 => message(b'H', &[]),
        7 => message(b'C', &[b'S', b's', b'1', 0]),
        8 => {
            let n = (bytes(1)[0] % 64) as usize;
            message(b'd', &bytes(n))
        }
        9 => message(b'c', &[]),
        10 => message(b'f', &cstr("no")),
        11 => message(b'p', &cstr("password")),
        12 => {
            // A type byte and a length that lie.
            let mut m = bytes(1);
            m.extend_from_slice(&(bytes(4)).to_vec());
            let n = (bytes(1)[0] % 32) as usize;
            m.extend(bytes(n));
            m
        }
        _ => {
            let n = (bytes(1)[0] % 48) as usize;
            bytes(n)
        }
    };
    // Sometimes flip a byte or cut the message short.
    if rng.random_bool(0.15) && !m.is_empty() {
        let i = rng.random_range(0..m.len());
        m[i] ^= 1 << rng.random_range(0..8);
    }
    if rng.random_bool(0.1) && m.len() > 1 {
        m.truncate(rng.random_range(1..m.len()));
    }
    m
}

/// One connection: startup, then a few random messages; reads whatever comes back for a while.
async fn one_case(addr: &str, rng: &mut StdRng) {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await else {
        panic!("cannot connect to {addr}: the node stopped listening");
    };
    let mut out = startup();
    for _ in 0..rng.random_range(1..8) {
        out.extend(random_message(rng));
    }
    if rng.random_bool(0.5) {
        out.extend(message(b'S', &[]));
    }
    let _ = s.write_all(&out).await;
    let mut buf = vec![0u8; 64 << 10];
    // Drain answers until the server closes or stays quiet (it may wait for bytes a lying
    // length promised: that is waiting, not a hang of the node).
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(150), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

async fn healthy(c: &TestCluster, i: usize) {
    let (host, port) = c.pg_addr(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap())).unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host).port(port).user("check").dbname("quorumdb").connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("after {i} cases: {e}"));
    tokio::spawn(conn);
    let text = format!("SELECT 1; INSERT INTO health VALUES ({i})");
    let q = client.simple_query(&text);
    tokio::time::timeout(Duration::from_secs(20), q)
        .await
        .unwrap_or_else(|_| panic!("after {i} cases: SELECT 1 hung"))
        .unwrap_or_else(|e| panic!("after {i} cases: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t89_pg_wire_fuzz() {
    let cases: usize = std::env::var("QUORUMDB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let seed: u64 = std::env::var("QUORUMDB_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0089);
    println!("t89: {cases} connections, seed {seed}");
    let c = TestCluster::start(1).await;
    let (s, v) = c
        .call(1, "POST", "/v1/sql", Some(serde_json::json!({"sql": "CREATE TABLE fz (id INT PRIMARY KEY, v TEXT); CREATE TABLE health (i INT PRIMARY KEY)"})))
        .await;
    assert_eq!(s, 200, "{v}");
    let addr = c.pg_addr(1);
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..cases {
        one_case(&addr, &mut rng).await;
        if i % 100 == 99 {
            healthy(&c, i + 1).await;
        }
    }
    healthy(&c, cases + 1).await;
    let (s, v) = c.call(1, "POST", "/v1/sql", Some(serde_json::json!({"sql": "SELECT count(*) FROM health"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["rows"][0][0].as_u64(), Some((cases / 100 + 1) as u64), "{v}");
}
