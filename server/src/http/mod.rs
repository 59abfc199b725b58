//! The HTTP/JSON API of a node.
//!
//! - `GET /v1/status`: this node's view of the cluster.
//! - `POST /v1/cluster/{init,join,remove,transfer-leader,snapshot}`: cluster administration;
//!   a follower forwards join/remove/transfer-leader to the leader.
//! - `GET|PUT|DELETE /v1/kv/{key}`: the built-in KV table (`PUT ?expect=V` or `?absent=true`
//!   is compare-and-set; `GET ?consistency=linearizable|lease|stale&max_staleness_ms=N`).
//! - `GET /v1/kv?prefix=P&limit=N`: list keys.
//! - `GET|PUT /v1/debug/faults`: the transport fault rules of this node (unknown fields,
//!   node ids that are not members and delays over a minute are refused).
//! - `GET /v1/debug/digest`: applied index, checksum and a digest of the whole state, read at
//!   one point in time (replicas are compared with it).
//! - Writes (`PUT|DELETE /v1/kv/…`, `POST /v1/sql`, `POST /v1/tables/…/rows`) take an optional
//!   `Idempotency-Key` header: re-sent with the same key, the request is applied at most once
//!   and answers what the first did (for 10 minutes); the key on another request is refused.
//! - `POST /v1/sql?consistency=…`: SQL, body `{"sql": "...", "params": [...]}`; several
//!   `;`-separated statements are one atomic batch. Answers `{"results": [...]}`, each result
//!   `{"columns", "rows", "tag"}` or `{"rows_affected", "tag"}`; errors carry the SQLSTATE.
//! - `POST /v1/tables/{table}/rows`: a bulk load ([`crate::bulk`]); the body is an Arrow IPC
//!   stream (`application/vnd.apache.arrow.stream`) or JSON lines (`application/x-ndjson`),
//!   at most 16 MiB, inserted as one atomic command with INSERT's checks. Answers
//!   `{"rows_affected": n}`; an error one row caused also says which (`"row"`, from 0).
//! - `POST /v1/backup`: body `{"to": "dir"}` (relative to `--backup-dir`, or absolute inside
//!   it); every table as Arrow IPC files plus `manifest.json`, at one applied index, written on
//!   this node's file system ([`crate::backup`]).
//! - `/v1/collections/...`: the Qdrant-style vector API ([`collections`]).
//! - `GET /metrics`: Prometheus.
//!
//! Errors are JSON `{"error": {"code", "message", "retryable"}}` with a fitting status.

use axum::body::Bytes;

use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::ServerState;
use quorumdb_replication::kv::{self as kvstate, KvCommand, KvResponse};
use quorumdb_replication::network::FaultRules;
use quorumdb_replication::{NodeStatus, ReadInfo, Replica, ReplicationError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::NodeContext;
use crate::error::ServerError;
use crate::kv;

pub mod collections;
pub mod guard;

/// Marks a request already forwarded once, so two confused nodes never bounce it forever.
const FORWARDED: &str = "x-quorumdb-forwarded";

impl FromRef<NodeContext> for Replica {
    fn from_ref(s: &NodeContext) -> Replica {
        s.replica.clone()
    }
}

pub fn router(state: NodeContext) -> Router {
    use self::collections as c;
    Router::new()
        .route("/v1/sql", post(sql_post))
        .route("/v1/auth/token", post(token))
        .route(
            "/v1/tables/{table}/rows",
            post(crate::bulk::insert_rows).layer(axum::extract::DefaultBodyLimit::max(crate::bulk::MAX_BODY)),
        )
        .route("/v1/backup", post(crate::backup::backup))
        .route("/v1/collections", get(c::list))
        .route("/v1/collections/{name}", get(c::get).put(c::create).delete(c::delete))
        .route("/v1/collections/{name}/points", axum::routing::put(c::upsert))
        .route("/v1/collections/{name}/points/delete", post(c::delete_points))
        .route("/v1/collections/{name}/points/{id}", get(c::get_point))
        .route("/v1/collections/{name}/search", post(c::search))
        .route("/v1/collections/{name}/points/search", post(c::search))
        .route("/v1/collections/{name}/search/batch", post(c::search_batch))
        .route("/v1/collections/{name}/points/search/batch", post(c::search_batch))
        .route("/v1/status", get(status))
        .route("/v1/cluster/init", post(init))
        .route("/v1/cluster/join", post(join))
        .route("/v1/cluster/remove", post(remove))
        .route("/v1/cluster/transfer-leader", post(transfer_leader))
        .route("/v1/cluster/snapshot", post(snapshot))
        .route("/v1/kv", get(list))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/debug/faults", get(get_faults).put(put_faults))
        .route("/v1/debug/digest", get(digest))
        .route("/metrics", get(metrics_text))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Errors axum answers itself — a query string, a path segment or a body its extractors cannot
/// read (`?limit=-1`, `%ff`, a body over the size limit), a method a route does not take — come
/// in plain text; every error of this API is the JSON error body, so they are rewritten into it
/// (same status, other headers kept).
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        m => m.to_string(),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let mut out =
        (status, Json(json!({"error": {"code": code, "message": message, "retryable": false}}))).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The JSON body of a route the HTTP API does not have.
pub async fn not_found(req: Request) -> ServerError {
    ServerError::NotFound(format!("no such endpoint: {} {}", req.method(), req.uri().path()))
}

type ApiResult<T> = Result<T, ServerError>;

async fn status(State(s): State<NodeContext>) -> ApiResult<Json<Value>> {
    let status: NodeStatus = s.replica.status()?;
    let mut v = serde_json::to_value(status).map_err(|e| ServerError::Internal(e.to_string()))?;
    v["pg_addr"] = json!(s.surfaces.pg_addr.map(|a| a.to_string()));
    v["redis_addr"] = json!(s.surfaces.redis_addr.map(|a| a.to_string()));
    Ok(Json(v))
}

async fn init(State(r): State<Replica>) -> ApiResult<Json<Value>> {
    r.initialize().await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
struct JoinBody {
    id: u64,
    addr: String,
}

#[derive(Deserialize)]
struct NodeBody {
    id: u64,
}

#[derive(Deserialize)]
struct TransferBody {
    to: u64,
}

/// Runs an admin call here if this node leads, otherwise sends the same request to the leader.
async fn on_leader<F, Fut>(
    s: &NodeContext,
    headers: &HeaderMap,
    path: &str,
    body: &Value,
    here: F,
) -> ApiResult<Response>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<()>>,
{
    let r = &s.replica;
    if r.metrics().state == ServerState::Leader {
        here().await?;
        return Ok(Json(json!({"ok": true})).into_response());
    }
    let (leader, addr) = match r.leader() {
        Some(l) if headers.get(FORWARDED).is_none() && l.0 != r.id => l,
        _ => return Err(ReplicationError::NoLeader.into()),
    };
    tracing::debug!(leader, path, "forwarding admin request to the leader");
    let resp = s
        .surfaces
        .peer_http
        .client(s.surfaces.tls.as_deref())?
        .post(format!("{}://{addr}{path}", crate::tls::scheme(s.surfaces.tls.as_deref())))
        .header(FORWARDED, "1")
        // The leader checks the same login.
        .headers(
            headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| HeaderMap::from_iter([(axum::http::header::AUTHORIZATION, v.clone())]))
                .unwrap_or_default(),
        )
        .timeout(std::time::Duration::from_secs(30))
        .json(body)
        .send()
        .await
        .map_err(|e| ServerError::Forward(format!("leader {leader} at {addr}: {e}")))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = resp.bytes().await.map_err(|e| ServerError::Forward(e.to_string()))?;
    Ok((status, [("content-type", "application/json")], body).into_response())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<(T, Value)> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ServerError::BadRequest(format!("invalid JSON body: {e}")))?;
    let t = serde_json::from_value(v.clone()).map_err(|e| ServerError::BadRequest(format!("invalid request: {e}")))?;
    Ok((t, v))
}

async fn join(
    State(s): State<NodeContext>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::tls::Peer>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (b, v): (JoinBody, _) = parse_json(&body)?;
    if b.id == 0 {
        return Err(ServerError::BadRequest("join needs a node id > 0".into()));
    }
    // With TLS, a node joins only with its own certificate (a leader's follower forwards it,
    // having checked it, under its own node certificate).
    if s.surfaces.tls.is_some() {
        let node = peer.and_then(|p| p.0.0.node);
        let forwarded = headers.get(FORWARDED).is_some();
        if !(node == Some(b.id) || (forwarded && node.is_some())) {
            return Err(ServerError::Unauthenticated(format!(
                "joining as node {} needs that node's certificate (node-{})",
                b.id, b.id
            )));
        }
    }
    let r = &s.replica;
    // Checked here, before anything is proposed: a bad address must never reach the membership.
    quorumdb_replication::network::check_peer_addr(&b.addr).map_err(ServerError::BadRequest)?;
    on_leader(&s, &headers, "/v1/cluster/join", &v, || async { Ok(r.add_voter(b.id, &b.addr).await?) }).await
}

async fn remove(State(s): State<NodeContext>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let (b, v): (NodeBody, _) = parse_json(&body)?;
    let r = &s.replica;
    on_leader(&s, &headers, "/v1/cluster/remove", &v, || async { Ok(r.remove_node(b.id).await?) }).await
}

async fn transfer_leader(State(s): State<NodeContext>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let (b, v): (TransferBody, _) = parse_json(&body)?;
    let r = &s.replica;
    on_leader(&s, &headers, "/v1/cluster/transfer-leader", &v, || async { Ok(r.transfer_leader(b.to).await?) }).await
}

async fn snapshot(State(r): State<Replica>) -> ApiResult<Json<Value>> {
    r.trigger_snapshot().await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
pub struct ReadParams {
    pub consistency: Option<String>,
    pub max_staleness_ms: Option<u64>,
}

async fn kv_get(State(r): State<Replica>, Path(key): Path<String>, Query(p): Query<ReadParams>) -> ApiResult<Response> {
    let level = kv::consistency(p.consistency.as_deref(), p.max_staleness_ms)?;
    let (value, info) = kv::get(&r, key.as_bytes(), level).await?;
    let mut resp = match value {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => ServerError::NotFound(format!("key {key:?} not found")).into_response(),
    };
    add_read_headers(&mut resp, &info);
    Ok(resp)
}

/// Says at what state a read was served: the applied index and, if known, its staleness.
fn add_read_headers(resp: &mut Response, info: &ReadInfo) {
    let h = resp.headers_mut();
    h.insert("x-quorumdb-applied-index", HeaderValue::from(info.applied_index));
    if let Some(s) = info.staleness_ms {
        h.insert("x-quorumdb-staleness-ms", HeaderValue::from(s));
    }
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
}

async fn sql_post(
    State(s): State<NodeContext>,
    Query(p): Query<ReadParams>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let body: SqlBody = serde_json::from_slice(&raw).map_err(|e| {
        ServerError::BadRequest(format!("the body must be JSON {{\"sql\": \"...\", \"params\": [...]}}: {e}"))
    })?;
    let level = kv::consistency(p.consistency.as_deref(), p.max_staleness_ms)?;
    let req = crate::request::request_id(&headers, &[b"POST /v1/sql", &raw])?;
    let (results, info) =
        crate::sql::execute(&s.sql, &s.replica, &body.sql, &body.params, level, req.as_ref(), who.user()).await?;
    let mut resp = Json(quorumdb_sql::json::results_json(&results)?).into_response();
    if let Some(info) = info {
        add_read_headers(&mut resp, &info);
    }
    Ok(resp)
}

#[derive(Deserialize, Default)]
struct TokenBody {
    /// How long the token is valid, in seconds (default and most: a day).
    ttl_seconds: Option<u64>,
}

/// `POST /v1/auth/token` with a login: a bearer token for that login (`Authorization: Bearer`
/// on HTTP and gRPC), valid until it expires or the login's password changes.
async fn token(
    State(s): State<NodeContext>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    raw: Bytes,
) -> ApiResult<Json<Value>> {
    let body: TokenBody = if raw.is_empty() {
        TokenBody::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ServerError::BadRequest(format!("the body must be JSON {{\"ttl_seconds\": n}}: {e}")))?
    };
    let Some(user) = who.user() else {
        return Err(ServerError::BadRequest(
            "this cluster requires no login: there is nothing to issue a token for".into(),
        ));
    };
    let ttl = body.ttl_seconds.map_or(crate::auth::MAX_TOKEN_TTL, std::time::Duration::from_secs);
    let catalog = s.sql.catalog()?;
    let (token, expires) = crate::auth::issue_token(&catalog, user, ttl)?;
    Ok(Json(json!({ "token": token, "user": user, "expires_at": expires })))
}

#[derive(Deserialize)]
struct PutParams {
    expect: Option<String>,
    absent: Option<bool>,
}

fn done_json(resp: KvResponse) -> ApiResult<Json<Value>> {
    match resp {
        KvResponse::Done { previous } => {
            Ok(Json(json!({"ok": true, "previous": previous.map(|p| String::from_utf8_lossy(&p).into_owned())})))
        }
        KvResponse::CasFailed { current } => Err(ServerError::CasFailed { current: current.map(|c| c.into_vec()) }),
        other => Err(ServerError::BadRequest(format!("unexpected KV response {other:?}"))),
    }
}

async fn kv_put(
    State(r): State<Replica>,
    Path(key): Path<String>,
    Query(p): Query<PutParams>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let expect = p.expect.as_deref().unwrap_or("").as_bytes();
    let absent = [u8::from(p.absent.unwrap_or(false))];
    let req = crate::request::request_id(&headers, &[b"PUT /v1/kv", key.as_bytes(), expect, &absent, &body])?;
    let key = key.into_bytes();
    let value = body.to_vec();
    let cmd = match (p.expect, p.absent.unwrap_or(false)) {
        (Some(_), true) => return Err(ServerError::BadRequest("use either expect or absent, not both".into())),
        (Some(e), false) => KvCommand::compare_and_set(key, Some(e.into_bytes()), value),
        (None, true) => KvCommand::compare_and_set(key, None, value),
        (None, false) => KvCommand::set(key, value),
    };
    done_json(kv::write_as(&r, cmd, req.as_ref()).await?)
}

async fn kv_delete(State(r): State<Replica>, Path(key): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let req = crate::request::request_id(&headers, &[b"DELETE /v1/kv", key.as_bytes()])?;
    done_json(kv::write_as(&r, KvCommand::delete(key.into_bytes()), req.as_ref()).await?)
}

#[derive(Deserialize)]
struct ListParams {
    prefix: Option<String>,
    start: Option<String>,
    limit: Option<usize>,
    consistency: Option<String>,
}

async fn list(State(r): State<Replica>, Query(p): Query<ListParams>) -> ApiResult<Json<Value>> {
    let level = kv::consistency(p.consistency.as_deref(), None)?;
    let info = r.read_barrier(level).await?;
    let limit = p.limit.unwrap_or(100).min(10_000);
    let prefix = p.prefix.unwrap_or_default();
    let start = p.start.unwrap_or_default();
    let rows = kvstate::scan(r.reader(), prefix.as_bytes(), start.as_bytes(), limit, kvstate::now_ms())?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(k, v)| json!({"key": String::from_utf8_lossy(&k), "value": String::from_utf8_lossy(&v)}))
        .collect();
    Ok(Json(json!({"items": items, "applied_index": info.applied_index})))
}

async fn get_faults(State(r): State<Replica>) -> Json<FaultRules> {
    Json(r.faults().get())
}

/// The longest delay a fault rule may inject. The Raft log's fsyncs sleep out a disk delay on
/// a thread of their own, so a longer one (`u64::MAX` ms was accepted) would hold every write
/// for that long, even after the rules are cleared.
const MAX_FAULT_DELAY_MS: u64 = 60_000;

async fn put_faults(State(r): State<Replica>, body: Bytes) -> ApiResult<Json<FaultRules>> {
    let rules: FaultRules =
        serde_json::from_slice(&body).map_err(|e| ServerError::BadRequest(format!("invalid fault rules: {e}")))?;
    let status = r.status()?;
    let known: Vec<u64> = status.members.iter().chain(&status.learners).map(|m| m.id).collect();
    if let Some(id) = rules.peers().find(|id| !known.contains(id)) {
        return Err(ServerError::BadRequest(format!("invalid fault rules: node {id} is not a member")));
    }
    let delays = std::iter::once(rules.disk_delay_ms).chain(rules.delay_ms.values().copied());
    if let Some(ms) = delays.into_iter().find(|ms| *ms > MAX_FAULT_DELAY_MS) {
        return Err(ServerError::BadRequest(format!(
            "invalid fault rules: a delay of {ms} ms, at most {MAX_FAULT_DELAY_MS} ms"
        )));
    }
    tracing::warn!(?rules, "transport fault rules changed");
    r.set_faults(rules);
    Ok(Json(r.faults().get()))
}

/// This node's applied index, running checksum and a digest of its whole state, read at one
/// point in time: replicas at the same applied index must answer the same (chaos tests compare
/// them after healing).
async fn digest(State(r): State<Replica>) -> ApiResult<Json<Value>> {
    let reader = r.reader().clone();
    let d = tokio::task::spawn_blocking(move || reader.digest())
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "applied": d.applied.map(|l| l.index),
        "checksum": format!("{:016x}", d.checksum),
        "digest": format!("{:016x}", d.digest),
        "keys": d.keys,
    })))
}

async fn metrics_text(State(r): State<Replica>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], crate::telemetry::render(&r))
}
