//! Vectors on a cluster: the Qdrant-style collections API, the same neighbours through SQL,
//! every node (followers, a node restarted from its graph dump, a node that rebuilt its graph)
//! answering like the exact search, and bad input refused with nothing written.

use quorumdb_tests::{TestCluster, wait_for};
use serde_json::{Value, json};

const DIM: usize = 16;

/// Points in clusters, deterministic.
fn point(i: u64) -> Vec<f32> {
    let centre = (i % 7) as f32;
    (0..DIM)
        .map(|d| {
            let x = ((i * 2_654_435_761 + d as u64 * 40_503) % 1_000) as f32 / 1_000.0;
            centre * ((d % 3) as f32 - 1.0) + x
        })
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result list: {v}"))
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

async fn search(c: &TestCluster, node: u64, body: Value) -> Vec<i64> {
    search_in(c, node, "docs", body).await
}

async fn search_in(c: &TestCluster, node: u64, collection: &str, body: Value) -> Vec<i64> {
    let (s, v) = c.call(node, "POST", &format!("/v1/collections/{collection}/search"), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    ids(&v)
}

/// Every query answers, on `node`, like the exact search: HTTP plain and filtered, and SQL.
async fn check(
    c: &TestCluster,
    node: u64,
    what: &str,
    queries: &[Vec<f32>],
    exact: &[(Vec<i64>, Vec<i64>)],
    filter: &Value,
) {
    for (q, (plain, filtered)) in queries.iter().zip(exact) {
        let got = search(c, node, json!({"vector": q, "limit": 10, "ef": 500})).await;
        assert_eq!(&got, plain, "node {node} ({what})");
        let got =
            search(c, node, json!({"vector": q, "limit": 10, "ef": 500, "filter": filter, "with_payload": true})).await;
        assert_eq!(&got, filtered, "node {node} ({what}), filtered");
        // SQL gives the same neighbours as HTTP.
        let sql = format!(
            "SET hnsw.ef_search = 500; SELECT id FROM docs ORDER BY vector <-> '{}' LIMIT 10",
            quorumdb_vector::metric::format(q)
        );
        let (s, v) = c.sql(node, &sql, "linearizable").await;
        assert_eq!(s, 200, "{v}");
        let sql_ids: Vec<i64> =
            v["results"][1]["rows"].as_array().unwrap().iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(&sql_ids, plain, "node {node} ({what}), SQL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_sql_and_restarted_nodes_agree() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let other = (1..=3).find(|&i| i != leader && i != follower).unwrap();

    let create = json!({"vectors": {"size": DIM, "distance": "Euclid"}, "hnsw_config": {"m": 12, "ef_construct": 64}});
    let (s, v) = c.call(follower, "PUT", "/v1/collections/docs", Some(create.clone())).await;
    assert_eq!((s, &v["result"]), (200, &json!(true)), "{v}");
    let (s, v) = c.call(leader, "PUT", "/v1/collections/docs", Some(create)).await;
    assert_eq!(s, 409, "{v}");

    let n = 1_500u64;
    for (b, start) in (0..n).step_by(500).enumerate() {
        let points: Vec<Value> = (start..start + 500)
            .map(|i| {
                json!({"id": i, "vector": point(i), "payload": {"group": i % 5, "tag": if i % 2 == 0 { "even" } else { "odd" }, "n": i}})
            })
            .collect();
        let (s, v) =
            c.call(1 + b as u64 % 3, "PUT", "/v1/collections/docs/points", Some(json!({"points": points}))).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = c.call(other, "GET", "/v1/collections/docs", None).await;
    assert_eq!((s, &v["result"]["points_count"]), (200, &json!(n)), "{v}");
    let (s, v) = c.call(other, "GET", "/v1/collections/docs/points/7", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["payload"], json!({"group": 2, "tag": "odd", "n": 7}));
    let got: Vec<f32> = serde_json::from_value(v["result"]["vector"].clone()).unwrap();
    assert_eq!(got, point(7));

    // Deletes and overwrites reach the index.
    let (s, v) = c.call(other, "POST", "/v1/collections/docs/points/delete", Some(json!({"points": [0, 1, 2]}))).await;
    assert_eq!((s, &v["result"]["deleted"]), (200, &json!(3)), "{v}");
    let moved = json!({"points": [{"id": 10, "vector": point(11), "payload": {"group": 9}}]});
    assert_eq!(c.call(leader, "PUT", "/v1/collections/docs/points", Some(moved)).await.0, 200);

    let queries: Vec<Vec<f32>> = (0..8u64).map(|q| point(q * 37 + 5).iter().map(|x| x + 0.01).collect()).collect();
    let filter = json!({"must": [{"key": "tag", "match": {"value": "even"}}, {"key": "n", "range": {"gte": 100}}],
                        "must_not": [{"key": "group", "match": {"any": [1]}}]});
    let mut exact = Vec::new();
    for q in &queries {
        let plain = search(&c, leader, json!({"vector": q, "limit": 10, "params": {"exact": true}})).await;
        assert_eq!(plain.len(), 10);
        assert!(!plain.iter().any(|id| [0, 1, 2].contains(id)));
        let filtered =
            search(&c, leader, json!({"vector": q, "limit": 10, "filter": filter, "params": {"exact": true}})).await;
        exact.push((plain, filtered));
    }
    for node in 1..=3 {
        check(&c, node, "running", &queries, &exact, &filter).await;
    }
    let metrics = c.http.get(format!("http://{}/metrics", c.addr(leader))).send().await.unwrap().text().await.unwrap();
    for m in ["quorumdb_hnsw_points", "quorumdb_hnsw_tombstones", "quorumdb_vector_searches_total"] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
    // Filtered results all pass the filter; a very selective filter still gets its rows.
    let (s, v) = c
        .call(
            follower,
            "POST",
            "/v1/collections/docs/search",
            Some(json!({"vector": queries[0], "limit": 10, "filter": filter})),
        )
        .await;
    assert_eq!(s, 200);
    for p in v["result"].as_array().unwrap() {
        let pl = &p["payload"];
        assert!(pl["tag"] == "even" && pl["n"].as_u64().unwrap() >= 100 && pl["group"] != 1, "{p}");
    }
    let few = search(
        &c,
        follower,
        json!({"vector": queries[0], "limit": 10, "filter": {"must": [{"has_id": [5, 17, 999999]}]}}),
    )
    .await;
    assert_eq!(
        {
            let mut f = few.clone();
            f.sort();
            f
        },
        vec![5, 17]
    );
    let (s, v) = c
        .call(
            leader,
            "POST",
            "/v1/collections/docs/search/batch",
            Some(json!({"searches": [{"vector": queries[0], "limit": 3}, {"vector": queries[1], "limit": 2}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["result"][0].as_array().unwrap().len(), v["result"][1].as_array().unwrap().len()), (3, 2));

    // Bad input: clear errors, nothing written.
    let bad = [
        ("PUT", "/v1/collections/docs/points", json!({"points": [{"id": 5000, "vector": [1.0, 2.0]}]}), 400),
        (
            "PUT",
            "/v1/collections/docs/points",
            json!({"points": [{"id": 5001, "vector": point(1)}, {"id": 5002, "vector": vec!["NaN"; DIM]}]}),
            400,
        ),
        ("PUT", "/v1/collections/docs/points", json!({"points": [{"id": -1, "vector": point(1)}]}), 400),
        ("PUT", "/v1/collections/nope/points", json!({"points": [{"id": 1, "vector": point(1)}]}), 404),
        ("POST", "/v1/collections/nope/search", json!({"vector": point(1)}), 404),
        ("POST", "/v1/collections/docs/search", json!({"vector": point(1), "limit": 0}), 400),
        ("POST", "/v1/collections/docs/search", json!({"vector": point(1), "limit": 1_000_000}), 400),
        ("POST", "/v1/collections/docs/search", json!({"vector": [1.0]}), 400),
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": point(1), "filter": {"must": [{"key": "x", "near": 1}]}}),
            400,
        ),
        ("PUT", "/v1/collections/bad-name", json!({"vectors": {"size": 4, "distance": "Cosine"}}), 400),
        ("PUT", "/v1/collections/other", json!({"vectors": {"size": 4, "distance": "Manhattan"}}), 400),
    ];
    for (method, path, body, want) in bad {
        let (s, v) = c.call(follower, method, path, Some(body.clone())).await;
        assert_eq!(s, want, "{method} {path} {body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // A table that merely looks like a collection (text ids) is not one.
    let (s, v) = c
        .sql(
            leader,
            "CREATE TABLE fake (id TEXT PRIMARY KEY, vector VECTOR(4), payload JSON); \
             CREATE INDEX fake_v ON fake USING hnsw (vector)",
            "linearizable",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.call(follower, "GET", "/v1/collections/fake/points/1", None).await.0, 404);
    assert_eq!(
        c.call(follower, "POST", "/v1/collections/fake/search", Some(json!({"vector": [1, 2, 3, 4]}))).await.0,
        404
    );
    assert_eq!(c.sql(leader, "DROP TABLE fake", "linearizable").await.0, 200);
    let r = c
        .http
        .post(format!("http://{}/v1/collections/docs/search", c.addr(leader)))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(c.call(leader, "GET", "/v1/collections/docs/points/5001", None).await.0, 404);
    assert_eq!(c.sql_value(leader, "SELECT count(*) FROM docs", "linearizable").await, json!(n - 3));

    // A node restarted cleanly loads its graph dump; one whose dump is gone rebuilds it.
    c.kill(follower).await;
    assert!(
        c.data_dir(follower).join("vectors").read_dir().unwrap().next().is_some(),
        "a stopped node dumps its graphs"
    );
    c.restart(follower).await;
    c.kill(other).await;
    std::fs::remove_dir_all(c.data_dir(other).join("vectors")).unwrap();
    c.restart(other).await;
    c.wait_converged().await;
    for node in [follower, other] {
        wait_for(60, "the graph to be ready", || async {
            let (_, v) = c.call(node, "GET", "/v1/collections/docs", None).await;
            (v["result"]["status"] == "green").then_some(())
        })
        .await;
        check(&c, node, "restarted", &queries, &exact, &filter).await;
    }

    let (s, _) = c.call(other, "DELETE", "/v1/collections/docs", None).await;
    assert_eq!(s, 200);
    let (s, v) = c.call(leader, "GET", "/v1/collections/docs", None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = c.call(follower, "GET", "/v1/collections", None).await;
    assert_eq!((s, &v["result"]["collections"]), (200, &json!([])), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_vector_api_matches_http() {
    use quorumdb_server::grpc::pb;
    use quorumdb_server::grpc::pb::vectors_client::VectorsClient;

    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut g = VectorsClient::connect(format!("http://{}", c.addr(follower))).await.unwrap();
    g.create_collection(pb::CreateCollectionRequest {
        name: "g".into(),
        size: 4,
        distance: "Cosine".into(),
        m: 0,
        ef_construct: 0,
    })
    .await
    .unwrap();
    let points: Vec<pb::Point> = (0..60u64)
        .map(|i| pb::Point {
            id: i,
            vector: vec![1.0 + (i % 7) as f32, (i % 5) as f32, (i % 3) as f32 + 0.5, i as f32 / 10.0],
            payload_json: format!("{{\"odd\": {}}}", i % 2 == 1),
        })
        .collect();
    let ack =
        g.upsert(pb::UpsertRequest { collection: "g".into(), points: points.clone() }).await.unwrap().into_inner();
    assert_eq!(ack.count, 60);
    let info = g.get_collection(pb::CollectionRequest { name: "g".into(), read: None }).await.unwrap().into_inner();
    assert_eq!(
        (info.size, info.distance.as_str(), info.points_count, info.m, info.ef_construct),
        (4, "Cosine", 60, 16, 64)
    );
    let names = g.list_collections(pb::ListCollectionsRequest { read: None }).await.unwrap().into_inner().names;
    assert_eq!(names, vec!["g".to_string()]);
    let p = g.get_point(pb::GetPointRequest { collection: "g".into(), id: 9, read: None }).await.unwrap().into_inner();
    assert_eq!((p.id, &p.vector, p.payload_json.as_str()), (9, &points[9].vector, r#"{"odd":true}"#));

    let q = vec![2.0, 1.0, 1.0, 0.3];
    let filter = r#"{"must": [{"key": "odd", "match": {"value": false}}]}"#;
    let req = pb::SearchRequest {
        collection: "g".into(),
        vector: q.clone(),
        limit: 5,
        ef: 100,
        filter_json: filter.into(),
        with_payload: true,
        ..Default::default()
    };
    let hits = g.search(req.clone()).await.unwrap().into_inner().points;
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.id % 2 == 0 && h.payload_json == r#"{"odd":false}"#));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "cosine scores are similarities, best first");
    let http = search_in(
        &c,
        leader,
        "g",
        json!({"vector": q, "limit": 5, "ef": 100, "filter": serde_json::from_str::<Value>(filter).unwrap()}),
    )
    .await;
    assert_eq!(hits.iter().map(|h| h.id as i64).collect::<Vec<_>>(), http);
    let exact = g.search(pb::SearchRequest { exact: true, ..req.clone() }).await.unwrap().into_inner().points;
    assert_eq!(exact.iter().map(|h| h.id).collect::<Vec<_>>(), hits.iter().map(|h| h.id).collect::<Vec<_>>());
    let batch = g
        .search_batch(pb::SearchBatchRequest {
            searches: vec![req.clone(), pb::SearchRequest { limit: 2, ..req.clone() }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.iter().map(|r| r.points.len()).collect::<Vec<_>>(), vec![5, 2]);

    let gone =
        g.delete_points(pb::DeletePointsRequest { collection: "g".into(), ids: vec![hits[0].id, 999] }).await.unwrap();
    assert_eq!(gone.into_inner().count, 1);
    let after = g.search(req.clone()).await.unwrap().into_inner().points;
    assert!(!after.iter().any(|h| h.id == hits[0].id));

    // A stale search honours its staleness bound (a follower cut off from the leader).
    let stale = |ms: u64| pb::SearchRequest {
        read: Some(pb::ReadOptions { consistency: "stale".into(), max_staleness_ms: ms }),
        ..req.clone()
    };
    c.node(follower)
        .replica
        .set_faults(quorumdb_replication::network::FaultRules { isolated: true, ..Default::default() });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let too_old = g.search(stale(300)).await.unwrap_err();
    assert_eq!(too_old.code(), tonic::Code::Unavailable, "{too_old}");
    assert_eq!(g.search(stale(0)).await.unwrap().into_inner().points.len(), 5);
    c.node(follower).replica.faults().clear();

    // Errors carry the right codes.
    let bad_dim = g.search(pb::SearchRequest { vector: vec![1.0], ..req.clone() }).await.unwrap_err();
    assert_eq!(bad_dim.code(), tonic::Code::InvalidArgument, "{bad_dim}");
    let missing = g.search(pb::SearchRequest { collection: "nope".into(), ..req.clone() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    let nan = g
        .upsert(pb::UpsertRequest {
            collection: "g".into(),
            points: vec![pb::Point { id: 100, vector: vec![f32::NAN; 4], payload_json: String::new() }],
        })
        .await
        .unwrap_err();
    assert_eq!(nan.code(), tonic::Code::InvalidArgument, "{nan}");
    let bad_filter = g.search(pb::SearchRequest { filter_json: "{oops".into(), ..req.clone() }).await.unwrap_err();
    assert_eq!(bad_filter.code(), tonic::Code::InvalidArgument);
    g.delete_collection(pb::CollectionRequest { name: "g".into(), read: None }).await.unwrap();
    let err = g.get_collection(pb::CollectionRequest { name: "g".into(), read: None }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_gets_the_vectors_by_snapshot_and_rebuilds_its_index() {
    // Snapshots every 40 entries; once every member has applied them the log is purged, so a
    // node that joins later can only catch up from a snapshot.
    let mut c = TestCluster::start_with(3, 40).await;
    let leader = c.wait_leader().await;
    let create = json!({"vectors": {"size": DIM, "distance": "Euclid"}});
    assert_eq!(c.call(leader, "PUT", "/v1/collections/docs", Some(create)).await.0, 200);
    for b in 0..60u64 {
        let points: Vec<Value> =
            (b * 5..b * 5 + 5).map(|i| json!({"id": i, "vector": point(i), "payload": {"n": i}})).collect();
        let (s, v) = c.call(1 + b % 3, "PUT", "/v1/collections/docs/points", Some(json!({ "points": points }))).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _) = c.call(leader, "POST", "/v1/collections/docs/points/delete", Some(json!({"points": [3, 4, 5]}))).await;
    assert_eq!(s, 200);
    wait_for(30, "the leader to purge its log", || async {
        let st = c.status(leader).await?;
        st["purged"].as_u64().is_some_and(|p| p > 10).then_some(())
    })
    .await;
    c.add_node(4, Some(c.addr(leader))).await;
    c.wait_voters(4).await;
    c.wait_converged().await;
    let st = c.status(4).await.unwrap();
    assert!(st["snapshot"].as_u64().is_some_and(|i| i > 0), "the new node installed a snapshot: {st}");
    wait_for(60, "the graph to be ready", || async {
        let (_, v) = c.call(4, "GET", "/v1/collections/docs", None).await;
        (v["result"]["status"] == "green" && v["result"]["indexed_vectors_count"] == json!(297)).then_some(())
    })
    .await;
    for q in 0..6u64 {
        let q = point(q * 53 + 1);
        let exact = search(&c, leader, json!({"vector": q, "limit": 10, "params": {"exact": true}})).await;
        let got = search(&c, 4, json!({"vector": q, "limit": 10, "ef": 400})).await;
        assert_eq!(got, exact);
        assert!(!got.iter().any(|id| [3, 4, 5].contains(id)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fvecs_loader_loads_and_reports_rejected_batches() {
    use quorumdb_client::vectors::{LoadOptions, load_vectors};
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    // 300 vectors; number 150 has the wrong dimension, so its batch (100..200) is refused.
    let dir = tempfile::tempdir().unwrap();
    let (fvecs, payloads) = (dir.path().join("v.fvecs"), dir.path().join("p.jsonl"));
    let mut bytes = Vec::new();
    let mut lines = String::new();
    for i in 0..300u64 {
        let v = if i == 150 { point(i)[..DIM - 1].to_vec() } else { point(i) };
        bytes.extend((v.len() as u32).to_le_bytes());
        for x in v {
            bytes.extend(x.to_le_bytes());
        }
        lines.push_str(&format!("{{\"n\": {i}}}\n"));
    }
    std::fs::write(&fvecs, bytes).unwrap();
    std::fs::write(&payloads, lines).unwrap();
    let target = c.addr(follower);
    let opts = LoadOptions {
        target: &target,
        collection: "loaded",
        create: Some("Euclid"),
        batch: 100,
        first_id: 0,
        limit: None,
        payloads: Some(&payloads),
        ids: None,
        progress: false,
    };
    let r = load_vectors(&fvecs, &opts).await.unwrap();
    assert_eq!((r.loaded, r.rejected), (200, 100), "{r:?}");
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].0, 100);
    assert!(r.errors[0].1.contains("expected 16 dimensions"), "{:?}", r.errors);
    let (s, v) = c.call(leader, "GET", "/v1/collections/loaded", None).await;
    assert_eq!((s, &v["result"]["points_count"]), (200, &json!(200)), "{v}");
    let (s, v) = c.call(leader, "GET", "/v1/collections/loaded/points/250", None).await;
    assert_eq!((s, &v["result"]["payload"]), (200, &json!({"n": 250})), "{v}");
    assert_eq!(c.call(leader, "GET", "/v1/collections/loaded/points/150", None).await.0, 404);
}
