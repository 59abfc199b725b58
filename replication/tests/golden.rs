//! Golden bytes of what the replication layer persists or sends: KV commands and responses of
//! every version, log store records, state metadata, transport payloads and the snapshot
//! manifest. Each sample is decoded by the current code and encoded again to the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, EntryPayload, Membership};
use quorumdb_replication::encoding;
use quorumdb_replication::kv::{ByteBuf, Condition, Expiry, KvCommand, KvResponse};
use quorumdb_replication::network::pb::Envelope;
use quorumdb_replication::network::transfer::{Resume, SnapshotOffer};
use quorumdb_replication::network::{ForwardReply, codec};
use quorumdb_replication::snapshot::{FileEntry, Manifest};
use quorumdb_replication::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use quorumdb_replication::{Command, CommandResult, TypeConfig};
use quorumdb_state::format;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// One command of every KV variant, with fixed clocks.
fn kv_commands() -> Vec<(&'static str, KvCommand)> {
    vec![
        ("set", KvCommand::Set { key: b("planet/mars"), value: b("red"), now_ms: Some(1_700_000_000_000) }),
        ("set-no-clock", KvCommand::Set { key: b("a"), value: b("1"), now_ms: None }),
        ("delete", KvCommand::Delete { key: b("planet/pluto"), now_ms: Some(1_700_000_000_001) }),
        (
            "cas",
            KvCommand::CompareAndSet {
                key: b("n"),
                expected: Some(ByteBuf::from(b("1"))),
                value: b("2"),
                now_ms: Some(1_700_000_000_002),
            },
        ),
        (
            "put",
            KvCommand::Put {
                key: b("session"),
                value: b("x"),
                condition: Condition::IfAbsent,
                expiry: Expiry::At(1_700_000_060_000),
                now_ms: 1_700_000_000_003,
            },
        ),
        (
            "put-keep",
            KvCommand::Put {
                key: b("s"),
                value: b("y"),
                condition: Condition::IfPresent,
                expiry: Expiry::Keep,
                now_ms: 4,
            },
        ),
        ("delete-many", KvCommand::DeleteMany { keys: vec![ByteBuf::from(b("a")), ByteBuf::from(b("b"))], now_ms: 5 }),
        ("set-many", KvCommand::SetMany { pairs: vec![(ByteBuf::from(b("a")), ByteBuf::from(b("1")))], now_ms: 6 }),
        ("incr-by", KvCommand::IncrBy { key: b("hits"), delta: -3, now_ms: 7 }),
        ("purge-expired", KvCommand::PurgeExpired { now_ms: 8, limit: 1000 }),
    ]
}

#[test]
fn kv_commands_of_every_version() {
    for (name, cmd) in kv_commands() {
        for v in [format::LEGACY, 1] {
            let tagged = cmd.encode(v).unwrap().0;
            assert_eq!(tagged[0], quorumdb_replication::kv::TAG);
            let stored = golden::check(DIR, &format!("kv-{name}-v{v}"), &tagged[1..]);
            assert_eq!(KvCommand::decode(&stored).unwrap(), (cmd.clone(), v), "{name} v{v}");
        }
    }
}

#[test]
fn kv_responses_of_every_version() {
    let responses = [
        ("done", KvResponse::Done { previous: Some(ByteBuf::from(b("red"))) }),
        ("done-none", KvResponse::Done { previous: None }),
        ("cas-failed", KvResponse::CasFailed { current: Some(ByteBuf::from(b("3"))) }),
        ("count", KvResponse::Count { n: 2 }),
        ("integer", KvResponse::Integer { value: -3 }),
    ];
    for (name, r) in responses {
        for v in [format::LEGACY, 1] {
            let stored = golden::check(DIR, &format!("kv-response-{name}-v{v}"), &r.encode(v).unwrap());
            assert_eq!(KvResponse::decode(&stored).unwrap(), r, "{name} v{v}");
        }
    }
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> =
        (1..=3).map(|id| (id, BasicNode { addr: format!("127.0.0.1:700{id}") })).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap()
}

/// A record of the stores round-trips through their encoding to the checked-in bytes.
fn record<T>(name: &str, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let stored = golden::check(DIR, name, &encoding::encode(value).unwrap());
    assert_eq!(&encoding::decode::<T>(&stored).unwrap(), value, "{name}");
}

#[test]
fn log_store_records() {
    let kv = KvCommand::Set { key: b("planet/mars"), value: b("red"), now_ms: Some(1_700_000_000_000) };
    let entries: [(&str, Entry); 3] = [
        ("log-entry-normal", Entry { log_id: log_id(3, 1, 42), payload: EntryPayload::Normal(kv.encode(1).unwrap()) }),
        ("log-entry-blank", Entry { log_id: log_id(3, 1, 41), payload: EntryPayload::Blank }),
        ("log-entry-membership", Entry { log_id: log_id(2, 1, 7), payload: EntryPayload::Membership(membership()) }),
    ];
    for (name, e) in &entries {
        record(name, e);
    }
    record("log-vote", &Vote::new(3, 1));
    record("log-committed", &Some(log_id(3, 1, 42)));
    record("log-last-purged", &log_id(2, 1, 7));
}

#[test]
fn state_metadata_records() {
    record("state-applied", &Some(log_id(3, 1, 42)));
    record("state-membership", &StoredMembership::new(Some(log_id(2, 1, 7)), membership()));
    record("state-checksum", &0x1234_5678_9abc_def0u64);
}

fn envelope(name: &str, e: Envelope) -> Envelope {
    assert_eq!(e.format, codec::ENVELOPE_FORMAT);
    Envelope { data: golden::check(DIR, name, &e.data), format: e.format }
}

#[test]
fn transport_payloads() {
    let replies = [
        ("forward-done", ForwardReply::Done(CommandResult::Applied(b("\u{1}")))),
        ("forward-rejected", ForwardReply::Done(CommandResult::Rejected(b("no")))),
        ("forward-not-leader", ForwardReply::NotLeader { leader: Some(2) }),
        ("forward-unknown", ForwardReply::OutcomeUnknown("leader changed".into())),
        ("forward-failed", ForwardReply::Failed("stopped".into())),
    ];
    for (name, r) in replies {
        let back: ForwardReply = codec::decode(&envelope(name, codec::encode(&r).unwrap())).unwrap();
        assert_eq!(format!("{back:?}"), format!("{r:?}"), "{name}");
    }
    let cmd = Command(b("k\u{1}"));
    let mut stored = envelope("forward-command", codec::encode(&cmd).unwrap());
    stored.format = 0;
    assert_eq!(codec::decode::<Command>(&stored).unwrap(), cmd, "a version-0 sender's envelope decodes the same");
    let offer = SnapshotOffer { from: 1, manifest: manifest() };
    let back: SnapshotOffer = codec::decode(&envelope("snapshot-offer", codec::encode(&offer).unwrap())).unwrap();
    assert_eq!((back.from, back.manifest.files), (1, manifest().files));
    let resume = Resume { file: 3, offset: 1 << 20 };
    let back: Resume = codec::decode(&envelope("snapshot-resume", codec::encode(&resume).unwrap())).unwrap();
    assert_eq!(back, resume);
    // The first chunk's header: [from, vote, meta], positional.
    let meta = manifest().meta;
    let header = codec::encode(&(1u64, Vote::new(3, 1), meta.clone())).unwrap();
    let back: (u64, Vote, SnapshotMeta) = codec::decode(&envelope("snapshot-header", header)).unwrap();
    assert_eq!(back, (1, Vote::new(3, 1), meta));
    // A newer sender is refused, not misread.
    let newer = Envelope { data: vec![0xc0], format: u32::from(format::CURRENT) + 1 };
    assert!(codec::decode::<Option<u8>>(&newer).is_err());
}

fn manifest() -> Manifest {
    Manifest {
        format: quorumdb_replication::snapshot::FORMAT,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 42)),
            last_membership: StoredMembership::new(Some(log_id(2, 1, 7)), membership()),
        },
        checksum: 0xfeed_beef,
        created_ms: 1_700_000_000_000,
        files: vec![
            FileEntry { path: "state/000009.sst".into(), size: 4096, crc32: 0xdead_beef },
            FileEntry { path: "app/73/1-1/manifest.json".into(), size: 210, crc32: 7 },
        ],
    }
}

#[test]
fn snapshot_manifest() {
    let dir = tempfile::tempdir().unwrap();
    manifest().write(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(quorumdb_replication::snapshot::MANIFEST)).unwrap();
    golden::check_text(DIR, "snapshot-manifest.json", &text);
    let back = Manifest::read(dir.path()).unwrap();
    assert_eq!(back.files, manifest().files);
    assert_eq!(back.meta, manifest().meta);
}
