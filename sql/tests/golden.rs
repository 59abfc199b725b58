//! Golden bytes of what the SQL layer writes into the log and the state: commands with every
//! kind of step, responses, the catalog (each in every format version), rows and keys of
//! every column type, and the backup manifest. Each sample is decoded by the current code and
//! encoded again to the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

use std::collections::BTreeMap;

use quorumdb_sql::backup::{ColumnEntry, Manifest, TableEntry};
use quorumdb_sql::catalog::{Catalog, ColumnDef, IndexDef, IndexKind, TableDef};
use quorumdb_sql::codec;
use quorumdb_sql::command::{RowGuard, RowOp, SqlCommand, SqlResponse, Step};
use quorumdb_sql::types::{ColumnType, Value};
use quorumdb_state::format;
use quorumdb_vector::Metric;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn column(name: &str, ty: ColumnType, nullable: bool) -> ColumnDef {
    ColumnDef { name: name.into(), ty, nullable, default: None, added_default: Value::Null, dropped: false }
}

/// A table with a column of every type, a composite key, a unique B-tree and an HNSW index.
fn table() -> TableDef {
    let mut columns = vec![
        column("region", ColumnType::Text { max_len: Some(8) }, false),
        column("id", ColumnType::Int64, false),
        column("small", ColumnType::Int16, true),
        column("int", ColumnType::Int32, true),
        column("real", ColumnType::Float32, true),
        column("double", ColumnType::Float64, true),
        column("price", ColumnType::Decimal { precision: 10, scale: 2 }, true),
        column("name", ColumnType::Text { max_len: None }, true),
        column("flag", ColumnType::Bool, true),
        column("at", ColumnType::Timestamp, true),
        column("day", ColumnType::Date, true),
        column("blob", ColumnType::Bytea, true),
        column("doc", ColumnType::Json, true),
        column("embedding", ColumnType::Vector { dim: 3 }, true),
    ];
    columns[7].default = Some("'anon'".into());
    columns.push(ColumnDef {
        name: "gone".into(),
        ty: ColumnType::Int32,
        nullable: true,
        default: None,
        added_default: Value::Int(5),
        dropped: true,
    });
    TableDef {
        id: 7,
        name: "things".into(),
        columns,
        primary_key: vec![0, 1],
        indexes: vec![
            IndexDef { id: 1, name: "things_name_key".into(), columns: vec![7], unique: true, kind: IndexKind::BTree },
            IndexDef {
                id: 2,
                name: "things_embedding_idx".into(),
                columns: vec![13],
                unique: false,
                kind: IndexKind::Hnsw { metric: Metric::Cosine, m: 16, ef_construction: 64 },
            },
        ],
        next_index_id: 3,
    }
}

fn row() -> Vec<Value> {
    vec![
        Value::Text("eu".into()),
        Value::Int(42),
        Value::Int(-7),
        Value::Int(70_000),
        Value::Float(1.5),
        Value::Float(-2.25),
        Value::Decimal(12_345),
        Value::Text("widget ✓".into()),
        Value::Bool(true),
        Value::Timestamp(1_700_000_000_123_456),
        Value::Date(19_700),
        Value::Bytes(vec![0, 255, 7]),
        Value::Text("{\"a\":1}".into()),
        Value::Vector(vec![0.5, -1.0, 2.0]),
        Value::Null,
    ]
}

fn command() -> SqlCommand {
    let def = table();
    let key = def.key_of(&row()).unwrap().unwrap();
    SqlCommand {
        catalog_version: 12,
        table_guards: vec![(7, 40)],
        steps: vec![
            Step::CreateTable(def.clone()),
            Step::AlterTable(def.clone()),
            Step::CreateIndex { table: 7, index: def.indexes[0].clone() },
            Step::DropIndex { table: 7, index: 2 },
            Step::Truncate { id: 7 },
            Step::Write {
                table: 7,
                guards: vec![
                    RowGuard { key: key.clone(), hash: Some(99) },
                    RowGuard { key: b"x".to_vec(), hash: None },
                ],
                ops: vec![
                    RowOp::Insert {
                        key: Some(serde_bytes::ByteBuf::from(key.clone())),
                        row: codec::encode_row(&row()),
                    },
                    RowOp::Insert { key: None, row: codec::encode_row(&[Value::Null]) },
                    RowOp::Update { key: key.clone(), row: codec::encode_row(&row()) },
                    RowOp::Delete { key },
                ],
            },
            Step::DropTable { id: 7 },
        ],
    }
}

#[test]
fn commands_of_every_version() {
    for v in [format::LEGACY, 1] {
        let stored = golden::check(DIR, &format!("sql-command-v{v}"), &command().encode(v).unwrap());
        assert_eq!(SqlCommand::decode(&stored).unwrap(), (command(), v));
    }
}

/// A role as format 3 writes it: a login with a verifier (fixed salt), a built-in role, a grant.
fn role() -> quorumdb_sql::auth::RoleDef {
    quorumdb_sql::auth::RoleDef {
        login: true,
        verifier: Some(quorumdb_sql::auth::Verifier::with_salt("pencil", vec![7; 16], 4096)),
        member_of: ["readonly".to_string()].into(),
        grants: BTreeMap::from([(7, 2)]),
    }
}

/// Checks a command of `steps` encoded in `version` against golden sample `name`.
fn command_sample(name: &str, version: u8, catalog_version: u64, steps: Vec<Step>) {
    let cmd = SqlCommand { catalog_version, table_guards: vec![], steps };
    let stored = golden::check(DIR, name, &cmd.encode(version).unwrap());
    assert_eq!(SqlCommand::decode(&stored).unwrap(), (cmd, version));
}

/// Checks `catalog` encoded in `version` against golden sample `name`; the stored bytes.
fn catalog_sample(name: &str, version: u8, catalog: Catalog) -> Vec<u8> {
    let stored = golden::check(DIR, name, &catalog.encode(version).unwrap());
    assert_eq!(Catalog::decode(&stored).unwrap(), catalog);
    stored
}

#[test]
fn role_commands_from_version_3() {
    let steps = vec![
        Step::PutRole { name: "alice".into(), role: Some(role()) },
        Step::PutRole { name: "bob".into(), role: None },
    ];
    command_sample("sql-command-roles-v3", 3, 5, steps);
    let catalog = Catalog {
        version: 12,
        next_table_id: 8,
        tables: BTreeMap::from([("things".to_string(), table())]),
        roles: BTreeMap::from([("alice".to_string(), role())]),
        views: BTreeMap::new(),
    };
    let stored = catalog_sample("catalog-roles-v3", 3, catalog);
    // No password in the bytes: only the verifier.
    assert!(!stored.windows(6).any(|w| w == b"pencil"));
}

#[test]
fn view_commands_from_version_4() {
    let view = quorumdb_sql::catalog::ViewDef {
        query: "SELECT name FROM things WHERE id > 2".into(),
        columns: vec!["n".into()],
        reads: vec!["things".into()],
    };
    let steps = vec![
        Step::PutView { name: "recent".into(), view: Some(view.clone()) },
        Step::PutView { name: "old".into(), view: None },
    ];
    command_sample("sql-command-views-v4", 4, 6, steps);
    let catalog = Catalog {
        version: 13,
        next_table_id: 8,
        tables: BTreeMap::from([("things".to_string(), table())]),
        roles: BTreeMap::new(),
        views: BTreeMap::from([("recent".to_string(), view)]),
    };
    catalog_sample("catalog-views-v4", 4, catalog);
}

#[test]
fn responses_of_every_version() {
    let r = SqlResponse { affected: vec![0, 3, 1] };
    for v in [format::LEGACY, 1] {
        let stored = golden::check(DIR, &format!("sql-response-v{v}"), &r.encode(v).unwrap());
        assert_eq!(SqlResponse::decode(&stored).unwrap(), r);
    }
}

#[test]
fn catalog_of_every_version() {
    let catalog = Catalog {
        version: 12,
        next_table_id: 8,
        tables: BTreeMap::from([("things".to_string(), table())]),
        roles: BTreeMap::new(),
        views: BTreeMap::new(),
    };
    for v in [format::LEGACY, 1] {
        let stored = golden::check(DIR, &format!("catalog-v{v}"), &catalog.encode(v).unwrap());
        assert_eq!(Catalog::decode(&stored).unwrap(), catalog);
    }
}

#[test]
fn rows_and_keys() {
    let def = table();
    let stored = golden::check(DIR, "row", &codec::encode_row(&row()));
    let decoded = codec::decode_row(&stored, &def.types(), &def.added_defaults()).unwrap();
    let mut expected = row();
    expected[14] = Value::Int(5); // a dropped column added later reads as its added default
    assert_eq!(decoded[..14], expected[..14]);
    // Keys: the composite primary key, and an index entry of each kind.
    let key = golden::check(DIR, "row-key", &codec::row_key(def.id, &def.key_of(&row()).unwrap().unwrap()));
    assert!(key.starts_with(&codec::rows_prefix(7)));
    let (k, v) = def.index_entry(&def.indexes[0], &row(), &key[codec::rows_prefix(7).len()..]).unwrap();
    golden::check(DIR, "index-entry-unique-key", &k);
    golden::check(DIR, "index-entry-unique-value", &v);
    // Every type's key encoding keeps SQL order (memcomparable), NULL first.
    let types = def.types();
    let mut keys = Vec::new();
    for (i, ty) in types.iter().enumerate().take(12) {
        if matches!(ty, ColumnType::Json) {
            continue;
        }
        let mut k = Vec::new();
        codec::encode_key_value(&mut k, &row()[i], ty).unwrap();
        keys.extend(k);
    }
    golden::check(DIR, "key-values", &keys);
    let layout = [
        codec::CATALOG_KEY.to_vec(),
        codec::table_version_key(7),
        codec::row_id_key(7),
        codec::vector_point_key(7, 2, 5),
        codec::vector_row_key(7, 2, b"k"),
        codec::vector_next_key(7, 2),
        codec::vector_generation_key(7, 2),
    ]
    .concat();
    golden::check(DIR, "keyspace", &layout);
}

#[test]
fn backup_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manifest {
        format: quorumdb_sql::backup::FORMAT.to_string(),
        version: quorumdb_sql::backup::VERSION,
        applied_index: 42,
        applied_term: 3,
        created_at: "2023-11-14T22:13:20Z".into(),
        created_unix_ms: 1_700_000_000_000,
        node_id: 1,
        server_version: "0.1.0".into(),
        excludes: vec!["kv".into()],
        tables: vec![TableEntry {
            name: "t".into(),
            create_table: "CREATE TABLE \"t\" (\"id\" BIGINT NOT NULL, PRIMARY KEY (\"id\"))".into(),
            indexes: vec![],
            columns: vec![ColumnEntry { name: "id".into(), ty: "BIGINT".into(), nullable: false }],
            primary_key: vec!["id".into()],
            rows: 3,
            file: "t.arrow".into(),
            bytes: 1234,
            crc32: 0xabcd,
        }],
    };
    m.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    golden::check_text(DIR, "backup-manifest.json", &text);
    assert_eq!(Manifest::read(dir.path()).unwrap(), m);
}
