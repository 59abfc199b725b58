//! The catalog: table, column and index definitions, stored under one key of the replicated
//! state and changed only by DDL commands. Its version is the log index of the last DDL, so a
//! command planned against an older catalog is detected at apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use quorumdb_vector::Metric;

use crate::auth::{ADMIN, Need, Privilege, READONLY, READWRITE, Verifier};

use crate::codec;
use crate::error::{Result, SqlError};
use crate::types::{ColumnType, Value};
use quorumdb_state::AppliedState;
use quorumdb_state::format::{self, FormatVersion};

/// The name of the hidden row key column DML planning reads (raw key bytes).
pub const KEY_COLUMN: &str = "__qdb_key";
/// The name of the hidden row hash column DML planning reads.
pub const HASH_COLUMN: &str = "__qdb_hash";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text, evaluated when a row is planned.
    pub default: Option<String>,
    /// The value rows written before this column existed read as.
    pub added_default: Value,
    /// Dropped columns keep their slot so older rows still decode; they are invisible.
    pub dropped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub id: u32,
    pub name: String,
    /// Physical column positions.
    pub columns: Vec<usize>,
    pub unique: bool,
    #[serde(default)]
    pub kind: IndexKind,
}

/// How an index is organised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexKind {
    /// Ordered entries in the key-value state.
    #[default]
    BTree,
    /// An HNSW graph over one VECTOR column, in memory beside the state.
    Hnsw { metric: Metric, m: usize, ef_construction: usize },
}

impl IndexDef {
    pub fn is_btree(&self) -> bool {
        self.kind == IndexKind::BTree
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u32,
    pub name: String,
    /// Physical columns, including dropped ones.
    pub columns: Vec<ColumnDef>,
    /// Physical positions of the primary key columns; empty: a hidden row id is the key.
    pub primary_key: Vec<usize>,
    pub indexes: Vec<IndexDef>,
    pub next_index_id: u32,
}

impl TableDef {
    /// Positions of the visible columns, in order.
    pub fn visible(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns.iter().enumerate().filter(|(_, c)| !c.dropped).map(|(i, _)| i)
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| !c.dropped && c.name == name)
    }

    pub fn column_or_err(&self, name: &str) -> Result<usize> {
        self.column(name).ok_or_else(|| SqlError::UnknownColumn(format!("{name} of relation {}", self.name)))
    }

    pub fn types(&self) -> Vec<ColumnType> {
        self.columns.iter().map(|c| c.ty.clone()).collect()
    }

    pub fn added_defaults(&self) -> Vec<Value> {
        self.columns.iter().map(|c| c.added_default.clone()).collect()
    }

    /// The Arrow schema of the visible columns (plus the hidden key and hash when `hidden`).
    pub fn schema(&self, hidden: bool) -> SchemaRef {
        let mut fields: Vec<Field> =
            self.visible().map(|i| Field::new(&self.columns[i].name, self.columns[i].ty.arrow(), true)).collect();
        if hidden {
            fields.push(Field::new(KEY_COLUMN, DataType::Binary, false));
            fields.push(Field::new(HASH_COLUMN, DataType::UInt64, false));
        }
        Arc::new(Schema::new(fields))
    }

    /// The encoded primary key of a full physical row (`None` for hidden row id tables).
    pub fn key_of(&self, row: &[Value]) -> Result<Option<Vec<u8>>> {
        if self.primary_key.is_empty() {
            return Ok(None);
        }
        let values: Vec<&Value> = self.primary_key.iter().map(|&i| &row[i]).collect();
        let types: Vec<&ColumnType> = self.primary_key.iter().map(|&i| &self.columns[i].ty).collect();
        codec::encode_key(&values, &types).map(Some)
    }

    /// The index entry (key, value) for a row stored under `row_key`.
    pub fn index_entry(&self, index: &IndexDef, row: &[Value], row_key: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut k = self.index_values_key(index, row)?;
        if index.unique && !index.columns.iter().any(|&c| row[c].is_null()) {
            Ok((k, row_key.to_vec()))
        } else {
            k.extend_from_slice(row_key);
            Ok((k, Vec::new()))
        }
    }

    /// The entry key `row` has in unique index `index`, whose value names the row holding
    /// those values; `None` where a value is NULL (NULLs never conflict).
    pub fn unique_entry_key(&self, index: &IndexDef, row: &[Value]) -> Result<Option<Vec<u8>>> {
        if index.columns.iter().any(|&c| row[c].is_null()) {
            return Ok(None);
        }
        self.index_values_key(index, row).map(Some)
    }

    /// The index's prefix followed by the row's values of its columns.
    fn index_values_key(&self, index: &IndexDef, row: &[Value]) -> Result<Vec<u8>> {
        let mut k = codec::index_prefix(self.id, index.id);
        for &c in &index.columns {
            codec::encode_key_value(&mut k, &row[c], &self.columns[c].ty)?;
        }
        Ok(k)
    }

    pub fn pkey_name(&self) -> String {
        format!("{}_pkey", self.name)
    }
}

/// Decodes stored rows of one table, with its column types and added-column defaults
/// computed once (not per row).
#[derive(Debug, Clone)]
pub struct RowDecoder {
    types: Vec<ColumnType>,
    defaults: Vec<Value>,
}

impl RowDecoder {
    pub fn new(def: &TableDef) -> Self {
        Self { types: def.types(), defaults: def.added_defaults() }
    }

    /// The full physical row (dropped columns included).
    pub fn decode(&self, bytes: &[u8]) -> Result<Vec<Value>> {
        codec::decode_row(bytes, &self.types, &self.defaults)
    }
}

/// All tables, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The log index of the last DDL command (0: none yet).
    pub version: u64,
    pub next_table_id: u32,
    pub tables: BTreeMap<String, TableDef>,
    /// Roles, by name (format 3 on; [`crate::auth`]). Absent in older catalogs: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, crate::auth::RoleDef>,
    /// Views, by name (format 4 on). Absent in older catalogs: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub views: BTreeMap<String, ViewDef>,
}

/// A view: a stored query, planned again each time it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// The `SELECT`, as the parser prints it.
    pub query: String,
    /// The column names given with `CREATE VIEW v (a, b)` (empty: the query's own).
    pub columns: Vec<String>,
    /// The tables and views the query names: reading the view needs `SELECT` on each.
    pub reads: Vec<String>,
}

/// How deeply views may be defined on views (reading, authorising and guarding them recurses).
pub const MAX_VIEW_DEPTH: usize = 16;

impl Catalog {
    pub fn load(read: &dyn AppliedState) -> Result<Self> {
        match read.get(codec::CATALOG_KEY)? {
            Some(bytes) => Self::decode(&bytes),
            None => Ok(Self::default()),
        }
    }

    /// Decodes a catalog of any format version: version 0 is MessagePack with field names,
    /// later ones the same inside a versioned envelope ([`quorumdb_state::format`]).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |e: format::FormatError| SqlError::Storage(format!("corrupt catalog: {e}"));
        let (_, body) = format::split(bytes).map_err(corrupt)?;
        format::decode_named(body).map_err(corrupt)
    }

    /// The catalog in `version` (apply writes it in the version of the command that changed it).
    pub fn encode(&self, version: FormatVersion) -> Result<Vec<u8>> {
        let bytes = if version == format::LEGACY { format::encode_named(self) } else { format::encode(version, self) };
        bytes.map_err(|e| SqlError::Internal(format!("cannot encode the catalog: {e}")))
    }

    pub fn table(&self, name: &str) -> Result<&TableDef> {
        self.tables.get(name).ok_or_else(|| SqlError::UnknownTable(name.to_string()))
    }

    pub fn by_id(&self, id: u32) -> Option<&TableDef> {
        self.tables.values().find(|t| t.id == id)
    }

    /// Finds the table owning index `name`.
    pub fn index_owner(&self, name: &str) -> Option<(&TableDef, &IndexDef)> {
        self.tables.values().find_map(|t| t.indexes.iter().find(|i| i.name == name).map(|i| (t, i)))
    }
}

/// Roles: who may log in, and what they may do ([`crate::auth`]).
impl Catalog {
    /// Whether clients must log in: some role can log in with a password.
    pub fn auth_required(&self) -> bool {
        self.roles.values().any(|r| r.login && r.verifier.is_some())
    }

    /// The verifier of `user` if it may log in.
    pub fn login_verifier(&self, user: &str) -> Option<&Verifier> {
        self.roles.get(user).filter(|r| r.login).and_then(|r| r.verifier.as_ref())
    }

    /// Whether `user` is, or is a member of, the built-in role `builtin`.
    fn is(&self, user: &str, builtin: &str) -> bool {
        user == builtin || self.roles.get(user).is_some_and(|r| r.member_of.contains(builtin))
    }

    /// Whether `user` may read everything view `name` reads (the invoker's rights: a view never
    /// shows a role what it could not select itself).
    fn may_read_view(&self, user: &str, name: &str, depth: usize) -> bool {
        let Some(view) = self.views.get(name) else { return false };
        depth < MAX_VIEW_DEPTH
            && view.reads.iter().all(|r| match self.views.contains_key(r) {
                true => self.may_read_view(user, r, depth + 1),
                false => self.granted(user, r, Privilege::Select),
            })
    }

    /// Whether `user` was granted `p` on `table`; an unknown table is the planner's error to
    /// report (42P01), so it passes here.
    fn granted(&self, user: &str, table: &str, p: Privilege) -> bool {
        self.tables.get(table).is_none_or(|def| {
            self.roles.get(user).and_then(|r| r.grants.get(&def.id)).is_some_and(|bits| bits & p.bit() != 0)
        })
    }

    /// Whether `user` may do everything in `needs`; the error names the first thing it may not.
    pub fn authorize(&self, user: &str, needs: &[Need]) -> Result<()> {
        if self.is(user, ADMIN) {
            return Ok(());
        }
        for need in needs {
            let ok = match need {
                Need::Admin => false,
                Need::Ddl => self.is(user, READWRITE),
                Need::AnyTable(p) => self.is(user, READWRITE) || (*p == Privilege::Select && self.is(user, READONLY)),
                Need::Table(view, Privilege::Select) if self.views.contains_key(view) => {
                    self.is(user, READWRITE) || self.is(user, READONLY) || self.may_read_view(user, view, 0)
                }
                Need::Table(table, p) => {
                    self.is(user, READWRITE)
                        || (*p == Privilege::Select && self.is(user, READONLY))
                        || self.granted(user, table, *p)
                }
            };
            if !ok {
                return Err(SqlError::InsufficientPrivilege(match need {
                    Need::Admin => format!("role \"{user}\" is not a member of {ADMIN}"),
                    Need::Ddl => format!("role \"{user}\" may not create, alter or drop tables (needs {READWRITE})"),
                    Need::Table(t, p) => format!("role \"{user}\" lacks {} on table {t}", p.name()),
                    Need::AnyTable(p) => format!("role \"{user}\" lacks {} on every table", p.name()),
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ADMIN, READONLY, READWRITE, RoleDef, Verifier};

    #[test]
    fn built_in_roles_and_grants_decide() {
        let mut c = Catalog::default();
        c.tables.insert(
            "a".into(),
            TableDef {
                id: 7,
                name: "a".into(),
                columns: vec![],
                primary_key: vec![],
                indexes: vec![],
                next_index_id: 0,
            },
        );
        let role = |member: &[&str], grants: &[(u32, u8)]| RoleDef {
            login: true,
            verifier: None,
            member_of: member.iter().map(|s| s.to_string()).collect(),
            grants: grants.iter().copied().collect(),
        };
        c.roles.insert("ro".into(), role(&[READONLY], &[]));
        c.roles.insert("rw".into(), role(&[READWRITE], &[]));
        c.roles.insert("ins".into(), role(&[], &[(7, Privilege::Insert.bit())]));
        c.roles.insert("boss".into(), role(&[ADMIN], &[]));
        let read = [Need::Table("a".into(), Privilege::Select)];
        let insert = [Need::Table("a".into(), Privilege::Insert)];
        assert!(c.authorize("ro", &read).is_ok());
        assert_eq!(c.authorize("ro", &insert).unwrap_err().sqlstate(), "42501");
        assert!(c.authorize("rw", &insert).is_ok());
        assert!(c.authorize("rw", &[Need::Ddl]).is_ok());
        assert!(c.authorize("rw", &[Need::Admin]).is_err());
        assert!(c.authorize("ins", &insert).is_ok());
        assert!(c.authorize("ins", &read).is_err());
        assert!(c.authorize("ins", &[Need::Ddl]).is_err());
        assert!(c.authorize("boss", &[Need::Admin, Need::Ddl]).is_ok());
        assert!(c.authorize("admin", &[Need::Admin]).is_ok());
        assert!(c.authorize("nobody", &read).is_err());
        assert!(!c.auth_required());
        c.roles.get_mut("boss").unwrap().verifier = Some(Verifier::with_salt("x", vec![1; 16], 16));
        assert!(c.auth_required());
        assert!(c.login_verifier("boss").is_some() && c.login_verifier("ro").is_none());
    }

    #[test]
    fn a_view_needs_select_on_everything_it_reads() {
        let mut c = Catalog::default();
        for (id, name) in [(1, "a"), (2, "b")] {
            let def = TableDef {
                id,
                name: name.into(),
                columns: vec![],
                primary_key: vec![],
                indexes: vec![],
                next_index_id: 0,
            };
            c.tables.insert(name.into(), def);
        }
        let view = |reads: &[&str]| ViewDef {
            query: String::new(),
            columns: vec![],
            reads: reads.iter().map(|r| r.to_string()).collect(),
        };
        c.views.insert("va".into(), view(&["a"]));
        c.views.insert("vab".into(), view(&["va", "b"]));
        let grants = |g: &[(u32, u8)]| RoleDef {
            login: true,
            verifier: None,
            member_of: Default::default(),
            grants: g.iter().copied().collect(),
        };
        c.roles.insert("reads_a".into(), grants(&[(1, Privilege::Select.bit())]));
        c.roles.insert("inserts_a".into(), grants(&[(1, Privilege::Insert.bit())]));
        c.roles.insert("ro".into(), RoleDef { member_of: [READONLY.to_string()].into(), ..grants(&[]) });
        let read = |v: &str| [Need::Table(v.into(), Privilege::Select)];
        assert!(c.authorize("reads_a", &read("va")).is_ok());
        assert_eq!(c.authorize("reads_a", &read("vab")).unwrap_err().sqlstate(), "42501");
        assert!(c.authorize("inserts_a", &read("va")).is_err());
        assert!(c.authorize("nobody", &read("va")).is_err());
        assert!(c.authorize("ro", &read("vab")).is_ok());
    }
}
