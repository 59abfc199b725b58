//! pgvector-style SQL: the distance operators and functions, and nearest-neighbour queries
//! answered by HNSW indexes.
//!
//! - `<->`, `<=>`, `<#>` are rewritten (in the SQL AST, before DataFusion sees them) into
//!   `l2_distance`, `cosine_distance` and `negative_inner_product`; those and `inner_product`,
//!   `vector_dims`, `l2_normalize` are DataFusion scalar functions over VECTOR columns,
//!   `'[1,2,3]'` text and arrays.
//! - [`VectorSearchRule`], a logical optimizer rule, finds `ORDER BY <distance>(column,
//!   constant) LIMIT k` over one table whose column has an HNSW index of that metric, and
//!   replaces the table scan with a [`VectorSearchExec`]: an index search that applies the
//!   query's `WHERE` predicates to candidates as the graph is explored, so `k` rows that pass
//!   come back (falling back to an exact scan when too few do). The sort above it then orders
//!   those `k` rows by exact distance. Without an index the plan stays an exact top-k scan.
//! - `x::vector` and `x::vector(n)` become calls of the `vector` function (text or arrays to a
//!   vector, with the dimension checked).
//! - `SET hnsw.ef_search = N` reaches the search through [`SearchSettings`].

use std::any::Any;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue};
use datafusion::datasource::{TableProvider, TableType, provider_as_source, source_as_provider};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, TableScan, TypeSignature, Volatility,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator, visit_expressions_mut};
use quorumdb_vector::{IndexSpec, Metric};

use crate::catalog::{IndexDef, TableDef};
use crate::error::SqlError;
use crate::provider::{BatchView, QuorumTable};
use crate::types::{Value, build_array};
use crate::vector_indexes::{SearchPath, VectorIndexes, spec_of};

/// Per-session search settings, carried in the DataFusion session config.
#[derive(Debug, Clone, Copy)]
pub struct SearchSettings {
    pub ef_search: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self { ef_search: IndexSpec::DEFAULT_EF_SEARCH }
    }
}

// ---------------------------------------------------------------------------------------
// Operators

fn call(name: &str, args: Vec<ast::Expr>) -> ast::Expr {
    ast::Expr::Function(ast::Function {
        name: ast::ObjectName::from(vec![ast::Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: ast::FunctionArguments::None,
        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|a| ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Rewrites `a <-> b`, `a <=> b`, `a <#> b` into distance function calls, and casts to
/// `vector` / `vector(n)` into calls of the `vector` function.
pub fn rewrite_operators(stmt: &mut ast::Statement) {
    let _ = visit_expressions_mut(stmt, |e| {
        if let ast::Expr::Cast { expr, data_type: ast::DataType::Custom(name, mods), .. } = e
            && name.to_string().eq_ignore_ascii_case("vector")
        {
            let mut args = vec![(**expr).clone()];
            if let Some(dim) = mods.first() {
                args.push(ast::Expr::value(ast::Value::Number(dim.clone(), false)));
            }
            *e = call("vector", args);
            return ControlFlow::<()>::Continue(());
        }
        if let ast::Expr::BinaryOp { left, op, right } = e {
            let f = match op {
                BinaryOperator::Custom(s) if s == "<->" => Some(Metric::L2),
                BinaryOperator::LtDashGt => Some(Metric::L2),
                BinaryOperator::Spaceship => Some(Metric::Cosine),
                BinaryOperator::Custom(s) if s == "<=>" => Some(Metric::Cosine),
                BinaryOperator::Custom(s) if s == "<#>" => Some(Metric::InnerProduct),
                _ => None,
            };
            if let Some(m) = f {
                *e = call(m.function(), vec![(**left).clone(), (**right).clone()]);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

// ---------------------------------------------------------------------------------------
// Functions

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FnKind {
    Distance(Metric),
    InnerProduct,
    Dims,
    Normalize,
    /// `vector(x [, dim])`: text or an array as a vector (what `::vector(n)` becomes).
    Cast,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorFn {
    name: &'static str,
    kind: FnKind,
    signature: Signature,
}

/// The vector functions, to register on a session.
pub fn functions() -> Vec<ScalarUDF> {
    let two = || Signature::any(2, Volatility::Immutable);
    let one = || Signature::any(1, Volatility::Immutable);
    [
        ("l2_distance", FnKind::Distance(Metric::L2), two()),
        ("cosine_distance", FnKind::Distance(Metric::Cosine), two()),
        ("negative_inner_product", FnKind::Distance(Metric::InnerProduct), two()),
        ("inner_product", FnKind::InnerProduct, two()),
        ("vector_dims", FnKind::Dims, one()),
        ("l2_normalize", FnKind::Normalize, one()),
        (
            "vector",
            FnKind::Cast,
            Signature::one_of(vec![TypeSignature::Any(1), TypeSignature::Any(2)], Volatility::Immutable),
        ),
    ]
    .into_iter()
    .map(|(name, kind, signature)| ScalarUDF::new_from_impl(VectorFn { name, kind, signature }))
    .collect()
}

/// The metric of a distance function name, for the optimizer rule.
fn distance_metric(name: &str) -> Option<Metric> {
    [Metric::L2, Metric::Cosine, Metric::InnerProduct].into_iter().find(|m| m.function() == name)
}

fn df_err(e: impl Into<SqlError>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

/// One argument's vectors, read in place where possible.
enum Vectors {
    One(Option<Vec<f32>>),
    Fixed { list: ArrayRef, values: Float32Array, dim: usize },
    Rows(Vec<Option<Vec<f32>>>),
}

impl Vectors {
    fn from_arg(arg: &ColumnarValue) -> datafusion::error::Result<Self> {
        match arg {
            ColumnarValue::Scalar(s) => {
                let a = s.to_array_of_size(1)?;
                let mut rows = Self::rows(&a)?;
                Ok(Self::One(rows.pop().flatten()))
            }
            ColumnarValue::Array(a) => match a.data_type() {
                DataType::FixedSizeList(f, dim) if f.data_type() == &DataType::Float32 => {
                    let values = a.as_fixed_size_list().values().as_primitive::<Float32Type>().clone();
                    Ok(Self::Fixed { list: a.clone(), values, dim: *dim as usize })
                }
                _ => Ok(Self::Rows(Self::rows(a)?)),
            },
        }
    }

    fn rows(a: &ArrayRef) -> datafusion::error::Result<Vec<Option<Vec<f32>>>> {
        crate::coerce::vectors_of(a, None, "function argument").map_err(df_err)
    }

    fn get(&self, i: usize) -> Option<&[f32]> {
        match self {
            Self::One(v) => v.as_deref(),
            Self::Fixed { list, values, dim } => {
                if list.is_null(i) {
                    None
                } else {
                    Some(&values.values()[i * dim..(i + 1) * dim])
                }
            }
            Self::Rows(r) => r[i].as_deref(),
        }
    }
}

fn same_dims(a: &[f32], b: &[f32]) -> datafusion::error::Result<()> {
    if a.len() != b.len() {
        return Err(df_err(SqlError::DataException(format!(
            "different vector dimensions {} and {}",
            a.len(),
            b.len()
        ))));
    }
    Ok(())
}

impl ScalarUDFImpl for VectorFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(match self.kind {
            FnKind::Distance(_) | FnKind::InnerProduct => DataType::Float64,
            FnKind::Dims => DataType::Int32,
            FnKind::Cast => DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            FnKind::Normalize => match args.first() {
                Some(t @ DataType::FixedSizeList(_, _)) => t.clone(),
                _ => DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            },
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let n = args.number_rows;
        let vector_args = if self.kind == FnKind::Cast { 1 } else { args.args.len() };
        let vs: Vec<Vectors> =
            args.args.iter().take(vector_args).map(Vectors::from_arg).collect::<datafusion::error::Result<_>>()?;
        let out: ArrayRef = match self.kind {
            FnKind::Distance(_) | FnKind::InnerProduct => {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(match (vs[0].get(i), vs[1].get(i)) {
                        (Some(a), Some(b)) => {
                            same_dims(a, b)?;
                            Some(match self.kind {
                                FnKind::Distance(m) => m.distance(a, b),
                                _ => f64::from(quorumdb_vector::kernels::dot(a, b)),
                            })
                        }
                        _ => None,
                    });
                }
                Arc::new(Float64Array::from(out))
            }
            FnKind::Dims => {
                Arc::new(Int32Array::from((0..n).map(|i| vs[0].get(i).map(|v| v.len() as i32)).collect::<Vec<_>>()))
            }
            FnKind::Cast => {
                let dim = match args.args.get(1) {
                    None => None,
                    Some(ColumnarValue::Scalar(s)) => Some(
                        s.to_string()
                            .parse::<usize>()
                            .map_err(|_| df_err(SqlError::InvalidParameter(format!("bad vector dimension {s}"))))?,
                    ),
                    Some(_) => {
                        return Err(df_err(SqlError::InvalidParameter(
                            "the vector dimension must be a constant".into(),
                        )));
                    }
                };
                let mut lists = Vec::with_capacity(n);
                for i in 0..n {
                    let v = vs[0].get(i);
                    if let (Some(v), Some(d)) = (v, dim) {
                        quorumdb_vector::metric::validate(v, Some(d)).map_err(df_err)?;
                    }
                    lists.push(v.map(|v| v.iter().map(|x| Some(*x)).collect::<Vec<_>>()));
                }
                Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<Float32Type, _, _>(lists))
            }
            FnKind::Normalize => {
                let rows: Vec<Value> = (0..n)
                    .map(|i| {
                        vs[0].get(i).map_or(Value::Null, |v| Value::Vector(quorumdb_vector::metric::l2_normalize(v)))
                    })
                    .collect();
                match args.return_field.data_type() {
                    DataType::FixedSizeList(_, dim) => {
                        build_array(&crate::types::ColumnType::Vector { dim: *dim as u32 }, rows.iter())
                            .map_err(df_err)?
                    }
                    _ => {
                        let lists = rows.iter().map(|v| match v {
                            Value::Vector(v) => Some(v.iter().map(|x| Some(*x)).collect::<Vec<_>>()),
                            _ => None,
                        });
                        Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<Float32Type, _, _>(lists))
                    }
                }
            }
        };
        // A function of constants only: one row.
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

// ---------------------------------------------------------------------------------------
// The optimizer rule

/// The largest `LIMIT` answered through the index.
const MAX_INDEX_K: usize = 10_000;

/// Replaces the scan under `ORDER BY distance(col, const) LIMIT k` with an HNSW search.
#[derive(Debug, Default)]
pub struct VectorSearchRule;

/// What the rule found under a sort.
struct Candidate {
    column: String,
    metric: Metric,
    query: Vec<f32>,
    k: usize,
    predicates: Vec<Expr>,
}

/// The query vector of a constant argument.
fn constant_vector(e: &Expr) -> Option<Vec<f32>> {
    let Expr::Literal(s, _) = e else { return None };
    let a = s.to_array_of_size(1).ok()?;
    Vectors::rows(&a).ok()?.pop().flatten()
}

/// `distance(column, constant)` (or reversed): the column name, metric and query vector.
fn distance_call(e: &Expr) -> Option<(String, Metric, Vec<f32>)> {
    let Expr::ScalarFunction(f) = e else { return None };
    let metric = distance_metric(f.func.name())?;
    if !(f.func.inner().as_ref() as &dyn Any).is::<VectorFn>() || f.args.len() != 2 {
        return None;
    }
    match (&f.args[0], &f.args[1]) {
        (Expr::Column(c), lit) | (lit, Expr::Column(c)) => Some((c.name.clone(), metric, constant_vector(lit)?)),
        _ => None,
    }
}

fn unqualified(e: Expr) -> datafusion::error::Result<Expr> {
    e.transform(|x| match x {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

impl VectorSearchRule {
    /// Follows the single-input chain under a sort to its table scan, resolving the sort key
    /// through projections and collecting filters. `None` if anything else is in the way.
    fn candidate(sort_expr: &Expr, fetch: usize, input: &LogicalPlan) -> Option<(Candidate, TableScan)> {
        let mut key = sort_expr.clone().unalias_nested().data;
        let mut predicates = Vec::new();
        let mut node = input;
        loop {
            match node {
                LogicalPlan::Projection(p) => {
                    if let Expr::Column(c) = &key {
                        let i = p.schema.index_of_column(c).ok()?;
                        key = p.expr[i].clone().unalias();
                    }
                    node = p.input.as_ref();
                }
                LogicalPlan::Filter(f) => {
                    predicates.push(f.predicate.clone());
                    node = f.input.as_ref();
                }
                LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
                LogicalPlan::TableScan(ts) => {
                    let (column, metric, query) = distance_call(&key.unalias_nested().data)?;
                    predicates.extend(ts.filters.iter().cloned());
                    let c = Candidate { column, metric, query, k: fetch, predicates };
                    return Some((c, ts.clone()));
                }
                _ => return None,
            }
        }
    }

    fn rewrite_sort(plan: LogicalPlan) -> datafusion::error::Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Sort(sort) = &plan else { return Ok(Transformed::no(plan)) };
        let (Some(fetch), [first]) = (sort.fetch, sort.expr.as_slice()) else { return Ok(Transformed::no(plan)) };
        // A huge k is a sort of most of the table: the exact top-k scan does that better.
        if !first.asc || fetch == 0 || fetch > MAX_INDEX_K {
            return Ok(Transformed::no(plan));
        }
        let Some((cand, scan)) = Self::candidate(&first.expr, fetch, &sort.input) else {
            return Ok(Transformed::no(plan));
        };
        let Ok(provider) = source_as_provider(&scan.source) else { return Ok(Transformed::no(plan)) };
        let Some(table) = (provider.as_ref() as &dyn Any).downcast_ref::<QuorumTable>() else {
            return Ok(Transformed::no(plan));
        };
        if table.hidden() || table.view().has_pending(table.def().id) {
            return Ok(Transformed::no(plan));
        }
        let def = table.def().clone();
        let Some(col) = def.column(&cand.column) else { return Ok(Transformed::no(plan)) };
        let Some(index) = def.indexes.iter().find(|ix| {
            ix.columns == [col]
                && spec_of(&def, ix).is_some_and(|s| s.metric == cand.metric && s.dim == cand.query.len())
        }) else {
            return Ok(Transformed::no(plan));
        };
        // Every predicate must be about this table's columns alone.
        let mut predicates = Vec::new();
        for p in cand.predicates {
            let p = unqualified(p)?;
            let mut foreign = false;
            p.apply(|x| {
                match x {
                    Expr::Column(c) if def.column(&c.name).is_none() => foreign = true,
                    Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..) => foreign = true,
                    _ => {}
                }
                Ok(if foreign { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            })?;
            if foreign {
                return Ok(Transformed::no(plan));
            }
            predicates.push(p);
        }
        let search = Arc::new(VectorSearchTable {
            table: Arc::new(table.clone()),
            index: index.clone(),
            query: cand.query,
            k: cand.k,
            predicates,
        });
        let new_scan =
            LogicalPlan::TableScan(TableScan { source: provider_as_source(search), fetch: None, ..scan.clone() });
        plan.transform_down(|n| match n {
            LogicalPlan::TableScan(ts) if ts.table_name == scan.table_name => Ok(Transformed::yes(new_scan.clone())),
            other => Ok(Transformed::no(other)),
        })
    }
}

impl OptimizerRule for VectorSearchRule {
    fn name(&self) -> &str {
        "quorumdb_vector_search"
    }
    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> datafusion::error::Result<Transformed<LogicalPlan>> {
        plan.transform_down(Self::rewrite_sort)
    }
}

// ---------------------------------------------------------------------------------------
// The search as a table and an operator

/// A table whose scan is an HNSW search (what the rule puts in place of a [`QuorumTable`]).
#[derive(Debug)]
pub struct VectorSearchTable {
    table: Arc<QuorumTable>,
    index: IndexDef,
    query: Vec<f32>,
    k: usize,
    /// Unqualified predicates over the table's columns.
    predicates: Vec<Expr>,
}

#[async_trait]
impl TableProvider for VectorSearchTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let predicate = match self.predicates.iter().cloned().reduce(Expr::and) {
            Some(p) => {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                Some(state.create_physical_expr(p, &df_schema)?)
            }
            None => None,
        };
        let vectors = state
            .config()
            .get_extension::<VectorIndexes>()
            .ok_or_else(|| DataFusionError::Internal("no vector indexes in the session".into()))?;
        let ef = state.config().get_extension::<SearchSettings>().map_or(IndexSpec::DEFAULT_EF_SEARCH, |s| s.ef_search);
        let out_schema = Arc::new(schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(out_schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(VectorSearchExec {
            def: self.table.def().clone(),
            view: self.table.view().clone(),
            vectors,
            index: self.index.clone(),
            query: self.query.clone(),
            k: self.k,
            ef,
            predicate,
            predicate_text: self.predicates.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" AND "),
            projection,
            table_schema: schema,
            schema: out_schema,
            properties,
            path: Arc::default(),
        }))
    }
}

/// Runs one HNSW search and returns the `k` rows found.
pub struct VectorSearchExec {
    def: Arc<TableDef>,
    view: BatchView,
    vectors: Arc<VectorIndexes>,
    index: IndexDef,
    query: Vec<f32>,
    k: usize,
    ef: usize,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    predicate_text: String,
    projection: Vec<usize>,
    /// The table's visible columns (what the predicate is evaluated against).
    table_schema: SchemaRef,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// How the last execution was answered (shown by EXPLAIN ANALYZE).
    path: Arc<Mutex<Option<SearchPath>>>,
}

impl fmt::Debug for VectorSearchExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorSearchExec").field("table", &self.def.name).field("index", &self.index.name).finish()
    }
}

impl DisplayAs for VectorSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        let metric = spec_of(&self.def, &self.index).map_or("?", |s| s.metric.opclass());
        write!(
            f,
            "QuorumVectorSearch: table={}, index={} ({metric}), k={}, ef_search={}",
            self.def.name, self.index.name, self.k, self.ef
        )?;
        if !self.predicate_text.is_empty() {
            write!(f, ", filter=[{}]", self.predicate_text)?;
        }
        write!(f, ", projection=[{}]", cols.join(", "))?;
        if let Some(p) = *self.path.lock() {
            write!(f, ", path={}", p.name())?;
        }
        Ok(())
    }
}

/// Evaluates a predicate on one physical row.
fn eval_row(def: &TableDef, schema: &SchemaRef, pred: &Arc<dyn PhysicalExpr>, row: &[Value]) -> crate::Result<bool> {
    let arrays = def
        .visible()
        .map(|c| build_array(&def.columns[c].ty, std::iter::once(&row[c])))
        .collect::<crate::Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let out = pred.evaluate(&batch)?.into_array(1)?;
    let b = out.as_boolean_opt().ok_or_else(|| SqlError::Query("WHERE must be a boolean expression".into()))?;
    Ok(b.len() == 1 && b.is_valid(0) && b.value(0))
}

impl ExecutionPlan for VectorSearchExec {
    fn name(&self) -> &str {
        "QuorumVectorSearch"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        match &self.predicate {
            Some(p) => f(p),
            None => Ok(TreeNodeRecursion::Continue),
        }
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
        let def = self.def.clone();
        let view = self.view.clone();
        let vectors = self.vectors.clone();
        let index = self.index.clone();
        let query = self.query.clone();
        let (k, ef) = (self.k, self.ef);
        let predicate = self.predicate.clone();
        let table_schema = self.table_schema.clone();
        let schema = self.schema.clone();
        let projection = self.projection.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path_slot = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let run = || -> crate::Result<(RecordBatch, SearchPath)> {
                let pred_def = def.clone();
                let pred = predicate.as_ref().map(|p| move |row: &[Value]| eval_row(&pred_def, &table_schema, p, row));
                let (found, path) = vectors.search(
                    &view,
                    &def,
                    &index,
                    &query,
                    k,
                    ef,
                    pred.as_ref().map(|p| p as &dyn Fn(&[Value]) -> crate::Result<bool>),
                )?;
                let visible: Vec<usize> = def.visible().collect();
                let arrays = projection
                    .iter()
                    .map(|&i| {
                        let c = visible[i];
                        build_array(&def.columns[c].ty, found.iter().map(|f| &f.row[c]))
                    })
                    .collect::<crate::Result<Vec<_>>>()?;
                let batch = RecordBatch::try_new_with_options(
                    schema.clone(),
                    arrays,
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(found.len())),
                )?;
                *path_slot.lock() = Some(path);
                Ok((batch, path))
            };
            let _ = tx.send(run());
        });
        let stream = futures::stream::once(async move {
            match rx.await {
                Ok(Ok((batch, _))) => Ok(batch),
                Ok(Err(e)) => Err(DataFusionError::External(Box::new(e))),
                Err(_) => Err(DataFusionError::Internal("vector search thread ended".into())),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}
