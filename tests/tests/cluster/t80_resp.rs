//! The RESP (Redis protocol) surface on a 3-node cluster: commands through the leader and a
//! follower, concurrent INCR, NX/XX, expiry seen by every node, KEYS and SCAN while keys
//! change, the same values over HTTP, AUTH, malformed input, and the real `redis-cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use quorumdb_server::{Node, NodeConfig};
use quorumdb_tests::{TestCluster, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A RESP2 reply as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum R {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<R>),
}

fn ok() -> R {
    R::Simple("OK".into())
}

fn bulk(s: &str) -> R {
    R::Bulk(Some(s.into()))
}

const NIL: R = R::Bulk(None);

/// A minimal Redis client: one connection, one command at a time (or raw bytes).
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: &str) -> Self {
        Self { io: BufReader::new(TcpStream::connect(addr).await.expect("connect to RESP")) }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    async fn cmd(&mut self, args: &[&str]) -> R {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.send_raw(&req).await;
        self.read().await
    }

    fn read(&mut self) -> Pin<Box<dyn Future<Output = R> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            self.io.read_line(&mut line).await.expect("read reply");
            assert!(line.ends_with("\r\n"), "reply line {line:?}");
            let (kind, rest) = line.trim_end().split_at(1);
            match kind {
                "+" => R::Simple(rest.into()),
                "-" => R::Err(rest.into()),
                ":" => R::Int(rest.parse().unwrap()),
                "$" => {
                    let n: i64 = rest.parse().unwrap();
                    if n < 0 {
                        return R::Bulk(None);
                    }
                    let mut data = vec![0; n as usize + 2];
                    self.io.read_exact(&mut data).await.unwrap();
                    data.truncate(n as usize);
                    R::Bulk(Some(String::from_utf8(data).unwrap()))
                }
                "*" => {
                    let n: usize = rest.parse().unwrap();
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.read().await);
                    }
                    R::Array(items)
                }
                other => panic!("unexpected reply type {other:?} in {line:?}"),
            }
        })
    }

    /// Whether the server closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(std::time::Duration::from_secs(5), self.io.read(&mut b)).await, Ok(Ok(0)))
    }
}

fn err_starts(r: &R, prefix: &str) -> bool {
    matches!(r, R::Err(e) if e.starts_with(prefix))
}

fn strings(r: R) -> Vec<String> {
    match r {
        R::Array(items) => items
            .into_iter()
            .map(|i| match i {
                R::Bulk(Some(s)) => s,
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn leader_and_follower(c: &TestCluster, leader: u64) -> (u64, u64) {
    (leader, c.running().into_iter().find(|i| *i != leader).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_leader_and_a_follower() {
    let c = TestCluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c, c.wait_leader().await);
    let mut f = Client::connect(&c.redis_addr(follower)).await;
    let mut l = Client::connect(&c.redis_addr(leader)).await;

    assert_eq!(f.cmd(&["PING"]).await, R::Simple("PONG".into()));
    assert_eq!(f.cmd(&["SET", "a", "1"]).await, ok());
    assert_eq!(l.cmd(&["GET", "a"]).await, bulk("1"), "a linearizable read on the leader sees the follower's write");
    assert_eq!(f.cmd(&["GET", "a"]).await, bulk("1"));
    assert_eq!(f.cmd(&["GET", "missing"]).await, NIL);

    // NX / XX / GET.
    assert_eq!(l.cmd(&["SET", "a", "2", "NX"]).await, NIL);
    assert_eq!(l.cmd(&["SET", "b", "2", "XX"]).await, NIL);
    assert_eq!(f.cmd(&["EXISTS", "b"]).await, R::Int(0));
    assert_eq!(l.cmd(&["SET", "b", "2", "NX"]).await, ok());
    assert_eq!(l.cmd(&["SET", "a", "3", "XX", "GET"]).await, bulk("1"));
    assert_eq!(f.cmd(&["SET", "a", "4", "NX", "GET"]).await, bulk("3"), "NX GET reports the value it kept");
    assert_eq!(f.cmd(&["GET", "a"]).await, bulk("3"));
    assert!(err_starts(&f.cmd(&["SET", "a", "1", "NX", "XX"]).await, "ERR syntax error"));
    assert!(err_starts(&f.cmd(&["SET", "a", "1", "EX", "0"]).await, "ERR invalid expire time"));
    assert!(err_starts(&f.cmd(&["SET", "a", "1", "EX", "x"]).await, "ERR value is not an integer"));

    // MSET / MGET / EXISTS / DEL.
    assert_eq!(f.cmd(&["MSET", "m1", "x", "m2", "y", "m3", "z"]).await, ok());
    assert_eq!(l.cmd(&["MGET", "m1", "nope", "m3"]).await, R::Array(vec![bulk("x"), NIL, bulk("z")]));
    assert_eq!(l.cmd(&["EXISTS", "m1", "m2", "nope", "m1"]).await, R::Int(3), "duplicates count, as in Redis");
    assert_eq!(f.cmd(&["DEL", "m1", "m2", "nope", "m1"]).await, R::Int(2));
    assert_eq!(l.cmd(&["MGET", "m1", "m2", "m3"]).await, R::Array(vec![NIL, NIL, bulk("z")]));
    assert!(err_starts(&f.cmd(&["MSET", "a"]).await, "ERR wrong number of arguments for 'mset'"));

    // INCR family and its deterministic rejections.
    assert_eq!(f.cmd(&["INCR", "n"]).await, R::Int(1));
    assert_eq!(l.cmd(&["INCRBY", "n", "41"]).await, R::Int(42));
    assert_eq!(f.cmd(&["DECR", "n"]).await, R::Int(41));
    assert_eq!(f.cmd(&["DECRBY", "n", "-9"]).await, R::Int(50));
    assert_eq!(f.cmd(&["SET", "big", "9223372036854775807"]).await, ok());
    assert_eq!(f.cmd(&["INCR", "big"]).await, R::Err("ERR increment or decrement would overflow".into()));
    assert_eq!(l.cmd(&["SET", "word", "hello"]).await, ok());
    assert_eq!(l.cmd(&["INCR", "word"]).await, R::Err("ERR value is not an integer or out of range".into()));
    assert_eq!(l.cmd(&["GET", "big"]).await, bulk("9223372036854775807"), "a rejected INCR changes nothing");

    // Other commands and errors.
    assert_eq!(f.cmd(&["ECHO", "hi"]).await, bulk("hi"));
    assert_eq!(f.cmd(&["SELECT", "0"]).await, ok());
    assert!(err_starts(&f.cmd(&["SELECT", "1"]).await, "ERR DB index is out of range"));
    assert!(err_starts(&f.cmd(&["FLUSHALL"]).await, "ERR unknown command 'FLUSHALL'"));
    assert!(err_starts(&f.cmd(&["GET"]).await, "ERR wrong number of arguments for 'get' command"));
    assert!(err_starts(&f.cmd(&["SET", "", "x"]).await, "ERR the key is empty"));
    let info = match l.cmd(&["INFO", "replication"]).await {
        R::Bulk(Some(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(info.contains("role:master") && info.contains(&format!("quorumdb_node_id:{leader}")), "{info}");
    let finfo = match f.cmd(&["INFO"]).await {
        R::Bulk(Some(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(finfo.contains("role:slave") && finfo.contains(&format!("quorumdb_leader_id:{leader}")), "{finfo}");
    assert!(finfo.contains("# Keyspace") && finfo.contains("db0:keys="), "{finfo}");

    // Per-connection read consistency.
    assert_eq!(f.cmd(&["QUORUMDB.CONSISTENCY"]).await, bulk("linearizable"));
    assert_eq!(f.cmd(&["QUORUMDB.CONSISTENCY", "lease"]).await, ok());
    assert_eq!(f.cmd(&["GET", "b"]).await, bulk("2"));
    assert_eq!(f.cmd(&["QUORUMDB.CONSISTENCY", "stale", "60000"]).await, ok());
    assert_eq!(f.cmd(&["QUORUMDB.CONSISTENCY"]).await, bulk("stale 60000"));
    assert!(err_starts(&f.cmd(&["QUORUMDB.CONSISTENCY", "eventual"]).await, "ERR unknown consistency level"));

    // RESP and HTTP see the same table.
    assert_eq!(c.get(leader, "a", "linearizable").await.as_deref(), Some("3"));
    assert_eq!(c.get(follower, "n", "linearizable").await.as_deref(), Some("50"));
    assert_eq!(c.put(follower, "from-http", "h v").await.unwrap().status(), 200);
    assert_eq!(l.cmd(&["GET", "from-http"]).await, bulk("h v"));
    let (s, v) = c.call(leader, "GET", "/v1/kv?prefix=m", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"], serde_json::json!([{"key": "m3", "value": "z"}]));
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incr_from_every_node_counts_each_acknowledged_increment() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let addr = c.redis_addr(1 + i % 3);
        tasks.push(tokio::spawn(async move {
            let mut cl = Client::connect(&addr).await;
            let mut acked = 0i64;
            let mut last = 0;
            for _ in 0..25 {
                match cl.cmd(&["INCR", "counter"]).await {
                    R::Int(v) => {
                        assert!(v > last, "one connection's increments are seen in order: {v} after {last}");
                        last = v;
                        acked += 1;
                    }
                    other => panic!("INCR failed without a fault: {other:?}"),
                }
            }
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    for id in c.running() {
        let mut cl = Client::connect(&c.redis_addr(id)).await;
        assert_eq!(cl.cmd(&["GET", "counter"]).await, bulk(&acked.to_string()), "node {id}");
    }
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_disappear_on_every_node_and_are_purged() {
    let c = TestCluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c, c.wait_leader().await);
    let mut f = Client::connect(&c.redis_addr(follower)).await;
    assert_eq!(f.cmd(&["SET", "short", "v", "EX", "1"]).await, ok());
    assert_eq!(f.cmd(&["SET", "px", "v", "PX", "1500"]).await, ok());
    assert_eq!(f.cmd(&["SET", "long", "v", "EX", "3600"]).await, ok());
    assert_eq!(f.cmd(&["SET", "forever", "v"]).await, ok());
    match f.cmd(&["TTL", "long"]).await {
        R::Int(t) => assert!((3590..=3600).contains(&t), "TTL {t}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.cmd(&["TTL", "forever"]).await, R::Int(-1));
    assert_eq!(f.cmd(&["TTL", "nope"]).await, R::Int(-2));
    // Until it expires, NX on it fails everywhere.
    let mut l = Client::connect(&c.redis_addr(leader)).await;
    if l.cmd(&["SET", "long", "w", "NX"]).await != NIL {
        panic!("NX succeeded on a live key");
    }

    // Expired keys read as absent on every node and every surface, without waiting for the
    // purge; then the purge removes them from every replica's state.
    for id in c.running() {
        let mut cl = Client::connect(&c.redis_addr(id)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while cl.cmd(&["MGET", "short", "px"]).await != R::Array(vec![NIL, NIL]) {
            assert!(std::time::Instant::now() < deadline, "the 1 s keys did not expire on node {id}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(cl.cmd(&["GET", "long"]).await, bulk("v"));
        assert_eq!(c.get(id, "short", "stale").await, None, "HTTP GET on node {id}");
        let (_, list) = c.call(id, "GET", "/v1/kv", None).await;
        let keys: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["forever", "long"], "listing on node {id}");
    }
    // NX now succeeds on the expired key (decided with the proposer's clock, the same on every
    // node), and the new value has no expiry.
    assert_eq!(l.cmd(&["SET", "short", "again", "NX"]).await, ok());
    assert_eq!(f.cmd(&["TTL", "short"]).await, R::Int(-1));
    wait_for(15, "the purge of the PX key on every replica", || async {
        c.running().iter().all(|id| c.node(*id).replica.reader().get(b"k/px").unwrap().is_none()).then_some(())
    })
    .await;
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_scan_see_every_key_once_while_keys_change() {
    let c = TestCluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c, c.wait_leader().await);
    let mut w = Client::connect(&c.redis_addr(leader)).await;
    let mut args = vec!["MSET".to_string()];
    for i in 0..150 {
        args.push(format!("scan:{i:03}"));
        args.push(i.to_string());
    }
    args.extend(["other:1".to_string(), "x".into(), "sc?n".into(), "q".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(w.cmd(&refs).await, ok());

    let mut r = Client::connect(&c.redis_addr(follower)).await;
    let mut keys = strings(r.cmd(&["KEYS", "scan:1[0-1]?"]).await);
    keys.sort();
    let want: Vec<String> = (100..=119).map(|i| format!("scan:{i}")).collect();
    assert_eq!(keys, want);
    assert_eq!(strings(r.cmd(&["KEYS", "sc\\?n"]).await), ["sc?n"]);
    assert_eq!(r.cmd(&["DBSIZE"]).await, R::Int(152));

    // Scan with small pages while another connection deletes some keys and adds others.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor = "0".to_string();
    let mut round = 0;
    loop {
        let reply = r.cmd(&["SCAN", &cursor, "MATCH", "scan:*", "COUNT", "7"]).await;
        let R::Array(parts) = reply else { panic!("{reply:?}") };
        let R::Bulk(Some(next)) = parts[0].clone() else { panic!("{parts:?}") };
        for k in strings(parts[1].clone()) {
            *seen.entry(k).or_default() += 1;
        }
        // Change keys both behind and ahead of the cursor.
        if round < 15 {
            assert_eq!(w.cmd(&["DEL", &format!("scan:{:03}", round * 10)]).await, R::Int(1));
        }
        assert_eq!(w.cmd(&["SET", &format!("scan:new{round:03}"), "n"]).await, ok());
        round += 1;
        cursor = next;
        if cursor == "0" {
            break;
        }
        assert!(round < 200, "the scan does not end");
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "keys seen twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    for i in 0..150 {
        let k = format!("scan:{i:03}");
        if i % 10 != 0 || i / 10 >= round.min(15) {
            assert!(seen.contains_key(&k), "{k}, present for the whole scan, was not returned");
        }
    }
    assert!(seen.keys().all(|k| k.starts_with("scan:")), "MATCH filters");
    assert!(err_starts(&r.cmd(&["SCAN", "12345"]).await, "ERR invalid cursor"));
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_and_the_node_keeps_serving() {
    let c = TestCluster::start(3).await;
    let id = c.wait_leader().await;
    let addr = c.redis_addr(id);
    for garbage in [
        &b"*1\r\n+PING\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
        b"*99999999\r\n",
        b"*1\r\n$4\r\nPINGxx",
        b"ECHO \"unterminated\r\n",
    ] {
        let mut cl = Client::connect(&addr).await;
        cl.send_raw(garbage).await;
        let reply = cl.read().await;
        assert!(err_starts(&reply, "ERR Protocol error"), "{:?} → {reply:?}", garbage.escape_ascii().to_string());
        assert!(cl.closed().await, "the connection is closed after a protocol error");
    }
    // Pipelined commands in one write, answered in order, inline ones included.
    let mut cl = Client::connect(&addr).await;
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$2\r\np{}\r\n$3\r\nv{:02}\r\n", i % 10, i).as_bytes());
        burst.extend_from_slice(format!("GET p{}\r\n", i % 10).as_bytes());
    }
    cl.send_raw(&burst).await;
    for i in 0..50 {
        assert_eq!(cl.read().await, ok());
        assert_eq!(cl.read().await, bulk(&format!("v{i:02}")), "command {i} of the pipeline");
    }
    assert_eq!(cl.cmd(&["PING"]).await, R::Simple("PONG".into()));
    assert_eq!(cl.cmd(&["QUIT"]).await, ok());
    assert!(cl.closed().await);
    c.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_when_a_password_is_configured() {
    quorumdb_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(1, dir.path().join("n1"), "127.0.0.1:0");
    cfg.init = true;
    cfg.redis_listen = Some("127.0.0.1:0".into());
    cfg.password = Some("s3cret".into());
    let node = Node::start(cfg).await.unwrap();
    node.replica.wait_for_leader(std::time::Duration::from_secs(10)).await.unwrap();
    let addr = node.redis_addr.unwrap().to_string();

    let mut cl = Client::connect(&addr).await;
    assert_eq!(cl.cmd(&["GET", "a"]).await, R::Err("NOAUTH Authentication required.".into()));
    assert_eq!(cl.cmd(&["PING"]).await, R::Err("NOAUTH Authentication required.".into()));
    assert!(err_starts(&cl.cmd(&["AUTH", "wrong"]).await, "WRONGPASS"));
    assert!(err_starts(&cl.cmd(&["HELLO", "2"]).await, "NOAUTH"));
    assert_eq!(cl.cmd(&["SET", "a", "1"]).await, R::Err("NOAUTH Authentication required.".into()));
    assert_eq!(cl.cmd(&["AUTH", "s3cret"]).await, ok());
    assert_eq!(cl.cmd(&["SET", "a", "1"]).await, ok());

    let mut other = Client::connect(&addr).await;
    assert_eq!(other.cmd(&["AUTH", "anyuser", "s3cret"]).await, ok(), "AUTH user password");
    assert_eq!(other.cmd(&["GET", "a"]).await, bulk("1"));
    let mut third = Client::connect(&addr).await;
    let hello = third.cmd(&["HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "t"]).await;
    assert!(matches!(&hello, R::Array(items) if items.contains(&bulk("proto"))), "{hello:?}");
    assert_eq!(third.cmd(&["CLIENT", "GETNAME"]).await, bulk("t"));
    assert!(err_starts(&third.cmd(&["HELLO", "3"]).await, "NOPROTO"));
    node.stop().await;
}

/// Runs the real `redis-cli` (installed by scripts/setup.sh) with `args`; its stdout.
async fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut full = vec!["-h".to_string(), host.to_string(), "-p".into(), port.to_string()];
    full.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("redis-cli").args(&full).output())
        .await
        .unwrap()
        .expect("redis-cli runs (scripts/setup.sh installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_redis_cli_works_against_a_follower() {
    let c = TestCluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c, c.wait_leader().await);
    let addr = c.redis_addr(follower);
    assert_eq!(redis_cli(&addr, &["PING"]).await, "PONG\n");
    assert_eq!(redis_cli(&addr, &["SET", "cli:a", "1"]).await, "OK\n");
    assert_eq!(redis_cli(&addr, &["GET", "cli:a"]).await, "1\n");
    assert_eq!(redis_cli(&addr, &["INCR", "cli:a"]).await, "2\n");
    assert_eq!(redis_cli(&addr, &["MSET", "cli:b", "x y", "cli:c", "z"]).await, "OK\n");
    assert_eq!(redis_cli(&addr, &["MGET", "cli:a", "cli:b", "cli:none"]).await, "2\nx y\n\n");
    assert_eq!(redis_cli(&addr, &["EXISTS", "cli:a", "cli:none"]).await, "1\n");
    assert_eq!(redis_cli(&addr, &["--no-raw", "GET", "cli:none"]).await, "(nil)\n");
    assert_eq!(c.get(leader, "cli:b", "linearizable").await.as_deref(), Some("x y"));
    for i in 0..30 {
        assert_eq!(c.put(leader, &format!("many:{i:02}"), "v").await.unwrap().status(), 200);
    }
    // 30 keys: several pages at SCAN's default COUNT of 10.
    let scanned = redis_cli(&addr, &["--scan", "--pattern", "many:*"]).await;
    let got: BTreeSet<String> = scanned.lines().map(String::from).collect();
    assert_eq!(scanned.lines().count(), 30, "no key twice: {scanned}");
    assert_eq!(got, (0..30).map(|i| format!("many:{i:02}")).collect::<BTreeSet<_>>());
    let all = redis_cli(&addr, &["--scan"]).await;
    assert_eq!(all.lines().count(), 33);
    assert_eq!(redis_cli(&addr, &["DBSIZE"]).await, "33\n");
    assert_eq!(redis_cli(&addr, &["DEL", "cli:a", "cli:b"]).await, "2\n");
    let info = redis_cli(&addr, &["INFO", "replication"]).await;
    assert!(info.contains("role:slave"), "{info}");
    c.wait_converged().await;
}
