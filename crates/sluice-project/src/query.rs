//! Small queries sluice runs for itself (checks, increments, erasure, row counts): a
//! query's batches, its first column or first row as text, a count.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;

use crate::error::{describe_datafusion_error, Result, SluiceError};

/// Every batch a query returns.
pub(crate) async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    df.collect()
        .await
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))
}

/// Rows of the first column of a query as text.
pub(crate) async fn values(ctx: &SessionContext, sql: &str) -> Result<Vec<String>> {
    let batches = collect(ctx, sql).await?;
    let mut out = Vec::new();
    for b in batches {
        let col =
            cast(b.column(0), &DataType::Utf8).map_err(|e| SluiceError::sql(e.to_string()))?;
        let s = col.as_string::<i32>();
        for i in 0..s.len() {
            out.push(if s.is_null(i) {
                "NULL".to_string()
            } else {
                s.value(i).to_string()
            });
        }
    }
    Ok(out)
}

/// The first row of a query, each column as text.
pub(crate) async fn first_row(ctx: &SessionContext, sql: &str) -> Result<Vec<String>> {
    let batches = collect(ctx, sql).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(vec![]);
    };
    let mut out = Vec::with_capacity(b.num_columns());
    for col in b.columns() {
        let col = cast(col, &DataType::Utf8).map_err(|e| SluiceError::sql(e.to_string()))?;
        let s = col.as_string::<i32>();
        out.push(if s.is_null(0) {
            "NULL".to_string()
        } else {
            s.value(0).to_string()
        });
    }
    Ok(out)
}

/// The first column of the first row of a query as text; None for NULL or no rows.
pub(crate) async fn first_value(ctx: &SessionContext, sql: &str) -> Result<Option<String>> {
    let batches = collect(ctx, sql).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let col = cast(b.column(0), &DataType::Utf8).map_err(|e| SluiceError::sql(e.to_string()))?;
    let s = col.as_string::<i32>();
    Ok((!s.is_null(0)).then(|| s.value(0).to_string()))
}

/// The single number a `SELECT count(*) ...` query returns.
pub(crate) async fn count(ctx: &SessionContext, sql: &str) -> Result<u64> {
    let v = values(ctx, sql).await?;
    match v.first() {
        Some(n) => parse_count(n, sql),
        None => Err(SluiceError::sql(format!("`{sql}` returned no rows"))),
    }
}

pub(crate) fn parse_count(text: &str, sql: &str) -> Result<u64> {
    text.parse().map_err(|_| {
        SluiceError::sql(format!(
            "`{sql}` returned `{text}` where a row count was expected"
        ))
    })
}
