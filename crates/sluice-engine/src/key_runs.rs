//! What both dedup operators share: the first row of each key run (the sorted path, and
//! the hash path's spilling fallback) and the bound their statistics give.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{take_record_batch, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::common::{Result, Statistics};
use datafusion::physical_expr::PhysicalExpr;

/// The first row of each key run of `batch`, except a run continuing the previous batch's
/// last one. `previous` holds the last row's keys, carried to the next batch.
pub(crate) fn first_rows(
    batch: &RecordBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    previous: &mut Option<Vec<ArrayRef>>,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(None);
    }
    let key_columns = keys
        .iter()
        .map(|k| k.evaluate(batch)?.into_array(rows))
        .collect::<Result<Vec<_>>>()?;
    let mut starts: Vec<u32> = partition(&key_columns)?
        .ranges()
        .iter()
        .map(|r| r.start as u32)
        .collect();
    if let Some(last) = previous.as_ref() {
        if same_key(last, &key_columns)? {
            starts.remove(0);
        }
    }
    *previous = Some(key_columns.iter().map(|c| c.slice(rows - 1, 1)).collect());
    if starts.is_empty() {
        return Ok(None);
    }
    let kept = take_record_batch(batch, &UInt32Array::from(starts))?;
    Ok(Some(with_row_number_one(&kept, schema)?))
}

/// The kept rows with the window's `rn` column appended: row number 1 for each.
pub(crate) fn with_row_number_one(
    kept: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    let mut columns = kept.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from_value(1, kept.num_rows())));
    RecordBatch::try_new(schema.clone(), columns)
}

/// Whether the one-row `last` keys equal the first row of `next` (NULLs equal, as window
/// partitions treat them).
fn same_key(last: &[ArrayRef], next: &[ArrayRef]) -> Result<bool> {
    for (a, b) in last.iter().zip(next) {
        let compare = datafusion::arrow::array::make_comparator(
            a.as_ref(),
            b.as_ref(),
            SortOptions::default(),
        )?;
        if compare(0, 0) != Ordering::Equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A dedup keeps at most its input's rows: the input's row count and size as upper bounds,
/// so that join selection can still tell a deduplicated fact table from a small dimension.
pub(crate) fn at_most_input(
    input: &[Arc<Statistics>],
    schema: &SchemaRef,
) -> Result<Arc<Statistics>> {
    let mut stats = Statistics::new_unknown(schema);
    if let Some(input) = input.first() {
        stats.num_rows = input.num_rows.to_inexact();
        stats.total_byte_size = input.total_byte_size.to_inexact();
    }
    Ok(Arc::new(stats))
}
