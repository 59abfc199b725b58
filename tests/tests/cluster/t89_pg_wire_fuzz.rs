//! Fuzzing the PostgreSQL wire protocol of a live node past the startup: after a valid
//! StartupMessage, each connection sends random, mutated and truncated frontend messages (simple
//! and extended query, describe, sync, flush, copy, password, terminate, unknown types, lengths
//! that lie), once on a node that lets anyone in and once on one that requires a SCRAM login
//! (where the first message after the startup is parsed as a SASL initial response). The
//! properties: nothing panics anywhere in the process (a panic hook counts them: a panic that
//! tokio catches inside one connection's task still fails the test), and the node stays up and
//! answers — every 100 connections, and at the end, a new client's `SELECT 1` and a write
//! succeed within the client's timeout. A hang of the server or an abort fails the test.
//!
//! ```text
//! cargo test -p quorumdb-tests --test cluster -- t89                       # CI: 1,000 + 300 connections
//! QUORUMDB_FUZZ_CASES=20000 cargo test -p quorumdb-tests --test cluster -- t89 --nocapture
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
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
        12 if bytes(1)[0] % 2 == 0 => {
            // A SASL initial response whose inner length may lie.
            let mut b = cstr("SCRAM-SHA-256");
            let data = b"n,,n=fuzz,r=abcdefghijklmnop";
            let r = bytes(2);
            let len: i32 = match r[0] % 4 {
                0 => data.len() as i32,
                1 => -1,
                2 => i32::from(r[1]) - 5,
                _ => i32::MAX,
            };
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&data[..usize::from(r[1]) % (data.len() + 1)]);
            message(b'p', &b)
        }
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
/// `login`: the node asks for SCRAM, so the first message is mostly a password-family one.
async fn one_case(addr: &str, rng: &mut StdRng, login: bool) {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await else {
        panic!("cannot connect to {addr}: the node stopped listening");
    };
    let mut out = startup();
    if login && rng.random_bool(0.8) {
        let mut m = random_message(rng);
        while m.first() != Some(&b'p') {
            m = random_message(rng);
        }
        out.extend(m);
    }
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

async fn healthy(c: &TestCluster, i: usize, password: Option<&str>) {
    let (host, port) = c.pg_addr(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap())).unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host).port(port).user("check").dbname("quorumdb").connect_timeout(Duration::from_secs(5));
    if let Some(p) = password {
        cfg.user("admin").password(p);
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("after {i} cases: {e}"));
    tokio::spawn(conn);
    let text = format!("SELECT 1; INSERT INTO health VALUES ({i})");
    let q = client.simple_query(&text);
    tokio::time::timeout(Duration::from_secs(20), q)
        .await
        .unwrap_or_else(|_| panic!("after {i} cases: SELECT 1 hung"))
        .unwrap_or_else(|e| panic!("after {i} cases: {e}"));
}

/// Panics anywhere in this process since [`count_panics`] was first called.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs `cases` connections against node 1, checking health every 100; asserts no panic.
async fn fuzz(c: &TestCluster, cases: usize, seed: u64, password: Option<&str>) {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let setup = "CREATE TABLE fz (id INT PRIMARY KEY, v TEXT); CREATE TABLE health (i INT PRIMARY KEY)";
    let mut req = c.http.post(format!("http://{}/v1/sql", c.addr(1))).json(&serde_json::json!({ "sql": setup }));
    if let Some(p) = password {
        req = req.basic_auth("admin", Some(p));
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let addr = c.pg_addr(1);
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..cases {
        one_case(&addr, &mut rng, password.is_some()).await;
        if i % 100 == 99 {
            healthy(c, i + 1, password).await;
        }
    }
    healthy(c, cases + 1, password).await;
    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    assert_eq!(panics, 0, "{panics} panics while serving malformed PostgreSQL messages (see stderr)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t89_pg_wire_fuzz() {
    let cases: usize = std::env::var("QUORUMDB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let seed: u64 = std::env::var("QUORUMDB_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0089);
    println!("t89: {cases} connections, seed {seed}");
    let c = TestCluster::start(1).await;
    fuzz(&c, cases, seed, None).await;
    let (s, v) = c.call(1, "POST", "/v1/sql", Some(serde_json::json!({"sql": "SELECT count(*) FROM health"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["rows"][0][0].as_u64(), Some((cases / 100 + 1) as u64), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t89_pg_wire_fuzz_with_scram_logins() {
    const PASSWORD: &str = "fuzz-Admin-pw1";
    let cases: usize =
        std::env::var("QUORUMDB_FUZZ_CASES").ok().and_then(|v| v.parse::<usize>().ok()).map_or(300, |n| n / 3);
    let seed: u64 = std::env::var("QUORUMDB_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0089);
    let c = TestCluster::start_tweaked(1, 50_000, |cfg| {
        cfg.admin_password = Some(PASSWORD.into());
        cfg.public_status = true;
    })
    .await;
    quorumdb_tests::wait_for(30, "logins to be required", || async {
        let r = c.http.get(format!("http://{}/v1/kv/probe", c.addr(1))).send().await.ok()?;
        (r.status().as_u16() == 401).then_some(())
    })
    .await;
    fuzz(&c, cases, seed ^ 0x5c7a, Some(PASSWORD)).await;
}
