//! The main port's one check of logins and privileges, in front of every HTTP route and gRPC
//! method (they share the port): who may call each route ([`route_access`]) against the
//! caller's login ([`crate::auth`]) or, with TLS, the certificate it presented
//! ([`crate::tls::Peer`]). Where the cluster requires no login, every client passes; a peer's
//! Raft RPCs need its node certificate whenever the node has TLS.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quorumdb_sql::auth::{Need, Privilege};

use crate::auth::{Principal, basic_credentials, bearer_token, check_token};
use crate::context::NodeContext;
use crate::error::ServerError;
use crate::tls::Peer;

/// The main port's login and authorisation, in front of every HTTP route and gRPC method.
pub async fn middleware(State(s): State<NodeContext>, mut req: Request, next: Next) -> Response {
    let grpc = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.clone()).unwrap_or_default();
    match principal(&s, req.method(), req.uri().path(), req.headers(), &peer) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) if grpc => crate::error::to_status(e).into_http(),
        Err(e) => {
            let challenge = matches!(e, ServerError::Unauthenticated(_));
            let mut resp = e.into_response();
            if challenge {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Basic realm=\"quorumdb\""));
            }
            resp
        }
    }
}

fn principal(
    s: &NodeContext,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Principal, ServerError> {
    let access = route_access(method, path);
    if access == Access::Node {
        check_node(s, headers, peer)?;
        return Ok(Principal(None));
    }
    // One catalog for the whole check: whether logins are on, the password, the privileges.
    let catalog = s.sql.catalog()?;
    if !catalog.auth_required() {
        return Ok(Principal(None));
    }
    let needs = match access {
        Access::Status if s.surfaces.public_status => return Ok(Principal(None)),
        Access::Node | Access::Status => Vec::new(),
        Access::Needs(needs) => needs,
    };
    let ip = peer.addr.map(|a| a.ip());
    let user = match (basic_credentials(headers), &peer.user) {
        _ if let Some(token) = bearer_token(headers) => {
            s.auth.throttle.admit(ip, "http")?;
            check_token(&catalog, token).inspect_err(|_| s.auth.throttle.failed(ip))?
        }
        (Some((user, password)), _) => {
            s.auth.check(&catalog, ip, "http", &user, &password)?;
            user
        }
        // A client certificate the cluster CA signed names a role that may log in.
        (None, Some(user)) if catalog.roles.get(user).is_some_and(|r| r.login) => user.clone(),
        (None, _) => {
            return Err(ServerError::Unauthenticated(
                "this cluster requires a login: send Authorization: Basic (user:password) or Bearer (a token)".into(),
            ));
        }
    };
    catalog.authorize(&user, &needs)?;
    Ok(Principal(Some(user)))
}

/// With TLS, a peer's Raft RPC must come with a node certificate (`node-<id>`, signed by the
/// cluster CA) for the node it says it is from. Without TLS the node serves only on loopback
/// (or was told `--insecure`) and the port is open to node traffic.
fn check_node(s: &NodeContext, headers: &HeaderMap, peer: &Peer) -> Result<(), ServerError> {
    if s.surfaces.tls.is_none() {
        return Ok(());
    }
    let claimed =
        headers.get(quorumdb_replication::network::FROM_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match (peer.node, claimed) {
        (Some(cert), Some(from)) if cert == from => Ok(()),
        (Some(_), None) => Ok(()),
        (Some(cert), Some(from)) => {
            Err(ServerError::Unauthenticated(format!("a node-{cert} certificate on a call from node {from}")))
        }
        (None, _) => Err(ServerError::Unauthenticated("node-to-node calls need a node certificate".into())),
    }
}

/// Who may call a route.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Node-to-node traffic (the Raft transport: votes, entries, snapshots, forwarded
    /// writes). It carries no user login; with TLS it needs a node certificate.
    Node,
    /// Status routes (`/v1/status`, `/metrics`, health): any login, or anyone with
    /// `--public-status`.
    Status,
    /// A valid login that has these (SQL text, `/v1/sql`, is checked by its statements where
    /// it is run).
    Needs(Vec<Need>),
}

/// Who may call the route `path` with `method`.
pub fn route_access(method: &Method, path: &str) -> Access {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    let table = |name: &str, p: Privilege| vec![Need::Table(name.to_string(), p)];
    Access::Needs(match parts.as_slice() {
        ["quorumdb.raft.RaftTransport", _] => return Access::Node,
        ["v1", "status"] | ["metrics"] | ["health" | "healthz" | "readyz", ..] => return Access::Status,
        ["v1", "sql"] | ["v1", "auth", "token"] => vec![],
        ["v1", "kv", ..] => vec![Need::AnyTable(if read { Privilege::Select } else { Privilege::Insert })],
        ["v1", "tables", t, "rows"] => table(t, Privilege::Insert),
        ["v1", "collections"] => vec![Need::AnyTable(Privilege::Select)],
        ["v1", "collections", c] if read => table(c, Privilege::Select),
        ["v1", "collections", _] => vec![Need::Ddl],
        ["v1", "collections", c, "points"] if method == Method::PUT => {
            [table(c, Privilege::Insert), table(c, Privilege::Update)].concat()
        }
        ["v1", "collections", c, "points", "delete"] => table(c, Privilege::Delete),
        ["v1", "collections", c, ..] => table(c, Privilege::Select),
        // gRPC client API: the KV table by kind; a collection's points by its table
        // privileges, checked by the method once it has read the collection's name from the
        // body ([`crate::grpc`]).
        ["quorumdb.client.Kv", "Get"] => vec![Need::AnyTable(Privilege::Select)],
        ["quorumdb.client.Kv", _] => vec![Need::AnyTable(Privilege::Insert)],
        ["quorumdb.client.Cluster", "Status"] => return Access::Status,
        ["quorumdb.client.Vectors", "ListCollections"] => vec![Need::AnyTable(Privilege::Select)],
        [
            "quorumdb.client.Vectors",
            "GetCollection" | "GetPoint" | "Search" | "SearchBatch" | "Upsert" | "DeletePoints",
        ] => {
            vec![]
        }
        ["quorumdb.client.Vectors", _] => vec![Need::Ddl],
        // Cluster administration, debug controls, backups, and anything not listed.
        _ => vec![Need::Admin],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_they_do() {
        let n = |m: Method, p: &str| match route_access(&m, p) {
            Access::Needs(n) => Some(n),
            _ => None,
        };
        assert_eq!(route_access(&Method::GET, "/v1/status"), Access::Status);
        assert_eq!(route_access(&Method::POST, "/quorumdb.raft.RaftTransport/Vote"), Access::Node);
        assert_eq!(n(Method::POST, "/quorumdb.client.Kv/Put"), Some(vec![Need::AnyTable(Privilege::Insert)]));
        assert_eq!(n(Method::GET, "/v1/kv/a/b"), Some(vec![Need::AnyTable(Privilege::Select)]));
        assert_eq!(n(Method::PUT, "/v1/kv/a"), Some(vec![Need::AnyTable(Privilege::Insert)]));
        assert_eq!(n(Method::POST, "/v1/cluster/remove"), Some(vec![Need::Admin]));
        assert_eq!(n(Method::PUT, "/v1/debug/faults"), Some(vec![Need::Admin]));
        assert_eq!(n(Method::POST, "/v1/backup"), Some(vec![Need::Admin]));
        assert_eq!(n(Method::POST, "/v1/sql"), Some(vec![]));
        assert_eq!(n(Method::POST, "/v1/collections/c/search"), Some(vec![Need::Table("c".into(), Privilege::Select)]));
        assert_eq!(n(Method::DELETE, "/v1/collections/c"), Some(vec![Need::Ddl]));
        assert_eq!(n(Method::POST, "/nowhere"), Some(vec![Need::Admin]));
    }
}
