//! `quorumdb backup` and `quorumdb restore`: the client side of backups in Arrow.
//!
//! - `backup --to DIR` asks a node (`POST /v1/backup`) to write every table, at one applied
//!   index, as Arrow IPC files plus `manifest.json` into `DIR` — on the node's file system,
//!   below the node's `--backup-dir` ([`quorumdb_sql::backup`] describes the layout).
//! - `restore --from DIR` replays a backup into a cluster that has none of its tables: it
//!   checks every file's size and CRC-32 and that no table exists before writing anything,
//!   creates all tables in one atomic request (primary keys and UNIQUE constraints, no other
//!   index), loads each table's rows through `POST /v1/tables/{t}/rows` in Arrow IPC batches
//!   (the loader's path: [`crate::load::send_chunks`], each batch one atomic replicated
//!   command), then creates the remaining indexes — B-tree entries and HNSW graphs are built
//!   from the loaded rows — and checks every table's row count.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::ipc::reader::FileReader;
use indicatif::ProgressBar;
use quorumdb_sql::backup::{Manifest, TableEntry, file_crc32};
use serde_json::{Value, json};

use crate::load::{Api, Chunk, quote_ident, send_chunks};

/// The largest request body restore aims for (the server takes up to 16 MiB).
const REQUEST_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The directory to write the backup to, on the NODE's file system: a path relative to the
    /// node's backup directory (its `--backup-dir`), or an absolute path inside it. It must not
    /// exist or be empty.
    #[arg(long)]
    pub to: PathBuf,
    /// The node that writes the backup (any member; it reads at a linearizable point).
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: String,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup directory (with manifest.json), on this machine.
    #[arg(long)]
    pub from: PathBuf,
    /// Any node of the cluster to restore into (followers forward writes to the leader).
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: String,
    /// Rows per request, at most (requests are also kept under about 8 MiB).
    #[arg(long, default_value_t = 10_000)]
    pub batch_rows: usize,
    /// Requests in flight at once (one for tables without a primary key, to keep their order).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Asks `node` to write a backup into `to` (a path on the node, relative to its backup
/// directory or absolute inside it); returns its answer, whose `dir` is the absolute directory.
pub async fn backup(node: &str, to: &Path) -> anyhow::Result<Value> {
    let api = Api::new(node);
    api.post("/v1/backup", &json!({ "to": to })).await?.map_err(|e| anyhow!("backup into {}: {e}", to.display()))
}

/// `quorumdb backup`: runs [`backup`] and prints what it wrote.
pub async fn run_backup(a: BackupArgs) -> anyhow::Result<()> {
    let v = backup(&a.node, &a.to).await?;
    let seconds = v["seconds"].as_f64().unwrap_or(0.0);
    let rows = v["rows"].as_u64().unwrap_or(0);
    let tables = v["tables"].as_array().cloned().unwrap_or_default();
    println!(
        "backup of {} tables, {rows} rows ({:.1} MiB) at index {} written by node {} to {} in {seconds:.1} s ({:.0} rows/s)",
        tables.len(),
        v["bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64,
        v["applied_index"],
        v["node_id"],
        v["dir"].as_str().unwrap_or(""),
        rows as f64 / seconds.max(1e-9)
    );
    for t in &tables {
        println!(
            "  {:<24} {:>12} rows {:>12} bytes  {}",
            t["name"].as_str().unwrap_or(""),
            t["rows"],
            t["bytes"],
            t["file"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// What a restore should do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Any node's `host:port`.
    pub target: String,
    pub batch_rows: usize,
    pub in_flight: usize,
    pub progress: bool,
}

impl RestoreOptions {
    pub fn new(target: &str) -> Self {
        Self { target: target.to_string(), batch_rows: 10_000, in_flight: 4, progress: false }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// The applied index the backup was taken at.
    pub backup_index: u64,
    /// Per table: name, rows, seconds to load them.
    pub tables: Vec<(String, u64, f64)>,
    pub indexes: usize,
    pub rows: u64,
    pub seconds: f64,
}

impl RestoreReport {
    pub fn per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    pub fn print(&self) {
        for (name, rows, secs) in &self.tables {
            println!("  {name:<24} {rows:>12} rows in {secs:>6.1} s ({:.0} rows/s)", *rows as f64 / secs.max(1e-9));
        }
        println!(
            "restored {} tables, {} rows and {} {} in {:.1} s ({:.0} rows/s) from the backup at index {}",
            self.tables.len(),
            self.rows,
            self.indexes,
            if self.indexes == 1 { "index" } else { "indexes" },
            self.seconds,
            self.per_second(),
            self.backup_index
        );
    }
}

/// Checks that every file of the backup is there, unchanged (size and CRC-32 as in the
/// manifest) and an Arrow IPC file with the manifest's columns. Reads every byte once.
pub fn verify(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for t in &m.tables {
        let path = table_path(dir, t)?;
        match file_crc32(&path) {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok((bytes, _)) if bytes != t.bytes => problems.push(format!(
                "{}: {bytes} bytes, the manifest says {} (truncated or changed)",
                path.display(),
                t.bytes
            )),
            Ok((_, crc)) if crc != t.crc32 => problems.push(format!(
                "{}: CRC-32 {crc:08x}, the manifest says {:08x} (the file is corrupt)",
                path.display(),
                t.crc32
            )),
            Ok(_) => {
                let names = FileReader::try_new(File::open(&path)?, None)
                    .map(|r| r.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>());
                let expected: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
                match names {
                    Err(e) => problems.push(format!("{}: not an Arrow IPC file: {e}", path.display())),
                    Ok(n) if n != expected => {
                        problems.push(format!("{}: columns {n:?}, the manifest says {expected:?}", path.display()))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("the backup in {} is damaged; nothing was restored:\n  {}", dir.display(), problems.join("\n  "));
    }
    Ok(())
}

/// The path of a table's file; the manifest may name only files inside the directory.
fn table_path(dir: &Path, t: &TableEntry) -> anyhow::Result<PathBuf> {
    let plain = Path::new(&t.file).file_name().is_some_and(|f| f == t.file.as_str()) && !t.file.starts_with('.');
    if !plain {
        bail!("the manifest names table {:?}'s file {:?}, which is not a file name", t.name, t.file);
    }
    Ok(dir.join(&t.file))
}

/// Restores the backup in `dir` into the cluster `o.target` belongs to (see the module doc).
/// Nothing is written unless every file checks out and none of the tables exists; a failure
/// while loading rows leaves the tables created so far (the error says so).
pub async fn restore(dir: &Path, o: &RestoreOptions) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    let m = Manifest::read(dir)?;
    {
        let (dir, m) = (dir.to_path_buf(), m.clone());
        tokio::task::spawn_blocking(move || verify(&dir, &m)).await??;
    }
    let api = Api::new(&o.target);
    let mut existing = Vec::new();
    for t in &m.tables {
        if api.columns(&t.name).await?.is_some() {
            existing.push(t.name.clone());
        }
    }
    if !existing.is_empty() {
        bail!(
            "the cluster already has table(s) {existing:?} of the backup; restore into a cluster without them \
             (or drop them first). Nothing was written"
        );
    }
    let mut report = RestoreReport { backup_index: m.applied_index, ..Default::default() };
    if !m.tables.is_empty() {
        // One request: every table is created, or none.
        let ddl: Vec<&str> = m.tables.iter().map(|t| t.create_table.as_str()).collect();
        api.sql(&ddl.join(";\n")).await?.map_err(|e| anyhow!("creating the tables: {e}. Nothing was written"))?;
    }
    for t in &m.tables {
        let t0 = Instant::now();
        let loaded = load_table(&api, dir, t, o)
            .await
            .with_context(|| format!("restoring table {:?}: the restore is incomplete", t.name))?;
        report.tables.push((t.name.clone(), loaded, t0.elapsed().as_secs_f64()));
        report.rows += loaded;
    }
    let indexes: Vec<&str> = m.tables.iter().flat_map(|t| t.indexes.iter().map(String::as_str)).collect();
    if !indexes.is_empty() {
        api.sql(&indexes.join(";\n"))
            .await?
            .map_err(|e| anyhow!("creating the indexes: {e}. The tables are restored without them"))?;
    }
    report.indexes = indexes.len();
    for t in &m.tables {
        let q = format!("SELECT count(*) FROM {}", quote_ident(&t.name));
        let v = api.sql(&q).await?.map_err(|e| anyhow!("{q}: {e}"))?;
        let n = v["results"][0]["rows"][0][0].as_u64();
        if n != Some(t.rows) {
            bail!("table {:?} has {n:?} rows after the restore, the backup {}", t.name, t.rows);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Sends one table's file through the bulk-load path; returns the rows loaded.
async fn load_table(api: &Api, dir: &Path, t: &TableEntry, o: &RestoreOptions) -> anyhow::Result<u64> {
    let path = table_path(dir, t)?;
    let reader = FileReader::try_new(File::open(&path)?, None)?;
    // Rows per request: at most --batch-rows, and about REQUEST_BYTES by the file's average row.
    let row_bytes = (t.bytes / t.rows.max(1)).max(1);
    let per_request = (o.batch_rows as u64).min(REQUEST_BYTES / row_bytes).max(1) as usize;
    // Rows without a key get their hidden row ids in arrival order: send them in file order.
    let in_flight = if t.primary_key.is_empty() { 1 } else { o.in_flight };
    let bar = if o.progress { ProgressBar::new(t.rows) } else { ProgressBar::hidden() };
    bar.set_style(crate::progress::bar_style(crate::progress::TABLE_ROWS));
    bar.set_prefix(t.name.clone());
    let report = send_chunks(api, &t.name, in_flight, bar, move |send, bar| {
        let schema = reader.schema();
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut pending_rows = 0usize;
        let mut next_row = 1u64;
        let mut emit = |pending: &mut Vec<RecordBatch>, rows: usize| -> anyhow::Result<bool> {
            let batch = concat_batches(&schema, pending.iter())?;
            pending.clear();
            let first = next_row;
            next_row += rows as u64;
            bar.inc(rows as u64);
            Ok(send(Chunk { batch, lines: (first..next_row).collect() }))
        };
        for b in reader {
            let mut b = b?;
            while b.num_rows() > 0 {
                let take = (per_request - pending_rows).min(b.num_rows());
                pending.push(b.slice(0, take));
                pending_rows += take;
                b = b.slice(take, b.num_rows() - take);
                if pending_rows == per_request {
                    if !emit(&mut pending, pending_rows)? {
                        return Ok(Vec::new());
                    }
                    pending_rows = 0;
                }
            }
        }
        if pending_rows > 0 {
            emit(&mut pending, pending_rows)?;
        }
        Ok(Vec::new())
    })
    .await?;
    if let Some(r) = report.rejected.first() {
        bail!(
            "{} rows were refused, the first (row {} of the file): {} {}",
            report.rejected.len(),
            r.line,
            r.code,
            r.message
        );
    }
    if report.loaded != t.rows {
        bail!("{} rows loaded, the backup has {}", report.loaded, t.rows);
    }
    Ok(report.loaded)
}

/// `quorumdb restore`: runs [`restore`] and prints the summary.
pub async fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let mut o = RestoreOptions::new(&a.node);
    o.batch_rows = a.batch_rows.max(1);
    o.in_flight = a.parallel.max(1);
    o.progress = !a.quiet;
    let report = restore(&a.from, &o).await?;
    report.print();
    Ok(())
}
