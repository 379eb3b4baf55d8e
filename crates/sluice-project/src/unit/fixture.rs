//! Fixtures as tables: TOML rows, CSV files or SQL, typed by the real input's schema so a
//! fixture names only the columns it cares about (the rest are NULL).

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{cast, lit, Expr};

/// TOML rows as one batch. A column's type comes from its values: integers BIGINT, floats
/// DOUBLE (integers among them too), booleans BOOLEAN, TOML dates DATE and local date-times
/// TIMESTAMP, anything else text; a row that leaves a column out has NULL there.
pub fn rows_batch(rows: &[toml::Table]) -> Result<RecordBatch, String> {
    let mut columns: Vec<(String, DataType)> = Vec::new();
    for row in rows {
        for (name, value) in row {
            let t = value_type(name, value)?;
            match columns.iter_mut().find(|(n, _)| n == name) {
                Some((_, have)) if *have == t => {}
                Some((_, have)) if numeric(have) && numeric(&t) => *have = DataType::Float64,
                Some((_, have)) => *have = DataType::Utf8,
                None => columns.push((name.clone(), t)),
            }
        }
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, t) in columns {
        let values = rows
            .iter()
            .map(|row| match row.get(&name) {
                Some(v) => scalar(v)
                    .cast_to(&t)
                    .map_err(|e| format!("column `{name}`: {e}")),
                None => ScalarValue::try_from(&t).map_err(|e| e.to_string()),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let array = if values.is_empty() {
            new_null_array(&t, 0)
        } else {
            ScalarValue::iter_to_array(values).map_err(|e| format!("column `{name}`: {e}"))?
        };
        fields.push(Field::new(name, t, true));
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
        .map_err(|e| e.to_string())
}

fn numeric(t: &DataType) -> bool {
    matches!(t, DataType::Int64 | DataType::Float64)
}

fn value_type(name: &str, v: &toml::Value) -> Result<DataType, String> {
    Ok(match v {
        toml::Value::Integer(_) => DataType::Int64,
        toml::Value::Float(_) => DataType::Float64,
        toml::Value::Boolean(_) => DataType::Boolean,
        toml::Value::Datetime(d) => match (d.date, d.time, d.offset) {
            (Some(_), Some(_), None) => DataType::Timestamp(TimeUnit::Microsecond, None),
            (Some(_), None, None) => DataType::Date32,
            _ => DataType::Utf8,
        },
        toml::Value::String(_) => DataType::Utf8,
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(format!(
                "column `{name}`: arrays and tables are not fixture values; write the value as a string"
            ))
        }
    })
}

fn scalar(v: &toml::Value) -> ScalarValue {
    match v {
        toml::Value::Integer(i) => ScalarValue::Int64(Some(*i)),
        toml::Value::Float(f) => ScalarValue::Float64(Some(*f)),
        toml::Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        toml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => ScalarValue::Utf8(Some(other.to_string())),
    }
}

/// `df` with the columns of `schema`, in its order and types: the fixture's values cast,
/// the columns it leaves out NULL. When `schema` is `exact`, a column it does not have is
/// an error naming it, `what` and the columns there are; otherwise (a declared source
/// schema, without the folder's partition columns) such a column is kept as given.
pub fn conform(
    df: DataFrame,
    schema: &Schema,
    exact: bool,
    what: &str,
) -> Result<DataFrame, String> {
    let have: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut extra = Vec::new();
    for name in &have {
        if schema.field_with_name(name).is_err() && !exact {
            extra.push(Expr::Column(Column::new_unqualified(name)));
        } else if schema.field_with_name(name).is_err() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let hint = crate::diagnostic::did_you_mean_hint(name, names.iter().copied());
            return Err(format!(
                "{what} has no column `{name}`{hint} (its columns: {})",
                names.join(", ")
            ));
        }
    }
    let mut exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let value = if have.contains(f.name()) {
                Expr::Column(Column::new_unqualified(f.name()))
            } else {
                lit(ScalarValue::Null)
            };
            cast(value, f.data_type().clone()).alias(f.name())
        })
        .collect();
    exprs.extend(extra);
    df.select(exprs).map_err(|e| e.strip_backtrace())
}
