//! DDL: CREATE/DROP/ALTER TABLE, CREATE/DROP INDEX and TRUNCATE, planned into catalog steps.
//!
//! Owns the checks a definition must pass before it is proposed (names, types, keys, index
//! methods and parameters, defaults that evaluate) and the batch's working catalog changes, so
//! later statements of the batch see them. Apply pins the catalog version every command was
//! planned against; a DDL here never reads rows except to guard what an index build or a NOT
//! NULL column depends on.

use datafusion::sql::sqlparser::ast::{self, AlterTableOperation, ColumnOption, Expr, ObjectName, TableConstraint};
use quorumdb_vector::{IndexSpec, Metric};

use super::{Planner, StatementResult, ident, object_name, parse_one, quote};
use crate::catalog::{ColumnDef, IndexDef, IndexKind, TableDef};
use crate::codec;
use crate::command::Step;
use crate::error::{Result, SqlError};
use crate::types::{ColumnType, Value};

impl Planner<'_> {
    pub(super) async fn create_table(&mut self, ct: ast::CreateTable) -> Result<StatementResult> {
        let name = object_name(&ct.name)?;
        if let Some(query) = ct.query.clone() {
            return Box::pin(self.create_table_as(ct, *query)).await;
        }
        if self.catalog.tables.contains_key(&name) || self.catalog.views.contains_key(&name) {
            if ct.if_not_exists {
                return Ok(StatementResult::done("CREATE TABLE"));
            }
            return Err(SqlError::TableExists(name));
        }
        if ct.columns.is_empty() {
            return Err(SqlError::InvalidDefinition("a table needs at least one column".into()));
        }
        crate::limits::check_new_table(self.catalog.tables.len(), ct.columns.len())?;
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

    /// `CREATE TABLE name [(columns)] AS query`: a table with the query's column names (as
    /// PostgreSQL names them) and types, then `INSERT INTO name query`, in one command.
    async fn create_table_as(&mut self, ct: ast::CreateTable, query: ast::Query) -> Result<StatementResult> {
        let name = object_name(&ct.name)?;
        if self.catalog.tables.contains_key(&name) || self.catalog.views.contains_key(&name) {
            if ct.if_not_exists {
                return Ok(StatementResult::done("SELECT 0"));
            }
            return Err(SqlError::TableExists(name));
        }
        if ct.columns.iter().any(|c| c.data_type != ast::DataType::Unspecified) {
            return Err(SqlError::Unsupported("column types in CREATE TABLE … AS (give only names)".into()));
        }
        let planned = ast::Statement::Query(Box::new(query.clone()));
        let (_, schema) = crate::names::plan_named(&self.ctx(false).state(), planned).await?;
        if ct.columns.len() > schema.fields().len() {
            return Err(SqlError::InvalidDefinition("CREATE TABLE … AS names more columns than the query has".into()));
        }
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let column = ct.columns.get(i).map(|c| ident(&c.name)).unwrap_or_else(|| f.name().clone());
                let ty = match f.data_type() {
                    datafusion::arrow::datatypes::DataType::Null => "text".to_string(),
                    other => crate::types::arrow_sql_name(other),
                };
                format!("{} {ty}", quote(&column))
            })
            .collect();
        let ast::Statement::CreateTable(create) =
            parse_one(&format!("CREATE TABLE {} ({})", quote(&name), columns.join(", ")))?
        else {
            return Err(SqlError::Internal("CREATE TABLE … AS: the table did not parse back".into()));
        };
        Box::pin(self.create_table(create)).await?;
        let ast::Statement::Insert(insert) = parse_one(&format!("INSERT INTO {} {query}", quote(&name)))? else {
            return Err(SqlError::Internal("CREATE TABLE … AS: the insert did not parse back".into()));
        };
        match Box::pin(self.insert(insert)).await? {
            StatementResult::Done { rows_affected, .. } => {
                Ok(StatementResult::Done { tag: format!("SELECT {rows_affected}"), rows_affected })
            }
            other => Ok(other),
        }
    }

    pub(super) fn drop_tables(
        &mut self,
        names: &[ObjectName],
        if_exists: bool,
        cascade: bool,
    ) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            let Some(def) = self.catalog.tables.get(&name).cloned() else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownTable(name));
            };
            self.drop_dependent_views("table", &name, cascade)?;
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

    pub(super) fn drop_indexes(&mut self, names: &[ObjectName], if_exists: bool) -> Result<StatementResult> {
        for n in names {
            let name = object_name(n)?;
            let Some((t, i)) = self.catalog.index_owner(&name).map(|(t, i)| (t.name.clone(), i.id)) else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UnknownIndex(name));
            };
            let def = self.catalog_mut().tables.get_mut(&t).ok_or_else(|| SqlError::UnknownTable(t.clone()))?;
            def.indexes.retain(|x| x.id != i);
            let table = def.id;
            self.steps.push(Step::DropIndex { table, index: i });
        }
        Ok(StatementResult::done("DROP INDEX"))
    }

    pub(super) fn create_index(&mut self, ci: ast::CreateIndex) -> Result<StatementResult> {
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
                    crate::coerce::literal_text(right).flatten().and_then(|t| t.parse().ok()).ok_or_else(|| {
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
        let d = self.catalog_mut().tables.get_mut(&table).ok_or_else(|| SqlError::UnknownTable(table.clone()))?;
        d.next_index_id += 1;
        d.indexes.push(index.clone());
        // The build reads every row: guard the table.
        self.guard_table(def.id)?;
        self.steps.push(Step::CreateIndex { table: def.id, index });
        Ok(StatementResult::done("CREATE INDEX"))
    }

    pub(super) async fn alter_table(&mut self, at: ast::AlterTable) -> Result<StatementResult> {
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

    pub(super) fn truncate(&mut self, t: &ast::Truncate) -> Result<StatementResult> {
        for target in &t.table_names {
            let def = self.catalog.table(&object_name(&target.name)?)?.clone();
            self.pending_clear(def.id);
            self.steps.push(Step::Truncate { id: def.id });
        }
        Ok(StatementResult::done("TRUNCATE TABLE"))
    }
}
