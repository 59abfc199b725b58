//! Logging and Prometheus metrics.
//!
//! Counters and histograms go through the `metrics` facade into one process-wide Prometheus
//! recorder; per-node Raft gauges are rendered from the replica's own metrics at scrape time,
//! labelled with the node id, so in-process clusters report each node apart.

use std::fmt::Write;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use quorumdb_replication::Replica;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process.
pub fn install_recorder() {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    });
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The Prometheus text exposition for `/metrics`.
pub fn render(replica: &Replica) -> String {
    let mut out = String::new();
    let node = replica.id;
    if let Ok(st) = replica.status() {
        let index = |i: Option<u64>| i.unwrap_or(0) as f64;
        let gauges: [(&str, &str, f64); 9] = [
            ("quorumdb_raft_term", "Current Raft term.", st.term as f64),
            ("quorumdb_raft_is_leader", "1 if this node is the leader.", f64::from(u8::from(st.role == "leader"))),
            ("quorumdb_raft_leader", "Id of the known leader (0 if none).", index(st.leader)),
            ("quorumdb_raft_last_log_index", "Index of the last log entry.", index(st.last_log_index)),
            ("quorumdb_raft_committed_index", "Index of the last committed entry.", index(st.committed)),
            ("quorumdb_raft_applied_index", "Index of the last applied entry.", index(st.applied)),
            ("quorumdb_raft_snapshot_index", "Index of the last snapshot.", index(st.snapshot)),
            ("quorumdb_raft_voters", "Number of voters.", st.members.len() as f64),
            (
                "quorumdb_state_checksum",
                "Low 52 bits of the running checksum of applied commands.",
                (st.checksum & ((1 << 52) - 1)) as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {v}");
        }
    }
    if let Some(h) = RECORDER.get() {
        h.run_upkeep();
        out.push_str(&h.render());
    }
    out
}
