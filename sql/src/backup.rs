//! Backups in Arrow: every table of a frozen state written as an Arrow IPC file, and the
//! manifest that describes them (the DDL to recreate each table and its indexes, row counts,
//! sizes and CRC-32s).
//!
//! This module only reads a [`AppliedState`] and writes files; the server takes the frozen image of
//! the state (a checkpoint at one applied index) and the restore client replays the files
//! through the ordinary bulk-load path. Layout of a backup directory:
//!
//! - `manifest.json` — a [`Manifest`], written last (a directory without it is incomplete);
//! - `<table>.arrow` — one per table: the Arrow IPC *file* format (pyarrow's
//!   `pa.ipc.open_file`, polars' `read_ipc`), the table's visible columns in order, rows in
//!   primary-key order (hidden row id order for tables without a key). Each field carries its
//!   SQL type in the field metadata (`quorumdb.type`), since TEXT and JSON share Arrow's Utf8.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, IndexDef, IndexKind, RowDecoder, TableDef};
use crate::codec;
use crate::error::{Result, SqlError};
use crate::types::{Value, build_array};
use quorumdb_state::{AppliedState, try_scan};

/// The `format` field of every manifest.
pub const FORMAT: &str = "quorumdb-backup";
/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// The field metadata key holding a column's SQL type.
pub const TYPE_METADATA: &str = "quorumdb.type";

/// Rows per record batch in a table file, at most.
const BATCH_ROWS: usize = 8192;
/// Stored row bytes per record batch, about (a batch is cut when it reaches this).
const BATCH_BYTES: usize = 4 << 20;

/// `manifest.json`: what a backup holds and the state it was taken at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    /// The Raft log index (and its term) of the last command included: every table is as of
    /// exactly this point.
    pub applied_index: u64,
    pub applied_term: u64,
    /// When the backup was taken (RFC 3339, UTC) and the same in milliseconds since the epoch.
    pub created_at: String,
    pub created_unix_ms: u64,
    /// The node that wrote the backup, and its version.
    pub node_id: u64,
    pub server_version: String,
    /// What the backup leaves out (the built-in KV table).
    pub excludes: Vec<String>,
    pub tables: Vec<TableEntry>,
}

/// One table of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    /// `CREATE TABLE` with column types, NOT NULL, DEFAULT, PRIMARY KEY and UNIQUE constraints.
    pub create_table: String,
    /// `CREATE [UNIQUE] INDEX` of every other index (B-tree and HNSW, with its parameters), to
    /// run after the rows are loaded.
    pub indexes: Vec<String>,
    /// The file's columns: name, SQL type, whether NULL is allowed.
    pub columns: Vec<ColumnEntry>,
    /// The primary key's columns, in key order; empty for a table keyed by hidden row ids.
    pub primary_key: Vec<String>,
    pub rows: u64,
    /// The file's name in the backup directory, its size and CRC-32 (IEEE).
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path)
            .map_err(|e| SqlError::InvalidParameter(format!("cannot read {}: {e}", path.display())))?;
        let m: Self = serde_json::from_slice(&bytes)
            .map_err(|e| SqlError::InvalidParameter(format!("{} is not a backup manifest: {e}", path.display())))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(SqlError::InvalidParameter(format!(
                "{} is format {:?} version {}; this build reads {FORMAT:?} version {VERSION}",
                path.display(),
                m.format,
                m.version
            )));
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` (through a temporary file, renamed: it appears complete or
    /// not at all).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| SqlError::Internal(e.to_string()))?;
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        Ok(())
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_list(def: &TableDef, cols: &[usize]) -> String {
    cols.iter().map(|&c| quote(&def.columns[c].name)).collect::<Vec<_>>().join(", ")
}

/// Whether `ix` is what a `UNIQUE (…)` constraint of `CREATE TABLE` makes (same name).
fn is_unique_constraint(def: &TableDef, ix: &IndexDef) -> bool {
    let names: Vec<&str> = ix.columns.iter().map(|&c| def.columns[c].name.as_str()).collect();
    ix.unique && ix.is_btree() && ix.name == format!("{}_{}_key", def.name, names.join("_"))
}

/// The `CREATE TABLE` statement that makes a table like `def`: its visible columns with their
/// types, NOT NULL and DEFAULT, the primary key, and the UNIQUE constraints (the unique
/// indexes named as `CREATE TABLE` names them; other indexes are [`index_statements`]).
pub fn create_table_statement(def: &TableDef) -> String {
    let mut parts: Vec<String> = def
        .visible()
        .map(|i| {
            let c = &def.columns[i];
            let mut s = format!("{} {}", quote(&c.name), c.ty.sql_name());
            if !c.nullable {
                s.push_str(" NOT NULL");
            }
            if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            s
        })
        .collect();
    if !def.primary_key.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", column_list(def, &def.primary_key)));
    }
    for ix in def.indexes.iter().filter(|ix| is_unique_constraint(def, ix)) {
        parts.push(format!("UNIQUE ({})", column_list(def, &ix.columns)));
    }
    format!("CREATE TABLE {} ({})", quote(&def.name), parts.join(", "))
}

/// The `CREATE INDEX` statements of `def`'s indexes that its `CREATE TABLE` does not make.
pub fn index_statements(def: &TableDef) -> Vec<String> {
    def.indexes.iter().filter(|ix| !is_unique_constraint(def, ix)).map(|ix| index_statement(def, ix)).collect()
}

fn index_statement(def: &TableDef, ix: &IndexDef) -> String {
    let head =
        format!("CREATE {}INDEX {} ON {}", if ix.unique { "UNIQUE " } else { "" }, quote(&ix.name), quote(&def.name));
    match ix.kind {
        IndexKind::BTree => format!("{head} ({})", column_list(def, &ix.columns)),
        IndexKind::Hnsw { metric, m, ef_construction } => format!(
            "{head} USING hnsw ({} {}) WITH (m = {m}, ef_construction = {ef_construction})",
            column_list(def, &ix.columns),
            metric.opclass()
        ),
    }
}

/// The Arrow schema of a table's file: the visible columns, nullable, each with its SQL type
/// in the field metadata.
pub fn file_schema(def: &TableDef) -> SchemaRef {
    let fields: Vec<Field> = def
        .visible()
        .map(|i| {
            let c = &def.columns[i];
            Field::new(&c.name, c.ty.arrow(), true)
                .with_metadata(HashMap::from([(TYPE_METADATA.to_string(), c.ty.sql_name())]))
        })
        .collect();
    let meta = HashMap::from([("quorumdb.table".to_string(), def.name.clone())]);
    Arc::new(Schema::new_with_metadata(fields, meta))
}

/// A writer that counts the bytes through it and their CRC-32.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The size and CRC-32 of a file, read through once.
pub fn file_crc32(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, crc.finalize()));
        }
        crc.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Writes the rows of table `def`, as `read` holds them, to `out` as an Arrow IPC file, in
/// batches as the scan streams them (a table is never held in memory whole). Returns the
/// rows written.
pub fn export_table(read: &dyn AppliedState, def: &TableDef, out: impl Write) -> Result<u64> {
    let schema = file_schema(def);
    let mut writer = FileWriter::try_new(out, &schema)?;
    let visible: Vec<usize> = def.visible().collect();
    let decoder = RowDecoder::new(def);
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
    let mut pending_bytes = 0usize;
    let mut total = 0u64;
    let flush = |rows: &mut Vec<Vec<Value>>, writer: &mut FileWriter<_>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let arrays = visible
            .iter()
            .map(|&c| build_array(&def.columns[c].ty, rows.iter().map(|r| &r[c])))
            .collect::<Result<Vec<_>>>()?;
        writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
        rows.clear();
        Ok(())
    };
    let prefix = codec::rows_prefix(def.id);
    let end = codec::prefix_end(&prefix);
    try_scan(
        |f| read.scan(&prefix, &end, f),
        |_, v| -> Result<bool> {
            rows.push(decoder.decode(v)?);
            total += 1;
            pending_bytes += v.len();
            if rows.len() >= BATCH_ROWS || pending_bytes >= BATCH_BYTES {
                flush(&mut rows, &mut writer)?;
                pending_bytes = 0;
            }
            Ok(true)
        },
    )?;
    flush(&mut rows, &mut writer)?;
    writer.finish()?;
    Ok(total)
}

/// A file name for each table: the table's name if it is a plain one, else `table-<id>`, made
/// unique ignoring case (for case-insensitive file systems).
fn file_names(catalog: &Catalog) -> Vec<(&TableDef, String)> {
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(catalog.tables.len());
    for def in catalog.tables.values() {
        let plain = !def.name.is_empty()
            && def.name.len() <= 100
            && !def.name.starts_with(['.', '-'])
            && def.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut base = if plain { def.name.clone() } else { format!("table-{}", def.id) };
        if used.contains(&base.to_ascii_lowercase()) {
            base = format!("{base}-{}", def.id);
        }
        used.insert(base.to_ascii_lowercase());
        out.push((def, format!("{base}.arrow")));
    }
    out
}

/// Writes every table of the state `read` holds into `dir` (which exists and is empty), one
/// Arrow IPC file each, and returns their manifest entries, in table name order. `read` must
/// be a frozen image (every read sees the same state). On failure the files written so far
/// are removed.
pub fn export_tables(read: &dyn AppliedState, dir: &Path) -> Result<Vec<TableEntry>> {
    let catalog = Catalog::load(read)?;
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut entries = Vec::with_capacity(catalog.tables.len());
        for (def, file) in file_names(&catalog) {
            let path = dir.join(&file);
            let f = File::options().write(true).create_new(true).open(&path)?;
            written.push(path.clone());
            let mut out = Checksummed { inner: BufWriter::new(f), crc: crc32fast::Hasher::new(), bytes: 0 };
            let rows = export_table(read, def, &mut out)?;
            out.flush()?;
            let f = out.inner.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            tracing::debug!(table = %def.name, rows, bytes = out.bytes, "table exported");
            entries.push(TableEntry {
                name: def.name.clone(),
                create_table: create_table_statement(def),
                indexes: index_statements(def),
                columns: def
                    .visible()
                    .map(|i| ColumnEntry {
                        name: def.columns[i].name.clone(),
                        ty: def.columns[i].ty.sql_name(),
                        nullable: def.columns[i].nullable,
                    })
                    .collect(),
                primary_key: def.primary_key.iter().map(|&c| def.columns[c].name.clone()).collect(),
                rows,
                file,
                bytes: out.bytes,
                crc32: out.crc.finalize(),
            });
        }
        Ok(entries)
    })();
    if result.is_err() {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}
