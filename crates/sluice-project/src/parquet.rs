//! How table models lay out their Parquet files: row groups, dictionaries, and which
//! columns are worth compressing.

use std::collections::HashSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::{ParquetColumnOptions, TableParquetOptions};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Rows per Parquet row group in outputs (DuckDB writes 122,880). The writer holds an open
/// row group in memory for every file it writes, one per partition value, and a delivery
/// row with three hex hashes is about 200 bytes: DataFusion's default of 1M rows held
/// 2.7 GB at peak on the 10M-row benchmark, 128K rows 1.7 GB, and the run was no slower.
pub const OUTPUT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Bytes a Parquet column's dictionary may grow to before the writer falls back to plain
/// encoding for the rest of the row group (DataFusion's default: 1 MiB). Every value is
/// interned while the dictionary lasts, and 1 MiB holds a whole 128K-row group of unique
/// BIGINTs, so ids and timestamps were dictionary-encoded to no gain: 8% of the 10M-row
/// pipeline's CPU time. 256 KiB still holds 32K distinct numbers or a few thousand short
/// strings, where a dictionary pays; the pipeline ran 11.3-12.8 s against 12.6-14.8 s.
pub const OUTPUT_DICTIONARY_BYTES: usize = 256 * 1024;

/// Functions whose results are hex digests (or UUIDs made from one): text that is
/// uniformly random over 16 symbols, so an LZ codec finds nothing to shorten.
const DIGEST_FUNCTIONS: [&str; 7] = [
    "sha256_hex",
    "hmac_sha256",
    "hash_pii",
    "sha2",
    "sha1",
    "md5",
    "shared_id",
];

/// The Parquet options of a model's output: `compression` for every column except digest
/// columns under an LZ-only codec, which are stored uncompressed. Snappy shortened the
/// three SHA-256 columns of benches/pipeline by 2.8% (1,866 MB uncompressed against 1,813
/// MB) at 12% of the run's CPU; codecs with an entropy stage (zstd, gzip, brotli) halve
/// hex, so they keep every column.
/// Digest columns also skip the dictionary and min/max statistics under every codec: their
/// values are unique and uniformly random, so a dictionary only fills up and is thrown
/// away in every row group, and min/max span the whole range and prune nothing.
///
/// `sample`, the first rows of the output, turns the dictionary off for every column whose
/// values are mostly distinct there: the writer interns each value until the dictionary is
/// full and then throws it away, in every row group. For the pipeline's two unique numeric
/// columns that was 0.8 s of the 1.25 s their writing took (9.2M rows).
pub fn output_options(
    compression: &str,
    plan: &LogicalPlan,
    sample: Option<&RecordBatch>,
) -> TableParquetOptions {
    let mut options = TableParquetOptions::default();
    options.global.compression = Some(compression.to_string());
    options.global.max_row_group_size = OUTPUT_ROW_GROUP_ROWS;
    options.global.dictionary_page_size_limit = OUTPUT_DICTIONARY_BYTES;
    for name in sample.map(mostly_distinct).unwrap_or_default() {
        let column = ParquetColumnOptions {
            dictionary_enabled: Some(false),
            ..Default::default()
        };
        options.column_specific_options.insert(name, column);
    }
    let lz = lz_only(compression);
    for name in digest_columns(plan) {
        let column = ParquetColumnOptions {
            compression: lz.then(|| "uncompressed".to_string()),
            dictionary_enabled: Some(false),
            statistics_enabled: Some("none".to_string()),
            ..Default::default()
        };
        options.column_specific_options.insert(name, column);
    }
    options
}

/// A sample smaller than this says little about a column's cardinality.
const SAMPLE_MIN_ROWS: usize = 1024;

/// Columns of `sample` (numbers, times, strings) of which more than half the values are
/// distinct.
fn mostly_distinct(sample: &RecordBatch) -> Vec<String> {
    let rows = sample.num_rows();
    if rows < SAMPLE_MIN_ROWS {
        return Vec::new();
    }
    sample
        .schema()
        .fields()
        .iter()
        .zip(sample.columns())
        .filter(|(_, column)| distinct_values(column.as_ref()).is_some_and(|n| n * 2 > rows))
        .map(|(field, _)| field.name().clone())
        .collect()
}

/// How many distinct non-null values `column` holds; None for types not sampled.
fn distinct_values(column: &dyn Array) -> Option<usize> {
    let valid = (0..column.len()).filter(|i| column.is_valid(*i));
    fn count<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> usize {
        values.collect::<HashSet<_>>().len()
    }
    Some(match column.data_type() {
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            count(valid.map(|i| a.value(i)))
        }
        DataType::LargeUtf8 => {
            let a = column.as_string::<i64>();
            count(valid.map(|i| a.value(i)))
        }
        DataType::Utf8View => {
            let a = column.as_string_view();
            count(valid.map(|i| a.value(i)))
        }
        t if t.is_primitive() => {
            // Fixed-width values: compare their bytes.
            let width = t.primitive_width()?;
            let data = column.to_data();
            let bytes = data.buffers().first()?.as_slice();
            let start = data.offset() * width;
            count(valid.map(|i| &bytes[start + i * width..start + (i + 1) * width]))
        }
        _ => return None,
    })
}

/// Codecs that only replace repeats (no entropy coding).
fn lz_only(compression: &str) -> bool {
    let codec = compression.trim().to_ascii_lowercase();
    matches!(codec.as_str(), "snappy" | "lz4" | "lz4_raw")
}

/// Output columns of `plan` computed by a digest function, followed through projections,
/// filters, sorts, limits, aliases and unions.
pub fn digest_columns(plan: &LogicalPlan) -> Vec<String> {
    plan.schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| is_digest(plan, *i))
        .map(|(_, field)| field.name().clone())
        .collect()
}

fn is_digest(plan: &LogicalPlan, index: usize) -> bool {
    match plan {
        LogicalPlan::Projection(p) => match p.expr.get(index).map(unalias) {
            Some(Expr::ScalarFunction(f)) => DIGEST_FUNCTIONS.contains(&f.func.name()),
            Some(Expr::Column(c)) => p
                .input
                .schema()
                .index_of_column(c)
                .is_ok_and(|i| is_digest(&p.input, i)),
            _ => false,
        },
        LogicalPlan::Union(u) => {
            !u.inputs.is_empty() && u.inputs.iter().all(|i| is_digest(i, index))
        }
        // Same columns as their input, in the same order.
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_) => plan
            .inputs()
            .first()
            .is_some_and(|input| is_digest(input, index)),
        _ => false,
    }
}

fn unalias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}
