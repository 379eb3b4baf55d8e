//! A written Parquet file as the log's `add` action: its partition values from its path,
//! its statistics from its footer.
//!
//! Statistics hold values only for the columns allowed to (personal data never reaches the
//! log), and only where the footer's are exact: row count and null counts always; minimum
//! and maximum for integers, floating point numbers, dates, and strings of up to 32
//! characters. Other types get null counts alone, which readers take as "unknown range".

use std::sync::Arc;

use datafusion::parquet::basic::{ConvertedType, LogicalType};
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::statistics::Statistics;
use deltalake::kernel::Add;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Map, Value};

use crate::Result;

/// Longest string whose bounds the statistics keep (Delta's own writers cut at 32).
const MAX_STRING_STAT: usize = 32;

pub(crate) async fn add_action(
    store: &Arc<dyn ObjectStore>,
    root: &ObjectPath,
    path: &str,
    bytes: u64,
    partition_by: &[String],
    stats_columns: &[String],
) -> Result<Add> {
    let location = ObjectPath::from(
        format!("{}/{}", root.as_ref(), crate::percent_decode(path)).trim_start_matches('/'),
    );
    let metadata = footer(store, &location, bytes)
        .await
        .map_err(|e| format!("{path}: cannot read the Parquet footer: {e}"))?;
    let stats = file_stats(&metadata, stats_columns);
    Ok(Add {
        path: path.to_string(),
        partition_values: crate::partition_values(path, partition_by),
        size: bytes as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats.to_string()),
        ..Default::default()
    })
}

/// A Parquet file's metadata: its last 8 bytes give the footer's length and magic.
async fn footer(
    store: &Arc<dyn ObjectStore>,
    location: &ObjectPath,
    size: u64,
) -> std::result::Result<ParquetMetaData, String> {
    if size < 12 {
        return Err(format!("{size} bytes is too short for a Parquet file"));
    }
    let tail = store
        .get_range(location, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..8] != b"PAR1" {
        return Err("not a Parquet file (no PAR1 at the end)".into());
    }
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if length + 8 > size {
        return Err(format!("footer of {length} bytes in a file of {size}"));
    }
    let bytes = store
        .get_range(location, size - 8 - length..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    ParquetMetaDataReader::decode_metadata(&bytes).map_err(|e| e.to_string())
}

/// The statistics JSON of one Parquet file, with values for `columns` only.
pub fn file_stats(metadata: &ParquetMetaData, columns: &[String]) -> Value {
    let rows: i64 = metadata.row_groups().iter().map(|g| g.num_rows()).sum();
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();
    let schema = metadata.file_metadata().schema_descr();
    for (i, column) in schema.columns().iter().enumerate() {
        // Top-level columns only: nested fields would need nested statistics objects.
        let parts = column.path().parts();
        if parts.len() != 1 || !columns.iter().any(|c| c == &parts[0]) {
            continue;
        }
        let name = parts[0].clone();
        let chunks: Vec<(u64, Option<&Statistics>)> = metadata
            .row_groups()
            .iter()
            .map(|g| (g.num_rows().max(0) as u64, g.column(i).statistics()))
            .collect();
        let nulls: Option<u64> = chunks
            .iter()
            .map(|(_, s)| s.and_then(|s| s.null_count_opt()))
            .sum();
        let Some(nulls) = nulls else { continue };
        null_count.insert(name.clone(), json!(nulls));
        let kind = ValueKind::of(column.logical_type_ref(), column.converted_type());
        let bounds: Option<Vec<(Value, Value)>> = chunks
            .iter()
            // Row groups of nulls only have no bounds and do not widen the range.
            .filter(|(rows, s)| s.and_then(|s| s.null_count_opt()) != Some(*rows))
            .map(|(_, s)| s.and_then(|s| bounds(s, kind)))
            .collect();
        if let Some(bounds) = bounds.filter(|b| !b.is_empty()) {
            let min = bounds.iter().map(|(lo, _)| lo).min_by(|a, b| compare(a, b));
            let max = bounds.iter().map(|(_, hi)| hi).max_by(|a, b| compare(a, b));
            if let (Some(min), Some(max)) = (min, max) {
                min_values.insert(name.clone(), min.clone());
                max_values.insert(name, max.clone());
            }
        }
    }
    json!({
        "numRecords": rows,
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Number,
    Date,
    String,
    /// Timestamps, decimals, booleans, binary: null counts only.
    Other,
}

impl ValueKind {
    fn of(logical: Option<&LogicalType>, converted: ConvertedType) -> ValueKind {
        match logical {
            Some(LogicalType::Date) => ValueKind::Date,
            Some(LogicalType::String) => ValueKind::String,
            Some(LogicalType::Integer { .. }) => ValueKind::Number,
            Some(_) => ValueKind::Other,
            None => match converted {
                ConvertedType::NONE => ValueKind::Number,
                ConvertedType::UTF8 => ValueKind::String,
                ConvertedType::DATE => ValueKind::Date,
                _ => ValueKind::Other,
            },
        }
    }
}

/// One chunk's exact bounds as log values.
fn bounds(stats: &Statistics, kind: ValueKind) -> Option<(Value, Value)> {
    if !stats.min_is_exact() || !stats.max_is_exact() {
        return None;
    }
    match (stats, kind) {
        (Statistics::Int32(s), ValueKind::Number) => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Int64(s), ValueKind::Number) => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Int32(s), ValueKind::Date) => {
            Some((date(*s.min_opt()?)?, date(*s.max_opt()?)?))
        }
        (Statistics::Float(s), ValueKind::Number) => {
            finite(f64::from(*s.min_opt()?), f64::from(*s.max_opt()?))
        }
        (Statistics::Double(s), ValueKind::Number) => finite(*s.min_opt()?, *s.max_opt()?),
        (Statistics::ByteArray(s), ValueKind::String) => {
            let min = std::str::from_utf8(s.min_opt()?.data()).ok()?;
            let max = std::str::from_utf8(s.max_opt()?.data()).ok()?;
            (min.chars().count() <= MAX_STRING_STAT && max.chars().count() <= MAX_STRING_STAT)
                .then(|| (json!(min), json!(max)))
        }
        _ => None,
    }
}

fn finite(min: f64, max: f64) -> Option<(Value, Value)> {
    (min.is_finite() && max.is_finite()).then(|| (json!(min), json!(max)))
}

fn date(days: i32) -> Option<Value> {
    let day = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)?;
    Some(json!(day.format("%Y-%m-%d").to_string()))
}

/// Order of two values of one column (numbers, or strings, which ISO dates are too).
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x
                .as_f64()
                .unwrap_or(f64::NAN)
                .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => std::cmp::Ordering::Equal,
    }
}
