//! Publishing to an S3 prefix: new files get run-unique names next to the published ones,
//! the manifest (`_sluice.json`) is written last, then files it does not list are deleted.
//! sluice's readers follow the manifest, so a failed or killed publish changes nothing they
//! see; taking a publish back puts the previous manifest again.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::local::OutputFile;
use super::objects::{delete, key, list, new_files, store_error};
use crate::error::{Result, SluiceError};
use crate::sources::manifest::{self, MANIFEST};

/// The store of an `s3://bucket/prefix/` URL, and the prefix inside it.
pub(crate) fn s3_store(
    ctx: &SessionContext,
    location: &str,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let url = Url::parse(location).map_err(|e| SluiceError::sql(format!("{location}: {e}")))?;
    let store = ctx
        .runtime_env()
        .object_store(
            crate::sources::manifest::store_url(&url).map_err(|e| store_error(location, &e))?,
        )
        .map_err(|e| store_error(location, &e))?;
    Ok((store, ObjectPath::from(url.path().trim_matches('/'))))
}

/// The published manifest's bytes; None before the first publish.
pub(super) async fn manifest_bytes(
    ctx: &SessionContext,
    location: &str,
) -> Result<Option<Vec<u8>>> {
    let (store, prefix) = s3_store(ctx, location)?;
    match store.get(&key(&prefix, MANIFEST)).await {
        Ok(got) => Ok(Some(
            got.bytes()
                .await
                .map_err(|e| store_error(location, &e))?
                .to_vec(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(location, &e)),
    }
}

/// Whether any object is under the prefix, published or not.
pub(super) async fn has_objects(ctx: &SessionContext, location: &str) -> Result<bool> {
    let (store, prefix) = s3_store(ctx, location)?;
    let prefix = (!prefix.as_ref().is_empty()).then_some(&prefix);
    match store.list(prefix).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(store_error(location, &e)),
    }
}

/// One run's files under an S3 prefix, written but not yet listed by the manifest.
pub struct S3Stage {
    pub(super) location: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Objects under the prefix before this run wrote anything.
    before: HashSet<ObjectPath>,
}

impl S3Stage {
    pub(super) async fn begin(ctx: &SessionContext, location: &str) -> Result<S3Stage> {
        let (store, prefix) = s3_store(ctx, location)?;
        let before = list(&store, &prefix, location)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        Ok(S3Stage {
            location: location.to_string(),
            store,
            prefix,
            before,
        })
    }

    /// The data files this run wrote, relative to the prefix (markers left out).
    pub(super) async fn written_files(&self) -> Result<Vec<OutputFile>> {
        let marker = |relative: &str| {
            let name = relative.rsplit('/').next().unwrap_or_default();
            name.starts_with('_') || name.starts_with('.')
        };
        new_files(
            &self.store,
            &self.prefix,
            &self.location,
            &self.before,
            marker,
        )
        .await
    }

    /// A table URL that reads exactly `files` (the prefix also holds the published ones).
    pub(super) fn table_url(&self, ctx: &SessionContext, files: &[OutputFile]) -> Result<String> {
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        manifest::register_only_listed(&ctx.state(), &self.location, &paths)
            .map_err(|e| store_error(&self.location, &e))
    }

    /// `_SUCCESS`, then the manifest listing `files`: from then on readers see this run.
    pub(super) async fn publish(
        self,
        manifest_json: &[u8],
        files: &[OutputFile],
    ) -> Result<S3Published> {
        let S3Stage {
            location,
            store,
            prefix,
            before,
        } = self;
        let manifest_key = key(&prefix, MANIFEST);
        let previous_manifest = match store.get(&manifest_key).await {
            Ok(got) => Some(got.bytes().await.map_err(|e| store_error(&location, &e))?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(store_error(&location, &e)),
        };
        store
            .put(&key(&prefix, "_SUCCESS"), PutPayload::new())
            .await
            .map_err(|e| store_error(&location, &e))?;
        store
            .put(&manifest_key, PutPayload::from(manifest_json.to_vec()))
            .await
            .map_err(|e| store_error(&location, &e))?;
        let keep: HashSet<ObjectPath> = files
            .iter()
            .map(|f| key(&prefix, &f.path))
            .chain([key(&prefix, "_SUCCESS"), manifest_key])
            .collect();
        let written = keep
            .iter()
            .filter(|p| !before.contains(p))
            .cloned()
            .collect();
        let stale = before
            .iter()
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        Ok(S3Published {
            location,
            store,
            prefix,
            previous_manifest,
            written,
            stale,
        })
    }

    /// Remove what this run wrote (a check failed, or the query did).
    pub(super) async fn discard(self) {
        if let Ok(now) = list(&self.store, &self.prefix, &self.location).await {
            let new: Vec<ObjectPath> = now
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| !self.before.contains(p))
                .collect();
            let _ = delete(&self.store, new, &self.location).await;
        }
    }
}

/// A manifest readers follow, with what finishing or taking it back needs.
pub struct S3Published {
    location: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The manifest this publish replaced; None on a first publish.
    previous_manifest: Option<bytes::Bytes>,
    /// Objects this run added (data files, and `_SUCCESS` on a first publish).
    written: Vec<ObjectPath>,
    /// Objects of the previous version no longer listed.
    stale: Vec<ObjectPath>,
}

impl S3Published {
    /// The publish stands: delete what only the previous version listed.
    pub(super) async fn finish(self) -> Result<()> {
        delete(&self.store, self.stale, &self.location).await
    }

    /// The previous manifest (or none) again, and this run's objects gone.
    pub(super) async fn undo(self) -> Result<()> {
        let manifest_key = key(&self.prefix, MANIFEST);
        match self.previous_manifest {
            Some(bytes) => self
                .store
                .put(&manifest_key, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| store_error(&self.location, &e))?,
            None => delete(&self.store, vec![manifest_key], &self.location).await?,
        }
        delete(&self.store, self.written, &self.location).await
    }
}
