//! Fuzz targets of what the replication layer decodes from the log, the disk and the network:
//! KV commands and responses, transport envelopes (every message type the transport decodes),
//! the stores' records and snapshot manifests. Whatever the bytes, decoding returns and never
//! panics. See `state/tests/support/fuzz.rs` (cases: `QUORUMDB_FUZZ_CASES`, default 2,000 per
//! target).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

#[path = "../../state/tests/support/fuzz.rs"]
mod fuzz;

#[path = "../../state/tests/support/fuzz_json.rs"]
mod fuzz_json;

use std::sync::OnceLock;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use proptest::prelude::*;
use quorumdb_replication::encoding;
use quorumdb_replication::kv::{KvCommand, KvResponse};
use quorumdb_replication::network::pb::Envelope;
use quorumdb_replication::network::transfer::{Resume, SnapshotOffer};
use quorumdb_replication::network::{ForwardReply, codec};
use quorumdb_replication::snapshot::{MANIFEST, Manifest};
use quorumdb_replication::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use quorumdb_replication::{Command, TypeConfig};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn samples(prefix: &'static [&'static str]) -> Vec<Vec<u8>> {
    fuzz::golden_samples(DIR, |n| prefix.iter().any(|p| n.starts_with(p))).into_iter().map(|(_, b)| b).collect()
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

/// Envelopes of every message type the transport decodes: the checked-in transport samples,
/// plus openraft's requests and responses built here from the checked-in log entries.
fn envelope_seeds() -> Vec<Vec<u8>> {
    let mut out = samples(&["forward-", "snapshot-header", "snapshot-offer", "snapshot-resume"]);
    let entries: Vec<Entry> = samples(&["log-entry-"]).iter().map(|b| encoding::decode::<Entry>(b).unwrap()).collect();
    let vote = Vote::new(3, 1);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(2, 1, 6)),
        entries,
        leader_commit: Some(log_id(3, 1, 40)),
    };
    out.push(codec::encode(&append).unwrap().data);
    out.push(codec::encode(&VoteRequest::<TypeConfig>::new(vote, Some(log_id(3, 1, 42)))).unwrap().data);
    out.push(codec::encode(&VoteResponse::<TypeConfig>::new(vote, Some(log_id(3, 1, 42)), true)).unwrap().data);
    out.push(codec::encode(&TransferLeaderRequest::<TypeConfig>::new(vote, 2, Some(log_id(3, 1, 42)))).unwrap().data);
    out.push(codec::encode(&AppendEntriesResponse::<TypeConfig>::Success).unwrap().data);
    out.push(codec::encode(&AppendEntriesResponse::<TypeConfig>::PartialSuccess(Some(log_id(3, 1, 9)))).unwrap().data);
    out.push(codec::encode(&SnapshotResponse::<TypeConfig>::new(vote)).unwrap().data);
    out
}

/// Decodes `data` as every message type the transport reads, in envelopes of `format`.
fn decode_every_message(data: &[u8], format: u32) {
    let e = Envelope { data: data.to_vec(), format };
    let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(&e);
    let _ = codec::decode::<AppendEntriesResponse<TypeConfig>>(&e);
    let _ = codec::decode::<VoteRequest<TypeConfig>>(&e);
    let _ = codec::decode::<VoteResponse<TypeConfig>>(&e);
    let _ = codec::decode::<TransferLeaderRequest<TypeConfig>>(&e);
    let _ = codec::decode::<TransferLeaderResponse<TypeConfig>>(&e);
    let _ = codec::decode::<SnapshotResponse<TypeConfig>>(&e);
    let _ = codec::decode::<ForwardReply>(&e);
    let _ = codec::decode::<Command>(&e);
    let _ = codec::decode::<Resume>(&e);
    let _ = codec::decode::<(u64, Vote, SnapshotMeta)>(&e);
    if let Ok(offer) = codec::decode::<SnapshotOffer>(&e) {
        // What a receiver does with an offered manifest first.
        let _ = (offer.manifest.index(), offer.manifest.total_bytes(), offer.manifest.same_as(&offer.manifest));
    }
}

/// The records the log store and the state machine store read back from RocksDB.
fn decode_every_record(bytes: &[u8]) {
    let _ = encoding::decode::<Entry>(bytes);
    let _ = encoding::decode::<Vote>(bytes);
    let _ = encoding::decode::<Option<LogId>>(bytes);
    let _ = encoding::decode::<LogId>(bytes);
    let _ = encoding::decode::<StoredMembership>(bytes);
    let _ = encoding::decode::<u64>(bytes);
}

fn kv_inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(samples(&["kv-"]), fuzz::MSGPACK_TOKENS, 256)
}

fn envelope_inputs() -> BoxedStrategy<fuzz::Bytes> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    fuzz::inputs(SEEDS.get_or_init(envelope_seeds).clone(), fuzz::MSGPACK_TOKENS, 512)
}

fn record_inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(samples(&["log-", "state-"]), fuzz::MSGPACK_TOKENS, 256)
}

fn manifest_inputs() -> BoxedStrategy<fuzz::Bytes> {
    let sample = fuzz::golden_text(DIR, "snapshot-manifest.json");
    // The pretty manifest and its compact form (JSON tokens splice better into the latter).
    let compact = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&sample).unwrap()).unwrap();
    let edited = fuzz_json::edited(&sample).prop_map(fuzz::Bytes);
    prop_oneof![fuzz::inputs(vec![sample, compact], fuzz::JSON_TOKENS, 512), edited].boxed()
}

/// `Manifest::read` of a snapshot directory holding `bytes` as its manifest, and what callers
/// do next with the manifest.
fn read_manifest(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<Manifest> {
    std::fs::write(dir.join(MANIFEST), bytes).unwrap();
    let m = Manifest::read(dir)?;
    let _ = (m.index(), m.total_bytes(), m.same_as(&m));
    Ok(m)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn kv_command_decode_never_panics(input in kv_inputs()) {
        fuzz::bounded("KvCommand::decode", &input.0, || {
            if let Ok((cmd, version)) = KvCommand::decode(&input.0) {
                let _ = cmd.keys();
                // What decodes re-encodes in its version and decodes to the same command.
                let again = cmd.encode(version).unwrap();
                prop_assert_eq!(KvCommand::decode(&again.0[1..]).unwrap(), (cmd, version));
            }
            Ok(())
        })?;
    }

    #[test]
    fn kv_response_decode_never_panics(input in kv_inputs()) {
        fuzz::bounded("KvResponse::decode", &input.0, || {
            if let Ok(r) = KvResponse::decode(&input.0) {
                for v in [quorumdb_state::format::LEGACY, 1] {
                    prop_assert_eq!(&KvResponse::decode(&r.encode(v).unwrap()).unwrap(), &r);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn envelope_decode_never_panics(input in envelope_inputs(), format in prop_oneof![4 => 0u32..=2, 1 => any::<u32>()]) {
        fuzz::bounded("codec::decode", &input.0, || decode_every_message(&input.0, format));
    }

    #[test]
    fn store_record_decode_never_panics(input in record_inputs()) {
        fuzz::bounded("encoding::decode", &input.0, || decode_every_record(&input.0));
    }

    #[test]
    fn snapshot_manifest_read_never_panics(input in manifest_inputs()) {
        thread_local! {
            static DIR: tempfile::TempDir = fuzz::scratch_dir();
        }
        DIR.with(|dir| fuzz::bounded("Manifest::read", &input.0, || {
            let _ = read_manifest(dir.path(), &input.0);
        }));
    }
}

/// The samples decode (the seeds are what the mutations start from).
#[test]
fn the_seeds_decode() {
    for b in samples(&["kv-"]).iter().filter(|b| KvCommand::decode(b).is_err()) {
        assert!(KvResponse::decode(b).is_ok(), "{}", fuzz::hex(b));
    }
    assert!(envelope_seeds().len() > 10);
    let dir = tempfile::tempdir().unwrap();
    assert!(read_manifest(dir.path(), &fuzz::golden_text(DIR, "snapshot-manifest.json")).is_ok());
}

/// Regression (snapshot_manifest_read_never_panics): file sizes that add up past `u64::MAX`
/// made `Manifest::total_bytes` panic ("attempt to add with overflow"; wrapped in release).
#[test]
fn regression_manifest_sizes_beyond_u64() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"checksum":4276993775,"created_ms":1700000000000,"files":[{"crc32":3735928559,"path":"state/000009.sst","size":4096},{"crc32":7,"path":"app/73/1-1/manifest.json","size":18446744073709551615}],"format":2,"meta":{"last_membership":{"log_id":{"index":7,"leader_id":{"node_id":1,"term":2}},"membership":{"configs":[[1,2,3]],"nodes":{"1":{"addr":"127.0.0.1:7001"},"2":{"addr":"127.0.0.1:7002"},"3":{"addr":"127.0.0.1:7003"}}}},"snapshot_id":""}}"#;
    let m = read_manifest(dir.path(), text.as_bytes()).unwrap();
    assert_eq!(m.total_bytes(), u64::MAX);
}
