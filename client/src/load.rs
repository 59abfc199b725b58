//! Loads CSV, Parquet and JSON-lines files into a table of a running cluster, through
//! `POST /v1/tables/{table}/rows` (Arrow IPC bodies, each one atomic replicated command).
//!
//! - The table is created when missing, from `--schema` or from the file's schema as Arrow's
//!   readers infer it ([`sql_type`] maps Arrow types to SQL); otherwise the file's columns are
//!   matched to the table's by name (exactly, else ignoring case) and the rest take defaults.
//! - CSV and JSON-lines values travel as text and the server converts them to the column
//!   types, exactly as `INSERT` would, so a bad value rejects its row — not the file.
//! - Several requests are in flight at once. A refused request is narrowed down to the rows
//!   to blame — directly when the server names the row, by bisection otherwise — and the
//!   other rows are sent again, so every good row loads while each request stays atomic.
//!   Rejected rows are reported with their line in the file (CSV and JSON lines: where the
//!   record starts) or their row number (Parquet), and can be written to a rejects file.
//!
//! This module never decides what a value means: conversion and checks are the server's.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use indicatif::ProgressBar;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A file format the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
    Jsonl,
}

impl Format {
    /// The format a file name implies (`.csv`, `.tsv`, `.parquet`/`.pq`, `.jsonl`/`.ndjson`/`.json`).
    pub fn of_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// How a CSV file is written.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The first record names the columns.
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    /// The text that means NULL. Without one, an empty field is NULL.
    pub null: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { header: true, delimiter: b',', quote: b'"', null: None }
    }
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct TableLoadOptions {
    /// A node's `host:port` (any node: followers forward writes to the leader).
    pub target: String,
    /// The table's name, exactly as in the catalog.
    pub table: String,
    /// The format; by default from the file's extension.
    pub format: Option<Format>,
    pub csv: CsvOptions,
    /// Column definitions for a table to create, as in `CREATE TABLE t (...)`.
    pub schema: Option<String>,
    /// The primary key of a table created from the inferred schema.
    pub primary_key: Option<String>,
    /// Rows per request.
    pub batch_rows: usize,
    /// Requests in flight at once.
    pub in_flight: usize,
    /// Records read to infer a CSV or JSON-lines schema.
    pub infer_rows: usize,
    /// Where to write the rejected rows (JSON lines: line, code, error, row).
    pub rejects: Option<PathBuf>,
    pub progress: bool,
}

impl TableLoadOptions {
    pub fn new(target: &str, table: &str) -> Self {
        Self {
            target: target.to_string(),
            table: table.to_string(),
            format: None,
            csv: CsvOptions::default(),
            schema: None,
            primary_key: None,
            batch_rows: 10_000,
            in_flight: 4,
            infer_rows: 10_000,
            rejects: None,
            progress: false,
        }
    }
}

/// A row the server (or the file reader) refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The line the record starts on (CSV, JSON lines) or the row number (Parquet, vectors),
    /// from 1.
    pub line: u64,
    /// The SQLSTATE (or `parse` for a record the file reader could not read).
    pub code: String,
    pub message: String,
    /// The row as JSON (what could be read of it).
    pub row: Value,
}

/// What a load did.
#[derive(Debug, Default, Clone)]
pub struct TableLoadReport {
    pub loaded: u64,
    /// Sorted by line.
    pub rejected: Vec<Rejected>,
    pub created: bool,
    pub seconds: f64,
    pub requests: u64,
}

impl TableLoadReport {
    pub fn per_second(&self) -> f64 {
        self.loaded as f64 / self.seconds.max(1e-9)
    }
}

/// Rows to send: a batch (columns named as the table's) and each row's line in the file.
pub struct Chunk {
    pub batch: RecordBatch,
    pub lines: Vec<u64>,
}

/// The SQL type a column of Arrow type `dt` gets in a table the loader creates.
pub fn sql_type(dt: &DataType) -> anyhow::Result<String> {
    Ok(match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "NUMERIC(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) if *p <= 38 => {
            format!("NUMERIC({p},{s})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "TEXT".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "BYTEA".into()
        }
        DataType::FixedSizeList(f, n) if f.data_type().is_floating() => format!("VECTOR({n})"),
        other => bail!("no SQL type for {other}: give the table's columns with --schema"),
    })
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A client of one node's HTTP API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub row: Option<usize>,
    pub retryable: bool,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Data exceptions and constraint violations: one or more rows are to blame.
    fn blames_rows(&self) -> bool {
        self.code.starts_with("22") || self.code.starts_with("23")
    }
}

impl Api {
    pub fn new(target: &str) -> Self {
        Self {
            http: crate::http_builder().build().unwrap_or_default(),
            base: format!("{}://{target}", crate::scheme()),
        }
    }

    async fn answer(resp: reqwest::Response) -> anyhow::Result<Result<Value, ApiError>> {
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": {"message": text}}));
        if (200..300).contains(&status) {
            return Ok(Ok(body));
        }
        let e = &body["error"];
        Ok(Err(ApiError {
            status,
            code: e["code"].as_str().unwrap_or("http").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
            row: e["row"].as_u64().map(|r| r as usize),
            retryable: e["retryable"].as_bool().unwrap_or(status == 503),
        }))
    }

    /// Posts a JSON body to `path` (e.g. `/v1/backup`); `Err` inside for an error answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Result<Value, ApiError>> {
        let resp = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
        Self::answer(resp).await
    }

    /// Runs SQL; `Err` inside for an error answer.
    pub async fn sql(&self, sql: &str) -> anyhow::Result<Result<Value, ApiError>> {
        let resp = self.http.post(format!("{}/v1/sql", self.base)).json(&json!({ "sql": sql })).send().await?;
        Self::answer(resp).await
    }

    /// The visible columns of `table` (name, SQL type), `None` if it does not exist.
    pub async fn columns(&self, table: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
        match self.sql(&format!("SELECT * FROM {} LIMIT 0", quote_ident(table))).await? {
            Ok(v) => {
                let cols = v["results"][0]["columns"].as_array().cloned().unwrap_or_default();
                Ok(Some(
                    cols.iter()
                        .map(|c| {
                            (c["name"].as_str().unwrap_or("").to_string(), c["type"].as_str().unwrap_or("").to_string())
                        })
                        .collect(),
                ))
            }
            Err(e) if e.code == "42P01" => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Posts rows; `Ok(Err)` for an answer refusing them. Re-sent with the same `key`
    /// (`Idempotency-Key`), the rows are inserted at most once.
    pub async fn insert(
        &self,
        table: &str,
        batch: &RecordBatch,
        key: Option<&str>,
    ) -> anyhow::Result<Result<u64, ApiError>> {
        let mut body = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut body, &batch.schema())?;
            w.write(batch)?;
            w.finish()?;
        }
        let url = format!("{}/v1/tables/{}/rows", self.base, percent_encode(table));
        let mut req = self.http.post(url).header("content-type", "application/vnd.apache.arrow.stream").body(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await?;
        Ok(Self::answer(resp).await?.map(|v| v["rows_affected"].as_u64().unwrap_or(0)))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The rows of `batch` as JSON objects (for rejects).
fn rows_json(batch: &RecordBatch) -> Vec<Value> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
        if w.write(batch).and_then(|_| w.finish()).is_err() {
            return vec![Value::Null; batch.num_rows()];
        }
    }
    let rows: Vec<Value> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect();
    if rows.len() == batch.num_rows() { rows } else { vec![Value::Null; batch.num_rows()] }
}

/// A request id unique to this process and call: pid, start time, counter.
fn request_key() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("load-{}-{start}-{n}", std::process::id())
}

/// Shared by the tasks sending chunks: totals and rejected rows.
#[derive(Default)]
struct Tally {
    loaded: u64,
    requests: u64,
    rejected: Vec<Rejected>,
}

/// Sends one chunk: the whole of it if the server takes it, otherwise every row but the ones
/// to blame (see the module doc). Errors that no row causes end the load.
async fn send_chunk(
    api: &Api,
    table: &str,
    chunk: Chunk,
    tally: &Mutex<Tally>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let n = chunk.batch.num_rows();
    let mut pending: Vec<Vec<u32>> = vec![(0..n as u32).collect()];
    while let Some(mut rows) = pending.pop() {
        if rows.is_empty() {
            continue;
        }
        let batch = if rows.len() == n {
            chunk.batch.clone()
        } else {
            take_record_batch(&chunk.batch, &UInt32Array::from(rows.clone()))?
        };
        let mut delay = Duration::from_millis(50);
        // One key for every attempt at these rows: a retry after a lost answer inserts nothing
        // twice.
        let key = request_key();
        let outcome = loop {
            tally.lock().requests += 1;
            match api.insert(table, &batch, Some(&key)).await {
                Ok(Err(e)) if e.retryable && delay < Duration::from_secs(20) => {}
                Err(e) if delay < Duration::from_secs(20) => eprintln!("warning: request failed ({e}); retrying"),
                other => break other?,
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        };
        match outcome {
            Ok(k) => {
                tally.lock().loaded += k;
                bar.set_message(format!("{} rows loaded", tally.lock().loaded));
            }
            Err(e) if e.blames_rows() => match e.row.filter(|r| *r < rows.len()) {
                Some(r) => {
                    let bad = rows.remove(r);
                    reject(&chunk, bad, &e, tally);
                    pending.push(rows);
                }
                None if rows.len() == 1 => reject(&chunk, rows[0], &e, tally),
                None => {
                    let second = rows.split_off(rows.len() / 2);
                    pending.push(second);
                    pending.push(rows);
                }
            },
            Err(e) => bail!("loading into {table}: {e}"),
        }
    }
    Ok(())
}

fn reject(chunk: &Chunk, row: u32, e: &ApiError, tally: &Mutex<Tally>) {
    let one = chunk.batch.slice(row as usize, 1);
    let value = rows_json(&one).pop().unwrap_or(Value::Null);
    // The server's message names the row within the request; the line says it better.
    let message = match (e.row, e.message.split_once(": ")) {
        (Some(_), Some((head, rest))) if head.starts_with("row ") => rest.to_string(),
        _ => e.message.clone(),
    };
    tally.lock().rejected.push(Rejected { line: chunk.lines[row as usize], code: e.code.clone(), message, row: value });
}

/// Sends the chunks `produce` makes (on a blocking thread) with `in_flight` requests at once.
pub async fn send_chunks<F>(
    api: &Api,
    table: &str,
    in_flight: usize,
    bar: ProgressBar,
    produce: F,
) -> anyhow::Result<TableLoadReport>
where
    F: FnOnce(&mut dyn FnMut(Chunk) -> bool, &ProgressBar) -> anyhow::Result<Vec<Rejected>> + Send + 'static,
{
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Chunk>(in_flight.max(1) * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (api, table, rx, tally, bar) = (api.clone(), table.to_string(), rx.clone(), tally.clone(), bar.clone());
        workers.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(chunk) = next else { return Ok::<_, anyhow::Error>(()) };
                send_chunk(&api, &table, chunk, &tally, &bar).await?;
            }
        });
    }
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut send = |c: Chunk| tx.blocking_send(c).is_ok();
        produce(&mut send, &reader_bar)
    });
    let mut failure = None;
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            failure.get_or_insert(e);
            // The reader stops when nobody takes its chunks.
            workers.abort_all();
        }
    }
    let read_rejects = reader.await??;
    if let Some(e) = failure {
        return Err(e);
    }
    bar.finish_and_clear();
    let mut t = std::mem::take(&mut *tally.lock());
    t.rejected.extend(read_rejects);
    t.rejected.sort_by_key(|r| r.line);
    Ok(TableLoadReport {
        loaded: t.loaded,
        rejected: t.rejected,
        created: false,
        seconds: started.elapsed().as_secs_f64(),
        requests: t.requests,
    })
}

/// How the file's columns map to the table's: (file column position, table column name).
fn match_columns(file: &[String], table: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(file.len());
    let mut unknown = Vec::new();
    for f in file {
        let found = table
            .iter()
            .find(|(t, _)| t == f)
            .or_else(|| table.iter().find(|(t, _)| t.eq_ignore_ascii_case(f)))
            .map(|(t, _)| t.clone());
        match found {
            Some(t) if out.contains(&t) => bail!("two columns of the file map to column {t:?} of the table"),
            Some(t) => out.push(t),
            None => unknown.push(f.clone()),
        }
    }
    if !unknown.is_empty() {
        let have: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
        bail!("the table has no column {unknown:?} (its columns: {have:?})");
    }
    Ok(out)
}

fn progress_bar(show: bool, len: u64, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = if unit == "bytes" { crate::progress::LOAD_BYTES } else { crate::progress::LOAD_ROWS };
    bar.set_style(crate::progress::bar_style(template));
    bar
}

/// Loads `path` into the table; see [`TableLoadOptions`].
pub async fn load_table(path: &Path, o: &TableLoadOptions) -> anyhow::Result<TableLoadReport> {
    let format = match o.format.or_else(|| Format::of_path(path)) {
        Some(f) => f,
        None => bail!("cannot tell the format of {} from its name: give --format csv|parquet|jsonl", path.display()),
    };
    let mut csv = o.csv.clone();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) && csv.delimiter == b',' {
        csv.delimiter = b'\t';
    }
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    let api = Api::new(&o.target);
    let existing = api.columns(&o.table).await?;
    // The file's columns and, for a table to create, their inferred types (a CSV file's
    // types are inferred only then: its values travel as text).
    let file_schema: Option<SchemaRef> = match format {
        Format::Csv if existing.is_some() => csv_header(path, &csv)?,
        Format::Csv => csv_schema(path, &csv, o.infer_rows)?,
        Format::Parquet => Some(ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.schema().clone()),
        Format::Jsonl => Some(jsonl_schema(path, o.infer_rows)?),
    };
    let mut created = false;
    let columns = match existing {
        Some(cols) => {
            if o.schema.is_some() {
                bail!("table {} exists: --schema only describes a table to create", o.table);
            }
            cols
        }
        None => {
            let defs = match (&o.schema, &file_schema) {
                (Some(s), _) => s.clone(),
                (None, Some(schema)) => create_columns(schema, o.primary_key.as_deref())?,
                (None, None) => bail!("cannot infer the columns of a CSV file without a header: give --schema"),
            };
            let ddl = format!("CREATE TABLE {} ({defs})", quote_ident(&o.table));
            api.sql(&ddl).await?.map_err(|e| anyhow!("{ddl}: {e}"))?;
            created = true;
            api.columns(&o.table).await?.context("the table vanished after CREATE TABLE")?
        }
    };
    let file_columns: Vec<String> = match &file_schema {
        Some(s) => s.fields().iter().map(|f| f.name().clone()).collect(),
        None => columns.iter().map(|(n, _)| n.clone()).collect(),
    };
    let targets = match_columns(&file_columns, &columns)?;
    let (batch_rows, table) = (o.batch_rows.max(1), o.table.clone());
    let path = path.to_path_buf();
    let mut report = match format {
        Format::Csv => {
            let bar = progress_bar(o.progress, size, "bytes");
            send_chunks(&api, &table, o.in_flight, bar, move |send, bar| {
                read_csv(&path, &csv, &targets, batch_rows, send, bar)
            })
            .await?
        }
        Format::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?;
            let total = reader.metadata().file_metadata().num_rows().max(0) as u64;
            let reader = reader.with_batch_size(batch_rows).build()?;
            let bar = progress_bar(o.progress, total, "rows");
            send_chunks(&api, &table, o.in_flight, bar, move |send, bar| {
                let mut next_line = 1u64;
                for b in reader {
                    let b = b?;
                    let schema = renamed(&b.schema(), &targets);
                    let n = b.num_rows() as u64;
                    let batch = RecordBatch::try_new(schema, b.columns().to_vec())?;
                    if !send(Chunk { batch, lines: (next_line..next_line + n).collect() }) {
                        break;
                    }
                    next_line += n;
                    bar.inc(n);
                }
                Ok(Vec::new())
            })
            .await?
        }
        Format::Jsonl => {
            let Some(schema) = file_schema.clone() else {
                bail!("{}: no schema could be read from the JSON lines", path.display())
            };
            let bar = progress_bar(o.progress, size, "bytes");
            send_chunks(&api, &table, o.in_flight, bar, move |send, bar| {
                read_jsonl(&path, &schema, &targets, batch_rows, send, bar)
            })
            .await?
        }
    };
    report.created = created;
    if let Some(file) = &o.rejects {
        write_rejects(file, &report.rejected)?;
    }
    Ok(report)
}

/// Writes rejected rows as JSON lines.
pub fn write_rejects(file: &Path, rejected: &[Rejected]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(File::create(file).with_context(|| format!("creating {}", file.display()))?);
    for r in rejected {
        writeln!(w, "{}", json!({"line": r.line, "code": r.code, "error": r.message, "row": r.row}))?;
    }
    w.flush()?;
    Ok(())
}

/// `CREATE TABLE` column definitions for an Arrow schema.
pub fn create_columns(schema: &Schema, primary_key: Option<&str>) -> anyhow::Result<String> {
    let mut defs = Vec::new();
    for f in schema.fields() {
        let ty = sql_type(f.data_type()).with_context(|| format!("column {:?}", f.name()))?;
        let pk = primary_key.is_some_and(|k| k == f.name());
        defs.push(format!("{} {ty}{}", quote_ident(f.name()), if pk { " PRIMARY KEY" } else { "" }));
    }
    if let Some(k) = primary_key
        && !schema.fields().iter().any(|f| f.name() == k)
    {
        bail!("--primary-key {k:?} is not a column of the file");
    }
    Ok(defs.join(", "))
}

fn renamed(schema: &Schema, names: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().zip(names).map(|(f, n)| Field::new(n, f.data_type().clone(), true)).collect::<Vec<_>>(),
    ))
}

fn csv_reader(path: &Path, o: &CsvOptions) -> anyhow::Result<csv::Reader<BufReader<File>>> {
    Ok(csv::ReaderBuilder::new().has_headers(false).delimiter(o.delimiter).quote(o.quote).flexible(true).from_reader(
        BufReader::with_capacity(1 << 20, File::open(path).with_context(|| format!("opening {}", path.display()))?),
    ))
}

/// The column names in a CSV file's header (as text columns; `None` without a header).
fn csv_header(path: &Path, o: &CsvOptions) -> anyhow::Result<Option<SchemaRef>> {
    if !o.header {
        return Ok(None);
    }
    let mut record = csv::StringRecord::new();
    if !csv_reader(path, o)?.read_record(&mut record)? {
        bail!("{} is empty: no header", path.display());
    }
    Ok(Some(Arc::new(Schema::new(record.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()))))
}

/// The columns of a CSV file as Arrow infers them (`None` without a header: the table or
/// `--schema` names them).
fn csv_schema(path: &Path, o: &CsvOptions, infer_rows: usize) -> anyhow::Result<Option<SchemaRef>> {
    if !o.header {
        return Ok(None);
    }
    let mut format = datafusion::arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(o.delimiter)
        .with_quote(o.quote);
    if let Some(null) = &o.null {
        format = format.with_null_regex(regex::Regex::new(&format!("^{}$", regex::escape(null)))?);
    }
    let (schema, _) = format
        .infer_schema(BufReader::new(File::open(path)?), Some(infer_rows.max(1)))
        .with_context(|| format!("inferring the columns of {}", path.display()))?;
    Ok(Some(Arc::new(schema)))
}

/// Reads CSV records as text columns named `targets`, in chunks of `batch_rows`.
fn read_csv(
    path: &Path,
    o: &CsvOptions,
    targets: &[String],
    batch_rows: usize,
    send: &mut dyn FnMut(Chunk) -> bool,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Rejected>> {
    let mut reader = csv_reader(path, o)?;
    let schema = Arc::new(Schema::new(targets.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let width = targets.len();
    let new_builders =
        || (0..width).map(|_| StringBuilder::with_capacity(batch_rows, batch_rows * 16)).collect::<Vec<_>>();
    let mut builders = new_builders();
    let mut lines = Vec::with_capacity(batch_rows);
    let mut rejects = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut first = true;
    let mut last_byte = 0u64;
    let flush = |builders: &mut Vec<StringBuilder>, lines: &mut Vec<u64>, send: &mut dyn FnMut(Chunk) -> bool| {
        let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok::<_, anyhow::Error>(send(Chunk { batch, lines: std::mem::take(lines) }))
    };
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(e.into());
                }
                let line = e.position().map_or(line, |p| p.line());
                rejects.push(Rejected { line, code: "parse".into(), message: e.to_string(), row: Value::Null });
                continue;
            }
        }
        if std::mem::take(&mut first) && o.header {
            continue;
        }
        if record.len() != width {
            rejects.push(Rejected {
                line,
                code: "parse".into(),
                message: format!("expected {width} fields, found {}", record.len()),
                row: json!(record.iter().collect::<Vec<_>>()),
            });
            continue;
        }
        for (b, field) in builders.iter_mut().zip(record.iter()) {
            let null = match &o.null {
                Some(marker) => field == marker,
                None => field.is_empty(),
            };
            if null { b.append_null() } else { b.append_value(field) }
        }
        lines.push(line);
        if lines.len() >= batch_rows {
            if !flush(&mut builders, &mut lines, send)? {
                return Ok(rejects);
            }
            let byte = reader.position().byte();
            bar.inc(byte - last_byte);
            last_byte = byte;
        }
    }
    if !lines.is_empty() {
        flush(&mut builders, &mut lines, send)?;
    }
    bar.inc(reader.position().byte().saturating_sub(last_byte));
    Ok(rejects)
}

/// The columns of a JSON-lines file as Arrow infers them from its first `infer_rows` lines.
fn jsonl_schema(path: &Path, infer_rows: usize) -> anyhow::Result<SchemaRef> {
    let reader = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let (schema, _) = datafusion::arrow::json::reader::infer_json_schema(reader, Some(infer_rows.max(1)))
        .with_context(|| format!("inferring the columns of {}", path.display()))?;
    Ok(Arc::new(schema))
}

/// JSON scalars travel as text (the server converts them); lists keep their type.
fn jsonl_wire_type(dt: &DataType) -> DataType {
    match dt {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => dt.clone(),
        _ => DataType::Utf8,
    }
}

fn read_jsonl(
    path: &Path,
    schema: &Schema,
    targets: &[String],
    batch_rows: usize,
    send: &mut dyn FnMut(Chunk) -> bool,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Rejected>> {
    // Decode with the file's key names, then rename to the table's.
    let fields = |names: &mut dyn Iterator<Item = &String>| {
        Arc::new(Schema::new(
            names
                .zip(schema.fields())
                .map(|(n, f)| Field::new(n, jsonl_wire_type(f.data_type()), true))
                .collect::<Vec<_>>(),
        ))
    };
    let decode_schema = fields(&mut schema.fields().iter().map(|f| f.name()));
    let wire = fields(&mut targets.iter());
    let decode = |text: &str| -> anyhow::Result<RecordBatch> {
        let mut d = datafusion::arrow::json::ReaderBuilder::new(decode_schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(batch_rows.max(1))
            .build_decoder()?;
        d.decode(text.as_bytes())?;
        let b = d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(decode_schema.clone()));
        Ok(RecordBatch::try_new(wire.clone(), b.columns().to_vec())?)
    };
    let mut rejects = Vec::new();
    let mut text = String::new();
    let mut lines: Vec<(u64, String)> = Vec::new();
    let reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut emit = |lines: &mut Vec<(u64, String)>, rejects: &mut Vec<Rejected>| -> anyhow::Result<bool> {
        text.clear();
        for (_, l) in lines.iter() {
            text.push_str(l);
            text.push('\n');
        }
        let (batch, nums) = match decode(&text) {
            Ok(b) if b.num_rows() == lines.len() => (b, lines.iter().map(|(n, _)| *n).collect()),
            _ => {
                // Some line does not decode: find it (them), send the rest.
                let mut good = Vec::new();
                let mut nums = Vec::new();
                for (n, l) in lines.iter() {
                    match decode(l) {
                        Ok(b) if b.num_rows() == 1 => {
                            good.push(b);
                            nums.push(*n);
                        }
                        Ok(_) => rejects.push(Rejected {
                            line: *n,
                            code: "parse".into(),
                            message: "not one JSON object".into(),
                            row: Value::Null,
                        }),
                        Err(e) => rejects.push(Rejected {
                            line: *n,
                            code: "parse".into(),
                            message: e.to_string(),
                            row: Value::String(l.clone()),
                        }),
                    }
                }
                (datafusion::arrow::compute::concat_batches(&wire, &good)?, nums)
            }
        };
        lines.clear();
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        Ok(send(Chunk { batch, lines: nums }))
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        lines.push((i as u64 + 1, line));
        if lines.len() >= batch_rows && !emit(&mut lines, &mut rejects)? {
            return Ok(rejects);
        }
    }
    if !lines.is_empty() {
        emit(&mut lines, &mut rejects)?;
    }
    Ok(rejects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_map_to_sql_types() {
        use datafusion::arrow::datatypes::TimeUnit;
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        for (dt, sql) in [
            (DataType::Boolean, "BOOLEAN"),
            (DataType::Int16, "SMALLINT"),
            (DataType::Int32, "INTEGER"),
            (DataType::Int64, "BIGINT"),
            (DataType::UInt32, "BIGINT"),
            (DataType::UInt64, "NUMERIC(20,0)"),
            (DataType::Float32, "REAL"),
            (DataType::Float64, "DOUBLE PRECISION"),
            (DataType::Decimal128(12, 2), "NUMERIC(12,2)"),
            (DataType::Utf8, "TEXT"),
            (DataType::LargeUtf8, "TEXT"),
            (DataType::Null, "TEXT"),
            (DataType::Date32, "DATE"),
            (DataType::Timestamp(TimeUnit::Second, None), "TIMESTAMP"),
            (DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), "TIMESTAMP"),
            (DataType::Binary, "BYTEA"),
            (DataType::FixedSizeList(item.clone(), 3), "VECTOR(3)"),
        ] {
            assert_eq!(sql_type(&dt).unwrap(), sql, "{dt}");
        }
        assert!(sql_type(&DataType::List(item)).is_err());
        assert!(sql_type(&DataType::Decimal256(60, 2)).is_err());
    }

    #[test]
    fn create_columns_quotes_names_and_places_the_key() {
        let s = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Full \"name\"", DataType::Utf8, true),
        ]);
        assert_eq!(create_columns(&s, Some("id")).unwrap(), "\"id\" BIGINT PRIMARY KEY, \"Full \"\"name\"\"\" TEXT");
        assert!(create_columns(&s, Some("nope")).is_err());
    }

    #[test]
    fn file_columns_match_table_columns_exactly_then_ignoring_case() {
        let table = vec![
            ("id".to_string(), "bigint".to_string()),
            ("Name".into(), "text".into()),
            ("name".into(), "text".into()),
        ];
        assert_eq!(match_columns(&["name".into(), "ID".into()], &table).unwrap(), vec!["name", "id"]);
        assert!(match_columns(&["zip".into()], &table).unwrap_err().to_string().contains("zip"));
        assert!(match_columns(&["id".into(), "ID".into()], &table).is_err());
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::of_path(Path::new("a/b.CSV")), Some(Format::Csv));
        assert_eq!(Format::of_path(Path::new("x.parquet")), Some(Format::Parquet));
        assert_eq!(Format::of_path(Path::new("x.ndjson")), Some(Format::Jsonl));
        assert_eq!(Format::of_path(Path::new("x.bin")), None);
    }
}
