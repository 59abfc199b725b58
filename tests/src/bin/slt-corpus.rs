//! `slt-corpus`: runs sqllogictest files of SQLite's classic format through pgwire and prints
//! pass / fail / error counts per file (see `quorumdb_tests::corpus`).
//!
//! ```text
//! slt-corpus --url "host=127.0.0.1 port=5433 user=admin" --url "host=127.0.0.1 port=5434 ..." \
//!     /path/to/sqllogictest/test/select1.test /path/to/sqllogictest/test/evidence
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quorumdb_tests::corpus::{Outcome, Target, test_files};

#[derive(Parser)]
#[command(about = "Run SQLite's classic sqllogictest files through the PostgreSQL wire protocol")]
struct Args {
    /// A libpq-style connection string; give several to spread records round-robin over nodes.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// The engine name `skipif`/`onlyif` records are matched against.
    #[arg(long, default_value = "postgresql")]
    label: String,
    /// Print every record that did not pass (line, SQL, what went wrong).
    #[arg(long)]
    misses: bool,
    /// Write one line per file (`path passed failed errored skipped`) to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Files or directories (every `*.test` below them).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut target = Target::new(args.url.clone(), &args.label);
    let files: Vec<PathBuf> = args.paths.iter().flat_map(|p| test_files(p)).collect();
    let mut summary = String::new();
    let (mut passed, mut run) = (0, 0);
    println!("{:<60} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}", "file", "run", "pass", "fail", "error", "skip", "pass %");
    for file in &files {
        let report = match target.run_file(file).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                continue;
            }
        };
        println!(
            "{:<60} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7.1}%",
            file.display(),
            report.run(),
            report.passed,
            report.failed,
            report.errored,
            report.skipped,
            report.pass_rate()
        );
        if args.misses {
            for m in &report.misses {
                let kind = if m.outcome == Outcome::Fail { "FAIL" } else { "ERROR" };
                let sql = m.sql.split_whitespace().collect::<Vec<_>>().join(" ");
                println!("  {kind} line {}: {sql}\n    {}", m.line, m.detail);
            }
        }
        summary.push_str(&format!(
            "{} {} {} {} {}\n",
            file.display(),
            report.passed,
            report.failed,
            report.errored,
            report.skipped
        ));
        passed += report.passed;
        run += report.run();
    }
    let rate = if run == 0 { 100.0 } else { 100.0 * passed as f64 / run as f64 };
    println!("total: {passed} of {run} records passed ({rate:.2}%)");
    if let Some(path) = args.summary
        && let Err(e) = std::fs::write(&path, summary)
    {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
