//! Sources from `sluice.toml` registered as tables. Each source is built lazily, on the
//! first statement that reads it, so a broken source fails that statement (naming the
//! source and its location) instead of the whole start-up.

mod delta;
mod format;
pub mod listed;
pub mod manifest;
mod path;
pub mod postgres;

use crate::error::SluiceError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

pub(crate) type SessionStateLock = parking_lot::RwLock<SessionState>;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;

use crate::config::{FileFormat, Project, SourceConfig};
pub use format::listing_options;

mod cached;
pub use cached::CachedTable;
pub use delta::DeltaHistory;
pub use path::PathTableFactory;

/// A source as the session sees it: its name, resolved location and settings.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub location: String,
    pub format: FileFormat,
    pub config: SourceConfig,
}

impl SourceDef {
    pub fn from_project(project: &Project) -> IndexMap<String, SourceDef> {
        project
            .config
            .sources
            .iter()
            .map(|(name, config)| {
                if let Some(database) = &config.database {
                    let def = SourceDef {
                        name: name.clone(),
                        location: postgres::location(database, config),
                        format: FileFormat::Postgres,
                        config: config.clone(),
                    };
                    return (name.clone(), def);
                }
                let format = config
                    .format
                    .or_else(|| FileFormat::from_location(&config.location))
                    .unwrap_or(FileFormat::Csv);
                let def = SourceDef {
                    name: name.clone(),
                    location: project.resolve_location(&config.location),
                    format,
                    config: config.clone(),
                };
                (name.clone(), def)
            })
            .collect()
    }

    /// A folder of output files (a published or staged model) read as a table.
    pub fn folder(name: &str, folder: &std::path::Path, format: FileFormat) -> SourceDef {
        Self::prefix(name, &folder.display().to_string(), format)
    }

    /// A folder or object store prefix of files read as a table.
    pub fn prefix(name: &str, location: &str, format: FileFormat) -> SourceDef {
        let location = format!("{}/", location.trim_end_matches('/'));
        SourceDef {
            name: name.to_string(),
            location: location.clone(),
            format,
            config: SourceConfig {
                database: None,
                table: None,
                query: None,
                personal: Vec::new(),
                location,
                format: Some(format),
                options: Default::default(),
                schema: None,
                description: None,
                s3: None,
                cache: None,
                version: None,
                timestamp: None,
            },
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> DataFusionError {
        // A path queried directly is its own name.
        let location = (self.name != self.config.location).then(|| self.config.location.clone());
        DataFusionError::External(Box::new(SluiceError::Source {
            name: self.name.clone(),
            location,
            message: message.to_string(),
        }))
    }
}

/// A project model the schema opens on first use, like a source: a view's SQL, or the
/// published folder of a table model.
#[derive(Debug, Clone)]
pub enum ModelTable {
    View { sql: String },
    Published(Box<SourceDef>),
}

/// The default schema of every session: project sources, project models, plus tables and
/// views the user or the runner registers (which shadow a model of the same name).
#[derive(Debug)]
pub struct ProjectSchema {
    sources: IndexMap<String, SourceDef>,
    models: RwLock<IndexMap<String, ModelTable>>,
    built: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    registered: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    state: OnceLock<Weak<SessionStateLock>>,
    caching: SourceCaching,
}

/// Which sources a session holds in memory after their first read.
#[derive(Debug, Clone, Copy, Default)]
pub enum SourceCaching {
    /// Those with `cache = true`.
    #[default]
    AsAsked,
    /// Those with `cache = true`, and those of at most this many bytes unless `cache = false`
    /// (the shell and the server).
    SmallUpTo(u64),
    /// None: a cluster's plans name files, which executors read themselves.
    Off,
}

impl ProjectSchema {
    pub fn new(sources: IndexMap<String, SourceDef>) -> Self {
        ProjectSchema {
            sources,
            models: RwLock::new(IndexMap::new()),
            built: Mutex::new(HashMap::new()),
            registered: RwLock::new(HashMap::new()),
            state: OnceLock::new(),
            caching: SourceCaching::AsAsked,
        }
    }

    pub fn caching(mut self, caching: SourceCaching) -> Self {
        self.caching = caching;
        self
    }

    /// A source as its queries read it: held in memory when it asks to be, or when it is
    /// small and this session caches small sources.
    fn cached(&self, def: &SourceDef, table: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        let up_to = match (self.caching, def.config.cache) {
            (SourceCaching::Off, _) | (_, Some(false)) => return table,
            (_, Some(true)) => None,
            (SourceCaching::SmallUpTo(bytes), None) => Some(bytes),
            (SourceCaching::AsAsked, None) => return table,
        };
        match Arc::downcast::<datafusion::datasource::listing::ListingTable>(
            table.clone() as Arc<dyn std::any::Any + Send + Sync>
        ) {
            Ok(listing) => Arc::new(CachedTable::new(listing, def.clone(), up_to)),
            // A published S3 output read through its manifest stays as it is.
            Err(_) => table,
        }
    }

    /// A source or published model as this session reads it: a Delta table follows its
    /// latest version unless the session's plans travel to a cluster.
    async fn open(
        &self,
        state: &SessionState,
        def: &SourceDef,
    ) -> DFResult<Arc<dyn TableProvider>> {
        match (def.format, self.caching) {
            (FileFormat::Delta, SourceCaching::Off) => open_source(state, def).await,
            (FileFormat::Delta, _) => delta::LatestVersion::open(state, def).await,
            _ => open_source(state, def).await,
        }
    }

    /// Give the schema a handle on the session so sources can be built on first use.
    pub fn attach(&self, state: Weak<SessionStateLock>) {
        let _ = self.state.set(state);
    }

    pub fn source(&self, name: &str) -> Option<&SourceDef> {
        self.sources.get(name)
    }

    pub fn sources(&self) -> impl Iterator<Item = &SourceDef> {
        self.sources.values()
    }

    /// Make models queryable by name; nothing is read or planned until a statement uses one.
    pub fn declare_models(&self, models: impl IntoIterator<Item = (String, ModelTable)>) {
        if let Ok(mut m) = self.models.write() {
            m.extend(models);
        }
    }

    fn model(&self, name: &str) -> Option<ModelTable> {
        self.models.read().ok().and_then(|m| m.get(name).cloned())
    }

    fn session_state(&self) -> DFResult<SessionState> {
        let weak = self.state.get().ok_or_else(|| {
            DataFusionError::Internal("source schema is not attached to a session".into())
        })?;
        let state = weak
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the session is gone".into()))?;
        let guard = state.read();
        Ok(guard.clone())
    }

    /// Open a source or model once; later statements reuse the table.
    async fn build(
        &self,
        name: &str,
        model: Option<ModelTable>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.built.lock().ok().and_then(|b| b.get(name).cloned()) {
            return Ok(Some(table));
        }
        let state = self.session_state()?;
        let table: Arc<dyn TableProvider> = match (self.sources.get(name), model) {
            (Some(def), _) => self.cached(def, self.open(&state, def).await?),
            (None, Some(ModelTable::Published(def))) => self.open(&state, &def).await?,
            (None, Some(ModelTable::View { sql })) => {
                let plan = state.create_logical_plan(&sql).await.map_err(|e| {
                    DataFusionError::Plan(format!(
                        "model `{name}`: {}",
                        crate::error::describe_datafusion_error(&e)
                    ))
                })?;
                Arc::new(ViewTable::new(plan, Some(sql)))
            }
            (None, None) => return Ok(None),
        };
        if let Ok(mut built) = self.built.lock() {
            built.insert(name.to_string(), table.clone());
        }
        Ok(Some(table))
    }
}

#[async_trait]
impl SchemaProvider for ProjectSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sources.keys().cloned().collect();
        if let Ok(models) = self.models.read() {
            names.extend(models.keys().cloned());
        }
        if let Ok(reg) = self.registered.read() {
            names.extend(reg.keys().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self
            .registered
            .read()
            .ok()
            .and_then(|r| r.get(name).cloned())
        {
            return Ok(Some(t));
        }
        self.build(name, self.model(name)).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let mut reg = self
            .registered
            .write()
            .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
        if reg.contains_key(&name) || self.sources.contains_key(&name) {
            return Err(DataFusionError::Plan(format!(
                "table `{name}` already exists"
            )));
        }
        Ok(reg.insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let mut reg = self
            .registered
            .write()
            .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
        Ok(reg.remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.sources.contains_key(name)
            || self.model(name).is_some()
            || self
                .registered
                .read()
                .map(|r| r.contains_key(name))
                .unwrap_or(false)
    }
}

/// Build the listing table of one source: check the location, discover hive partitions,
/// infer or apply the schema.
pub async fn open_source(
    state: &SessionState,
    def: &SourceDef,
) -> DFResult<Arc<dyn TableProvider>> {
    match def.format {
        FileFormat::Delta => return delta::open(state, def).await,
        FileFormat::Postgres => return postgres::open(state, def).await,
        _ => {}
    }
    let location = normalise_location(&def.location);
    // A published S3 prefix is read as its manifest lists it.
    let location = if is_s3_prefix(&location) {
        match manifest::published_files(state, &location).await {
            Ok(Some(files)) => manifest::register_only_listed(state, &location, &files)
                .map_err(|e| def.error(e))?,
            Ok(None) => location,
            Err(e) => return Err(def.error(describe_store(&location, &e))),
        }
    } else if has_glob(&location) {
        expand_glob(state, &location)
            .await
            .map_err(|e| def.error(describe_store(&def.location, &e)))?
    } else {
        location
    };
    let mut url =
        parse_table_url(&location).map_err(|e| def.error(format!("bad location: {e}")))?;
    let store = state
        .runtime_env()
        .object_store(&url)
        .map_err(|e| def.error(format!("no object store for this location: {e}")))?;

    let is_collection = url.is_collection() || url.get_glob().is_some();
    // A folder's files say which extension (and compression) they use: `.ndjson`,
    // `.jsonl.gz` and `.json` are all NDJSON.
    // A folder is listed once: that listing decides the suffix and whether it has files.
    let mut listed: Option<(Vec<object_store::ObjectMeta>, bool)> = None;
    let detected = if url.is_collection() && url.get_glob().is_none() {
        let all: Vec<_> = url
            .list_all_files(state, store.as_ref(), "")
            .await
            .map_err(|e| def.error(describe_store(&def.location, &e)))?
            .try_collect()
            .await
            .map_err(|e| def.error(describe_store(&def.location, &e)))?;
        let names: Vec<&str> = all.iter().filter_map(|m| m.location.filename()).collect();
        let detected = format::folder_suffix(def.format, &names).map_err(|e| def.error(e))?;
        let skip_own = detected.and_then(|d| format::skip_own_files(&names, d));
        if let Some(pattern) = &skip_own {
            // A published NDJSON folder holds `_sluice.json`, which the extension alone
            // would read as data: list the data files by a glob that leaves `_` and `.`
            // files out.
            url = parse_table_url(&format!("{}/{pattern}", location.trim_end_matches('/')))
                .map_err(|e| def.error(format!("bad location: {e}")))?;
        }
        listed = Some((all, skip_own.is_some()));
        detected
    } else {
        None
    };
    let mut options = listing_options(def, is_collection, detected);
    let has_files = match listed {
        Some((all, skip_own)) => all.iter().any(|m| {
            let name = m.location.filename().unwrap_or_default();
            m.location.as_ref().ends_with(&options.file_extension)
                && !(skip_own && (name.starts_with('_') || name.starts_with('.')))
        }),
        None => url
            .list_all_files(state, store.as_ref(), &options.file_extension)
            .await
            .map_err(|e| def.error(describe_store(&def.location, &e)))?
            .try_next()
            .await
            .map_err(|e| def.error(describe_store(&def.location, &e)))?
            .is_some(),
    };
    if !has_files {
        let what = if is_collection {
            format!("no {} files found", def.format.name())
        } else {
            "the file does not exist".to_string()
        };
        return Err(def.error(what));
    }
    if is_collection {
        let partitions = options
            .infer_partitions(state, &url)
            .await
            .map_err(|e| def.error(e))?;
        if !partitions.is_empty() {
            options = options.with_table_partition_cols(
                partitions
                    .into_iter()
                    .map(|p| (p, datafusion::arrow::datatypes::DataType::Utf8))
                    .collect(),
            );
        }
    }
    let schema = match &def.config.schema {
        Some(columns) => Arc::new(format::explicit_schema(columns).map_err(|e| def.error(e))?),
        None => options.infer_schema(state, &url).await.map_err(|e| {
            def.error(
                crate::storage::explain(&def.location, &e).unwrap_or_else(|| {
                    format!(
                        "cannot read: {}",
                        crate::error::describe_datafusion_error(&e)
                    )
                }),
            )
        })?,
    };
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let table: Arc<dyn TableProvider> =
        Arc::new(ListingTable::try_new(config).map_err(|e| def.error(e))?);
    // Read through a listed view: the file list travels with the plan to a cluster.
    if let Some(host) = location
        .strip_prefix(&format!("{}://", manifest::LISTED_SCHEME))
        .and_then(|rest| rest.split('/').next())
    {
        if let Some(files) = manifest::listed_files(host) {
            return Ok(Arc::new(listed::ListedTable {
                inner: table,
                host: host.to_string(),
                files,
            }));
        }
    }
    Ok(table)
}

/// `ListingTableUrl::parse`, with globs in URLs too (`s3://raw/events/*.csv`): DataFusion
/// splits the glob off local paths only.
pub fn parse_table_url(location: &str) -> DFResult<ListingTableUrl> {
    if let (true, Some(i)) = (location.contains("://"), location.find(['*', '?', '['])) {
        let split = location[..i].rfind('/').map(|j| j + 1).unwrap_or(0);
        let (prefix, glob) = location.split_at(split);
        let url = url::Url::parse(prefix).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let pattern =
            glob::Pattern::new(glob).map_err(|e| DataFusionError::External(Box::new(e)))?;
        return ListingTableUrl::try_new(url, Some(pattern));
    }
    ListingTableUrl::parse(location)
}

/// Match a glob against whole paths below its fixed prefix, hive `key=value` folders
/// included (DataFusion drops those segments before matching, so `events/*/*.csv` would
/// find nothing under `events/day=1/`), and read the matches as one folder, so hive
/// partitions are still discovered. Returns the URL to read.
async fn expand_glob(state: &SessionState, location: &str) -> DFResult<String> {
    let first = location.find(['*', '?', '[']).unwrap_or(location.len());
    let split = location[..first].rfind('/').map(|j| j + 1).unwrap_or(0);
    let (prefix, glob) = location.split_at(split);
    let pattern =
        glob::Pattern::new(glob).map_err(|e| DataFusionError::Plan(format!("bad glob: {e}")))?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let prefix_url = parse_table_url(if prefix.is_empty() { "./" } else { prefix })?;
    let store = state.runtime_env().object_store(&prefix_url)?;
    let base = prefix_url.prefix().as_ref().to_string();
    let mut matched = Vec::new();
    let mut files = prefix_url.list_all_files(state, store.as_ref(), "").await?;
    while let Some(meta) = files.next().await {
        let meta = meta?;
        let full = meta.location.as_ref();
        let relative = full
            .strip_prefix(base.as_str())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(full);
        if pattern.matches_with(relative, options) {
            matched.push(relative.to_string());
        }
    }
    manifest::register_only_listed(state, prefix_url.as_str(), &matched)
}

fn has_glob(location: &str) -> bool {
    location.contains(['*', '?', '['])
}

/// An S3 location naming a prefix (a folder) rather than a file or a glob.
fn is_s3_prefix(location: &str) -> bool {
    crate::store_fault::bucket_of(location).is_some()
        && location.ends_with('/')
        && !has_glob(location)
}

/// Folders need a trailing slash to be listed as collections: local ones that exist, and
/// S3 keys without a file extension.
fn normalise_location(location: &str) -> String {
    if location.ends_with('/') || has_glob(location) {
        return location.to_string();
    }
    let folder = if crate::store_fault::bucket_of(location).is_some() {
        let last = location.rsplit('/').next().unwrap_or_default();
        FileFormat::from_location(last).is_none() && !last.contains('.')
            || location.trim_end_matches('/').matches('/').count() <= 2
    } else {
        !location.contains("://") && std::path::Path::new(location).is_dir()
    };
    if folder {
        format!("{location}/")
    } else {
        location.to_string()
    }
}

/// A listing or reading error said plainly: S3 errors name the bucket and key.
fn describe_store(location: &str, e: &datafusion::error::DataFusionError) -> String {
    crate::storage::explain(location, e).unwrap_or_else(|| match is_not_found(e) {
        true => "the location does not exist".to_string(),
        false => format!("cannot list files: {e}"),
    })
}

/// Whether the store said the location is not there, by the error's kind.
fn is_not_found(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError;
    let store_not_found =
        |e: &object_store::Error| matches!(e, object_store::Error::NotFound { .. });
    let io_not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match e.find_root() {
        DataFusionError::ObjectStore(e) => store_not_found(e),
        DataFusionError::IoError(e) => io_not_found(e),
        DataFusionError::External(e) => {
            e.downcast_ref::<object_store::Error>()
                .is_some_and(store_not_found)
                || e.downcast_ref::<std::io::Error>().is_some_and(io_not_found)
        }
        _ => false,
    }
}

impl ProjectSchema {
    /// Table names plus the columns of every table already opened, for completion.
    pub async fn known_names(&self) -> Vec<String> {
        let mut names = self.table_names();
        let mut tables: Vec<Arc<dyn TableProvider>> = Vec::new();
        if let Ok(b) = self.built.lock() {
            tables.extend(b.values().cloned());
        }
        if let Ok(r) = self.registered.read() {
            tables.extend(r.values().cloned());
        }
        for t in tables {
            names.extend(t.schema().fields().iter().map(|f| f.name().clone()));
        }
        names
    }
}
