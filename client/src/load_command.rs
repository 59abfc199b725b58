//! The loader's command line, shared by the `load` example bin and `quorumdb load`: files
//! into a table (CSV, Parquet, JSON lines; [`crate::load`]), vectors into a table's `VECTOR`
//! column or a collection (`.fvecs`, `.npy`; [`crate::vectors`]). Prints rows/s and every
//! rejected row; the load fails (non-zero exit) if any row was rejected.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::load::{CsvOptions, Format, TableLoadOptions, TableLoadReport, load_table};
use crate::vectors::{LoadOptions, TableVectorOptions, load_vectors, load_vectors_into_table};

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The file: .csv/.tsv, .parquet, .jsonl/.ndjson into a table; .fvecs/.npy vectors into a
    /// table's VECTOR column (--table, --column) or a collection (--collection).
    pub file: PathBuf,
    /// Any node's address (followers forward writes to the leader).
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: String,
    /// The table to load into (created if missing).
    #[arg(long, conflicts_with = "collection")]
    pub table: Option<String>,
    /// The format, if the file's extension does not say.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Column definitions for a table to create, e.g. "id BIGINT PRIMARY KEY, name TEXT".
    #[arg(long)]
    pub schema: Option<String>,
    /// The primary key of a table created from the file's inferred columns.
    #[arg(long)]
    pub primary_key: Option<String>,
    /// CSV: the file has no header line (columns in the table's order).
    #[arg(long)]
    pub no_header: bool,
    /// CSV: the field delimiter (one character; `\t` for tab).
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// CSV: the quote character.
    #[arg(long, default_value = "\"")]
    pub quote: String,
    /// CSV: the text that means NULL (default: an empty field).
    #[arg(long)]
    pub null: Option<String>,
    /// Rows per request (each one atomic replicated command).
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Records read to infer the columns of a CSV or JSON-lines file.
    #[arg(long, default_value_t = 10_000)]
    pub infer_rows: usize,
    /// Write the rejected rows here (JSON lines: line, code, error, row).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Vectors into a table: the VECTOR(n) column.
    #[arg(long, default_value = "embedding")]
    pub column: String,
    /// Vectors into a table: the column ids go into.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Vectors: their ids, one integer per line or a 1-D integer .npy (default: count up).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Vectors: the id of the first vector when there is no ids file.
    #[arg(long, default_value_t = 0)]
    pub first_id: i64,
    /// Vectors into this collection (instead of a table).
    #[arg(long)]
    pub collection: Option<String>,
    /// Vectors into a collection: create it with this distance (Cosine, Euclid, Dot).
    #[arg(long)]
    pub create: Option<String>,
    /// Vectors into a collection: payloads, one JSON object per line, in the vectors' order.
    #[arg(long)]
    pub payloads: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn one_byte(what: &str, s: &str) -> anyhow::Result<u8> {
    match s {
        "\\t" | "tab" => Ok(b'\t'),
        s if s.len() == 1 => Ok(s.as_bytes()[0]),
        _ => bail!("--{what} must be one ASCII character, not {s:?}"),
    }
}

fn is_vectors(a: &LoadArgs) -> bool {
    a.file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("fvecs") || e.eq_ignore_ascii_case("npy"))
}

fn print_report(what: &str, r: &TableLoadReport) {
    println!(
        "loaded {} {what} in {:.1} s ({:.0} {what}/s, {} requests){}; rejected {}",
        r.loaded,
        r.seconds,
        r.per_second(),
        r.requests,
        if r.created { ", table created" } else { "" },
        r.rejected.len()
    );
    for x in &r.rejected {
        println!("  line {}: {} {}", x.line, x.code, x.message);
    }
}

/// Runs a load; `Ok(false)` when some rows were rejected.
pub async fn run(a: LoadArgs) -> anyhow::Result<bool> {
    let progress = !a.quiet;
    if is_vectors(&a) {
        if let Some(collection) = &a.collection {
            let first_id = u64::try_from(a.first_id).map_err(|_| anyhow::anyhow!("--first-id must be ≥ 0"))?;
            let opts = LoadOptions {
                target: &a.node,
                collection,
                create: a.create.as_deref(),
                batch: a.batch.min(2_000),
                first_id,
                limit: None,
                payloads: a.payloads.as_deref(),
                ids: a.ids.as_deref(),
                progress,
            };
            let r = load_vectors(&a.file, &opts).await?;
            r.print();
            return Ok(r.rejected == 0);
        }
        let Some(table) = &a.table else { bail!("vectors go into a --table (with --column) or a --collection") };
        if a.payloads.is_some() {
            bail!("--payloads are for collections; load a table's other columns from a CSV/JSON-lines file");
        }
        let opts = TableVectorOptions {
            target: a.node.clone(),
            table: table.clone(),
            column: a.column.clone(),
            id_column: a.id_column.clone(),
            ids: a.ids.clone(),
            first_id: a.first_id,
            batch_rows: a.batch,
            in_flight: a.parallel,
            rejects: a.rejects.clone(),
            progress,
        };
        let r = load_vectors_into_table(&a.file, &opts).await?;
        print_report("vectors", &r);
        return Ok(r.rejected.is_empty());
    }
    let Some(table) = &a.table else { bail!("give the --table to load {} into", a.file.display()) };
    let mut o = TableLoadOptions::new(&a.node, table);
    o.format = a.format;
    o.csv = CsvOptions {
        header: !a.no_header,
        delimiter: one_byte("delimiter", &a.delimiter)?,
        quote: one_byte("quote", &a.quote)?,
        null: a.null.clone(),
    };
    o.schema = a.schema.clone();
    o.primary_key = a.primary_key.clone();
    o.batch_rows = a.batch;
    o.in_flight = a.parallel;
    o.infer_rows = a.infer_rows;
    o.rejects = a.rejects.clone();
    o.progress = progress;
    let r = load_table(&a.file, &o).await?;
    print_report("rows", &r);
    Ok(r.rejected.is_empty())
}
