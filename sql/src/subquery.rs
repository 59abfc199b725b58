//! Correlated scalar subqueries that DataFusion's own rules cannot turn into joins — those whose
//! correlation is not an equality, such as `(SELECT count(*) FROM t1 AS x WHERE x.b < t1.b)` —
//! rewritten into joins over the domain of the outer values, so they run instead of failing
//! with "Physical plan does not support logical expression ScalarSubquery".
//!
//! For a subquery `S(o) = (SELECT f(aggs) FROM I WHERE p(o, I))` over outer columns `o` of the
//! node's input `P` (a projection, filter or sort):
//!
//! ```text
//! D = SELECT DISTINCT o AS k FROM P                          -- every outer value once
//! J = SELECT k, f(aggs FILTER (WHERE m IS NOT NULL)) AS v
//!     FROM D LEFT JOIN (SELECT *, true AS m FROM I) ON p(k, I)
//!     GROUP BY k
//! P' = P LEFT JOIN J ON o IS NOT DISTINCT FROM k             -- S(o) is J.v
//! ```
//!
//! The marker `m` keeps an outer value without matching rows from counting the null row the
//! left join gives it (`count(*)` is 0 there, `sum` is null), as the subquery would answer.
//! Only aggregate subqueries (one row per outer value by construction) are rewritten; anything
//! else is left to DataFusion.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality, Result, ScalarValue};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::logical_plan::Sort as SortPlan;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Projection, SortExpr, Subquery, lit,
    when,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Numbers the columns each rewrite adds, so nested rewrites never share a name.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The optimizer rule; it runs before DataFusion's own decorrelation.
#[derive(Debug, Default)]
pub struct CorrelatedSubqueryRule;

impl OptimizerRule for CorrelatedSubqueryRule {
    fn name(&self) -> &str {
        "quorumdb_correlated_subquery"
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        // Innermost first: a subquery's own correlated subqueries become joins before it is looked at.
        plan.transform_up_with_subqueries(rewrite_node)
    }
}

fn rewrite_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if !matches!(plan, LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::Sort(_)) {
        return Ok(Transformed::no(plan));
    }
    // A filter's top-level `[NOT] IN` / `[NOT] EXISTS` conjuncts are DataFusion's (semi and anti
    // joins); elsewhere (a select list, under OR or CASE) they are ours.
    let mut roots: Vec<Expr> = Vec::new();
    for e in plan.expressions() {
        match &plan {
            LogicalPlan::Filter(_) => {
                roots.extend(split_conjunction(&e).into_iter().filter(|c| !is_predicate_subquery(c)).cloned())
            }
            _ => roots.push(e),
        }
    }
    let mut candidates: Vec<Expr> = Vec::new();
    for e in &roots {
        e.apply(|e| {
            let ours = match e {
                Expr::ScalarSubquery(sq) => !sq.outer_ref_columns.is_empty(),
                Expr::InSubquery(i) => i.subquery.outer_ref_columns.is_empty() && !has_subquery(&i.expr),
                Expr::Exists(x) => x.subquery.outer_ref_columns.is_empty(),
                _ => false,
            };
            if ours && !candidates.contains(e) {
                candidates.push(e.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
    }
    if candidates.is_empty() {
        return Ok(Transformed::no(plan));
    }
    let input = plan.inputs()[0].clone();
    let mut joined = input.clone();
    let mut replaced: Vec<(Expr, Expr)> = Vec::new();
    for candidate in candidates {
        let done = match &candidate {
            Expr::ScalarSubquery(sq) => decorrelate(&input, joined.clone(), sq)?,
            Expr::InSubquery(i) => membership(joined.clone(), &i.expr, &i.subquery, i.negated)?,
            Expr::Exists(x) => existence(joined.clone(), &x.subquery, x.negated)?,
            _ => None,
        };
        if let Some((plan, value)) = done {
            joined = plan;
            replaced.push((candidate, value));
        }
    }
    if replaced.is_empty() {
        return Ok(Transformed::no(plan));
    }
    let replace = |e: Expr| -> Result<Expr> {
        e.transform_down(|e| match replaced.iter().find(|(s, _)| *s == e) {
            Some((_, value)) => Ok(Transformed::yes(value.clone())),
            None => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
    };
    // The node's own output keeps its schema: a projection keeps every column's name, a filter
    // or sort drops the joined columns again.
    let keep_input = |plan: LogicalPlan| -> Result<LogicalPlan> {
        let cols: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
        LogicalPlanBuilder::from(plan).project(cols)?.build()
    };
    let out = match plan {
        LogicalPlan::Projection(p) => {
            let mut exprs = Vec::with_capacity(p.expr.len());
            for (i, e) in p.expr.into_iter().enumerate() {
                let new = replace(e.clone())?;
                if new == e {
                    exprs.push(new);
                } else {
                    let (qualifier, field) = p.schema.qualified_field(i);
                    exprs.push(new.unalias().alias_qualified(qualifier.cloned(), field.name()));
                }
            }
            LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(joined))?)
        }
        LogicalPlan::Filter(f) => {
            keep_input(LogicalPlan::Filter(Filter::try_new(replace(f.predicate)?, Arc::new(joined))?))?
        }
        LogicalPlan::Sort(s) => {
            let mut exprs = Vec::with_capacity(s.expr.len());
            for sort in s.expr {
                exprs.push(SortExpr { expr: replace(sort.expr)?, asc: sort.asc, nulls_first: sort.nulls_first });
            }
            keep_input(LogicalPlan::Sort(SortPlan { expr: exprs, input: Arc::new(joined), fetch: s.fetch }))?
        }
        other => return Ok(Transformed::no(other)),
    };
    Ok(Transformed::yes(out))
}

/// `joined` (which has every column of `input`) left-joined with the subquery's value per outer
/// value, and the column holding it; `None` when the subquery is not of the shape handled.
fn decorrelate(input: &LogicalPlan, joined: LogicalPlan, sq: &Subquery) -> Result<Option<(LogicalPlan, Expr)>> {
    // Projection(value) <- Aggregate(no GROUP BY) <- Filter(correlation) <- I (uncorrelated)
    let (value, aggregate) = match sq.subquery.as_ref() {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Aggregate(a) if p.expr.len() == 1 => (p.expr[0].clone(), a),
            _ => return Ok(None),
        },
        LogicalPlan::Aggregate(a) if a.aggr_expr.len() == 1 => {
            (Expr::Column(Column::from_name(a.aggr_expr[0].name_for_alias()?)), a)
        }
        _ => return Ok(None),
    };
    let LogicalPlan::Filter(filter) = aggregate.input.as_ref() else { return Ok(None) };
    if !aggregate.group_expr.is_empty()
        || aggregate.aggr_expr.iter().any(has_outer)
        || plan_has_outer_or_subquery(&filter.input)?
    {
        return Ok(None);
    }
    // The correlated conjuncts become the join condition; the others (which may hold their own
    // subqueries, such as an EXISTS over the inner rows) stay a filter of the inner side.
    let (correlated, local): (Vec<&Expr>, Vec<&Expr>) =
        split_conjunction(&filter.predicate).into_iter().partition(|e| has_outer(e));
    if correlated.iter().any(|e| has_subquery(e)) {
        return Ok(None);
    }
    // Equalities alone (`x.b = t.b`) are DataFusion's: it groups the inner side by them and
    // joins once, without the distinct outer values.
    if !has_outer(&value) && correlated.iter().all(|e| is_outer_equality(e)) {
        return Ok(None);
    }
    let correlation = conjunction(correlated.into_iter().cloned()).unwrap_or(lit(true));
    let inner = match conjunction(local.into_iter().cloned()) {
        Some(p) => LogicalPlan::Filter(Filter::try_new(p, filter.input.clone())?),
        None => filter.input.as_ref().clone(),
    };
    // The outer columns, each of which must be a column of this node's input.
    let mut outer: Vec<Column> = Vec::new();
    for e in [&correlation, &value] {
        e.apply(|e| {
            if let Expr::OuterReferenceColumn(_, c) = e
                && !outer.contains(c)
            {
                outer.push(c.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
    }
    if outer.is_empty() || outer.iter().any(|c| !input.schema().has_column(c)) {
        return Ok(None);
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let keys: Vec<String> = (0..outer.len()).map(|i| format!("__qdb_sq{n}_k{i}")).collect();
    let mark = format!("__qdb_sq{n}_m");
    let value_name = format!("__qdb_sq{n}_v");
    let to_key = |e: Expr| -> Result<Expr> {
        e.transform_up(|e| match &e {
            Expr::OuterReferenceColumn(_, c) => {
                let i = outer.iter().position(|o| o == c).unwrap_or_default();
                Ok(Transformed::yes(Expr::Column(Column::from_name(&keys[i]))))
            }
            _ => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
    };

    // D: the distinct outer values.
    let domain = LogicalPlanBuilder::from(input.clone())
        .aggregate(outer.iter().zip(&keys).map(|(c, k)| Expr::Column(c.clone()).alias(k)), Vec::<Expr>::new())?
        .build()?;
    // I with the marker column.
    let mut inner_cols: Vec<Expr> = inner.schema().columns().into_iter().map(Expr::Column).collect();
    inner_cols.push(lit(true).alias(&mark));
    let marked = LogicalPlanBuilder::from(inner).project(inner_cols)?.build()?;
    // J: the aggregates per outer value, counting only rows that matched.
    let matched = Expr::Column(Column::from_name(&mark)).is_not_null();
    let mut aggs = Vec::with_capacity(aggregate.aggr_expr.len());
    for a in &aggregate.aggr_expr {
        let name = a.name_for_alias()?;
        let Expr::AggregateFunction(AggregateFunction { func, params }) = a.clone().unalias() else {
            return Ok(None);
        };
        let mut params = params;
        params.filter = Some(Box::new(match params.filter.take() {
            Some(f) => matched.clone().and(*f),
            None => matched.clone(),
        }));
        aggs.push(Expr::AggregateFunction(AggregateFunction { func, params }).alias(name));
    }
    let key_cols: Vec<Expr> = keys.iter().map(|k| Expr::Column(Column::from_name(k))).collect();
    let grouped = LogicalPlanBuilder::from(domain).join_on(marked, JoinType::Left, [to_key(correlation)?])?.build()?;
    let grouped = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(grouped), key_cols.clone(), aggs)?);
    let mut projected = key_cols;
    projected.push(to_key(value)?.alias(&value_name));
    let values = LogicalPlanBuilder::from(grouped).project(projected)?.build()?;
    // P': every outer row with its value.
    let plan = LogicalPlanBuilder::from(joined)
        .join_detailed(
            values,
            JoinType::Left,
            (outer.clone(), keys.iter().map(Column::from_name).collect::<Vec<_>>()),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    Ok(Some((plan, Expr::Column(Column::from_name(value_name)))))
}

/// `x [NOT] IN (uncorrelated S)` as joins: `joined` with S's row count and non-null count (one
/// row) and a left join to S's distinct values. SQL's three values: false when S is empty,
/// null when x is null, true on a match, null when S holds a null, false otherwise.
fn membership(joined: LogicalPlan, x: &Expr, sub: &Subquery, negated: bool) -> Result<Option<(LogicalPlan, Expr)>> {
    let s = sub.subquery.as_ref();
    if s.schema().fields().len() != 1 {
        return Ok(None);
    }
    let c = Expr::Column(Column::from(s.schema().qualified_field(0)));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let [rows, values, value, hit] = ["n", "nn", "v", "hit"].map(|k| format!("__qdb_in{n}_{k}"));
    let col = |name: &str| Expr::Column(Column::from_name(name));
    let stats = LogicalPlanBuilder::from(s.clone())
        .aggregate(Vec::<Expr>::new(), vec![count(lit(1)).alias(&rows), count(c.clone()).alias(&values)])?
        .build()?;
    let members = LogicalPlanBuilder::from(s.clone())
        .filter(c.clone().is_not_null())?
        .aggregate(vec![c.alias(&value)], Vec::<Expr>::new())?
        .project(vec![col(&value), lit(true).alias(&hit)])?
        .build()?;
    let plan = LogicalPlanBuilder::from(joined)
        .cross_join(stats)?
        .join_on(members, JoinType::Left, [x.clone().eq(col(&value))])?
        .build()?;
    let unknown = lit(ScalarValue::Boolean(None));
    let result = when(col(&rows).eq(lit(0i64)), lit(false))
        .when(x.clone().is_null(), unknown.clone())
        .when(col(&hit).is_not_null(), lit(true))
        .when(col(&values).lt(col(&rows)), unknown)
        .otherwise(lit(false))?;
    Ok(Some((plan, if negated { !result } else { result })))
}

/// `[NOT] EXISTS (uncorrelated S)`: `joined` with S's row count.
fn existence(joined: LogicalPlan, sub: &Subquery, negated: bool) -> Result<Option<(LogicalPlan, Expr)>> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let rows = format!("__qdb_ex{n}_n");
    let stats = LogicalPlanBuilder::from(sub.subquery.as_ref().clone())
        .aggregate(Vec::<Expr>::new(), vec![count(lit(1)).alias(&rows)])?
        .build()?;
    let plan = LogicalPlanBuilder::from(joined).cross_join(stats)?.build()?;
    let rows = Expr::Column(Column::from_name(rows));
    Ok(Some((plan, if negated { rows.eq(lit(0i64)) } else { rows.gt(lit(0i64)) })))
}

/// `[NOT] IN (…)` or `[NOT] EXISTS (…)` as a whole predicate.
fn is_predicate_subquery(e: &Expr) -> bool {
    match e {
        Expr::InSubquery(_) | Expr::Exists(_) => true,
        Expr::Not(inner) => matches!(inner.as_ref(), Expr::InSubquery(_) | Expr::Exists(_)),
        _ => false,
    }
}

/// `inner = outer` (either way round), with only the outer side correlated.
fn is_outer_equality(e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            let outer = |e: &Expr| matches!(e, Expr::OuterReferenceColumn(..));
            (outer(&b.left) && !has_outer(&b.right)) || (outer(&b.right) && !has_outer(&b.left))
        }
        _ => false,
    }
}

fn has_outer(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..)))).unwrap_or(true)
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)))).unwrap_or(true)
}

/// Whether any node of `plan` refers to an outer column or still holds a subquery expression.
fn plan_has_outer_or_subquery(plan: &LogicalPlan) -> Result<bool> {
    plan.exists(|node| Ok(node.expressions().iter().any(|e| has_outer(e) || has_subquery(e))))
}
