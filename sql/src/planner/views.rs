//! Views: `CREATE [OR REPLACE] VIEW name [(columns)] AS query` and `DROP VIEW [IF EXISTS]`,
//! planned into [`Step::PutView`] with the query's text; the query is planned here against the
//! batch's working catalog so a view that cannot be read is refused when it is made.
//! Reading a view plans its query again ([`crate::provider`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, ObjectName, Statement, visit_relations};

use super::{Planner, StatementResult, ident, object_name};
use crate::catalog::{MAX_VIEW_DEPTH, ViewDef};
use crate::command::Step;
use crate::error::{Result, SqlError};

impl Planner<'_> {
    pub(super) async fn create_view(&mut self, cv: ast::CreateView) -> Result<StatementResult> {
        let name = object_name(&cv.name)?;
        if cv.materialized || cv.temporary || cv.or_alter || cv.to.is_some() {
            return Err(SqlError::Unsupported("materialized, temporary or ALTER views".into()));
        }
        if self.catalog.tables.contains_key(&name) {
            return Err(SqlError::TableExists(name));
        }
        if self.catalog.views.contains_key(&name) && !cv.or_replace {
            if cv.if_not_exists {
                return Ok(StatementResult::done("CREATE VIEW"));
            }
            return Err(SqlError::TableExists(name));
        }
        let query = Statement::Query(cv.query.clone());
        let mut reads = Vec::new();
        let _ = visit_relations(&query, |n: &ObjectName| {
            if let Ok(n) = object_name(n)
                && !reads.contains(&n)
            {
                reads.push(n);
            }
            ControlFlow::<()>::Continue(())
        });
        if reads.contains(&name) {
            return Err(SqlError::InvalidDefinition(format!("view \"{name}\" may not read itself")));
        }
        if self.view_depth(&reads, 0) >= MAX_VIEW_DEPTH {
            return Err(SqlError::LimitExceeded(format!(
                "views may be defined on views at most {MAX_VIEW_DEPTH} deep"
            )));
        }
        // Planned now, so a view that cannot be read is refused when it is made.
        let (_, named) = crate::names::plan_named(&self.ctx(false).state(), query).await?;
        let width = named.fields().len();
        let columns: Vec<String> = cv.columns.iter().map(|c| ident(&c.name)).collect();
        if columns.len() > width {
            return Err(SqlError::InvalidDefinition(format!(
                "CREATE VIEW specifies {} column names, but the query has {width} columns",
                columns.len()
            )));
        }
        let view = ViewDef { query: cv.query.to_string(), columns, reads };
        self.catalog_mut().views.insert(name.clone(), view.clone());
        self.steps.push(Step::PutView { name, view: Some(view) });
        Ok(StatementResult::done("CREATE VIEW"))
    }

    pub(super) fn drop_views(&mut self, names: &[ObjectName], if_exists: bool) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            if self.catalog_mut().views.remove(&name).is_none() {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownTable(format!("view {name}")));
            }
            self.steps.push(Step::PutView { name, view: None });
        }
        Ok(StatementResult::done("DROP VIEW"))
    }

    /// How deep the views among `reads` are defined on other views.
    fn view_depth(&self, reads: &[String], depth: usize) -> usize {
        if depth >= MAX_VIEW_DEPTH {
            return depth;
        }
        reads
            .iter()
            .filter_map(|r| self.catalog.views.get(r))
            .map(|v| self.view_depth(&v.reads, depth + 1))
            .max()
            .unwrap_or(depth)
    }
}
