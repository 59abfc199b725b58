//! The gRPC client API (`quorumdb.client.Kv`, `quorumdb.client.Cluster`,
//! `quorumdb.client.Vectors`) and the routes that mount it, with the Raft transport, on the
//! node's single port. The vector service calls the same functions as the HTTP collections API.

use quorumdb_replication::Replica;
use quorumdb_replication::kv::{KvCommand, KvResponse};
use quorumdb_state::system::{RequestId, fingerprint};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::error::to_status;
use crate::kv;
use quorumdb_sql::auth::{Need, Privilege};

pub mod pb {
    tonic::include_proto!("quorumdb.client");
}

use pb::cluster_server::{Cluster, ClusterServer};
use pb::kv_server::{Kv, KvServer};
use pb::vectors_server::{Vectors, VectorsServer};

use crate::collections as coll;
use crate::context::NodeContext;

/// Every gRPC service of a node: the Raft transport and the client API.
pub fn routes(state: NodeContext) -> Routes {
    let replica = state.replica.clone();
    Routes::new(replica.transport_service())
        .add_service(KvServer::new(KvService(replica.clone())))
        .add_service(ClusterServer::new(ClusterService(replica)))
        .add_service(VectorsServer::new(VectorService(state)))
}

fn read_level(read: Option<pb::ReadOptions>) -> Result<quorumdb_replication::Consistency, Status> {
    let read = read.unwrap_or_default();
    let level = if read.consistency.is_empty() { None } else { Some(read.consistency.as_str()) };
    kv::consistency(level, (read.max_staleness_ms > 0).then_some(read.max_staleness_ms)).map_err(to_status)
}

pub struct KvService(Replica);

fn write_response(r: KvResponse) -> Result<pb::WriteResponse, Status> {
    match r {
        KvResponse::Done { previous } => Ok(pb::WriteResponse {
            had_previous: previous.is_some(),
            previous: previous.map(|p| p.into_vec()).unwrap_or_default(),
        }),
        other => Err(Status::internal(format!("unexpected KV response {other:?}"))),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let level = read_level(req.read)?;
        let (value, info) = kv::get(&self.0, &req.key, level).await.map_err(to_status)?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            applied_index: info.applied_index,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let id = request_id(&req.request_id, &[b"Put", &req.key, &req.value])?;
        let r = kv::write_as(&self.0, KvCommand::set(req.key, req.value), id.as_ref()).await.map_err(to_status)?;
        Ok(Response::new(write_response(r)?))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let id = request_id(&req.request_id, &[b"Delete", &req.key])?;
        let r = kv::write_as(&self.0, KvCommand::delete(req.key), id.as_ref()).await.map_err(to_status)?;
        Ok(Response::new(write_response(r)?))
    }

    async fn compare_and_set(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let req = req.into_inner();
        let expected = req.expected.as_deref().map_or(vec![0], |e| [&[1u8][..], e].concat());
        let id = request_id(&req.request_id, &[b"CompareAndSet", &req.key, &expected, &req.value])?;
        let cmd = KvCommand::compare_and_set(req.key, req.expected, req.value);
        let resp = match kv::write_as(&self.0, cmd, id.as_ref()).await.map_err(to_status)? {
            KvResponse::Done { .. } => pb::CasResponse { succeeded: true, has_current: false, current: vec![] },
            KvResponse::CasFailed { current } => pb::CasResponse {
                succeeded: false,
                has_current: current.is_some(),
                current: current.map(|c| c.into_vec()).unwrap_or_default(),
            },
            other => return Err(Status::internal(format!("unexpected KV response {other:?}"))),
        };
        Ok(Response::new(resp))
    }
}

/// A write's `request_id` field (empty: none) as a request id over `parts`.
fn request_id(id: &str, parts: &[&[u8]]) -> Result<Option<RequestId>, Status> {
    if id.is_empty() {
        return Ok(None);
    }
    RequestId::new(id, fingerprint(parts)).map(Some).map_err(|e| Status::invalid_argument(format!("request_id: {e}")))
}

pub struct ClusterService(Replica);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.0.status().map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::StatusResponse {
            id: st.id,
            role: st.role.to_string(),
            term: st.term,
            leader: st.leader,
            last_log_index: st.last_log_index.unwrap_or(0),
            committed: st.committed.unwrap_or(0),
            applied: st.applied.unwrap_or(0),
            checksum: st.checksum,
            voters: st.members.iter().map(|m| m.id).collect(),
            learners: st.learners.iter().map(|m| m.id).collect(),
        }))
    }
}

pub struct VectorService(NodeContext);

fn json_text(v: &serde_json::Value) -> String {
    if v.is_null() { String::new() } else { v.to_string() }
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, Status> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Status::invalid_argument(format!("{what} is not valid JSON: {e}")))
}

fn point_of(v: &serde_json::Value) -> pb::Point {
    pb::Point {
        id: v["id"].as_u64().unwrap_or(0),
        vector: v["vector"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
            .unwrap_or_default(),
        payload_json: json_text(&v["payload"]),
    }
}

/// A stale search's bound (the batch's read options are its first search's, as over HTTP).
fn max_staleness(r: &pb::SearchRequest) -> Option<u64> {
    r.read.as_ref().map(|o| o.max_staleness_ms).filter(|ms| *ms > 0)
}

fn search_of(r: pb::SearchRequest) -> Result<coll::SearchRequest, Status> {
    let filter = parse_json(&r.filter_json, "filter_json")?;
    let read = r.read.unwrap_or_default();
    Ok(coll::SearchRequest {
        vector: r.vector.iter().map(|x| serde_json::json!(x)).collect(),
        limit: Some(if r.limit == 0 { 10 } else { r.limit as usize }),
        filter: (!filter.is_null()).then_some(filter),
        ef: (r.ef > 0).then_some(r.ef as usize),
        params: Some(coll::SearchParamsIn { hnsw_ef: None, exact: r.exact }),
        with_payload: Some(r.with_payload),
        with_vector: Some(r.with_vector),
        consistency: (!read.consistency.is_empty()).then_some(read.consistency),
    })
}

fn results_of(v: &serde_json::Value) -> pb::SearchResponse {
    let points = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let pt = point_of(p);
                    pb::ScoredPoint {
                        id: pt.id,
                        score: p["score"].as_f64().unwrap_or(0.0),
                        payload_json: pt.payload_json,
                        vector: pt.vector,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    pb::SearchResponse { points }
}

/// The caller's privileges on a collection (its table), checked here because the guard in
/// front of the port does not read message bodies.
fn authorize<T>(s: &NodeContext, req: &Request<T>, collection: &str, privileges: &[Privilege]) -> Result<(), Status> {
    let user = req.extensions().get::<crate::auth::Principal>().and_then(|p| p.user());
    let needs: Vec<Need> = privileges.iter().map(|&p| Need::Table(collection.to_string(), p)).collect();
    s.sql.authorize_needs(user, &needs).map_err(|e| to_status(e.into()))
}

#[tonic::async_trait]
impl Vectors for VectorService {
    async fn create_collection(&self, req: Request<pb::CreateCollectionRequest>) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let body = coll::CreateCollection {
            vectors: coll::VectorsConfig { size: r.size as usize, distance: r.distance },
            hnsw_config: coll::HnswConfig {
                m: (r.m > 0).then_some(r.m as usize),
                ef_construct: (r.ef_construct > 0).then_some(r.ef_construct as usize),
            },
        };
        coll::create_collection(&self.0, &r.name, body).await.map_err(to_status)?;
        Ok(Response::new(pb::Ack { count: 0 }))
    }

    async fn get_collection(
        &self,
        req: Request<pb::CollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        authorize(&self.0, &req, &req.get_ref().name, &[Privilege::Select])?;
        let r = req.into_inner();
        let i = coll::collection_info(&self.0, &r.name, read_level(r.read)?).await.map_err(to_status)?;
        Ok(Response::new(pb::CollectionInfo {
            size: i.spec.dim as u32,
            distance: coll::metric_name(i.spec.metric).to_string(),
            m: i.spec.m as u32,
            ef_construct: i.spec.ef_construction as u32,
            points_count: i.points.max(0) as u64,
            indexed_vectors_count: i.indexed as u64,
            ready: i.ready,
        }))
    }

    async fn list_collections(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::CollectionList>, Status> {
        let names = coll::list_names(&self.0, read_level(req.into_inner().read)?).await.map_err(to_status)?;
        Ok(Response::new(pb::CollectionList { names }))
    }

    async fn delete_collection(&self, req: Request<pb::CollectionRequest>) -> Result<Response<pb::Ack>, Status> {
        coll::drop_collection(&self.0, &req.into_inner().name).await.map_err(to_status)?;
        Ok(Response::new(pb::Ack { count: 0 }))
    }

    async fn upsert(&self, req: Request<pb::UpsertRequest>) -> Result<Response<pb::Ack>, Status> {
        authorize(&self.0, &req, &req.get_ref().collection, &[Privilege::Insert, Privilege::Update])?;
        let r = req.into_inner();
        let points = r
            .points
            .into_iter()
            .map(|p| {
                Ok(coll::PointIn {
                    id: serde_json::json!(p.id),
                    vector: p.vector.iter().map(|x| serde_json::json!(x)).collect(),
                    payload: Some(parse_json(&p.payload_json, "payload_json")?),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let n = coll::upsert_points(&self.0, &r.collection, coll::Upsert { points }).await.map_err(to_status)?;
        Ok(Response::new(pb::Ack { count: n as u64 }))
    }

    async fn delete_points(&self, req: Request<pb::DeletePointsRequest>) -> Result<Response<pb::Ack>, Status> {
        authorize(&self.0, &req, &req.get_ref().collection, &[Privilege::Delete])?;
        let r = req.into_inner();
        let ids = r
            .ids
            .iter()
            .map(|&i| i64::try_from(i).map_err(|_| Status::invalid_argument(format!("point id {i} is above 2^63"))))
            .collect::<Result<Vec<_>, Status>>()?;
        let n = coll::remove_points(&self.0, &r.collection, &ids).await.map_err(to_status)?;
        Ok(Response::new(pb::Ack { count: n }))
    }

    async fn get_point(&self, req: Request<pb::GetPointRequest>) -> Result<Response<pb::Point>, Status> {
        authorize(&self.0, &req, &req.get_ref().collection, &[Privilege::Select])?;
        let r = req.into_inner();
        let id =
            i64::try_from(r.id).map_err(|_| Status::invalid_argument(format!("point id {} is above 2^63", r.id)))?;
        let v = coll::read_point(&self.0, &r.collection, id, read_level(r.read)?).await.map_err(to_status)?;
        Ok(Response::new(point_of(&v)))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        authorize(&self.0, &req, &req.get_ref().collection, &[Privilege::Select])?;
        let r = req.into_inner();
        let name = r.collection.clone();
        let staleness = max_staleness(&r);
        let out =
            coll::search_collection(&self.0, &name, vec![search_of(r)?], None, staleness).await.map_err(to_status)?;
        Ok(Response::new(results_of(&out[0])))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        // Every search of a batch is on one collection (checked below).
        let first = req.get_ref().searches.first().map(|s| s.collection.clone()).unwrap_or_default();
        authorize(&self.0, &req, &first, &[Privilege::Select])?;
        let r = req.into_inner();
        let Some(name) = r.searches.first().map(|s| s.collection.clone()) else {
            return Err(Status::invalid_argument("a batch carries 1..1000 searches, not 0"));
        };
        if r.searches.iter().any(|s| s.collection != name) {
            return Err(Status::invalid_argument("every search of a batch must be on the same collection"));
        }
        let staleness = max_staleness(&r.searches[0]);
        let searches = r.searches.into_iter().map(search_of).collect::<Result<Vec<_>, Status>>()?;
        let out = coll::search_collection(&self.0, &name, searches, None, staleness).await.map_err(to_status)?;
        Ok(Response::new(pb::SearchBatchResponse { results: out.iter().map(results_of).collect() }))
    }
}
