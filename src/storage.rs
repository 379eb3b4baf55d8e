//! Object stores: local files always, and S3 (or any S3-compatible store) built on demand
//! for each bucket a statement touches, from `[storage.s3]` with the AWS_* environment as
//! fallback. Credentials only ever come from the environment.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::config::S3Config;

#[derive(Debug)]
pub struct StoreRegistry {
    inner: DefaultObjectStoreRegistry,
    s3: S3Config,
    buckets: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    pub fn new(s3: Option<S3Config>) -> Self {
        StoreRegistry {
            inner: DefaultObjectStoreRegistry::new(),
            s3: s3.unwrap_or_default(),
            buckets: RwLock::new(HashMap::new()),
        }
    }

    fn build_s3(&self, bucket: &str) -> DFResult<Arc<dyn ObjectStore>> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 5,
                retry_timeout: std::time::Duration::from_secs(60),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(10))
                    .with_timeout(std::time::Duration::from_secs(300))
                    .with_allow_http(self.s3.allow_http.unwrap_or(false) || env_allows_http()),
            );
        if let Some(region) = &self.s3.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = self
            .s3
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(v) = self.s3.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(v);
        }
        if self.s3.skip_signature.unwrap_or(false) {
            builder = builder.with_skip_signature(true);
        }
        let store = builder.build().map_err(|e| {
            DataFusionError::Configuration(format!("cannot set up S3 for bucket `{bucket}`: {e}"))
        })?;
        Ok(Arc::new(store))
    }
}

fn env_allows_http() -> bool {
    std::env::var("AWS_ALLOW_HTTP")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        if url.scheme() == "s3" {
            let bucket = url.host_str().unwrap_or_default().to_string();
            return self.buckets.write().ok()?.insert(bucket, store);
        }
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> DFResult<Arc<dyn ObjectStore>> {
        if matches!(url.scheme(), "s3" | "s3a") {
            let bucket = url.host_str().unwrap_or_default().to_string();
            if bucket.is_empty() {
                return Err(DataFusionError::Configuration(format!(
                    "S3 URL {url} has no bucket"
                )));
            }
            if let Some(store) = self
                .buckets
                .read()
                .ok()
                .and_then(|b| b.get(&bucket).cloned())
            {
                return Ok(store);
            }
            let store = self.build_s3(&bucket)?;
            if let Ok(mut b) = self.buckets.write() {
                b.insert(bucket, store.clone());
            }
            return Ok(store);
        }
        self.inner.get_store(url)
    }
}
