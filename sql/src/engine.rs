//! The SQL engine a node runs: parses a request, answers reads through DataFusion (or the
//! primary-key fast path), and turns writes into one [`SqlCommand`] proposed through a
//! [`Proposer`] — re-planned when apply reports a conflict with a concurrent write.

use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{self, Expr, SelectItem, SetExpr, Statement, TableFactor, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use crate::catalog::{Catalog, RowDecoder};
use crate::codec;
use crate::command::{SqlCommand, SqlResponse, Step, TAG};
use crate::error::{Result, SqlError};
use crate::planner::{Planner, StatementResult, ident, object_name, pure_point_keys, run_user_query, session};
use crate::provider::{BatchView, CatalogSource};
use crate::types::build_array;
use crate::vector_indexes::VectorIndexes;
use crate::vector_search::{self, SearchSettings, VectorSearchRule};
use quorumdb_state::{CommandResult, Consistency, Proposer, Rejection, SharedState, tagged};

/// DataFusion's optimizer rules with ours: correlated subqueries first (before DataFusion's
/// own decorrelation gives up on them), the vector search last.
fn optimizer_rules() -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
        vec![Arc::new(crate::subquery::CorrelatedSubqueryRule)];
    rules.extend(datafusion::optimizer::Optimizer::new().rules);
    rules.push(Arc::new(VectorSearchRule));
    rules
}

/// How many times a write batch is planned again after a conflict before giving up.
const MAX_ATTEMPTS: usize = 30;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub statements: Vec<Statement>,
    /// Every statement only reads.
    pub read_only: bool,
}

impl Parsed {
    /// A copy with `$n` placeholders replaced by `params` (a prepared statement's execution).
    pub fn bind(&self, params: &[serde_json::Value]) -> Result<Parsed> {
        let mut statements = self.statements.clone();
        bind(&mut statements, params)?;
        Ok(Parsed { statements, read_only: self.read_only })
    }

    /// How many `$n` parameters the statements use (the highest `n`).
    pub fn parameter_count(&self) -> usize {
        let mut n = 0;
        for s in &self.statements {
            let _ = datafusion::sql::sqlparser::ast::visit_expressions(s, |e| {
                if let Expr::Value(v) = e
                    && let ast::Value::Placeholder(p) = &v.value
                {
                    n = n.max(p.trim_start_matches('$').parse().unwrap_or(0));
                }
                ControlFlow::<()>::Continue(())
            });
        }
        n
    }
}

/// What a prepared statement takes and returns, known without running it.
#[derive(Debug, Clone)]
pub struct Description {
    /// The type of each `$n` parameter, where it can be inferred.
    pub params: Vec<Option<datafusion::arrow::datatypes::DataType>>,
    /// The columns it returns; `None` for statements that return no rows.
    pub columns: Option<datafusion::arrow::datatypes::SchemaRef>,
}

/// Settings of one session (a pgwire connection, or one HTTP request), changed with `SET`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Session {
    pub search: SearchSettings,
}

pub struct Engine {
    read: SharedState,
    state: Arc<SessionState>,
    catalog: Arc<CatalogCache>,
    /// Sessions over the live catalog and the applied state, built once.
    query_ctx: SessionContext,
    dml_ctx: SessionContext,
}

/// The decoded catalog, decoded again only when its stored bytes change.
struct CatalogCache {
    read: SharedState,
    cached: Mutex<(Vec<u8>, Arc<Catalog>)>,
}

impl CatalogCache {
    fn current(&self) -> Result<Arc<Catalog>> {
        let raw = self.read.get(codec::CATALOG_KEY)?.unwrap_or_default();
        let mut cached = self.cached.lock();
        if cached.0 != raw {
            let cat = if raw.is_empty() { Catalog::default() } else { Catalog::decode(&raw)? };
            *cached = (raw, Arc::new(cat));
        }
        Ok(cached.1.clone())
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

/// True for statements that only read (and transaction control).
pub fn is_read_only(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. }
            | Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
    )
}

/// Replaces `$n` placeholders with literal parameters.
fn bind(statements: &mut [Statement], params: &[serde_json::Value]) -> Result<()> {
    let mut err = None;
    for s in statements.iter_mut() {
        let _ = visit_expressions_mut(s, |e| {
            if let Expr::Value(v) = e
                && let ast::Value::Placeholder(p) = &v.value
            {
                let n: usize = p.trim_start_matches('$').parse().unwrap_or(0);
                let lit = match params.get(n.wrapping_sub(1)) {
                    None => {
                        err = Some(SqlError::UndefinedParameter(n));
                        return ControlFlow::Break(());
                    }
                    Some(serde_json::Value::Null) => ast::Value::Null,
                    Some(serde_json::Value::Bool(b)) => ast::Value::Boolean(*b),
                    Some(serde_json::Value::Number(n)) => ast::Value::Number(n.to_string(), false),
                    Some(serde_json::Value::String(s)) => ast::Value::SingleQuotedString(s.clone()),
                    Some(other) => ast::Value::SingleQuotedString(other.to_string()),
                };
                *e = Expr::value(lit);
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = err.take() {
            return Err(e);
        }
    }
    Ok(())
}

/// `SET`/`SHOW` of a session setting: the setting's name and, for SET, its value.
fn session_setting(s: &Statement) -> Option<(String, Option<&Expr>)> {
    match s {
        Statement::Set(ast::Set::SingleAssignment { variable, values, .. }) => {
            Some((variable.to_string().to_lowercase(), values.first()))
        }
        Statement::ShowVariable { variable } => {
            Some((variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join("."), None))
        }
        _ => None,
    }
}

impl Engine {
    pub fn new(read: SharedState, vectors: Arc<VectorIndexes>) -> Self {
        // sqlparser and DataFusion move their recursion to a new stack segment when less than
        // the minimum is left, 128 KiB by default; but one level of a nested query takes more
        // than that in a debug build (ten nested derived tables overflowed a 2 MiB thread
        // stack in the parser). With 1 MiB, every level fits. A setting of the process.
        recursive::set_minimum_stack_size(1 << 20);
        recursive::set_stack_allocation_size(16 << 20);
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema("quorumdb", "public")
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_extension(vectors)
            .with_extension(Arc::new(SearchSettings::default()));
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rules(optimizer_rules())
            .build();
        let state = Arc::new(state);
        let catalog = Arc::new(CatalogCache {
            read: read.clone(),
            cached: Mutex::new((Vec::new(), Arc::new(Catalog::default()))),
        });
        let live = {
            let catalog = catalog.clone();
            CatalogSource::Live(Arc::new(move || catalog.current()))
        };
        let query_ctx = session(&state, live.clone(), BatchView::new(read.clone()), false);
        let dml_ctx = session(&state, live, BatchView::new(read.clone()), true);
        Self { read, state, catalog, query_ctx, dml_ctx }
    }

    /// The current catalog (decoded again only when it changed).
    pub fn catalog(&self) -> Result<Arc<Catalog>> {
        self.catalog.current()
    }

    /// Whether `user` may run `parsed` (`None`: no login on this cluster, everyone may): the
    /// one check of SQL requests every surface makes ([`crate::auth`]).
    pub fn authorize(&self, user: Option<&str>, parsed: &Parsed) -> Result<()> {
        self.authorize_needs(user, &crate::planner::needs_of(&parsed.statements))
    }

    /// Whether `user` may do what `needs` says (for requests that are not SQL text).
    pub fn authorize_needs(&self, user: Option<&str>, needs: &[crate::auth::Need]) -> Result<()> {
        match user {
            Some(user) => self.catalog()?.authorize(user, needs),
            None => Ok(()),
        }
    }

    /// A planner for one write batch, over the current catalog and the applied state: what a
    /// write is planned with before it is proposed.
    pub fn planner(&self) -> Result<Planner<'_>> {
        Ok(Planner::new(&self.state, Some((&self.query_ctx, &self.dml_ctx)), self.read.clone(), self.catalog()?))
    }

    pub fn parse(&self, sql: &str, params: &[serde_json::Value]) -> Result<Parsed> {
        let mut parsed = self.prepare(sql)?;
        bind(&mut parsed.statements, params)?;
        Ok(parsed)
    }

    /// Parses a request whose `$n` placeholders are bound later ([`Parsed::bind`]).
    pub fn prepare(&self, sql: &str) -> Result<Parsed> {
        // As `Parser::parse_sql`, with the nesting checked on the tokens before they are parsed.
        let dialect = PostgreSqlDialect {};
        let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(ParserError::from)?;
        crate::limits::check_nesting(tokens.iter().map(|t| &t.token))?;
        let mut statements = Parser::new(&dialect).with_tokens_with_locations(tokens).parse_statements()?;
        if statements.is_empty() {
            return Err(SqlError::Syntax("empty query".into()));
        }
        crate::limits::check_request(&statements)?;
        for s in statements.iter_mut() {
            vector_search::rewrite_operators(s);
        }
        let read_only = statements.iter().all(is_read_only);
        Ok(Parsed { statements, read_only })
    }

    /// The parameter types and result columns of a one-statement request, from DataFusion's
    /// plan of it. Writes return no rows; their parameter types come from the target columns
    /// (an `ON CONFLICT` clause is left out for this, DataFusion does not plan it).
    pub async fn describe(&self, parsed: &Parsed) -> Result<Description> {
        let count = parsed.parameter_count();
        let unknown = || Description { params: vec![None; count], columns: None };
        let [stmt] = parsed.statements.as_slice() else { return Ok(unknown()) };
        if let Some((name, None)) = session_setting(stmt)
            && name == "hnsw.ef_search"
        {
            let field =
                datafusion::arrow::datatypes::Field::new(name, datafusion::arrow::datatypes::DataType::Utf8, false);
            return Ok(Description {
                params: vec![],
                columns: Some(Arc::new(datafusion::arrow::datatypes::Schema::new(vec![field]))),
            });
        }
        let returns_rows = matches!(stmt, Statement::Query(_) | Statement::Explain { .. });
        let mut stmt = stmt.clone();
        if let Statement::Insert(ins) = &mut stmt {
            ins.on = None;
        }
        if !returns_rows && !matches!(stmt, Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_)) {
            return Ok(unknown());
        }
        let (plan, named) = match crate::names::plan_named(&self.query_ctx.state(), stmt).await {
            Ok(planned) => planned,
            Err(e) if returns_rows => return Err(e.into()),
            Err(_) => return Ok(unknown()),
        };
        let types = plan.get_parameter_types().unwrap_or_default();
        let params = (1..=count).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect();
        let columns = returns_rows.then_some(named);
        Ok(Description { params, columns })
    }

    /// Runs a parsed request in a fresh session: reads directly, writes as one atomic command.
    pub async fn execute(&self, parsed: Parsed, proposer: &dyn Proposer) -> Result<Vec<StatementResult>> {
        self.execute_in(parsed, proposer, &mut Session::default(), None).await
    }

    /// Runs a parsed request in `session` (whose settings `SET` changes) as `user` (the login;
    /// `None` where the cluster requires none). Privileges are checked against the catalog
    /// the request runs on: a read's (after the caller's read barrier), and for a write the one
    /// it is planned against — a write planned before a `REVOKE` applied is refused by its
    /// catalog guard and checked again when re-planned.
    pub async fn execute_in(
        &self,
        parsed: Parsed,
        proposer: &dyn Proposer,
        session: &mut Session,
        user: Option<&str>,
    ) -> Result<Vec<StatementResult>> {
        if parsed.read_only {
            self.authorize(user, &parsed)?;
            let mut out = Vec::with_capacity(parsed.statements.len());
            for s in parsed.statements {
                out.push(match self.session_statement(&s, session)? {
                    Some(r) => r,
                    None => self.query_in(s, session).await?,
                });
            }
            return Ok(out);
        }
        let statements = &parsed.statements;
        with_retries(proposer, session, |mut session| async move {
            let outcome = self.execute_once(statements, Some(proposer), &mut session, None, user).await;
            (session, outcome)
        })
        .await
    }

    /// Inserts the rows of `batches` into `table` as one atomic command (a bulk load): the
    /// batches' columns are matched to the table's by name, and every row is coerced and
    /// checked as `INSERT` would (see [`Planner::insert_batches`]). Returns the rows inserted;
    /// an error caused by one row says which ([`SqlError::row`], counted from 0).
    pub async fn insert_batches(&self, table: &str, batches: &[RecordBatch], proposer: &dyn Proposer) -> Result<u64> {
        with_retries(proposer, &mut Session::default(), |session| async move {
            (session, self.load_once(table, batches, proposer).await)
        })
        .await
    }

    /// One attempt of [`Engine::insert_batches`].
    async fn load_once(&self, table: &str, batches: &[RecordBatch], proposer: &dyn Proposer) -> Result<u64> {
        let mut planner = self.planner()?;
        let n = planner.insert_batches(table, batches).await?;
        if let Some(cmd) = planner.finish() {
            self.propose(&cmd, proposer).await?;
        }
        Ok(n)
    }

    /// What `parsed` would return if run now, planned against the applied state; nothing is
    /// proposed. A session's open transaction block answers each statement this way.
    pub async fn dry_run(
        &self,
        parsed: &Parsed,
        session: &mut Session,
        user: Option<&str>,
    ) -> Result<Vec<StatementResult>> {
        self.execute_once(&parsed.statements, None, session, None, user).await
    }

    /// Commits a transaction block whose statements were answered by [`Engine::dry_run`]
    /// (`reported`): planned again against the latest state (retried on conflicts like any
    /// write) and proposed only if every write still affects as many rows as it reported —
    /// otherwise nothing is applied and the error is 40001, for the client to retry.
    pub async fn commit(
        &self,
        parsed: Parsed,
        proposer: &dyn Proposer,
        session: &mut Session,
        reported: &[StatementResult],
        user: Option<&str>,
    ) -> Result<Vec<StatementResult>> {
        let statements = &parsed.statements;
        with_retries(proposer, session, |mut session| async move {
            let outcome = self.execute_once(statements, Some(proposer), &mut session, Some(reported), user).await;
            (session, outcome)
        })
        .await
    }

    /// Plans `statements` as one batch and, with a proposer, proposes it. With `reported`, each
    /// write must affect as many rows as reported there.
    async fn execute_once(
        &self,
        statements: &[Statement],
        proposer: Option<&dyn Proposer>,
        session: &mut Session,
        reported: Option<&[StatementResult]>,
        user: Option<&str>,
    ) -> Result<Vec<StatementResult>> {
        let mut planner = self.planner()?;
        if let Some(user) = user {
            planner.catalog().authorize(user, &crate::planner::needs_of(statements))?;
        }
        let mut results = Vec::with_capacity(statements.len());
        for s in statements {
            let r = match s {
                Statement::StartTransaction { .. } => StatementResult::Done { tag: "BEGIN".into(), rows_affected: 0 },
                Statement::Commit { .. } => StatementResult::Done { tag: "COMMIT".into(), rows_affected: 0 },
                Statement::Rollback { .. } => {
                    // What came before is discarded; what follows is a transaction of its own, as
                    // in PostgreSQL. (It used to be planned, reported done, and never proposed.)
                    planner = self.planner()?;
                    StatementResult::Done { tag: "ROLLBACK".into(), rows_affected: 0 }
                }
                s => match self.session_statement(s, session)? {
                    Some(r) => r,
                    None => planner.plan(s.clone()).await?,
                },
            };
            results.push(r);
        }
        if let Some(reported) = reported {
            for (i, (now, then)) in results.iter().zip(reported).enumerate() {
                if let (StatementResult::Done { rows_affected: a, tag }, StatementResult::Done { rows_affected: b, .. }) =
                    (now, then)
                    && a != b
                {
                    return Err(SqlError::TransactionChanged(format!(
                        "statement {} ({tag}) now affects {a} rows, not the {b} reported",
                        i + 1
                    )));
                }
            }
        }
        let Some(proposer) = proposer else { return Ok(results) };
        if let Some(cmd) = planner.finish() {
            self.propose(&cmd, proposer).await?;
        }
        Ok(results)
    }

    async fn propose(&self, cmd: &SqlCommand, proposer: &dyn Proposer) -> Result<SqlResponse> {
        metrics::counter!("quorumdb_sql_commands_total").increment(1);
        let version = proposer.format();
        if let Some((needed, what)) = cmd.steps.iter().filter_map(Step::format_needed).find(|(f, _)| version < *f) {
            return Err(SqlError::Unsupported(format!(
                "{what} need cluster format {needed} (this cluster writes format {version}: a node runs an older binary, or the cluster started under a second ago)"
            )));
        }
        let bytes = cmd.encode(version)?;
        match proposer.propose(tagged(TAG, &bytes)).await? {
            CommandResult::Applied(response) => SqlResponse::decode(&response),
            CommandResult::Rejected(rejection) => Err(SqlError::from_rejection(&Rejection::decode(&rejection))),
        }
    }

    /// `SET`/`SHOW` of our session settings; `None` for any other statement.
    fn session_statement(&self, s: &Statement, session: &mut Session) -> Result<Option<StatementResult>> {
        let Some((name, value)) = session_setting(s) else { return Ok(None) };
        if name != "hnsw.ef_search" {
            return match s {
                Statement::Set(_) => Err(SqlError::Unsupported(format!("setting {name}"))),
                _ => Ok(None),
            };
        }
        match value {
            Some(v) => {
                let text = crate::coerce::literal_text(v).flatten().unwrap_or_else(|| v.to_string());
                let n: usize =
                    text.trim().parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                        SqlError::InvalidParameter(format!("hnsw.ef_search must be 1..1000, not {text}"))
                    })?;
                session.search.ef_search = n;
                Ok(Some(StatementResult::done("SET")))
            }
            None => {
                let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                    datafusion::arrow::datatypes::Field::new(
                        "hnsw.ef_search",
                        datafusion::arrow::datatypes::DataType::Utf8,
                        false,
                    ),
                ]));
                let col =
                    Arc::new(datafusion::arrow::array::StringArray::from(vec![session.search.ef_search.to_string()]));
                let batch = RecordBatch::try_new(schema.clone(), vec![col])?;
                Ok(Some(StatementResult::Rows { schema, batches: vec![batch], tag: "SHOW".into() }))
            }
        }
    }

    /// Answers one read-only statement from the local state.
    pub async fn query(&self, stmt: Statement) -> Result<StatementResult> {
        self.query_in(stmt, &Session::default()).await
    }

    /// Answers one read-only statement from the local state, with `session`'s settings.
    pub async fn query_in(&self, stmt: Statement, session: &Session) -> Result<StatementResult> {
        match &stmt {
            Statement::StartTransaction { .. } => {
                return Ok(StatementResult::Done { tag: "BEGIN".into(), rows_affected: 0 });
            }
            Statement::Commit { .. } => return Ok(StatementResult::Done { tag: "COMMIT".into(), rows_affected: 0 }),
            Statement::Rollback { .. } => {
                return Ok(StatementResult::Done { tag: "ROLLBACK".into(), rows_affected: 0 });
            }
            _ => {}
        }
        let catalog = self.catalog()?;
        if let Some(r) = self.point_select(&catalog, &stmt)? {
            metrics::counter!("quorumdb_sql_point_reads_total").increment(1);
            return Ok(r);
        }
        let explain = matches!(stmt, Statement::Explain { .. });
        let (schema, batches) = if session.search.ef_search == SearchSettings::default().ef_search {
            run_user_query(&self.query_ctx, stmt).await?
        } else {
            let mut state = self.query_ctx.state();
            state.config_mut().set_extension(Arc::new(session.search));
            run_user_query(&SessionContext::new_with_state(state), stmt).await?
        };
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        let tag = if explain { "EXPLAIN".to_string() } else { format!("SELECT {n}") };
        Ok(StatementResult::Rows { schema, batches, tag })
    }

    /// `SELECT cols FROM t WHERE pk = literal` without DataFusion: one key lookup.
    fn point_select(&self, catalog: &Catalog, stmt: &Statement) -> Result<Option<StatementResult>> {
        let Statement::Query(q) = stmt else { return Ok(None) };
        if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
            return Ok(None);
        }
        let SetExpr::Select(sel) = q.body.as_ref() else { return Ok(None) };
        if sel.distinct.is_some()
            || sel.having.is_some()
            || !matches!(&sel.group_by, ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
            || sel.from.len() != 1
            || !sel.from[0].joins.is_empty()
        {
            return Ok(None);
        }
        let TableFactor::Table { name, alias: None, args: None, .. } = &sel.from[0].relation else { return Ok(None) };
        let Ok(tname) = object_name(name) else { return Ok(None) };
        let Some(def) = catalog.tables.get(&tname) else { return Ok(None) };
        let Some(selection) = &sel.selection else { return Ok(None) };
        // Only key equalities: any other conjunct is a filter the fast path would skip.
        let Some(keys) = pure_point_keys(def, selection) else { return Ok(None) };
        let mut cols = Vec::new();
        for item in &sel.projection {
            match item {
                SelectItem::Wildcard(o)
                    if o.opt_exclude.is_none()
                        && o.opt_except.is_none()
                        && o.opt_rename.is_none()
                        && o.opt_replace.is_none() =>
                {
                    cols.extend(def.visible())
                }
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => match def.column(&ident(i)) {
                    Some(c) => cols.push(c),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
        let decoder = RowDecoder::new(def);
        let mut rows = Vec::new();
        for k in &keys {
            if let Some(bytes) = self.read.get(&codec::row_key(def.id, k))? {
                rows.push(decoder.decode(&bytes)?);
            }
        }
        let fields: Vec<_> = cols
            .iter()
            .map(|&c| datafusion::arrow::datatypes::Field::new(&def.columns[c].name, def.columns[c].ty.arrow(), true))
            .collect();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        let arrays = cols
            .iter()
            .map(|&c| build_array(&def.columns[c].ty, rows.iter().map(|r| &r[c])))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        let n = batch.num_rows();
        Ok(Some(StatementResult::Rows { schema, batches: vec![batch], tag: format!("SELECT {n}") }))
    }
}

/// Runs a write (plan, then propose) until it does not conflict with a concurrent one: the
/// local state is caught up before every attempt (strictly after a conflict), and a conflict
/// (40001) backs off and plans again, at most [`MAX_ATTEMPTS`] times. Any other outcome,
/// success or error, is returned as it is.
///
/// Each attempt is handed the session's settings and hands them back (a `SET` in the batch
/// changes them), so they carry from one attempt to the next and to the caller, as through a
/// `&mut Session` (which an attempt's future could not borrow from the closure).
async fn with_retries<T, F>(
    proposer: &dyn Proposer,
    session: &mut Session,
    mut attempt: impl FnMut(Session) -> F,
) -> Result<T>
where
    F: Future<Output = (Session, Result<T>)>,
{
    let mut retry = Retry::default();
    loop {
        retry.catch_up(proposer).await;
        let (after, outcome) = attempt(*session).await;
        *session = after;
        match outcome {
            Err(SqlError::SerializationFailure(why)) => retry.backoff(&why).await?,
            other => return other,
        }
    }
}

/// The state of [`with_retries`]: how many attempts conflicted so far.
#[derive(Default)]
struct Retry {
    attempt: usize,
}

impl Retry {
    /// Brings the local state up to date before (re)planning. Only freshness is at stake here
    /// (guards keep a stale plan from applying), so a barrier that cannot be confirmed — the
    /// leader just died — is not fatal: the proposal itself waits for a new leader.
    async fn catch_up(&self, proposer: &dyn Proposer) {
        let level = if self.attempt > 0 { Consistency::Linearizable } else { Consistency::Lease };
        if let Err(e) = proposer.read_barrier(level).await {
            tracing::debug!(error = %e, "could not catch up before planning a write; planning on local state");
        }
    }

    /// Waits (growing backoff, jittered) before the next attempt; fails after the last one.
    async fn backoff(&mut self, why: &str) -> Result<()> {
        tracing::debug!(attempt = self.attempt, %why, "write conflicted; planning again");
        metrics::counter!("quorumdb_sql_conflicts_total").increment(1);
        self.attempt += 1;
        if self.attempt >= MAX_ATTEMPTS {
            return Err(SqlError::SerializationFailure(format!("still conflicting after {MAX_ATTEMPTS} attempts")));
        }
        let delay = (Duration::from_millis(1) * (1 << self.attempt.min(7)) / 2).min(Duration::from_millis(50));
        tokio::time::sleep(delay + Duration::from_micros(rand_jitter())).await;
        Ok(())
    }
}

fn rand_jitter() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    u64::from(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) % 1000)
}
