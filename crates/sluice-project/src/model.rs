//! Model files: `models/**/NAME.sql`, one SELECT optionally preceded by a `/* @config ... */`
//! TOML block. Errors name the model file, the line and the key.

use crate::config::FileFormat;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::checks::{parse_column_check, parse_table_check, Check};
use crate::diagnostic::{error_position, snippet, without_parser_position, Position};
use crate::error::{describe_datafusion_error, Result, SluiceError};
use datafusion::error::DataFusionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    #[default]
    View,
    Table,
    Incremental,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    /// A source or model holding the keys to erase.
    pub list: String,
    /// The key column, named the same in the model and in the list.
    pub column: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    description: Option<String>,
    /// Personal data: a Delta output keeps this column's values out of its log.
    #[serde(default)]
    pii: bool,
    #[serde(default)]
    checks: Vec<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    materialized: Option<Materialized>,
    format: Option<FileFormat>,
    location: Option<String>,
    database: Option<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    compression: Option<String>,
    #[serde(default)]
    unique_key: Vec<String>,
    watermark: Option<String>,
    description: Option<String>,
    erasure: Option<Erasure>,
    #[serde(default)]
    allow_personal: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    columns: IndexMap<String, RawColumn>,
    #[serde(default)]
    checks: Vec<toml::Value>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub file: PathBuf,
    /// Path relative to models/, for folder selection.
    pub relative: String,
    /// The SQL after the config block (variables not yet substituted).
    pub sql: String,
    /// Where `sql` starts in the file, so errors point at the file's own lines.
    pub sql_start: Position,
    pub materialized: Materialized,
    pub format: FileFormat,
    pub location: Option<String>,
    /// `format = "postgres"`: the `[databases]` entry the output table lives in.
    pub database: Option<String>,
    pub partition_by: Vec<String>,
    /// Parquet compression codec as DataFusion spells it, e.g. `snappy` or `zstd(3)`.
    pub compression: String,
    pub unique_key: Vec<String>,
    /// Incremental models: only rows above the published maximum of this column are added.
    pub watermark: Option<String>,
    pub description: Option<String>,
    pub erasure: Option<Erasure>,
    /// Output columns that may carry personal data unhashed (a delivery that must).
    pub allow_personal: Vec<String>,
    pub tags: Vec<String>,
    pub column_descriptions: IndexMap<String, String>,
    /// Columns marked `pii = true`.
    pub pii_columns: Vec<String>,
    pub checks: Vec<Check>,
}

impl Model {
    /// An error about this model, naming it and its file.
    pub fn error(&self, message: impl Into<String>) -> SluiceError {
        SluiceError::Model {
            model: self.name.clone(),
            file: self.file.clone(),
            message: message.into(),
            at: None,
        }
    }

    /// An error at a position of the model's SQL (`sql`, or a text that starts with
    /// `shift` lines of sluice's own before it), reported at that place in the file.
    pub fn error_at(
        &self,
        in_sql: Position,
        shift: usize,
        message: impl Into<String>,
    ) -> SluiceError {
        let Some(line) = in_sql.line.checked_sub(shift).filter(|l| *l > 0) else {
            return self.error(message);
        };
        let at = Position {
            line: self.sql_start.line + line - 1,
            column: if line == 1 {
                self.sql_start.column + in_sql.column - 1
            } else {
                in_sql.column
            },
        };
        let snippet = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|text| snippet(&text, at));
        SluiceError::Model {
            model: self.name.clone(),
            file: self.file.clone(),
            message: message.into(),
            at: Some((at, snippet)),
        }
    }

    /// A DataFusion error about the model's SQL, at the place it points to when it does.
    pub fn datafusion_error(&self, e: &DataFusionError, shift: usize) -> SluiceError {
        let message = without_parser_position(&describe_datafusion_error(e));
        match error_position(e) {
            Some(at) => self.error_at(at, shift, message),
            None => self.error(message),
        }
    }
}

/// Every `models/**/*.sql` of a project, sorted by path.
pub fn discover(root: &Path) -> Result<Vec<Model>> {
    let dir = root.join("models");
    let mut files = Vec::new();
    collect(&dir, &mut files)?;
    files.sort();
    let mut models: Vec<Model> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| SluiceError::io(&file, e))?;
        let relative = file
            .strip_prefix(&dir)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        let model = parse_model(&file, &relative, &text)?;
        if let Some(other) = models.iter().find(|m| m.name == model.name) {
            return Err(SluiceError::Config {
                file: file.clone(),
                line: None,
                key: None,
                message: format!(
                    "model `{}` is also defined in {}",
                    model.name,
                    other.file.display()
                ),
            });
        }
        models.push(model);
    }
    Ok(models)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| SluiceError::io(dir, e))? {
        let path = entry.map_err(|e| SluiceError::io(dir, e))?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().map(|e| e == "sql").unwrap_or(false) {
            out.push(path);
        }
    }
    Ok(())
}

/// Split a model file into its config block (with the line it starts on) and its SQL
/// (with the byte offset it starts at).
fn split_header(text: &str) -> (Option<(String, usize)>, String, usize) {
    let trimmed = text.trim_start();
    let skipped = text.len() - trimmed.len();
    if let Some(rest) = trimmed.strip_prefix("/* @config") {
        if let Some(end) = rest.find("*/") {
            let body = &rest[..end];
            let first_line = text[..skipped].matches('\n').count() + 1;
            let sql = rest[end + 2..].to_string();
            let offset = text.len() - sql.len();
            return (Some((body.to_string(), first_line)), sql, offset);
        }
    }
    (None, text.to_string(), 0)
}

/// The line and column of a byte offset of `text`.
fn position_of(text: &str, offset: usize) -> Position {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map(|n| n + 1).unwrap_or(0);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

pub fn parse_model(file: &Path, relative: &str, text: &str) -> Result<Model> {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config_error =
        |line: Option<usize>, key: Option<String>, message: String| SluiceError::Config {
            file: file.to_path_buf(),
            line,
            key,
            message,
        };
    if !crate::config::is_identifier(&name) {
        return Err(config_error(
            None,
            None,
            format!("model name `{name}` must be a SQL identifier (letters, digits, _)"),
        ));
    }
    let (header, sql, sql_offset) = split_header(text);
    let raw: RawConfig = match &header {
        Some((body, first_line)) => toml::from_str(body).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => {
                    let line_in_body = body[..span.start.min(body.len())].matches('\n').count();
                    let line_text = body.lines().nth(line_in_body).unwrap_or("");
                    let key = line_text
                        .split('=')
                        .next()
                        .map(|k| k.trim().to_string())
                        .filter(|k| !k.is_empty());
                    (Some(first_line + line_in_body), key)
                }
                None => (None, None),
            };
            config_error(line, key, e.message().trim().to_string())
        })?,
        None => RawConfig::default(),
    };
    let line_of = |needle: &str| {
        header.as_ref().and_then(|(body, first)| {
            body.lines()
                .position(|l| l.contains(needle))
                .map(|i| first + i)
        })
    };
    let mut checks = Vec::new();
    let mut column_descriptions = IndexMap::new();
    let pii_columns = raw
        .columns
        .iter()
        .filter(|(_, c)| c.pii)
        .map(|(name, _)| name.clone())
        .collect();
    for (column, c) in &raw.columns {
        if let Some(d) = &c.description {
            column_descriptions.insert(column.clone(), d.clone());
        }
        for value in &c.checks {
            checks.push(parse_column_check(column, value).map_err(|m| {
                config_error(
                    line_of(&format!("[columns.{column}]")),
                    Some(format!("columns.{column}.checks")),
                    m,
                )
            })?);
        }
    }
    for value in &raw.checks {
        checks.push(
            parse_table_check(value)
                .map_err(|m| config_error(line_of("[[checks]]"), Some("checks".into()), m))?,
        );
    }
    let materialized = raw.materialized.unwrap_or_default();
    if materialized == Materialized::Incremental
        && raw.unique_key.is_empty()
        && raw.watermark.is_none()
    {
        return Err(config_error(
            line_of("materialized"),
            Some("materialized".into()),
            "an incremental model needs `watermark = \"column\"` (add rows above the published maximum) or `unique_key = [...]` (replace rows with the same key)".into(),
        ));
    }
    if materialized == Materialized::View && (raw.watermark.is_some() || raw.location.is_some()) {
        let key = if raw.watermark.is_some() {
            "watermark"
        } else {
            "location"
        };
        return Err(config_error(
            line_of(key),
            Some(key.into()),
            format!(
                "`{key}` needs materialized = \"table\" or \"incremental\"; a view is not written"
            ),
        ));
    }
    let format = raw.format.unwrap_or_default();
    if (format == FileFormat::Postgres) != raw.database.is_some() {
        let key = if raw.database.is_some() {
            "database"
        } else {
            "format"
        };
        return Err(config_error(
            line_of(key),
            Some(key.into()),
            "a database output needs both format = \"postgres\" and database = \"NAME\" (a [databases] entry)".into(),
        ));
    }
    if format == FileFormat::Postgres {
        if let Some(location) = &raw.location {
            sluice_postgres::TableName::parse(location)
                .map_err(|m| config_error(line_of("location"), Some("location".into()), m))?;
        }
        if !raw.partition_by.is_empty() {
            return Err(config_error(
                line_of("partition_by"),
                Some("partition_by".into()),
                "`partition_by` applies to file outputs; a database table is not partitioned by sluice".into(),
            ));
        }
    }
    if raw.compression.is_some() && format != FileFormat::Parquet {
        return Err(config_error(
            line_of("compression"),
            Some("compression".into()),
            "`compression` applies to parquet outputs only".into(),
        ));
    }
    let compression = raw
        .compression
        .unwrap_or_else(|| DEFAULT_COMPRESSION.to_string())
        .to_ascii_lowercase();
    if !valid_compression(&compression) {
        return Err(config_error(
            line_of("compression"),
            Some("compression".into()),
            format!("unknown parquet compression `{compression}`: expected one of uncompressed, snappy, lz4_raw, gzip(0-9), brotli(0-11), zstd(1-22)"),
        ));
    }
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(config_error(
            None,
            None,
            "the model has no SQL; write one SELECT after the config block".into(),
        ));
    }
    Ok(Model {
        name,
        file: file.to_path_buf(),
        relative: relative.to_string(),
        sql: sql.trim().trim_end_matches(';').trim().to_string(),
        sql_start: position_of(text, sql_offset + (sql.len() - sql.trim_start().len())),
        materialized,
        format,
        location: raw.location,
        database: raw.database,
        partition_by: raw.partition_by,
        compression,
        unique_key: raw.unique_key,
        watermark: raw.watermark,
        description: raw.description,
        erasure: raw.erasure,
        allow_personal: raw.allow_personal,
        tags: raw.tags,
        column_descriptions,
        pii_columns,
        checks,
    })
}

/// Parquet outputs default to snappy, as Spark's and DuckDB's do: cheaper to write than
/// DataFusion's own default, zstd(3), at about twice the size (the pipeline's 10M rows as a
/// COPY: 16.8-19.5 s for 1.8 GB against 21.6-22.4 s for 0.9 GB).
pub const DEFAULT_COMPRESSION: &str = "snappy";

fn valid_compression(text: &str) -> bool {
    let level = |name: &str, levels: std::ops::RangeInclusive<u32>| {
        text.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| levels.contains(&n))
    };
    matches!(
        text,
        "uncompressed" | "snappy" | "lz4_raw" | "gzip" | "brotli" | "zstd"
    ) || level("gzip", 0..=9)
        || level("brotli", 0..=11)
        || level("zstd", 1..=22)
}

/// Substitute `${name}` in the model's SQL; an unknown variable is an error naming it.
pub fn substitute(
    model: &Model,
    vars: &std::collections::BTreeMap<String, String>,
) -> Result<String> {
    crate::config::substitute_vars(&model.sql, vars).map_err(|e| model.error(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_block_and_errors() {
        let m = parse_model(
            Path::new("models/a.sql"),
            "a.sql",
            "/* @config\nmaterialized = \"table\"\npartition_by = [\"country\"]\n[columns.id]\nchecks = [\"not_null\", \"unique\"]\n*/\nSELECT 1 AS id;\n",
        )
        .unwrap();
        assert_eq!(m.materialized, Materialized::Table);
        assert_eq!(m.checks.len(), 2);
        assert_eq!(m.sql, "SELECT 1 AS id");
        let e = parse_model(
            Path::new("models/a.sql"),
            "a.sql",
            "/* @config\nmaterialized = \"table\"\nformatt = \"csv\"\n*/\nSELECT 1",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "models/a.sql:3: key `formatt`: unknown field `formatt`, expected one of `materialized`, `format`, `location`, `database`, `partition_by`, `compression`, `unique_key`, `watermark`, `description`, `erasure`, `allow_personal`, `tags`, `columns`, `checks`");
        let e = parse_model(
            Path::new("models/a.sql"),
            "a.sql",
            "/* @config\n[columns.id]\nchecks = [\"not_nul\"]\n*/\nSELECT 1",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("models/a.sql:2: key `columns.id.checks`: unknown check `not_nul`"),
            "{e}"
        );
    }

    #[test]
    fn parquet_compression() {
        let model = |config: &str| {
            parse_model(
                Path::new("models/a.sql"),
                "a.sql",
                &format!("/* @config\nmaterialized = \"table\"\n{config}\n*/\nSELECT 1"),
            )
        };
        assert_eq!(model("").unwrap().compression, "snappy");
        assert_eq!(
            model("compression = \"ZSTD(3)\"").unwrap().compression,
            "zstd(3)"
        );
        assert_eq!(
            model("compression = \"uncompressed\"").unwrap().compression,
            "uncompressed"
        );
        assert_eq!(
            model("compression = \"zstd(0)\"").unwrap_err().to_string(),
            "models/a.sql:3: key `compression`: unknown parquet compression `zstd(0)`: expected one of uncompressed, snappy, lz4_raw, gzip(0-9), brotli(0-11), zstd(1-22)"
        );
        assert_eq!(
            model("format = \"csv\"\ncompression = \"snappy\"")
                .unwrap_err()
                .to_string(),
            "models/a.sql:4: key `compression`: `compression` applies to parquet outputs only"
        );
    }
}
