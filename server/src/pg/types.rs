//! PostgreSQL types of our Arrow columns: the OID a column is described with, its cells encoded
//! in text or binary format, and parameters decoded from either format into the values the SQL
//! engine binds.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::temporal_conversions::{
    date32_to_datetime, timestamp_ms_to_datetime, timestamp_ns_to_datetime, timestamp_s_to_datetime,
    timestamp_us_to_datetime,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions as ArrowFormat};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use serde_json::{Value, json};

/// The PostgreSQL type a column of `dt` is described and encoded as. Vectors travel in
/// pgvector's text form as `text` (pgvector's own type has no fixed OID).
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Boolean => Type::BOOL,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        _ => Type::TEXT,
    }
}

/// Describes `schema`'s columns, each in the format the client asked for.
pub fn fields(schema: &Schema, format: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fmt = format.map_or(FieldFormat::Text, |x| x.format_for(i));
            FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), fmt)
        })
        .collect()
}

fn encode_error(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(e.to_string().into())
}

/// Encodes every row of `batch` as `DataRow`s.
pub fn encode_batch(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>, out: &mut Vec<PgWireResult<DataRow>>) {
    let mut enc = DataRowEncoder::new(fields.clone());
    let opts = FormatOptions::default();
    let display = ArrowFormat::default().with_null("");
    let formatters: Vec<Option<ArrayFormatter<'_>>> =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &display).ok()).collect();
    for row in 0..batch.num_rows() {
        let mut result = Ok(());
        for (col, array) in batch.columns().iter().enumerate() {
            let f = &fields[col];
            result =
                encode_cell(&mut enc, array.as_ref(), row, f.datatype(), f.format(), &opts, formatters[col].as_ref());
            if result.is_err() {
                break;
            }
        }
        out.push(result.map(|()| enc.take_row()));
    }
}

fn encode_cell(
    enc: &mut DataRowEncoder,
    a: &dyn Array,
    i: usize,
    ty: &Type,
    fmt: FieldFormat,
    opts: &FormatOptions,
    display: Option<&ArrayFormatter<'_>>,
) -> PgWireResult<()> {
    macro_rules! put {
        ($v:expr) => {
            enc.encode_field_with_type_and_format(&$v, ty, fmt, opts)
        };
    }
    if a.is_null(i) {
        return put!(None::<i32>);
    }
    match a.data_type() {
        DataType::Int8 => put!(i16::from(a.as_primitive::<Int8Type>().value(i))),
        DataType::Int16 => put!(a.as_primitive::<Int16Type>().value(i)),
        DataType::UInt8 => put!(i16::from(a.as_primitive::<UInt8Type>().value(i))),
        DataType::Int32 => put!(a.as_primitive::<Int32Type>().value(i)),
        DataType::UInt16 => put!(i32::from(a.as_primitive::<UInt16Type>().value(i))),
        DataType::Int64 => put!(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt32 => put!(i64::from(a.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => {
            let v = a.as_primitive::<UInt64Type>().value(i);
            put!(i64::try_from(v).map_err(encode_error)?)
        }
        DataType::Float32 => put!(a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => put!(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => put!(a.as_boolean().value(i)),
        DataType::Utf8 => put!(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => put!(a.as_string::<i64>().value(i)),
        DataType::Utf8View => put!(a.as_string_view().value(i)),
        DataType::Binary => put!(a.as_binary::<i32>().value(i)),
        DataType::LargeBinary => put!(a.as_binary::<i64>().value(i)),
        DataType::Date32 => {
            let d =
                date32_to_datetime(a.as_primitive::<Date32Type>().value(i)).ok_or_else(|| encode_error("bad date"))?;
            put!(d.date())
        }
        DataType::Timestamp(unit, tz) => {
            let t = match unit {
                TimeUnit::Second => timestamp_s_to_datetime(a.as_primitive::<TimestampSecondType>().value(i)),
                TimeUnit::Millisecond => {
                    timestamp_ms_to_datetime(a.as_primitive::<TimestampMillisecondType>().value(i))
                }
                TimeUnit::Microsecond => {
                    timestamp_us_to_datetime(a.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                TimeUnit::Nanosecond => timestamp_ns_to_datetime(a.as_primitive::<TimestampNanosecondType>().value(i)),
            }
            .ok_or_else(|| encode_error("timestamp out of range"))?;
            match (fmt, tz.is_some()) {
                (FieldFormat::Binary, true) => put!(t.and_utc()),
                (FieldFormat::Binary, false) => put!(t),
                (FieldFormat::Text, true) => put!(format!("{}+00", timestamp_text(&t))),
                (FieldFormat::Text, false) => put!(timestamp_text(&t)),
            }
        }
        DataType::Decimal128(_, scale) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            if fmt == FieldFormat::Binary {
                let d = rust_decimal::Decimal::try_from_i128_with_scale(v, u32::try_from(*scale).unwrap_or(0))
                    .map_err(|e| encode_error(format!("numeric too large for binary format: {e}")))?;
                put!(d)
            } else {
                put!(display.map(|d| d.value(i).to_string()).unwrap_or_default())
            }
        }
        DataType::FixedSizeList(f, _) if f.data_type() == &DataType::Float32 => {
            let l = a.as_fixed_size_list();
            put!(quorumdb_vector::metric::format(l.value(i).as_primitive::<Float32Type>().values()))
        }
        DataType::List(f) if f.data_type() == &DataType::Float32 => {
            let l = a.as_list::<i32>();
            put!(quorumdb_vector::metric::format(l.value(i).as_primitive::<Float32Type>().values()))
        }
        _ => {
            put!(display.map(|d| d.value(i).to_string()).unwrap_or_default())
        }
    }
}

/// PostgreSQL's text form of a timestamp: fractional seconds without trailing zeros.
fn timestamp_text(t: &chrono::NaiveDateTime) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// The type of parameter `i`: the client's, else the one inferred from the statement, else text.
pub fn param_type(client: &[Option<Type>], inferred: &[Option<DataType>], i: usize) -> Type {
    client
        .get(i)
        .cloned()
        .flatten()
        .filter(|t| *t != Type::UNKNOWN)
        .or_else(|| inferred.get(i).cloned().flatten().map(|dt| pg_type(&dt)))
        .unwrap_or(Type::TEXT)
}

fn bad_param(i: usize, e: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".to_owned(),
        "22P02".to_owned(),
        format!("parameter ${}: {e}", i + 1),
    )))
}

/// Decodes the bound parameters into the values the engine binds: numbers and booleans as
/// JSON numbers/booleans, everything else as text the column type parses.
pub fn decode_params(params: &[Option<Bytes>], format: &Format, types: &[Type]) -> PgWireResult<Vec<Value>> {
    let mut out = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let Some(raw) = p else {
            out.push(Value::Null);
            continue;
        };
        let ty = types.get(i).cloned().unwrap_or(Type::TEXT);
        out.push(if format.is_binary(i) {
            binary_param(raw, &ty).map_err(|e| bad_param(i, e))?
        } else {
            text_param(raw, &ty).map_err(|e| bad_param(i, e))?
        });
    }
    Ok(out)
}

fn text_param(raw: &[u8], ty: &Type) -> Result<Value, String> {
    let s = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => {
            json!(s.trim().parse::<i64>().map_err(|_| format!("invalid input syntax for type {}: \"{s}\"", ty.name()))?)
        }
        Type::FLOAT4 | Type::FLOAT8 => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => json!(f),
            Ok(_) => json!(s.trim()),
            Err(_) => return Err(format!("invalid input syntax for type {}: \"{s}\"", ty.name())),
        },
        Type::BOOL => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" | "y" => json!(true),
            "f" | "false" | "no" | "off" | "0" | "n" => json!(false),
            _ => return Err(format!("invalid input syntax for type boolean: \"{s}\"")),
        },
        _ => json!(s),
    })
}

fn binary_param(raw: &[u8], ty: &Type) -> Result<Value, String> {
    use postgres_types::FromSql;
    fn get<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, String> {
        T::from_sql(ty, raw).map_err(|e| e.to_string())
    }
    Ok(match *ty {
        Type::INT2 => json!(get::<i16>(ty, raw)?),
        Type::INT4 => json!(get::<i32>(ty, raw)?),
        Type::INT8 => json!(get::<i64>(ty, raw)?),
        Type::FLOAT4 | Type::FLOAT8 => {
            let f = if *ty == Type::FLOAT4 { f64::from(get::<f32>(ty, raw)?) } else { get::<f64>(ty, raw)? };
            quorumdb_sql::json::float_json(f)
        }
        Type::BOOL => json!(get::<bool>(ty, raw)?),
        Type::BYTEA => {
            let b = get::<Vec<u8>>(ty, raw)?;
            json!(format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
        }
        Type::DATE => json!(get::<chrono::NaiveDate>(ty, raw)?.to_string()),
        Type::TIMESTAMP => json!(get::<chrono::NaiveDateTime>(ty, raw)?.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        Type::TIMESTAMPTZ => {
            json!(get::<chrono::DateTime<chrono::Utc>>(ty, raw)?.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
        }
        Type::NUMERIC => json!(get::<rust_decimal::Decimal>(ty, raw)?.to_string()),
        Type::JSON | Type::JSONB => json!(get::<serde_json::Value>(ty, raw)?.to_string()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => json!(get::<String>(ty, raw)?),
        _ => return Err(format!("binary parameters of type {} are not supported; send it as text", ty.name())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_params_become_typed_values() {
        assert_eq!(text_param(b"42", &Type::INT8).unwrap(), json!(42));
        assert_eq!(text_param(b"2.5", &Type::FLOAT8).unwrap(), json!(2.5));
        assert_eq!(text_param(b"NaN", &Type::FLOAT8).unwrap(), json!("NaN"));
        assert_eq!(text_param(b"t", &Type::BOOL).unwrap(), json!(true));
        assert_eq!(text_param(b"it's", &Type::TEXT).unwrap(), json!("it's"));
        assert!(text_param(b"4x", &Type::INT4).unwrap_err().contains("invalid input syntax for type int4"));
        assert!(text_param(b"maybe", &Type::BOOL).is_err());
    }

    #[test]
    fn binary_params_decode() {
        assert_eq!(binary_param(&7i32.to_be_bytes(), &Type::INT4).unwrap(), json!(7));
        assert_eq!(binary_param(&(-3i64).to_be_bytes(), &Type::INT8).unwrap(), json!(-3));
        assert_eq!(binary_param(&1.5f64.to_be_bytes(), &Type::FLOAT8).unwrap(), json!(1.5));
        assert_eq!(binary_param(&[1], &Type::BOOL).unwrap(), json!(true));
        assert_eq!(binary_param(&[0xde, 0xad], &Type::BYTEA).unwrap(), json!("\\xdead"));
        assert!(binary_param(&[1, 2], &Type::INT4).is_err());
    }
}
