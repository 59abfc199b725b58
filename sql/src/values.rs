//! Turning what SQL produces — literals, DataFusion result columns — into [`Value`]s of a
//! column's type, with PostgreSQL's errors for values that do not fit.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Float32Type};
use datafusion::arrow::util::display::FormatOptions;
use datafusion::sql::sqlparser::ast::{self, Expr, UnaryOperator};

use crate::error::{Result, SqlError};
use crate::types::{ColumnType, Value, value_at};

/// The text of a literal expression: `Some(None)` for NULL, `None` if `e` is not a literal.
pub fn literal_text(e: &Expr) -> Option<Option<String>> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(Some(n.to_string())),
            ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => Some(Some(s.clone())),
            ast::Value::Boolean(b) => Some(Some(b.to_string())),
            ast::Value::Null => Some(None),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match literal_text(expr)? {
            Some(t) if !t.starts_with('-') && t.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                Some(Some(format!("-{t}")))
            }
            _ => None,
        },
        Expr::Nested(inner) => literal_text(inner),
        _ => None,
    }
}

/// Converts literal texts to values of `ty` (for the fast paths that skip DataFusion).
pub fn coerce_texts(texts: &[Option<String>], ty: &ColumnType, column: &str) -> Result<Vec<Value>> {
    let array: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    coerce_array(&array, ty, column)
}

/// The vectors in a column of pgvector text (`'[1,2]'`), float lists or NULLs, each checked
/// (finite, and of dimension `dim` when given); `what` names the column or argument in errors.
pub fn vectors_of(array: &ArrayRef, dim: Option<usize>, what: &str) -> Result<Vec<Option<Vec<f32>>>> {
    let n = array.len();
    match array.data_type() {
        DataType::Null => Ok(vec![None; n]),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = cast_with_options(array, &DataType::Utf8, &CastOptions::default())?;
            let s = s.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if s.is_null(i) {
                        return Ok(None);
                    }
                    Ok(Some(quorumdb_vector::metric::parse(s.value(i), dim)?))
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let target =
                DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new("item", DataType::Float32, true)));
            let l = cast_with_options(array, &target, &CastOptions { safe: false, ..Default::default() })
                .map_err(|e| SqlError::InvalidValue(format!("invalid input for type vector ({what}): {e}")))?;
            let l = l.as_list::<i32>();
            (0..n)
                .map(|i| {
                    if l.is_null(i) {
                        return Ok(None);
                    }
                    let item = l.value(i);
                    let f = item.as_primitive::<Float32Type>();
                    if f.null_count() > 0 {
                        return Err(SqlError::InvalidValue("vectors cannot contain NULL".into()));
                    }
                    let v = f.values().to_vec();
                    quorumdb_vector::metric::validate(&v, dim)?;
                    Ok(Some(v))
                })
                .collect()
        }
        other => Err(SqlError::InvalidValue(format!("cannot use a {other} value as a vector ({what})"))),
    }
}

fn cast_error(e: datafusion::arrow::error::ArrowError, ty: &ColumnType, column: &str) -> SqlError {
    let m = e.to_string();
    // "Cannot cast string '40000' to value of Int16 type": a number that does not fit.
    let numeric_text = m.split('\'').nth(1).is_some_and(|t| {
        t.trim().parse::<f64>().is_ok()
            && matches!(
                ty,
                ColumnType::Int16
                    | ColumnType::Int32
                    | ColumnType::Int64
                    | ColumnType::Decimal { .. }
                    | ColumnType::Float32
            )
    });
    if numeric_text
        || m.contains("overflow")
        || m.contains("Overflow")
        || m.contains("Can't cast value")
        || m.contains("too large")
        || m.contains("is too large to store")
    {
        SqlError::NumericOutOfRange(format!("value out of range for type {} (column {column}): {m}", ty.sql_name()))
    } else {
        SqlError::InvalidValue(format!("invalid input for type {} (column {column}): {m}", ty.sql_name()))
    }
}

/// Converts a whole column to values of `ty`, enforcing lengths, JSON validity and vector
/// dimensions.
pub fn coerce_array(array: &ArrayRef, ty: &ColumnType, column: &str) -> Result<Vec<Value>> {
    let n = array.len();
    match ty {
        ColumnType::Bytea if matches!(array.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            // PostgreSQL's input forms: `\x0102ff` is hex; anything else is the bytes of the text.
            let s = cast_with_options(array, &DataType::Utf8, &CastOptions::default())?;
            let s = s.as_string::<i32>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if s.is_null(i) {
                    out.push(Value::Null);
                    continue;
                }
                let t = s.value(i);
                out.push(Value::Bytes(match t.strip_prefix("\\x") {
                    Some(hex) => decode_hex(hex).ok_or_else(|| {
                        SqlError::InvalidValue(format!("invalid hexadecimal data for type bytea (column {column})"))
                    })?,
                    None => t.as_bytes().to_vec(),
                }));
            }
            Ok(out)
        }
        ColumnType::Vector { dim } => Ok(vectors_of(array, Some(*dim as usize), &format!("column {column}"))?
            .into_iter()
            .map(|v| v.map_or(Value::Null, Value::Vector))
            .collect()),
        _ => {
            let opts = CastOptions { safe: false, format_options: FormatOptions::default() };
            let cast = cast_with_options(array, &ty.arrow(), &opts).map_err(|e| cast_error(e, ty, column))?;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let v = value_at(cast.as_ref(), i, ty)?;
                match (&v, ty) {
                    (Value::Text(s), ColumnType::Text { max_len: Some(max) }) if s.chars().count() as u64 > *max => {
                        return Err(SqlError::StringTooLong(*max));
                    }
                    (Value::Text(s), ColumnType::Json) if serde_json::from_str::<serde_json::Value>(s).is_err() => {
                        return Err(SqlError::InvalidValue(format!("invalid input syntax for type json: {s:?}")));
                    }
                    (Value::Float(f), ColumnType::Float32) if f.is_finite() && f.abs() > f64::from(f32::MAX) => {
                        return Err(SqlError::NumericOutOfRange(format!("value out of range: overflow ({column})")));
                    }
                    _ => {}
                }
                out.push(v);
            }
            Ok(out)
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
            Some(d(p[0])? * 16 + d(p[1])?)
        })
        .collect()
}
