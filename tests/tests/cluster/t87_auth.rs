//! Users, roles and logins (issue 15): a 3-node cluster started with an admin password
//! requires a login on every surface — HTTP Basic, SCRAM-SHA-256 on pgwire, `AUTH user pass` on
//! RESP, the same Basic credentials in gRPC metadata — and checks each role's privileges in
//! one place per surface: what a role may not do is refused (HTTP 403, SQLSTATE 42501, RESP
//! `NOPERM`, gRPC `PermissionDenied`) and changes nothing. Passwords are kept only as SCRAM
//! verifiers: no data directory holds one in clear. A matrix of five roles by 21 operations
//! over the four surfaces checks every cell both ways.

use std::time::Duration;

use quorumdb_tests::{TestCluster, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ADMIN_PW: &str = "adm1n-Secret-pw";

/// A cluster whose first node was started with an admin password; returns once logins are on.
async fn secured() -> TestCluster {
    let c = TestCluster::start_tweaked(3, 50_000, |cfg| {
        cfg.admin_password = Some(ADMIN_PW.into());
        cfg.public_status = true; // the harness polls /v1/status
    })
    .await;
    wait_for(30, "logins to be required", || async {
        let r = c.http.get(format!("http://{}/v1/kv/probe", c.addr(2))).send().await.ok()?;
        (r.status().as_u16() == 401).then_some(())
    })
    .await;
    c
}

/// `POST /v1/sql` on node `id` as `user` (`None`: no credentials).
async fn sql(c: &TestCluster, id: u64, user: Option<(&str, &str)>, text: &str) -> (u16, Value) {
    let mut req = c.http.post(format!("http://{}/v1/sql", c.addr(id))).json(&json!({ "sql": text }));
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn call(c: &TestCluster, id: u64, user: (&str, &str), method: reqwest::Method, path: &str, body: Value) -> u16 {
    let r = c
        .http
        .request(method, format!("http://{}{path}", c.addr(id)))
        .basic_auth(user.0, Some(user.1))
        .json(&body)
        .send()
        .await
        .expect("request");
    r.status().as_u16()
}

async fn count(c: &TestCluster, table: &str) -> i64 {
    let (s, v) = sql(c, 1, Some(("admin", ADMIN_PW)), &format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(s, 200, "{v}");
    v["results"][0]["rows"][0][0].as_i64().expect("a count")
}

async fn pg(
    c: &TestCluster,
    id: u64,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (host, port) = c.pg_addr(id).rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap())).unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host).port(port).user(user).dbname("quorumdb").connect_timeout(Duration::from_secs(5));
    if let Some(p) = password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// One RESP command on a fresh line of `io`; the reply's first line.
async fn resp(io: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    io.get_mut().write_all(&req).await.unwrap();
    let mut line = String::new();
    io.read_line(&mut line).await.unwrap();
    if let Some(n) = line.strip_prefix('$').and_then(|n| n.trim().parse::<usize>().ok()) {
        let mut data = String::new();
        io.read_line(&mut data).await.unwrap();
        assert_eq!(data.len(), n + 2);
        return data.trim_end().to_string();
    }
    line.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_surface_requires_a_login_and_no_password_is_stored() {
    let c = secured().await;
    // HTTP: none, wrong, right.
    let (s, v) = sql(&c, 2, None, "SELECT 1").await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "unauthenticated", "{v}");
    let r = c.http.get(format!("http://{}/v1/kv/a", c.addr(1))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some_and(|h| h.to_str().unwrap().starts_with("Basic")));
    assert_eq!(sql(&c, 2, Some(("admin", "wrong")), "SELECT 1").await.0, 401);
    assert_eq!(sql(&c, 2, Some(("nobody", ADMIN_PW)), "SELECT 1").await.0, 401);
    let (s, v) = sql(&c, 2, Some(("admin", ADMIN_PW)), "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await;
    assert_eq!(s, 200, "{v}");
    // --public-status keeps the status readable without a login; admin routes are not.
    assert_eq!(c.http.get(format!("http://{}/v1/status", c.addr(3))).send().await.unwrap().status().as_u16(), 200);
    let r = c.http.post(format!("http://{}/v1/cluster/transfer-leader", c.addr(3))).json(&json!({"to": 2})).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 401);
    let r = c.http.put(format!("http://{}/v1/debug/faults", c.addr(3))).json(&json!({})).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 401);

    // pgwire: SCRAM-SHA-256. No password, a wrong one: refused; the right one: in.
    // (tokio-postgres refuses to start SCRAM without a password: "invalid configuration".)
    assert!(pg(&c, 3, "admin", None).await.is_err(), "no password is refused");
    let Err(e) = pg(&c, 3, "admin", Some("wrong")).await else { panic!("a wrong password is refused") };
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("28P01"), "{e}");
    let client = pg(&c, 3, "admin", Some(ADMIN_PW)).await.expect("SCRAM login");
    client.simple_query("INSERT INTO t VALUES (1, 'x')").await.unwrap();
    client.simple_query("CREATE ROLE alice LOGIN PASSWORD 'alice-Pass-42' IN ROLE readonly").await.unwrap();

    // RESP: AUTH user password.
    let mut io = BufReader::new(TcpStream::connect(c.redis_addr(1)).await.unwrap());
    assert!(resp(&mut io, &["GET", "k"]).await.starts_with("-NOAUTH"));
    assert!(resp(&mut io, &["AUTH", "admin", "wrong"]).await.starts_with("-WRONGPASS"));
    assert_eq!(resp(&mut io, &["AUTH", "admin", ADMIN_PW]).await, "+OK");
    assert_eq!(resp(&mut io, &["SET", "k", "v"]).await, "+OK");
    assert_eq!(resp(&mut io, &["GET", "k"]).await, "v");

    // gRPC: the same Basic credentials in metadata.
    use quorumdb_server::grpc::pb;
    use quorumdb_server::grpc::pb::kv_client::KvClient;
    let mut kv = KvClient::connect(format!("http://{}", c.addr(2))).await.unwrap();
    let get = || pb::GetRequest { key: b"k".to_vec(), ..Default::default() };
    let e = kv.get(get()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut req = tonic::Request::new(get());
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PW}")));
    req.metadata_mut().insert("authorization", basic.parse().unwrap());
    assert_eq!(kv.get(req).await.unwrap().into_inner().value, b"v".to_vec());

    // No data directory holds a password in clear (log, state, snapshots), on any node, and
    // neither does a backup.
    c.wait_converged().await;
    let r = c
        .http
        .post(format!("http://{}/v1/backup", c.addr(1)))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({ "to": "b1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    assert!(c.backup_dir(1).join("b1").exists());
    for id in 1..=3 {
        for secret in [ADMIN_PW, "alice-Pass-42"] {
            let hits = grep_dir(&c.data_dir(id), secret.as_bytes());
            assert!(hits.is_empty(), "node {id}: {secret:?} in clear in {hits:?}");
            let hits = grep_dir(&c.backup_dir(id), secret.as_bytes());
            assert!(hits.is_empty(), "a backup holds {secret:?} in clear in {hits:?}");
        }
    }
}

/// Files under `dir` whose bytes contain `needle`.
fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return hits };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(grep_dir(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            hits.push(p);
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_may_do_what_it_was_granted_and_nothing_else() {
    let c = secured().await;
    let admin = ("admin", ADMIN_PW);
    for s in [
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a')",
        "CREATE ROLE ro LOGIN PASSWORD 'ro-pw' IN ROLE readonly",
        "CREATE ROLE rw LOGIN PASSWORD 'rw-pw' IN ROLE readwrite",
        "CREATE ROLE ins LOGIN PASSWORD 'ins-pw'",
        "GRANT INSERT ON t TO ins",
    ] {
        let (st, v) = sql(&c, 1, Some(admin), s).await;
        assert_eq!(st, 200, "{s}: {v}");
    }
    let (ro, rw, ins) = (("ro", "ro-pw"), ("rw", "rw-pw"), ("ins", "ins-pw"));

    // HTTP SQL: (role, statement, allowed).
    let table = [
        (ro, "SELECT * FROM t", true),
        (ro, "INSERT INTO t VALUES (10, 'ro')", false),
        (ro, "DELETE FROM t", false),
        (ins, "INSERT INTO t VALUES (11, 'ins')", true),
        (ins, "SELECT * FROM t", false),
        (ins, "UPDATE t SET v = 'x'", false),
        (rw, "INSERT INTO t VALUES (12, 'rw')", true),
        (rw, "CREATE TABLE u (id INT PRIMARY KEY)", true),
        (rw, "CREATE ROLE sneaky LOGIN PASSWORD 'x'", false),
        (ro, "GRANT INSERT ON t TO ro", false),
    ];
    for (who, text, allowed) in table {
        let before = count(&c, "t").await;
        let (s, v) = sql(&c, 2, Some(who), text).await;
        if allowed {
            assert_eq!(s, 200, "{} may: {text}: {v}", who.0);
        } else {
            assert_eq!((s, v["error"]["code"].as_str()), (403, Some("42501")), "{} may not: {text}: {v}", who.0);
            assert_eq!(count(&c, "t").await, before, "{} refused, yet {text} changed t", who.0);
        }
    }
    assert_eq!(count(&c, "t").await, 3);

    // HTTP routes: the KV table by built-in role, administration for admin only.
    use reqwest::Method;
    assert_eq!(call(&c, 3, ro, Method::PUT, "/v1/kv/x", json!(null)).await, 403);
    assert!((200..300).contains(&call(&c, 3, rw, Method::PUT, "/v1/kv/x", json!(null)).await));
    assert!((200..300).contains(&call(&c, 3, ro, Method::GET, "/v1/kv/x", json!(null)).await));
    assert_eq!(call(&c, 3, ins, Method::GET, "/v1/kv/x", json!(null)).await, 403);
    assert_eq!(call(&c, 3, rw, Method::PUT, "/v1/debug/faults", json!({})).await, 403);
    assert_eq!(call(&c, 3, rw, Method::POST, "/v1/cluster/snapshot", json!({})).await, 403);
    assert_eq!(call(&c, 3, admin, Method::GET, "/v1/debug/digest", json!(null)).await, 200);

    // pgwire: the same check, SQLSTATE 42501; nothing written.
    let client = pg(&c, 2, "ro", Some("ro-pw")).await.expect("ro logs in");
    assert_eq!(client.simple_query("SELECT count(*) FROM t").await.map(|_| ()).ok(), Some(()));
    let e = client.simple_query("INSERT INTO t VALUES (20, 'pg')").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"), "{e}");
    let e = client.batch_execute("BEGIN; DELETE FROM t; COMMIT").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"), "{e}");
    assert_eq!(count(&c, "t").await, 3);

    // RESP: reads for readonly, writes for readwrite.
    let mut io = BufReader::new(TcpStream::connect(c.redis_addr(3)).await.unwrap());
    assert_eq!(resp(&mut io, &["AUTH", "ro", "ro-pw"]).await, "+OK");
    assert!(resp(&mut io, &["SET", "k", "v"]).await.starts_with("-NOPERM"));
    assert_eq!(resp(&mut io, &["EXISTS", "k"]).await, ":0");
    let mut io = BufReader::new(TcpStream::connect(c.redis_addr(3)).await.unwrap());
    assert_eq!(resp(&mut io, &["AUTH", "rw", "rw-pw"]).await, "+OK");
    assert_eq!(resp(&mut io, &["SET", "k", "v"]).await, "+OK");

    // A new password replaces the old one at once; a dropped role cannot log in.
    assert_eq!(sql(&c, 1, Some(admin), "ALTER ROLE ro WITH PASSWORD 'ro-pw-2'").await.0, 200);
    wait_for(10, "the new password on node 3", || async {
        (sql(&c, 3, Some(("ro", "ro-pw-2")), "SELECT 1").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(sql(&c, 3, Some(ro), "SELECT 1").await.0, 401);
    // A revoked privilege is gone for every write that starts after the REVOKE, on any node:
    // a write is checked against the catalog it is planned on, and a plan made before the
    // REVOKE applied fails its catalog guard and is checked again.
    assert_eq!(sql(&c, 1, Some(admin), "REVOKE INSERT ON t FROM ins").await.0, 200);
    for id in [2, 3] {
        let (s, v) = sql(&c, id, Some(ins), "INSERT INTO t VALUES (30, 'x')").await;
        assert_eq!(s, 403, "node {id}: {v}");
    }
    assert_eq!(sql(&c, 1, Some(admin), "DROP ROLE ins").await.0, 200);
    wait_for(10, "the drop on node 2", || async { (sql(&c, 2, Some(ins), "SELECT 1").await.0 == 401).then_some(()) })
        .await;
    assert_eq!(count(&c, "t").await, 3);
}

/// Bearer tokens: issued by `POST /v1/auth/token` to a login, accepted by every node, refused
/// once expired or once the password changes. Failed logins are throttled per address: after
/// ten wrong passwords an address is refused — even with the right password — for 1 s, then
/// 2 s, 4 s …, so a guesser from one address gets a handful of checks in the next seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t87_tokens_and_throttled_guessing() {
    let c = secured().await;
    let admin = Some(("admin", ADMIN_PW));
    // A token from node 1, used on node 3 (HTTP) — signed with a key every node derives.
    let r = c
        .http
        .post(format!("http://{}/v1/auth/token", c.addr(1)))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({ "ttl_seconds": 600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().expect("a token").to_string();
    assert_eq!(v["user"], "admin");
    let with_token = |id: u64, token: &str| {
        c.http
            .post(format!("http://{}/v1/sql", c.addr(id)))
            .bearer_auth(token)
            .json(&json!({ "sql": "SELECT 1" }))
            .send()
    };
    assert_eq!(with_token(3, &token).await.unwrap().status().as_u16(), 200);
    // Without a login there is no token; a forged one is refused.
    let r = c.http.post(format!("http://{}/v1/auth/token", c.addr(1))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(with_token(3, &forged).await.unwrap().status().as_u16(), 401);

    // gRPC vector calls: per-collection grants, with a bearer token in metadata.
    for (path, body) in [
        ("/v1/collections/vc", json!({"vectors": {"size": 2, "distance": "Euclid"}})),
        ("/v1/collections/other", json!({"vectors": {"size": 2, "distance": "Euclid"}})),
    ] {
        let r =
            c.http.put(format!("http://{}{path}", c.addr(1))).basic_auth("admin", Some(ADMIN_PW)).json(&body).send();
        assert_eq!(r.await.unwrap().status().as_u16(), 200);
    }
    for stmt in ["CREATE ROLE vs LOGIN PASSWORD 'vs-pw'", "GRANT SELECT ON vc TO vs"] {
        assert_eq!(sql(&c, 1, admin, stmt).await.0, 200, "{stmt}");
    }
    c.wait_converged().await;
    let r = c.http.post(format!("http://{}/v1/auth/token", c.addr(1))).basic_auth("vs", Some("vs-pw")).send();
    let vs_token = r.await.unwrap().json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    use quorumdb_server::grpc::pb;
    let mut vectors = pb::vectors_client::VectorsClient::connect(format!("http://{}", c.addr(3))).await.unwrap();
    fn with_bearer<T>(token: &str, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }
    let search = |collection: &str| pb::SearchRequest {
        collection: collection.into(),
        vector: vec![0.0, 0.0],
        ..Default::default()
    };
    assert!(vectors.search(with_bearer(&vs_token, search("vc"))).await.is_ok(), "SELECT on vc allows a search");
    let e = vectors.search(with_bearer(&vs_token, search("other"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let upsert = pb::UpsertRequest {
        collection: "vc".into(),
        points: vec![pb::Point { id: 1, vector: vec![1.0, 2.0], payload_json: String::new() }],
    };
    let e = vectors.upsert(with_bearer(&vs_token, upsert)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");

    // Guessing on node 2 from one address (127.0.0.2) while a client at another (127.0.0.3)
    // keeps working: ten wrong passwords are checked ...
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let (attacker, user) = (from("127.0.0.2"), from("127.0.0.3"));
    let url = format!("http://{}/v1/sql", c.addr(2));
    let attempt = |client: &reqwest::Client, password: &str| {
        client.post(&url).basic_auth("admin", Some(password)).json(&json!({ "sql": "SELECT 1" })).send()
    };
    let timed = |client: reqwest::Client| {
        let url = url.clone();
        async move {
            let t = std::time::Instant::now();
            let r = client.post(&url).basic_auth("admin", Some(ADMIN_PW)).json(&json!({ "sql": "SELECT 1" })).send();
            assert_eq!(r.await.unwrap().status().as_u16(), 200);
            t.elapsed()
        }
    };
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(timed(user.clone()).await);
    }
    for _ in 0..10 {
        assert_eq!(attempt(&attacker, "guess").await.unwrap().status().as_u16(), 401);
    }
    // ... the eleventh locks the address out; then even the right password is refused.
    assert_eq!(attempt(&attacker, "guess").await.unwrap().status().as_u16(), 401);
    let v: Value = attempt(&attacker, ADMIN_PW).await.unwrap().json().await.unwrap();
    assert!(v.to_string().contains("too many failed logins"), "{v}");
    // Over the next 6 s the guesser, going as fast as it can, gets only a few more checks
    // (lock-outs of 1, 2, 4 s), while the other client's latency stays near normal.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guesser = {
        let (stop, attacker, url) = (stop.clone(), attacker.clone(), url.clone());
        tokio::spawn(async move {
            let (mut checked, mut refused) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r =
                    attacker.post(&url).basic_auth("admin", Some("guess")).json(&json!({ "sql": "SELECT 1" })).send();
                let v: Value = r.await.unwrap().json().await.unwrap_or_default();
                if v.to_string().contains("too many failed logins") { refused += 1 } else { checked += 1 }
            }
            (checked, refused)
        })
    };
    let started = std::time::Instant::now();
    let mut busy = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        busy.push(timed(user.clone()).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checked, refused) = guesser.await.unwrap();
    quiet.sort();
    busy.sort();
    let (q, b) = (quiet[quiet.len() / 2], busy[busy.len() / 2]);
    println!(
        "t87 throttling: in 6 s, {checked} guesses checked, {refused} refused unchecked; other client p50 {q:?} quiet, {b:?} during"
    );
    assert!(checked <= 4, "{checked} guesses were checked in 6 s");
    assert!(refused > 20, "only {refused} attempts were made");
    assert!(b <= 2 * q + Duration::from_millis(5), "the other client slowed from {q:?} to {b:?}");
    // Other nodes are not affected.
    assert_eq!(sql(&c, 3, admin, "SELECT 1").await.0, 200);

    // A new password revokes every token issued before it.
    assert_eq!(sql(&c, 1, admin, "ALTER ROLE admin WITH PASSWORD 'a-new-pass-word'").await.0, 200);
    wait_for(10, "the old token to be refused on node 3", || async {
        (with_token(3, &token).await.ok()?.status().as_u16() == 401).then_some(())
    })
    .await;
}

/// One operation of the role × surface matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    HttpSelect,
    HttpInsert,
    HttpDdl,
    HttpRole,
    PgSelect,
    PgInsert,
    PgDdl,
    PgRole,
    HttpKvGet,
    HttpKvPut,
    GrpcKvGet,
    GrpcKvPut,
    RespGet,
    RespSet,
    HttpSearch,
    HttpUpsert,
    GrpcSearch,
    GrpcUpsert,
    HttpFaults,
    HttpSnapshot,
    HttpBackup,
}

impl Op {
    const ALL: [Op; 21] = [
        Op::HttpSelect,
        Op::HttpInsert,
        Op::HttpDdl,
        Op::HttpRole,
        Op::PgSelect,
        Op::PgInsert,
        Op::PgDdl,
        Op::PgRole,
        Op::HttpKvGet,
        Op::HttpKvPut,
        Op::GrpcKvGet,
        Op::GrpcKvPut,
        Op::RespGet,
        Op::RespSet,
        Op::HttpSearch,
        Op::HttpUpsert,
        Op::GrpcSearch,
        Op::GrpcUpsert,
        Op::HttpFaults,
        Op::HttpSnapshot,
        Op::HttpBackup,
    ];

    /// What the operation needs: read (SELECT on t / the KV table / the collection), write
    /// (INSERT on t, or on every table for KV and collections), DDL, or administration.
    fn allowed(self, role: &str) -> bool {
        use Op::*;
        let read = matches!(self, HttpSelect | PgSelect | HttpKvGet | GrpcKvGet | RespGet | HttpSearch | GrpcSearch);
        let insert_t = matches!(self, HttpInsert | PgInsert);
        let write = matches!(self, HttpKvPut | GrpcKvPut | RespSet | HttpUpsert | GrpcUpsert) || insert_t;
        let ddl = matches!(self, HttpDdl | PgDdl);
        match role {
            "admin" => true,
            "rw" => read || write || ddl,
            "ro" => read,
            "ins" => insert_t,
            _ => false,
        }
    }
}

/// How an attempt ended on its surface.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Refused,
}

/// The clients of one role, logged in on every surface of node `id`.
struct RoleClients {
    name: &'static str,
    password: &'static str,
    id: u64,
    pg: tokio_postgres::Client,
    resp: BufReader<TcpStream>,
    kv: quorumdb_server::grpc::pb::kv_client::KvClient<tonic::transport::Channel>,
    vectors: quorumdb_server::grpc::pb::vectors_client::VectorsClient<tonic::transport::Channel>,
}

impl RoleClients {
    async fn new(c: &TestCluster, name: &'static str, password: &'static str, id: u64) -> Self {
        use quorumdb_server::grpc::pb;
        let pg = pg(c, id, name, Some(password)).await.unwrap_or_else(|e| panic!("{name} logs in on pgwire: {e}"));
        let mut resp = BufReader::new(TcpStream::connect(c.redis_addr(id)).await.unwrap());
        assert_eq!(self::resp(&mut resp, &["AUTH", name, password]).await, "+OK", "{name} logs in on RESP");
        let kv = pb::kv_client::KvClient::connect(format!("http://{}", c.addr(id))).await.unwrap();
        let vectors = pb::vectors_client::VectorsClient::connect(format!("http://{}", c.addr(id))).await.unwrap();
        Self { name, password, id, pg, resp, kv, vectors }
    }

    fn grpc<T>(&self, msg: T) -> tonic::Request<T> {
        use base64::Engine as _;
        let mut req = tonic::Request::new(msg);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.name, self.password));
        req.metadata_mut().insert("authorization", format!("Basic {basic}").parse().unwrap());
        req
    }

    /// Runs `op` (its keys, ids and names numbered `n`) and says whether it was done or refused
    /// as unauthorised; any other answer fails the test.
    async fn attempt(&mut self, c: &TestCluster, op: Op, n: u64) -> Outcome {
        use quorumdb_server::grpc::pb;
        let (who, id) = ((self.name, self.password), self.id);
        let http_sql = |text: String| async move {
            let (s, v) = sql(c, id, Some(who), &text).await;
            match s {
                200 => Outcome::Done,
                403 if v["error"]["code"] == "42501" => Outcome::Refused,
                _ => panic!("{} {text}: {s} {v}", who.0),
            }
        };
        let http = |method: reqwest::Method, path: String, body: Value| async move {
            match call(c, id, who, method.clone(), &path, body).await {
                s if (200..300).contains(&s) || s == 404 && method == reqwest::Method::GET => Outcome::Done,
                403 => Outcome::Refused,
                s => panic!("{} {method} {path}: {s}", who.0),
            }
        };
        let pg_result = |r: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>| match r {
            Ok(_) => Outcome::Done,
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42501") => Outcome::Refused,
            Err(e) => panic!("{} pgwire {op:?}: {e}", who.0),
        };
        let grpc_result = |r: Result<(), tonic::Status>| match r {
            Ok(()) => Outcome::Done,
            Err(s) if s.code() == tonic::Code::PermissionDenied => Outcome::Refused,
            Err(s) => panic!("{} gRPC {op:?}: {s}", who.0),
        };
        let resp_result = |line: String| {
            if line.starts_with("-NOPERM") {
                Outcome::Refused
            } else if line.starts_with('-') {
                panic!("{} RESP {op:?}: {line}", who.0)
            } else {
                Outcome::Done
            }
        };
        let point = json!({"points": [{"id": n, "vector": [n as f32, 1.0]}]});
        let search = pb::SearchRequest { collection: "docs".into(), vector: vec![0.0, 0.0], ..Default::default() };
        match op {
            Op::HttpSelect => http_sql("SELECT count(*) FROM t".into()).await,
            Op::HttpInsert => http_sql(format!("INSERT INTO t VALUES ({n}, 'http')")).await,
            Op::HttpDdl => http_sql(format!("CREATE TABLE t_{n} (id INT PRIMARY KEY)")).await,
            Op::HttpRole => http_sql(format!("CREATE ROLE r_{n} LOGIN PASSWORD 'r-pw'")).await,
            Op::PgSelect => pg_result(self.pg.simple_query("SELECT count(*) FROM t").await),
            Op::PgInsert => pg_result(self.pg.simple_query(&format!("INSERT INTO t VALUES ({n}, 'pg')")).await),
            Op::PgDdl => pg_result(self.pg.simple_query(&format!("CREATE TABLE t_{n} (id INT PRIMARY KEY)")).await),
            Op::PgRole => pg_result(self.pg.simple_query(&format!("CREATE ROLE r_{n} LOGIN PASSWORD 'r-pw'")).await),
            Op::HttpKvGet => http(reqwest::Method::GET, "/v1/kv/shared".into(), Value::Null).await,
            Op::HttpKvPut => http(reqwest::Method::PUT, format!("/v1/kv/k_{n}"), json!(null)).await,
            Op::GrpcKvGet => {
                let req = self.grpc(pb::GetRequest { key: b"shared".to_vec(), ..Default::default() });
                grpc_result(self.kv.get(req).await.map(|_| ()))
            }
            Op::GrpcKvPut => {
                let req = self.grpc(pb::PutRequest {
                    key: format!("k_{n}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                });
                grpc_result(self.kv.put(req).await.map(|_| ()))
            }
            Op::RespGet => resp_result(resp(&mut self.resp, &["GET", "shared"]).await),
            Op::RespSet => resp_result(resp(&mut self.resp, &["SET", &format!("k_{n}"), "v"]).await),
            Op::HttpSearch => {
                http(reqwest::Method::POST, "/v1/collections/docs/search".into(), json!({"vector": [0.0, 0.0]})).await
            }
            Op::HttpUpsert => http(reqwest::Method::PUT, "/v1/collections/docs/points".into(), point).await,
            Op::GrpcSearch => grpc_result(self.vectors.search(self.grpc(search)).await.map(|_| ())),
            Op::GrpcUpsert => {
                let points = vec![pb::Point { id: n, vector: vec![n as f32, 1.0], payload_json: String::new() }];
                let req = self.grpc(pb::UpsertRequest { collection: "docs".into(), points });
                grpc_result(self.vectors.upsert(req).await.map(|_| ()))
            }
            Op::HttpFaults => http(reqwest::Method::PUT, "/v1/debug/faults".into(), json!({})).await,
            Op::HttpSnapshot => http(reqwest::Method::POST, "/v1/cluster/snapshot".into(), json!({})).await,
            Op::HttpBackup => http(reqwest::Method::POST, "/v1/backup".into(), json!({"to": format!("b_{n}")})).await,
        }
    }
}

/// Whether `op` numbered `n` left its mark, seen by admin on node 1 (`None`: an operation
/// that changes nothing a client can read back).
async fn left_a_mark(c: &TestCluster, op: Op, n: u64) -> Option<bool> {
    let admin = Some(("admin", ADMIN_PW));
    let status = |path: String| async move {
        let r = c.http.get(format!("http://{}{path}", c.addr(1))).basic_auth("admin", Some(ADMIN_PW)).send();
        match r.await.unwrap().status().as_u16() {
            200 => true,
            404 => false,
            s => panic!("GET {path}: {s}"),
        }
    };
    Some(match op {
        Op::HttpInsert | Op::PgInsert => {
            let (s, v) = sql(c, 1, admin, &format!("SELECT count(*) FROM t WHERE id = {n}")).await;
            assert_eq!(s, 200, "{v}");
            v["results"][0]["rows"][0][0].as_i64() == Some(1)
        }
        Op::HttpDdl | Op::PgDdl => sql(c, 1, admin, &format!("SELECT count(*) FROM t_{n}")).await.0 == 200,
        // DROP ROLE fails for a role that does not exist (and cleans up one that does).
        Op::HttpRole | Op::PgRole => sql(c, 1, admin, &format!("DROP ROLE r_{n}")).await.0 == 200,
        Op::HttpKvPut | Op::GrpcKvPut | Op::RespSet => status(format!("/v1/kv/k_{n}")).await,
        Op::HttpUpsert | Op::GrpcUpsert => status(format!("/v1/collections/docs/points/{n}")).await,
        Op::HttpBackup => (1..=3).any(|id| c.backup_dir(id).join(format!("b_{n}")).exists()),
        _ => return None,
    })
}

/// For each role (admin, readwrite, readonly, one with a single grant, one with none) and each
/// operation on each surface — SQL over HTTP and pgwire, KV over HTTP, gRPC and RESP, vectors
/// over HTTP and gRPC, administration over HTTP — what is allowed succeeds and leaves its
/// mark, and what is refused answers the surface's "permission denied" and changes nothing.
/// The roles' clients are spread over the three nodes, so forwarded writes are checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t87_role_by_surface_matrix() {
    let c = secured().await;
    let admin = Some(("admin", ADMIN_PW));
    for s in [
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (0, 'seed')",
        "CREATE ROLE ro LOGIN PASSWORD 'ro-pw' IN ROLE readonly",
        "CREATE ROLE rw LOGIN PASSWORD 'rw-pw' IN ROLE readwrite",
        "CREATE ROLE ins LOGIN PASSWORD 'ins-pw'",
        "GRANT INSERT ON t TO ins",
        "CREATE ROLE none LOGIN PASSWORD 'none-pw'",
    ] {
        let (st, v) = sql(&c, 1, admin, s).await;
        assert_eq!(st, 200, "{s}: {v}");
    }
    let r = c.http.put(format!("http://{}/v1/collections/docs", c.addr(1))).basic_auth("admin", Some(ADMIN_PW));
    let r = r.json(&json!({"vectors": {"size": 2, "distance": "Euclid"}})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(call(&c, 1, ("admin", ADMIN_PW), reqwest::Method::PUT, "/v1/kv/shared", json!(null)).await, 200);
    c.wait_converged().await;

    let roles = [("admin", ADMIN_PW), ("rw", "rw-pw"), ("ro", "ro-pw"), ("ins", "ins-pw"), ("none", "none-pw")];
    let mut n = 100;
    let mut table = Vec::new();
    for (i, (name, password)) in roles.into_iter().enumerate() {
        let mut clients = RoleClients::new(&c, name, password, 1 + i as u64 % 3).await;
        for op in Op::ALL {
            n += 1;
            let allowed = op.allowed(name);
            let outcome = clients.attempt(&c, op, n).await;
            assert_eq!(outcome == Outcome::Done, allowed, "{name} {op:?} on node {}: {outcome:?}", clients.id);
            if let Some(mark) = left_a_mark(&c, op, n).await {
                assert_eq!(
                    mark,
                    allowed,
                    "{name} {op:?}: {}",
                    if allowed { "done without effect" } else { "refused, yet it changed the state" }
                );
            }
            table.push(format!("{name:>5} {op:?}: {outcome:?}"));
        }
    }
    // Nothing but the allowed inserts reached t: the seed, admin's, rw's and ins's two each.
    assert_eq!(count(&c, "t").await, 1 + 2 * 3, "{table:#?}");
}
