//! The Qdrant-style vector API over HTTP: JSON bodies in, `{"result": ..., "status": "ok",
//! "time": seconds}` out, errors as the server's JSON error body. The work is done by
//! [`crate::collections`], which the gRPC service shares.
//!
//! - `GET /v1/collections`, `PUT|GET|DELETE /v1/collections/{name}`
//! - `PUT /v1/collections/{name}/points` (upsert), `POST .../points/delete`,
//!   `GET .../points/{id}`
//! - `POST .../search` (also `.../points/search`), `POST .../search/batch`

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ReadParams;
use crate::collections::{
    ApiResult, SearchRequest, bad, collection_info, create_collection, drop_collection, list_names, metric_name,
    point_id, read_point, remove_points, search_collection, upsert_points,
};
use crate::context::NodeContext;

fn ok(result: Value, started: Instant) -> Json<Value> {
    Json(json!({"result": result, "status": "ok", "time": started.elapsed().as_secs_f64()}))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletePoints {
    points: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    searches: Vec<SearchRequest>,
}

pub async fn list(State(s): State<NodeContext>, Query(p): Query<ReadParams>) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let names = list_names(&s, crate::kv::consistency(p.consistency.as_deref(), p.max_staleness_ms)?).await?;
    let names: Vec<Value> = names.into_iter().map(|n| json!({"name": n})).collect();
    Ok(ok(json!({"collections": names}), started))
}

pub async fn create(State(s): State<NodeContext>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    create_collection(&s, &name, parse_body(&body)?).await?;
    Ok(ok(json!(true), started))
}

pub async fn get(
    State(s): State<NodeContext>,
    Path(name): Path<String>,
    Query(p): Query<ReadParams>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let level = crate::kv::consistency(p.consistency.as_deref(), p.max_staleness_ms)?;
    let i = collection_info(&s, &name, level).await?;
    Ok(ok(
        json!({
            "status": if i.ready { "green" } else { "yellow" },
            "points_count": i.points,
            "indexed_vectors_count": i.indexed,
            "config": {
                "params": {"vectors": {"size": i.spec.dim, "distance": metric_name(i.spec.metric)}},
                "hnsw_config": {"m": i.spec.m, "ef_construct": i.spec.ef_construction},
            },
        }),
        started,
    ))
}

pub async fn delete(State(s): State<NodeContext>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    drop_collection(&s, &name).await?;
    Ok(ok(json!(true), started))
}

pub async fn upsert(State(s): State<NodeContext>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let n = upsert_points(&s, &name, parse_body(&body)?).await?;
    Ok(ok(json!({"status": "completed", "points": n}), started))
}

pub async fn delete_points(
    State(s): State<NodeContext>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let req: DeletePoints = parse_body(&body)?;
    let ids: Vec<i64> = req.points.iter().map(point_id).collect::<ApiResult<_>>()?;
    let deleted = remove_points(&s, &name, &ids).await?;
    Ok(ok(json!({"status": "completed", "deleted": deleted}), started))
}

pub async fn get_point(
    State(s): State<NodeContext>,
    Path((name, id)): Path<(String, String)>,
    Query(p): Query<ReadParams>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let id: i64 = id.parse().map_err(|_| bad(format!("point ids are unsigned integers, not {id:?}")))?;
    let level = crate::kv::consistency(p.consistency.as_deref(), p.max_staleness_ms)?;
    Ok(ok(read_point(&s, &name, id, level).await?, started))
}

pub async fn search(
    State(s): State<NodeContext>,
    Path(name): Path<String>,
    Query(p): Query<ReadParams>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let req: SearchRequest = parse_body(&body)?;
    let mut out = search_collection(&s, &name, vec![req], p.consistency.as_deref(), p.max_staleness_ms).await?;
    Ok(ok(out.pop().unwrap_or(Value::Null), started))
}

pub async fn search_batch(
    State(s): State<NodeContext>,
    Path(name): Path<String>,
    Query(p): Query<ReadParams>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let req: BatchRequest = parse_body(&body)?;
    let out = search_collection(&s, &name, req.searches, p.consistency.as_deref(), p.max_staleness_ms).await?;
    Ok(ok(Value::Array(out), started))
}
