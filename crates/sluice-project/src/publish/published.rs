//! What a published output says about itself: its rows, files, schema and run record.

use super::local::OutputFile;
use crate::error::{Result, SluiceError};

/// What a published output's `_sluice.json` says, read strictly.
#[derive(Debug, Clone)]
pub struct PublishedManifest {
    pub rows: u64,
    pub files: Vec<OutputFile>,
    pub schema: Vec<(String, String)>,
    /// The whole manifest, for what only some readers show (run id, checks, time).
    pub json: serde_json::Value,
}

impl PublishedManifest {
    pub fn parse(bytes: &[u8], location: &str) -> Result<PublishedManifest> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| SluiceError::publish(location, format!("not a sluice manifest: {e}")))?;
        fn field<T: serde::de::DeserializeOwned>(
            json: &serde_json::Value,
            name: &str,
            location: &str,
        ) -> Result<T> {
            let value = json.get(name).ok_or_else(|| {
                SluiceError::publish(location, format!("the manifest has no `{name}`"))
            })?;
            serde_json::from_value(value.clone()).map_err(|e| {
                SluiceError::publish(
                    location,
                    format!("the manifest's `{name}` is malformed: {e}"),
                )
            })
        }
        Ok(PublishedManifest {
            rows: field(&json, "rows", location)?,
            files: field(&json, "files", location)?,
            schema: field(&json, "schema", location)?,
            json,
        })
    }
}
