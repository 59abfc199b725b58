//! The vector API in the style of Qdrant: collections of points (`id`, `vector`, `payload`)
//! with HNSW search and payload filters.
//!
//! A collection is an ordinary SQL table `(id BIGINT PRIMARY KEY, vector VECTOR(n) NOT NULL,
//! payload JSON)` with an HNSW index on `vector`, so points are replicated, queried and backed
//! up like every other row, and SQL sees the same data (`SELECT ... ORDER BY vector <-> ...`).
//! Writes go through the SQL engine (one atomic command per request); searches call the same
//! index search as SQL, with the filter evaluated on each candidate's payload.
//!
//! This module is the protocol-free part: validation, the SQL each operation runs, searches
//! and payload filters, called with a [`NodeContext`] by the HTTP routes
//! ([`crate::http::collections`]) and the gRPC `Vectors` service ([`crate::grpc`]) alike.

use std::sync::Arc;

use quorumdb_replication::Consistency;
use quorumdb_sql::catalog::{Catalog, IndexDef, TableDef};
use quorumdb_sql::types::Value as SqlValue;
use quorumdb_sql::vector_indexes::Found;
use quorumdb_vector::{IndexSpec, Metric};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::NodeContext;
use crate::error::ServerError;

pub(crate) type ApiResult<T> = Result<T, ServerError>;

/// The most points one upsert or delete may carry, and the largest `limit`.
pub(crate) const MAX_BATCH: usize = 10_000;
const MAX_LIMIT: usize = 10_000;

pub(crate) fn bad(msg: impl Into<String>) -> ServerError {
    ServerError::BadRequest(msg.into())
}

fn check_name(name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let good = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if good { Ok(()) } else { Err(bad(format!("invalid collection name {name:?}: use letters, digits and _"))) }
}

pub(crate) fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "Euclid",
        Metric::Cosine => "Cosine",
        Metric::InnerProduct => "Dot",
    }
}

fn parse_metric(s: &str) -> ApiResult<Metric> {
    match s.to_ascii_lowercase().as_str() {
        "euclid" | "euclidean" | "l2" => Ok(Metric::L2),
        "cosine" => Ok(Metric::Cosine),
        "dot" | "ip" => Ok(Metric::InnerProduct),
        _ => Err(bad(format!("unknown distance {s:?}: use Cosine, Euclid or Dot"))),
    }
}

/// Qdrant's score: similarity for Cosine and Dot (higher is better), distance for Euclid.
fn score(m: Metric, distance: f64) -> f64 {
    match m {
        Metric::L2 => distance,
        Metric::Cosine => 1.0 - distance,
        Metric::InnerProduct => -distance,
    }
}

/// A collection as found in the catalog.
struct Collection {
    def: TableDef,
    index: IndexDef,
    spec: IndexSpec,
    id: usize,
    vector: usize,
    payload: usize,
}

fn collection(state: &NodeContext, name: &str) -> ApiResult<Collection> {
    let catalog = state.sql.catalog()?;
    collection_in(&catalog, name)
}

fn collection_in(catalog: &Catalog, name: &str) -> ApiResult<Collection> {
    check_name(name)?;
    let missing = || ServerError::NotFound(format!("collection {name} not found"));
    let def = catalog.tables.get(name).ok_or_else(missing)?;
    let (Some(id), Some(vector), Some(payload)) = (def.column("id"), def.column("vector"), def.column("payload"))
    else {
        return Err(missing());
    };
    // Only tables shaped like a collection: a BIGINT primary key `id` and a JSON payload.
    if def.primary_key != [id]
        || def.columns[id].ty != quorumdb_sql::types::ColumnType::Int64
        || def.columns[payload].ty != quorumdb_sql::types::ColumnType::Json
    {
        return Err(missing());
    }
    let index = def.indexes.iter().find(|ix| ix.columns == [vector] && !ix.is_btree()).ok_or_else(missing)?;
    let spec = quorumdb_sql::vector_indexes::spec_of(def, index).ok_or_else(missing)?;
    Ok(Collection { def: def.clone(), index: index.clone(), spec, id, vector, payload })
}

fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

async fn run_sql(state: &NodeContext, sql: &str, params: &[Value]) -> ApiResult<Vec<quorumdb_sql::StatementResult>> {
    let (results, _) =
        // The route's access was checked in front of it (`crate::auth`).
        crate::sql::execute(&state.sql, &state.replica, sql, params, Consistency::Linearizable, None, None).await?;
    Ok(results)
}

// ---------------------------------------------------------------------------------------
// Collections

/// The names of every collection.
pub(crate) async fn list_names(s: &NodeContext, level: Consistency) -> ApiResult<Vec<String>> {
    s.replica.read_barrier(level).await?;
    let catalog = s.sql.catalog()?;
    Ok(catalog.tables.keys().filter(|n| collection_in(&catalog, n).is_ok()).cloned().collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VectorsConfig {
    pub(crate) size: usize,
    pub(crate) distance: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HnswConfig {
    pub(crate) m: Option<usize>,
    pub(crate) ef_construct: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCollection {
    pub(crate) vectors: VectorsConfig,
    #[serde(default)]
    pub(crate) hnsw_config: HnswConfig,
}

/// Creates a collection: its table and HNSW index, in one atomic command.
pub(crate) async fn create_collection(s: &NodeContext, name: &str, req: CreateCollection) -> ApiResult<()> {
    check_name(name)?;
    let metric = parse_metric(&req.vectors.distance)?;
    let spec = IndexSpec {
        dim: req.vectors.size,
        metric,
        m: req.hnsw_config.m.unwrap_or(IndexSpec::DEFAULT_M),
        ef_construction: req.hnsw_config.ef_construct.unwrap_or(IndexSpec::DEFAULT_EF_CONSTRUCTION),
    };
    spec.validate().map_err(|e| bad(e.to_string()))?;
    let sql = format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, vector VECTOR({dim}) NOT NULL, payload JSON); \
         CREATE INDEX {ix} ON {t} USING hnsw (vector {ops}) WITH (m = {m}, ef_construction = {efc})",
        t = quoted(name),
        ix = quoted(&format!("{name}_vector_idx")),
        dim = spec.dim,
        ops = metric.opclass(),
        m = spec.m,
        efc = spec.ef_construction,
    );
    run_sql(s, &sql, &[]).await?;
    Ok(())
}

/// What `GET` a collection reports.
pub(crate) struct CollectionInfo {
    pub(crate) spec: IndexSpec,
    pub(crate) points: i64,
    pub(crate) indexed: usize,
    pub(crate) ready: bool,
}

pub(crate) async fn collection_info(s: &NodeContext, name: &str, level: Consistency) -> ApiResult<CollectionInfo> {
    s.replica.read_barrier(level).await?;
    let c = collection(s, name)?;
    let stats = s.vectors.stats(c.def.id, c.index.id);
    // Counted on the state the barrier above caught up with (at the caller's level).
    let parsed = s.sql.parse(&format!("SELECT count(*) FROM {}", quoted(name)), &[])?;
    let count = s.sql.execute(parsed, &s.replica).await?;
    let points = match count.first() {
        Some(quorumdb_sql::StatementResult::Rows { batches, .. }) => batches
            .first()
            .and_then(|b| {
                b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0))
            })
            .unwrap_or(0),
        _ => 0,
    };
    Ok(CollectionInfo { spec: c.spec, points, indexed: stats.map_or(0, |(_, live)| live), ready: stats.is_some() })
}

pub(crate) async fn drop_collection(s: &NodeContext, name: &str) -> ApiResult<()> {
    // The collection may have been created through another node a moment ago.
    s.replica.read_barrier(Consistency::Linearizable).await?;
    collection(s, name)?;
    run_sql(s, &format!("DROP TABLE {}", quoted(name)), &[]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Points

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointIn {
    pub(crate) id: Value,
    pub(crate) vector: Vec<Value>,
    #[serde(default)]
    pub(crate) payload: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upsert {
    pub(crate) points: Vec<PointIn>,
}

pub(crate) fn point_id(v: &Value) -> ApiResult<i64> {
    v.as_u64()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| bad(format!("point ids must be unsigned integers below 2^63, not {v}")))
}

/// Validates a JSON vector: numbers, finite, the collection's dimension.
fn vector_of(v: &[Value], dim: usize) -> ApiResult<Vec<f32>> {
    let floats: Vec<f32> = v
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| bad(format!("vector elements must be numbers, not {x}"))))
        .collect::<ApiResult<_>>()?;
    quorumdb_vector::metric::validate(&floats, Some(dim)).map_err(|e| bad(format!("bad vector: {e}")))?;
    Ok(floats)
}

/// Upserts points (all validated before anything is written; one atomic command).
pub(crate) async fn upsert_points(s: &NodeContext, name: &str, req: Upsert) -> ApiResult<usize> {
    // The collection may have been created through another node a moment ago.
    s.replica.read_barrier(Consistency::Linearizable).await?;
    let c = collection(s, name)?;
    if req.points.is_empty() || req.points.len() > MAX_BATCH {
        return Err(bad(format!("an upsert carries 1..{MAX_BATCH} points, not {}", req.points.len())));
    }
    // Everything is checked before anything is written.
    let mut params = Vec::with_capacity(req.points.len() * 3);
    let mut values = Vec::with_capacity(req.points.len());
    for (i, p) in req.points.iter().enumerate() {
        let id = point_id(&p.id)?;
        let v = vector_of(&p.vector, c.spec.dim).map_err(|e| bad(format!("point {id}: {e}")))?;
        let payload = match &p.payload {
            None | Some(Value::Null) => Value::Null,
            Some(o @ Value::Object(_)) => Value::String(o.to_string()),
            Some(other) => return Err(bad(format!("point {id}: payload must be a JSON object, not {other}"))),
        };
        params.extend([json!(id), Value::String(quorumdb_vector::metric::format(&v)), payload]);
        values.push(format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3));
    }
    let sql = format!(
        "INSERT INTO {} (id, vector, payload) VALUES {} \
         ON CONFLICT (id) DO UPDATE SET vector = excluded.vector, payload = excluded.payload",
        quoted(name),
        values.join(", ")
    );
    run_sql(s, &sql, &params).await?;
    Ok(req.points.len())
}

/// Deletes points by id; returns how many existed.
pub(crate) async fn remove_points(s: &NodeContext, name: &str, ids: &[i64]) -> ApiResult<u64> {
    // The collection may have been created through another node a moment ago.
    s.replica.read_barrier(Consistency::Linearizable).await?;
    collection(s, name)?;
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(bad(format!("a delete carries 1..{MAX_BATCH} point ids, not {}", ids.len())));
    }
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!("DELETE FROM {} WHERE id IN ({})", quoted(name), marks.join(", "));
    let params: Vec<Value> = ids.iter().map(|i| json!(i)).collect();
    let results = run_sql(s, &sql, &params).await?;
    Ok(match results.first() {
        Some(quorumdb_sql::StatementResult::Done { rows_affected, .. }) => *rows_affected,
        _ => 0,
    })
}

fn payload_of(c: &Collection, row: &[SqlValue]) -> Value {
    match &row[c.payload] {
        SqlValue::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn point_json(c: &Collection, row: &[SqlValue], with_payload: bool, with_vector: bool) -> Value {
    let mut o = serde_json::Map::new();
    if let SqlValue::Int(id) = &row[c.id] {
        o.insert("id".into(), json!(id));
    }
    if with_payload {
        o.insert("payload".into(), payload_of(c, row));
    }
    if with_vector && let SqlValue::Vector(v) = &row[c.vector] {
        o.insert("vector".into(), json!(v));
    }
    Value::Object(o)
}

/// One point as JSON (`id`, `payload`, `vector`).
pub(crate) async fn read_point(s: &NodeContext, name: &str, id: i64, level: Consistency) -> ApiResult<Value> {
    s.replica.read_barrier(level).await?;
    let c = collection(s, name)?;
    let key =
        c.def.key_of(&pk_row(&c, id))?.ok_or_else(|| ServerError::NotFound(format!("collection {name} not found")))?;
    let bytes = s
        .replica
        .reader()
        .get(&quorumdb_sql::codec::row_key(c.def.id, &key))?
        .ok_or_else(|| ServerError::NotFound(format!("point {id} not found in {name}")))?;
    let row = quorumdb_sql::catalog::RowDecoder::new(&c.def).decode(&bytes)?;
    Ok(point_json(&c, &row, true, true))
}

/// A physical row holding only the id (to encode the primary key).
fn pk_row(c: &Collection, id: i64) -> Vec<SqlValue> {
    let mut row = vec![SqlValue::Null; c.def.columns.len()];
    row[c.id] = SqlValue::Int(id);
    row
}

// ---------------------------------------------------------------------------------------
// Search

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParamsIn {
    pub(crate) hnsw_ef: Option<usize>,
    #[serde(default)]
    pub(crate) exact: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    pub(crate) vector: Vec<Value>,
    pub(crate) limit: Option<usize>,
    #[serde(default)]
    pub(crate) filter: Option<Value>,
    pub(crate) ef: Option<usize>,
    pub(crate) params: Option<SearchParamsIn>,
    #[serde(default)]
    pub(crate) with_payload: Option<bool>,
    #[serde(default)]
    pub(crate) with_vector: Option<bool>,
    pub(crate) consistency: Option<String>,
}

/// A payload filter: Qdrant's `must` / `should` / `must_not` over conditions.
#[derive(Debug)]
enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    None(Vec<Filter>),
    Match { key: String, values: Vec<Value> },
    Range { key: String, gt: Option<f64>, gte: Option<f64>, lt: Option<f64>, lte: Option<f64> },
    HasId(Vec<i64>),
    IsNull(String),
    IsEmpty(String),
}

fn parse_filter(v: &Value) -> ApiResult<Filter> {
    let o = v.as_object().ok_or_else(|| bad(format!("a filter must be an object, not {v}")))?;
    let mut parts = Vec::new();
    for (k, x) in o {
        let list = |x: &Value| -> ApiResult<Vec<Filter>> {
            match x {
                Value::Array(a) => a.iter().map(parse_condition).collect(),
                Value::Object(_) => Ok(vec![parse_condition(x)?]),
                _ => Err(bad(format!("{k} must be a list of conditions"))),
            }
        };
        parts.push(match k.as_str() {
            "must" => Filter::All(list(x)?),
            "should" => Filter::Any(list(x)?),
            "must_not" => Filter::None(list(x)?),
            other => return Err(bad(format!("unknown filter clause {other:?}: use must, should, must_not"))),
        });
    }
    Ok(Filter::All(parts))
}

fn parse_condition(v: &Value) -> ApiResult<Filter> {
    let o = v.as_object().ok_or_else(|| bad(format!("a condition must be an object, not {v}")))?;
    if o.contains_key("must") || o.contains_key("should") || o.contains_key("must_not") {
        return parse_filter(v);
    }
    if let Some(ids) = o.get("has_id") {
        let ids = ids.as_array().ok_or_else(|| bad("has_id must be a list of ids"))?;
        return Ok(Filter::HasId(ids.iter().map(point_id).collect::<ApiResult<_>>()?));
    }
    for (name, make) in [("is_null", Filter::IsNull as fn(String) -> Filter), ("is_empty", Filter::IsEmpty)] {
        if let Some(x) = o.get(name) {
            let key = x.get("key").and_then(Value::as_str).ok_or_else(|| bad(format!("{name} needs a key")))?;
            return Ok(make(key.to_string()));
        }
    }
    let key = o.get("key").and_then(Value::as_str).ok_or_else(|| bad(format!("unknown condition {v}")))?.to_string();
    if let Some(m) = o.get("match") {
        let values = match (m.get("value"), m.get("any")) {
            (Some(x), None) if !x.is_object() && !x.is_array() && !x.is_null() => vec![x.clone()],
            (None, Some(Value::Array(a))) => a.clone(),
            _ => return Err(bad(format!("match needs a scalar \"value\" or an \"any\" list: {m}"))),
        };
        return Ok(Filter::Match { key, values });
    }
    if let Some(r) = o.get("range") {
        let b = |n: &str| -> ApiResult<Option<f64>> {
            match r.get(n) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| bad(format!("range bound {n} must be a number"))),
            }
        };
        return Ok(Filter::Range { key, gt: b("gt")?, gte: b("gte")?, lt: b("lt")?, lte: b("lte")? });
    }
    Err(bad(format!("unknown condition {v}: use match, range, has_id, is_null, is_empty")))
}

/// The values at a dotted path (arrays at the end are flattened, as Qdrant does).
fn lookup<'a>(payload: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut cur = payload;
    for part in key.split('.') {
        match cur.get(part) {
            Some(x) => cur = x,
            None => return Vec::new(),
        }
    }
    match cur {
        Value::Array(a) => a.iter().collect(),
        x => vec![x],
    }
}

impl Filter {
    fn check(&self, id: i64, payload: &Value) -> bool {
        match self {
            Self::All(f) => f.iter().all(|x| x.check(id, payload)),
            Self::Any(f) => f.is_empty() || f.iter().any(|x| x.check(id, payload)),
            Self::None(f) => !f.iter().any(|x| x.check(id, payload)),
            Self::Match { key, values } => lookup(payload, key).iter().any(|v| values.iter().any(|w| same(v, w))),
            Self::Range { key, gt, gte, lt, lte } => lookup(payload, key).iter().any(|v| {
                v.as_f64().is_some_and(|x| {
                    gt.is_none_or(|b| x > b)
                        && gte.is_none_or(|b| x >= b)
                        && lt.is_none_or(|b| x < b)
                        && lte.is_none_or(|b| x <= b)
                })
            }),
            Self::HasId(ids) => ids.contains(&id),
            Self::IsNull(key) => payload_path(payload, key).is_some_and(Value::is_null),
            Self::IsEmpty(key) => match payload_path(payload, key) {
                None | Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            },
        }
    }
}

fn payload_path<'a>(payload: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(payload, |cur, part| cur.get(part))
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Runs searches against a collection after one read barrier (at the first search's or the
/// query string's consistency).
pub(crate) async fn search_collection(
    s: &NodeContext,
    name: &str,
    searches: Vec<SearchRequest>,
    default_level: Option<&str>,
    max_staleness_ms: Option<u64>,
) -> ApiResult<Vec<Value>> {
    if searches.is_empty() || searches.len() > 1000 {
        return Err(bad(format!("a batch carries 1..1000 searches, not {}", searches.len())));
    }
    let level = crate::kv::consistency(searches[0].consistency.as_deref().or(default_level), max_staleness_ms)?;
    s.replica.read_barrier(level).await?;
    let c = Arc::new(collection(s, name)?);
    let mut out = Vec::with_capacity(searches.len());
    for r in searches {
        out.push(run_search(s, c.clone(), r).await?);
    }
    Ok(out)
}

/// Runs one search against a collection on a blocking thread.
async fn run_search(s: &NodeContext, c: Arc<Collection>, req: SearchRequest) -> ApiResult<Value> {
    let limit = req.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be 1..{MAX_LIMIT}, not {limit}")));
    }
    let ef = req.params.as_ref().and_then(|p| p.hnsw_ef).or(req.ef).unwrap_or(IndexSpec::DEFAULT_EF_SEARCH);
    if ef == 0 || ef > 10_000 {
        return Err(bad(format!("ef must be 1..10000, not {ef}")));
    }
    let exact = req.params.as_ref().is_some_and(|p| p.exact);
    let query = vector_of(&req.vector, c.spec.dim)?;
    let filter = req.filter.as_ref().filter(|f| !f.is_null()).map(parse_filter).transpose()?;
    let (with_payload, with_vector) = (req.with_payload.unwrap_or(true), req.with_vector.unwrap_or(false));
    let read = s.replica.reader().clone();
    let vectors = s.vectors.clone();
    let points = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Value>> {
        let pred = filter.as_ref().map(|f| {
            let c = c.clone();
            move |row: &[SqlValue]| -> quorumdb_sql::Result<bool> {
                let id = match &row[c.id] {
                    SqlValue::Int(i) => *i,
                    _ => return Ok(false),
                };
                Ok(f.check(id, &payload_of(&c, row)))
            }
        });
        let pred = pred.as_ref().map(|p| p as &dyn Fn(&[SqlValue]) -> quorumdb_sql::Result<bool>);
        let found: Vec<Found> = if exact {
            quorumdb_sql::vector_indexes::exact_search(&read, &c.def, c.vector, c.spec.metric, &query, limit, pred)?
        } else {
            vectors.search(&read, &c.def, &c.index, &query, limit, ef, pred)?.0
        };
        Ok(found
            .iter()
            .map(|f| {
                let mut p = point_json(&c, &f.row, with_payload, with_vector);
                p["score"] = json!(score(c.spec.metric, f.distance));
                p
            })
            .collect())
    })
    .await
    .map_err(|e| ServerError::BadRequest(format!("search failed: {e}")))??;
    Ok(Value::Array(points))
}
