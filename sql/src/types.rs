//! SQL column types and values: how they are declared (sqlparser `DataType`), how they appear to
//! DataFusion (Arrow `DataType`), and the [`Value`] a cell holds in commands and encodings.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeListBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};

/// A column's declared type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal { precision: u8, scale: i8 },
    Text { max_len: Option<u64> },
    Bool,
    Timestamp,
    Date,
    Bytea,
    Json,
    Vector { dim: u32 },
}

impl ColumnType {
    /// Resolves a declared SQL type.
    pub fn from_sql(dt: &ast::DataType) -> Result<Self> {
        use ast::DataType as D;
        Ok(match dt {
            D::SmallInt(_) | D::Int2(_) => Self::Int16,
            D::Int(_) | D::Integer(_) | D::Int4(_) => Self::Int32,
            D::BigInt(_) | D::Int8(_) | D::Int64 => Self::Int64,
            D::Real | D::Float4 | D::Float32 => Self::Float32,
            D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 | D::Float(_) => Self::Float64,
            D::Numeric(info) | D::Decimal(info) | D::Dec(info) => {
                let (p, s) = match info {
                    ExactNumberInfo::None => (38, 10),
                    ExactNumberInfo::Precision(p) => (*p, 0),
                    ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
                };
                if !(1..=38).contains(&p) || s < 0 || s as u64 > p {
                    return Err(SqlError::InvalidDefinition(format!(
                        "NUMERIC precision {p}, scale {s}: precision must be 1..38 and scale 0..precision"
                    )));
                }
                Self::Decimal { precision: p as u8, scale: s as i8 }
            }
            D::Text | D::String(_) => Self::Text { max_len: None },
            D::Varchar(len) | D::CharacterVarying(len) | D::Char(len) | D::Character(len) => {
                Self::Text { max_len: char_len(len) }
            }
            D::Bool | D::Boolean => Self::Bool,
            D::Timestamp(_, _) | D::Datetime(_) => Self::Timestamp,
            D::Date => Self::Date,
            D::Bytea | D::Blob(_) | D::Varbinary(_) | D::Binary(_) => Self::Bytea,
            D::JSON | D::JSONB => Self::Json,
            D::Custom(name, args) if name.to_string().eq_ignore_ascii_case("vector") => {
                let dim = args
                    .first()
                    .and_then(|a| a.parse::<u32>().ok())
                    .ok_or_else(|| SqlError::InvalidDefinition("VECTOR needs a dimension, as in VECTOR(384)".into()))?;
                if !(1..=crate::limits::MAX_VECTOR_DIM).contains(&dim) {
                    return Err(SqlError::LimitExceeded(format!(
                        "VECTOR dimension {dim} is out of 1..{}",
                        crate::limits::MAX_VECTOR_DIM
                    )));
                }
                Self::Vector { dim }
            }
            D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("serial") => Self::Int32,
            D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("bigserial") => Self::Int64,
            other => return Err(SqlError::Unsupported(format!("column type {other}"))),
        })
    }

    pub fn arrow(&self) -> DataType {
        match self {
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Text { .. } | Self::Json => DataType::Utf8,
            Self::Bool => DataType::Boolean,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Date => DataType::Date32,
            Self::Bytea => DataType::Binary,
            Self::Vector { dim } => {
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), *dim as i32)
            }
        }
    }

    /// The PostgreSQL name of the type.
    pub fn sql_name(&self) -> String {
        match self {
            Self::Int16 => "smallint".into(),
            Self::Int32 => "integer".into(),
            Self::Int64 => "bigint".into(),
            Self::Float32 => "real".into(),
            Self::Float64 => "double precision".into(),
            Self::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            Self::Text { max_len: Some(n) } => format!("varchar({n})"),
            Self::Text { max_len: None } => "text".into(),
            Self::Bool => "boolean".into(),
            Self::Timestamp => "timestamp".into(),
            Self::Date => "date".into(),
            Self::Bytea => "bytea".into(),
            Self::Json => "json".into(),
            Self::Vector { dim } => format!("vector({dim})"),
        }
    }

    /// Whether values of this type may be part of a key (primary key or index).
    pub fn keyable(&self) -> bool {
        !matches!(self, Self::Vector { .. } | Self::Json)
    }
}

/// The PostgreSQL name of an Arrow type, for result columns that are not table columns.
pub fn arrow_sql_name(dt: &DataType) -> String {
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::FixedSizeList(_, n) => format!("vector({n})"),
        DataType::Null => "unknown".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn char_len(len: &Option<ast::CharacterLength>) -> Option<u64> {
    match len {
        Some(ast::CharacterLength::IntegerLength { length, .. }) => Some(*length),
        _ => None,
    }
}

/// One cell. Integer widths share `Int`, float widths `Float`; the column type says which.
/// `Decimal` is the unscaled value at the column's scale; `Timestamp` is µs since the epoch;
/// `Date` is days since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(i128),
    Text(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Timestamp(i64),
    Date(i32),
    Vector(Vec<f32>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

/// Reads row `i` of `array` (already cast to `ty`'s Arrow type) as a [`Value`].
pub fn value_at(array: &dyn Array, i: usize, ty: &ColumnType) -> Result<Value> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Int16 => Value::Int(i64::from(array.as_primitive::<Int16Type>().value(i))),
        ColumnType::Int32 => Value::Int(i64::from(array.as_primitive::<Int32Type>().value(i))),
        ColumnType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(i)),
        ColumnType::Float32 => Value::Float(f64::from(array.as_primitive::<Float32Type>().value(i))),
        ColumnType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(i)),
        ColumnType::Decimal { .. } => Value::Decimal(array.as_primitive::<Decimal128Type>().value(i)),
        ColumnType::Text { .. } | ColumnType::Json => Value::Text(array.as_string::<i32>().value(i).to_string()),
        ColumnType::Bool => Value::Bool(array.as_boolean().value(i)),
        ColumnType::Timestamp => Value::Timestamp(array.as_primitive::<TimestampMicrosecondType>().value(i)),
        ColumnType::Date => Value::Date(array.as_primitive::<Date32Type>().value(i)),
        ColumnType::Bytea => Value::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        ColumnType::Vector { .. } => {
            let list = array.as_fixed_size_list();
            let item = list.value(i);
            let floats = item.as_primitive::<Float32Type>();
            Value::Vector(floats.values().to_vec())
        }
    })
}

/// Reads an integer cell of any integer Arrow type (for hidden and system columns).
pub fn int_at(array: &dyn Array, i: usize) -> Option<i64> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Int8 => i64::from(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => i64::from(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => i64::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i),
        DataType::UInt8 => i64::from(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => i64::from(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => i64::from(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i) as i64,
        _ => return None,
    })
}

/// Builds one Arrow column of type `ty` from cells.
pub fn build_array<'a>(ty: &ColumnType, values: impl Iterator<Item = &'a Value>) -> Result<ArrayRef> {
    fn bad(ty: &ColumnType, v: &Value) -> SqlError {
        SqlError::Internal(format!("value {v:?} stored in a {} column", ty.sql_name()))
    }
    macro_rules! prim {
        ($builder:ty, $pat:pat => $e:expr) => {{
            let mut b = <$builder>::new();
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    $pat => b.append_value($e),
                    other => return Err(bad(ty, other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        ColumnType::Int16 => prim!(Int16Builder, Value::Int(x) => *x as i16),
        ColumnType::Int32 => prim!(Int32Builder, Value::Int(x) => *x as i32),
        ColumnType::Int64 => prim!(Int64Builder, Value::Int(x) => *x),
        ColumnType::Float32 => prim!(Float32Builder, Value::Float(x) => *x as f32),
        ColumnType::Float64 => prim!(Float64Builder, Value::Float(x) => *x),
        ColumnType::Decimal { precision, scale } => {
            let mut b = Decimal128Builder::new().with_precision_and_scale(*precision, *scale)?;
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Decimal(x) => b.append_value(*x),
                    other => return Err(bad(ty, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Text { .. } | ColumnType::Json => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Text(s) => b.append_value(s),
                    other => return Err(bad(ty, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bool => prim!(BooleanBuilder, Value::Bool(x) => *x),
        ColumnType::Timestamp => prim!(TimestampMicrosecondBuilder, Value::Timestamp(x) => *x),
        ColumnType::Date => prim!(Date32Builder, Value::Date(x) => *x),
        ColumnType::Bytea => {
            let mut b = BinaryBuilder::new();
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bytes(x) => b.append_value(x),
                    other => return Err(bad(ty, other)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Vector { dim } => {
            let mut b = FixedSizeListBuilder::new(Float32Builder::new(), *dim as i32).with_field(Arc::new(Field::new(
                "item",
                DataType::Float32,
                false,
            )));
            for v in values {
                match v {
                    Value::Null => {
                        for _ in 0..*dim {
                            b.values().append_value(0.0);
                        }
                        b.append(false);
                    }
                    Value::Vector(x) => {
                        b.values().append_slice(x);
                        b.append(true);
                    }
                    other => return Err(bad(ty, other)),
                }
            }
            Arc::new(b.finish())
        }
    })
}
