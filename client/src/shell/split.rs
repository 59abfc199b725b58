//! Cutting shell input into SQL statements and dot-commands.
//!
//! Owns the lexical rules that decide where a statement ends: a `;` outside single-quoted
//! strings (`'it''s'`, `E'\''`), quoted identifiers (`"a;b"`), `--` and nested `/* */`
//! comments and dollar-quoted bodies (`$$…$$`, `$tag$…$tag$`). A line whose first character is
//! `.` or `\`, typed while no statement is open, is a dot-command and ends at the line's end.
//! Pure functions only: no I/O, nothing sent anywhere.

/// One complete piece of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A SQL statement, without its terminating `;`, trimmed; `line` is the 1-based line of
    /// the input it starts on.
    Sql { text: String, line: usize },
    /// A dot-command line (`.tables`, `\d t`), trimmed.
    Command { text: String, line: usize },
}

/// What is still open at the end of the input: decides the continuation prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Nothing: the rest is empty, blank or only comments.
    Nothing,
    /// A statement was started but has no `;` yet.
    Statement,
    /// Inside a `'…'` string.
    Quote,
    /// Inside a `"…"` identifier.
    Identifier,
    /// Inside a `/* … */` comment.
    Comment,
    /// Inside a dollar-quoted body.
    Dollar,
}

/// The result of [`split`]: the complete pieces and the unfinished tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub pieces: Vec<Piece>,
    /// The input after the last complete piece, verbatim (feed it again with more lines).
    pub rest: String,
    /// Line (1-based, relative to the input) where `rest` starts.
    pub rest_line: usize,
    pub open: Open,
    /// The SQL in `rest` (comments before it dropped) and its line.
    rest_sql: Option<(String, usize)>,
}

impl Split {
    /// The unfinished tail as a statement, if it holds any SQL (used at end of input, where a
    /// final statement without `;` still runs, as in psql).
    pub fn rest_statement(&self) -> Option<Piece> {
        self.rest_sql.as_ref().map(|(text, line)| Piece::Sql { text: text.clone(), line: *line })
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The dollar-quote tag starting at `chars[i]` (`$…$` including both `$`), if one starts here.
fn dollar_tag(chars: &[char], i: usize) -> Option<String> {
    if i > 0 && is_ident_char(chars[i - 1]) {
        return None; // `a$b$` is part of an identifier, `$1` a parameter
    }
    let mut j = i + 1;
    while j < chars.len() && chars[j] != '$' {
        let c = chars[j];
        let ok = if j == i + 1 { c.is_alphabetic() || c == '_' } else { c.is_alphanumeric() || c == '_' };
        if !ok {
            return None;
        }
        j += 1;
    }
    (j < chars.len()).then(|| chars[i..=j].iter().collect())
}

/// Whether only blanks precede `chars[i]` on its line.
fn starts_line(chars: &[char], i: usize) -> bool {
    chars[..i].iter().rev().take_while(|&&c| c != '\n').all(|c| c.is_whitespace())
}

/// Splits `input` into complete statements and dot-commands plus the unfinished rest.
pub fn split(input: &str) -> Split {
    let chars: Vec<char> = input.chars().collect();
    let mut pieces = Vec::new();
    let mut start = 0; // char index where the current piece starts
    let mut line = 1; // current line
    let mut start_line = 1;
    let mut has_sql = false; // the current piece holds something besides blanks and comments
    let (mut sql_start, mut sql_line) = (0, 1); // where that something starts
    let mut open = Open::Nothing;
    let mut i = 0;
    let text = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // A dot-command: first non-blank character of a line while no SQL is pending.
        if !has_sql && (c == '.' || c == '\\') && starts_line(&chars, i) {
            let end = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p);
            pieces.push(Piece::Command { text: text(i, end).trim().to_string(), line });
            i = (end + 1).min(chars.len());
            line += usize::from(end < chars.len());
            start = i;
            start_line = line;
            continue;
        }
        let comment = (c == '-' && next == Some('-')) || (c == '/' && next == Some('*'));
        if !has_sql && !c.is_whitespace() && !comment && c != ';' {
            has_sql = true;
            sql_start = i;
            sql_line = line;
        }
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                open = Open::Comment;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            open = Open::Nothing;
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            '\'' => {
                // E'…' strings take backslash escapes.
                let escapes = i > 0 && matches!(chars[i - 1], 'e' | 'E') && (i < 2 || !is_ident_char(chars[i - 2]));
                open = Open::Quote;
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' if escapes => {
                            line += usize::from(chars.get(i + 1) == Some(&'\n'));
                            i += 2;
                        }
                        '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
                        '\'' => {
                            open = Open::Nothing;
                            i += 1;
                            break;
                        }
                        c => {
                            line += usize::from(c == '\n');
                            i += 1;
                        }
                    }
                }
                i = i.min(chars.len());
            }
            '"' => {
                open = Open::Identifier;
                i += 1;
                while i < chars.len() {
                    if chars[i] == '"' {
                        if chars.get(i + 1) == Some(&'"') {
                            i += 2;
                            continue;
                        }
                        open = Open::Nothing;
                        i += 1;
                        break;
                    }
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
            '$' => match dollar_tag(&chars, i) {
                Some(tag) => {
                    let tag: Vec<char> = tag.chars().collect();
                    open = Open::Dollar;
                    i += tag.len();
                    while i < chars.len() {
                        if chars[i..].starts_with(&tag) {
                            i += tag.len();
                            open = Open::Nothing;
                            break;
                        }
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
                None => i += 1,
            },
            ';' => {
                if has_sql {
                    // Comments before the statement are dropped, as psql does.
                    pieces.push(Piece::Sql { text: text(sql_start, i).trim().to_string(), line: sql_line });
                }
                i += 1;
                start = i;
                start_line = line;
                has_sql = false;
            }
            _ => i += 1,
        }
    }
    let rest = text(start, chars.len());
    let open = match open {
        Open::Nothing if has_sql => Open::Statement,
        o => o,
    };
    let rest_sql = has_sql.then(|| (text(sql_start, chars.len()).trim().to_string(), sql_line));
    Split { pieces, rest, rest_line: start_line, open, rest_sql }
}

/// The first `n` keywords of a statement, upper-cased, skipping leading comments and
/// parentheses (`(SELECT 1)`).
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = sql;
    while words.len() < n {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |p| &r[p..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |p| &r[p + 2..]);
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            words.push(rest[..end].to_uppercase());
            rest = &rest[end..];
        }
    }
    words
}

/// Whether a statement only reads, so re-running it after a failover cannot apply anything
/// twice. Conservative: anything not known to be a plain read counts as a write.
pub fn is_read_only(sql: &str) -> bool {
    let words = leading_words(sql, 2);
    match words.first().map(String::as_str) {
        Some("SELECT") => !sql.to_uppercase().split_whitespace().any(|w| w == "INTO"),
        Some("SHOW" | "VALUES" | "TABLE") => true,
        Some("EXPLAIN") => words.get(1).map(String::as_str) != Some("ANALYZE"),
        _ => false,
    }
}

/// The psql-style command tag for a statement that returned no rows (`INSERT 0 3`,
/// `CREATE TABLE`), from its leading keywords and the affected row count: the wire protocol
/// client we use reports only the count.
pub fn command_tag(sql: &str, rows: u64) -> String {
    let words = leading_words(sql, 5);
    let Some(first) = words.first() else { return String::new() };
    match first.as_str() {
        "INSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" | "SELECT" | "MERGE" | "COPY" | "FETCH" | "MOVE" => format!("{first} {rows}"),
        "CREATE" | "DROP" | "ALTER" => {
            const SKIP: [&str; 7] = ["OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "MATERIALIZED"];
            let object: Vec<&str> = words[1..].iter().map(String::as_str).filter(|w| !SKIP.contains(w)).collect();
            match object.first() {
                Some(o) if words.iter().any(|w| w == "MATERIALIZED") => format!("{first} MATERIALIZED {o}"),
                Some(o) => format!("{first} {o}"),
                None => first.clone(),
            }
        }
        "START" => "START TRANSACTION".into(),
        "END" => "COMMIT".into(),
        "ABORT" => "ROLLBACK".into(),
        _ => first.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(text: &str, line: usize) -> Piece {
        Piece::Sql { text: text.into(), line }
    }

    fn cmd(text: &str, line: usize) -> Piece {
        Piece::Command { text: text.into(), line }
    }

    #[test]
    fn several_statements_on_one_line() {
        let s = split("SELECT 1; SELECT 2;select 3");
        assert_eq!(s.pieces, vec![sql("SELECT 1", 1), sql("SELECT 2", 1)]);
        assert_eq!(s.open, Open::Statement);
        assert_eq!(s.rest_statement(), Some(sql("select 3", 1)));
    }

    #[test]
    fn statement_across_lines_keeps_its_first_line() {
        let s = split("\n\nSELECT a,\n  b\nFROM t;\nSELECT 2;\n");
        assert_eq!(s.pieces, vec![sql("SELECT a,\n  b\nFROM t", 3), sql("SELECT 2", 6)]);
        assert_eq!(s.open, Open::Nothing);
        assert_eq!(s.rest, "\n");
        assert_eq!(s.rest_statement(), None);
    }

    #[test]
    fn semicolons_in_strings_and_identifiers() {
        let s = split("INSERT INTO \"a;b\" VALUES ('x;y', 'it''s;', E'\\';');");
        assert_eq!(s.pieces, vec![sql("INSERT INTO \"a;b\" VALUES ('x;y', 'it''s;', E'\\';')", 1)]);
        assert_eq!(s.open, Open::Nothing);
        // Without the E prefix a backslash is an ordinary character.
        let s = split("SELECT 'a\\';");
        assert_eq!(s.pieces, vec![sql("SELECT 'a\\'", 1)]);
    }

    #[test]
    fn semicolons_in_comments() {
        let s = split("SELECT 1 -- not; the end\n, 2; /* a; /* nested; */ still; */ SELECT 3;");
        assert_eq!(s.pieces, vec![sql("SELECT 1 -- not; the end\n, 2", 1), sql("SELECT 3", 2)]);
    }

    #[test]
    fn dollar_quotes() {
        let body = "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ ; $body$ LANGUAGE sql";
        let s = split(&format!("{body};"));
        assert_eq!(s.pieces, vec![sql(body, 1)]);
        let s = split("SELECT $$a;b$$, $1;");
        assert_eq!(s.pieces, vec![sql("SELECT $$a;b$$, $1", 1)]);
        // An identifier containing `$` is not a dollar quote.
        let s = split("SELECT a$b$ ; x");
        assert_eq!(s.pieces, vec![sql("SELECT a$b$", 1)]);
    }

    #[test]
    fn open_states_for_prompts() {
        assert_eq!(split("SELECT 'abc").open, Open::Quote);
        assert_eq!(split("SELECT \"abc").open, Open::Identifier);
        assert_eq!(split("SELECT 1 /* abc").open, Open::Comment);
        assert_eq!(split("SELECT $$ abc").open, Open::Dollar);
        assert_eq!(split("SELECT 1\n").open, Open::Statement);
        assert_eq!(split("-- only a comment\n").open, Open::Nothing);
        assert_eq!(split("  \n").open, Open::Nothing);
        assert_eq!(split("SELECT 1;").open, Open::Nothing);
    }

    #[test]
    fn leading_comments_are_dropped_and_lines_count_from_the_sql() {
        let s = split("-- intro; here\n/* block\n; */\n  SELECT 1;\n-- tail\nSELECT\n2");
        assert_eq!(s.pieces, vec![sql("SELECT 1", 4)]);
        assert_eq!(s.rest_statement(), Some(sql("SELECT\n2", 6)));
        assert_eq!(s.rest_line, 4);
    }

    #[test]
    fn empty_statements_are_dropped() {
        let s = split(";; -- c\n ; SELECT 1;;");
        assert_eq!(s.pieces, vec![sql("SELECT 1", 2)]);
    }

    #[test]
    fn dot_commands_only_at_the_start_of_a_line_outside_a_statement() {
        let s = split(".mode csv\nSELECT 1;\n  .tables\nSELECT\n.5;\n\\d t\n");
        assert_eq!(
            s.pieces,
            vec![cmd(".mode csv", 1), sql("SELECT 1", 2), cmd(".tables", 3), sql("SELECT\n.5", 4), cmd("\\d t", 6)]
        );
        assert_eq!(s.open, Open::Nothing);
        // A command on the last line without a newline.
        assert_eq!(split(".quit").pieces, vec![cmd(".quit", 1)]);
        // After a comment-only line, still a command.
        assert_eq!(split("-- hi\n.quit\n").pieces, vec![cmd(".quit", 2)]);
    }

    #[test]
    fn feeding_line_by_line_gives_the_same_statements() {
        let input = "SELECT 'a;\nb';\nINSERT INTO t\nVALUES (1);\n";
        let mut pending = String::new();
        let mut got = Vec::new();
        for l in input.lines() {
            pending.push_str(l);
            pending.push('\n');
            let s = split(&pending);
            got.extend(s.pieces.into_iter().map(|p| match p {
                Piece::Sql { text, .. } | Piece::Command { text, .. } => text,
            }));
            pending = s.rest;
        }
        assert_eq!(got, vec!["SELECT 'a;\nb'", "INSERT INTO t\nVALUES (1)"]);
    }

    #[test]
    fn unicode_input() {
        let s = split("SELECT 'héllo; wörld', \"名前\"; SELECT '😀';");
        assert_eq!(s.pieces, vec![sql("SELECT 'héllo; wörld', \"名前\"", 1), sql("SELECT '😀'", 1)]);
    }

    #[test]
    fn read_only_statements() {
        assert!(is_read_only("select * from t"));
        assert!(is_read_only("  -- c\n(SELECT 1)"));
        assert!(is_read_only("SHOW consistency"));
        assert!(is_read_only("EXPLAIN SELECT 1"));
        assert!(!is_read_only("EXPLAIN ANALYZE DELETE FROM t"));
        assert!(!is_read_only("SELECT * INTO t2 FROM t"));
        assert!(!is_read_only("INSERT INTO t VALUES (1)"));
        assert!(!is_read_only("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"));
        assert!(!is_read_only(""));
    }

    #[test]
    fn command_tags() {
        assert_eq!(command_tag("insert into t values (1),(2)", 2), "INSERT 0 2");
        assert_eq!(command_tag("UPDATE t SET a = 1", 3), "UPDATE 3");
        assert_eq!(command_tag("delete from t", 0), "DELETE 0");
        assert_eq!(command_tag("create table t (a int)", 0), "CREATE TABLE");
        assert_eq!(command_tag("CREATE UNIQUE INDEX i ON t (a)", 0), "CREATE INDEX");
        assert_eq!(command_tag("create or replace view v as select 1", 0), "CREATE VIEW");
        assert_eq!(command_tag("DROP TABLE IF EXISTS t", 0), "DROP TABLE");
        assert_eq!(command_tag("set consistency = 'stale'", 0), "SET");
        assert_eq!(command_tag("/* c */ begin", 0), "BEGIN");
        assert_eq!(command_tag("", 0), "");
    }
}
