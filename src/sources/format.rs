//! File formats of sources: CSV options, Parquet and NDJSON, and explicit schemas.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::config::CsvOptions;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use indexmap::IndexMap;

use super::SourceDef;
use crate::config::{parse_sql_type, Compression, SourceFormat};

fn compression(c: Option<Compression>) -> CompressionTypeVariant {
    match c {
        None | Some(Compression::None) => CompressionTypeVariant::UNCOMPRESSED,
        Some(Compression::Gzip) => CompressionTypeVariant::GZIP,
        Some(Compression::Bzip2) => CompressionTypeVariant::BZIP2,
        Some(Compression::Xz) => CompressionTypeVariant::XZ,
        Some(Compression::Zstd) => CompressionTypeVariant::ZSTD,
    }
}

/// Guess compression from the location when it is not configured (`x.csv.gz`).
fn compression_of(def: &SourceDef) -> Option<Compression> {
    def.config.options.compression.or_else(|| {
        let l = def.location.to_ascii_lowercase();
        if l.ends_with(".gz") {
            Some(Compression::Gzip)
        } else if l.ends_with(".bz2") {
            Some(Compression::Bzip2)
        } else if l.ends_with(".xz") {
            Some(Compression::Xz)
        } else if l.ends_with(".zst") {
            Some(Compression::Zstd)
        } else {
            None
        }
    })
}

fn byte(value: &Option<String>) -> Option<u8> {
    value.as_ref().and_then(|v| v.bytes().next())
}

/// Listing options for a source. A folder is filtered by the format's extension (so a
/// published folder's `_SUCCESS` and manifest are skipped); a file or glob takes what it names.
pub fn listing_options(def: &SourceDef, is_folder: bool) -> ListingOptions {
    let o = &def.config.options;
    let comp = compression(compression_of(def));
    let suffix = match comp {
        CompressionTypeVariant::GZIP => ".gz",
        CompressionTypeVariant::BZIP2 => ".bz2",
        CompressionTypeVariant::XZ => ".xz",
        CompressionTypeVariant::ZSTD => ".zst",
        CompressionTypeVariant::UNCOMPRESSED => "",
    };
    let has_glob = def.location.contains(['*', '?', '[']);
    let extension = |ext: &str| {
        if is_folder && !has_glob {
            format!("{ext}{suffix}")
        } else {
            String::new()
        }
    };
    match def.format {
        SourceFormat::Csv => {
            let csv = CsvOptions {
                has_header: Some(o.header.unwrap_or(true)),
                delimiter: byte(&o.delimiter).unwrap_or(b','),
                quote: byte(&o.quote).unwrap_or(b'"'),
                escape: byte(&o.escape),
                comment: byte(&o.comment),
                compression: comp,
                newlines_in_values: o.newlines_in_values,
                null_regex: o.null.as_ref().map(|n| format!("^{}$", regex::escape(n))),
                schema_infer_max_rec: Some(10_000),
                ..Default::default()
            };
            let ext = if def.location.to_ascii_lowercase().contains(".tsv") {
                ".tsv"
            } else {
                ".csv"
            };
            ListingOptions::new(Arc::new(CsvFormat::default().with_options(csv)))
                .with_file_extension(extension(ext))
        }
        SourceFormat::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(extension(".parquet")),
        SourceFormat::Ndjson => ListingOptions::new(Arc::new(
            JsonFormat::default().with_file_compression_type(comp.into()),
        ))
        .with_file_extension(extension(".json")),
    }
}

pub fn explicit_schema(columns: &IndexMap<String, String>) -> Result<Schema, String> {
    let fields = columns
        .iter()
        .map(|(name, ty)| {
            parse_sql_type(ty)
                .map(|t| Field::new(name, t, true))
                .map_err(|e| format!("column `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schema::new(fields))
}
