//! `quorumdb shell`: a psql-like interactive client.
//!
//! ```text
//! quorumdb shell [-h|--host ADDR] [--pg ADDR] [-U USER] [-d DB] [--password P]
//!                [-c SQL | -f FILE] [--stop-on-error]
//! ```
//!
//! It connects through a node's main address (`--host`, default `127.0.0.1:7001`): the node's
//! `/v1/status` gives its PostgreSQL protocol address and the cluster members. SQL runs over
//! the wire protocol; cluster commands (`.nodes`, `.transfer`…) use the HTTP API. When the
//! node dies the shell moves to another member (see [`connection`]).
//!
//! Input: statements end with `;` and may span lines ([`split`]); a line starting with `.`
//! (or a psql `\` alias) is a dot-command ([`command`]). On a terminal: prompts, history in
//! `~/.quorumdb_history` (or `$QUORUMDB_HISTORY`), tab completion ([`complete`]) and Ctrl-C
//! cancelling the running statement. Otherwise (`-c`, `-f`, a pipe on stdin) no prompt or
//! banner, errors go to stderr as `SOURCE:LINE: ERROR: …`, `--stop-on-error` stops at the
//! first failure, and the exit status is 1 if any statement failed (2 if no connection).
//!
//! Submodules: [`split`] (statement boundaries), [`format`] (table/csv/json/line output),
//! [`command`] (dot-command parsing), [`complete`] (rustyline completion), [`admin`] (HTTP
//! status and admin calls), [`schema`] (catalog queries, `CREATE TABLE` text), [`connection`]
//! (the wire connection and failover). The parsing
//! and rendering are pure functions, unit-tested in their modules.

pub mod admin;
pub mod command;
pub mod complete;
pub mod connection;
pub mod format;
pub mod schema;
pub mod split;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ArgAction;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Editor};

use self::command::DotCommand;
use self::complete::ShellHelper;
use self::connection::{Login, Reply, Session};
use self::format::{Mode, ResultSet};
use self::schema::{ColumnDef, IndexDef};
use self::split::{Open, Piece};
use crate::error::ShellError;

/// How deep `.read` files may include each other.
const MAX_READ_DEPTH: usize = 16;

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ShellArgs {
    /// A node's main (HTTP/gRPC) address; its PostgreSQL address and the members are read
    /// from its /v1/status [default: 127.0.0.1:7001]
    #[arg(short = 'h', long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Connect straight to this PostgreSQL protocol address (cluster commands and failover
    /// then need --host too).
    #[arg(long, value_name = "ADDR")]
    pub pg: Option<String>,
    /// User name.
    #[arg(short = 'U', long, default_value = "quorumdb")]
    pub user: String,
    /// Password (or set QUORUMDB_PASSWORD or PGPASSWORD).
    #[arg(long, env = "QUORUMDB_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Database name.
    #[arg(short = 'd', long, default_value = "quorumdb")]
    pub dbname: String,
    /// Run these statements (and dot-commands) and exit.
    #[arg(short = 'c', long, value_name = "SQL", conflicts_with = "file")]
    pub command: Option<String>,
    /// Run the statements in FILE and exit.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// In a script, stop at the first statement that fails.
    #[arg(long)]
    pub stop_on_error: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// What to do after a piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// Where a piece of input came from, for error messages.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    line: usize,
}

struct Shell {
    session: Session,
    mode: Mode,
    timer: bool,
    interactive: bool,
    stop_on_error: bool,
    /// Some statement or command failed.
    failed: bool,
    /// Table names for completion (interactive only).
    tables: Arc<Mutex<Vec<String>>>,
    read_depth: usize,
}

/// Writes to stdout; a closed pipe (`| head`) ends the shell quietly.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Entry point of `quorumdb shell`.
pub fn main(args: ShellArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let password = args.password.clone().or_else(|| std::env::var("PGPASSWORD").ok());
    let login = Login { user: args.user.clone(), password, dbname: args.dbname.clone() };
    let host = match (&args.host, &args.pg) {
        (Some(h), _) => Some(h.clone()),
        (None, None) => Some("127.0.0.1:7001".to_string()),
        (None, Some(_)) => None,
    };
    let session = match rt.block_on(Session::open(login, host.as_deref(), args.pg.as_deref())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("quorumdb shell: {e}");
            return ExitCode::from(2);
        }
    };
    let script = args.command.is_some() || args.file.is_some() || !std::io::stdin().is_terminal();
    let mut shell = Shell {
        session,
        mode: Mode::Table,
        timer: false,
        interactive: !script,
        stop_on_error: args.stop_on_error,
        failed: false,
        tables: Arc::new(Mutex::new(Vec::new())),
        read_depth: 0,
    };
    if let Some(sql) = &args.command {
        shell.run_text(&rt, sql, "-c");
    } else if let Some(file) = &args.file {
        shell.run_file(&rt, file);
    } else if script {
        shell.run_stream(&rt, std::io::stdin().lock(), "<stdin>");
    } else {
        shell.interact(&rt);
    }
    if shell.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUORUMDB_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quorumdb_history"))
}

/// The psql-style prompt: `quorumdb@2=> `, `quorumdb@2-> ` inside a statement, `'>` in a
/// string and so on.
fn prompt(node: Option<u64>, open: Open) -> String {
    let mark = match open {
        Open::Nothing => '=',
        Open::Statement => '-',
        Open::Quote => '\'',
        Open::Identifier => '"',
        Open::Comment => '*',
        Open::Dollar => '$',
    };
    match node {
        Some(id) => format!("quorumdb@{id}{mark}> "),
        None => format!("quorumdb{mark}> "),
    }
}

impl Shell {
    fn report(&mut self, source: Option<&Source>, e: &ShellError) {
        self.failed = true;
        let at = match source {
            Some(s) if !self.interactive => format!("{}:{}: ", s.name, s.line),
            _ => String::new(),
        };
        match e {
            ShellError::Server { detail, hint, .. } => {
                let mut msg = format!("{at}{e}");
                if let Some(d) = detail {
                    msg.push_str(&format!("\nDETAIL:  {d}"));
                }
                if let Some(h) = hint {
                    msg.push_str(&format!("\nHINT:  {h}"));
                }
                eprintln!("{msg}");
            }
            _ => eprintln!("{at}ERROR:  {e}"),
        }
    }

    /// Runs a future; in a terminal, Ctrl-C cancels the statement on the server.
    fn block(&mut self, rt: &tokio::runtime::Runtime, sql: &str) -> Result<Vec<Reply>, ShellError> {
        let token = self.session.cancel_token().filter(|_| self.interactive);
        let session = &mut self.session;
        rt.block_on(async {
            let run = session.execute(sql);
            tokio::pin!(run);
            let Some(token) = token else { return run.await };
            loop {
                tokio::select! {
                    r = &mut run => return r,
                    _ = tokio::signal::ctrl_c() => {
                        if let Err(e) = token.cancel_query(tokio_postgres::NoTls).await {
                            eprintln!("could not send the cancel request: {e}");
                        }
                    }
                }
            }
        })
    }

    /// Runs one SQL statement and prints its results.
    fn run_sql(&mut self, rt: &tokio::runtime::Runtime, sql: &str, source: Option<&Source>) -> Flow {
        let started = Instant::now();
        let result = self.block(rt, sql);
        let elapsed = started.elapsed();
        match result {
            Ok(replies) => {
                for r in replies {
                    match r {
                        Reply::Rows(rs) => {
                            let mut text = format::render(&rs, self.mode);
                            if self.mode == Mode::Table {
                                text.push('\n');
                            }
                            out(&text);
                        }
                        Reply::Done(n) => {
                            if matches!(self.mode, Mode::Table | Mode::Line) {
                                out(&format!("{}\n", split::command_tag(sql, n)));
                            }
                        }
                    }
                }
                if self.interactive
                    && matches!(
                        split::leading_words(sql, 1).first().map(String::as_str),
                        Some("CREATE" | "DROP" | "ALTER")
                    )
                {
                    self.refresh_tables(rt);
                }
            }
            Err(e) => self.report(source, &e),
        }
        if self.timer {
            out(&format!("Time: {:.3} ms\n", elapsed.as_secs_f64() * 1000.0));
        }
        Flow::Continue
    }

    /// Runs a query the shell itself needs and returns its first result set.
    fn query(&mut self, rt: &tokio::runtime::Runtime, sql: &str) -> Result<ResultSet, ShellError> {
        let replies = rt.block_on(self.session.execute(sql))?;
        Ok(replies
            .into_iter()
            .find_map(|r| match r {
                Reply::Rows(rs) => Some(rs),
                Reply::Done(_) => None,
            })
            .unwrap_or_default())
    }

    fn table_names(&mut self, rt: &tokio::runtime::Runtime) -> Result<ResultSet, ShellError> {
        let rs = self.query(rt, schema::TABLES_SQL)?;
        if let Ok(mut t) = self.tables.lock() {
            *t = rs.rows.iter().filter_map(|r| r.first().cloned().flatten()).collect();
        }
        Ok(rs)
    }

    fn refresh_tables(&mut self, rt: &tokio::runtime::Runtime) {
        if let Err(e) = self.table_names(rt) {
            tracing::debug!("cannot refresh the table names: {e}");
        }
    }

    fn schema(&mut self, rt: &tokio::runtime::Runtime, table: Option<&str>) -> Result<String, ShellError> {
        let names: Vec<String> = match table {
            Some(t) => vec![t.to_string()],
            None => {
                let rs = self.table_names(rt)?;
                rs.rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect()
            }
        };
        let mut out = String::new();
        for name in names {
            let found = self.query(rt, &schema::lookup_sql(&name))?;
            let Some(oid) = found.rows.first().and_then(|r| r.first().cloned().flatten()) else {
                return Err(ShellError::Usage(format!("no table named {name:?}")));
            };
            let cell = |r: &[Option<String>], i: usize| r.get(i).cloned().flatten();
            let columns: Vec<ColumnDef> = self
                .query(rt, &schema::columns_sql(&oid))?
                .rows
                .iter()
                .map(|r| ColumnDef {
                    name: cell(r, 0).unwrap_or_default(),
                    ty: cell(r, 1).unwrap_or_default(),
                    default: cell(r, 2),
                    not_null: schema::is_true(cell(r, 3).as_deref()),
                })
                .collect();
            let indexes: Vec<IndexDef> = self
                .query(rt, &schema::indexes_sql(&oid))?
                .rows
                .iter()
                .map(|r| IndexDef {
                    primary: schema::is_true(cell(r, 1).as_deref()),
                    definition: cell(r, 5),
                    constraint: cell(r, 6),
                })
                .collect();
            out.push_str(&schema::create_table_text(&name, &columns, &indexes));
        }
        Ok(out)
    }

    fn nodes(&mut self, rt: &tokio::runtime::Runtime) -> Result<ResultSet, ShellError> {
        let members = rt.block_on(self.session.members())?;
        let http = self.session.http.clone();
        let statuses = rt.block_on(futures::future::join_all(members.iter().map(|(_, addr)| {
            let http = http.clone();
            async move { admin::status(&http, addr).await.ok() }
        })));
        Ok(admin::nodes_table(&members, &statuses, self.session.endpoint.node))
    }

    fn leader(&mut self, rt: &tokio::runtime::Runtime) -> Result<String, ShellError> {
        let addr = self.session.admin_addr()?;
        let st = rt.block_on(admin::status(&self.session.http, &addr))?;
        Ok(match (st.leader, st.leader_addr) {
            (Some(id), Some(a)) => format!("node {id} at {a} (term {})\n", st.term),
            (Some(id), None) => format!("node {id} (term {})\n", st.term),
            _ => format!("no leader known to node {} (term {})\n", st.id, st.term),
        })
    }

    fn transfer(&mut self, rt: &tokio::runtime::Runtime, to: u64) -> Result<String, ShellError> {
        let addr = self.session.admin_addr()?;
        let http = self.session.http.clone();
        rt.block_on(async {
            admin::transfer_leader(&http, &addr, to).await?;
            // The transfer is asynchronous: wait a little to report the outcome.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut last = None;
            while Instant::now() < deadline {
                if let Ok(st) = admin::status(&http, &addr).await {
                    if st.leader == Some(to) {
                        return Ok(format!("node {to} is the leader now (term {})\n", st.term));
                    }
                    last = st.leader;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(match last {
                Some(l) => format!("transfer to node {to} requested; node {l} still leads\n"),
                None => format!("transfer to node {to} requested; no leader known yet\n"),
            })
        })
    }

    fn dot(&mut self, rt: &tokio::runtime::Runtime, text: &str, source: Option<&Source>) -> Flow {
        let cmd = match command::parse(text, self.timer) {
            Ok(c) => c,
            Err(msg) => {
                self.report(source, &ShellError::Usage(msg));
                return Flow::Continue;
            }
        };
        let result: Result<Option<String>, ShellError> = match cmd {
            DotCommand::Help => Ok(Some(command::HELP.to_string())),
            DotCommand::Quit => return Flow::Quit,
            DotCommand::Mode(m) => {
                self.mode = m;
                Ok(None)
            }
            DotCommand::ShowMode => Ok(Some(format!("{}\n", self.mode.name()))),
            DotCommand::Timer(on) => {
                self.timer = on;
                Ok(self.interactive.then(|| format!("Timer is {}.\n", if on { "on" } else { "off" })))
            }
            DotCommand::Consistency(level) => rt
                .block_on(self.session.execute(&format!("SET consistency = {}", schema::quote_literal(&level))))
                .map(|_| None),
            DotCommand::ShowConsistency => return self.run_sql(rt, "SHOW consistency", source),
            DotCommand::Tables => self
                .table_names(rt)
                .map(|rs| Some(format::render(&rs, self.mode) + if self.mode == Mode::Table { "\n" } else { "" })),
            DotCommand::Schema(t) => self.schema(rt, t.as_deref()).map(Some),
            DotCommand::Nodes => self
                .nodes(rt)
                .map(|rs| Some(format::render(&rs, self.mode) + if self.mode == Mode::Table { "\n" } else { "" })),
            DotCommand::Leader => self.leader(rt).map(Some),
            DotCommand::Transfer(to) => self.transfer(rt, to).map(Some),
            DotCommand::Join(id, addr) => self.session.admin_addr().and_then(|a| {
                rt.block_on(admin::join(&self.session.http, &a, id, &addr))
                    .map(|()| Some(format!("node {id} joined\n")))
            }),
            DotCommand::Remove(id) => self.session.admin_addr().and_then(|a| {
                rt.block_on(admin::remove(&self.session.http, &a, id)).map(|()| Some(format!("node {id} removed\n")))
            }),
            DotCommand::Snapshot => self.session.admin_addr().and_then(|a| {
                let node = self.session.endpoint.node.map_or_else(|| a.clone(), |id| format!("node {id}"));
                rt.block_on(admin::snapshot(&self.session.http, &a)).map(|()| Some(format!("{node} took a snapshot\n")))
            }),
            DotCommand::Read(path) => {
                if self.read_depth >= MAX_READ_DEPTH {
                    Err(ShellError::Usage(format!(".read nested more than {MAX_READ_DEPTH} deep")))
                } else {
                    self.read_depth += 1;
                    let flow = self.run_file(rt, &path);
                    self.read_depth -= 1;
                    return flow;
                }
            }
        };
        match result {
            Ok(Some(text)) => out(&text),
            Ok(None) => {}
            Err(e) => self.report(source, &e),
        }
        Flow::Continue
    }

    /// Runs one piece; `Quit` also when a script must stop at an error.
    fn piece(&mut self, rt: &tokio::runtime::Runtime, piece: &Piece, name: &str, first_line: usize) -> Flow {
        let failed_before = self.failed;
        self.failed = false;
        let flow = match piece {
            Piece::Sql { text, line } => {
                let source = Source { name: name.to_string(), line: first_line + line - 1 };
                self.run_sql(rt, text, Some(&source))
            }
            Piece::Command { text, line } => {
                let source = Source { name: name.to_string(), line: first_line + line - 1 };
                self.dot(rt, text, Some(&source))
            }
        };
        let failed_now = self.failed;
        self.failed |= failed_before;
        if failed_now && self.stop_on_error && !self.interactive { Flow::Quit } else { flow }
    }

    /// Runs a whole text (`-c`, a `.read` file).
    fn run_text(&mut self, rt: &tokio::runtime::Runtime, text: &str, name: &str) -> Flow {
        let s = split::split(text);
        for p in s.pieces.iter().chain(s.rest_statement().as_ref()) {
            if self.piece(rt, p, name, 1) == Flow::Quit {
                return Flow::Quit;
            }
        }
        Flow::Continue
    }

    fn run_file(&mut self, rt: &tokio::runtime::Runtime, path: &std::path::Path) -> Flow {
        match std::fs::File::open(path) {
            Ok(f) => self.run_stream(rt, std::io::BufReader::new(f), &path.display().to_string()),
            Err(e) => {
                self.report(None, &ShellError::File { path: path.display().to_string(), source: e });
                if self.stop_on_error && !self.interactive { Flow::Quit } else { Flow::Continue }
            }
        }
    }

    /// Runs statements as their lines arrive (a pipe, a file): each one runs as soon as its
    /// `;` is read, so a script can wait on earlier results.
    fn run_stream(&mut self, rt: &tokio::runtime::Runtime, input: impl BufRead, name: &str) -> Flow {
        let mut pending = String::new();
        let mut pending_line = 1;
        for line in input.lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    self.report(None, &ShellError::File { path: name.to_string(), source: e });
                    return Flow::Quit;
                }
            };
            pending.push_str(&line);
            pending.push('\n');
            let s = split::split(&pending);
            for p in &s.pieces {
                if self.piece(rt, p, name, pending_line) == Flow::Quit {
                    return Flow::Quit;
                }
            }
            pending_line += s.rest_line - 1;
            pending = s.rest;
        }
        let s = split::split(&pending);
        match s.rest_statement() {
            Some(p) => self.piece(rt, &p, name, pending_line),
            None => Flow::Continue,
        }
    }

    fn interact(&mut self, rt: &tokio::runtime::Runtime) {
        let config = Config::builder().max_history_size(2000).map(|b| b.auto_add_history(false).build());
        let editor = config.and_then(Editor::<ShellHelper, FileHistory>::with_config);
        let mut editor = match editor {
            Ok(e) => e,
            Err(e) => {
                eprintln!("quorumdb shell: cannot use the terminal: {e}");
                self.failed = true;
                return;
            }
        };
        editor.set_helper(Some(ShellHelper { tables: self.tables.clone() }));
        let history = history_path();
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        out(&format!(
            "quorumdb shell {}: connected to {}\nType .help for help, .quit or Ctrl-D to leave.\n",
            env!("CARGO_PKG_VERSION"),
            self.session.endpoint
        ));
        self.refresh_tables(rt);
        let mut pending = String::new();
        let mut open = Open::Nothing;
        loop {
            match editor.readline(&prompt(self.session.endpoint.node, open)) {
                Ok(line) => {
                    pending.push_str(&line);
                    pending.push('\n');
                    let s = split::split(&pending);
                    open = s.open;
                    pending = if s.rest.trim().is_empty() { String::new() } else { s.rest.clone() };
                    for p in &s.pieces {
                        let entry = match p {
                            Piece::Sql { text, .. } => format!("{text};"),
                            Piece::Command { text, .. } => text.clone(),
                        };
                        let _ = editor.add_history_entry(entry);
                        if let Some(h) = &history {
                            let _ = editor.append_history(h);
                        }
                        if self.piece(rt, p, "", 1) == Flow::Quit {
                            return;
                        }
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    // Ctrl-C at the prompt drops the statement being typed, as in psql.
                    pending.clear();
                    open = Open::Nothing;
                }
                Err(ReadlineError::Eof) => {
                    out("\n");
                    return;
                }
                Err(e) => {
                    eprintln!("quorumdb shell: {e}");
                    self.failed = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts() {
        assert_eq!(prompt(Some(2), Open::Nothing), "quorumdb@2=> ");
        assert_eq!(prompt(Some(2), Open::Statement), "quorumdb@2-> ");
        assert_eq!(prompt(None, Open::Quote), "quorumdb'> ");
        assert_eq!(prompt(Some(1), Open::Dollar), "quorumdb@1$> ");
    }
}
