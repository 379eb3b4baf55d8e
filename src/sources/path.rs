//! Querying files by path or URL: `SELECT * FROM 'data/x.parquet'`,
//! `FROM 's3://bucket/prefix/*.csv'`. A path is opened like a source (globs, folders, hive
//! partitions, object stores), with the format taken from its extension.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{TableProvider, UrlTableFactory};
use datafusion::error::{DataFusionError, Result as DFResult};

use super::{open_source, SessionStateLock, SourceDef};
use crate::config::{SourceConfig, SourceFormat, SourceOptions};

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
    name.contains('/') || name.contains("://") || SourceFormat::from_location(name).is_some()
}

/// The format of a local folder's data files (a published output, a dataset folder).
fn format_of_folder(dir: &std::path::Path) -> Option<SourceFormat> {
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
            SourceFormat::from_location(&name)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

#[async_trait]
impl UrlTableFactory for PathTableFactory {
    async fn try_new(&self, url: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if !looks_like_path(url) {
            return Ok(None);
        }
        let format = match SourceFormat::from_location(url).or_else(|| format_of_folder(std::path::Path::new(url))) {
            Some(f) => f,
            None => {
                return Err(DataFusionError::Plan(format!(
                    "{url}: cannot tell the file format from the name; use a .csv, .parquet or .json path, or CREATE EXTERNAL TABLE"
                )))
            }
        };
        let state = self.state.get().and_then(Weak::upgrade).ok_or_else(|| {
            DataFusionError::Internal("path tables are not attached to a session".into())
        })?;
        let state = state.read().clone();
        let def = SourceDef {
            name: url.to_string(),
            location: url.to_string(),
            format,
            config: SourceConfig {
                location: url.to_string(),
                format: Some(format),
                options: SourceOptions::default(),
                schema: None,
                description: None,
            },
        };
        open_source(&state, &def).await.map(Some)
    }
}
