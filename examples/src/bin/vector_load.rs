//! Loads an `.fvecs` or `.npy` file into a vector collection of a running cluster (for a
//! table's `VECTOR` column, use the `load` bin or `quorumdb load --table T --column C`).
//!
//! `cargo run -p quorumdb-examples --bin vector_load -- --target 127.0.0.1:7001 --collection sift --create Euclid --fvecs sift_base.fvecs`
//! Prints vectors/s at the end and every rejected batch with the server's reason.

use std::path::PathBuf;

use clap::Parser;
use quorumdb_client::vectors::{LoadOptions, load_vectors};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7001")]
    target: String,
    #[arg(long)]
    collection: String,
    /// The vectors: `.fvecs`, or `.npy` (2-D little-endian float32).
    #[arg(long, alias = "fvecs")]
    vectors: PathBuf,
    /// Point ids, one integer per line or a 1-D integer `.npy` (default: count up from --first-id).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Create the collection with this distance (Cosine, Euclid, Dot) if it does not exist.
    #[arg(long)]
    create: Option<String>,
    /// Payloads, one JSON object per line, in the order of the vectors.
    #[arg(long)]
    payloads: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    first_id: u64,
    #[arg(long)]
    limit: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let opts = LoadOptions {
        target: &a.target,
        collection: &a.collection,
        create: a.create.as_deref(),
        batch: a.batch,
        first_id: a.first_id,
        limit: a.limit,
        payloads: a.payloads.as_deref(),
        ids: a.ids.as_deref(),
        progress: true,
    };
    let r = load_vectors(&a.vectors, &opts).await?;
    r.print();
    if r.rejected > 0 {
        std::process::exit(1);
    }
    Ok(())
}
