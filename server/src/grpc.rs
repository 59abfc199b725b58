//! The gRPC client API (`quorumdb.client.Kv`, `quorumdb.client.Cluster`) and the routes that
//! mount it, with the Raft transport, on the node's single port.

use quorumdb_replication::Replica;
use quorumdb_replication::kv::{KvCommand, KvResponse};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::error::to_status;
use crate::kv;

pub mod pb {
    tonic::include_proto!("quorumdb.client");
}

use pb::cluster_server::{Cluster, ClusterServer};
use pb::kv_server::{Kv, KvServer};

/// Every gRPC service of a node: the Raft transport and the client API.
pub fn routes(replica: Replica) -> Routes {
    Routes::new(replica.transport_service())
        .add_service(KvServer::new(KvService(replica.clone())))
        .add_service(ClusterServer::new(ClusterService(replica)))
}

pub struct KvService(Replica);

fn write_response(r: KvResponse) -> Result<pb::WriteResponse, Status> {
    match r {
        KvResponse::Done { previous } => Ok(pb::WriteResponse {
            had_previous: previous.is_some(),
            previous: previous.map(|p| p.into_vec()).unwrap_or_default(),
        }),
        KvResponse::CasFailed { .. } => Err(Status::internal("unexpected compare-and-set result")),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let read = req.read.unwrap_or_default();
        let level = if read.consistency.is_empty() { None } else { Some(read.consistency.as_str()) };
        let staleness = (read.max_staleness_ms > 0).then_some(read.max_staleness_ms);
        let level = kv::consistency(level, staleness).map_err(to_status)?;
        let (value, info) = kv::get(&self.0, &req.key, level).await.map_err(to_status)?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            applied_index: info.applied_index,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let r = kv::write(&self.0, KvCommand::Set { key: req.key, value: req.value }).await.map_err(to_status)?;
        Ok(Response::new(write_response(r)?))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let r = kv::write(&self.0, KvCommand::Delete { key: req.into_inner().key }).await.map_err(to_status)?;
        Ok(Response::new(write_response(r)?))
    }

    async fn compare_and_set(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let req = req.into_inner();
        let cmd = KvCommand::CompareAndSet { key: req.key, expected: req.expected.map(Into::into), value: req.value };
        let resp = match kv::write(&self.0, cmd).await.map_err(to_status)? {
            KvResponse::Done { .. } => pb::CasResponse { succeeded: true, has_current: false, current: vec![] },
            KvResponse::CasFailed { current } => pb::CasResponse {
                succeeded: false,
                has_current: current.is_some(),
                current: current.map(|c| c.into_vec()).unwrap_or_default(),
            },
        };
        Ok(Response::new(resp))
    }
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
