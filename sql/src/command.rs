//! SQL commands as they travel through the Raft log, and how every node applies them.
//!
//! A command is fully resolved before it is proposed: DDL carries complete definitions with
//! their ids, DML carries encoded rows and keys. Apply does no planning and evaluates no
//! expressions; it checks the command's guards (the catalog version and table versions it was
//! planned against, and the hash of each row it read), enforces key uniqueness, maintains
//! secondary indexes in the same write, and rejects the whole command — nothing applied — on
//! any violation. The outcome depends only on the command and the state, so replicas agree.
//!
//! # Format
//! A command, its response and its rejection are version-0 positional MessagePack (structs as
//! arrays in field order; the version-0 rejection a map with field names) or versioned
//! envelopes with field names ([`quorumdb_state::format`]). Apply answers in the command's
//! version and writes the catalog in it too, so what a command does never depends on the
//! binary that applies it. `docs/formats.md` gives every field.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use quorumdb_state::format::{self, FormatError, FormatVersion};
use quorumdb_state::{Application, Applied, Rejection, SharedState};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, IndexDef, RowDecoder, TableDef};
use crate::codec;
use crate::error::{Result, SqlError};
use crate::types::Value;
use crate::vector_indexes::{Change, VectorIndexes, VectorOp, spec_of};
use quorumdb_state::{StateTxn, try_scan};

/// The tag of SQL commands on the shared state machine.
pub const TAG: u8 = b's';

/// Apply's rejection of a command: the error's SQLSTATE and message.
impl From<&SqlError> for Rejection {
    fn from(e: &SqlError) -> Self {
        Rejection::new(e.sqlstate(), e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlCommand {
    /// The catalog version the command was planned against.
    pub catalog_version: u64,
    /// `(table id, version)` of every table whose contents the plan depended on as a whole.
    pub table_guards: Vec<(u32, u64)>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Step {
    CreateTable(TableDef),
    DropTable {
        id: u32,
    },
    /// Replaces a table's definition (ADD/DROP COLUMN).
    AlterTable(TableDef),
    /// Adds an index to a table and builds it from the rows present.
    CreateIndex {
        table: u32,
        index: IndexDef,
    },
    DropIndex {
        table: u32,
        index: u32,
    },
    Truncate {
        id: u32,
    },
    Write {
        table: u32,
        guards: Vec<RowGuard>,
        ops: Vec<RowOp>,
    },
    /// Sets a role's whole definition (`None`: drops it). Format 3 on ([`crate::auth::ROLES_FORMAT`]).
    PutRole {
        name: String,
        role: Option<crate::auth::RoleDef>,
    },
    /// Sets a view's definition (`None`: drops it). Format 4 on ([`VIEWS_FORMAT`]).
    PutView {
        name: String,
        view: Option<crate::catalog::ViewDef>,
    },
}

/// The first format version whose commands may carry views ([`Step::PutView`]).
pub const VIEWS_FORMAT: FormatVersion = 4;

impl Step {
    /// The format version a cluster must write before this step may be proposed, and what it
    /// brings (for the error), when newer than version 1.
    pub fn format_needed(&self) -> Option<(FormatVersion, &'static str)> {
        match self {
            Step::PutRole { .. } => Some((crate::auth::ROLES_FORMAT, "roles")),
            Step::PutView { .. } => Some((VIEWS_FORMAT, "views")),
            _ => None,
        }
    }
}

/// The row under `key` must still hash to `hash` (`None`: must be absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGuard {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub hash: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowOp {
    /// A new row; `key: None` gets the next hidden row id. Fails if the key exists.
    Insert {
        key: Option<serde_bytes::ByteBuf>,
        #[serde(with = "serde_bytes")]
        row: Vec<u8>,
    },
    /// Replaces the row under `key`.
    Update {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        row: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl SqlCommand {
    /// The command in `version` (see the module docs).
    pub fn encode(&self, version: FormatVersion) -> Result<Vec<u8>> {
        encode_in(version, self)
    }

    /// Decodes a command of any version; returns it with its version.
    pub fn decode(bytes: &[u8]) -> Result<(Self, FormatVersion)> {
        decode_any(bytes).map_err(|e| SqlError::Internal(format!("undecodable SQL command: {e}")))
    }
}

/// What applying a command reports: rows affected per step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlResponse {
    pub affected: Vec<u64>,
}

impl SqlResponse {
    /// The response in `version` (the version of the command it answers).
    pub fn encode(&self, version: FormatVersion) -> Result<Vec<u8>> {
        encode_in(version, self)
    }

    /// Decodes a response of any version.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_any(bytes).map(|(r, _)| r).map_err(|e| SqlError::Internal(format!("undecodable SQL response: {e}")))
    }
}

/// Version 0: positional MessagePack; later: a versioned envelope with field names.
fn encode_in<T: Serialize>(version: FormatVersion, value: &T) -> Result<Vec<u8>> {
    let bytes =
        if version == format::LEGACY { format::encode_positional(value) } else { format::encode(version, value) };
    bytes.map_err(|e| SqlError::Internal(e.to_string()))
}

fn decode_any<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, FormatVersion), FormatError> {
    let (version, body) = format::split(bytes)?;
    Ok((format::decode_named(body)?, version))
}

/// The SQL application: applies [`SqlCommand`]s to a [`StateTxn`] and keeps the node's vector
/// indexes in step (after each command commits).
#[derive(Debug)]
pub struct SqlApplication {
    vectors: Arc<VectorIndexes>,
}

impl SqlApplication {
    pub fn new(vectors: Arc<VectorIndexes>) -> Self {
        Self { vectors }
    }

    pub fn vectors(&self) -> &Arc<VectorIndexes> {
        &self.vectors
    }
}

impl Application for SqlApplication {
    /// Applies one encoded command. An I/O error reading the state stops apply (it would not
    /// happen on the other replicas); every other error is a deterministic rejection.
    fn apply(&self, bytes: &[u8], txn: &mut dyn StateTxn) -> std::io::Result<Applied> {
        let (cmd, version) = match SqlCommand::decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                let version = format::split(bytes).map_or(format::LEGACY, |(v, _)| v);
                return Ok(Err(Rejection::from(&e).encode(version)));
            }
        };
        let mut vops = Vec::new();
        match apply_command(&cmd, version, txn, &mut vops) {
            Ok(resp) => {
                if !vops.is_empty() {
                    let vectors = self.vectors.clone();
                    txn.on_commit(Box::new(move || vectors.apply(vops)));
                }
                Ok(resp.encode(version).map_err(|e| Rejection::from(&e).encode(version)))
            }
            Err(SqlError::Io(e)) => Err(e),
            Err(e) => Ok(Err(Rejection::from(&e).encode(version))),
        }
    }

    fn opened(&self, state: &SharedState) -> std::io::Result<()> {
        self.vectors.open(state).map_err(std::io::Error::other)
    }

    fn snapshot_files(&self, dest: &std::path::Path) -> std::io::Result<()> {
        self.vectors.export_dumps(dest)
    }

    fn state_replaced(&self, state: &SharedState, files: Option<&std::path::Path>) {
        if let Err(e) = self.vectors.reset(state, files) {
            tracing::error!(error = %e, "could not reload vector indexes after installing a snapshot");
        }
    }
}

fn load_catalog(txn: &dyn StateTxn) -> Result<Catalog> {
    // (the catalog's own decoder reads every version)
    match txn.get(codec::CATALOG_KEY)? {
        Some(b) => Catalog::decode(&b),
        None => Ok(Catalog::default()),
    }
}

pub fn table_version(get: impl Fn(&[u8]) -> std::io::Result<Option<Vec<u8>>>, table: u32) -> Result<u64> {
    Ok(match get(&codec::table_version_key(table))? {
        Some(b) => {
            u64::from_be_bytes(b.as_slice().try_into().map_err(|_| SqlError::Storage("bad table version".into()))?)
        }
        None => 0,
    })
}

fn conflict(what: String) -> SqlError {
    SqlError::SerializationFailure(what)
}

fn apply_command(
    cmd: &SqlCommand,
    version: FormatVersion,
    txn: &mut dyn StateTxn,
    vops: &mut Vec<VectorOp>,
) -> Result<SqlResponse> {
    let mut catalog = load_catalog(txn)?;
    if catalog.version != cmd.catalog_version {
        return Err(conflict("the catalog changed since the statement was planned".into()));
    }
    for &(table, version) in &cmd.table_guards {
        if table_version(|k| txn.get(k), table)? != version {
            return Err(conflict(format!("table {table} changed since the statement read it")));
        }
    }
    let index = txn.log_index();
    let mut ddl = false;
    let mut written = BTreeSet::new();
    let mut resp = SqlResponse::default();
    for step in &cmd.steps {
        let mut affected = 0;
        match step {
            Step::CreateTable(def) => {
                if catalog.tables.contains_key(&def.name) || catalog.views.contains_key(&def.name) {
                    return Err(SqlError::TableExists(def.name.clone()));
                }
                catalog.next_table_id = catalog.next_table_id.max(def.id + 1);
                catalog.tables.insert(def.name.clone(), def.clone());
                ddl = true;
            }
            Step::DropTable { id } => {
                let def = table_by_id(&catalog, *id)?;
                let name = def.name.clone();
                for ix in def.indexes.iter().filter(|ix| !ix.is_btree()) {
                    vops.push(VectorOp::Drop { table: *id, index: ix.id });
                }
                catalog.tables.remove(&name);
                for role in catalog.roles.values_mut() {
                    role.grants.remove(id);
                }
                let (start, end) = codec::table_range(*id);
                txn.delete_range(&start, &end);
                ddl = true;
            }
            Step::AlterTable(def) => {
                table_by_id(&catalog, def.id)?;
                catalog.tables.insert(def.name.clone(), def.clone());
                ddl = true;
            }
            Step::CreateIndex { table, index } => {
                let mut def = table_by_id(&catalog, *table)?.clone();
                match spec_of(&def, index) {
                    Some(spec) => {
                        let points = build_vector_index(&def, index, txn)?;
                        let generation = txn.log_index();
                        vops.push(VectorOp::Create { table: *table, index: index.id, spec, generation, points });
                    }
                    None => build_index(&def, index, txn)?,
                }
                def.next_index_id = def.next_index_id.max(index.id + 1);
                def.indexes.push(index.clone());
                catalog.tables.insert(def.name.clone(), def);
                ddl = true;
            }
            Step::DropIndex { table, index } => {
                let mut def = table_by_id(&catalog, *table)?.clone();
                if def.indexes.iter().any(|i| i.id == *index && !i.is_btree()) {
                    vops.push(VectorOp::Drop { table: *table, index: *index });
                }
                def.indexes.retain(|i| i.id != *index);
                let start = codec::index_prefix(*table, *index);
                txn.delete_range(&start, &codec::prefix_end(&start));
                catalog.tables.insert(def.name.clone(), def);
                ddl = true;
            }
            Step::PutRole { name, role } => {
                match role {
                    Some(r) => {
                        catalog.roles.insert(name.clone(), r.clone());
                    }
                    None => {
                        if catalog.roles.remove(name).is_none() {
                            return Err(SqlError::InvalidRole(format!("role \"{name}\" does not exist")));
                        }
                    }
                }
                ddl = true;
            }
            Step::PutView { name, view } => {
                match view {
                    Some(v) if !catalog.tables.contains_key(name) => {
                        catalog.views.insert(name.clone(), v.clone());
                    }
                    Some(_) => return Err(SqlError::TableExists(name.clone())),
                    None => {
                        if catalog.views.remove(name).is_none() {
                            return Err(SqlError::UnknownTable(format!("view {name}")));
                        }
                    }
                }
                ddl = true;
            }
            Step::Truncate { id } => {
                let def = table_by_id(&catalog, *id)?;
                for p in [codec::rows_prefix(*id), codec::indexes_prefix(*id)] {
                    txn.delete_range(&p, &codec::prefix_end(&p));
                }
                for ix in &def.indexes {
                    if let Some(spec) = spec_of(def, ix) {
                        let generation = txn.log_index();
                        txn.put(&codec::vector_generation_key(*id, ix.id), &generation.to_be_bytes());
                        vops.push(VectorOp::Create { table: *id, index: ix.id, spec, generation, points: Vec::new() });
                    }
                }
                written.insert(*id);
            }
            Step::Write { table, guards, ops } => {
                let def = table_by_id(&catalog, *table)?;
                for g in guards {
                    let current = txn.get(&codec::row_key(*table, &g.key))?;
                    if current.as_deref().map(codec::row_hash) != g.hash {
                        return Err(conflict(format!("a row of {} changed since the statement read it", def.name)));
                    }
                }
                affected = apply_writes(def, ops, txn, vops)?;
                written.insert(*table);
            }
        }
        resp.affected.push(affected);
    }
    for table in written {
        if catalog.by_id(table).is_some() {
            txn.put(&codec::table_version_key(table), &index.to_be_bytes());
        }
    }
    if ddl {
        catalog.version = index;
        txn.put(codec::CATALOG_KEY, &catalog.encode(version)?);
    }
    Ok(resp)
}

fn table_by_id(catalog: &Catalog, id: u32) -> Result<&TableDef> {
    catalog.by_id(id).ok_or_else(|| SqlError::UnknownTable(format!("table id {id}")))
}

fn unique_violation(index: &IndexDef) -> SqlError {
    SqlError::UniqueViolation(format!("duplicate key value violates unique constraint \"{}\"", index.name))
}

/// Applies one statement's row operations: first every removal (deleted rows and the old
/// index entries of updated rows), then every addition, so that uniqueness is checked on the
/// statement's result rather than row by row.
fn apply_writes(def: &TableDef, ops: &[RowOp], txn: &mut dyn StateTxn, vops: &mut Vec<VectorOp>) -> Result<u64> {
    let rows = RowDecoder::new(def);
    let mut changes: BTreeMap<u32, Vec<Change>> = BTreeMap::new();
    let mut additions: Vec<(Vec<u8>, &[u8])> = Vec::new();
    for op in ops {
        let (RowOp::Delete { key } | RowOp::Update { key, .. }) = op else { continue };
        let rk = codec::row_key(def.id, key);
        let Some(old) = txn.get(&rk)? else {
            return Err(conflict(format!("a row of {} disappeared", def.name)));
        };
        let old = rows.decode(&old)?;
        for ix in &def.indexes {
            if !ix.is_btree() {
                let pk = codec::vector_row_key(def.id, ix.id, key);
                if let Some(b) = txn.get(&pk)? {
                    let point = codec::decode_u64(&b)?;
                    txn.delete(&pk);
                    txn.delete(&codec::vector_point_key(def.id, ix.id, point));
                    changes.entry(ix.id).or_default().push(Change::Delete(point));
                }
                continue;
            }
            let (k, _) = def.index_entry(ix, &old, key)?;
            txn.delete(&k);
        }
        match op {
            RowOp::Update { row, .. } => additions.push((key.clone(), row)),
            _ => txn.delete(&rk),
        }
    }
    for op in ops {
        let RowOp::Insert { key, row } = op else { continue };
        let key = match key {
            Some(k) => k.to_vec(),
            None => next_row_id(def, txn)?,
        };
        if txn.get(&codec::row_key(def.id, &key))?.is_some() {
            return Err(SqlError::UniqueViolation(format!(
                "duplicate key value violates unique constraint \"{}\"",
                def.pkey_name()
            )));
        }
        additions.push((key, row));
    }
    let mut seen = BTreeMap::new();
    for (key, row) in &additions {
        if seen.insert(key.clone(), ()).is_some() {
            return Err(SqlError::UniqueViolation(format!(
                "duplicate key value violates unique constraint \"{}\"",
                def.pkey_name()
            )));
        }
        let values = rows.decode(row)?;
        for (i, c) in def.columns.iter().enumerate() {
            if !c.nullable && !c.dropped && values[i].is_null() {
                return Err(SqlError::NotNullViolation { table: def.name.clone(), column: c.name.clone() });
            }
        }
        for ix in &def.indexes {
            if !ix.is_btree() {
                if let Value::Vector(v) = &values[ix.columns[0]] {
                    let point = add_vector_point(def.id, ix.id, key, txn)?;
                    changes.entry(ix.id).or_default().push(Change::Insert(point, v.clone()));
                }
                continue;
            }
            let (k, v) = def.index_entry(ix, &values, key)?;
            if !v.is_empty() && txn.get(&k)?.is_some_and(|owner| owner != *key) {
                return Err(unique_violation(ix));
            }
            txn.put(&k, &v);
        }
        txn.put(&codec::row_key(def.id, key), row);
    }
    for (index, changes) in changes {
        vops.push(VectorOp::Changes { table: def.id, index, changes });
    }
    Ok(ops.len() as u64)
}

/// Gives a row version a new point id in an HNSW index and records the mapping both ways.
fn add_vector_point(table: u32, index: u32, row_key: &[u8], txn: &mut dyn StateTxn) -> Result<u64> {
    let nk = codec::vector_next_key(table, index);
    let point = match txn.get(&nk)? {
        Some(b) => codec::decode_u64(&b)?,
        None => 0,
    };
    txn.put(&nk, &(point + 1).to_be_bytes());
    txn.put(&codec::vector_point_key(table, index, point), row_key);
    txn.put(&codec::vector_row_key(table, index, row_key), &point.to_be_bytes());
    Ok(point)
}

/// Registers every existing row with a vector in a new HNSW index (points in key order) and
/// returns the points for the graph build.
fn build_vector_index(def: &TableDef, index: &IndexDef, txn: &mut dyn StateTxn) -> Result<Vec<(u64, Vec<f32>)>> {
    let prefix = codec::rows_prefix(def.id);
    let rows = RowDecoder::new(def);
    let column = index.columns[0];
    let mut found = Vec::new();
    try_scan(
        |f| txn.scan(&prefix, &codec::prefix_end(&prefix), f),
        |k, v| -> Result<bool> {
            let mut row = rows.decode(v)?;
            if let Value::Vector(vec) = std::mem::replace(&mut row[column], Value::Null) {
                found.push((k[prefix.len()..].to_vec(), vec));
            }
            Ok(true)
        },
    )?;
    txn.put(&codec::vector_generation_key(def.id, index.id), &txn.log_index().to_be_bytes());
    let mut points = Vec::with_capacity(found.len());
    for (key, vec) in found {
        let point = add_vector_point(def.id, index.id, &key, txn)?;
        points.push((point, vec));
    }
    Ok(points)
}

fn next_row_id(def: &TableDef, txn: &mut dyn StateTxn) -> Result<Vec<u8>> {
    let k = codec::row_id_key(def.id);
    let last = match txn.get(&k)? {
        Some(b) => i64::from_be_bytes(b.as_slice().try_into().map_err(|_| SqlError::Storage("bad row id".into()))?),
        None => 0,
    };
    let next = last + 1;
    txn.put(&k, &next.to_be_bytes());
    codec::encode_key(&[&Value::Int(next)], &[&crate::types::ColumnType::Int64])
}

fn build_index(def: &TableDef, index: &IndexDef, txn: &mut dyn StateTxn) -> Result<()> {
    let prefix = codec::rows_prefix(def.id);
    let mut entries = Vec::new();
    let rows = RowDecoder::new(def);
    try_scan(
        |f| txn.scan(&prefix, &codec::prefix_end(&prefix), f),
        |k, v| -> Result<bool> {
            entries.push(def.index_entry(index, &rows.decode(v)?, &k[prefix.len()..])?);
            Ok(true)
        },
    )?;
    let mut seen = BTreeSet::new();
    for (k, v) in entries {
        if !v.is_empty() && !seen.insert(k.clone()) {
            return Err(SqlError::UniqueViolation(format!(
                "could not create unique index \"{}\": key is duplicated",
                index.name
            )));
        }
        txn.put(&k, &v);
    }
    Ok(())
}
