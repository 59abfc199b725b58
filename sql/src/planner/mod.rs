//! Planning: turns each parsed statement into resolved [`Step`]s of one [`SqlCommand`], and
//! answers the statements that only read.
//!
//! A [`Planner`] is one atomic batch (one HTTP request, or one transaction). It keeps a
//! working copy of the catalog and the batch's pending row writes, so later statements see
//! earlier ones. Statements that read the state to decide what to write (UPDATE, DELETE,
//! INSERT … SELECT, ON CONFLICT) run their read through DataFusion and record *guards*: the
//! version of every table read as a whole, or — for primary-key point statements — the hash of
//! each row read. Apply rejects the command if a guard no longer holds (SQLSTATE 40001), and
//! the engine plans the batch again: optimistic concurrency that keeps every replica
//! deterministic and every committed batch serializable.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, AssignmentTarget, ColumnOption, ConflictTarget, Expr, FromTable, Ident, ObjectName,
    ObjectType, OnConflictAction, OnInsert, SelectItem, SetExpr, Statement, TableConstraint, TableFactor, TableObject,
    visit_relations,
};

use crate::catalog::{Catalog, ColumnDef, HASH_COLUMN, IndexDef, IndexKind, KEY_COLUMN, RowDecoder, TableDef};
use crate::codec;
use crate::command::{RowGuard, RowOp, SqlCommand, Step, table_version};
use crate::error::{Result, SqlError};
use crate::provider::{CatalogSource, Catalogs, Pending, StateView};
use crate::store::SharedRead;
use crate::types::{ColumnType, Value, build_array};
use crate::values::{coerce_array, coerce_texts, literal_text};
use quorumdb_vector::{IndexSpec, Metric};

/// What one statement produced.
#[derive(Debug, Clone)]
pub enum StatementResult {
    Rows { schema: SchemaRef, batches: Vec<RecordBatch>, tag: String },
    Done { tag: String, rows_affected: u64 },
}

impl StatementResult {
    pub fn done(tag: &str) -> Self {
        Self::Done { tag: tag.to_string(), rows_affected: 0 }
    }
}

/// A normalized identifier: unquoted names fold to lower case, as in PostgreSQL.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// The table name of an object name (`schema.table` accepted for `public`).
pub fn object_name(n: &ObjectName) -> Result<String> {
    let parts: Vec<&Ident> = n.0.iter().filter_map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [t] => Ok(ident(t)),
        [s, t] if ident(s) == "public" => Ok(ident(t)),
        _ => Err(SqlError::Unsupported(format!("relation name {n}: only tables in schema public"))),
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Builds DataFusion session states over a catalog and a state view.
pub fn session(base: &SessionState, catalog: CatalogSource, view: StateView, hidden: bool) -> SessionContext {
    let list = Arc::new(Catalogs::new(catalog, view, hidden));
    let ctx = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(base.clone()).with_catalog_list(list).build(),
    );
    // Registered last: the builder re-registers functions in hash order, and a built-in alias
    // (DataFusion's `inner_product` for arrays) would otherwise win half of the time.
    for f in crate::knn::functions() {
        ctx.register_udf(f);
    }
    ctx
}

/// Runs one query statement through DataFusion.
pub async fn run_query(ctx: &SessionContext, stmt: Statement) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = ctx.state().statement_to_plan(DfStatement::Statement(Box::new(stmt))).await?;
    let df = ctx.execute_logical_plan(plan).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok((schema, batches))
}

fn parse_one(sql: &str) -> Result<Statement> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut v = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)?;
    v.pop().ok_or_else(|| SqlError::Internal("empty internal statement".into()))
}

/// An inserted row whose key exists (ON CONFLICT): the key, the stored bytes and row, and the
/// row the INSERT proposed (`excluded`).
struct Conflict {
    key: Vec<u8>,
    old_bytes: Vec<u8>,
    old_row: Vec<Value>,
    proposed: Vec<Value>,
}

pub struct Planner<'a> {
    base: &'a SessionState,
    /// Long-lived sessions over the live catalog and applied state (plain, hidden columns),
    /// used while the batch has neither pending writes nor DDL: no per-statement setup.
    live: Option<(&'a SessionContext, &'a SessionContext)>,
    read: SharedRead,
    catalog: Arc<Catalog>,
    catalog_version: u64,
    pending: Pending,
    table_guards: BTreeMap<u32, u64>,
    steps: Vec<Step>,
}

impl<'a> Planner<'a> {
    pub fn new(
        base: &'a SessionState,
        live: Option<(&'a SessionContext, &'a SessionContext)>,
        read: SharedRead,
        catalog: Arc<Catalog>,
    ) -> Self {
        let catalog_version = catalog.version;
        Self {
            base,
            live,
            read,
            catalog,
            catalog_version,
            pending: Pending::new(),
            table_guards: BTreeMap::new(),
            steps: Vec::new(),
        }
    }

    /// The command to propose (`None` when the batch wrote nothing).
    pub fn finish(self) -> Option<SqlCommand> {
        if self.steps.is_empty() {
            return None;
        }
        Some(SqlCommand {
            catalog_version: self.catalog_version,
            table_guards: self.table_guards.into_iter().collect(),
            steps: self.steps,
        })
    }

    fn view(&self) -> StateView {
        StateView { base: self.read.clone(), pending: Arc::new(self.pending.clone()) }
    }

    fn ctx(&self, hidden: bool) -> SessionContext {
        if let Some((plain, with_hidden)) = self.live
            && self.pending.is_empty()
            && self.steps.is_empty()
        {
            return if hidden { with_hidden.clone() } else { plain.clone() };
        }
        session(self.base, CatalogSource::Fixed(self.catalog.clone()), self.view(), hidden)
    }

    fn guard_table(&mut self, id: u32) -> Result<()> {
        if !self.table_guards.contains_key(&id)
            && !self.steps.iter().any(|s| matches!(s, Step::CreateTable(d) if d.id == id))
        {
            let v = table_version(|k| self.read.get(k), id)?;
            self.table_guards.insert(id, v);
        }
        Ok(())
    }

    /// Guards every table `stmt` reads (except `skip`).
    fn guard_relations(&mut self, stmt: &Statement, skip: Option<&str>) -> Result<usize> {
        let mut names = Vec::new();
        let _ = visit_relations(stmt, |n| {
            names.push(n.clone());
            ControlFlow::<()>::Continue(())
        });
        let mut skipped = 0;
        for n in names {
            let Ok(name) = object_name(&n) else { continue };
            if Some(name.as_str()) == skip {
                skipped += 1;
                continue;
            }
            if let Some(id) = self.catalog.tables.get(&name).map(|t| t.id) {
                self.guard_table(id)?;
            }
        }
        Ok(skipped)
    }

    /// Plans one statement; reads are answered now, writes become steps.
    pub async fn plan(&mut self, stmt: Statement) -> Result<StatementResult> {
        match stmt {
            Statement::CreateTable(ct) => self.create_table(ct).await,
            Statement::Drop { object_type: ObjectType::Table, if_exists, names, .. } => {
                self.drop_tables(&names, if_exists)
            }
            Statement::Drop { object_type: ObjectType::Index, if_exists, names, .. } => {
                self.drop_indexes(&names, if_exists)
            }
            Statement::CreateIndex(ci) => self.create_index(ci),
            Statement::AlterTable(at) => self.alter_table(at).await,
            Statement::Truncate(t) => {
                for target in &t.table_names {
                    let def = self.catalog.table(&object_name(&target.name)?)?.clone();
                    self.pending_clear(def.id);
                    self.steps.push(Step::Truncate { id: def.id });
                }
                Ok(StatementResult::done("TRUNCATE TABLE"))
            }
            Statement::Insert(ins) => self.insert(ins).await,
            Statement::Update(up) => self.update(up).await,
            Statement::Delete(del) => self.delete(del).await,
            other => {
                // A read inside a write batch: guard what it reads.
                self.guard_relations(&other, None)?;
                let (schema, batches) = run_query(&self.ctx(false), other).await?;
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                Ok(StatementResult::Rows { schema, batches, tag: format!("SELECT {n}") })
            }
        }
    }

    fn pending_clear(&mut self, table: u32) {
        let (s, e) = codec::table_range(table);
        let keys: Vec<Vec<u8>> = self.pending.range(s.clone()..e.clone()).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.pending.remove(&k);
        }
        // Rows of the applied state must read as deleted too: record tombstones.
        let prefix = codec::rows_prefix(table);
        let mut doomed = Vec::new();
        let _ = self.read.scan(&prefix, &codec::prefix_end(&prefix), &mut |k, _| {
            doomed.push(k.to_vec());
            doomed.len() < 1_000_000
        });
        for k in doomed {
            self.pending.insert(k, None);
        }
    }

    fn catalog_mut(&mut self) -> &mut Catalog {
        Arc::make_mut(&mut self.catalog)
    }

    // ---- DDL ----

    async fn create_table(&mut self, ct: ast::CreateTable) -> Result<StatementResult> {
        let name = object_name(&ct.name)?;
        if ct.query.is_some() {
            return Err(SqlError::Unsupported("CREATE TABLE … AS SELECT".into()));
        }
        if self.catalog.tables.contains_key(&name) {
            if ct.if_not_exists {
                return Ok(StatementResult::done("CREATE TABLE"));
            }
            return Err(SqlError::TableExists(name));
        }
        if ct.columns.is_empty() {
            return Err(SqlError::InvalidDefinition("a table needs at least one column".into()));
        }
        let mut columns: Vec<ColumnDef> = Vec::new();
        let mut primary_key: Vec<usize> = Vec::new();
        let mut uniques: Vec<Vec<usize>> = Vec::new();
        for (i, c) in ct.columns.iter().enumerate() {
            let cname = ident(&c.name);
            if columns.iter().any(|x| x.name == cname) {
                return Err(SqlError::DuplicateColumn(cname));
            }
            let ty = ColumnType::from_sql(&c.data_type)?;
            let mut col = ColumnDef {
                name: cname,
                ty,
                nullable: true,
                default: None,
                added_default: Value::Null,
                dropped: false,
            };
            for o in &c.options {
                match &o.option {
                    ColumnOption::NotNull => col.nullable = false,
                    ColumnOption::Null => col.nullable = true,
                    ColumnOption::Default(e) => col.default = Some(e.to_string()),
                    ColumnOption::PrimaryKey(_) => {
                        if !primary_key.is_empty() {
                            return Err(SqlError::InvalidDefinition(format!(
                                "multiple primary keys for table \"{name}\" are not allowed"
                            )));
                        }
                        primary_key.push(i);
                    }
                    ColumnOption::Unique(_) => uniques.push(vec![i]),
                    other => return Err(SqlError::Unsupported(format!("column option {other}"))),
                }
            }
            columns.push(col);
        }
        let positions = |cols: &[ast::IndexColumn], columns: &[ColumnDef]| -> Result<Vec<usize>> {
            cols.iter()
                .map(|ic| {
                    let n = match &ic.column.expr {
                        Expr::Identifier(i) => ident(i),
                        other => return Err(SqlError::Unsupported(format!("key expression {other}"))),
                    };
                    columns.iter().position(|c| c.name == n).ok_or(SqlError::UnknownColumn(n))
                })
                .collect()
        };
        for tc in &ct.constraints {
            match tc {
                TableConstraint::PrimaryKey(pk) => {
                    if !primary_key.is_empty() {
                        return Err(SqlError::InvalidDefinition(format!(
                            "multiple primary keys for table \"{name}\" are not allowed"
                        )));
                    }
                    primary_key = positions(&pk.columns, &columns)?;
                }
                TableConstraint::Unique(u) => uniques.push(positions(&u.columns, &columns)?),
                other => return Err(SqlError::Unsupported(format!("table constraint {other}"))),
            }
        }
        for &k in &primary_key {
            columns[k].nullable = false;
            if !columns[k].ty.keyable() {
                return Err(SqlError::InvalidDefinition(format!("column {} cannot be part of a key", columns[k].name)));
            }
        }
        let id = self.catalog.next_table_id.max(1);
        let mut def = TableDef { id, name: name.clone(), columns, primary_key, indexes: Vec::new(), next_index_id: 1 };
        for cols in uniques {
            let names: Vec<&str> = cols.iter().map(|&c| def.columns[c].name.as_str()).collect();
            let iname = format!("{name}_{}_key", names.join("_"));
            def.indexes.push(IndexDef {
                id: def.next_index_id,
                name: iname,
                columns: cols,
                unique: true,
                kind: IndexKind::BTree,
            });
            def.next_index_id += 1;
        }
        // Defaults must evaluate now (and be of the column's type).
        for c in def.columns.clone() {
            if let Some(d) = &c.default {
                self.eval_default(d, &c).await?;
            }
        }
        let cat = self.catalog_mut();
        cat.next_table_id = id + 1;
        cat.tables.insert(name, def.clone());
        self.steps.push(Step::CreateTable(def));
        Ok(StatementResult::done("CREATE TABLE"))
    }

    fn drop_tables(&mut self, names: &[ObjectName], if_exists: bool) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            let Some(def) = self.catalog.tables.get(&name).cloned() else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownTable(name));
            };
            self.catalog_mut().tables.remove(&name);
            let (s, e) = codec::table_range(def.id);
            let keys: Vec<Vec<u8>> = self.pending.range(s..e).map(|(k, _)| k.clone()).collect();
            for k in keys {
                self.pending.remove(&k);
            }
            self.steps.push(Step::DropTable { id: def.id });
        }
        Ok(StatementResult::done("DROP TABLE"))
    }

    fn drop_indexes(&mut self, names: &[ObjectName], if_exists: bool) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            let Some((t, i)) = self.catalog.index_owner(&name).map(|(t, i)| (t.name.clone(), i.id)) else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownIndex(name));
            };
            let def = self.catalog_mut().tables.get_mut(&t).expect("owner exists");
            def.indexes.retain(|x| x.id != i);
            let table = def.id;
            self.steps.push(Step::DropIndex { table, index: i });
        }
        Ok(StatementResult::done("DROP INDEX"))
    }

    fn create_index(&mut self, ci: ast::CreateIndex) -> Result<StatementResult> {
        let table = object_name(&ci.table_name)?;
        let def = self.catalog.table(&table)?.clone();
        let method = ci.using.as_ref().map(|u| u.to_string().to_lowercase()).unwrap_or_else(|| "btree".into());
        if method != "btree" && method != "hnsw" {
            return Err(SqlError::Unsupported(format!("index method {method}")));
        }
        let mut columns = Vec::new();
        let mut opclass = None;
        for ic in &ci.columns {
            let n = match &ic.column.expr {
                Expr::Identifier(i) => ident(i),
                other => return Err(SqlError::Unsupported(format!("index on expression {other}"))),
            };
            let c = def.column_or_err(&n)?;
            let ty = &def.columns[c].ty;
            let usable = if method == "hnsw" { matches!(ty, ColumnType::Vector { .. }) } else { ty.keyable() };
            if !usable {
                return Err(SqlError::InvalidDefinition(format!(
                    "column {n} of type {} cannot be indexed with {method}",
                    ty.sql_name()
                )));
            }
            opclass = ic.operator_class.as_ref().map(|o| o.to_string());
            columns.push(c);
        }
        let kind = if method == "hnsw" {
            if columns.len() != 1 || ci.unique {
                return Err(SqlError::InvalidDefinition(
                    "an hnsw index covers exactly one vector column and is not unique".into(),
                ));
            }
            let metric = match &opclass {
                None => Metric::L2,
                Some(o) => Metric::from_opclass(o).ok_or_else(|| {
                    SqlError::UnknownIndex(format!("operator class {o} for access method hnsw (use vector_l2_ops, vector_cosine_ops or vector_ip_ops)"))
                })?,
            };
            let mut m = IndexSpec::DEFAULT_M;
            let mut ef_construction = IndexSpec::DEFAULT_EF_CONSTRUCTION;
            for w in &ci.with {
                let Expr::BinaryOp { left, op: ast::BinaryOperator::Eq, right } = w else {
                    return Err(SqlError::InvalidParameter(format!("unrecognized parameter {w}")));
                };
                let key = left.to_string().to_lowercase();
                let value: usize =
                    crate::values::literal_text(right).flatten().and_then(|t| t.parse().ok()).ok_or_else(|| {
                        SqlError::InvalidParameter(format!("{key} must be a positive integer, not {right}"))
                    })?;
                match key.as_str() {
                    "m" => m = value,
                    "ef_construction" => ef_construction = value,
                    _ => return Err(SqlError::InvalidParameter(format!("unrecognized parameter \"{key}\""))),
                }
            }
            let ColumnType::Vector { dim } = def.columns[columns[0]].ty else { unreachable!("checked above") };
            IndexSpec { dim: dim as usize, metric, m, ef_construction }.validate()?;
            IndexKind::Hnsw { metric, m, ef_construction }
        } else {
            if opclass.is_some() || !ci.with.is_empty() {
                return Err(SqlError::Unsupported("operator classes and WITH parameters on btree indexes".into()));
            }
            IndexKind::BTree
        };
        let name = match &ci.name {
            Some(n) => object_name(n)?,
            None => {
                let cols: Vec<&str> = columns.iter().map(|&c| def.columns[c].name.as_str()).collect();
                format!("{table}_{}_idx", cols.join("_"))
            }
        };
        if self.catalog.index_owner(&name).is_some() || self.catalog.tables.contains_key(&name) {
            if ci.if_not_exists {
                return Ok(StatementResult::done("CREATE INDEX"));
            }
            return Err(SqlError::TableExists(name));
        }
        let index = IndexDef { id: def.next_index_id, name, columns, unique: ci.unique, kind };
        let d = self.catalog_mut().tables.get_mut(&table).expect("table exists");
        d.next_index_id += 1;
        d.indexes.push(index.clone());
        // The build reads every row: guard the table.
        self.guard_table(def.id)?;
        self.steps.push(Step::CreateIndex { table: def.id, index });
        Ok(StatementResult::done("CREATE INDEX"))
    }

    async fn alter_table(&mut self, at: ast::AlterTable) -> Result<StatementResult> {
        let name = object_name(&at.name)?;
        let Some(mut def) = self.catalog.tables.get(&name).cloned() else {
            if at.if_exists {
                return Ok(StatementResult::done("ALTER TABLE"));
            }
            return Err(SqlError::UnknownTable(name));
        };
        for op in &at.operations {
            match op {
                AlterTableOperation::AddColumn { if_not_exists, column_def, .. } => {
                    let cname = ident(&column_def.name);
                    if def.column(&cname).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(SqlError::DuplicateColumn(cname));
                    }
                    let ty = ColumnType::from_sql(&column_def.data_type)?;
                    let mut col = ColumnDef {
                        name: cname.clone(),
                        ty,
                        nullable: true,
                        default: None,
                        added_default: Value::Null,
                        dropped: false,
                    };
                    for o in &column_def.options {
                        match &o.option {
                            ColumnOption::NotNull => col.nullable = false,
                            ColumnOption::Null => {}
                            ColumnOption::Default(e) => col.default = Some(e.to_string()),
                            other => return Err(SqlError::Unsupported(format!("ADD COLUMN with {other}"))),
                        }
                    }
                    if let Some(d) = &col.default {
                        col.added_default = self.eval_default(d, &col).await?;
                    }
                    if !col.nullable && col.added_default.is_null() {
                        self.guard_table(def.id)?;
                        let prefix = codec::rows_prefix(def.id);
                        let mut any = false;
                        self.view().scan(&prefix, &codec::prefix_end(&prefix), &mut |_, _| {
                            any = true;
                            false
                        })?;
                        if any {
                            return Err(SqlError::NotNullViolation { table: name.clone(), column: cname });
                        }
                    }
                    def.columns.push(col);
                }
                AlterTableOperation::DropColumn { column_names, if_exists, .. } => {
                    for cn in column_names {
                        let cname = ident(cn);
                        let Some(c) = def.column(&cname) else {
                            if *if_exists {
                                continue;
                            }
                            return Err(SqlError::UnknownColumn(cname));
                        };
                        if def.primary_key.contains(&c) {
                            return Err(SqlError::InvalidDefinition(format!(
                                "cannot drop column {cname}: it is part of the primary key"
                            )));
                        }
                        if def.visible().count() == 1 {
                            return Err(SqlError::InvalidDefinition("cannot drop the last column of a table".into()));
                        }
                        for ix in def.indexes.iter().filter(|ix| ix.columns.contains(&c)) {
                            self.steps.push(Step::DropIndex { table: def.id, index: ix.id });
                        }
                        def.indexes.retain(|ix| !ix.columns.contains(&c));
                        def.columns[c].dropped = true;
                        def.columns[c].nullable = true;
                    }
                }
                other => return Err(SqlError::Unsupported(format!("ALTER TABLE {other}"))),
            }
        }
        self.catalog_mut().tables.insert(name, def.clone());
        self.steps.push(Step::AlterTable(def));
        Ok(StatementResult::done("ALTER TABLE"))
    }

    /// Evaluates a DEFAULT expression to a value of the column's type.
    fn eval_default_sync(&self, sql: &str, col: &ColumnDef) -> Option<Result<Value>> {
        let e = parse_expr(sql).ok()?;
        let text = literal_text(&e)?;
        Some(coerce_texts(&[text], &col.ty, &col.name).map(|mut v| v.remove(0)))
    }

    async fn eval_default(&self, sql: &str, col: &ColumnDef) -> Result<Value> {
        if let Some(v) = self.eval_default_sync(sql, col) {
            return v;
        }
        // Non-literal defaults (now(), expressions) are evaluated by DataFusion, once, here.
        let stmt = parse_one(&format!("SELECT {sql}"))?;
        let ctx = SessionContext::new_with_state(self.base.clone());
        let (_, batches) = run_query(&ctx, stmt).await?;
        let b = batches.first().ok_or_else(|| SqlError::Internal("DEFAULT produced no row".into()))?;
        Ok(coerce_array(b.column(0), &col.ty, &col.name)?.remove(0))
    }

    // ---- DML ----

    fn record(&mut self, def: &TableDef, guards: Vec<RowGuard>, ops: Vec<RowOp>) {
        for op in &ops {
            match op {
                RowOp::Insert { key: Some(k), row } => {
                    self.pending.insert(codec::row_key(def.id, k), Some(row.clone()));
                }
                RowOp::Update { key, row } => {
                    self.pending.insert(codec::row_key(def.id, key), Some(row.clone()));
                }
                RowOp::Delete { key } => {
                    self.pending.insert(codec::row_key(def.id, key), None);
                }
                RowOp::Insert { key: None, .. } => {}
            }
        }
        self.steps.push(Step::Write { table: def.id, guards, ops });
    }

    /// Checks a full physical row against NOT NULL.
    fn check_row(def: &TableDef, row: &[Value]) -> Result<()> {
        for (c, v) in def.columns.iter().zip(row) {
            if !c.dropped && !c.nullable && v.is_null() {
                return Err(SqlError::NotNullViolation { table: def.name.clone(), column: c.name.clone() });
            }
        }
        Ok(())
    }

    /// The rows an INSERT's source produces, as values of the target columns.
    async fn insert_source(
        &mut self,
        def: &TableDef,
        targets: &[usize],
        source: ast::Query,
    ) -> Result<Vec<Vec<Value>>> {
        // Fast path: VALUES of plain literals.
        if let SetExpr::Values(values) = source.body.as_ref()
            && source.with.is_none()
            && source.order_by.is_none()
            && source.limit_clause.is_none()
        {
            // `None`: the DEFAULT keyword.
            let cells: Option<Vec<Vec<Option<Option<String>>>>> = values
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|e| match e {
                            Expr::Identifier(i)
                                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
                            {
                                Some(None)
                            }
                            e => literal_text(e).map(Some),
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .collect();
            if let Some(rows) = cells {
                for r in &rows {
                    check_arity(r.len(), targets.len())?;
                }
                let mut cols = Vec::with_capacity(targets.len());
                for (j, &c) in targets.iter().enumerate() {
                    let col = &def.columns[c];
                    let col_texts: Vec<Option<String>> = rows.iter().map(|r| r[j].clone().flatten()).collect();
                    let mut values = coerce_texts(&col_texts, &col.ty, &col.name)?;
                    if rows.iter().any(|r| r[j].is_none()) {
                        let default = match &col.default {
                            Some(d) => self.eval_default(d, col).await?,
                            None => Value::Null,
                        };
                        for (i, r) in rows.iter().enumerate() {
                            if r[j].is_none() {
                                values[i] = default.clone();
                            }
                        }
                    }
                    cols.push(values);
                }
                return Ok(transpose(cols, rows.len()));
            }
        }
        let stmt = Statement::Query(Box::new(source));
        self.guard_relations(&stmt, None)?;
        let (_, batches) = run_query(&self.ctx(false), stmt).await?;
        let mut out = Vec::new();
        for b in batches {
            check_arity(b.num_columns(), targets.len())?;
            let mut cols = Vec::with_capacity(targets.len());
            for (j, &c) in targets.iter().enumerate() {
                cols.push(coerce_array(b.column(j), &def.columns[c].ty, &def.columns[c].name)?);
            }
            out.extend(transpose(cols, b.num_rows()));
        }
        Ok(out)
    }

    async fn insert(&mut self, ins: ast::Insert) -> Result<StatementResult> {
        let TableObject::TableName(tn) = &ins.table else {
            return Err(SqlError::Unsupported("INSERT into a table function".into()));
        };
        let def = self.catalog.table(&object_name(tn)?)?.clone();
        let targets: Vec<usize> = if ins.columns.is_empty() {
            def.visible().collect()
        } else {
            let mut t = Vec::new();
            for c in &ins.columns {
                let n = c.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
                let i = def.column_or_err(&n)?;
                if t.contains(&i) {
                    return Err(SqlError::DuplicateColumn(n));
                }
                t.push(i);
            }
            t
        };
        let Some(source) = ins.source else {
            return Err(SqlError::Unsupported("INSERT without VALUES or SELECT".into()));
        };
        let partial = self.insert_source(&def, &targets, *source).await?;
        self.insert_rows(&def, &targets, partial, ins.on.as_ref(), ins.returning.as_deref())
            .await
            .map_err(SqlError::without_row)
    }

    /// A bulk load: the rows of `batches` (columns matched to the table's by name; columns
    /// not given take their defaults) inserted exactly as `INSERT INTO table (cols) VALUES …`
    /// would — same coercions, checks and errors, which carry the failing row's position
    /// (counted from 0 across the batches) when one row is to blame.
    pub async fn insert_batches(&mut self, table: &str, batches: &[RecordBatch]) -> Result<u64> {
        let def = self.catalog.table(table)?.clone();
        let Some(first) = batches.first() else { return Ok(0) };
        let schema = first.schema();
        let mut targets = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let i = def.column_or_err(f.name())?;
            if targets.contains(&i) {
                return Err(SqlError::DuplicateColumn(f.name().clone()));
            }
            targets.push(i);
        }
        let mut partial = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        let mut offset = 0;
        for b in batches {
            if b.schema().fields() != schema.fields() {
                return Err(SqlError::InvalidValue("every batch of a load must have the same columns".into()));
            }
            let mut cols = Vec::with_capacity(targets.len());
            for (j, &c) in targets.iter().enumerate() {
                let col = &def.columns[c];
                cols.push(coerce_array(b.column(j), &col.ty, &col.name).map_err(|e| {
                    let row = failing_row(b.column(j), &col.ty, &col.name);
                    e.at_row(row.map(|r| r + offset))
                })?);
            }
            partial.extend(transpose(cols, b.num_rows()));
            offset += b.num_rows();
        }
        match self.insert_rows(&def, &targets, partial, None, None).await? {
            StatementResult::Done { rows_affected, .. } => Ok(rows_affected),
            StatementResult::Rows { .. } => Err(SqlError::Internal("a load returned rows".into())),
        }
    }

    /// Inserts rows given as values of the `targets` columns (the rest take their defaults):
    /// the part of INSERT after its source was evaluated. A row-level error names the row.
    async fn insert_rows(
        &mut self,
        def: &TableDef,
        targets: &[usize],
        partial: Vec<Vec<Value>>,
        on: Option<&OnInsert>,
        returning_items: Option<&[SelectItem]>,
    ) -> Result<StatementResult> {
        // Defaults for the columns not given, evaluated once per statement.
        let mut defaults: Vec<Value> = Vec::with_capacity(def.columns.len());
        for (i, c) in def.columns.iter().enumerate() {
            defaults.push(match &c.default {
                Some(d) if !c.dropped && !targets.contains(&i) => self.eval_default(d, c).await?,
                _ => Value::Null,
            });
        }
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(partial.len());
        for (i, p) in partial.into_iter().enumerate() {
            let mut row = defaults.clone();
            for (v, &c) in p.into_iter().zip(targets) {
                row[c] = v;
            }
            Self::check_row(def, &row).map_err(|e| e.at_row(Some(i)))?;
            rows.push(row);
        }

        let view = self.view();
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        let mut final_rows = Vec::new();
        let mut seen = BTreeSet::new();
        let conflict_action = match on {
            None => None,
            Some(OnInsert::OnConflict(oc)) => {
                if let Some(ConflictTarget::Columns(cols)) = &oc.conflict_target {
                    let cols: Vec<usize> = cols.iter().map(|c| def.column_or_err(&ident(c))).collect::<Result<_>>()?;
                    let mut sorted_pk = def.primary_key.clone();
                    sorted_pk.sort();
                    let mut sorted = cols.clone();
                    sorted.sort();
                    if sorted != sorted_pk {
                        return Err(SqlError::Unsupported("ON CONFLICT on columns other than the primary key".into()));
                    }
                }
                if def.primary_key.is_empty() {
                    return Err(SqlError::InvalidDefinition("ON CONFLICT needs a table with a primary key".into()));
                }
                Some(&oc.action)
            }
            Some(other) => return Err(SqlError::Unsupported(format!("{other}"))),
        };
        let mut updates: Vec<Conflict> = Vec::new();
        let decoder = RowDecoder::new(def);
        for (i, row) in rows.into_iter().enumerate() {
            let key = def.key_of(&row).map_err(|e| e.at_row(Some(i)))?;
            if let Some(k) = &key {
                if !seen.insert(k.clone()) {
                    if conflict_action.is_some() {
                        return Err(SqlError::Query(
                            "ON CONFLICT DO UPDATE command cannot affect row a second time".into(),
                        ));
                    }
                    return Err(SqlError::UniqueViolation(format!(
                        "duplicate key value violates unique constraint \"{}\"",
                        def.pkey_name()
                    ))
                    .at_row(Some(i)));
                }
                let existing = view.get(&codec::row_key(def.id, k))?;
                match (existing, conflict_action) {
                    (Some(_), None) => {
                        return Err(SqlError::UniqueViolation(format!(
                            "duplicate key value violates unique constraint \"{}\"",
                            def.pkey_name()
                        ))
                        .at_row(Some(i)));
                    }
                    (Some(old), Some(OnConflictAction::DoNothing)) => {
                        guards.push(RowGuard { key: k.clone(), hash: Some(codec::row_hash(&old)) });
                    }
                    (Some(old), Some(OnConflictAction::DoUpdate(_))) => {
                        let old_row = decoder.decode(&old)?;
                        updates.push(Conflict { key: k.clone(), old_bytes: old, old_row, proposed: row });
                    }
                    (None, _) => {
                        if conflict_action.is_some() {
                            guards.push(RowGuard { key: k.clone(), hash: None });
                        }
                        ops.push(RowOp::Insert { key: Some(k.clone().into()), row: codec::encode_row(&row) });
                        final_rows.push(row);
                    }
                }
            } else {
                ops.push(RowOp::Insert { key: None, row: codec::encode_row(&row) });
                final_rows.push(row);
            }
        }
        if let Some(OnConflictAction::DoUpdate(du)) = conflict_action
            && !updates.is_empty()
        {
            let new_rows = self.on_conflict_update(def, du, &updates).await?;
            for (Conflict { key, old_bytes, .. }, new_row) in updates.iter().zip(new_rows) {
                guards.push(RowGuard { key: key.clone(), hash: Some(codec::row_hash(old_bytes)) });
                let Some(new_row) = new_row else { continue };
                Self::check_row(def, &new_row)?;
                if def.key_of(&new_row)?.as_deref() != Some(key.as_slice()) {
                    return Err(SqlError::Unsupported("ON CONFLICT DO UPDATE changing the primary key".into()));
                }
                ops.push(RowOp::Update { key: key.clone(), row: codec::encode_row(&new_row) });
                final_rows.push(new_row);
            }
        }
        let n = final_rows.len() as u64;
        let returning = self.returning(def, returning_items, &final_rows, &format!("INSERT 0 {n}")).await?;
        self.record(def, guards, ops);
        Ok(returning.unwrap_or(StatementResult::Done { tag: format!("INSERT 0 {n}"), rows_affected: n }))
    }

    /// Evaluates `DO UPDATE SET … [WHERE …]` for each conflicting row; `None` where the WHERE
    /// is not true (the row is left alone).
    async fn on_conflict_update(
        &mut self,
        def: &TableDef,
        du: &ast::DoUpdate,
        updates: &[Conflict],
    ) -> Result<Vec<Option<Vec<Value>>>> {
        // A table of (existing columns, excluded columns as __excluded_<name>).
        let visible: Vec<usize> = def.visible().collect();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for &c in &visible {
            let col = &def.columns[c];
            fields.push(Field::new(&col.name, col.ty.arrow(), true));
            arrays.push(build_array(&col.ty, updates.iter().map(|u| &u.old_row[c]))?);
        }
        for &c in &visible {
            let col = &def.columns[c];
            fields.push(Field::new(format!("__excluded_{}", col.name), col.ty.arrow(), true));
            arrays.push(build_array(&col.ty, updates.iter().map(|u| &u.proposed[c]))?);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        let rewrite = |e: &Expr| -> Expr {
            let mut e = e.clone();
            let _ = ast::visit_expressions_mut(&mut e, |x| {
                if let Expr::CompoundIdentifier(parts) = x
                    && parts.len() == 2
                {
                    let q = ident(&parts[0]);
                    let col = ident(&parts[1]);
                    if q == "excluded" {
                        *x = Expr::Identifier(Ident::with_quote('"', format!("__excluded_{col}")));
                    } else if q == def.name {
                        *x = Expr::Identifier(Ident::with_quote('"', col));
                    }
                }
                ControlFlow::<()>::Continue(())
            });
            e
        };
        let mut targets = Vec::new();
        let mut exprs = Vec::new();
        for a in &du.assignments {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(SqlError::Unsupported("tuple assignment".into()));
            };
            let cname = n.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
            targets.push(def.column_or_err(&cname)?);
            exprs.push(rewrite(&a.value).to_string());
        }
        let cond = du.selection.as_ref().map(|s| rewrite(s).to_string()).unwrap_or_else(|| "true".into());
        exprs.push(format!("({cond}) IS TRUE"));
        let results = eval_over(self.base, "__conflicts", batch, &exprs).await?;
        let mut out = Vec::with_capacity(updates.len());
        let mut assigned: Vec<Vec<Value>> = Vec::new();
        for (j, &c) in targets.iter().enumerate() {
            assigned.push(coerce_array(&results[j], &def.columns[c].ty, &def.columns[c].name)?);
        }
        let keep = results[targets.len()].as_boolean().clone();
        for (i, u) in updates.iter().enumerate() {
            if !keep.value(i) {
                out.push(None);
                continue;
            }
            let mut row = u.old_row.clone();
            for (j, &c) in targets.iter().enumerate() {
                row[c] = assigned[j][i].clone();
            }
            out.push(Some(row));
        }
        Ok(out)
    }

    /// RETURNING: evaluates the items over the statement's final rows.
    async fn returning(
        &self,
        def: &TableDef,
        items: Option<&[SelectItem]>,
        rows: &[Vec<Value>],
        tag: &str,
    ) -> Result<Option<StatementResult>> {
        let Some(items) = items else { return Ok(None) };
        let visible: Vec<usize> = def.visible().collect();
        let schema = def.schema(false);
        let mut arrays = Vec::new();
        for &c in &visible {
            arrays.push(build_array(&def.columns[c].ty, rows.iter().map(|r| &r[c]))?);
        }
        let batch = RecordBatch::try_new(schema, arrays)?;
        let exprs: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        let ctx = mem_context(self.base, &def.name, batch)?;
        let stmt = parse_one(&format!("SELECT {} FROM {}", exprs.join(", "), quote(&def.name)))?;
        let (schema, batches) = run_query(&ctx, stmt).await?;
        Ok(Some(StatementResult::Rows { schema, batches, tag: tag.to_string() }))
    }

    /// Reads the rows an UPDATE/DELETE targets: key, hash and every visible column, plus
    /// `extra` expressions. Returns the batches and the guards to record.
    async fn read_targets(
        &mut self,
        def: &TableDef,
        stmt_for_relations: &Statement,
        selection: Option<&Expr>,
        extra: &[String],
    ) -> Result<(Vec<RecordBatch>, Vec<RowGuard>, Option<Vec<Vec<u8>>>)> {
        let target_refs = self.guard_relations(stmt_for_relations, Some(&def.name))?;
        let points = if target_refs == 1 { selection.and_then(|s| point_keys(def, s)) } else { None };
        if points.is_none() {
            self.guard_table(def.id)?;
        }
        let mut select = vec![quote(KEY_COLUMN), quote(HASH_COLUMN)];
        select.extend(def.visible().map(|c| quote(&def.columns[c].name)));
        select.extend(extra.iter().cloned());
        let mut sql = format!("SELECT {} FROM {}", select.join(", "), quote(&def.name));
        if let Some(s) = selection {
            sql.push_str(&format!(" WHERE {s}"));
        }
        let (_, batches) = run_query(&self.ctx(true), parse_one(&sql)?).await?;
        let mut guards = Vec::new();
        if let Some(keys) = &points {
            let mut found = BTreeMap::new();
            for b in &batches {
                let k = b.column(0).as_binary::<i32>();
                let h = b.column(1).as_primitive::<UInt64Type>();
                for i in 0..b.num_rows() {
                    found.insert(k.value(i).to_vec(), h.value(i));
                }
            }
            for key in keys {
                guards.push(RowGuard { key: key.clone(), hash: found.get(key).copied() });
            }
        }
        Ok((batches, guards, points))
    }

    async fn update(&mut self, up: ast::Update) -> Result<StatementResult> {
        if up.from.is_some() {
            return Err(SqlError::Unsupported("UPDATE … FROM".into()));
        }
        let TableFactor::Table { name, alias, .. } = &up.table.relation else {
            return Err(SqlError::Unsupported("UPDATE of a non-table".into()));
        };
        if alias.is_some() || !up.table.joins.is_empty() {
            return Err(SqlError::Unsupported("UPDATE with an alias or joins".into()));
        }
        let def = self.catalog.table(&object_name(name)?)?.clone();
        let mut targets = Vec::new();
        let mut exprs = Vec::new();
        for a in &up.assignments {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(SqlError::Unsupported("tuple assignment".into()));
            };
            let cname = n.0.last().and_then(|p| p.as_ident()).map(ident).unwrap_or_default();
            let c = def.column_or_err(&cname)?;
            if targets.contains(&c) {
                return Err(SqlError::DuplicateColumn(cname));
            }
            targets.push(c);
            exprs.push(format!("{} AS \"__new_{}\"", a.value, targets.len()));
        }
        let stmt = Statement::Update(up.clone());
        let (batches, guards, _) = self.read_targets(&def, &stmt, up.selection.as_ref(), &exprs).await?;
        let visible: Vec<usize> = def.visible().collect();
        let types = def.types();
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        let mut final_rows = Vec::new();
        for b in &batches {
            let keys = b.column(0).as_binary::<i32>();
            let mut old_cols: Vec<Vec<Value>> = Vec::new();
            for (j, &c) in visible.iter().enumerate() {
                old_cols.push(coerce_array(b.column(2 + j), &types[c], &def.columns[c].name)?);
            }
            let mut new_cols = Vec::new();
            for (j, &c) in targets.iter().enumerate() {
                new_cols.push(coerce_array(b.column(2 + visible.len() + j), &types[c], &def.columns[c].name)?);
            }
            for i in 0..b.num_rows() {
                let mut row: Vec<Value> = def.columns.iter().map(|_| Value::Null).collect();
                for (j, &c) in visible.iter().enumerate() {
                    row[c] = old_cols[j][i].clone();
                }
                for (j, &c) in targets.iter().enumerate() {
                    row[c] = new_cols[j][i].clone();
                }
                Self::check_row(&def, &row)?;
                let old_key = keys.value(i).to_vec();
                let bytes = codec::encode_row(&row);
                match def.key_of(&row)? {
                    Some(new_key) if new_key != old_key => {
                        deletes.push(RowOp::Delete { key: old_key });
                        writes.push(RowOp::Insert { key: Some(new_key.into()), row: bytes });
                    }
                    _ => writes.push(RowOp::Update { key: old_key, row: bytes }),
                }
                final_rows.push(row);
            }
        }
        let n = final_rows.len() as u64;
        let tag = format!("UPDATE {n}");
        let returning = self.returning(&def, up.returning.as_deref(), &final_rows, &tag).await?;
        deletes.extend(writes);
        self.record(&def, guards, deletes);
        Ok(returning.unwrap_or(StatementResult::Done { tag, rows_affected: n }))
    }

    async fn delete(&mut self, del: ast::Delete) -> Result<StatementResult> {
        let tables = match &del.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [twj] = tables.as_slice() else {
            return Err(SqlError::Unsupported("DELETE from several tables".into()));
        };
        if del.using.is_some() || !twj.joins.is_empty() {
            return Err(SqlError::Unsupported("DELETE … USING".into()));
        }
        let TableFactor::Table { name, alias: None, .. } = &twj.relation else {
            return Err(SqlError::Unsupported("DELETE with an alias".into()));
        };
        let def = self.catalog.table(&object_name(name)?)?.clone();
        let stmt = Statement::Delete(del.clone());
        let (batches, guards, _) = self.read_targets(&def, &stmt, del.selection.as_ref(), &[]).await?;
        let visible: Vec<usize> = def.visible().collect();
        let mut ops = Vec::new();
        let mut final_rows = Vec::new();
        for b in &batches {
            let keys = b.column(0).as_binary::<i32>();
            if del.returning.is_some() {
                let mut rows: Vec<Vec<Value>> =
                    (0..b.num_rows()).map(|_| vec![Value::Null; def.columns.len()]).collect();
                for (j, &c) in visible.iter().enumerate() {
                    let values = coerce_array(b.column(2 + j), &def.columns[c].ty, &def.columns[c].name)?;
                    for (row, v) in rows.iter_mut().zip(values) {
                        row[c] = v;
                    }
                }
                final_rows.extend(rows);
            }
            for i in 0..b.num_rows() {
                ops.push(RowOp::Delete { key: keys.value(i).to_vec() });
            }
        }
        let n = ops.len() as u64;
        let tag = format!("DELETE {n}");
        let returning = self.returning(&def, del.returning.as_deref(), &final_rows, &tag).await?;
        self.record(&def, guards, ops);
        Ok(returning.unwrap_or(StatementResult::Done { tag, rows_affected: n }))
    }
}

/// An INSERT must give exactly one value per target column (PostgreSQL: 42601).
fn check_arity(given: usize, targets: usize) -> Result<()> {
    if given != targets {
        let more = if given > targets { "more" } else { "fewer" };
        return Err(SqlError::Syntax(format!(
            "INSERT has {more} expressions than target columns ({given} for {targets})"
        )));
    }
    Ok(())
}

/// The first row of `array` that does not convert to `ty` (the error path of a bulk load,
/// which converts whole columns at once).
fn failing_row(array: &ArrayRef, ty: &ColumnType, column: &str) -> Option<usize> {
    (0..array.len()).find(|&i| coerce_array(&array.slice(i, 1), ty, column).is_err())
}

fn parse_expr(sql: &str) -> Result<Expr> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    Ok(datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(sql)?.parse_expr()?)
}

fn transpose(cols: Vec<Vec<Value>>, n: usize) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = (0..n).map(|_| Vec::with_capacity(cols.len())).collect();
    for col in cols {
        for (i, v) in col.into_iter().enumerate() {
            rows[i].push(v);
        }
    }
    rows
}

/// A session whose only table is `batch`, named `name`.
fn mem_context(base: &SessionState, name: &str, batch: RecordBatch) -> Result<SessionContext> {
    let schema = Arc::new(MemorySchemaProvider::new());
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    datafusion::catalog::SchemaProvider::register_table(schema.as_ref(), name.to_string(), Arc::new(table))?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema("public", schema)?;
    let list = Arc::new(MemoryCatalogProviderList::new());
    datafusion::catalog::CatalogProviderList::register_catalog(list.as_ref(), "quorumdb".into(), catalog);
    Ok(SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(base.clone()).with_catalog_list(list).build(),
    ))
}

/// Evaluates SQL expressions over the rows of `batch` (registered as `name`), one output
/// column per expression.
async fn eval_over(base: &SessionState, name: &str, batch: RecordBatch, exprs: &[String]) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    let ctx = mem_context(base, name, batch)?;
    let stmt = parse_one(&format!("SELECT {} FROM {}", exprs.join(", "), quote(name)))?;
    let (schema, batches) = run_query(&ctx, stmt).await?;
    let merged = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
    if merged.num_rows() != n {
        return Err(SqlError::Internal("expression evaluation changed the row count".into()));
    }
    Ok(merged.columns().to_vec())
}

/// The primary keys a `WHERE` pins down by equality on every key column (joined by AND),
/// if it does.
pub fn point_keys(def: &TableDef, selection: &Expr) -> Option<Vec<Vec<u8>>> {
    if def.primary_key.is_empty() {
        return None;
    }
    let mut eq: BTreeMap<usize, Option<String>> = BTreeMap::new();
    fn walk(def: &TableDef, e: &Expr, eq: &mut BTreeMap<usize, Option<String>>) {
        match e {
            Expr::BinaryOp { left, op: ast::BinaryOperator::And, right } => {
                walk(def, left, eq);
                walk(def, right, eq);
            }
            Expr::Nested(inner) => walk(def, inner, eq),
            Expr::BinaryOp { left, op: ast::BinaryOperator::Eq, right } => {
                let col = |x: &Expr| match x {
                    Expr::Identifier(i) => def.column(&ident(i)),
                    Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == def.name => {
                        def.column(&ident(&p[1]))
                    }
                    _ => None,
                };
                let (c, lit) = match (col(left), col(right)) {
                    (Some(c), None) => (c, right),
                    (None, Some(c)) => (c, left),
                    _ => return,
                };
                if let Some(Some(t)) = literal_text(lit)
                    && def.primary_key.contains(&c)
                {
                    eq.insert(c, Some(t));
                }
            }
            _ => {}
        }
    }
    walk(def, selection, &mut eq);
    let mut key = Vec::new();
    for &c in &def.primary_key {
        let text = eq.get(&c)?.clone();
        let v = coerce_texts(&[text], &def.columns[c].ty, &def.columns[c].name).ok()?.remove(0);
        codec::encode_key_value(&mut key, &v, &def.columns[c].ty).ok()?;
    }
    Some(vec![key])
}
