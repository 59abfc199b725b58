//! The engine's limits: what a request, a table and the catalog may hold at most. Each is
//! checked before anything is proposed, and exceeding one is SQLSTATE 54000
//! (`program_limit_exceeded`) with the limit named, never a slow or failed apply.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Statement, Value, visit_expressions, visit_relations};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{Result, SqlError};

/// Statements in one request (one simple query, one HTTP body).
pub const MAX_STATEMENTS: usize = 1_000;
/// Items in one `IN (…)` list.
pub const MAX_IN_LIST: usize = 100_000;
/// Tables (and vector collections, which are tables) in the catalog.
pub const MAX_TABLES: usize = 10_000;
/// Columns in one table (PostgreSQL's limit).
pub const MAX_COLUMNS: usize = 1_600;
/// The highest `$n` parameter (PostgreSQL's limit). Describing a statement allocates one slot
/// per parameter up to the highest: `$2147483648` asked for 48 GiB and aborted the process.
pub const MAX_PARAMETERS: u64 = 65_535;
/// Dimensions of a `VECTOR(n)` column (pgvector's limit).
pub const MAX_VECTOR_DIM: u32 = 16_000;
/// How deeply an expression or a query may nest, as [`check_nesting`] counts it (an upper
/// bound of the depth of its tree). A tree 128 levels deep already overflows a 2 MiB thread
/// stack in DataFusion's planning in a debug build (`ORDER BY a + a + … + a`); 100 passes in
/// every shape the SQL fuzz tests (`sql/tests/sql_fuzz.rs`) try.
pub const MAX_NESTING: usize = 100;
/// Tables one statement may name (each `FROM` item, join and subquery's). DataFusion's join
/// rewrites recurse once per joined table without growing the stack: a 59-table join overflowed
/// a 2 MiB stack in a debug build. Nodes run queries on 16 MiB stacks (`quorumdb start`); 200
/// leaves room in both builds, and PostgreSQL's corpus of 64-table joins passes.
pub const MAX_RELATIONS: usize = 200;
/// How deeply queries may nest in each other (subqueries, derived tables, CTE bodies).
pub const MAX_QUERY_NESTING: usize = 8;
/// Reads of tokens the parser may spend on nested function calls beyond the first eight per
/// token ([`check_nesting`]): 14 nested calls of one argument.
pub const MAX_CALL_WORK: u64 = 1 << 17;

/// Checks a parsed request against the request limits. (Nesting is checked on the tokens,
/// before parsing: [`check_nesting`].)
pub fn check_request(statements: &[Statement]) -> Result<()> {
    if statements.len() > MAX_STATEMENTS {
        return Err(SqlError::LimitExceeded(format!(
            "a request may hold at most {MAX_STATEMENTS} statements; this one has {}",
            statements.len()
        )));
    }
    for s in statements {
        let over = visit_expressions(s, |e| match e {
            Expr::InList { list, .. } if list.len() > MAX_IN_LIST => {
                ControlFlow::Break(SqlError::LimitExceeded(format!(
                    "an IN list may hold at most {MAX_IN_LIST} items; this one has {} (use a table or ANY($1) with an array)",
                    list.len()
                )))
            }
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) if p.trim_start_matches('$').parse::<u64>().is_ok_and(|n| n > MAX_PARAMETERS) => {
                    ControlFlow::Break(SqlError::LimitExceeded(format!(
                        "parameters are numbered $1 to ${MAX_PARAMETERS}, not {p}"
                    )))
                }
                _ => ControlFlow::Continue(()),
            },
            _ => ControlFlow::Continue(()),
        });
        if let ControlFlow::Break(e) = over {
            return Err(e);
        }
        let mut relations = 0;
        let _ = visit_relations(s, |_| {
            relations += 1;
            ControlFlow::<()>::Continue(())
        });
        if relations > MAX_RELATIONS {
            return Err(SqlError::LimitExceeded(format!(
                "a statement may name at most {MAX_RELATIONS} tables; this one names {relations}"
            )));
        }
    }
    Ok(())
}

/// Checks that a table with `columns` columns may be added to a catalog of `tables` tables.
pub fn check_new_table(tables: usize, columns: usize) -> Result<()> {
    if tables >= MAX_TABLES {
        return Err(SqlError::LimitExceeded(format!("the catalog holds {tables} tables, the most it may hold")));
    }
    if columns > MAX_COLUMNS {
        return Err(SqlError::LimitExceeded(format!(
            "a table may have at most {MAX_COLUMNS} columns; this one has {columns}"
        )));
    }
    Ok(())
}

/// Checks, on a request's tokens and before they are parsed, that no expression nests deeper
/// than [`MAX_NESTING`], no query deeper than [`MAX_QUERY_NESTING`], and that function calls do
/// not nest so deep that parsing them explodes ([`MAX_CALL_WORK`]). Each of these once aborted
/// the process (a stack overflow) or held a thread for minutes (the SQL fuzz tests,
/// `sql/tests/sql_fuzz.rs`, keep every such input).
///
/// - Expressions: the parser's recursion limit (42601) bounds parentheses, subqueries and prefix
///   operators, but the parser reads a chain of infix operators (`a OR b OR …`, `x + y + …`,
///   `v::int::text…`, `q UNION q UNION …`) in a loop, into a tree as deep as the chain is long.
///   Planning recurses once per level of that tree, partly in code that does not grow its stack
///   (DataFusion's expression names and types): a few hundred levels overflow it. The depth is
///   bounded from above in one pass without recursion (a tree too deep to plan is also too deep
///   to drop): tokens that are neither literals nor plain names count one level each (an
///   operator, a keyword); `(…)`, `[…]`, `{…}` and `CASE … END` are groups, one level more than
///   their deepest item; in a group, `,` `;` `WHEN` `THEN` `ELSE` separate items; in an item,
///   `AND` `OR` `UNION` `INTERSECT` `EXCEPT` (which bind loosest) split it into operands, and the
///   item's depth is the number of splitters plus its deepest operand (its counted tokens plus
///   its deepest group). An over-estimate (`a = 1 AND b = 2` counts 3 where the tree has 2
///   levels), never an under-estimate.
/// - Queries: every `SELECT` inside a group inside another query's group is one level more.
///   Planning time grows about twofold per level of nested scalar subqueries.
/// - Calls: the parser reads each function argument twice (first as a possible named argument
///   `name => value`), so an argument nested in `n` calls is read `2^n` times: 40 nested
///   `abs(…)` are 2^40 reads. Each token counts `2^calls` reads, the first 8 of them free (that
///   much is linear in the request's size); the rest must stay under [`MAX_CALL_WORK`].
pub fn check_nesting<'a>(tokens: impl IntoIterator<Item = &'a Token>) -> Result<()> {
    /// A group being read.
    #[derive(Default)]
    struct Group {
        /// Depth of the deepest item ended.
        best: usize,
        /// Splitters in the current item.
        splits: usize,
        /// Deepest operand ended in the current item.
        operand_best: usize,
        /// Counted tokens in the current operand.
        operand: usize,
        /// Deepest group closed in the current operand.
        inner: usize,
        /// The group holds a query (a `SELECT` of its own).
        query: bool,
        /// The group is a function call's arguments.
        call: bool,
    }
    impl Group {
        fn end_operand(&mut self) {
            self.operand_best = self.operand_best.max(self.operand + self.inner);
            (self.operand, self.inner) = (0, 0);
        }
        fn end_item(&mut self) {
            self.end_operand();
            self.best = self.best.max(self.splits + self.operand_best);
            (self.splits, self.operand_best) = (0, 0);
        }
        fn depth(mut self) -> usize {
            self.end_item();
            self.best
        }
    }
    /// The open groups, and how many of them are queries and calls.
    struct Open {
        groups: Vec<Group>,
        queries: usize,
        calls: usize,
    }
    impl Open {
        fn push(&mut self, call: bool) {
            self.calls += usize::from(call);
            self.groups.push(Group { call, ..Group::default() });
        }
        fn close(&mut self) {
            if self.groups.len() > 1
                && let Some(g) = self.groups.pop()
            {
                self.queries -= usize::from(g.query);
                self.calls -= usize::from(g.call);
                if let Some(parent) = self.groups.last_mut() {
                    parent.inner = parent.inner.max(g.depth() + 1);
                }
            }
        }
    }
    let mut open = Open { groups: vec![Group::default()], queries: 0, calls: 0 };
    let (mut deepest_query, mut call_work) = (0, 0u64);
    // The last token that was not whitespace: a word before `(` makes the group a call.
    let mut previous: Option<&Token> = None;
    for t in tokens {
        if matches!(t, Token::Whitespace(_)) {
            continue;
        }
        call_work = call_work.saturating_add((1u64 << open.calls.min(62)).saturating_sub(8));
        match t {
            Token::LParen => open.push(previous.is_some_and(is_call_name)),
            Token::LBracket | Token::LBrace => open.push(false),
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::CASE => open.push(false),
            Token::RParen | Token::RBracket | Token::RBrace => open.close(),
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::END => open.close(),
            _ => {
                let Some(g) = open.groups.last_mut() else { continue };
                match t {
                    Token::Comma | Token::SemiColon => g.end_item(),
                    Token::Word(w) if w.quote_style.is_some() || w.keyword == Keyword::NoKeyword => {}
                    Token::Word(w) => match w.keyword {
                        Keyword::WHEN | Keyword::THEN | Keyword::ELSE => g.end_item(),
                        Keyword::AND | Keyword::OR | Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => {
                            g.end_operand();
                            g.splits += 1;
                        }
                        k => {
                            g.operand += 1;
                            if k == Keyword::SELECT && !g.query {
                                g.query = true;
                                open.queries += 1;
                                deepest_query = deepest_query.max(open.queries);
                            }
                        }
                    },
                    Token::Number(..) | Token::Char(_) | Token::Placeholder(_) | Token::Period | Token::EOF => {}
                    t if is_literal(t) => {}
                    _ => g.operand += 1,
                }
            }
        }
        previous = Some(t);
    }
    while open.groups.len() > 1 {
        open.close();
    }
    let depth = open.groups.pop().map_or(0, Group::depth);
    if depth > MAX_NESTING {
        return Err(SqlError::LimitExceeded(format!(
            "the request nests too deeply: {depth} levels, at most {MAX_NESTING} (each operator of a chain such as \
             a OR b OR … is one level: use IN (…) or ANY(…) for long lists, or split the expression)"
        )));
    }
    if deepest_query > MAX_QUERY_NESTING {
        return Err(SqlError::LimitExceeded(format!(
            "the request nests queries {deepest_query} deep, at most {MAX_QUERY_NESTING}: use WITH or joins"
        )));
    }
    if call_work > MAX_CALL_WORK {
        return Err(SqlError::LimitExceeded(
            "the request nests function calls too deeply (parsing an argument nested in n calls costs 2^n): \
             nest fewer calls in each other"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `(` after `t` opens a function call's arguments: after a name, or a keyword that
/// may name a function (not one that opens a list, a subquery or a clause).
fn is_call_name(t: &Token) -> bool {
    let Token::Word(w) = t else { return false };
    !matches!(
        w.keyword,
        Keyword::VALUES
            | Keyword::IN
            | Keyword::EXISTS
            | Keyword::ANY
            | Keyword::ALL
            | Keyword::SOME
            | Keyword::AS
            | Keyword::ON
            | Keyword::USING
            | Keyword::OVER
            | Keyword::FILTER
            | Keyword::WITHIN
            | Keyword::AND
            | Keyword::OR
            | Keyword::NOT
            | Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::WHEN
            | Keyword::BY
            | Keyword::INTO
            | Keyword::TABLE
            | Keyword::WITH
            | Keyword::UNION
            | Keyword::INTERSECT
            | Keyword::EXCEPT
            | Keyword::RETURNING
            | Keyword::SET
            | Keyword::KEY
            | Keyword::UNIQUE
            | Keyword::INDEX
            | Keyword::CONFLICT
    )
}

/// A string literal token of any kind.
fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()
    }

    fn nesting(sql: &str) -> Result<()> {
        let tokens =
            datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().unwrap();
        check_nesting(&tokens)
    }

    #[test]
    fn chains_of_operators_count_one_level_each() {
        let chain = |n: usize, op: &str| format!("SELECT {} FROM t", vec!["a"; n].join(op));
        assert!(nesting(&chain(90, " + ")).is_ok());
        let e = nesting(&chain(200, " + ")).unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
        assert!(e.to_string().contains("nests too deeply"), "{e}");
        assert!(nesting(&chain(100_000, " OR ")).is_err());
        assert!(nesting(&chain(200, "::int::")).is_err());
        let unions = vec!["SELECT 1"; 200].join(" UNION ALL ");
        assert!(nesting(&unions).is_err());
        // Groups add up: 40 levels in each of three nested groups.
        let inner = vec!["a"; 40].join(" + ");
        assert!(nesting(&format!("SELECT (({inner}) + {inner}) + {inner}")).is_err());
        assert!(nesting(&format!("SELECT ({inner}) + {inner}")).is_ok());
        // AND/OR split operands: 60 conjuncts of 3 levels are 62, not 180.
        let conjuncts = vec!["a = 1 + b"; 60].join(" AND ");
        assert!(nesting(&format!("SELECT * FROM t WHERE {conjuncts}")).is_ok());
        let conjuncts = vec!["a = 1"; 150].join(" OR ");
        assert!(nesting(&format!("SELECT * FROM t WHERE {conjuncts}")).is_err());
    }

    #[test]
    fn lists_and_literals_do_not_nest() {
        let rows = vec!["(1, 'a', 2.5, NULL)"; 10_000].join(", ");
        assert!(nesting(&format!("INSERT INTO t VALUES {rows}")).is_ok());
        let items: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        assert!(nesting(&format!("SELECT * FROM t WHERE a IN ({})", items.join(", "))).is_ok());
        let arms: Vec<String> = (0..500).map(|i| format!("WHEN a = {i} THEN 'x{i}'")).collect();
        assert!(nesting(&format!("SELECT CASE {} ELSE 'y' END FROM t", arms.join(" "))).is_ok());
        let cols: Vec<String> = (0..1500).map(|i| format!("c{i} INT NOT NULL DEFAULT 0")).collect();
        assert!(nesting(&format!("CREATE TABLE w ({})", cols.join(", "))).is_ok());
        assert!(nesting(&format!("SELECT '{}'", "+".repeat(100_000))).is_ok());
        // Unbalanced input is left to the parser.
        assert!(nesting("SELECT ((((1").is_ok());
        assert!(nesting("SELECT 1))))").is_ok());
        assert!(nesting("END; END").is_ok());
    }

    #[test]
    fn nested_queries_and_calls_are_bounded() {
        let nest =
            |n: usize, open: &str, leaf: &str, close: &str| format!("{}{leaf}{}", open.repeat(n), close.repeat(n));
        assert!(nesting(&format!("SELECT {}", nest(MAX_QUERY_NESTING - 1, "(SELECT ", "1", ")"))).is_ok());
        let e = nesting(&format!("SELECT {}", nest(MAX_QUERY_NESTING, "(SELECT ", "1", ")"))).unwrap_err();
        assert!(e.to_string().contains("nests queries"), "{e}");
        assert!(nesting(&format!("SELECT * FROM {}", nest(20, "(SELECT * FROM ", "t", ") s"))).is_err());
        assert!(nesting(&format!("SELECT {}", nest(10, "abs(", "1", ")"))).is_ok());
        let e = nesting(&format!("SELECT {}", nest(40, "abs(", "1", ")"))).unwrap_err();
        assert!(e.to_string().contains("function calls"), "{e}");
        assert!(nesting(&format!("SELECT {}", nest(18, "coalesce(", "1", ", 2)"))).is_err());
        // Plain parentheses, lists and rows are not calls; many shallow calls cost nothing.
        assert!(nesting(&format!("SELECT {}", nest(45, "(", "1", ")"))).is_ok());
        let rows = vec!["(1, upper(lower('a')), abs(-1))"; 20_000].join(", ");
        assert!(nesting(&format!("INSERT INTO t VALUES {rows}")).is_ok());
    }

    #[test]
    fn requests_beyond_the_limits_are_refused_with_54000() {
        assert!(check_request(&parse("SELECT 1; SELECT 2")).is_ok());
        let many = "SELECT 1;".repeat(MAX_STATEMENTS + 1);
        let e = check_request(&parse(&many)).unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
        let items: Vec<String> = (0..=MAX_IN_LIST).map(|i| i.to_string()).collect();
        let e = check_request(&parse(&format!("SELECT 1 WHERE 1 IN ({})", items.join(",")))).unwrap_err();
        assert!(e.to_string().contains("IN list"), "{e}");
        let ok: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert!(check_request(&parse(&format!("SELECT 1 WHERE 1 IN ({})", ok.join(",")))).is_ok());
        assert!(check_request(&parse("SELECT $65535")).is_ok());
        let e = check_request(&parse("UPDATE t SET a = $2147483648 WHERE id = 1")).unwrap_err();
        assert!(e.to_string().contains("$2147483648"), "{e}");
        assert_eq!(check_new_table(MAX_TABLES, 1).unwrap_err().sqlstate(), "54000");
        assert_eq!(check_new_table(1, MAX_COLUMNS + 1).unwrap_err().sqlstate(), "54000");
        assert!(check_new_table(1, 3).is_ok());
    }
}
