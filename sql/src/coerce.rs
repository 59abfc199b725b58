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

/// Arrow says "this value does not fit the type" only in a cast error's text; these fragments
/// mean out of range (PostgreSQL's 22003) rather than invalid input (22P02). One table, each
/// entry with a test (`tests::each_out_of_range_pattern_is_arrows_own`).
const OUT_OF_RANGE_PATTERNS: &[&str] = &["Can't cast value", "too large to store"];

fn is_integer_or_decimal(ty: &ColumnType) -> bool {
    matches!(ty, ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 | ColumnType::Decimal { .. })
}

fn cast_error(e: datafusion::arrow::error::ArrowError, ty: &ColumnType, column: &str) -> SqlError {
    let m = e.to_string();
    // "Cannot cast string '40000' to value of Int16 type": a number that does not fit.
    let numeric_text = (is_integer_or_decimal(ty) || matches!(ty, ColumnType::Float32))
        && m.split('\'').nth(1).is_some_and(|t| t.trim().parse::<f64>().is_ok());
    let out_of_range = matches!(e, datafusion::arrow::error::ArrowError::ArithmeticOverflow(_))
        || numeric_text
        || OUT_OF_RANGE_PATTERNS.iter().any(|p| m.contains(p));
    if out_of_range {
        SqlError::NumericOutOfRange(format!("value out of range for type {} (column {column}): {e}", ty.sql_name()))
    } else {
        SqlError::InvalidValue(format!("invalid input for type {} (column {column}): {e}", ty.sql_name()))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};

    use super::*;

    fn code_of(array: ArrayRef, ty: ColumnType) -> &'static str {
        coerce_array(&array, &ty, "c").expect_err("the value must not fit").sqlstate()
    }

    /// Every pattern of the table matches the text of an error Arrow really gives for a value
    /// that does not fit, and each such error is 22003; text that is not a number is 22P02.
    #[test]
    fn each_out_of_range_pattern_is_arrows_own() {
        let cases: Vec<(ArrayRef, ColumnType)> = vec![
            (Arc::new(Int64Array::from(vec![40_000])), ColumnType::Int16),
            (Arc::new(Float64Array::from(vec![12_345.678])), ColumnType::Decimal { precision: 5, scale: 2 }),
            (Arc::new(Float64Array::from(vec![1e20])), ColumnType::Int32),
            (Arc::new(StringArray::from(vec!["40000"])), ColumnType::Int16),
            (Arc::new(StringArray::from(vec!["99999999"])), ColumnType::Decimal { precision: 5, scale: 2 }),
        ];
        let mut used = vec![false; OUT_OF_RANGE_PATTERNS.len()];
        for (array, ty) in cases {
            let opts = CastOptions { safe: false, ..Default::default() };
            let m = cast_with_options(&array, &ty.arrow(), &opts).expect_err("does not fit").to_string();
            for (i, p) in OUT_OF_RANGE_PATTERNS.iter().enumerate() {
                used[i] |= m.contains(p);
            }
            assert_eq!(code_of(array, ty.clone()), "22003", "{ty:?}: {m}");
        }
        for (i, used) in used.iter().enumerate() {
            assert!(used, "no Arrow error matches the pattern {:?}", OUT_OF_RANGE_PATTERNS[i]);
        }
        assert_eq!(code_of(Arc::new(StringArray::from(vec!["abc"])), ColumnType::Int32), "22P02");
    }
}
