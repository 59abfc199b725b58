//! The main port's one check of logins and privileges, in front of every HTTP route and gRPC
//! method (they share the port): who may call each route ([`route_access`]) against the
//! caller's login ([`crate::auth`]). Where the cluster requires no login, everyone passes.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quorumdb_sql::auth::{Need, Privilege};

use crate::auth::{Principal, basic_credentials};
use crate::context::NodeContext;
use crate::error::ServerError;

/// The main port's login and authorisation, in front of every HTTP route and gRPC method.
pub async fn middleware(State(s): State<NodeContext>, mut req: Request, next: Next) -> Response {
    let grpc = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    match principal(&s, req.method(), req.uri().path(), req.headers()) {
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

fn principal(s: &NodeContext, method: &Method, path: &str, headers: &HeaderMap) -> Result<Principal, ServerError> {
    // One catalog for the whole check: whether logins are on, the password, the privileges.
    let catalog = s.sql.catalog()?;
    if !catalog.auth_required() {
        return Ok(Principal(None));
    }
    let needs = match route_access(method, path) {
        Access::Node => return Ok(Principal(None)),
        Access::Status if s.surfaces.public_status => return Ok(Principal(None)),
        Access::Status => Vec::new(),
        Access::Needs(needs) => needs,
    };
    let Some((user, password)) = basic_credentials(headers) else {
        return Err(ServerError::Unauthenticated(
            "this cluster requires a login: send Authorization: Basic (user:password)".into(),
        ));
    };
    s.auth.check(&catalog, "http", &user, &password)?;
    catalog.authorize(&user, &needs)?;
    Ok(Principal(Some(user)))
}

/// Who may call a route.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Node-to-node traffic (the Raft transport: votes, entries, snapshots, forwarded
    /// writes). It carries no user login; nodes are to authenticate each other with mutual
    /// TLS, which is not built yet — until then a reachable Raft port is open (issue 15).
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
        ["v1", "sql"] => vec![],
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
        // gRPC client API: the KV table and collections by kind (the body names the
        // collection; per-collection grants are HTTP's and SQL's).
        ["quorumdb.client.Kv", "Get"] => vec![Need::AnyTable(Privilege::Select)],
        ["quorumdb.client.Kv", _] => vec![Need::AnyTable(Privilege::Insert)],
        ["quorumdb.client.Cluster", "Status"] => return Access::Status,
        ["quorumdb.client.Vectors", "GetCollection" | "ListCollections" | "GetPoint" | "Search" | "SearchBatch"] => {
            vec![Need::AnyTable(Privilege::Select)]
        }
        ["quorumdb.client.Vectors", "Upsert" | "DeletePoints"] => vec![Need::AnyTable(Privilege::Insert)],
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
