//! Rendering query results for the terminal: psql-like aligned tables (comfy-table), CSV,
//! JSON and one-value-per-line records.
//!
//! Values arrive in PostgreSQL's text form (the simple query protocol), so the formatters
//! never guess types: JSON values are strings or `null`, and the only use of "looks like a
//! number" is right-aligning such columns in tables, as psql does for numeric types.
//! Pure functions: nothing here reads or writes anything.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, TableStyle};
use comfy_table::{ContentLineStyle, LineStyle};
use unicode_width::UnicodeWidthStr;

/// The rows of one statement, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    /// `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// How results are printed (`.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Aligned columns with a header and a `(N rows)` footer, like psql.
    #[default]
    Table,
    /// RFC 4180 CSV with a header line; NULL is an empty field, the empty string `""`.
    Csv,
    /// One JSON array of objects per result; values are strings or null.
    Json,
    /// One `column = value` line per value, a blank line between rows (sqlite's line mode).
    Line,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "table" | "aligned" => Some(Mode::Table),
            "csv" => Some(Mode::Csv),
            "json" => Some(Mode::Json),
            "line" | "lines" => Some(Mode::Line),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Csv => "csv",
            Mode::Json => "json",
            Mode::Line => "line",
        }
    }
}

/// psql's aligned format: ` a | b ` header, `---+---` separator, no outer border.
const PSQL: TableStyle = TableStyle::new()
    .header_lines(ContentLineStyle::none().junction('|'))
    .header_separator(LineStyle::none().fill('-').junction('+'))
    .content_lines(ContentLineStyle::none().junction('|'));

/// Renders `rs` in `mode`; the text ends with a newline.
pub fn render(rs: &ResultSet, mode: Mode) -> String {
    match mode {
        Mode::Table => table(rs),
        Mode::Csv => csv(rs),
        Mode::Json => json(rs),
        Mode::Line => line(rs),
    }
}

/// Whether a value is a number in PostgreSQL's text output (for right alignment only).
fn numeric(v: &str) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    if matches!(v, "NaN" | "Infinity") {
        return true;
    }
    let mut digits = 0;
    let mut dots = 0;
    for c in v.chars() {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

fn table(rs: &ResultSet) -> String {
    let mut t = Table::new();
    t.load_style(PSQL).set_content_arrangement(ContentArrangement::Disabled).force_no_tty();
    // Headers centred as psql does (an odd extra space goes right; comfy-table puts it left).
    let width = |s: &str| s.lines().map(UnicodeWidthStr::width).max().unwrap_or(0);
    t.set_header(rs.columns.iter().enumerate().map(|(i, c)| {
        let values = rs.rows.iter().filter_map(|r| r.get(i).and_then(|v| v.as_deref()));
        let w = values.map(width).chain([width(c)]).max().unwrap_or(0);
        let left = (w - width(c)) / 2;
        Cell::new(format!("{}{c}", " ".repeat(left)))
    }));
    let right: Vec<bool> = (0..rs.columns.len())
        .map(|i| {
            let mut values = rs.rows.iter().filter_map(|r| r.get(i).and_then(|v| v.as_deref())).peekable();
            values.peek().is_some() && values.all(numeric)
        })
        .collect();
    for row in &rs.rows {
        t.add_row(row.iter().enumerate().map(|(i, v)| {
            let align = if right.get(i) == Some(&true) { CellAlignment::Right } else { CellAlignment::Left };
            Cell::new(v.as_deref().unwrap_or("")).set_alignment(align)
        }));
    }
    let mut out = String::new();
    if !rs.columns.is_empty() {
        for l in t.lines() {
            out.push_str(l.trim_end());
            out.push('\n');
        }
    }
    let n = rs.rows.len();
    out.push_str(&format!("({n} {})\n", if n == 1 { "row" } else { "rows" }));
    out
}

fn csv_field(v: &str) -> String {
    if v.is_empty() || v.contains([',', '"', '\n', '\r']) || v.starts_with(' ') || v.ends_with(' ') {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

fn csv(rs: &ResultSet) -> String {
    let mut out = String::new();
    let mut push_line = |fields: Vec<String>| {
        out.push_str(&fields.join(","));
        out.push('\n');
    };
    push_line(rs.columns.iter().map(|c| csv_field(c)).collect());
    for row in &rs.rows {
        push_line(row.iter().map(|v| v.as_deref().map(csv_field).unwrap_or_default()).collect());
    }
    out
}

fn json(rs: &ResultSet) -> String {
    let rows: Vec<serde_json::Value> = rs
        .rows
        .iter()
        .map(|row| {
            let mut obj = serde_json::Map::new();
            for (c, v) in rs.columns.iter().zip(row) {
                obj.insert(c.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String));
            }
            serde_json::Value::Object(obj)
        })
        .collect();
    let mut out = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&r.to_string());
    }
    out.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
    out
}

fn line(rs: &ResultSet) -> String {
    let width = rs.columns.iter().map(|c| UnicodeWidthStr::width(c.as_str())).max().unwrap_or(0);
    let mut out = String::new();
    for (i, row) in rs.rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (c, v) in rs.columns.iter().zip(row) {
            let pad = width - UnicodeWidthStr::width(c.as_str());
            out.push_str(&format!("{}{c} = {}\n", " ".repeat(pad), v.as_deref().unwrap_or("")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(columns: &[&str], rows: &[&[Option<&str>]]) -> ResultSet {
        ResultSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows.iter().map(|r| r.iter().map(|v| v.map(str::to_string)).collect()).collect(),
        }
    }

    fn sample() -> ResultSet {
        rs(
            &["id", "name", "score"],
            &[
                &[Some("1"), Some("alice"), Some("9.5")],
                &[Some("22"), None, Some("-3")],
                &[Some("3"), Some("bob, \"the\" builder"), None],
            ],
        )
    }

    #[test]
    fn table_is_psql_like() {
        let expected = concat!(
            " id |        name        | score\n",
            "----+--------------------+-------\n",
            "  1 | alice              |   9.5\n",
            " 22 |                    |    -3\n",
            "  3 | bob, \"the\" builder |\n",
            "(3 rows)\n",
        );
        assert_eq!(render(&sample(), Mode::Table), expected);
    }

    #[test]
    fn table_with_one_or_no_rows() {
        let one = rs(&["x"], &[&[Some("1")]]);
        assert_eq!(render(&one, Mode::Table), " x\n---\n 1\n(1 row)\n");
        let none = rs(&["a", "b"], &[]);
        assert_eq!(render(&none, Mode::Table), " a | b\n---+---\n(0 rows)\n");
    }

    #[test]
    fn table_aligns_by_display_width() {
        let t = rs(&["k", "v"], &[&[Some("名前"), Some("x")], &[Some("ab"), Some("é")]]);
        let expected = concat!("  k   | v\n", "------+---\n", " 名前 | x\n", " ab   | é\n", "(2 rows)\n");
        assert_eq!(render(&t, Mode::Table), expected);
    }

    #[test]
    fn csv_quotes_when_needed_and_tells_null_from_empty() {
        let t = rs(
            &["a", "b c"],
            &[&[None, Some("")], &[Some("x,y"), Some("line\nbreak")], &[Some("say \"hi\""), Some("plain")]],
        );
        let expected = "a,b c\n,\"\"\n\"x,y\",\"line\nbreak\"\n\"say \"\"hi\"\"\",plain\n";
        assert_eq!(render(&t, Mode::Csv), expected);
    }

    #[test]
    fn json_values_are_strings_or_null() {
        let expected = concat!(
            "[\n",
            "  {\"id\":\"1\",\"name\":\"alice\",\"score\":\"9.5\"},\n",
            "  {\"id\":\"22\",\"name\":null,\"score\":\"-3\"},\n",
            "  {\"id\":\"3\",\"name\":\"bob, \\\"the\\\" builder\",\"score\":null}\n",
            "]\n"
        );
        assert_eq!(render(&sample(), Mode::Json), expected);
        assert_eq!(render(&rs(&["a"], &[]), Mode::Json), "[]\n");
        let parsed: serde_json::Value = serde_json::from_str(&render(&sample(), Mode::Json)).unwrap();
        assert_eq!(parsed[1]["name"], serde_json::Value::Null);
    }

    #[test]
    fn line_mode_right_aligns_names() {
        let expected = "   id = 1\n name = alice\nscore = 9.5\n\n   id = 22\n name = \nscore = -3\n\n   id = 3\n name = bob, \"the\" builder\nscore = \n";
        assert_eq!(render(&sample(), Mode::Line), expected);
    }

    #[test]
    fn numbers_for_alignment() {
        for n in ["1", "-2", "3.25", "0.5", "NaN", "-Infinity"] {
            assert!(numeric(n), "{n}");
        }
        for s in ["", "-", "1.2.3", "1e5x", "abc", "1 2", "."] {
            assert!(!numeric(s), "{s}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("CSV"), Some(Mode::Csv));
        assert_eq!(Mode::parse("table"), Some(Mode::Table));
        assert_eq!(Mode::parse("line"), Some(Mode::Line));
        assert_eq!(Mode::parse("json"), Some(Mode::Json));
        assert_eq!(Mode::parse("xml"), None);
    }
}
