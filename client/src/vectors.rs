//! Loads vectors from `.fvecs` files (the SIFT/GIST format: per vector a little-endian `u32`
//! dimension, then that many `f32`) or `.npy` files (NumPy's format: a 2-D little-endian
//! `float32` array, C order) into a collection through the HTTP API, or into a table's
//! `VECTOR(n)` column (through [`crate::load`]), in batches, with a progress bar. Ids come
//! from an ids file (one integer per line, or a 1-D integer `.npy`) or count up; payloads
//! from JSON lines in the same order. Rejected batches (collections) or rows (tables) are
//! reported with the server's error; the rest goes on.

use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
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

    /// Prints the summary and each refused batch (what both vector loaders show at the end).
    pub fn print(&self) {
        println!(
            "loaded {} vectors in {:.1} s ({:.0} vectors/s); rejected {}",
            self.loaded,
            self.seconds,
            self.per_second(),
            self.rejected
        );
        for (first, msg) in &self.errors {
            println!("  batch from id {first}: {msg}");
        }
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
    /// Id per vector (instead of counting up from `first_id`).
    pub ids: Option<&'a Path>,
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
    Ok(Some(f32s(&bytes)))
}

/// The first 8 bytes of `c` (a chunk of exactly 8).
fn le8(c: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&c[..8]);
    out
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The header of an `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The element type, e.g. `<f4` (little-endian float32).
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
    /// Where the data starts.
    pub data_offset: usize,
}

/// Parses the header at the start of an `.npy` file (format versions 1 to 3): the magic, the
/// header length, then a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 128), }`.
pub fn parse_npy_header(bytes: &[u8]) -> anyhow::Result<NpyHeader> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not an .npy file (bad magic)");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("unsupported .npy format version {v}"),
    };
    let text = bytes.get(start..start + len).context("truncated .npy header")?;
    let text = std::str::from_utf8(text).context("the .npy header is not text")?;
    let value_of = |key: &str| -> anyhow::Result<&str> {
        let at = text.find(&format!("'{key}'")).with_context(|| format!("the .npy header has no {key:?}"))?;
        let rest = text[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').with_context(|| format!("bad .npy header near {key:?}"))?.trim_start())
    };
    let descr = value_of("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .context("the .npy descr is not a plain type string")?
        .to_string();
    let fortran_order = match value_of("fortran_order")? {
        v if v.starts_with("True") => true,
        v if v.starts_with("False") => false,
        _ => bail!("bad .npy fortran_order"),
    };
    let shape = value_of("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).context("bad .npy shape")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>().with_context(|| format!("bad .npy dimension {d:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(NpyHeader { descr, fortran_order, shape, data_offset: start + len })
}

/// Reads an `.npy` header from a file, leaving the reader at the data.
fn read_npy_header(r: &mut impl Read) -> anyhow::Result<NpyHeader> {
    let mut head = vec![0u8; 12];
    r.read_exact(&mut head).context("truncated .npy file")?;
    let total = match head[6] {
        1 => 10 + u16::from_le_bytes([head[8], head[9]]) as usize,
        _ => 12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
    };
    if total > 1 << 20 {
        bail!("an .npy header of {total} bytes");
    }
    head.resize(total.max(12), 0);
    r.read_exact(&mut head[12..]).context("truncated .npy header")?;
    parse_npy_header(&head)
}

/// Vectors read one at a time from an `.fvecs` or `.npy` file.
pub struct VectorFile {
    reader: BufReader<std::fs::File>,
    /// `.npy`: the dimension and the vectors left; `.fvecs`: `None`.
    npy: Option<(usize, u64)>,
    /// The first vector of an `.fvecs` file, read to learn the dimension.
    first: Option<Vec<f32>>,
    pub dim: usize,
    /// How many vectors the file holds (an estimate for `.fvecs`).
    pub len: u64,
}

impl VectorFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            let h = read_npy_header(&mut reader).with_context(|| path.display().to_string())?;
            if h.descr != "<f4" {
                bail!("{}: vectors must be little-endian float32 ('<f4'), not {:?}", path.display(), h.descr);
            }
            if h.fortran_order {
                bail!("{}: Fortran-ordered arrays are not supported (save with C order)", path.display());
            }
            let [n, dim] = h.shape[..] else {
                bail!("{}: vectors must be a 2-D array, not shape {:?}", path.display(), h.shape)
            };
            if dim == 0 || dim > 65_535 {
                bail!("{}: vectors of dimension {dim}", path.display());
            }
            // Checked: a header's shape is any u64s (a product that overflowed would pass).
            let need = n.checked_mul(dim * 4).and_then(|b| b.checked_add(h.data_offset as u64));
            if need.is_none_or(|need| size < need) {
                bail!("{}: truncated (shape {:?})", path.display(), h.shape);
            }
            return Ok(Self { reader, npy: Some((dim as usize, n)), first: None, dim: dim as usize, len: n });
        }
        let first = next_fvec(&mut reader)?.with_context(|| format!("{} is empty", path.display()))?;
        let dim = first.len();
        Ok(Self { reader, npy: None, dim, len: size / (4 + 4 * dim as u64), first: Some(first) })
    }

    pub fn next_vector(&mut self) -> anyhow::Result<Option<Vec<f32>>> {
        match &mut self.npy {
            Some((_, 0)) => Ok(None),
            Some((dim, left)) => {
                let mut bytes = vec![0u8; 4 * *dim];
                self.reader.read_exact(&mut bytes).context("truncated .npy file")?;
                *left -= 1;
                Ok(Some(f32s(&bytes)))
            }
            None => match self.first.take() {
                Some(v) => Ok(Some(v)),
                None => next_fvec(&mut self.reader),
            },
        }
    }
}

/// Reads ids: a 1-D integer `.npy` array, or text with one integer per line.
pub fn read_ids(path: &Path) -> anyhow::Result<Vec<i64>> {
    let ctx = || path.display().to_string();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let file = std::fs::File::open(path).with_context(ctx)?;
        let size = file.metadata().with_context(ctx)?.len();
        let mut r = BufReader::new(file);
        let h = read_npy_header(&mut r).with_context(ctx)?;
        let [n] = h.shape[..] else { bail!("{}: ids must be a 1-D array, not shape {:?}", ctx(), h.shape) };
        let width: usize = match h.descr.as_str() {
            "<i8" | "<u8" => 8,
            "<i4" | "<u4" => 4,
            other => bail!("{}: ids must be little-endian integers, not {other:?}", ctx()),
        };
        // What the shape claims must be in the file before it is allocated: a damaged header
        // would ask for exabytes (an abort, not an error).
        let len = n.checked_mul(width as u64).filter(|len| *len <= size.saturating_sub(h.data_offset as u64));
        let Some(len) = len else { bail!("{}: truncated (shape {:?})", ctx(), h.shape) };
        let mut bytes = vec![0u8; len as usize];
        r.read_exact(&mut bytes).context("truncated .npy file")?;
        return bytes
            .chunks_exact(width)
            .map(|c| {
                Ok(match h.descr.as_str() {
                    "<i8" => i64::from_le_bytes(le8(c)),
                    "<u8" => i64::try_from(u64::from_le_bytes(le8(c)))
                        .map_err(|_| anyhow::anyhow!("{}: an id beyond 2^63", ctx()))?,
                    "<i4" => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    _ => i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                })
            })
            .collect();
    }
    let text = std::fs::read_to_string(path).with_context(ctx)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| l.trim().parse::<i64>().with_context(|| format!("{} line {}: not an integer id", ctx(), i + 1)))
        .collect()
}

/// Loads an `.fvecs` or `.npy` file into the collection; see [`LoadOptions`].
pub async fn load_vectors(path: &Path, o: &LoadOptions<'_>) -> anyhow::Result<LoadReport> {
    let http = crate::http_builder().build()?;
    let base = format!("{}://{}/v1/collections/{}", crate::scheme(), o.target, o.collection);
    let mut file = VectorFile::open(path)?;
    let dim = file.dim;
    let ids = o.ids.map(read_ids).transpose()?;
    let mut payloads = match o.payloads {
        Some(p) => Some(std::io::BufRead::lines(BufReader::new(std::fs::File::open(p)?))),
        None => None,
    };
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
    let estimate = total.min(file.len);
    let bar = if o.progress { ProgressBar::new(estimate) } else { ProgressBar::hidden() };
    bar.set_style(crate::progress::bar_style(crate::progress::VECTORS));
    let started = Instant::now();
    let mut report = LoadReport::default();
    let mut next = file.next_vector()?;
    let mut index = 0usize;
    while next.is_some() && report.loaded + report.rejected < total {
        let mut points = Vec::with_capacity(o.batch);
        let id_at = |i: usize| -> anyhow::Result<u64> {
            match &ids {
                Some(ids) => {
                    let id = *ids.get(i).with_context(|| format!("the ids file has only {} ids", ids.len()))?;
                    u64::try_from(id).map_err(|_| anyhow::anyhow!("negative point id {id}"))
                }
                None => Ok(o.first_id + i as u64),
            }
        };
        let batch_first = id_at(index)?;
        while let Some(v) = next.take() {
            let payload = match payloads.as_mut().and_then(|p| p.next()) {
                Some(line) => serde_json::from_str::<Value>(&line?).context("a payload line is not JSON")?,
                None => Value::Null,
            };
            points.push(json!({"id": id_at(index)?, "vector": v, "payload": payload}));
            index += 1;
            if points.len() >= o.batch || report.loaded + report.rejected + points.len() as u64 >= total {
                next = file.next_vector()?;
                break;
            }
            next = file.next_vector()?;
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

/// Where vectors go in a table.
#[derive(Debug, Clone)]
pub struct TableVectorOptions {
    pub target: String,
    pub table: String,
    /// The `VECTOR(n)` column.
    pub column: String,
    /// The column ids go into (the primary key of a table the loader creates).
    pub id_column: String,
    /// An ids file; without one, ids count up from `first_id`.
    pub ids: Option<std::path::PathBuf>,
    pub first_id: i64,
    pub batch_rows: usize,
    pub in_flight: usize,
    pub rejects: Option<std::path::PathBuf>,
    pub progress: bool,
}

/// Loads an `.fvecs` or `.npy` file into a table's vector column (ids into `id_column`),
/// creating `table (id BIGINT PRIMARY KEY, column VECTOR(dim))` if it does not exist.
pub async fn load_vectors_into_table(
    path: &Path,
    o: &TableVectorOptions,
) -> anyhow::Result<crate::load::TableLoadReport> {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, FixedSizeListBuilder, Float32Builder, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use crate::load::{Api, Chunk, quote_ident, send_chunks};

    let mut file = VectorFile::open(path)?;
    let dim = file.dim;
    let ids = o.ids.as_deref().map(read_ids).transpose()?;
    if let Some(ids) = &ids
        && (ids.len() as u64) < file.len
    {
        bail!("{} vectors but only {} ids", file.len, ids.len());
    }
    let api = Api::new(&o.target);
    let mut created = false;
    if api.columns(&o.table).await?.is_none() {
        let ddl = format!(
            "CREATE TABLE {} ({} BIGINT PRIMARY KEY, {} VECTOR({dim}))",
            quote_ident(&o.table),
            quote_ident(&o.id_column),
            quote_ident(&o.column)
        );
        api.sql(&ddl).await?.map_err(|e| anyhow::anyhow!("{ddl}: {e}"))?;
        created = true;
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new(&o.id_column, DataType::Int64, true),
        Field::new(&o.column, DataType::FixedSizeList(item.clone(), dim as i32), true),
    ]));
    let bar = if o.progress { ProgressBar::new(file.len) } else { ProgressBar::hidden() };
    bar.set_style(crate::progress::bar_style(crate::progress::VECTOR_ROWS));
    let (batch_rows, first_id) = (o.batch_rows.max(1), o.first_id);
    let mut report = send_chunks(&api, &o.table, o.in_flight, bar, move |send, bar| {
        let mut row = 0u64;
        loop {
            let mut list = FixedSizeListBuilder::with_capacity(Float32Builder::new(), dim as i32, batch_rows)
                .with_field(item.clone());
            let mut id_col = Vec::with_capacity(batch_rows);
            while id_col.len() < batch_rows {
                let Some(v) = file.next_vector()? else { break };
                if v.len() != dim {
                    bail!("vector {} has dimension {} (the first has {dim})", row + 1, v.len());
                }
                id_col.push(match &ids {
                    Some(ids) => ids[row as usize],
                    None => first_id + row as i64,
                });
                list.values().append_slice(&v);
                list.append(true);
                row += 1;
            }
            if id_col.is_empty() {
                return Ok(Vec::new());
            }
            let n = id_col.len() as u64;
            let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(id_col)), Arc::new(list.finish())];
            let batch = RecordBatch::try_new(schema.clone(), columns)?;
            if !send(Chunk { batch, lines: (row - n + 1..=row).collect() }) {
                return Ok(Vec::new());
            }
            bar.inc(n);
        }
    })
    .await?;
    report.created = created;
    if let Some(f) = &o.rejects {
        crate::load::write_rejects(f, &report.rejected)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b
    }

    #[test]
    fn npy_headers_parse() {
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 128), }");
        let h = parse_npy_header(&b).unwrap();
        assert_eq!(
            h,
            NpyHeader { descr: "<f4".into(), fortran_order: false, shape: vec![1000, 128], data_offset: 128 }
        );
        let h = parse_npy_header(&npy("{'shape': (7,), 'fortran_order': True, 'descr': '<i8'}")).unwrap();
        assert_eq!((h.descr.as_str(), h.fortran_order, h.shape), ("<i8", true, vec![7]));
        // Version 2: a 4-byte header length.
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
        v2.extend_from_slice(&(text.len() as u32).to_le_bytes());
        v2.extend_from_slice(text.as_bytes());
        assert_eq!(parse_npy_header(&v2).unwrap().shape, vec![2, 3]);
    }

    #[test]
    fn bad_npy_headers_are_errors() {
        assert!(parse_npy_header(b"PK\x03\x04 not numpy").is_err());
        assert!(parse_npy_header(&npy("{'descr': '<f4', 'fortran_order': False}")).is_err());
        assert!(parse_npy_header(&npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1, 2)}")).is_err());
        assert!(parse_npy_header(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (x, 2)}")).is_err());
        let mut short = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }");
        short.truncate(30);
        assert!(parse_npy_header(&short).is_err());
        assert!(parse_npy_header(b"\x93NUMPY\x09\x00\x10\x00").is_err());
    }

    #[test]
    fn npy_files_read_vectors_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.npy");
        let mut b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
        for f in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.5] {
            b.extend_from_slice(&f.to_le_bytes());
        }
        std::fs::write(&path, &b).unwrap();
        let mut f = VectorFile::open(&path).unwrap();
        assert_eq!((f.dim, f.len), (3, 2));
        assert_eq!(f.next_vector().unwrap(), Some(vec![1.0, 2.0, 3.0]));
        assert_eq!(f.next_vector().unwrap(), Some(vec![4.0, 5.0, 6.5]));
        assert_eq!(f.next_vector().unwrap(), None);
        // A file shorter than its shape says is refused up front.
        std::fs::write(&path, &b[..b.len() - 4]).unwrap();
        assert!(VectorFile::open(&path).is_err());

        let ids = dir.path().join("ids.npy");
        let mut b = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }");
        for i in [7i64, -3] {
            b.extend_from_slice(&i.to_le_bytes());
        }
        std::fs::write(&ids, &b).unwrap();
        assert_eq!(read_ids(&ids).unwrap(), vec![7, -3]);
        let txt = dir.path().join("ids.txt");
        std::fs::write(&txt, "5\n6\n\n").unwrap();
        assert_eq!(read_ids(&txt).unwrap(), vec![5, 6]);
        std::fs::write(&txt, "5\nsix\n").unwrap();
        assert!(read_ids(&txt).unwrap_err().to_string().contains("line 2"));
    }
}
