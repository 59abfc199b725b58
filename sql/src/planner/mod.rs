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
//!
//! This module owns the [`Planner`] and its batch state, the dispatch of a statement, and the
//! helpers the statement kinds share; each kind is planned in its own file:
//! - `ddl.rs`: CREATE/DROP/ALTER TABLE, CREATE/DROP INDEX, TRUNCATE;
//! - `insert.rs`: INSERT (VALUES or SELECT, ON CONFLICT, RETURNING) and bulk loads;
//! - `modify.rs`: UPDATE and DELETE;
//! - `point.rs`: primary-key point statements — which `WHERE`s pin keys, and their row guards.
//!
//! Planning never writes the state: everything it decides travels in the command.

mod ddl;
mod insert;
mod modify;
mod point;
mod roles;
mod views;

pub use roles::needs_of;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, ObjectType, SelectItem, Statement, visit_relations};

use crate::catalog::{Catalog, ColumnDef, TableDef};
use crate::codec;
use crate::coerce::{coerce_array, coerce_texts, literal_text};
use crate::command::{RowGuard, RowOp, SqlCommand, Step, table_version};
use crate::error::{Result, SqlError};
use crate::provider::{BatchView, CatalogSource, Catalogs, Pending};
use crate::types::{Value, build_array};
use quorumdb_state::SharedState;

pub use point::{point_keys, pure_point_keys};

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
pub fn session(base: &Arc<SessionState>, catalog: CatalogSource, view: BatchView, hidden: bool) -> SessionContext {
    let list = Arc::new(Catalogs::new(catalog, view, hidden, base.clone()));
    let ctx = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(SessionState::clone(base)).with_catalog_list(list).build(),
    );
    // Registered last: the builder re-registers functions in hash order, and a built-in alias
    // (DataFusion's `inner_product` for arrays) would otherwise win half of the time.
    for f in crate::vector_search::functions() {
        ctx.register_udf(f);
    }
    ctx
}

/// Runs one query statement through DataFusion.
pub async fn run_query(ctx: &SessionContext, stmt: Statement) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    // Boxed: DataFusion's planning futures are large (hundreds of KiB in a debug build), and a
    // caller's future holds its callee's; on the heap they do not add up on a 2 MiB stack.
    let plan = Box::pin(ctx.state().statement_to_plan(DfStatement::Statement(Box::new(stmt)))).await?;
    let df = Box::pin(ctx.execute_logical_plan(plan)).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok((schema, batches))
}

/// Runs a query a client asked for: like [`run_query`], with PostgreSQL's output column names
/// (repeated names allowed; see [`crate::names`]).
pub async fn run_user_query(ctx: &SessionContext, stmt: Statement) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let (plan, schema) = crate::names::plan_named(&ctx.state(), stmt).await?;
    let batches = Box::pin(ctx.execute_logical_plan(plan)).await?.collect().await?;
    let batches = crate::names::rename_batches(&schema, batches)?;
    Ok((schema, batches))
}

fn parse_one(sql: &str) -> Result<Statement> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut v = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)?;
    v.pop().ok_or_else(|| SqlError::Internal("empty internal statement".into()))
}

pub struct Planner<'a> {
    base: &'a Arc<SessionState>,
    /// Long-lived sessions over the live catalog and applied state (plain, hidden columns),
    /// used while the batch has neither pending writes nor DDL: no per-statement setup.
    live: Option<(&'a SessionContext, &'a SessionContext)>,
    read: SharedState,
    catalog: Arc<Catalog>,
    catalog_version: u64,
    pending: Pending,
    table_guards: BTreeMap<u32, u64>,
    steps: Vec<Step>,
}

impl<'a> Planner<'a> {
    pub fn new(
        base: &'a Arc<SessionState>,
        live: Option<(&'a SessionContext, &'a SessionContext)>,
        read: SharedState,
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

    fn view(&self) -> BatchView {
        BatchView { base: self.read.clone(), pending: Arc::new(self.pending.clone()) }
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
        if let Some(v) = self.table_version_to_guard(id)? {
            self.table_guards.insert(id, v);
        }
        Ok(())
    }

    /// The version to guard table `id` at, read now; `None` when the batch already guards it
    /// (at an earlier version) or created it.
    fn table_version_to_guard(&self, id: u32) -> Result<Option<u64>> {
        if self.table_guards.contains_key(&id)
            || self.steps.iter().any(|s| matches!(s, Step::CreateTable(d) if d.id == id))
        {
            return Ok(None);
        }
        Ok(Some(table_version(|k| self.read.get(k), id)?))
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
            self.guard_named(&name, 0)?;
        }
        Ok(skipped)
    }

    /// Guards table `name`, or every table view `name` reads.
    fn guard_named(&mut self, name: &str, depth: usize) -> Result<()> {
        if let Some(id) = self.catalog.tables.get(name).map(|t| t.id) {
            return self.guard_table(id);
        }
        if let Some(reads) = self.catalog.views.get(name).map(|v| v.reads.clone())
            && depth < crate::catalog::MAX_VIEW_DEPTH
        {
            for r in reads {
                self.guard_named(&r, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Plans one statement; reads are answered now, writes become steps.
    pub async fn plan(&mut self, stmt: Statement) -> Result<StatementResult> {
        match stmt {
            Statement::CreateTable(ct) => self.create_table(ct).await,
            Statement::Drop { object_type: ObjectType::Table, if_exists, names, cascade, .. } => {
                self.drop_tables(&names, if_exists, cascade)
            }
            Statement::Drop { object_type: ObjectType::Index, if_exists, names, .. } => {
                self.drop_indexes(&names, if_exists)
            }
            Statement::CreateView(cv) => self.create_view(cv).await,
            Statement::Drop { object_type: ObjectType::View, if_exists, names, cascade, .. } => {
                self.drop_views(&names, if_exists, cascade)
            }
            Statement::CreateIndex(ci) => self.create_index(ci),
            Statement::AlterTable(at) => self.alter_table(at).await,
            Statement::Truncate(t) => self.truncate(&t),
            Statement::Insert(ins) => self.insert(ins).await,
            Statement::Update(up) => self.update(up).await,
            Statement::Delete(del) => self.delete(del).await,
            Statement::CreateRole(cr) => self.create_role(cr),
            Statement::AlterRole { name, operation } => self.alter_role(&name, operation),
            Statement::Drop { object_type: ObjectType::Role, if_exists, names, .. } => {
                self.drop_roles(&names, if_exists)
            }
            Statement::Grant(g) => self.grant(&g.privileges, g.objects.as_ref(), &g.grantees, false),
            Statement::Revoke(r) => self.grant(&r.privileges, r.objects.as_ref(), &r.grantees, true),
            other => {
                // A read inside a write batch: guard what it reads.
                self.guard_relations(&other, None)?;
                let (schema, batches) = run_user_query(&self.ctx(false), other).await?;
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

    /// The catalog this planner plans against (the one its command's guard names).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn catalog_mut(&mut self) -> &mut Catalog {
        Arc::make_mut(&mut self.catalog)
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
        let ctx = SessionContext::new_with_state(SessionState::clone(self.base));
        let (_, batches) = run_query(&ctx, stmt).await?;
        let b = batches.first().ok_or_else(|| SqlError::Internal("DEFAULT produced no row".into()))?;
        Ok(coerce_array(b.column(0), &col.ty, &col.name)?.remove(0))
    }

    // ---- shared by the writes ----

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

    /// RETURNING: evaluates the items over the statement's final rows.
    async fn returning(
        &self,
        def: &TableDef,
        alias: Option<&str>,
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
        let mut sql = format!("SELECT {} FROM {}", exprs.join(", "), quote(&def.name));
        if let Some(a) = alias {
            sql.push_str(&format!(" AS {}", quote(a)));
        }
        let stmt = parse_one(&sql)?;
        let (schema, batches) = run_user_query(&ctx, stmt).await?;
        Ok(Some(StatementResult::Rows { schema, batches, tag: tag.to_string() }))
    }
}

fn parse_expr(sql: &str) -> Result<Expr> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    Ok(datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(sql)?.parse_expr()?)
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
