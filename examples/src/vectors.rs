//! Loads vectors from `.fvecs` files (the SIFT/GIST format: per vector a little-endian `u32`
//! dimension, then that many `f32`) into a collection through the HTTP API, in batches, with
//! a progress bar. Rejected batches are reported (with the server's error) and skipped; the
//! rest goes on.

use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// What a load did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    pub loaded: u64,
    pub rejected: u64,
    /// The first few rejections: (first point id of the batch, server message).
    pub errors: Vec<(u64, String)>,
    pub seconds: f64,
}

impl LoadReport {
    pub fn per_second(&self) -> f64 {
        self.loaded as f64 / self.seconds.max(1e-9)
    }
}

pub struct LoadOptions<'a> {
    /// A node's `host:port`.
    pub target: &'a str,
    pub collection: &'a str,
    /// Create the collection (with this distance) when it does not exist.
    pub create: Option<&'a str>,
    pub batch: usize,
    /// Id of the first vector (the next ones count up).
    pub first_id: u64,
    /// Stop after this many vectors.
    pub limit: Option<u64>,
    /// Payload per vector, as JSON lines in the same order.
    pub payloads: Option<&'a Path>,
    pub progress: bool,
}

/// Reads the next vector of an `.fvecs` stream (`None` at its end).
fn next_fvec(r: &mut impl Read) -> anyhow::Result<Option<Vec<f32>>> {
    let mut dim = [0u8; 4];
    match r.read_exact(&mut dim) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let d = u32::from_le_bytes(dim) as usize;
    if d == 0 || d > 65_535 {
        bail!("not an .fvecs file: a vector of dimension {d}");
    }
    let mut bytes = vec![0u8; 4 * d];
    r.read_exact(&mut bytes).context("truncated .fvecs file")?;
    Ok(Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()))
}

/// Loads `fvecs` into the collection; see [`LoadOptions`].
pub async fn load_fvecs(fvecs: &Path, o: &LoadOptions<'_>) -> anyhow::Result<LoadReport> {
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/collections/{}", o.target, o.collection);
    let size = std::fs::metadata(fvecs).with_context(|| format!("reading {}", fvecs.display()))?.len();
    let mut reader = BufReader::new(std::fs::File::open(fvecs)?);
    let mut payloads = match o.payloads {
        Some(p) => Some(std::io::BufRead::lines(BufReader::new(std::fs::File::open(p)?))),
        None => None,
    };
    let first = next_fvec(&mut reader)?.context("the .fvecs file is empty")?;
    let dim = first.len();
    if let Some(distance) = o.create {
        let r = http.get(&base).send().await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            let r = http.put(&base).json(&json!({"vectors": {"size": dim, "distance": distance}})).send().await?;
            if !r.status().is_success() {
                bail!("creating {}: {}", o.collection, r.text().await?);
            }
        }
    }
    // The bar's length is an estimate (from the first vector's size); the file's end or
    // `limit` ends the load.
    let total = o.limit.unwrap_or(u64::MAX);
    let estimate = total.min(size / (4 + 4 * dim as u64));
    let bar = if o.progress { ProgressBar::new(estimate) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} vectors, {per_sec}, eta {eta}").expect("progress template"),
    );
    let started = Instant::now();
    let mut report = LoadReport::default();
    let mut next = Some(first);
    let mut id = o.first_id;
    while next.is_some() && report.loaded + report.rejected < total {
        let mut points = Vec::with_capacity(o.batch);
        let batch_first = id;
        while let Some(v) = next.take() {
            let payload = match payloads.as_mut().and_then(|p| p.next()) {
                Some(line) => serde_json::from_str::<Value>(&line?).context("a payload line is not JSON")?,
                None => Value::Null,
            };
            points.push(json!({"id": id, "vector": v, "payload": payload}));
            id += 1;
            if points.len() >= o.batch || report.loaded + report.rejected + points.len() as u64 >= total {
                next = next_fvec(&mut reader)?;
                break;
            }
            next = next_fvec(&mut reader)?;
        }
        let n = points.len() as u64;
        let r = http.put(format!("{base}/points")).json(&json!({ "points": points })).send().await?;
        if r.status().is_success() {
            report.loaded += n;
        } else {
            report.rejected += n;
            let msg = r.text().await.unwrap_or_default();
            if report.errors.len() < 10 {
                report.errors.push((batch_first, msg));
            }
        }
        bar.inc(n);
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
