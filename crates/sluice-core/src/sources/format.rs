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
use crate::config::{parse_sql_type, Compression, FileFormat};

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

/// The extensions a folder of a format's files may use, the first being the usual one.
fn extensions(format: FileFormat) -> &'static [&'static str] {
    match format {
        FileFormat::Csv => &[".csv", ".tsv"],
        FileFormat::Parquet | FileFormat::Delta => &[".parquet"],
        FileFormat::Ndjson => &[".json", ".ndjson", ".jsonl"],
        FileFormat::Postgres => &[],
    }
}

const COMPRESSIONS: [(&str, Option<Compression>); 5] = [
    ("", None),
    (".gz", Some(Compression::Gzip)),
    (".bz2", Some(Compression::Bzip2)),
    (".xz", Some(Compression::Xz)),
    (".zst", Some(Compression::Zstd)),
];

/// The extension and compression a folder's data files use (`.ndjson`, `.jsonl.gz`, ...),
/// decided from their names (sluice's own `_` and hidden files aside). None when no file
/// has a suffix of the format; an error when the folder mixes two, which one listing
/// cannot read.
pub fn folder_suffix(
    format: FileFormat,
    names: &[&str],
) -> Result<Option<(&'static str, Option<Compression>)>, String> {
    let mut found: Vec<(&'static str, Option<Compression>, &'static str)> = Vec::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with('_') || lower.starts_with('.') {
            continue;
        }
        let Some((comp_suffix, comp)) = COMPRESSIONS
            .iter()
            .rev()
            .find(|(suffix, _)| lower.ends_with(suffix))
        else {
            continue;
        };
        let stem = &lower[..lower.len() - comp_suffix.len()];
        if let Some(ext) = extensions(format).iter().find(|e| stem.ends_with(**e)) {
            if !found.iter().any(|(e, c, _)| e == ext && c == comp) {
                found.push((ext, *comp, comp_suffix));
            }
        }
    }
    let rank = |ext: &str| extensions(format).iter().position(|e| *e == ext);
    found.sort_by_key(|(ext, _, suffix)| (rank(ext), *suffix));
    match found.as_slice() {
        [] => Ok(None),
        [(ext, comp, _)] => Ok(Some((ext, *comp))),
        several => Err(format!(
            "the folder mixes {} files; one source reads one kind, so use a glob such as `*{}`",
            several
                .iter()
                .map(|(e, _, c)| format!("{e}{c}"))
                .collect::<Vec<_>>()
                .join(" and "),
            several[0].0
        )),
    }
}

/// A glob that lists a folder's data files without sluice's own `_` and hidden files, when
/// some of those end like data files (`_sluice.json` in an NDJSON folder); else None.
pub fn skip_own_files(names: &[&str], detected: (&str, Option<Compression>)) -> Option<String> {
    let (ext, comp) = detected;
    let suffix = COMPRESSIONS
        .iter()
        .find(|(_, c)| *c == comp)
        .map(|(s, _)| *s)
        .unwrap_or("");
    let ending = format!("{ext}{suffix}");
    names
        .iter()
        .any(|n| {
            (n.starts_with('_') || n.starts_with('.')) && n.to_ascii_lowercase().ends_with(&ending)
        })
        .then(|| format!("**/[!_.]*{ending}"))
}

/// Listing options for a source. A folder is filtered by the format's extension (so a
/// published folder's `_SUCCESS` and manifest are skipped); a file or glob takes what it names.
/// `detected` is a folder's extension and compression when its files were looked at.
pub fn listing_options(
    def: &SourceDef,
    is_folder: bool,
    detected: Option<(&str, Option<Compression>)>,
) -> ListingOptions {
    let o = &def.config.options;
    let comp = compression(match detected {
        Some((_, comp)) if def.config.options.compression.is_none() => comp,
        _ => compression_of(def),
    });
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
            format!("{}{suffix}", detected.map(|(e, _)| e).unwrap_or(ext))
        } else {
            String::new()
        }
    };
    match def.format {
        FileFormat::Csv => {
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
        // A Delta table's data files, read without the log (a run's staged files). Database
        // tables are never listed (see `sources::postgres`).
        FileFormat::Parquet | FileFormat::Delta | FileFormat::Postgres => {
            ListingOptions::new(Arc::new(parquet_format()))
                .with_file_extension(extension(".parquet"))
        }
        FileFormat::Ndjson => ListingOptions::new(Arc::new(
            JsonFormat::default().with_file_compression_type(comp.into()),
        ))
        .with_file_extension(extension(".json")),
    }
}

/// How sources read Parquet: strings as plain Utf8, as the session's own Parquet reads
/// do (see the session builder: DataFusion's string functions are far slower on views).
pub fn parquet_format() -> ParquetFormat {
    ParquetFormat::default().with_force_view_types(false)
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
