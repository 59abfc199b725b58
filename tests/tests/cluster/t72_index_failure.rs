//! A failure inside the vector index (a panic in an HNSW insert, as a bug in the graph library
//! would cause) never stops a node: the write is applied, the node goes on applying, the
//! index is rebuilt from the rows, and searches keep answering exactly.

use quorumdb_tests::{TestCluster, wait_for};
use serde_json::{Value, json};

const DIM: usize = 8;

fn vector(i: u64) -> Vec<f32> {
    (0..DIM).map(|d| ((i * 7919 + d as u64 * 104_729) % 1000) as f32 / 1000.0).collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v["result"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

async fn upsert(c: &TestCluster, node: u64, range: std::ops::Range<u64>) {
    let points: Vec<Value> = range.map(|i| json!({"id": i, "vector": vector(i), "payload": {"n": i}})).collect();
    let (s, v) = c.call(node, "PUT", "/v1/collections/c/points", Some(json!({ "points": points }))).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_index_insert_leaves_the_node_applying_and_the_index_rebuilt() {
    let c = TestCluster::start(3).await;
    let body = json!({"vectors": {"size": DIM, "distance": "Euclid"}});
    let (s, v) = c.call(1, "PUT", "/v1/collections/c", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    upsert(&c, 1, 0..200).await;
    let victim = 2;
    let vectors = c.node(victim).vectors.clone();
    let index_of = || {
        let catalog = c.node(victim).sql.catalog().unwrap();
        let def = &catalog.tables["c"];
        (def.id, def.indexes.iter().find(|ix| !ix.is_btree()).unwrap().id)
    };
    let (table, index) = index_of();
    wait_for(20, "the graph to be built on the victim", || async { vectors.stats(table, index).map(|_| ()) }).await;

    // The next insert into the victim's graph panics.
    vectors.inject_insert_panics(1);
    upsert(&c, 1, 200..260).await;
    // The victim applied it and goes on applying.
    upsert(&c, 3, 260..300).await;
    let r = c.put(victim, "after", "ok").await.unwrap();
    assert_eq!(r.status(), 200);
    c.wait_converged().await;
    for id in c.running() {
        assert_eq!(c.sql_value(id, "SELECT count(*) FROM c", "linearizable").await, 300, "node {id}");
    }
    // Rebuilt from the rows: every live point is in the new graph.
    wait_for(30, "the victim's graph to be rebuilt with every point", || async {
        let (points, live) = vectors.stats(table, index)?;
        (points == 300 && live == 300).then_some(())
    })
    .await;
    // And it answers like the exact search, on the victim as on the others.
    for q in [0u64, 123, 222, 299] {
        let query = json!({"vector": vector(q), "limit": 10, "params": {"exact": true}});
        let (_, exact) = c.call(1, "POST", "/v1/collections/c/search", Some(query)).await;
        let query = json!({"vector": vector(q), "limit": 10, "ef": 300});
        let (s, got) = c.call(victim, "POST", "/v1/collections/c/search", Some(query)).await;
        assert_eq!(s, 200, "{got}");
        assert_eq!(ids(&got), ids(&exact), "query {q}");
        assert_eq!(ids(&got)[0], q as i64, "a point is its own nearest neighbour");
    }
}
