//! A data directory written by the last binary before format versions existed
//! (`tests/fixtures/v0-node/`, made by `scripts/make_v0_fixture.sh`): its state is behind its
//! log, so the current binary must decode the old log, replay the tail exactly as the old
//! binary applied it (same checksum), and answer what the old binary answered. Then, running
//! as the current binary, it moves the cluster to the new format and keeps working.

use std::path::Path;
use std::time::Duration;

use quorumdb_replication::Proposer;
use quorumdb_replication::format::{CURRENT, LEGACY};
use quorumdb_server::{Node, NodeConfig};
use quorumdb_tests::wait_for;
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/v0-node");

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

struct Client {
    http: reqwest::Client,
    addr: String,
}

impl Client {
    async fn sql(&self, sql: &str) -> Value {
        let r =
            self.http.post(format!("http://{}/v1/sql", self.addr)).json(&json!({ "sql": sql })).send().await.unwrap();
        assert_eq!(r.status(), 200, "{sql}");
        let v: Value = r.json().await.unwrap();
        let last = v["results"].as_array().unwrap().last().unwrap().clone();
        json!({"columns": last["columns"], "rows": last["rows"]})
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("http://{}{path}", self.addr)).send().await.unwrap()
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self.http.request(method, format!("http://{}{path}", self.addr)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// Every answer the old binary recorded, asked again.
    async fn check_answers(&self, want: &Value) {
        for (key, sql) in [
            ("people", "SELECT * FROM people ORDER BY id"),
            ("by_email", "SELECT id, name FROM people WHERE email = 'ed@x.org'"),
            ("by_name", "SELECT id FROM people WHERE name = 'Grace'"),
            ("events", "SELECT kind, sum(n) AS total FROM events GROUP BY kind ORDER BY kind"),
            ("later", "SELECT k FROM later ORDER BY v <-> '[3,4]' LIMIT 1"),
            // Named as the old binary named it; the column is `count` now, as in PostgreSQL.
            ("docs_count", "SELECT count(*) AS \"count(*)\" FROM docs"),
        ] {
            assert_eq!(self.sql(sql).await, want[key], "{key}: {sql}");
        }
        let body = json!({"vector": [0.5, 0.5, 0.5, 0.5], "limit": 5, "params": {"exact": true}});
        let found = self.json(reqwest::Method::POST, "/v1/collections/docs/search", body).await;
        let ids: Vec<Value> = found["result"].as_array().unwrap().iter().map(|p| p["id"].clone()).collect();
        assert_eq!(Value::Array(ids), want["docs_search"]);
        // The graph (loaded from the old dump, completed from the replayed tail) agrees.
        let body = json!({"vector": [0.5, 0.5, 0.5, 0.5], "limit": 5, "ef": 200});
        let found = self.json(reqwest::Method::POST, "/v1/collections/docs/search", body).await;
        let mut ids: Vec<u64> = found["result"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect();
        let mut exact: Vec<u64> = want["docs_search"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        // The same neighbours; points at equal distances may come in another order.
        ids.sort_unstable();
        exact.sort_unstable();
        assert_eq!(ids, exact, "HNSW search");
        let kv: Value = self.get("/v1/kv?prefix=planet/").await.json().await.unwrap();
        let pairs: Vec<Value> = kv["items"].as_array().unwrap().iter().map(|i| json!([i["key"], i["value"]])).collect();
        assert_eq!(Value::Array(pairs), want["kv"]);
        assert_eq!(self.get("/v1/kv/counter").await.text().await.unwrap(), want["counter"].as_str().unwrap());
    }
}

async fn start(dir: &Path, max_format: u8) -> (Node, Client) {
    let mut cfg = NodeConfig::new(1, dir, "127.0.0.1:0");
    cfg.max_format = max_format;
    // A node stopped a moment ago may still hold its stores for a little while.
    let node = wait_for(10, "the node to start on the old data", || {
        let cfg = cfg.clone();
        async move { Node::start(cfg).await.ok() }
    })
    .await;
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        addr: node.addr.to_string(),
    };
    wait_for(20, "the old node to lead again", || async {
        let s: Value = client.get("/v1/status").await.json().await.ok()?;
        (s["role"] == "leader").then_some(())
    })
    .await;
    (node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_from_the_previous_format_replays_its_log_and_answers_alike() {
    quorumdb_tests::init_logging();
    let want: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}.json")).expect("tests/fixtures/v0-node.json"))
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    copy_dir(Path::new(FIXTURE), &dir);

    // First as a binary that writes only version 0: nothing but the replay is applied (the
    // node keeps leading in its old term), so the checksum must be exactly the old binary's.
    // What the replay brings back (batch B of the fixture: `mars-v1`, Edsger, `later`) is
    // only in the log, so the answers below prove it was replayed.
    let (node, client) = start(&dir, LEGACY).await;
    let applied = want["applied"].as_u64().unwrap();
    let status = wait_for(20, "the log's tail to be replayed", || async {
        let s: Value = client.get("/v1/status").await.json().await.ok()?;
        (s["applied"].as_u64()? >= applied).then_some(s)
    })
    .await;
    assert_eq!(status["checksum"], want["checksum"], "the tail replayed exactly as the old binary applied it");
    assert_eq!(status["format"], 0);
    client.check_answers(&want).await;
    node.stop().await;

    // Then as the current binary: it moves the cluster to the current format by itself,
    // keeps every answer, and new writes (now version 1) work alongside the old ones.
    let (node, client) = start(&dir, CURRENT).await;
    wait_for(20, "the format version to move", || async {
        let s: Value = client.get("/v1/status").await.json().await.ok()?;
        (s["format"] == u64::from(CURRENT)).then_some(())
    })
    .await;
    assert_eq!(node.replica.format(), CURRENT);
    client.check_answers(&want).await;
    client
        .sql("INSERT INTO people (id, name) VALUES (5, 'Barbara'); UPDATE events SET n = n + 1 WHERE kind = 'b'")
        .await;
    let r =
        client.http.put(format!("http://{}/v1/kv/planet/earth", client.addr)).body("earth-v2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let people = client.sql("SELECT id, nick FROM people ORDER BY id").await;
    assert_eq!(people["rows"], json!([[1, "none"], [3, "none"], [4, "ewd"], [5, "none"]]));
    assert_eq!(client.sql("SELECT sum(n) FROM events WHERE kind = 'b'").await["rows"], json!([[3]]));
    assert_eq!(client.get("/v1/kv/planet/earth").await.text().await.unwrap(), "earth-v2");
    node.stop().await;
}
