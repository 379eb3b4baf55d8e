//! Reading a published S3 prefix the way it was published: only the files its `_sluice.json`
//! manifest lists. A publish writes new files next to the old ones, then the manifest, then
//! deletes what the manifest does not list; a failed or killed publish leaves extra files
//! that a plain listing would read. The listing table reads through a store that shows only
//! the manifest's files, so partitions, schema inference and pruning work as usual.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

/// The manifest's name inside a published prefix.
pub const MANIFEST: &str = "_sluice.json";

/// The scheme of a listed view: `sluice-listed://v<N>.<bucket>/<prefix>/`. The bucket in
/// the host lets a cluster executor, which has no such view, read the planned files.
pub const LISTED_SCHEME: &str = "sluice-listed";

/// Data file paths a manifest lists, relative to its prefix.
pub fn manifest_files(json: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value["files"]
        .as_array()?
        .iter()
        .map(|f| f["path"].as_str().map(str::to_string))
        .collect()
}

/// A store that lists only the given objects (reads of any object pass through).
#[derive(Debug)]
pub struct OnlyListed {
    inner: Arc<dyn ObjectStore>,
    listed: Arc<HashSet<Path>>,
}

impl OnlyListed {
    pub fn new(inner: Arc<dyn ObjectStore>, listed: HashSet<Path>) -> Self {
        OnlyListed {
            inner,
            listed: Arc::new(listed),
        }
    }
}

impl fmt::Display for OnlyListed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} listed files)", self.inner, self.listed.len())
    }
}

#[async_trait]
impl ObjectStore for OnlyListed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = self.listed.clone();
        self.inner
            .list(prefix)
            .filter(move |m| {
                let keep = match m {
                    Ok(meta) => listed.contains(&meta.location),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        result
            .objects
            .retain(|meta| self.listed.contains(&meta.location));
        // A folder (hive partition) stays only when a listed file is inside it.
        result.common_prefixes.retain(|p| {
            let p = p.as_ref();
            self.listed
                .iter()
                .any(|l| l.as_ref().starts_with(p) && l.as_ref()[p.len()..].starts_with('/'))
        });
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The store key (scheme and host) of a URL, which is what the registry looks stores up by.
pub fn store_url(url: &Url) -> DFResult<ObjectStoreUrl> {
    ObjectStoreUrl::parse(&url[..url::Position::BeforePath])
}

static NEXT_VIEW: AtomicUsize = AtomicUsize::new(0);

/// The "bucket" of a listed view of local files (a Delta table's staged files); no S3
/// bucket name holds an underscore.
pub const LOCAL_FILES_HOST: &str = "_file";

/// What each listed view of this process shows: its bucket's URL and the object paths it
/// lists. Plans sent to a cluster carry this along (see `ListedTable`), so the scheduler
/// lists exactly these files too.
static VIEWS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, ListedFiles>>,
> = std::sync::LazyLock::new(Default::default);

/// The files a listed view shows: the bucket's `s3://bucket/` and object paths in it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ListedFiles {
    pub bucket: String,
    pub paths: Vec<String>,
}

/// The files of the listed view at `host` (`v<N>.<bucket>`), when this process made it.
pub fn listed_files(host: &str) -> Option<ListedFiles> {
    VIEWS.lock().ok()?.get(host).cloned()
}

/// Make the listed view `host` in another process's runtime (a cluster scheduler planning
/// a client's query): the same files of the same bucket.
pub fn register_listed_view(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    host: &str,
    files: &ListedFiles,
) -> DFResult<()> {
    let bucket = Url::parse(&files.bucket)
        .map_err(|e| DataFusionError::Plan(format!("{}: {e}", files.bucket)))?;
    let store = runtime.object_store(store_url(&bucket)?)?;
    let view = Url::parse(&format!("{LISTED_SCHEME}://{host}/"))
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    let listed = files.paths.iter().map(|p| Path::from(p.as_str())).collect();
    runtime.register_object_store(&view, Arc::new(OnlyListed::new(store, listed)));
    Ok(())
}

/// Register a store that lists only `files` (paths relative to the prefix of `location`,
/// an `s3://bucket/prefix/` URL) and return the URL to list through it instead.
pub fn register_only_listed(
    state: &SessionState,
    location: &str,
    files: &[String],
) -> DFResult<String> {
    let url =
        Url::parse(location).map_err(|e| DataFusionError::Plan(format!("{location}: {e}")))?;
    let store = state.runtime_env().object_store(store_url(&url)?)?;
    let prefix = url.path().trim_matches('/').to_string();
    let listed: HashSet<Path> = files
        .iter()
        .map(|f| {
            if prefix.is_empty() {
                Path::from(f.as_str())
            } else {
                Path::from(format!("{prefix}/{f}"))
            }
        })
        .collect();
    // The host names the bucket, so that a cluster executor finds the store to read from.
    let bucket = match url.scheme() {
        "file" => LOCAL_FILES_HOST,
        _ => url.host_str().unwrap_or_default(),
    };
    let host = format!("v{}.{bucket}", NEXT_VIEW.fetch_add(1, Ordering::Relaxed));
    let view = Url::parse(&format!("{LISTED_SCHEME}://{host}/"))
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    if let Ok(mut views) = VIEWS.lock() {
        views.insert(
            host.clone(),
            ListedFiles {
                bucket: format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default()),
                paths: listed.iter().map(|p| p.to_string()).collect(),
            },
        );
    }
    state
        .runtime_env()
        .register_object_store(&view, Arc::new(OnlyListed::new(store, listed)));
    Ok(format!("{LISTED_SCHEME}://{host}/{prefix}/"))
}

/// The files the manifest at an `s3://bucket/prefix/` lists, when there is one.
pub async fn published_files(
    state: &SessionState,
    location: &str,
) -> DFResult<Option<Vec<String>>> {
    let url =
        Url::parse(location).map_err(|e| DataFusionError::Plan(format!("{location}: {e}")))?;
    let store = state.runtime_env().object_store(store_url(&url)?)?;
    let prefix = url.path().trim_matches('/');
    let key = if prefix.is_empty() {
        Path::from(MANIFEST)
    } else {
        Path::from(format!("{prefix}/{MANIFEST}"))
    };
    match store.get(&key).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            manifest_files(&bytes).map(Some).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{location}{MANIFEST} is not a sluice manifest (no `files` list)"
                ))
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
