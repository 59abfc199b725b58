//! DataFusion over the replicated state: a [`TableProvider`] per table whose scans stream
//! record batches from a consistent RocksDB iterator (through [`AppliedState`]), with projection
//! pushdown and key-range pushdown for primary-key and secondary-index predicates.
//!
//! Filters are accepted as `Inexact`: the scan narrows the key range and DataFusion still
//! applies every predicate, so a pushdown can only make a scan smaller, never wrong.
//!
//! A view of the catalog is its query, planned again over the same tables each time a query
//! names it (a DataFusion `ViewTable`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, RecordBatchOptions, UInt64Builder};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, Session};
use datafusion::common::Column;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::ViewTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, LogicalPlanBuilder, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::catalog::{Catalog, IndexDef, MAX_VIEW_DEPTH, RowDecoder, TableDef, ViewDef};
use crate::codec;
use crate::error::SqlError;
use crate::types::{ColumnType, Value, build_array};
use quorumdb_state::SharedState;

/// Rows per record batch.
const BATCH_ROWS: usize = 4096;

/// Pending writes of the statements planned so far in a batch (full state keys; `None` is a
/// deletion), layered over the applied state.
pub type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The state a statement reads: the applied state plus the batch's pending writes.
#[derive(Clone)]
pub struct BatchView {
    pub base: SharedState,
    pub pending: Arc<Pending>,
}

impl BatchView {
    pub fn new(base: SharedState) -> Self {
        Self { base, pending: Arc::new(Pending::new()) }
    }

    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    /// Whether the batch has pending writes to `table`.
    pub fn has_pending(&self, table: u32) -> bool {
        let (start, end) = codec::table_range(table);
        self.pending.range(start..end).next().is_some()
    }

    /// Merges the applied state with the pending writes over `start..end`.
    pub fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return self.base.scan(start, end, f);
        }
        let mut pending = self
            .pending
            .range(start.to_vec()..)
            .take_while(|(k, _)| quorumdb_state::keys::in_range(k, start, end))
            .peekable();
        let mut stopped = false;
        self.base.scan(start, end, &mut |k, v| {
            while let Some((pk, pv)) = pending.peek() {
                if pk.as_slice() > k {
                    break;
                }
                let same = pk.as_slice() == k;
                if let Some(pv) = pv
                    && !f(pk, pv)
                {
                    stopped = true;
                    return false;
                }
                pending.next();
                if same {
                    return true;
                }
            }
            if !f(k, v) {
                stopped = true;
                return false;
            }
            true
        })?;
        if !stopped {
            for (k, v) in pending {
                if let Some(v) = v
                    && !f(k, v)
                {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl quorumdb_state::AppliedState for BatchView {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        BatchView::get(self, key)
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        BatchView::scan(self, start, end, f)
    }
}

/// The catalogs DataFusion sees for one statement: `quorumdb.public.<table>`.
#[derive(Debug)]
pub struct Catalogs {
    catalog: Arc<dyn CatalogProvider>,
}

/// Where a schema finds the catalog: a fixed copy (a batch's working catalog) or the live one
/// (for the engine's long-lived query session).
#[derive(Clone)]
pub enum CatalogSource {
    Fixed(Arc<Catalog>),
    Live(Arc<dyn Fn() -> crate::error::Result<Arc<Catalog>> + Send + Sync>),
}

impl CatalogSource {
    fn get(&self) -> Arc<Catalog> {
        match self {
            Self::Fixed(c) => c.clone(),
            Self::Live(f) => f().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the catalog");
                Arc::new(Catalog::default())
            }),
        }
    }
}

impl Catalogs {
    /// The tables of `catalog`; its views are planned on `base` (a session state without
    /// catalogs) when a query names them.
    pub fn new(catalog: CatalogSource, view: BatchView, hidden: bool, base: Arc<SessionState>) -> Self {
        Self::at_depth(catalog, view, hidden, base, 0)
    }

    fn at_depth(catalog: CatalogSource, view: BatchView, hidden: bool, base: Arc<SessionState>, depth: usize) -> Self {
        let schema = Arc::new(PublicSchema { catalog, view, hidden, base, depth });
        Self { catalog: Arc::new(OneSchema { schema }) }
    }
}

impl CatalogProviderList for Catalogs {
    fn register_catalog(&self, _: String, _: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        None
    }
    fn catalog_names(&self) -> Vec<String> {
        vec!["quorumdb".into()]
    }
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == "quorumdb").then(|| self.catalog.clone())
    }
}

#[derive(Debug)]
struct OneSchema {
    schema: Arc<PublicSchema>,
}

impl CatalogProvider for OneSchema {
    fn schema_names(&self) -> Vec<String> {
        vec!["public".into()]
    }
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == "public").then(|| self.schema.clone() as Arc<dyn SchemaProvider>)
    }
}

struct PublicSchema {
    catalog: CatalogSource,
    view: BatchView,
    hidden: bool,
    base: Arc<SessionState>,
    /// How many views deep this schema plans (a view's query sees views too).
    depth: usize,
}

impl PublicSchema {
    /// View `name`'s query planned over the same state, its columns named as the view says.
    async fn view(&self, name: &str, def: &ViewDef) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        if self.depth >= MAX_VIEW_DEPTH {
            return Err(DataFusionError::Plan(format!("views nest more than {MAX_VIEW_DEPTH} deep at \"{name}\"")));
        }
        let list =
            Catalogs::at_depth(self.catalog.clone(), self.view.clone(), false, self.base.clone(), self.depth + 1);
        let state =
            SessionStateBuilder::new_from_existing((*self.base).clone()).with_catalog_list(Arc::new(list)).build();
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, &def.query)
            .map_err(|e| DataFusionError::Plan(format!("view \"{name}\": {e}")))?
            .pop()
            .ok_or_else(|| DataFusionError::Plan(format!("view \"{name}\" has no query")))?;
        let (plan, named) = crate::names::plan_named(&state, stmt).await?;
        let columns: Vec<Expr> = (0..named.fields().len())
            .map(|i| {
                let given = def.columns.get(i).cloned().unwrap_or_else(|| named.field(i).name().clone());
                Expr::Column(Column::from(plan.schema().qualified_field(i))).alias(given)
            })
            .collect();
        let plan = LogicalPlanBuilder::from(plan).project(columns)?.build()?;
        Ok(Arc::new(ViewTable::new(plan, Some(def.query.clone()))))
    }
}

impl fmt::Debug for PublicSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicSchema").field("hidden", &self.hidden).finish()
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        let catalog = self.catalog.get();
        catalog.tables.keys().chain(catalog.views.keys()).cloned().collect()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let catalog = self.catalog.get();
        if let Some(def) = catalog.tables.get(name) {
            return Ok(Some(Arc::new(QuorumTable::new(Arc::new(def.clone()), self.view.clone(), self.hidden))));
        }
        match catalog.views.get(name) {
            // Boxed: planning a view is a large future, and every table lookup's future (built on
            // the stack of the planner that awaits it) would otherwise carry it.
            Some(def) => Box::pin(self.view(name, def)).await.map(Some),
            None => Ok(None),
        }
    }
    fn table_exist(&self, name: &str) -> bool {
        let catalog = self.catalog.get();
        catalog.tables.contains_key(name) || catalog.views.contains_key(name)
    }
}

/// One table of the replicated state, as DataFusion sees it.
#[derive(Clone)]
pub struct QuorumTable {
    def: Arc<TableDef>,
    view: BatchView,
    /// With the hidden key and row-hash columns (DML planning only).
    schema: SchemaRef,
    hidden: bool,
}

impl fmt::Debug for QuorumTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuorumTable").field("table", &self.def.name).finish()
    }
}

impl QuorumTable {
    pub fn new(def: Arc<TableDef>, view: BatchView, hidden: bool) -> Self {
        let schema = def.schema(hidden);
        Self { def, view, schema, hidden }
    }

    pub fn def(&self) -> &Arc<TableDef> {
        &self.def
    }

    pub fn view(&self) -> &BatchView {
        &self.view
    }

    /// Whether the hidden key and hash columns are part of the schema.
    pub fn hidden(&self) -> bool {
        self.hidden
    }
}

#[async_trait]
impl TableProvider for QuorumTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if column_bound(&self.def, f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let mut access = choose_access(&self.def, filters).map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Pending writes of the batch carry rows, not index entries: read the rows instead.
        if matches!(access, Access::Index { .. }) && self.view.has_pending(self.def.id) {
            access = Access::Full;
        }
        Ok(Arc::new(ScanExec::new(
            self.def.clone(),
            self.view.clone(),
            self.schema.clone(),
            projection,
            access,
            limit,
        )?))
    }
}

/// A bound on one column taken from a filter.
#[derive(Debug, Clone)]
enum Bound {
    Eq(Value),
    In(Vec<Value>),
    Range { low: Option<(Value, bool)>, high: Option<(Value, bool)> },
}

/// Which rows a scan reads.
#[derive(Debug, Clone)]
pub enum Access {
    Full,
    /// Row keys (relative to the table's row prefix) looked up one by one.
    Points(Vec<Vec<u8>>),
    /// A primary-key range of full state keys.
    PkRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// An index range (full state keys), then the rows it points to.
    Index {
        index: IndexDef,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

fn literal_value(s: &ScalarValue, ty: &ColumnType) -> Option<Value> {
    use ScalarValue as S;
    if s.is_null() {
        return None;
    }
    Some(match (s, ty) {
        (S::Int8(Some(v)), ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64) => Value::Int(i64::from(*v)),
        (S::Int16(Some(v)), ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64) => Value::Int(i64::from(*v)),
        (S::Int32(Some(v)), ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64) => Value::Int(i64::from(*v)),
        (S::Int64(Some(v)), ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64) => Value::Int(*v),
        (S::Float32(Some(v)), ColumnType::Float32 | ColumnType::Float64) => Value::Float(f64::from(*v)),
        (S::Float64(Some(v)), ColumnType::Float32 | ColumnType::Float64) => Value::Float(*v),
        (S::Decimal128(Some(v), _, s), ColumnType::Decimal { scale, .. }) if s == scale => Value::Decimal(*v),
        (S::Utf8(Some(v)) | S::LargeUtf8(Some(v)) | S::Utf8View(Some(v)), ColumnType::Text { .. }) => {
            Value::Text(v.clone())
        }
        (S::Boolean(Some(v)), ColumnType::Bool) => Value::Bool(*v),
        (S::TimestampMicrosecond(Some(v), None), ColumnType::Timestamp) => Value::Timestamp(*v),
        (S::Date32(Some(v)), ColumnType::Date) => Value::Date(*v),
        (S::Binary(Some(v)) | S::LargeBinary(Some(v)), ColumnType::Bytea) => Value::Bytes(v.clone()),
        _ => return None,
    })
}

/// `(physical column, bound)` when `expr` bounds one keyable column by literals.
fn column_bound(def: &TableDef, expr: &Expr) -> Option<(usize, Bound)> {
    let col = |e: &Expr| match e {
        Expr::Column(c) => def.column(&c.name).filter(|&i| def.columns[i].ty.keyable()),
        _ => None,
    };
    let lit = |e: &Expr, i: usize| match e {
        Expr::Literal(s, _) => literal_value(s, &def.columns[i].ty),
        _ => None,
    };
    match expr {
        // `a = 1 OR a = 2` (how DataFusion rewrites a short IN list): a set of values.
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let values = |b: Bound| match b {
                Bound::Eq(v) => Some(vec![v]),
                Bound::In(vs) => Some(vs),
                Bound::Range { .. } => None,
            };
            let (i, l) = column_bound(def, left)?;
            let (j, r) = column_bound(def, right)?;
            if i != j {
                return None;
            }
            let mut all = values(l)?;
            all.extend(values(r)?);
            (all.len() <= 1024).then_some((i, Bound::In(all)))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (i, v, op) = if let Some(i) = col(left) {
                (i, lit(right, i)?, *op)
            } else {
                let i = col(right)?;
                (i, lit(left, i)?, op.swap()?)
            };
            let b = match op {
                Operator::Eq => Bound::Eq(v),
                Operator::Lt => Bound::Range { low: None, high: Some((v, false)) },
                Operator::LtEq => Bound::Range { low: None, high: Some((v, true)) },
                Operator::Gt => Bound::Range { low: Some((v, false)), high: None },
                Operator::GtEq => Bound::Range { low: Some((v, true)), high: None },
                _ => return None,
            };
            Some((i, b))
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            let i = col(expr)?;
            Some((i, Bound::Range { low: Some((lit(low, i)?, true)), high: Some((lit(high, i)?, true)) }))
        }
        Expr::InList(l) if !l.negated && l.list.len() <= 1024 => {
            let i = col(&l.expr)?;
            Some((i, Bound::In(l.list.iter().map(|e| lit(e, i)).collect::<Option<Vec<_>>>()?)))
        }
        _ => None,
    }
}

/// Merges every bound per column: equalities win, ranges intersect by keeping the tightest
/// side seen (all filters are re-applied by DataFusion, so a looser bound is still correct).
fn bounds(def: &TableDef, filters: &[Expr]) -> BTreeMap<usize, Bound> {
    let mut out: BTreeMap<usize, Bound> = BTreeMap::new();
    for f in filters {
        let Some((i, b)) = column_bound(def, f) else { continue };
        let merged = match (out.remove(&i), b) {
            (None, b) => b,
            (Some(Bound::Eq(v)), _) | (_, Bound::Eq(v)) => Bound::Eq(v),
            (Some(Bound::In(v)), _) | (_, Bound::In(v)) => Bound::In(v),
            (Some(Bound::Range { low: l1, high: h1 }), Bound::Range { low: l2, high: h2 }) => {
                Bound::Range { low: l2.or(l1), high: h2.or(h1) }
            }
        };
        out.insert(i, merged);
    }
    out
}

/// Encoded equality prefixes, how many key columns they cover, and the bound on the next one.
type KeyPrefixes = (Vec<Vec<u8>>, usize, Option<Bound>);

/// Keys built from equality prefixes of `columns`, and the bound on the next column (if any).
/// `None` when the first column has no usable bound.
fn key_prefixes(
    def: &TableDef,
    columns: &[usize],
    b: &BTreeMap<usize, Bound>,
) -> Result<Option<KeyPrefixes>, SqlError> {
    let mut prefixes = vec![Vec::new()];
    for (n, &c) in columns.iter().enumerate() {
        let ty = &def.columns[c].ty;
        match b.get(&c) {
            Some(Bound::Eq(v)) => {
                for p in &mut prefixes {
                    codec::encode_key_value(p, v, ty)?;
                }
            }
            Some(Bound::In(vs)) if prefixes.len() * vs.len() <= 4096 => {
                let mut next = Vec::new();
                for p in &prefixes {
                    for v in vs {
                        let mut k = p.clone();
                        codec::encode_key_value(&mut k, v, ty)?;
                        next.push(k);
                    }
                }
                next.sort();
                next.dedup();
                prefixes = next;
            }
            other => {
                if n == 0 && !matches!(other, Some(Bound::Range { .. })) {
                    return Ok(None);
                }
                return Ok(Some((prefixes, n, other.cloned())));
            }
        }
    }
    Ok(Some((prefixes, columns.len(), None)))
}

/// The key range of `prefix` narrowed by a range bound on the next column.
fn range_of(prefix: &[u8], ty: &ColumnType, bound: Option<&Bound>) -> Result<(Vec<u8>, Vec<u8>), SqlError> {
    let Some(Bound::Range { low, high }) = bound else {
        return Ok((prefix.to_vec(), codec::prefix_end(prefix)));
    };
    let at = |v: &Value| -> Result<Vec<u8>, SqlError> {
        let mut k = prefix.to_vec();
        codec::encode_key_value(&mut k, v, ty)?;
        Ok(k)
    };
    let start = match low {
        Some((v, true)) => at(v)?,
        Some((v, false)) => codec::prefix_end(&at(v)?),
        None => [prefix, &[0x01]].concat(), // comparisons never match NULL
    };
    let end = match high {
        Some((v, true)) => codec::prefix_end(&at(v)?),
        Some((v, false)) => at(v)?,
        None => codec::prefix_end(prefix),
    };
    Ok((start, end))
}

fn choose_access(def: &TableDef, filters: &[Expr]) -> Result<Access, SqlError> {
    let b = bounds(def, filters);
    if b.is_empty() {
        return Ok(Access::Full);
    }
    if !def.primary_key.is_empty()
        && let Some((prefixes, n, next)) = key_prefixes(def, &def.primary_key, &b)?
    {
        if n == def.primary_key.len() {
            return Ok(Access::Points(prefixes));
        }
        if prefixes.len() == 1 {
            let ty = &def.columns[def.primary_key[n]].ty;
            let full = [codec::rows_prefix(def.id).as_slice(), &prefixes[0]].concat();
            let (start, end) = range_of(&full, ty, next.as_ref())?;
            return Ok(Access::PkRange { start, end });
        }
    }
    // The index whose leading columns are bounded best: most equality columns, then a range.
    let mut best: Option<(usize, Access)> = None;
    for ix in def.indexes.iter().filter(|ix| ix.is_btree()) {
        let Some((prefixes, n, next)) = key_prefixes(def, &ix.columns, &b)? else { continue };
        let score = n * 2 + usize::from(next.is_some());
        if best.as_ref().is_some_and(|(s, _)| *s >= score) {
            continue;
        }
        let base = codec::index_prefix(def.id, ix.id);
        let mut ranges = Vec::new();
        for p in &prefixes {
            let full = [base.as_slice(), p].concat();
            let ranges_of = match ix.columns.get(n) {
                Some(&c) => range_of(&full, &def.columns[c].ty, next.as_ref())?,
                None => (full.clone(), codec::prefix_end(&full)),
            };
            ranges.push(ranges_of);
        }
        best = Some((score, Access::Index { index: ix.clone(), ranges }));
    }
    Ok(best.map(|(_, a)| a).unwrap_or(Access::Full))
}

/// The scan operator.
pub struct ScanExec {
    def: Arc<TableDef>,
    view: BatchView,
    projection: Vec<usize>,
    access: Access,
    limit: Option<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for ScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanExec").field("table", &self.def.name).field("access", &self.access).finish()
    }
}

impl ScanExec {
    fn new(
        def: Arc<TableDef>,
        view: BatchView,
        table_schema: SchemaRef,
        projection: Vec<usize>,
        access: Access,
        limit: Option<usize>,
    ) -> datafusion::error::Result<Self> {
        let schema = Arc::new(table_schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self { def, view, projection, access, limit, schema, properties })
    }

    fn access_label(&self) -> String {
        match &self.access {
            Access::Full => "full scan".into(),
            Access::Points(k) => format!("primary key lookup ({} key{})", k.len(), if k.len() == 1 { "" } else { "s" }),
            Access::PkRange { .. } => "primary key range".into(),
            Access::Index { index, ranges } => {
                format!("index {} ({} range{})", index.name, ranges.len(), if ranges.len() == 1 { "" } else { "s" })
            }
        }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(
            f,
            "QuorumScan: table={}, access={}, projection=[{}]",
            self.def.name,
            self.access_label(),
            cols.join(", ")
        )?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "QuorumScan"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let (tx, rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
        let producer = Producer {
            def: self.def.clone(),
            view: self.view.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            limit: self.limit,
        };
        let access = self.access.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = producer.run(&access, &tx) {
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

/// Reads rows on a blocking thread and sends them as record batches.
struct Producer {
    def: Arc<TableDef>,
    view: BatchView,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
}

type Sender = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

struct Batcher<'a> {
    p: &'a Producer,
    tx: &'a Sender,
    /// Per projected column: its physical position, or `None` for the hidden key/hash.
    physical: Vec<Option<usize>>,
    decoder: RowDecoder,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    sent: usize,
    closed: bool,
    error: Option<SqlError>,
}

impl Batcher<'_> {
    /// Takes one row; `false` when the scan should stop.
    fn push(&mut self, key: &[u8], row: &[u8]) -> bool {
        self.rows.push((key.to_vec(), row.to_vec()));
        let full = self.limit_reached();
        if self.rows.len() >= BATCH_ROWS || full {
            self.flush();
        }
        !self.closed && !full && self.error.is_none()
    }

    fn limit_reached(&self) -> bool {
        self.p.limit.is_some_and(|l| self.sent + self.rows.len() >= l)
    }

    fn flush(&mut self) {
        if self.rows.is_empty() || self.closed {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        match self.build(&rows) {
            Ok(batch) => {
                self.sent += batch.num_rows();
                if self.tx.blocking_send(Ok(batch)).is_err() {
                    self.closed = true;
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn build(&self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<RecordBatch, SqlError> {
        let def = &self.p.def;
        let decoded: Vec<Vec<Value>> = rows.iter().map(|(_, r)| self.decoder.decode(r)).collect::<Result<_, _>>()?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.physical.len());
        for (out_i, phys) in self.physical.iter().enumerate() {
            match phys {
                Some(c) => columns.push(build_array(&def.columns[*c].ty, decoded.iter().map(|r| &r[*c]))?),
                None if self.p.schema.field(out_i).name() == crate::catalog::KEY_COLUMN => {
                    let mut b = BinaryBuilder::new();
                    for (k, _) in rows {
                        b.append_value(k);
                    }
                    columns.push(Arc::new(b.finish()));
                }
                None => {
                    let mut b = UInt64Builder::new();
                    for (_, r) in rows {
                        b.append_value(codec::row_hash(r));
                    }
                    columns.push(Arc::new(b.finish()));
                }
            }
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(self.p.schema.clone(), columns, &opts)?)
    }
}

impl Producer {
    fn run(&self, access: &Access, tx: &Sender) -> Result<(), SqlError> {
        let visible: Vec<usize> = self.def.visible().collect();
        let physical =
            self.projection.iter().map(|&i| if i < visible.len() { Some(visible[i]) } else { None }).collect();
        let mut b = Batcher {
            p: self,
            tx,
            physical,
            decoder: RowDecoder::new(&self.def),
            rows: Vec::new(),
            sent: 0,
            closed: false,
            error: None,
        };
        if self.limit == Some(0) {
            return Ok(());
        }
        let prefix = codec::rows_prefix(self.def.id);
        let table_id = self.def.id;
        match access {
            Access::Full => {
                self.view.scan(&prefix, &codec::prefix_end(&prefix), &mut |k, v| b.push(&k[prefix.len()..], v))?;
            }
            Access::PkRange { start, end } => {
                self.view.scan(start, end, &mut |k, v| b.push(&k[prefix.len()..], v))?;
            }
            Access::Points(keys) => {
                for k in keys {
                    if let Some(v) = self.view.get(&codec::row_key(table_id, k))?
                        && !b.push(k, &v)
                    {
                        break;
                    }
                }
            }
            Access::Index { index, ranges } => {
                let types: Vec<ColumnType> = index.columns.iter().map(|&c| self.def.columns[c].ty.clone()).collect();
                let base_len = codec::index_prefix(table_id, index.id).len();
                let mut err = None;
                'ranges: for (s, e) in ranges {
                    let mut row_keys = Vec::new();
                    self.view.scan(s, e, &mut |k, v| {
                        if !v.is_empty() {
                            row_keys.push(v.to_vec());
                            return true;
                        }
                        let mut rest = &k[base_len..];
                        for ty in &types {
                            if let Err(e) = codec::decode_key_value(&mut rest, ty) {
                                err = Some(e);
                                return false;
                            }
                        }
                        row_keys.push(rest.to_vec());
                        true
                    })?;
                    if let Some(e) = err.take() {
                        return Err(e);
                    }
                    for rk in row_keys {
                        if let Some(v) = self.view.get(&codec::row_key(table_id, &rk))?
                            && !b.push(&rk, &v)
                        {
                            break 'ranges;
                        }
                    }
                }
            }
        }
        b.flush();
        match b.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
