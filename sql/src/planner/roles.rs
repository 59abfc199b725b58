//! Planning role statements: `CREATE ROLE`, `ALTER ROLE`, `DROP ROLE`, `GRANT` and `REVOKE`
//! become [`Step::PutRole`] with the role's whole new definition. A password becomes its
//! SCRAM verifier here, on the proposing node: only the verifier enters the log. And what any
//! statement needs of the role that runs it ([`needs_of`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Action, AlterRoleOperation, CreateRole, Expr, FromTable, GrantObjects, Grantee, GranteeName, ObjectName,
    Password, Privileges, RoleOption, Statement, TableFactor, TableObject, visit_relations,
};

use super::{Planner, StatementResult, ident, object_name};
use crate::auth::{BUILTIN_ROLES, Need, Privilege, RoleDef, Verifier};
use crate::command::Step;
use crate::error::{Result, SqlError};

/// Role names are identifiers, at most this long (PostgreSQL's NAMEDATALEN - 1).
const MAX_ROLE_NAME: usize = 63;

impl Planner<'_> {
    pub(super) fn create_role(&mut self, cr: CreateRole) -> Result<StatementResult> {
        for n in &cr.names {
            let name = role_name(n)?;
            // A built-in role exists without an entry; creating one gives it a login.
            if self.catalog.roles.contains_key(&name) {
                if cr.if_not_exists {
                    continue;
                }
                return Err(SqlError::InvalidRole(format!("role \"{name}\" already exists")));
            }
            let mut role = RoleDef { login: cr.login.unwrap_or(false), ..RoleDef::default() };
            if let Some(p) = &cr.password {
                role.verifier = verifier_of(p)?;
            }
            for r in cr.in_role.iter().chain(&cr.in_group) {
                role.member_of.insert(builtin(&ident(r))?);
            }
            self.put_role(name, Some(role));
        }
        Ok(StatementResult::done("CREATE ROLE"))
    }

    pub(super) fn alter_role(&mut self, name: &ast::Ident, op: AlterRoleOperation) -> Result<StatementResult> {
        let name = ident(name);
        let mut role = self.existing_role(&name)?;
        let AlterRoleOperation::WithOptions { options } = op else {
            return Err(SqlError::Unsupported("ALTER ROLE other than WITH LOGIN/NOLOGIN/PASSWORD".into()));
        };
        for o in &options {
            match o {
                RoleOption::Login(l) => role.login = *l,
                RoleOption::Password(p) => role.verifier = verifier_of(p)?,
                _ => return Err(SqlError::Unsupported(format!("role option {o}"))),
            }
        }
        self.put_role(name, Some(role));
        Ok(StatementResult::done("ALTER ROLE"))
    }

    pub(super) fn drop_roles(&mut self, names: &[ObjectName], if_exists: bool) -> Result<StatementResult> {
        for n in names {
            let name = role_name(n)?;
            if !self.catalog.roles.contains_key(&name) {
                if if_exists {
                    continue;
                }
                return Err(SqlError::InvalidRole(format!("role \"{name}\" does not exist")));
            }
            self.put_role(name, None);
        }
        Ok(StatementResult::done("DROP ROLE"))
    }

    /// `GRANT`/`REVOKE privileges ON TABLE t TO role` and `GRANT`/`REVOKE ROLE builtin TO role`.
    pub(super) fn grant(
        &mut self,
        privileges: &Privileges,
        objects: Option<&GrantObjects>,
        grantees: &[Grantee],
        revoke: bool,
    ) -> Result<StatementResult> {
        let tag = if revoke { "REVOKE" } else { "GRANT" };
        let mut bits = 0u8;
        let mut builtins = Vec::new();
        match privileges {
            Privileges::All { .. } => bits = Privilege::ALL.iter().fold(0, |b, p| b | p.bit()),
            Privileges::Actions(actions) => {
                for a in actions {
                    match a {
                        Action::Select { columns: None } => bits |= Privilege::Select.bit(),
                        Action::Insert { columns: None } => bits |= Privilege::Insert.bit(),
                        Action::Update { columns: None } => bits |= Privilege::Update.bit(),
                        Action::Delete => bits |= Privilege::Delete.bit(),
                        Action::Role { role } => builtins.push(builtin(&role_name(role)?)?),
                        other => return Err(SqlError::Unsupported(format!("{tag} {other}"))),
                    }
                }
            }
        }
        let tables: Vec<u32> = match objects {
            None => Vec::new(),
            Some(GrantObjects::Tables(names)) => {
                names.iter().map(|n| Ok(self.catalog.table(&object_name(n)?)?.id)).collect::<Result<_>>()?
            }
            Some(o) => return Err(SqlError::Unsupported(format!("{tag} ON {o}"))),
        };
        if bits != 0 && tables.is_empty() {
            return Err(SqlError::InvalidRole(format!("{tag} of table privileges needs ON TABLE name")));
        }
        for g in grantees {
            let Some(GranteeName::ObjectName(n)) = &g.name else {
                return Err(SqlError::Unsupported(format!("{tag} to {g}")));
            };
            let name = role_name(n)?;
            let mut role = self.existing_role(&name)?;
            for t in &tables {
                let b = role.grants.entry(*t).or_default();
                *b = if revoke { *b & !bits } else { *b | bits };
                if *b == 0 {
                    role.grants.remove(t);
                }
            }
            for b in &builtins {
                if revoke {
                    role.member_of.remove(b);
                } else {
                    role.member_of.insert(b.clone());
                }
            }
            self.put_role(name, Some(role));
        }
        Ok(StatementResult::done(tag))
    }

    fn existing_role(&self, name: &str) -> Result<RoleDef> {
        match self.catalog.roles.get(name) {
            Some(r) => Ok(r.clone()),
            None if BUILTIN_ROLES.contains(&name) => Ok(RoleDef::default()),
            None => Err(SqlError::InvalidRole(format!("role \"{name}\" does not exist"))),
        }
    }

    fn put_role(&mut self, name: String, role: Option<RoleDef>) {
        match &role {
            Some(r) => self.catalog_mut().roles.insert(name.clone(), r.clone()),
            None => self.catalog_mut().roles.remove(&name),
        };
        self.steps.push(Step::PutRole { name, role });
    }
}

fn role_name(n: &ObjectName) -> Result<String> {
    let name = object_name(n)?;
    if name.is_empty() || name.len() > MAX_ROLE_NAME {
        return Err(SqlError::InvalidRole(format!("a role name has 1 to {MAX_ROLE_NAME} bytes")));
    }
    Ok(name)
}

fn builtin(name: &str) -> Result<String> {
    if BUILTIN_ROLES.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(SqlError::Unsupported(format!(
            "membership of role \"{name}\": only the built-in roles {} can be granted",
            BUILTIN_ROLES.join(", ")
        )))
    }
}

/// The verifier a `PASSWORD` clause sets (`PASSWORD NULL`: none).
fn verifier_of(p: &Password) -> Result<Option<Verifier>> {
    match p {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match &v.value {
            ast::Value::SingleQuotedString(s) if !s.is_empty() => Ok(Some(Verifier::new(s)?)),
            ast::Value::SingleQuotedString(_) => Err(SqlError::InvalidRole("a password may not be empty".into())),
            _ => Err(SqlError::InvalidRole("a password is a string literal".into())),
        },
        Password::Password(_) => Err(SqlError::InvalidRole("a password is a string literal".into())),
    }
}

/// What `statements` need, by the statement's kind and the tables it names.
pub fn needs_of(statements: &[Statement]) -> Vec<Need> {
    let mut needs = Vec::new();
    for s in statements {
        let (target, privilege) = match s {
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. } => continue,
            Statement::Query(_) | Statement::Explain { .. } | Statement::ExplainTable { .. } => {
                (None, Privilege::Select)
            }
            Statement::Insert(ins) => match &ins.table {
                TableObject::TableName(n) => (Some(n.clone()), Privilege::Insert),
                _ => (None, Privilege::Insert),
            },
            Statement::Update(up) => match &up.table.relation {
                TableFactor::Table { name, .. } => (Some(name.clone()), Privilege::Update),
                _ => (None, Privilege::Update),
            },
            Statement::Delete(del) => {
                let tables = match &del.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                match tables.first().map(|t| &t.relation) {
                    Some(TableFactor::Table { name, .. }) => (Some(name.clone()), Privilege::Delete),
                    _ => (None, Privilege::Delete),
                }
            }
            Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Drop { object_type: datafusion::sql::sqlparser::ast::ObjectType::Role, .. } => {
                needs.push(Need::Admin);
                continue;
            }
            _ => {
                needs.push(Need::Ddl);
                continue;
            }
        };
        // Every table the statement names is read, except the written one (named once as the
        // target: `INSERT INTO t VALUES …` needs INSERT on t, not SELECT).
        let mut target_seen = false;
        let _ = visit_relations(s, |name: &ObjectName| {
            if !target_seen && target.as_ref() == Some(name) {
                target_seen = true;
            } else if let Ok(n) = object_name(name) {
                needs.push(Need::Table(n, Privilege::Select));
            }
            ControlFlow::<()>::Continue(())
        });
        if privilege != Privilege::Select
            && let Some(Ok(n)) = target.as_ref().map(object_name)
        {
            needs.push(Need::Table(n, privilege));
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Vec<Statement> {
        datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap()
    }

    #[test]
    fn statements_need_what_postgresql_asks() {
        use Privilege::*;
        let t = |n: &str, p| Need::Table(n.into(), p);
        assert_eq!(needs_of(&parse("SELECT * FROM a JOIN b ON a.x = b.x")), vec![t("a", Select), t("b", Select)]);
        assert_eq!(needs_of(&parse("INSERT INTO a VALUES (1)")), vec![t("a", Insert)]);
        assert_eq!(needs_of(&parse("INSERT INTO a SELECT * FROM b")), vec![t("b", Select), t("a", Insert)]);
        assert_eq!(
            needs_of(&parse("UPDATE a SET x = 1 WHERE y IN (SELECT y FROM b)")),
            vec![t("b", Select), t("a", Update)]
        );
        assert_eq!(needs_of(&parse("DELETE FROM a WHERE x = 1")), vec![t("a", Delete)]);
        // The tables of UPDATE … FROM and DELETE … USING are read, the target too when it is
        // named again.
        assert_eq!(
            needs_of(&parse("UPDATE a AS x SET v = b.v FROM b, a AS y WHERE b.k = x.k")),
            vec![t("b", Select), t("a", Select), t("a", Update)]
        );
        assert_eq!(needs_of(&parse("DELETE FROM a USING b WHERE b.k = a.k")), vec![t("b", Select), t("a", Delete)]);
        assert_eq!(needs_of(&parse("CREATE TABLE c (x INT)")), vec![Need::Ddl]);
        assert_eq!(needs_of(&parse("CREATE ROLE r LOGIN PASSWORD 'p'")), vec![Need::Admin]);
        assert_eq!(needs_of(&parse("GRANT SELECT ON a TO r")), vec![Need::Admin]);
        assert_eq!(needs_of(&parse("BEGIN; SET hnsw.ef_search = 10; COMMIT")), vec![]);
    }
}
