//! Result column names as PostgreSQL gives them, and select lists that repeat a name.
//!
//! PostgreSQL names an output column after its alias, else after what the expression is
//! (`count` for `count(*)`, `a` for `t.a` or `a::text`, `case`, `exists`, `int4` for `1::int`,
//! `?column?` for anything else), and a select list may repeat names (`SELECT a, a`).
//! DataFusion names columns after the expression's text and refuses repeated names. So before a
//! query is planned, [`prepare`] works out PostgreSQL's names and gives internal aliases to the
//! items DataFusion would otherwise refuse; after it is planned, [`OutputNames::apply`] puts
//! PostgreSQL's names on the result.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, ObjectName, OrderByKind, Query, Select, SelectItem, SetExpr, Statement, UnaryOperator,
    visit_expressions, visit_expressions_mut,
};

use crate::error::Result;

/// Prefix of the aliases [`prepare`] adds; never shown to a client.
const INTERNAL: &str = "__qdb_col";

/// PostgreSQL's name for each select item of a query (`None` for a `*` item), and how many
/// hidden columns [`prepare`] appended for `ORDER BY` (dropped from the result).
#[derive(Debug, Clone)]
pub struct OutputNames(Vec<Option<String>>, usize);

/// Names a query's output columns the way PostgreSQL does, adding internal aliases where the
/// select list repeats a name (or holds subqueries, which DataFusion all names alike).
/// `None` when `stmt` is not a query.
pub fn prepare(stmt: &mut Statement) -> Option<OutputNames> {
    let Statement::Query(query) = stmt else { return None };
    let names = first_select(&query.body).map(|s| s.projection.iter().map(item_name).collect())?;
    let hidden = hide_order_subqueries(query);
    alias_repeats(&mut query.body);
    Some(OutputNames(names, hidden))
}

/// DataFusion plans a correlated subquery in a projection or a filter but not in a sort: an
/// `ORDER BY` item holding one is computed as a hidden select item (PostgreSQL's "resjunk"
/// column) and sorted by name. Returns how many were added.
fn hide_order_subqueries(query: &mut Query) -> usize {
    let (Some(order), SetExpr::Select(select)) = (&mut query.order_by, query.body.as_mut()) else { return 0 };
    let OrderByKind::Expressions(items) = &mut order.kind else { return 0 };
    if select.distinct.is_some() {
        return 0;
    }
    let mut hidden = 0;
    for item in items.iter_mut().filter(|i| has_subquery(&i.expr)) {
        let alias = Ident::new(format!("{INTERNAL}_order{hidden}"));
        let expr = std::mem::replace(&mut item.expr, Expr::Identifier(alias.clone()));
        select.projection.push(SelectItem::ExprWithAlias { expr, alias });
        hidden += 1;
    }
    hidden
}

impl OutputNames {
    /// `schema` with PostgreSQL's names; unchanged when its columns cannot be matched to the
    /// select items (more than one `*`).
    pub fn apply(&self, schema: &SchemaRef) -> SchemaRef {
        let stars = self.0.iter().filter(|n| n.is_none()).count();
        let fields = &schema.fields()[..schema.fields().len().saturating_sub(self.1)];
        if stars > 1 || fields.len() + stars < self.0.len() {
            return Arc::new(Schema::new_with_metadata(fields.to_vec(), schema.metadata().clone()));
        }
        let star_width = fields.len() + stars - self.0.len();
        let mut renamed = Vec::with_capacity(fields.len());
        let mut i = 0;
        for name in &self.0 {
            match name {
                Some(name) => {
                    renamed.push(Arc::new(Field::clone(&fields[i]).with_name(name)));
                    i += 1;
                }
                None => {
                    renamed.extend(fields[i..i + star_width].iter().cloned());
                    i += star_width;
                }
            }
        }
        Arc::new(Schema::new_with_metadata(renamed, schema.metadata().clone()))
    }
}

/// The batches of a result under the `schema` [`plan_named`] gave (without hidden columns).
pub fn rename_batches(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let n = schema.fields().len();
    batches
        .into_iter()
        .map(|b| {
            // Each batch keeps its own column types (a physical plan may widen a union's).
            let fields: Vec<Field> = (b.schema().fields()[..n].iter().zip(schema.fields()))
                .map(|(f, named)| Field::clone(f).with_name(named.name()))
                .collect();
            let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            Ok(RecordBatch::try_new(schema, b.columns()[..n].to_vec())?)
        })
        .collect()
}

/// Plans `stmt` on `state`, a query with the internal aliases [`prepare`] adds: the plan, and
/// the schema of its result — for a query under PostgreSQL's names and without the hidden
/// `ORDER BY` columns the plan has last; for any other statement the plan's own.
pub async fn plan_named(
    state: &SessionState,
    mut stmt: Statement,
) -> datafusion::error::Result<(LogicalPlan, SchemaRef)> {
    let names = prepare(&mut stmt);
    let plan = Box::pin(state.statement_to_plan(DfStatement::Statement(Box::new(stmt)))).await?;
    let arrow = Arc::new(plan.schema().as_arrow().clone());
    let named = names.map_or_else(|| arrow.clone(), |n| n.apply(&arrow));
    Ok((plan, named))
}

/// The select whose items name a set operation's result: the leftmost.
fn first_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(q) => first_select(&q.body),
        SetExpr::SetOperation { left, .. } => first_select(left),
        _ => None,
    }
}

/// Gives every select of `body` internal aliases where DataFusion would refuse its names.
fn alias_repeats(body: &mut SetExpr) {
    match body {
        SetExpr::Select(s) => alias_select(s),
        SetExpr::Query(q) => alias_repeats(&mut q.body),
        SetExpr::SetOperation { left, right, .. } => {
            alias_repeats(left);
            alias_repeats(right);
        }
        _ => {}
    }
}

fn alias_select(select: &mut Select) {
    let stars = select.projection.iter().filter(|i| item_name(i).is_none()).count();
    if stars > 1 {
        return; // the renamed result could not be matched up: leave DataFusion's rules
    }
    let mut seen = HashSet::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let (key, expr, subquery) = match &*item {
            SelectItem::UnnamedExpr(e) => (name_key(e), e, has_subquery(e)),
            SelectItem::ExprWithAlias { expr, alias } => (ident_name(alias), expr, false),
            _ => continue,
        };
        if !seen.insert(key) || subquery {
            let expr = expr.clone();
            *item = SelectItem::ExprWithAlias { expr, alias: Ident::new(format!("{INTERNAL}{i}")) };
        }
    }
}

/// What DataFusion names an unaliased item, closely enough to find repeats: it drops unary
/// `+` and parentheses, and `t.a` and `a` are both the column `a` (`SELECT + a, (a)`).
fn name_key(e: &Expr) -> String {
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |e| {
        loop {
            match e {
                Expr::UnaryOp { op: UnaryOperator::Plus, expr } | Expr::Nested(expr) => {
                    *e = std::mem::replace(&mut **expr, Expr::Identifier(Ident::new("")))
                }
                Expr::CompoundIdentifier(parts) if !parts.is_empty() => {
                    *e = Expr::Identifier(parts.pop().unwrap_or_else(|| Ident::new("")))
                }
                _ => break,
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match &e {
        Expr::Identifier(i) => ident_name(i),
        other => other.to_string().to_lowercase(),
    }
}

fn has_subquery(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// PostgreSQL's name for one select item (`FigureColname`).
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(e) => Some(expr_name(e).map(|(n, _)| n).unwrap_or_else(|| "?column?".into())),
        SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
        _ => None,
    }
}

/// An expression's name and how strongly it names (2: a column or function, 1: a keyword such
/// as `case`), or `None` for `?column?`.
fn expr_name(e: &Expr) -> Option<(String, u8)> {
    let keyword = |k: &str| Some((k.to_string(), 1));
    match e {
        Expr::Identifier(i) => Some((ident_name(i), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| (ident_name(i), 2)),
        Expr::Function(f) => object_last(&f.name).map(|n| (n, 2)),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => expr_name(inner),
        Expr::Cast { expr, data_type, .. } => match expr_name(expr) {
            Some((n, 2)) => Some((n, 2)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::TypedString(t) => Some((type_name(&t.data_type), 1)),
        Expr::Case { .. } => keyword("case"),
        Expr::Exists { .. } => keyword("exists"),
        Expr::Array(_) => keyword("array"),
        Expr::Tuple(_) => keyword("row"),
        Expr::Interval(_) => keyword("interval"),
        Expr::Substring { .. } => keyword("substring"),
        Expr::Trim { .. } => keyword("btrim"),
        Expr::Position { .. } => keyword("position"),
        Expr::Extract { .. } => keyword("extract"),
        Expr::Overlay { .. } => keyword("overlay"),
        Expr::Ceil { .. } => keyword("ceil"),
        Expr::Floor { .. } => keyword("floor"),
        Expr::Subquery(q) => subquery_name(q),
        _ => None,
    }
}

/// A scalar subquery is named after its one column.
fn subquery_name(q: &Query) -> Option<(String, u8)> {
    match first_select(&q.body)?.projection.first()? {
        SelectItem::UnnamedExpr(e) => expr_name(e),
        SelectItem::ExprWithAlias { alias, .. } => Some((ident_name(alias), 2)),
        _ => None,
    }
}

fn object_last(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(|p| p.as_ident()).map(ident_name)
}

/// An identifier as PostgreSQL folds it: unquoted ones in lower case.
fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// PostgreSQL's internal name of a type written in a cast (`int` is `int4`).
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 | DataType::Float(_) => "float8".into(),
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar".into(),
        DataType::Char(_) | DataType::Character(_) => "bpchar".into(),
        DataType::Boolean | DataType::Bool => "bool".into(),
        DataType::Text => "text".into(),
        other => {
            let s = other.to_string().to_lowercase();
            s.split('(').next().unwrap_or(&s).trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str) -> (Vec<Option<String>>, String) {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        let names = prepare(&mut stmt).unwrap();
        (names.0, stmt.to_string())
    }

    fn plain(sql: &str) -> Vec<String> {
        names(sql).0.into_iter().map(|n| n.unwrap_or_else(|| "*".into())).collect()
    }

    #[test]
    fn names_columns_like_postgresql() {
        assert_eq!(
            plain(
                "SELECT a, t.B, \"Mixed\", count(*), SUM(a) AS Total, a + 1, 1::int, a::text, CASE WHEN a THEN 1 END FROM t"
            ),
            ["a", "b", "Mixed", "count", "total", "?column?", "int4", "a", "case"]
        );
        assert_eq!(
            plain("SELECT (SELECT max(x) FROM u), EXISTS (SELECT 1), nullif(a, 1), coalesce(a, b), -a FROM t"),
            ["max", "exists", "nullif", "coalesce", "?column?"]
        );
        assert_eq!(plain("SELECT *, a FROM t"), ["*", "a"]);
        assert_eq!(plain("SELECT a AS x FROM t UNION SELECT b FROM u"), ["x"]);
    }

    #[test]
    fn repeated_names_and_subqueries_get_internal_aliases() {
        let (_, sql) = names("SELECT a, a, count(*), COUNT(*), b AS x, c AS x FROM t");
        assert_eq!(sql, "SELECT a, a AS __qdb_col1, count(*), COUNT(*) AS __qdb_col3, b AS x, c AS __qdb_col5 FROM t");
        let (_, sql) = names("SELECT - + a, (- a), + b, t.b, c, 1 AS c FROM t");
        assert_eq!(sql, "SELECT -+a, (-a) AS __qdb_col1, +b, t.b AS __qdb_col3, c, 1 AS __qdb_col5 FROM t");
        let (_, sql) = names("SELECT (SELECT 1), (SELECT 2) FROM t");
        assert_eq!(sql, "SELECT (SELECT 1) AS __qdb_col0, (SELECT 2) AS __qdb_col1 FROM t");
        let (n, sql) = names("SELECT a FROM t ORDER BY (SELECT 1), a");
        assert_eq!(sql, "SELECT a, (SELECT 1) AS __qdb_col_order0 FROM t ORDER BY __qdb_col_order0, a");
        assert_eq!(n, [Some("a".to_string())]);
    }

    #[test]
    fn applies_names_around_a_star() {
        let names = OutputNames(vec![Some("x".into()), None, Some("y".into())], 0);
        let schema = Arc::new(Schema::new(
            ["a", "b", "c", "d"].map(|n| Field::new(n, datafusion::arrow::datatypes::DataType::Int32, true)).to_vec(),
        ));
        let renamed: Vec<String> = names.apply(&schema).fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(renamed, ["x", "b", "c", "y"]);
    }
}
