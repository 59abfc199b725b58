//! Loads a file into a running cluster: CSV, Parquet or JSON lines into a table; `.fvecs` or
//! `.npy` vectors into a table's VECTOR column or a collection. The same as `quorumdb load`: both
//! run [`quorumdb_client::load_command`].
//!
//! `cargo run -p quorumdb-examples --bin load -- --node 127.0.0.1:7001 --table trips trips.csv`

use clap::Parser;
use quorumdb_client::load_command::{LoadArgs, run};

#[derive(Parser)]
#[command(name = "load", about = "Load CSV, Parquet, JSON-lines or vector files into QuorumDB")]
struct Cli {
    #[command(flatten)]
    args: LoadArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse().args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
