//! Views: `CREATE [OR REPLACE] VIEW name [(columns)] AS query` and `DROP VIEW [IF EXISTS]`
//! (`[CASCADE]`: a table or view other views read is dropped only with them),
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

    pub(super) fn drop_views(
        &mut self,
        names: &[ObjectName],
        if_exists: bool,
        cascade: bool,
    ) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            if !self.catalog.views.contains_key(&name) {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownTable(format!("view {name}")));
            }
            self.drop_dependent_views("view", &name, cascade)?;
            self.catalog_mut().views.remove(&name);
            self.steps.push(Step::PutView { name, view: None });
        }
        Ok(StatementResult::done("DROP VIEW"))
    }

    /// The views that read `name` (a `kind`, table or view, about to be dropped): with
    /// CASCADE they are dropped first (and the views that read them), without it the drop is
    /// refused (2BP01), as in PostgreSQL.
    pub(super) fn drop_dependent_views(&mut self, kind: &str, name: &str, cascade: bool) -> Result<()> {
        let dependents: Vec<String> = self
            .catalog
            .views
            .iter()
            .filter(|(_, v)| v.reads.iter().any(|r| r == name))
            .map(|(n, _)| n.clone())
            .collect();
        if let Some(first) = dependents.first()
            && !cascade
        {
            return Err(SqlError::DependentObjects(format!(
                "cannot drop {kind} {name} because other objects depend on it (view {first} depends on {kind} {name}); \
                 use DROP … CASCADE to drop the dependent objects too"
            )));
        }
        for view in dependents {
            // A view read by two dropped objects is gone after the first.
            if self.catalog.views.contains_key(&view) {
                self.drop_dependent_views("view", &view, true)?;
                self.catalog_mut().views.remove(&view);
                self.steps.push(Step::PutView { name: view, view: None });
            }
        }
        Ok(())
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
