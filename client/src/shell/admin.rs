//! The shell's view of the cluster through each node's HTTP API: `/v1/status` (to find a
//! node's PostgreSQL address and the members) and the `/v1/cluster/*` admin calls behind
//! `.transfer`, `.join`, `.remove` and `.snapshot`. Never speaks SQL.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::format::ResultSet;
use crate::error::ShellError;

/// The parts of `GET /v1/status` the shell uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub applied: Option<u64>,
    #[serde(default)]
    pub checksum: String,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub learners: Vec<Member>,
    pub pg_addr: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: Option<String>,
}

impl Status {
    /// Every member with a known address, voters then learners, as `(id, main address)`.
    pub fn member_addrs(&self) -> Vec<(u64, String)> {
        self.members.iter().chain(&self.learners).filter_map(|m| Some((m.id, m.addr.clone()?))).collect()
    }
}

/// `host:port` from what a user may type (`http://host:port/`).
pub fn normalize_addr(addr: &str) -> String {
    let a = addr.trim();
    let a = a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")).unwrap_or(a);
    a.trim_end_matches('/').to_string()
}

/// The HTTP client for status and admin calls (short timeouts: a dead node must not stall
/// the shell).
pub fn http_client(user: &str, password: Option<&str>) -> Result<reqwest::Client, ShellError> {
    crate::http_builder_as(user, password)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ShellError::Admin(format!("cannot create the HTTP client: {e}")))
}

/// `GET /v1/status` of the node at `addr`.
pub async fn status(http: &reqwest::Client, addr: &str) -> Result<Status, ShellError> {
    let unreachable = |e: String| ShellError::Admin(format!("node at {addr} does not answer: {e}"));
    let resp = http
        .get(format!("{}://{addr}/v1/status", crate::scheme()))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!("HTTP {}", resp.status())));
    }
    resp.json::<Status>().await.map_err(|e| ShellError::Admin(format!("node at {addr} sent a bad status: {e}")))
}

/// The message of an error answer `{"error": {"message": …}}`, or the raw body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// `POST path` with a JSON body to the node at `addr`.
pub async fn post(http: &reqwest::Client, addr: &str, path: &str, body: Value) -> Result<(), ShellError> {
    let resp = http
        .post(format!("{}://{addr}{path}", crate::scheme()))
        .json(&body)
        .send()
        .await
        .map_err(|e| ShellError::Admin(format!("node at {addr} does not answer: {e}")))?;
    let code = resp.status();
    if code.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(ShellError::Admin(format!("{} (HTTP {})", error_message(&text), code.as_u16())))
}

pub async fn transfer_leader(http: &reqwest::Client, addr: &str, to: u64) -> Result<(), ShellError> {
    post(http, addr, "/v1/cluster/transfer-leader", json!({ "to": to })).await
}

pub async fn join(http: &reqwest::Client, addr: &str, id: u64, node_addr: &str) -> Result<(), ShellError> {
    post(http, addr, "/v1/cluster/join", json!({ "id": id, "addr": node_addr })).await
}

pub async fn remove(http: &reqwest::Client, addr: &str, id: u64) -> Result<(), ShellError> {
    post(http, addr, "/v1/cluster/remove", json!({ "id": id })).await
}

pub async fn snapshot(http: &reqwest::Client, addr: &str) -> Result<(), ShellError> {
    post(http, addr, "/v1/cluster/snapshot", json!({})).await
}

/// The `.nodes` table: one row per member, from each member's own status (`None`: it did not
/// answer). `connected` is the node the shell's SQL goes to.
pub fn nodes_table(members: &[(u64, String)], statuses: &[Option<Status>], connected: Option<u64>) -> ResultSet {
    let columns = ["id", "addr", "pg_addr", "role", "term", "applied", "leader", "shell"];
    let rows = members
        .iter()
        .zip(statuses)
        .map(|((id, addr), st)| {
            let st = st.as_ref();
            vec![
                Some(id.to_string()),
                Some(addr.clone()),
                st.and_then(|s| s.pg_addr.clone()),
                Some(st.map_or_else(|| "unreachable".to_string(), |s| s.role.clone())),
                st.map(|s| s.term.to_string()),
                st.and_then(|s| s.applied).map(|a| a.to_string()),
                st.is_some_and(|s| s.role == "leader").then(|| "*".to_string()),
                (connected == Some(*id)).then(|| "connected".to_string()),
            ]
        })
        .collect();
    ResultSet { columns: columns.iter().map(|c| c.to_string()).collect(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, role: &str, applied: u64) -> Status {
        Status {
            id,
            addr: format!("127.0.0.1:700{id}"),
            role: role.into(),
            term: 3,
            leader: Some(1),
            leader_addr: Some("127.0.0.1:7001".into()),
            applied: Some(applied),
            checksum: "00".into(),
            members: vec![],
            learners: vec![],
            pg_addr: Some(format!("127.0.0.1:543{id}")),
        }
    }

    #[test]
    fn status_json_parses() {
        let v = json!({
            "id": 2, "addr": "127.0.0.1:7002", "role": "follower", "term": 4, "leader": 1,
            "leader_addr": "127.0.0.1:7001", "last_log_index": 10, "committed": 10, "applied": 10,
            "snapshot": null, "purged": null, "checksum": "00000000000000ff",
            "members": [{"id": 1, "addr": "127.0.0.1:7001"}, {"id": 2, "addr": "127.0.0.1:7002"}],
            "learners": [{"id": 4, "addr": null}], "pg_addr": "127.0.0.1:5434", "redis_addr": null
        });
        let s: Status = serde_json::from_value(v).unwrap();
        assert_eq!(s.leader, Some(1));
        assert_eq!(s.pg_addr.as_deref(), Some("127.0.0.1:5434"));
        assert_eq!(s.member_addrs(), vec![(1, "127.0.0.1:7001".into()), (2, "127.0.0.1:7002".into())]);
    }

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(normalize_addr("http://127.0.0.1:7001/"), "127.0.0.1:7001");
        assert_eq!(normalize_addr(" 10.0.0.1:7001 "), "10.0.0.1:7001");
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(error_message(r#"{"error": {"code": "x", "message": "no leader"}}"#), "no leader");
        assert_eq!(error_message("plain text\n"), "plain text");
    }

    #[test]
    fn nodes_table_marks_leader_and_connection() {
        let members = vec![(1, "127.0.0.1:7001".to_string()), (2, "127.0.0.1:7002".to_string()), (3, "x:1".into())];
        let t = nodes_table(&members, &[Some(st(1, "leader", 9)), Some(st(2, "follower", 8)), None], Some(2));
        let text = super::super::format::render(&t, super::super::format::Mode::Csv);
        assert_eq!(
            text,
            "id,addr,pg_addr,role,term,applied,leader,shell\n\
             1,127.0.0.1:7001,127.0.0.1:5431,leader,3,9,*,\n\
             2,127.0.0.1:7002,127.0.0.1:5432,follower,3,8,,connected\n\
             3,x:1,,unreachable,,,,\n"
        );
    }
}
