//! The checks a sluice.toml passes after it parses: names, formats, locations, secrets
//! and databases that exist, each error naming the file, line and key.

use std::path::Path;

use super::*;

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// A database source names a known database and exactly one of `table` and `query`.
fn validate_database_source(
    name: &str,
    database: &str,
    source: &SourceConfig,
    config: &ProjectConfig,
) -> std::result::Result<(), (String, String)> {
    if !config.databases.contains_key(database) {
        return Err((
            format!("sources.{name}.database"),
            format!("unknown database `{database}`: add [databases.{database}] with url = {{ env = \"VAR\" }}"),
        ));
    }
    if source.table.is_some() == source.query.is_some() {
        return Err((
            format!("sources.{name}.table"),
            "a database source needs exactly one of table = \"schema.table\" or query = \"SELECT ...\"".into(),
        ));
    }
    let file_only = [
        ("location", !source.location.is_empty()),
        ("format", source.format.is_some()),
        ("schema", source.schema.is_some()),
        ("s3", source.s3.is_some()),
        ("version", source.version.is_some()),
        ("timestamp", source.timestamp.is_some()),
    ];
    if let Some((key, _)) = file_only.iter().find(|(_, set)| *set) {
        return Err((
            format!("sources.{name}.{key}"),
            format!("`{key}` does not apply to a database source"),
        ));
    }
    Ok(())
}

pub(super) fn validate(path: &Path, text: &str, config: &ProjectConfig) -> Result<()> {
    let err = |key: String, message: String| {
        let last = key.rsplit('.').next().unwrap_or(&key).to_string();
        SluiceError::Config {
            file: path.to_path_buf(),
            line: line_of(text, &format!("[{key}]"))
                .or_else(|| line_of(text, &format!("{last} ="))),
            key: Some(key),
            message,
        }
    };
    for (name, source) in &config.sources {
        if !is_identifier(name) {
            return Err(err(
                format!("sources.{name}"),
                "a source name must be a SQL identifier (letters, digits, _)".into(),
            ));
        }
        if let Some(database) = &source.database {
            validate_database_source(name, database, source, config).map_err(|(k, m)| err(k, m))?;
            continue;
        }
        if source.table.is_some() || source.query.is_some() {
            let key = if source.table.is_some() {
                "table"
            } else {
                "query"
            };
            return Err(err(
                format!("sources.{name}.{key}"),
                format!("`{key}` reads a database: add database = \"NAME\" (a [databases] entry)"),
            ));
        }
        if source.location.trim().is_empty() {
            return Err(err(
                format!("sources.{name}.location"),
                "expected a file, folder, glob or s3:// URL, found an empty string".into(),
            ));
        }
        let format = source
            .format
            .or_else(|| FileFormat::from_location(&source.location));
        let Some(format) = format else {
            return Err(err(
                format!("sources.{name}.format"),
                format!(
                    "cannot tell the format of `{}`; set format = \"csv\", \"parquet\" or \"ndjson\"",
                    source.location
                ),
            ));
        };
        let o = &source.options;
        for (key, value) in [
            ("delimiter", &o.delimiter),
            ("quote", &o.quote),
            ("escape", &o.escape),
            ("comment", &o.comment),
        ] {
            if let Some(v) = value {
                if v.len() != 1 {
                    return Err(err(
                        format!("sources.{name}.options.{key}"),
                        format!("expected a single ASCII character, found {v:?}"),
                    ));
                }
            }
        }
        if format != FileFormat::Csv {
            let csv_only = [
                ("delimiter", o.delimiter.is_some()),
                ("header", o.header.is_some()),
                ("quote", o.quote.is_some()),
                ("escape", o.escape.is_some()),
                ("comment", o.comment.is_some()),
                ("null", o.null.is_some()),
                ("newlines_in_values", o.newlines_in_values.is_some()),
            ];
            if let Some((key, _)) = csv_only.iter().find(|(_, set)| *set) {
                return Err(err(
                    format!("sources.{name}.options.{key}"),
                    format!(
                        "`{key}` only applies to csv sources, this one is {}",
                        format.name()
                    ),
                ));
            }
        }
        if let Some(schema) = &source.schema {
            for (column, ty) in schema {
                parse_sql_type(ty)
                    .map_err(|m| err(format!("sources.{name}.schema.{column}"), m))?;
            }
        }
    }
    for (name, secret) in &config.secrets {
        if secret.env.is_some() == secret.file.is_some() {
            return Err(err(
                format!("secrets.{name}"),
                "expected exactly one of { env = \"VAR\" } or { file = \"path\" }".into(),
            ));
        }
    }
    for (name, database) in &config.databases {
        if !is_identifier(name) {
            return Err(err(
                format!("databases.{name}"),
                "a database name must be a SQL identifier (letters, digits, _)".into(),
            ));
        }
        if database.url.env.is_some() == database.url.file.is_some() {
            return Err(err(
                format!("databases.{name}.url"),
                "expected exactly one of { env = \"VAR\" } or { file = \"path\" }: the URL may hold a password".into(),
            ));
        }
    }
    for (name, user) in &config.server.users {
        if user.password.env.is_some() == user.password.file.is_some() {
            return Err(err(
                format!("server.users.{name}.password"),
                "expected exactly one of { env = \"VAR\" } or { file = \"path\" }".into(),
            ));
        }
    }
    Ok(())
}
