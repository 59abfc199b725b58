//! Statement results as JSON, the form the HTTP API answers with and the SQL logic tests
//! compare (numbers as numbers, NUMERIC as exact strings, vectors in pgvector's text form,
//! timestamps in PostgreSQL's).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Value, json};

use crate::error::Result;
use crate::planner::StatementResult;
use crate::types::arrow_sql_name;

/// The JSON form of statement results.
pub fn results_json(results: &[StatementResult]) -> Result<Value> {
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        out.push(match r {
            StatementResult::Done { tag, rows_affected } => json!({"rows_affected": rows_affected, "tag": tag}),
            StatementResult::Rows { schema, batches, tag } => {
                let columns: Vec<Value> = schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": arrow_sql_name(f.data_type())}))
                    .collect();
                let mut rows = Vec::new();
                for b in batches {
                    let mut cols = Vec::with_capacity(b.num_columns());
                    for c in b.columns() {
                        cols.push(column_json(c.as_ref())?);
                    }
                    for i in 0..b.num_rows() {
                        rows.push(Value::Array(cols.iter().map(|c| c[i].clone()).collect()));
                    }
                }
                json!({"columns": columns, "rows": rows, "tag": tag})
            }
        });
    }
    Ok(json!({ "results": out }))
}

/// A float as JSON: a number, or "NaN" / "Infinity" / "-Infinity" (JSON has no such numbers).
pub fn float_json(f: f64) -> Value {
    if f.is_finite() {
        json!(f)
    } else if f.is_nan() {
        json!("NaN")
    } else if f > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// One column as JSON cells: numbers as numbers, NUMERIC as exact strings, bytea as `\x…`.
fn column_json(a: &dyn Array) -> Result<Vec<Value>> {
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    let opts = FormatOptions::default().with_null("");
    fn fmt<'x>(a: &'x dyn Array, opts: &'x FormatOptions<'x>) -> Result<ArrayFormatter<'x>> {
        Ok(ArrayFormatter::try_new(a, opts)?)
    }
    match a.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            for i in 0..n {
                out.push(crate::types::int_at(a, i).map_or(Value::Null, |v| json!(v)));
            }
        }
        DataType::UInt64 => {
            let p = a.as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for i in 0..n {
                out.push(if p.is_null(i) { Value::Null } else { json!(p.value(i)) });
            }
        }
        DataType::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            for i in 0..n {
                out.push(if p.is_null(i) { Value::Null } else { float_json(f64::from(p.value(i))) });
            }
        }
        DataType::Float64 => {
            let p = a.as_primitive::<Float64Type>();
            for i in 0..n {
                out.push(if p.is_null(i) { Value::Null } else { float_json(p.value(i)) });
            }
        }
        DataType::Boolean => {
            let b = a.as_boolean();
            for i in 0..n {
                out.push(if b.is_null(i) { Value::Null } else { json!(b.value(i)) });
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let f = fmt(a, &opts)?;
            for i in 0..n {
                out.push(if a.is_null(i) { Value::Null } else { json!(format!("\\x{}", f.value(i))) });
            }
        }
        DataType::FixedSizeList(f, _) if f.data_type() == &DataType::Float32 => {
            // pgvector's text form.
            let l = a.as_fixed_size_list();
            for i in 0..n {
                out.push(if l.is_null(i) {
                    Value::Null
                } else {
                    json!(quorumdb_vector::metric::format(l.value(i).as_primitive::<Float32Type>().values()))
                });
            }
        }
        DataType::List(f) if f.data_type() == &DataType::Float32 => {
            let l = a.as_list::<i32>();
            for i in 0..n {
                out.push(if l.is_null(i) {
                    Value::Null
                } else {
                    json!(quorumdb_vector::metric::format(l.value(i).as_primitive::<Float32Type>().values()))
                });
            }
        }
        DataType::FixedSizeList(_, _) | DataType::List(_) => {
            let f = fmt(a, &opts)?;
            for i in 0..n {
                out.push(if a.is_null(i) { Value::Null } else { json!(f.value(i).to_string().replace(' ', "")) });
            }
        }
        DataType::Timestamp(
            TimeUnit::Microsecond | TimeUnit::Nanosecond | TimeUnit::Millisecond | TimeUnit::Second,
            _,
        ) => {
            let f = fmt(a, &opts)?;
            for i in 0..n {
                out.push(if a.is_null(i) { Value::Null } else { json!(pg_timestamp(&f.value(i).to_string())) });
            }
        }
        _ => {
            let f = fmt(a, &opts)?;
            for i in 0..n {
                out.push(if a.is_null(i) { Value::Null } else { json!(f.value(i).to_string()) });
            }
        }
    }
    Ok(out)
}

/// `2024-01-02T03:04:05.120` → `2024-01-02 03:04:05.12` (PostgreSQL's text form).
fn pg_timestamp(s: &str) -> String {
    let mut t = s.replacen('T', " ", 1);
    if let Some(dot) = t.find('.') {
        let trimmed = t.trim_end_matches('0').trim_end_matches('.').len();
        t.truncate(trimmed.max(dot));
        if t.ends_with('.') {
            t.pop();
        }
    }
    t
}
