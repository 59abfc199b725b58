//! A structural check of an `hnsw_rs` dump (graph and data files, version 3 and 4 layouts)
//! before `hnsw_rs` reads it.
//!
//! `hnsw_rs`'s reader trusts its files: it sizes vectors from counts it reads (a damaged count
//! asks for terabytes and aborts the process), ends the process (`std::process::exit(1)`) on a
//! data file that is truncated or of the old version-2 layout, and reads vectors with the
//! description's dimension whatever length the record has. The CRCs in the dump manifest catch
//! damage on disk, but not a file that was written wrong or replaced along with its manifest
//! (found by `vector/tests/fuzz.rs`, which recomputes them). So [`check`] walks both files
//! once, in memory, and refuses anything the reader would not consume exactly: every count is
//! checked against the bytes left before it is used, every record against the index's spec,
//! every point reference against the points read; distances may not be NaN, vectors must be
//! finite (hnsw_rs panics on a NaN distance at the first insert or search after the load).
//!
//! The layout (native endianness, `usize` 8 bytes), as `hnsw_rs` 0.3 writes it in full mode:
//! ```text
//! graph: u32 magic (v3|v4), u8 mode (1), u8 m, [v4: f64 level scale], u8 layers (16),
//!        usize ef, usize points, usize dim, usize len + distance name, usize len + type name,
//!        u8 layers used; per layer: u32 magic, usize points; per point: u32 magic,
//!        usize id, u8 layer, i32 rank, per layer (16): usize n, n × (usize id, u8 layer,
//!        i32 rank, f32 distance); then the entry point: usize id, u8 layer, i32 rank
//! data:  u32 magic, usize dim; per point (graph order): u32 magic, u64 id, u64 len, len bytes
//! ```

use crate::error::{Result, VectorError};

const MAGIC_DESCR_3: u32 = 0x002a_6771;
const MAGIC_DESCR_4: u32 = 0x002a_6779;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_DATA: u32 = 0xa67f_0000;
/// `hnsw_rs`'s `NB_LAYER_MAX`: layers per graph, neighbour lists per point.
const LAYERS: usize = 16;
/// The longest distance or type name the reader accepts.
const MAX_NAME: usize = 256;
/// Bytes of one neighbour in full mode: id, layer, rank, distance.
const NEIGHBOUR_BYTES: usize = 8 + 1 + 4 + 4;

fn corrupt(what: impl Into<String>) -> VectorError {
    VectorError::Corrupt(format!("HNSW dump: {}", what.into()))
}

/// Reads fixed-size fields off the front of a file's bytes.
struct Cursor<'a> {
    name: &'static str,
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt(format!("the {} file is truncated", self.name)));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_ne_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_ne_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_ne_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_ne_bytes(self.array()?))
    }

    /// A `usize` field (8 bytes in the dump), as a `u64`.
    fn size(&mut self) -> Result<u64> {
        self.u64()
    }

    /// A count of records of at least `each` bytes: refused if the file cannot hold them.
    fn count(&mut self, each: usize, what: &str) -> Result<usize> {
        let n = self.size()?;
        if n > (self.rest.len() / each.max(1)) as u64 {
            return Err(corrupt(format!("{n} {what} in a {} file of {} bytes left", self.name, self.rest.len())));
        }
        Ok(n as usize)
    }

    fn end(&self) -> Result<()> {
        if !self.rest.is_empty() {
            return Err(corrupt(format!("{} bytes after the end of the {} file", self.rest.len(), self.name)));
        }
        Ok(())
    }
}

/// Refuses a field of file `file` whose value is not the one expected.
fn same(file: &str, want: u64, got: u64, what: &str) -> Result<()> {
    if got != want {
        return Err(corrupt(format!("{what} is {got} in the {file} file, not {want}")));
    }
    Ok(())
}

/// What a dump must agree with: the index's spec (`dim`, `m`, `ef_construction`) and the
/// manifest's `watermark` (ids are allocated in order: the dump holds none at or above it).
pub(crate) struct Expected {
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub watermark: u64,
}

/// Checks a dump's graph and data files against each other and against `expected`.
pub(crate) fn check(graph: &[u8], data: &[u8], expected: &Expected) -> Result<()> {
    let Expected { dim, m, ef_construction, watermark } = *expected;
    let mut g = Cursor { name: "graph", rest: graph };
    let mut d = Cursor { name: "data", rest: data };
    let magic = g.u32()?;
    if magic != MAGIC_DESCR_3 && magic != MAGIC_DESCR_4 {
        return Err(corrupt(format!("unknown graph file magic {magic:#x}")));
    }
    same(g.name, 1, u64::from(g.u8()?), "the dump mode")?;
    same(g.name, m as u64, u64::from(g.u8()?), "m")?;
    if magic == MAGIC_DESCR_4 {
        let scale = g.f64()?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(corrupt(format!("level scale {scale}")));
        }
    }
    same(g.name, LAYERS as u64, u64::from(g.u8()?), "the layer count")?;
    same(g.name, ef_construction as u64, g.size()?, "ef_construction")?;
    let points = g.size()?;
    let dim = dim as u64;
    same(g.name, dim, g.size()?, "the dimension")?;
    for what in ["distance name", "type name"] {
        let len = g.size()?;
        if len > MAX_NAME as u64 {
            return Err(corrupt(format!("a {what} of {len} bytes")));
        }
        if std::str::from_utf8(g.take(len as usize)?).is_err() {
            return Err(corrupt(format!("the {what} is not UTF-8")));
        }
    }
    same(d.name, u64::from(MAGIC_DATA), u64::from(d.u32()?), "the data file magic")?;
    same(d.name, dim, d.size()?, "the dimension")?;
    let vector_bytes = dim.saturating_mul(4);
    let used_layers = g.u8()? as usize;
    if used_layers > LAYERS {
        return Err(corrupt(format!("{used_layers} layers")));
    }
    // Points per layer, and every neighbour reference (layer, rank) to check once all are read.
    let mut sizes = Vec::with_capacity(used_layers);
    let mut references: Vec<(u8, i32)> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    // The smallest point record: magic, id, layer, rank, and an empty list per layer.
    let point_bytes = 4 + 8 + 1 + 4 + LAYERS * 8;
    for layer in 0..used_layers {
        same(g.name, u64::from(MAGIC_LAYER), u64::from(g.u32()?), "a layer magic")?;
        let n = g.count(point_bytes, "points")?;
        for rank in 0..n {
            same(g.name, u64::from(MAGIC_POINT), u64::from(g.u32()?), "a point magic")?;
            let id = g.size()?;
            if id >= watermark || !ids.insert(id) {
                return Err(corrupt(format!("point id {id} (a duplicate, or not below the watermark {watermark})")));
            }
            same(g.name, layer as u64, u64::from(g.u8()?), "a point's layer")?;
            same(g.name, rank as u64, u64::try_from(g.i32()?).unwrap_or(u64::MAX), "a point's rank")?;
            for _ in 0..LAYERS {
                for _ in 0..g.count(NEIGHBOUR_BYTES, "neighbours")? {
                    let _id = g.size()?;
                    references.push((g.u8()?, g.i32()?));
                    // hnsw_rs orders neighbours by distance and panics on a NaN (at the next
                    // insert or search, after the load).
                    if f32::from_ne_bytes(g.array()?).is_nan() {
                        return Err(corrupt("a neighbour at a NaN distance"));
                    }
                }
            }
            same(d.name, u64::from(MAGIC_DATA), u64::from(d.u32()?), "a vector's magic")?;
            same(d.name, id, d.u64()?, "a vector's point id")?;
            same(d.name, vector_bytes, d.u64()?, "a vector's length in bytes")?;
            // Rows hold finite vectors only; a NaN would reach the graph's distances.
            if d.take(vector_bytes as usize)?
                .chunks_exact(4)
                .any(|c| !f32::from_ne_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            {
                return Err(corrupt(format!("a vector of point {id} that is not finite")));
            }
        }
        sizes.push(n);
    }
    if ids.len() as u64 != points {
        return Err(corrupt(format!("{} points in the layers, {points} in the description", ids.len())));
    }
    let _entry_id = g.size()?;
    references.push((g.u8()?, g.i32()?));
    g.end()?;
    d.end()?;
    for (layer, rank) in references {
        let size = sizes.get(layer as usize).copied().unwrap_or(0);
        if usize::try_from(rank).map_or(true, |r| r >= size) {
            return Err(corrupt(format!("a reference to point {rank} of layer {layer}, which has {size}")));
        }
    }
    Ok(())
}
