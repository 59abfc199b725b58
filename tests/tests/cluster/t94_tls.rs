//! TLS on every port and between nodes (issue 15), with certificates from `quorumdb cert`'s
//! functions: a 3-node cluster forms, joins and replicates over mutual TLS; HTTPS, PostgreSQL
//! (`psql sslmode=verify-full`) and Redis (`redis-cli --tls`) clients are served over TLS and
//! plaintext is refused; the loader, backup, restore and the shell work with `QUORUMDB_CA`; a Raft RPC
//! without a node certificate, with a user's certificate, or with another node's certificate is
//! refused before any Raft handler runs, as are joins without the joining node's certificate
//! and any certificate from another CA; SIGHUP re-reads the files, keeps the old ones when the
//! new ones are unusable, and serves a new CA's certificate once they are.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quorumdb_server::tls::certs;
use quorumdb_tests::{TestCluster, wait_for};

const ADMIN_PW: &str = "tls-Admin-pw9";

fn make_certs(dir: &Path, nodes: u64) {
    certs::init(dir, 30).expect("CA");
    for id in 1..=nodes {
        certs::node(dir, id, &["127.0.0.1".to_string(), "localhost".to_string()], 30).expect("node certificate");
    }
    certs::client(dir, "alice", 30).expect("client certificate");
}

/// A client trusting `ca` that presents `identity` (a certificate and key file pair), if any.
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The gRPC status a Raft Vote call from `client` (claiming to be node `from`) gets, before
/// any decoding: the guard answers 16 (Unauthenticated) without a matching node certificate.
async fn vote_status(c: &TestCluster, client: &reqwest::Client, from: u64) -> Option<String> {
    let r = client
        .post(format!("https://{}/quorumdb.raft.RaftTransport/Vote", c.addr(1)))
        .header("content-type", "application/grpc")
        .header("x-quorumdb-from", from.to_string())
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("the request is answered");
    r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t94_tls_on_every_port_and_between_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d, 3);
    let backups = d.join("backups");
    // Logins on: the first admin from the password; the joining nodes log in with it too.
    let c = TestCluster::start_tls(3, d, |cfg| {
        cfg.backup_dir = Some(backups.clone());
        cfg.admin_password = Some(ADMIN_PW.into());
        cfg.public_status = true;
    })
    .await;
    wait_for(30, "logins to be required", || async {
        let r = c.http.get(format!("https://{}/v1/kv/probe", c.addr(2))).send().await.ok()?;
        (r.status().as_u16() == 401).then_some(())
    })
    .await;

    // Joins and replication ran over mutual TLS; a write on node 1 (HTTP Basic) is read on
    // node 3 with a bearer token issued by node 2.
    let r = c.http.put(format!("https://{}/v1/kv/greeting", c.addr(1))).basic_auth("admin", Some(ADMIN_PW)).body("hi");
    assert_eq!(r.send().await.unwrap().status().as_u16(), 200);
    let r = c.http.post(format!("https://{}/v1/auth/token", c.addr(2))).basic_auth("admin", Some(ADMIN_PW)).send();
    let token = r.await.unwrap().json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let url = format!("https://{}/v1/kv/greeting?consistency=linearizable", c.addr(3));
    let r = c.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(c.http.get(&url).send().await.unwrap().status().as_u16(), 401);

    // Plaintext HTTP to the main port gets no answer.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    assert!(plain.get(format!("http://{}/v1/status", c.addr(1))).send().await.is_err(), "plaintext HTTP was served");

    // Raft RPCs: refused without a node certificate, with a user's, or with another node's.
    let before = c.call(1, "GET", "/v1/status", None).await.1;
    let ca = d.join("ca.crt");
    let anonymous = client(&ca, None);
    assert_eq!(vote_status(&c, &anonymous, 2).await.as_deref(), Some("16"));
    let alice = client(&ca, Some((&d.join("client-alice.crt"), &d.join("client-alice.key"))));
    assert_eq!(vote_status(&c, &alice, 2).await.as_deref(), Some("16"));
    let node2 = client(&ca, Some((&d.join("node-2.crt"), &d.join("node-2.key"))));
    assert_eq!(vote_status(&c, &node2, 3).await.as_deref(), Some("16"), "node 2's certificate claiming node 3");
    let passed = vote_status(&c, &node2, 2).await;
    assert_ne!(passed.as_deref(), Some("16"), "node 2's own certificate must pass the guard");
    // A node certificate from another CA does not get through the handshake.
    let rogue_dir = tempfile::tempdir().unwrap();
    make_certs(rogue_dir.path(), 4);
    let rogue = client(&ca, Some((&rogue_dir.path().join("node-4.crt"), &rogue_dir.path().join("node-4.key"))));
    let r = rogue.get(format!("https://{}/v1/status", c.addr(1))).send().await;
    assert!(r.is_err(), "a certificate from another CA was accepted: {r:?}");
    // Joining: only with the joining node's own certificate.
    // (With the admin's login, so that the certificate is what is refused.)
    let join = |who: &reqwest::Client, id: u64| {
        who.post(format!("https://{}/v1/cluster/join", c.addr(2)))
            .basic_auth("admin", Some(ADMIN_PW))
            .json(&serde_json::json!({ "id": id, "addr": "127.0.0.1:9" }))
            .send()
    };
    assert_eq!(join(&anonymous, 9).await.unwrap().status().as_u16(), 401);
    assert_eq!(join(&node2, 9).await.unwrap().status().as_u16(), 401);
    assert!(join(&rogue, 4).await.is_err());
    // None of it moved the term or the membership.
    let after = c.call(1, "GET", "/v1/status", None).await.1;
    assert_eq!(after["term"], before["term"], "{after}");
    assert_eq!(after["members"], before["members"], "{after}");
    assert_eq!(after["learners"], before["learners"], "{after}");

    // PostgreSQL: verify-full against the CA and SCRAM work; a client that does not ask for
    // TLS is refused.
    let (host, port) = c.pg_addr(2).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let psql = |sslmode: &str| {
        let conn = format!(
            "host={host} port={port} user=admin dbname=quorumdb sslmode={sslmode} sslrootcert={} connect_timeout=5",
            ca.display()
        );
        let mut cmd = Command::new("psql");
        cmd.env("PGPASSWORD", ADMIN_PW).args([conn.as_str(), "-XAtc", "SELECT 40 + 2"]).output().expect("psql runs")
    };
    let out = psql("verify-full");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{}", String::from_utf8_lossy(&out.stderr));
    let out = psql("disable");
    assert!(!out.status.success(), "plaintext pgwire was served");
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"), "{}", String::from_utf8_lossy(&out.stderr));

    // Redis: TLS with the CA; plaintext gets nothing.
    let (rhost, rport) = c.redis_addr(3).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let ca_arg = ca.display().to_string();
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &ca_arg, "-h", &rhost, "-p", &rport, "--user", "admin", "--pass", ADMIN_PW])
        .args(["--no-auth-warning", "GET", "greeting"])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi", "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("timeout").args(["5", "redis-cli", "-h", &rhost, "-p", &rport, "PING"]).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "PONG", "plaintext RESP was served");

    // The loader, backup and shell talk HTTPS (and TLS to pgwire) with QUORUMDB_CA, and log in
    // as admin with QUORUMDB_PASSWORD.
    let csv = d.join("planets.csv");
    std::fs::write(&csv, "name,moons\nmars,2\nearth,1\njupiter,95\n").unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_quorumdb-node"))
            .env("QUORUMDB_CA", &ca)
            .env("QUORUMDB_PASSWORD", ADMIN_PW)
            .args(args)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "quorumdb {args:?}: {text}");
        text
    };
    cli(&[
        "load",
        csv.to_str().unwrap(),
        "--node",
        &c.addr(2),
        "--table",
        "planets",
        "--primary-key",
        "name",
        "--quiet",
    ]);
    let r = c.http.post(format!("https://{}/v1/sql", c.addr(3))).bearer_auth(&token);
    let r = r.json(&serde_json::json!({"sql": "SELECT sum(moons) FROM planets"})).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["rows"][0][0].as_i64(), Some(98), "{v}");
    let out = cli(&["backup", "--to", "b1", "--node", &c.addr(3)]);
    assert!(out.contains("backup of 1 tables, 3 rows"), "{out}");
    // ... and the restore reads it back in over HTTPS.
    let r = c.http.post(format!("https://{}/v1/sql", c.addr(1))).bearer_auth(&token);
    let r = r.json(&serde_json::json!({"sql": "DROP TABLE planets"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let from = c.backup_dir(3).join("b1");
    let out = cli(&["restore", "--from", from.to_str().unwrap(), "--node", &c.addr(1), "--quiet"]);
    assert!(out.contains("restored 1 tables, 3 rows"), "{out}");
    let r = c.http.post(format!("https://{}/v1/sql", c.addr(2))).bearer_auth(&token);
    let r = r.json(&serde_json::json!({"sql": "SELECT sum(moons) FROM planets"})).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["rows"][0][0].as_i64(), Some(98), "{v}");
    // The shell: its HTTP (cluster commands) and PostgreSQL connections over TLS.
    let out = cli(&[
        "shell",
        "--host",
        &c.addr(2),
        "-U",
        "admin",
        "-c",
        ".mode csv\nSELECT name FROM planets WHERE moons = 95",
    ]);
    assert!(out.contains("jupiter"), "{out}");

    // SIGHUP: unusable files (a certificate from another CA than --tls-ca) are refused and the
    // node keeps serving its old certificate ...
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), 1);
    std::fs::copy(other.path().join("node-1.crt"), d.join("node-1.crt")).unwrap();
    std::fs::copy(other.path().join("node-1.key"), d.join("node-1.key")).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = c.call(1, "GET", "/v1/status", None).await;
    assert_eq!(s, 200, "the old certificate must still be served");
    // ... and once the CA matches, new connections get the new certificate (a client that
    // trusts only the old CA is refused by the handshake).
    std::fs::copy(d.join("ca.crt"), d.join("old-ca.crt")).unwrap();
    std::fs::copy(other.path().join("ca.crt"), d.join("ca.crt")).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let new_ca = client(&other.path().join("ca.crt"), None);
    let url = format!("https://{}/v1/status", c.addr(1));
    wait_for(10, "node 1 to serve the new CA's certificate", || async {
        new_ca.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    assert!(client(&d.join("old-ca.crt"), None).get(&url).send().await.is_err(), "the old certificate is still served");
}

/// A client certificate the cluster CA signed logs in as its common name on every surface —
/// HTTP, pgwire (no password asked), RESP — with that role's privileges, and only as that
/// role: asking pgwire for another user still needs that user's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t94_client_certificates_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d, 1);
    let c = TestCluster::start_tls(1, d, |cfg| {
        cfg.admin_password = Some(ADMIN_PW.into());
        cfg.public_status = true;
    })
    .await;
    let admin = |text: &str| {
        c.http
            .post(format!("https://{}/v1/sql", c.addr(1)))
            .basic_auth("admin", Some(ADMIN_PW))
            .json(&serde_json::json!({ "sql": text }))
            .send()
    };
    wait_for(30, "logins to be required", || async {
        let r = c.http.get(format!("https://{}/v1/kv/probe", c.addr(1))).send().await.ok()?;
        (r.status().as_u16() == 401).then_some(())
    })
    .await;
    for stmt in [
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "CREATE ROLE alice LOGIN PASSWORD 'unused-pw'",
        "GRANT SELECT ON t TO alice",
    ] {
        assert_eq!(admin(stmt).await.unwrap().status().as_u16(), 200, "{stmt}");
    }
    let ca = d.join("ca.crt");
    let (cert, key) = (d.join("client-alice.crt"), d.join("client-alice.key"));

    // HTTP: the certificate is the login; alice may read t and not write it.
    let alice = client(&ca, Some((&cert, &key)));
    let sql = |text: &'static str| {
        alice.post(format!("https://{}/v1/sql", c.addr(1))).json(&serde_json::json!({ "sql": text })).send()
    };
    assert_eq!(sql("SELECT count(*) FROM t").await.unwrap().status().as_u16(), 200);
    assert_eq!(sql("INSERT INTO t VALUES (1)").await.unwrap().status().as_u16(), 403);
    assert_eq!(
        client(&ca, None).post(format!("https://{}/v1/sql", c.addr(1))).send().await.unwrap().status().as_u16(),
        401
    );

    // pgwire: no password asked of alice; admin with alice's certificate still needs admin's.
    let (host, port) = c.pg_addr(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let psql = |user: &str, query: &str| {
        let conn = format!(
            "host={host} port={port} user={user} dbname=quorumdb sslmode=verify-full sslrootcert={} sslcert={} sslkey={} connect_timeout=5",
            ca.display(),
            cert.display(),
            key.display()
        );
        Command::new("psql").args([conn.as_str(), "-XAtwc", query]).output().expect("psql runs")
    };
    let out = psql("alice", "SELECT count(*) FROM t");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{}", String::from_utf8_lossy(&out.stderr));
    let out = psql("alice", "INSERT INTO t VALUES (1)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = psql("admin", "SELECT 1");
    assert!(!out.status.success(), "admin logged in with alice's certificate and no password");

    // RESP: the certificate logs alice in; she may read the KV table only if granted.
    let (rhost, rport) = c.redis_addr(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let redis = |args: &[&str]| {
        let mut all = vec!["--tls", "--cacert", ca.to_str().unwrap(), "--cert", cert.to_str().unwrap()];
        all.extend(["--key", key.to_str().unwrap(), "-h", &rhost, "-p", &rport]);
        all.extend(args);
        let out = Command::new("redis-cli").args(&all).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let answer = redis(&["SET", "k", "v"]);
    assert!(answer.contains("NOPERM"), "alice may not write the KV table: {answer}");
    assert!(!answer.contains("NOAUTH"), "the certificate is a login: {answer}");
}
