//! Fuzz targets of what the SQL layer decodes from the log and the state: commands, responses,
//! the catalog, stored rows and key values (and the backup manifest a restore reads).
//! Whatever the bytes, decoding returns and never panics. See
//! `state/tests/support/fuzz.rs` (cases: `QUORUMDB_FUZZ_CASES`, default 2,000 per target).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

#[path = "../../state/tests/support/fuzz.rs"]
mod fuzz;

#[path = "../../state/tests/support/fuzz_json.rs"]
mod fuzz_json;

use proptest::collection::vec;
use proptest::prelude::*;
use quorumdb_sql::catalog::{Catalog, RowDecoder, TableDef};
use quorumdb_sql::codec;
use quorumdb_sql::command::{RowOp, SqlCommand, SqlResponse, Step};
use quorumdb_sql::types::{ColumnType, Value};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn samples(prefix: &'static [&'static str]) -> Vec<Vec<u8>> {
    fuzz::golden_samples(DIR, |n| prefix.iter().any(|p| n.starts_with(p))).into_iter().map(|(_, b)| b).collect()
}

/// The table of the golden samples (a column of every type), from the checked-in catalog.
fn golden_table() -> &'static TableDef {
    static TABLE: std::sync::OnceLock<TableDef> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let catalog = Catalog::decode(&golden::load(DIR, "catalog-v1")).unwrap();
        catalog.tables.into_values().next().unwrap()
    })
}

/// What apply and the readers do with a decoded table definition before any row.
fn use_table(def: &TableDef) {
    let _ = (def.types(), def.added_defaults(), def.schema(true), def.pkey_name(), RowDecoder::new(def));
}

/// What apply does with the rows a decoded command carries: decode them as rows of `def`.
fn use_command(cmd: &SqlCommand, def: &TableDef) {
    let rows = RowDecoder::new(def);
    for step in &cmd.steps {
        match step {
            Step::CreateTable(t) | Step::AlterTable(t) => use_table(t),
            Step::Write { ops, .. } => {
                for op in ops {
                    if let RowOp::Insert { row, .. } | RowOp::Update { row, .. } = op {
                        let _ = rows.decode(row);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Decodes key values of `types` one after another from `bytes`, as the key readers do.
fn decode_keys(mut bytes: &[u8], types: &[ColumnType]) {
    for ty in types.iter().cycle() {
        let before = bytes.len();
        if before == 0 || codec::decode_key_value(&mut bytes, ty).is_err() {
            return;
        }
        assert!(bytes.len() < before, "a key value consumed nothing");
    }
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        Just(ColumnType::Int16),
        Just(ColumnType::Int32),
        Just(ColumnType::Int64),
        Just(ColumnType::Float32),
        Just(ColumnType::Float64),
        (any::<u8>(), any::<i8>()).prop_map(|(precision, scale)| ColumnType::Decimal { precision, scale }),
        proptest::option::of(any::<u64>()).prop_map(|max_len| ColumnType::Text { max_len }),
        Just(ColumnType::Bool),
        Just(ColumnType::Timestamp),
        Just(ColumnType::Date),
        Just(ColumnType::Bytea),
        Just(ColumnType::Json),
        any::<u32>().prop_map(|dim| ColumnType::Vector { dim }),
    ]
}

fn command_inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(samples(&["sql-command", "sql-response"]), fuzz::MSGPACK_TOKENS, 512)
}

fn catalog_inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(samples(&["catalog-"]), fuzz::MSGPACK_TOKENS, 512)
}

fn row_inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(samples(&["row", "index-entry", "key-values"]), &[&[0x00], &[0x01], &[0xff], &[0x80], &[0x7f]], 256)
}

fn backup_manifest_inputs() -> BoxedStrategy<fuzz::Bytes> {
    let sample = fuzz::golden_text(DIR, "backup-manifest.json");
    let edited = fuzz_json::edited(&sample).prop_map(fuzz::Bytes);
    prop_oneof![fuzz::inputs(vec![sample], fuzz::JSON_TOKENS, 512), edited].boxed()
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn sql_command_decode_never_panics(input in command_inputs()) {
        let def = golden_table();
        fuzz::bounded("SqlCommand::decode", &input.0, || {
            if let Ok((cmd, _)) = SqlCommand::decode(&input.0) {
                use_command(&cmd, def);
            }
        });
    }

    #[test]
    fn sql_response_decode_never_panics(input in command_inputs()) {
        fuzz::bounded("SqlResponse::decode", &input.0, || {
            if let Ok(r) = SqlResponse::decode(&input.0) {
                for v in [quorumdb_state::format::LEGACY, 1] {
                    prop_assert_eq!(&SqlResponse::decode(&r.encode(v).unwrap()).unwrap(), &r);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn catalog_decode_never_panics(input in catalog_inputs()) {
        fuzz::bounded("Catalog::decode", &input.0, || {
            if let Ok(c) = Catalog::decode(&input.0) {
                for def in c.tables.values() {
                    use_table(def);
                }
                let _ = c.by_id(7);
            }
        });
    }

    #[test]
    fn row_decode_never_panics(input in row_inputs()) {
        let def = golden_table();
        fuzz::bounded("codec::decode_row", &input.0, || {
            let _ = codec::decode_row(&input.0, &def.types(), &def.added_defaults());
            decode_keys(&input.0, &def.types());
        });
    }

    #[test]
    fn row_decode_of_any_columns_never_panics(input in row_inputs(), types in vec(column_type(), 0..24)) {
        let defaults = vec![Value::Null; types.len()];
        fuzz::bounded("codec::decode_row (any columns)", &input.0, || {
            let _ = codec::decode_row(&input.0, &types, &defaults);
            let _ = codec::decode_row(&input.0, &types, &[]);
            if !types.is_empty() {
                decode_keys(&input.0, &types);
            }
        });
    }

    #[test]
    fn backup_manifest_read_never_panics(input in backup_manifest_inputs()) {
        thread_local! {
            static DIR: tempfile::TempDir = fuzz::scratch_dir();
        }
        DIR.with(|dir| fuzz::bounded("backup::Manifest::read", &input.0, || {
            std::fs::write(dir.path().join("manifest.json"), &input.0).unwrap();
            let _ = quorumdb_sql::backup::Manifest::read(dir.path());
        }));
    }
}

/// The samples decode (the seeds are what the mutations start from).
#[test]
fn the_seeds_decode() {
    let def = golden_table();
    use_table(def);
    for v in [0, 1] {
        let (cmd, _) = SqlCommand::decode(&golden::load(DIR, &format!("sql-command-v{v}"))).unwrap();
        use_command(&cmd, def);
    }
    assert!(codec::decode_row(&golden::load(DIR, "row"), &def.types(), &def.added_defaults()).is_ok());
}
