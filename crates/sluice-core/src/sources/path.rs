//! Querying files by path or URL: `SELECT * FROM 'data/x.parquet'`,
//! `FROM 's3://bucket/prefix/*.csv'`. A path is opened like a source (globs, folders, hive
//! partitions, object stores), with the format taken from its extension.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{TableProvider, UrlTableFactory};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use futures::StreamExt;

use super::{open_source, SessionStateLock, SourceDef};
use crate::config::{FileFormat, SourceConfig, SourceOptions};

#[derive(Debug, Default)]
pub struct PathTableFactory {
    state: OnceLock<Weak<SessionStateLock>>,
}

impl PathTableFactory {
    pub fn attach(&self, state: Weak<SessionStateLock>) {
        let _ = self.state.set(state);
    }
}

/// Only names that look like paths or URLs are tried as files.
fn looks_like_path(name: &str) -> bool {
    name.contains('/') || name.contains("://") || FileFormat::from_location(name).is_some()
}

/// The format of a local folder's data files (a published output, a dataset folder).
fn format_of_folder(dir: &std::path::Path) -> Option<FileFormat> {
    if dir.join("_delta_log").is_dir() {
        return Some(FileFormat::Delta);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let found = if path.is_dir() {
            format_of_folder(&path)
        } else {
            FileFormat::from_location(&name)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The format of the first data file under an object store prefix.
async fn format_of_prefix(state: &SessionState, location: &str) -> DFResult<Option<FileFormat>> {
    let prefix = if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    };
    let failed = |e: &(dyn std::error::Error + 'static)| {
        DataFusionError::Plan(format!(
            "'{location}': {}",
            crate::storage::explain(location, e).unwrap_or_else(|| e.to_string())
        ))
    };
    let url = super::parse_table_url(&prefix).map_err(|e| failed(&e))?;
    let store = state
        .runtime_env()
        .object_store(&url)
        .map_err(|e| failed(&e))?;
    let log = url.prefix().clone().join("_delta_log");
    if let Some(found) = store.list(Some(&log)).next().await {
        found.map_err(|e| failed(&e))?;
        return Ok(Some(FileFormat::Delta));
    }
    let mut files = url
        .list_all_files(state, store.as_ref(), "")
        .await
        .map_err(|e| failed(&e))?;
    while let Some(meta) = files.next().await {
        let meta = meta.map_err(|e| failed(&e))?;
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        if let Some(f) = FileFormat::from_location(name) {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

#[async_trait]
impl UrlTableFactory for PathTableFactory {
    async fn try_new(&self, url: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if !looks_like_path(url) {
            return Ok(None);
        }
        let state = self.state.get().and_then(Weak::upgrade).ok_or_else(|| {
            DataFusionError::Internal("path tables are not attached to a session".into())
        })?;
        let state = state.read().clone();
        let format = match FileFormat::from_location(url) {
            Some(f) => Some(f),
            None if url.contains("://") => format_of_prefix(&state, url).await?,
            None => format_of_folder(std::path::Path::new(url)),
        };
        let Some(format) = format else {
            return Err(DataFusionError::Plan(format!(
                "{url}: cannot tell the file format from the name; use a .csv, .parquet or .json path, or CREATE EXTERNAL TABLE"
            )));
        };
        let def = SourceDef {
            name: url.to_string(),
            location: url.to_string(),
            format,
            config: SourceConfig {
                database: None,
                table: None,
                query: None,
                personal: Vec::new(),
                location: url.to_string(),
                format: Some(format),
                options: SourceOptions::default(),
                schema: None,
                description: None,
                s3: None,
                cache: None,
                version: None,
                timestamp: None,
            },
        };
        open_source(&state, &def).await.map(Some)
    }
}
