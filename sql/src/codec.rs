//! Byte encodings of SQL state: where each thing lives in the replicated keyspace, keys whose
//! byte order is the SQL order of their values (memcomparable), and compact rows.
//!
//! Layout (all under `q/`):
//! - `q/cat` — the catalog (all table definitions and the catalog version);
//! - `q/t/<table id>/r/<key>` — a row, `<key>` the encoded primary key (or hidden row id);
//! - `q/t/<table id>/i/<index id>/<indexed values>[<key>]` — an index entry; unique indexes
//!   without NULLs store the row key as the value, others append it to the entry key;
//! - for an HNSW index, under its index prefix: `d<point id>` → row key and `p<row key>` → point
//!   id (the graph's points, one per row version), `n` the next point id and `g` the index's
//!   generation (the log index that created or last emptied it);
//! - `q/t/<table id>/v` — the log index of the last write to the table (for conflict checks);
//! - `q/t/<table id>/s` — the last hidden row id handed out.

use crate::error::{Result, SqlError};
use crate::types::{ColumnType, Value};

pub const CATALOG_KEY: &[u8] = b"q/cat";

fn table_prefix(table: u32) -> Vec<u8> {
    let mut k = b"q/t/".to_vec();
    k.extend_from_slice(&table.to_be_bytes());
    k.push(b'/');
    k
}

/// Everything a table owns: rows, index entries, version, row-id counter.
pub fn table_range(table: u32) -> (Vec<u8>, Vec<u8>) {
    let p = table_prefix(table);
    let end = prefix_end(&p);
    (p, end)
}

pub fn rows_prefix(table: u32) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.extend_from_slice(b"r/");
    k
}

pub fn row_key(table: u32, key: &[u8]) -> Vec<u8> {
    let mut k = rows_prefix(table);
    k.extend_from_slice(key);
    k
}

pub fn indexes_prefix(table: u32) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.extend_from_slice(b"i/");
    k
}

pub fn index_prefix(table: u32, index: u32) -> Vec<u8> {
    let mut k = indexes_prefix(table);
    k.extend_from_slice(&index.to_be_bytes());
    k.push(b'/');
    k
}

fn index_key(table: u32, index: u32, tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = index_prefix(table, index);
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

/// HNSW point id → row key.
pub fn vector_point_key(table: u32, index: u32, point: u64) -> Vec<u8> {
    index_key(table, index, b'd', &point.to_be_bytes())
}

/// The range of all of an HNSW index's `point → row key` entries.
pub fn vector_points_range(table: u32, index: u32) -> (Vec<u8>, Vec<u8>) {
    let p = index_key(table, index, b'd', &[]);
    let end = prefix_end(&p);
    (p, end)
}

/// Row key → HNSW point id.
pub fn vector_row_key(table: u32, index: u32, row_key: &[u8]) -> Vec<u8> {
    index_key(table, index, b'p', row_key)
}

pub fn vector_next_key(table: u32, index: u32) -> Vec<u8> {
    index_key(table, index, b'n', &[])
}

pub fn vector_generation_key(table: u32, index: u32) -> Vec<u8> {
    index_key(table, index, b'g', &[])
}

pub fn decode_u64(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| SqlError::Storage("bad u64 value".into()))?))
}

pub fn table_version_key(table: u32) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.push(b'v');
    k
}

pub fn row_id_key(table: u32) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.push(b's');
    k
}

/// The first key after every key starting with `prefix` (the one shared definition).
pub use quorumdb_state::prefix_end;

const NULL: u8 = 0x00;
const NOT_NULL: u8 = 0x01;

/// Appends `v` (of column type `ty`) so that byte order equals value order; NULL sorts first.
pub fn encode_key_value(out: &mut Vec<u8>, v: &Value, ty: &ColumnType) -> Result<()> {
    if v.is_null() {
        out.push(NULL);
        return Ok(());
    }
    out.push(NOT_NULL);
    match (v, ty) {
        (Value::Int(x), _) | (Value::Timestamp(x), _) => {
            out.extend_from_slice(&((*x as u64) ^ (1 << 63)).to_be_bytes())
        }
        (Value::Date(x), _) => out.extend_from_slice(&(((*x as i64) as u64) ^ (1 << 63)).to_be_bytes()),
        (Value::Bool(b), _) => out.push(u8::from(*b)),
        (Value::Float(f), _) => {
            // -0.0 and 0.0 are equal in SQL: one encoding.
            let f = if *f == 0.0 { 0.0 } else { *f };
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        (Value::Decimal(d), _) => out.extend_from_slice(&((*d as u128) ^ (1 << 127)).to_be_bytes()),
        (Value::Text(s), _) => encode_bytes(out, s.as_bytes()),
        (Value::Bytes(b), _) => encode_bytes(out, b),
        (Value::Vector(_), _) | (Value::Null, _) => {
            return Err(SqlError::InvalidDefinition(format!("a {} value cannot be part of a key", ty.sql_name())));
        }
    }
    Ok(())
}

/// Escapes 0x00 as 0x00 0xff and ends with 0x00 0x01, so that prefixes sort first.
fn encode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Encodes a key made of several values.
pub fn encode_key(values: &[&Value], types: &[&ColumnType]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * 10);
    for (v, t) in values.iter().zip(types) {
        encode_key_value(&mut out, v, t)?;
    }
    Ok(out)
}

/// Decodes one key value of type `ty` from the front of `input`, advancing it.
pub fn decode_key_value(input: &mut &[u8], ty: &ColumnType) -> Result<Value> {
    let corrupt = || SqlError::Storage("corrupt key encoding".into());
    let (&flag, rest) = input.split_first().ok_or_else(corrupt)?;
    *input = rest;
    if flag == NULL {
        return Ok(Value::Null);
    }
    let u64_of = |input: &mut &[u8]| take_array::<8>(input).map(u64::from_be_bytes).ok_or_else(corrupt);
    let byte = |input: &mut &[u8]| take_array::<1>(input).map(|[b]| b).ok_or_else(corrupt);
    Ok(match ty {
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => Value::Int((u64_of(input)? ^ (1 << 63)) as i64),
        ColumnType::Timestamp => Value::Timestamp((u64_of(input)? ^ (1 << 63)) as i64),
        ColumnType::Date => Value::Date(((u64_of(input)? ^ (1 << 63)) as i64) as i32),
        ColumnType::Bool => Value::Bool(byte(input)? != 0),
        ColumnType::Float32 | ColumnType::Float64 => {
            let o = u64_of(input)?;
            let bits = if o >> 63 == 1 { o & !(1 << 63) } else { !o };
            Value::Float(f64::from_bits(bits))
        }
        ColumnType::Decimal { .. } => {
            let raw = take_array::<16>(input).ok_or_else(corrupt)?;
            Value::Decimal((u128::from_be_bytes(raw) ^ (1 << 127)) as i128)
        }
        ColumnType::Text { .. } | ColumnType::Json | ColumnType::Bytea => {
            let mut out = Vec::new();
            loop {
                let c = byte(input)?;
                if c != 0 {
                    out.push(c);
                    continue;
                }
                match byte(input)? {
                    0xff => out.push(0),
                    0x01 => break,
                    _ => return Err(corrupt()),
                }
            }
            if matches!(ty, ColumnType::Bytea) {
                Value::Bytes(out)
            } else {
                Value::Text(String::from_utf8(out).map_err(|_| corrupt())?)
            }
        }
        ColumnType::Vector { .. } => return Err(corrupt()),
    })
}

/// The next `N` bytes of `input` as an array (advancing it), if there are that many.
fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

// ---- rows ----

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or_else(|| SqlError::Storage("corrupt row: truncated".into()))?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(SqlError::Storage("corrupt row: varint too long".into()))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a row: a column count, a null bitmap, then each non-null value (varints for
/// integers, fixed width for floats and decimals, length-prefixed bytes).
pub fn encode_row(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + values.len() * 8);
    put_varint(&mut out, values.len() as u64);
    let mut bitmap = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if v.is_null() {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    for v in values {
        match v {
            Value::Null => {}
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Int(x) | Value::Timestamp(x) => put_varint(&mut out, zigzag(*x)),
            Value::Date(x) => put_varint(&mut out, zigzag(i64::from(*x))),
            Value::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
            Value::Decimal(d) => out.extend_from_slice(&d.to_le_bytes()),
            Value::Text(s) => {
                put_varint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                put_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Vector(v) => {
                put_varint(&mut out, v.len() as u64);
                for f in v {
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Decodes a row written by [`encode_row`] with the table's physical column types. A row
/// written before columns were added is padded with each added column's `defaults` entry.
pub fn decode_row(mut input: &[u8], types: &[ColumnType], defaults: &[Value]) -> Result<Vec<Value>> {
    let corrupt = |what: &str| SqlError::Storage(format!("corrupt row: {what}"));
    let n = get_varint(&mut input)? as usize;
    if n > types.len() {
        return Err(corrupt("more columns than the table has"));
    }
    let bitmap_len = n.div_ceil(8);
    if input.len() < bitmap_len {
        return Err(corrupt("truncated null bitmap"));
    }
    let (bitmap, mut input) = input.split_at(bitmap_len);
    let mut out = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate().take(n) {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push(Value::Null);
            continue;
        }
        fn take<'b>(input: &mut &'b [u8], len: usize) -> Result<&'b [u8]> {
            if input.len() < len {
                return Err(SqlError::Storage("corrupt row: truncated value".into()));
            }
            let (a, b) = input.split_at(len);
            *input = b;
            Ok(a)
        }
        let v = match ty {
            ColumnType::Bool => Value::Bool(take(&mut input, 1)?[0] != 0),
            ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => Value::Int(unzigzag(get_varint(&mut input)?)),
            ColumnType::Timestamp => Value::Timestamp(unzigzag(get_varint(&mut input)?)),
            ColumnType::Date => Value::Date(unzigzag(get_varint(&mut input)?) as i32),
            ColumnType::Float32 | ColumnType::Float64 => {
                Value::Float(f64::from_le_bytes(take_array(&mut input).ok_or_else(|| corrupt("truncated float"))?))
            }
            ColumnType::Decimal { .. } => {
                Value::Decimal(i128::from_le_bytes(take_array(&mut input).ok_or_else(|| corrupt("truncated decimal"))?))
            }
            ColumnType::Text { .. } | ColumnType::Json => {
                let len = get_varint(&mut input)? as usize;
                Value::Text(String::from_utf8(take(&mut input, len)?.to_vec()).map_err(|_| corrupt("invalid UTF-8"))?)
            }
            ColumnType::Bytea => {
                let len = get_varint(&mut input)? as usize;
                Value::Bytes(take(&mut input, len)?.to_vec())
            }
            ColumnType::Vector { .. } => {
                let len = get_varint(&mut input)? as usize;
                let raw = take(&mut input, len.checked_mul(4).ok_or_else(|| corrupt("vector length"))?)?;
                Value::Vector(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        };
        out.push(v);
    }
    for d in defaults.iter().skip(n) {
        out.push(d.clone());
    }
    Ok(out)
}

/// A stable 64-bit hash of a stored row, carried in commands to detect concurrent changes.
pub fn row_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: Value, ty: &ColumnType) -> Vec<u8> {
        encode_key(&[&v], &[ty]).unwrap()
    }

    #[test]
    fn key_order_is_value_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let ty = ColumnType::Int64;
        for w in ints.windows(2) {
            assert!(key(Value::Int(w[0]), &ty) < key(Value::Int(w[1]), &ty), "{w:?}");
        }
        let floats = [f64::NEG_INFINITY, -2.5, -0.0, 0.5, 3.0, f64::INFINITY];
        let ty = ColumnType::Float64;
        for w in floats.windows(2) {
            assert!(key(Value::Float(w[0]), &ty) < key(Value::Float(w[1]), &ty), "{w:?}");
        }
        assert_eq!(key(Value::Float(-0.0), &ty), key(Value::Float(0.0), &ty));
        let texts = ["", "a", "a\0", "a\0b", "ab", "b"];
        let ty = ColumnType::Text { max_len: None };
        for w in texts.windows(2) {
            assert!(key(Value::Text(w[0].into()), &ty) < key(Value::Text(w[1].into()), &ty), "{w:?}");
        }
        let ty = ColumnType::Decimal { precision: 10, scale: 2 };
        assert!(key(Value::Decimal(-100), &ty) < key(Value::Decimal(5), &ty));
        // NULL first; composite keys order by the first column, then the next.
        assert!(key(Value::Null, &ColumnType::Int64) < key(Value::Int(i64::MIN), &ColumnType::Int64));
        let t = ColumnType::Text { max_len: None };
        let i = ColumnType::Int64;
        let a = encode_key(&[&Value::Text("a".into()), &Value::Int(9)], &[&t, &i]).unwrap();
        let b = encode_key(&[&Value::Text("ab".into()), &Value::Int(1)], &[&t, &i]).unwrap();
        assert!(a < b);
    }

    #[test]
    fn keys_round_trip() {
        let cases = [
            (Value::Int(-42), ColumnType::Int32),
            (Value::Float(-1.25), ColumnType::Float64),
            (Value::Decimal(-12345), ColumnType::Decimal { precision: 10, scale: 2 }),
            (Value::Text("x\0y".into()), ColumnType::Text { max_len: None }),
            (Value::Bytes(vec![0, 255, 0]), ColumnType::Bytea),
            (Value::Bool(true), ColumnType::Bool),
            (Value::Timestamp(-1), ColumnType::Timestamp),
            (Value::Date(-3), ColumnType::Date),
            (Value::Null, ColumnType::Int64),
        ];
        for (v, ty) in cases {
            let k = key(v.clone(), &ty);
            let mut input = k.as_slice();
            assert_eq!(decode_key_value(&mut input, &ty).unwrap(), v);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn rows_round_trip_and_pad_added_columns() {
        let types = vec![
            ColumnType::Int64,
            ColumnType::Text { max_len: None },
            ColumnType::Float64,
            ColumnType::Decimal { precision: 12, scale: 3 },
            ColumnType::Bool,
            ColumnType::Bytea,
            ColumnType::Vector { dim: 2 },
            ColumnType::Date,
            ColumnType::Int32,
        ];
        let row = vec![
            Value::Int(-7),
            Value::Text("héllo".into()),
            Value::Null,
            Value::Decimal(123_456),
            Value::Bool(false),
            Value::Bytes(vec![1, 2]),
            Value::Vector(vec![0.5, -1.0]),
            Value::Date(19_000),
        ];
        let bytes = encode_row(&row);
        let defaults: Vec<Value> = (0..types.len()).map(|i| if i == 8 { Value::Int(5) } else { Value::Null }).collect();
        let back = decode_row(&bytes, &types, &defaults).unwrap();
        assert_eq!(&back[..8], &row[..]);
        assert_eq!(back[8], Value::Int(5));
        assert!(decode_row(&bytes[..bytes.len() - 1], &types, &defaults).is_err());
    }
}
