//! Object stores: local files always, and S3 (or any S3-compatible store) built on demand
//! for each bucket a statement touches, from `[storage.s3]` (or a source's own `s3` table for
//! its bucket) with the AWS conventions as fallback: AWS_* variables, then the profile in the
//! shared config and credentials files. Credentials never come from sluice.toml.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::time::Duration;
use url::Url;

use crate::config::S3Config;

pub mod local;

#[derive(Debug)]
pub struct StoreRegistry {
    inner: DefaultObjectStoreRegistry,
    s3: S3Config,
    /// Settings of buckets that a source configures itself (a second store).
    bucket_settings: HashMap<String, S3Config>,
    buckets: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    pub fn new(s3: Option<S3Config>, bucket_settings: HashMap<String, S3Config>) -> Self {
        let inner = DefaultObjectStoreRegistry::new();
        if let Ok(file) = Url::parse("file://") {
            inner.register_store(&file, Arc::new(local::LocalStore::new()));
        }
        StoreRegistry {
            inner,
            s3: s3.unwrap_or_default(),
            bucket_settings,
            buckets: RwLock::new(HashMap::new()),
        }
    }

    fn build_s3(&self, bucket: &str) -> DFResult<Arc<dyn ObjectStore>> {
        let settings = self.bucket_settings.get(bucket).unwrap_or(&self.s3);
        let profile = Profile::load().map_err(DataFusionError::Configuration)?;
        let allow_http = settings.allow_http.unwrap_or(false) || env_allows_http();
        let timeout = Duration::from_secs(settings.timeout_secs.unwrap_or(300).max(1));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 4,
                // Transient errors are retried with backoff for a while, not forever.
                retry_timeout: (timeout * 3).min(Duration::from_secs(60)),
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(timeout)
                    .with_allow_http(allow_http),
            );
        // Precedence: sluice.toml, then AWS_* variables (read by from_env), then the profile.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            if let (Some(key), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key)
            {
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
                if let Some(token) = &profile.session_token {
                    builder = builder.with_token(token);
                }
            }
        }
        let env_region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok();
        if let Some(region) = settings
            .region
            .clone()
            .or(env_region)
            .or(profile.region.clone())
        {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = settings
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or(profile.endpoint_url.clone())
        {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(v) = settings.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(v);
        }
        if settings.skip_signature.unwrap_or(false) {
            builder = builder.with_skip_signature(true);
        }
        let store = builder.build().map_err(|e| {
            DataFusionError::Configuration(format!("cannot set up S3 for bucket `{bucket}`: {e}"))
        })?;
        Ok(Arc::new(store))
    }
}

/// Settings of one profile from the shared AWS files (`AWS_PROFILE`, default `default`).
#[derive(Debug, Default)]
struct Profile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

/// The `key = value` lines of one `[section]` of an INI file.
fn ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut found = None;
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            if current.as_deref() == Some(section) {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current.as_deref() == Some(section) {
            if let Some((k, v)) = line.split_once('=') {
                found
                    .get_or_insert_with(HashMap::new)
                    .insert(k.trim().to_lowercase(), v.trim().to_string());
            }
        }
    }
    found
}

impl Profile {
    fn load() -> Result<Profile, String> {
        let explicit = std::env::var("AWS_PROFILE")
            .or_else(|_| std::env::var("AWS_DEFAULT_PROFILE"))
            .ok();
        let name = explicit.clone().unwrap_or_else(|| "default".into());
        let aws_dir = dirs::home_dir().unwrap_or_default().join(".aws");
        let file = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| aws_dir.join(default))
        };
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let credentials = ini_section(
            &read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials")),
            &name,
        );
        let config_section = if name == "default" {
            name.clone()
        } else {
            format!("profile {name}")
        };
        let config = ini_section(&read(file("AWS_CONFIG_FILE", "config")), &config_section);
        if explicit.is_some() && credentials.is_none() && config.is_none() {
            return Err(format!(
                "AWS profile `{name}` (from AWS_PROFILE) is not in the shared credentials or config file"
            ));
        }
        let get = |key: &str| {
            credentials
                .as_ref()
                .and_then(|c| c.get(key))
                .or_else(|| config.as_ref().and_then(|c| c.get(key)))
                .cloned()
        };
        Ok(Profile {
            access_key_id: get("aws_access_key_id"),
            secret_access_key: get("aws_secret_access_key"),
            session_token: get("aws_session_token"),
            region: get("region"),
            endpoint_url: get("endpoint_url"),
        })
    }
}

/// A store error said plainly, naming the bucket and key (never credentials), when its
/// types say what went wrong (see `store_fault`). `location` is the s3:// URL that was being read
/// or written.
pub fn explain(location: &str, error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let bucket = crate::store_fault::bucket_of(location)?;
    Some(crate::store_fault::fault_of(error)?.describe(bucket, location))
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
        if url.scheme() == crate::sources::manifest::LISTED_SCHEME {
            if let Ok(store) = self.inner.get_store(url) {
                return Ok(store);
            }
            // A cluster executor reads the files a client planned through its listed view
            // of a published prefix: reads go to the bucket the view's host names (or to
            // the local file system).
            if let Some((_, bucket)) = url.host_str().and_then(|h| h.split_once('.')) {
                if bucket == crate::sources::manifest::LOCAL_FILES_HOST {
                    let local = Url::parse("file:///")
                        .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
                    return self.inner.get_store(&local);
                }
                let s3 = Url::parse(&format!("s3://{bucket}/"))
                    .map_err(|e| DataFusionError::Configuration(format!("{url}: {e}")))?;
                return self.get_store(&s3);
            }
        }
        self.inner.get_store(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_from_ini_sections() {
        let text = "[default]\nregion = us-east-1\n\n[profile dev]\nregion=eu-west-1 \nendpoint_url = http://127.0.0.1:9000\n";
        assert_eq!(ini_section(text, "default").unwrap()["region"], "us-east-1");
        let dev = ini_section(text, "profile dev").unwrap();
        assert_eq!(dev["region"], "eu-west-1");
        assert_eq!(dev["endpoint_url"], "http://127.0.0.1:9000");
        assert!(ini_section(text, "profile prod").is_none());
    }
}
