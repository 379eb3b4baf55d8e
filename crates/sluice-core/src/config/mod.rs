//! `sluice.toml` as typed structs: loading, validation and error messages that name the
//! file, the line and the key.

mod sql_types;
pub mod units;
mod validate;

use validate::validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{Result, SluiceError};
pub use sql_types::{parse_sql_type, sql_type_name};

pub const CONFIG_FILE: &str = "sluice.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    #[serde(default)]
    pub project: ProjectSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub sources: IndexMap<String, SourceConfig>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretConfig>,
    /// PostgreSQL databases that sources read and models publish to.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub lineage: LineageSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageSection {
    pub openlineage: Option<OpenLineageConfig>,
}

/// Where `run` posts OpenLineage run events; OPENLINEAGE_URL, OPENLINEAGE_NAMESPACE and
/// OPENLINEAGE_API_KEY, as the OpenLineage clients read them, take precedence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLineageConfig {
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub api_key: Option<SecretConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    pub name: Option<String>,
    /// Where outputs, run results and history go: a path relative to the project, or s3://.
    pub target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub s3: Option<S3Config>,
}

/// Object store settings; every key falls back to the AWS_* environment. Credentials are
/// deliberately not accepted here.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
    /// Unsigned requests, for public buckets.
    pub skip_signature: Option<bool>,
    /// Seconds one request may take before it is retried (default 300).
    pub timeout_secs: Option<u64>,
}

/// The formats sluice reads (sources) and writes (model outputs, Parquet by default). A
/// Delta table is a folder of Parquet files and the log (`_delta_log/`) that says which of
/// them make each version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    #[default]
    Parquet,
    Ndjson,
    Delta,
    /// A table of a `[databases]` database (sources with `database = ...`, models with
    /// `format = "postgres"`).
    Postgres,
}

impl FileFormat {
    /// The extension of the files sluice writes in this format.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "json",
            FileFormat::Delta => "parquet",
            FileFormat::Postgres => "",
        }
    }

    /// The format of the data files themselves: a Delta table's are Parquet.
    pub fn data_files(self) -> FileFormat {
        match self {
            FileFormat::Delta => FileFormat::Parquet,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Delta => "delta",
            FileFormat::Postgres => "postgres",
        }
    }

    /// Guess the format from a location's extension (`.csv.gz` counts as CSV).
    pub fn from_location(location: &str) -> Option<FileFormat> {
        let lower = location.to_ascii_lowercase();
        let trimmed = ["gz", "bz2", "xz", "zst"]
            .iter()
            .find_map(|ext| lower.strip_suffix(&format!(".{ext}")))
            .unwrap_or(&lower);
        if trimmed.ends_with(".csv") || trimmed.ends_with(".tsv") {
            Some(FileFormat::Csv)
        } else if trimmed.ends_with(".parquet") {
            Some(FileFormat::Parquet)
        } else if trimmed.ends_with(".json")
            || trimmed.ends_with(".ndjson")
            || trimmed.ends_with(".jsonl")
        {
            Some(FileFormat::Ndjson)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    pub delimiter: Option<String>,
    pub header: Option<bool>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub comment: Option<String>,
    /// The text that stands for NULL (CSV), e.g. "" or "NA".
    pub null: Option<String>,
    pub compression: Option<Compression>,
    /// Let quoted CSV values span lines.
    pub newlines_in_values: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A file, folder, glob or s3:// URL; empty for a database source.
    #[serde(default)]
    pub location: String,
    /// A database of `[databases]`, read with `table` or `query`.
    pub database: Option<String>,
    /// `schema.table` (or `table`, in `public`) of the database.
    pub table: Option<String>,
    /// A SELECT run by the database; its rows are the source.
    pub query: Option<String>,
    /// Columns holding personal data: published models may carry them only hashed.
    #[serde(default)]
    pub personal: Vec<String>,
    pub format: Option<FileFormat>,
    #[serde(default)]
    pub options: SourceOptions,
    /// Column name -> SQL type; when given, nothing is inferred.
    pub schema: Option<IndexMap<String, String>>,
    pub description: Option<String>,
    /// Settings for this source's bucket when it lives in another store than [storage.s3].
    pub s3: Option<S3Config>,
    /// Hold the source in memory after its first read (re-read when its files change);
    /// unset: the shell and the server hold small sources.
    pub cache: Option<bool>,
    /// Delta tables: read this version instead of the latest.
    pub version: Option<i64>,
    /// Delta tables: read the version current at this time (RFC 3339, or a date).
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    #[default]
    Text,
    Hex,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    pub env: Option<String>,
    pub file: Option<String>,
    #[serde(default)]
    pub encoding: SecretEncoding,
}

/// A PostgreSQL database: its `postgres://` URL, which may hold a password, so it comes
/// from the environment or a file, never from sluice.toml itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default)]
    pub users: BTreeMap<String, ServerUser>,
    pub listen: Option<String>,
    pub http: Option<String>,
    pub flight: Option<String>,
    pub max_connections: Option<usize>,
    pub max_concurrent_queries: Option<usize>,
    pub statement_timeout: Option<String>,
    pub query_memory_limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerUser {
    pub password: SecretConfig,
    /// May read personal columns unhashed.
    #[serde(default)]
    pub personal: bool,
}

impl ProjectConfig {
    /// The sources' personal columns, as `source.column`.
    pub fn personal_columns(&self) -> impl Iterator<Item = String> + '_ {
        self.sources
            .iter()
            .flat_map(|(name, s)| s.personal.iter().map(move |c| format!("{name}.{c}")))
    }
}

/// A loaded project: its folder and its validated configuration.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    /// The sluice.toml that was read, when there is one.
    pub config_file: Option<PathBuf>,
    pub config: ProjectConfig,
}

impl Project {
    /// Load `DIR/sluice.toml`; a folder without one is an empty project (the shell still works).
    pub fn load(dir: &Path) -> Result<Project> {
        if !dir.is_dir() {
            return Err(SluiceError::Usage(format!(
                "project folder {} does not exist",
                dir.display()
            )));
        }
        let path = dir.join(CONFIG_FILE);
        if !path.exists() {
            return Ok(Project {
                root: dir.to_path_buf(),
                config_file: None,
                config: ProjectConfig::default(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| SluiceError::io(&path, e))?;
        let config = parse_config(&path, &text)?;
        Ok(Project {
            root: dir.to_path_buf(),
            config_file: Some(path),
            config,
        })
    }

    pub fn name(&self) -> String {
        self.config.project.name.clone().unwrap_or_else(|| {
            self.root
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "sluice".to_string())
        })
    }

    /// The target location: an s3:// URL as given, or a path resolved against the project.
    pub fn target(&self) -> String {
        let target = self.config.project.target.as_deref().unwrap_or("target");
        if target.contains("://") {
            target.to_string()
        } else {
            self.root.join(target).to_string_lossy().into_owned()
        }
    }

    /// The local folder for run records (run_results.json, history, staging): the target
    /// itself when it is local, else `target/` in the project.
    pub fn records_dir(&self) -> PathBuf {
        let target = self.target();
        if target.contains("://") {
            self.root.join("target")
        } else {
            PathBuf::from(target)
        }
    }

    /// Resolve a source location relative to the project folder (URLs are kept as given).
    pub fn resolve_location(&self, location: &str) -> String {
        if location.contains("://") || Path::new(location).is_absolute() {
            location.to_string()
        } else {
            self.root.join(location).to_string_lossy().into_owned()
        }
    }

    /// Variables from `[vars]` as text, for `${name}` substitution.
    pub fn vars(&self) -> BTreeMap<String, String> {
        self.config
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), var_text(v)))
            .collect()
    }

    fn file_for_errors(&self) -> PathBuf {
        self.config_file
            .clone()
            .unwrap_or_else(|| self.root.join(CONFIG_FILE))
    }

    /// Read a secret's value. The value is never part of an error message.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>> {
        let secret = self.config.secrets.get(name).ok_or_else(|| {
            SluiceError::sql(format!(
                "unknown secret `{name}`: add it under [secrets] in {}",
                self.file_for_errors().display()
            ))
        })?;
        read_secret(name, secret, &self.root)
    }
}

/// A `[vars]` value as `${name}` substitutes it: strings as written, others in TOML form.
pub fn var_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Read a secret from the environment or a file, decoding hex when asked.
pub fn read_secret(name: &str, secret: &SecretConfig, root: &Path) -> Result<Vec<u8>> {
    let raw = if let Some(var) = &secret.env {
        std::env::var(var).map_err(|_| {
            SluiceError::sql(format!(
                "secret `{name}`: environment variable {var} is not set"
            ))
        })?
    } else if let Some(file) = &secret.file {
        let path = root.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            SluiceError::sql(format!(
                "secret `{name}`: cannot read {}: {e}",
                path.display()
            ))
        })?
    } else {
        return Err(SluiceError::sql(format!(
            "secret `{name}` has neither `env` nor `file`"
        )));
    };
    let value = raw.trim_end_matches(['\n', '\r']);
    match secret.encoding {
        SecretEncoding::Text => Ok(value.as_bytes().to_vec()),
        SecretEncoding::Hex => hex::decode(value.trim()).map_err(|_| {
            SluiceError::sql(format!(
                "secret `{name}` is declared as hex but is not valid hex"
            ))
        }),
    }
}

/// Parse and validate the text of a sluice.toml.
pub fn parse_config(path: &Path, text: &str) -> Result<ProjectConfig> {
    let config: ProjectConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    validate(path, text, &config)?;
    Ok(config)
}

/// A TOML file's parse error at its line and key.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> SluiceError {
    let (line, key) = match e.span() {
        Some(span) => locate_key(text, span.start),
        None => (None, None),
    };
    SluiceError::Config {
        file: path.to_path_buf(),
        line,
        key,
        message: e.message().trim().to_string(),
    }
}

/// Find the line of a byte offset and the dotted key written there (`sources.events.format`).
fn locate_key(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let mut table = String::new();
    for line in text[..offset].lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    if line.starts_with('[') {
        let header = line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
        return (Some(line_no), Some(header));
    }
    let key = line.split('=').next().unwrap_or("").trim().to_string();
    let full = match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    };
    (Some(line_no), (!full.is_empty()).then_some(full))
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Substitute `${name}` in `text` with `vars`; an unknown variable is an error naming it and
/// saying where to set it. A `${` without its `}` stays as it is.
pub fn substitute_vars(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "unknown variable ${{{name}}}; set it in [vars] or with --var {name}=..."
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProjectConfig> {
        parse_config(Path::new("sluice.toml"), text)
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
[project]
name = "launch_delivery"
target = "out"
[storage.s3]
region = "ap-northeast-2"
endpoint = "http://127.0.0.1:9000"
allow_http = true
[sources.events]
location = "data/events/*.csv"
format = "csv"
options = { delimiter = ",", header = true, null = "" }
schema = { event_id = "BIGINT", user_id = "VARCHAR", ts = "TIMESTAMP" }
[sources.accounts]
location = "s3://raw/accounts/"
format = "parquet"
[secrets]
pii_key = { env = "SLUICE_PII_KEY" }
[vars]
launch_date = "2026-05-01"
"#,
        )
        .unwrap();
        assert_eq!(c.sources.len(), 2);
        let keys: Vec<_> = c.sources["events"]
            .schema
            .as_ref()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["event_id", "user_id", "ts"]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("[sources.events]\nlocaton = \"x.csv\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("sluice.toml:2: key `sources.events.locaton`: unknown field `locaton`"),
            "{msg}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_value_names_key() {
        let e = parse("[sources.events]\nlocation = \"x.csv\"\nformat = \"xls\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("sluice.toml:3: key `sources.events.format`: unknown variant `xls`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_schema_type_names_column() {
        let e = parse("[sources.e]\nlocation = \"x.csv\"\nschema = { ts = \"TIMESTMP\" }\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("key `sources.e.schema.ts`: unknown SQL type `TIMESTMP`"),
            "{e}"
        );
    }

    #[test]
    fn format_guessed_or_required() {
        assert!(parse("[sources.e]\nlocation = \"x.csv.gz\"\n").is_ok());
        let e = parse("[sources.e]\nlocation = \"data/\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("key `sources.e.format`: cannot tell the format"),
            "{e}"
        );
    }
}
