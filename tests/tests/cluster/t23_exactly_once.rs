//! Exactly-once writes: a write whose answer is lost (the connection cut after the leader
//! applied it) and then re-sent with the same request id applies once and answers what the
//! first did; without an id the same retry applies twice (so the test can tell).

use std::time::Duration;

use quorumdb_tests::TestCluster;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A proxy to `target` that passes requests on but cuts the client's connection as soon as the
/// server begins to answer: the write happened, the client never hears of it.
async fn answer_dropping_proxy(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else { return };
                let (mut cr, _cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let mut first = [0u8; 1];
                tokio::select! {
                    _ = tokio::io::copy(&mut cr, &mut sw) => {}
                    _ = sr.read(&mut first) => {}
                }
                // Both sockets drop here: the client sees its connection closed, no answer.
            });
        }
    });
    addr
}

async fn post_sql(http: &reqwest::Client, addr: &str, sql: &str, key: Option<&str>) -> reqwest::Result<(u16, Value)> {
    let mut req = http.post(format!("http://{addr}/v1/sql")).json(&json!({ "sql": sql }));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn count(c: &TestCluster, id: u64) -> u64 {
    c.sql_value(id, "SELECT count(*) FROM once_t", "linearizable").await.as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_whose_answer_was_lost_applies_once() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    c.wait_format().await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert_eq!(c.sql(leader, "CREATE TABLE once_t (v INT)", "linearizable").await.0, 200);

    for node in [leader, follower] {
        let proxy = answer_dropping_proxy(c.addr(node)).await;
        let key = format!("insert-via-{node}");
        let before = count(&c, leader).await;
        // The answer is lost...
        assert!(post_sql(&http, &proxy, "INSERT INTO once_t VALUES (1)", Some(&key)).await.is_err());
        // ...but the row is there.
        assert_eq!(count(&c, leader).await, before + 1);
        // The client re-sends it: the first answer, and still one row.
        let (status, body) = post_sql(&http, &c.addr(node), "INSERT INTO once_t VALUES (1)", Some(&key)).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["rows_affected"], 1, "{body}");
        assert_eq!(count(&c, leader).await, before + 1, "the retry through node {node} applied again");
        // Any node knows the id: it is in the replicated state.
        let other = (1..=3).find(|i| *i != node).unwrap();
        post_sql(&http, &c.addr(other), "INSERT INTO once_t VALUES (1)", Some(&key)).await.unwrap();
        assert_eq!(count(&c, leader).await, before + 1, "the retry through node {other} applied again");
    }

    // Without an id the same retry applies twice: the case the ids exist for.
    let proxy = answer_dropping_proxy(c.addr(leader)).await;
    let before = count(&c, leader).await;
    assert!(post_sql(&http, &proxy, "INSERT INTO once_t VALUES (2)", None).await.is_err());
    post_sql(&http, &c.addr(leader), "INSERT INTO once_t VALUES (2)", None).await.unwrap();
    assert_eq!(count(&c, leader).await, before + 2);

    // The same id on a different request is refused, and changes nothing.
    let key = format!("insert-via-{leader}");
    let (status, body) = post_sql(&http, &c.addr(leader), "INSERT INTO once_t VALUES (3)", Some(&key)).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("different request"), "{body}");
    // Malformed ids are refused before anything is proposed.
    let (status, _) =
        post_sql(&http, &c.addr(leader), "INSERT INTO once_t VALUES (4)", Some(&"x".repeat(300))).await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(c.sql_value(leader, "SELECT count(*) FROM once_t WHERE v >= 3", "linearizable").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_answer_the_first_result_on_retry() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    c.wait_format().await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    c.put(leader, "x", "a").await.unwrap();
    let proxy = answer_dropping_proxy(c.addr(leader)).await;
    let put = |addr: String| {
        let http = http.clone();
        async move { http.put(format!("http://{addr}/v1/kv/x")).header("Idempotency-Key", "put-b").body("b").send().await }
    };
    assert!(put(proxy).await.is_err(), "the answer is lost");
    let again: Value = put(c.addr(leader)).await.unwrap().json().await.unwrap();
    // The first answer (the value before it: "a"), not the answer a second apply would give.
    assert_eq!(again["previous"], "a", "{again}");
    c.put(leader, "x", "c").await.unwrap();
    let third: Value = put(c.addr(leader)).await.unwrap().json().await.unwrap();
    assert_eq!(third["previous"], "a", "still remembered: {third}");
    assert_eq!(c.get(leader, "x", "linearizable").await.as_deref(), Some("c"), "the retry did not write b again");

    // gRPC: the request_id field.
    use quorumdb_server::grpc::pb;
    use quorumdb_server::grpc::pb::kv_client::KvClient;
    let mut client = KvClient::connect(format!("http://{}", c.addr(leader))).await.unwrap();
    let req = |v: &str| pb::PutRequest { key: b"g".to_vec(), value: v.into(), request_id: "grpc-1".into() };
    let first = client.put(req("1")).await.unwrap().into_inner();
    assert!(!first.had_previous);
    c.put(leader, "g", "2").await.unwrap();
    let retry = client.put(req("1")).await.unwrap().into_inner();
    assert!(!retry.had_previous, "the first answer again");
    assert_eq!(c.get(leader, "g", "linearizable").await.as_deref(), Some("2"));
    let other = client.put(req("other value")).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::InvalidArgument, "{other}");
}
