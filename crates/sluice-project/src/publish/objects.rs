//! The object store operations every kind of stage shares: list a prefix, delete keys,
//! name a key under a prefix, and say a store's error with its location.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::local::OutputFile;
use crate::error::{Result, SluiceError};

pub(crate) fn key(prefix: &ObjectPath, name: &str) -> ObjectPath {
    if prefix.as_ref().is_empty() {
        ObjectPath::from(name)
    } else {
        ObjectPath::from(format!("{prefix}/{name}"))
    }
}

pub(crate) fn store_error(location: &str, e: &(dyn std::error::Error + 'static)) -> SluiceError {
    SluiceError::store(location, e)
}

pub(crate) fn relative_to(prefix: &ObjectPath, path: &ObjectPath) -> Option<String> {
    let p = prefix.as_ref();
    let full = path.as_ref();
    if p.is_empty() {
        return Some(full.to_string());
    }
    full.strip_prefix(p)?.strip_prefix('/').map(str::to_string)
}

pub(crate) async fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &ObjectPath,
    location: &str,
) -> Result<Vec<(ObjectPath, u64)>> {
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    store
        .list(prefix)
        .map_ok(|m| (m.location, m.size))
        .try_collect()
        .await
        .map_err(|e| store_error(location, &e))
}

pub(crate) async fn delete(
    store: &Arc<dyn ObjectStore>,
    paths: Vec<ObjectPath>,
    location: &str,
) -> Result<()> {
    let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    store
        .delete_stream(stream)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(|e| store_error(location, &e))
}

/// The files under `prefix` that were not there `before` (what a run wrote), relative to
/// the prefix and sorted; `hidden` leaves out markers, logs and sluice's own names.
pub(crate) async fn new_files(
    store: &Arc<dyn ObjectStore>,
    prefix: &ObjectPath,
    location: &str,
    before: &HashSet<ObjectPath>,
    hidden: impl Fn(&str) -> bool,
) -> Result<Vec<OutputFile>> {
    let mut files: Vec<OutputFile> = list(store, prefix, location)
        .await?
        .into_iter()
        .filter(|(p, _)| !before.contains(p))
        .filter_map(|(p, bytes)| {
            let relative = relative_to(prefix, &p)?;
            (!hidden(&relative)).then_some(OutputFile {
                path: relative,
                bytes,
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
