//! Bulk loads over HTTP: `POST /v1/tables/{table}/rows` decodes its body — an Arrow IPC
//! stream (`application/vnd.apache.arrow.stream`) or JSON lines (`application/x-ndjson`,
//! one object per line) — into record batches and hands them to
//! [`quorumdb_sql::Engine::insert_batches`]: one request is one atomic replicated command,
//! checked exactly like `INSERT`. Answers `{"rows_affected": n}`; an error caused by one row
//! carries its position in the body (`"row"`, from 0) next to the SQLSTATE.
//!
//! This module only decodes and delegates: it never plans or checks rows itself.

use std::io::Cursor;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::infer_json_schema;
use serde_json::{Value, json};

use crate::context::NodeContext;
use crate::error::ServerError;

/// The largest body accepted: one request is one Raft entry, and entries travel in batches
/// under the transport's 256 MiB message limit.
pub const MAX_BODY: usize = 16 << 20;

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub async fn insert_rows(
    State(s): State<NodeContext>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ServerError> {
    let body = body.map_err(|e| {
        ServerError::BadRequest(format!(
            "{e} (a load request may carry at most {} MiB: send smaller batches)",
            MAX_BODY >> 20
        ))
    })?;
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let batches = match ctype.split(';').next().unwrap_or("").trim() {
        ARROW_STREAM => arrow_stream(&body)?,
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => json_lines(&body)?,
        other => {
            return Err(ServerError::BadRequest(format!(
                "unsupported content-type {other:?}: send {ARROW_STREAM} or application/x-ndjson"
            )));
        }
    };
    metrics::counter!("quorumdb_bulk_rows_total").increment(batches.iter().map(|b| b.num_rows() as u64).sum());
    let req =
        crate::request::request_id(&headers, &[b"POST /v1/tables/rows", table.as_bytes(), ctype.as_bytes(), &body])?;
    let proposer = quorumdb_replication::RequestProposer { replica: &s.replica, request: req.as_ref() };
    let n = s.sql.insert_batches(&table, &batches, &proposer).await?;
    Ok(Json(json!({ "rows_affected": n })))
}

/// The batches of an Arrow IPC stream. Decoded from the bytes in hand, never trusting a length
/// the stream claims: arrow's `StreamReader` allocates each message's claimed body length
/// before reading it, and a corrupt length (71 PB, found by `t88_http_fuzz`) aborted the
/// process; the `StreamDecoder` only ever holds what it was given.
fn arrow_stream(body: &[u8]) -> Result<Vec<RecordBatch>, ServerError> {
    untrusted("Arrow IPC stream", || {
        let mut decoder = StreamDecoder::new();
        let mut buf = Buffer::from(body.to_vec());
        let mut batches = Vec::new();
        while let Some(batch) = decoder.decode(&mut buf)? {
            batches.push(batch);
        }
        decoder.finish()?;
        Ok(batches)
    })
}

/// JSON lines, with the columns and their Arrow types inferred from the objects (the engine
/// coerces them to the table's types).
fn json_lines(body: &[u8]) -> Result<Vec<RecordBatch>, ServerError> {
    untrusted("JSON lines", || {
        let (schema, _) = infer_json_schema(Cursor::new(body), None)?;
        let reader = ReaderBuilder::new(Arc::new(schema)).with_batch_size(8192).build(Cursor::new(body))?;
        reader.collect()
    })
}

/// Runs an Arrow decoder on a client's bytes: its error, or a panic (arrow's IPC reader panics
/// on some corrupt buffer lengths instead of failing: found by `t88_http_fuzz`), is the client's
/// bad request, not a dropped connection.
fn untrusted(
    what: &str,
    decode: impl FnOnce() -> Result<Vec<RecordBatch>, datafusion::arrow::error::ArrowError>,
) -> Result<Vec<RecordBatch>, ServerError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(Ok(batches)) => Ok(batches),
        Ok(Err(e)) => Err(ServerError::BadRequest(format!("invalid {what}: {e}"))),
        Err(_) => Err(ServerError::BadRequest(format!("invalid {what}: it cannot be decoded"))),
    }
}
