//! Delta Lake tables: open one at a version, describe its state, commit the data files a
//! run wrote and audited, take a commit back, vacuum.
//!
//! sluice writes a Delta output's data files with DataFusion's own writers (on a cluster,
//! the executors do), checks exactly those files, and only then turns them into the log's
//! `add` actions here and commits. Until that commit no Delta reader sees them.

mod error;
mod hive_paths;
mod stats;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::execution::context::SessionState;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTableBuilder, TableProperty};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

pub use deltalake::DeltaTable;
use error::{commit_error, describe};
pub use error::{CommitError, DeltaError, Result};
pub use hive_paths::{partition_values, percent_decode};
pub use stats::file_stats;

/// The key under which sluice records its run in a commit's info.
pub const COMMIT_INFO_KEY: &str = "sluice";

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum At {
    #[default]
    Latest,
    Version(u64),
    /// The version current at this time.
    Timestamp(chrono::DateTime<chrono::Utc>),
}

/// A Delta table's location and the store that holds it (the session's own store for
/// that bucket or for the local file system).
#[derive(Clone)]
pub struct Location {
    url: Url,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Location {
    /// `location`: an absolute local path or an `s3://bucket/prefix` URL.
    pub fn new(state: &SessionState, location: &str) -> Result<Location> {
        register_log_stores();
        let url = table_url(location)?;
        let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            &url[..url::Position::BeforePath],
        )
        .map_err(|e| format!("bad location {location}: {e}"))?;
        let store = state
            .runtime_env()
            .object_store(&store_url)
            .map_err(|e| format!("no object store for {location}: {e}"))?;
        Ok(Location { url, store })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The store, rooted at the bucket (or the file system), and the table's path in it.
    pub fn store(&self) -> (Arc<dyn ObjectStore>, ObjectPath) {
        let path = percent_decode(self.url.path().trim_matches('/'));
        (self.store.clone(), ObjectPath::from(path))
    }

    fn builder(&self) -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(self.url.clone())
            .map_err(describe)?
            .with_storage_backend(self.store.clone(), self.url.clone()))
    }

    /// Whether a Delta log is there.
    pub async fn is_table(&self) -> Result<bool> {
        let (store, prefix) = self.store();
        let log = prefix.clone().join("_delta_log");
        let first = store.list(Some(&log)).try_next().await;
        match first {
            Ok(found) => Ok(found.is_some()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(DeltaError::store(e)),
        }
    }

    /// The table at a version; an error when there is no table.
    pub async fn load(&self, at: At) -> Result<DeltaTable> {
        if !self.is_table().await? {
            return Err("not a Delta table (no _delta_log)".to_string().into());
        }
        let builder = self.builder()?;
        let builder = match at {
            At::Latest => builder,
            At::Version(v) => builder.with_version(v),
            At::Timestamp(t) => builder.with_timestamp(t),
        };
        let table = match builder.load().await {
            Ok(table) => table,
            Err(e) => return Err(self.load_error(at, e).await),
        };
        if let At::Timestamp(t) = at {
            // delta-rs answers a time before the first commit with version 0.
            let committed: Vec<deltalake::kernel::CommitInfo> =
                table.history(None).try_collect().await.map_err(describe)?;
            let first = committed
                .iter()
                .filter_map(|c| c.timestamp)
                .min()
                .and_then(chrono::DateTime::from_timestamp_millis);
            if let Some(first) = first.filter(|first| *first > t) {
                return Err(format!(
                    "cannot read the version as of {}: the table's first commit is later, at {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    first.format("%Y-%m-%d %H:%M:%S%.3f UTC")
                )
                .into());
            }
        }
        if at != At::Latest {
            self.check_files_remain(&table).await?;
        }
        Ok(table)
    }

    async fn load_error(&self, at: At, e: deltalake::DeltaTableError) -> DeltaError {
        let latest = match self.builder() {
            Ok(b) => b.load().await.ok().and_then(|t| t.version()),
            Err(_) => None,
        };
        match (at, latest) {
            (At::Version(v), Some(latest)) if v > latest => {
                format!("cannot read version {v}: the latest version is {latest}").into()
            }
            (At::Version(v), _) => describe(e).prefixed(&format!("cannot read version {v}")),
            (At::Timestamp(t), _) => {
                describe(e).prefixed(&format!("cannot read the version as of {t}"))
            }
            (At::Latest, _) => describe(e),
        }
    }

    /// An older version whose files a vacuum deleted cannot be read; say so before a query
    /// fails on the first missing file.
    async fn check_files_remain(&self, table: &DeltaTable) -> Result<()> {
        let version = table.version().unwrap_or(0);
        let (store, prefix) = self.store();
        let present: HashSet<String> = store
            .list(Some(&prefix))
            .map_ok(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(prefix.as_ref())
                    .unwrap_or(m.location.as_ref())
                    .trim_start_matches('/')
                    .to_string()
            })
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let files = state(table).await?.files;
        let missing: Vec<&DataFile> = files
            .iter()
            .filter(|f| !present.contains(&f.path))
            .collect();
        if let Some(first) = missing.first() {
            return Err(format!(
                "version {version} can no longer be read: {} of its {} files were deleted by a \
                 vacuum (e.g. {}); read a later version",
                missing.len(),
                files.len(),
                first.path
            )
            .into());
        }
        Ok(())
    }

    /// The newest version in the log (one listing of `_delta_log/`), None without a log.
    pub async fn latest_version(&self) -> Result<Option<u64>> {
        let (store, prefix) = self.store();
        let log = prefix.clone().join("_delta_log");
        let names: Vec<ObjectPath> = store
            .list(Some(&log))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(DeltaError::store)?;
        Ok(names
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(|name| name.split('.').next()?.parse::<u64>().ok())
            .max())
    }

    /// Every commit, newest first.
    pub async fn history(&self) -> Result<Vec<Commit>> {
        let table = self.load(At::Latest).await?;
        let latest = table.version().unwrap_or(0);
        let infos: Vec<deltalake::kernel::CommitInfo> =
            table.history(None).try_collect().await.map_err(describe)?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| {
                let record = info.info.get(COMMIT_INFO_KEY);
                let checks = record
                    .and_then(|r| r.get("checks"))
                    .and_then(|c| c.as_array());
                Commit {
                    version: latest.saturating_sub(i as u64),
                    timestamp: info.timestamp,
                    operation: info.operation.clone().unwrap_or_default(),
                    run_id: record
                        .and_then(|r| r.get("run_id"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    rows: record.and_then(|r| r.get("rows")).and_then(|v| v.as_u64()),
                    checks: checks.map(|c| {
                        let passed = c
                            .iter()
                            .filter(|c| c.get("status").and_then(|s| s.as_str()) == Some("pass"))
                            .count();
                        format!("{passed} of {} passed", c.len())
                    }),
                }
            })
            .collect())
    }

    /// The latest version, or None when nothing was ever committed here.
    pub async fn load_latest(&self) -> Result<Option<DeltaTable>> {
        if !self.is_table().await? {
            return Ok(None);
        }
        self.load(At::Latest).await.map(Some)
    }
}

/// Delta knows how to keep a log on `file://` by itself; for `s3://` it would need its
/// AWS crate, which brings a second S3 client. sluice hands it the session's own store
/// instead, and Delta's default log (commits by conditional put: `If-None-Match`) on it.
fn register_log_stores() {
    use deltalake::logstore::{LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig};
    struct OnGivenStore;
    impl LogStoreFactory for OnGivenStore {
        fn with_options(
            &self,
            prefixed_store: ObjectStoreRef,
            root_store: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
            Ok(deltalake::logstore::default_logstore(
                prefixed_store,
                root_store,
                location,
                options,
            ))
        }
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(s3) = Url::parse("s3://") {
            deltalake::logstore::logstore_factories()
                .entry(s3)
                .or_insert_with(|| Arc::new(OnGivenStore));
        }
    });
}

/// A table URL with a trailing `/` from a local path or an object store URL.
fn table_url(location: &str) -> Result<Url> {
    let trimmed = location.trim_end_matches('/');
    if trimmed.contains("://") {
        Url::parse(&format!("{trimmed}/"))
            .map_err(|e| format!("bad location {location}: {e}").into())
    } else {
        let path = std::path::absolute(trimmed).map_err(|e| format!("{location}: {e}"))?;
        Url::from_directory_path(&path)
            .map_err(|()| format!("{location}: not a directory path").into())
    }
}

/// The version's data files when reading them as plain Parquet files reads the version
/// exactly: no deletion vectors, no column mapping, every partition value in its file's
/// path (`country=KR/...`, as sluice, Spark and delta-rs write them). None otherwise: then
/// only the Delta scan (`table_provider`) reads it right.
pub async fn plain_files(table: &DeltaTable) -> Result<Option<Vec<String>>> {
    let snapshot = table.snapshot().map_err(describe)?;
    let mapping = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .cloned();
    if mapping.is_some_and(|m| m != "none") {
        return Ok(None);
    }
    let log_store = table.log_store();
    let views: Vec<(String, bool, HashMap<String, Option<String>>)> = snapshot
        .snapshot()
        .file_views(log_store.as_ref(), None)
        .map_ok(|f| {
            (
                f.path().to_string(),
                f.deletion_vector_descriptor().is_some(),
                f.partition_values_map(),
            )
        })
        .try_collect()
        .await
        .map_err(describe)?;
    let mut files = Vec::with_capacity(views.len());
    for (path, deletes, values) in views {
        let in_path = partition_values(&path, &values.keys().cloned().collect::<Vec<_>>());
        let hive = values
            .iter()
            .all(|(k, v)| v.is_some() && in_path.get(k) == Some(v));
        if deletes || !hive {
            return Ok(None);
        }
        files.push(path);
    }
    Ok(Some(files))
}

/// A table version as DataFusion reads it.
pub async fn table_provider(
    state: &SessionState,
    table: &DeltaTable,
) -> Result<Arc<dyn TableProvider>> {
    table.update_datafusion_session(state).map_err(describe)?;
    table
        .table_provider()
        .await
        .map_err(|e| DeltaError::from(format!("cannot read the table: {e}")))
}

/// One data file of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Relative to the table's root, as the object store names it.
    pub path: String,
    pub bytes: u64,
    pub rows: Option<u64>,
}

/// One commit of a table, with what sluice recorded about its run.
#[derive(Debug, Clone)]
pub struct Commit {
    pub version: u64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    pub operation: String,
    pub run_id: Option<String>,
    pub rows: Option<u64>,
    /// `2 of 2 passed`.
    pub checks: Option<String>,
}

/// The newest commit of a table.
#[derive(Debug, Clone)]
pub struct LastCommit {
    pub version: u64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    pub operation: String,
}

/// What a version of a table holds, and what sluice recorded about it.
#[derive(Debug, Clone)]
pub struct TableState {
    pub version: u64,
    pub files: Vec<DataFile>,
    pub partition_columns: Vec<String>,
    pub schema: SchemaRef,
    pub last_commit: Option<LastCommit>,
    /// The run record of the newest commit sluice made, when the newest commits (up to
    /// 20) include one.
    pub sluice: Option<serde_json::Value>,
}

impl TableState {
    /// Rows of the version, when every file's statistics say how many.
    pub fn rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.rows).sum()
    }
}

pub async fn state(table: &DeltaTable) -> Result<TableState> {
    let snapshot = table.snapshot().map_err(describe)?;
    let log_store = table.log_store();
    let files: Vec<DataFile> = snapshot
        .snapshot()
        .file_views(log_store.as_ref(), None)
        .map_ok(|f| DataFile {
            path: f.path().to_string(),
            bytes: f.size().max(0) as u64,
            rows: f.num_records().map(|n| n as u64),
        })
        .try_collect()
        .await
        .map_err(describe)?;
    let version = table.version().unwrap_or(0);
    let history: Vec<deltalake::kernel::CommitInfo> = table
        .history(Some(20))
        .try_collect()
        .await
        .map_err(describe)?;
    let last_commit = history.first().map(|c| LastCommit {
        version,
        timestamp: c.timestamp,
        operation: c.operation.clone().unwrap_or_default(),
    });
    let sluice = history
        .iter()
        .find_map(|c| c.info.get(COMMIT_INFO_KEY).cloned());
    let schema = snapshot.snapshot().arrow_schema();
    Ok(TableState {
        version,
        files,
        partition_columns: snapshot.metadata().partition_columns().to_vec(),
        schema,
        last_commit,
        sluice,
    })
}

/// The columns whose values a table's statistics keep: `delta.dataSkippingStatsColumns`,
/// none with `delta.dataSkippingNumIndexedCols = 0`, else its first 32 columns.
pub fn stats_columns(table: &DeltaTable) -> Vec<String> {
    let Ok(snapshot) = table.snapshot() else {
        return Vec::new();
    };
    let config = snapshot.metadata().configuration();
    if let Some(columns) = config.get("delta.dataSkippingStatsColumns") {
        return columns
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
    }
    let indexed = config
        .get("delta.dataSkippingNumIndexedCols")
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(32);
    let schema = snapshot.snapshot().arrow_schema();
    let take = if indexed < 0 {
        usize::MAX
    } else {
        indexed as usize
    };
    schema
        .fields()
        .iter()
        .take(take)
        .map(|f| f.name().clone())
        .collect()
}

/// A new version: the data files it holds (the table's files it keeps and the new ones),
/// and what sluice records about it.
pub struct NewVersion<'a> {
    /// Every data file of the new version, relative to the table root, with its size.
    pub files: &'a [(String, u64)],
    /// The rows' schema, partition columns included.
    pub schema: SchemaRef,
    pub partition_by: &'a [String],
    /// Columns whose values may appear in the log's per-file statistics; the others
    /// (personal data) never do.
    pub stats_columns: &'a [String],
    pub kind: VersionKind,
    /// Recorded in the commit's info under [`COMMIT_INFO_KEY`].
    pub record: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    /// The table's rows are replaced (or written for the first time).
    Replace,
    /// Rows are added; nothing is removed.
    Append,
    /// Files holding erased rows are replaced by rewritten ones. The commit names no
    /// predicate: the erased keys never reach the log.
    Erase,
}

/// Commit a new version; its number. `table`: the version the files were written
/// against, with its state as [`state`] read it (None for a new table).
pub async fn commit(
    location: &Location,
    written_against: Option<(&DeltaTable, &TableState)>,
    new: NewVersion<'_>,
) -> std::result::Result<u64, CommitError> {
    let (store, root) = location.store();
    let table = written_against.map(|(t, _)| t);
    let active: HashSet<&str> = written_against
        .iter()
        .flat_map(|(_, s)| s.files.iter().map(|f| f.path.as_str()))
        .collect();
    let keep: HashSet<&str> = new.files.iter().map(|(p, _)| p.as_str()).collect();
    let mut actions = Vec::new();
    for (path, bytes) in new
        .files
        .iter()
        .filter(|(p, _)| !active.contains(p.as_str()))
    {
        let add = stats::add_action(
            &store,
            &root,
            path,
            *bytes,
            new.partition_by,
            new.stats_columns,
        )
        .await?;
        actions.push(Action::Add(add));
    }
    // A replacing commit removes every old file itself; the others name what they drop.
    let replacing = table.is_none() || new.kind == VersionKind::Replace;
    let removing = active.iter().any(|p| !keep.contains(p));
    if let Some(t) = table.filter(|_| removing && !replacing) {
        let log_store = t.log_store();
        let removes: Vec<Action> = t
            .snapshot()
            .map_err(describe)?
            .snapshot()
            .file_views(log_store.as_ref(), None)
            .try_filter(|f| futures::future::ready(!keep.contains(f.path().as_ref())))
            .map_ok(|f| Action::Remove(f.remove_action(true)))
            .try_collect()
            .await
            .map_err(describe)?;
        actions.extend(removes);
    }
    let properties = CommitProperties::default()
        .with_metadata([(COMMIT_INFO_KEY.to_string(), new.record.clone())]);
    match (table, new.kind) {
        (None, _) | (Some(_), VersionKind::Replace) => {
            // One commit creates or replaces the table: its schema, partitioning and
            // statistics settings, the new files, and `remove`s for all the old ones.
            let schema: StructType = new
                .schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| format!("a column type Delta cannot hold: {e}"))?;
            let log_store = location.builder()?.build_storage().map_err(describe)?;
            let mut create = CreateBuilder::new()
                .with_log_store(log_store)
                .with_columns(schema.fields().cloned())
                .with_partition_columns(new.partition_by.to_vec())
                .with_save_mode(SaveMode::Overwrite)
                .with_commit_properties(properties)
                .with_actions(actions);
            create = if new.stats_columns.is_empty() {
                create.with_configuration_property(
                    TableProperty::DataSkippingNumIndexedCols,
                    Some("0"),
                )
            } else {
                create.with_configuration_property(
                    TableProperty::DataSkippingStatsColumns,
                    Some(new.stats_columns.join(",")),
                )
            };
            let table = create.await.map_err(commit_error)?;
            Ok(table.version().unwrap_or(0))
        }
        (Some(t), kind) => {
            let operation = match kind {
                VersionKind::Erase => DeltaOperation::Delete { predicate: None },
                _ => DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: (!new.partition_by.is_empty()).then(|| new.partition_by.to_vec()),
                    predicate: None,
                },
            };
            let snapshot = t.snapshot().map_err(describe)?;
            let committed = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(
                    Some(snapshot as &dyn TableReference),
                    t.log_store(),
                    operation,
                )
                .await
                .map_err(commit_error)?;
            Ok(committed.version())
        }
    }
}

/// Make `version` the latest again (a new commit with its files), for a publish taken
/// back after a later model failed.
pub async fn restore(location: &Location, version: u64) -> Result<u64> {
    let table = location.load(At::Latest).await?;
    let (table, _) = table
        .restore()
        .with_version_to_restore(version)
        .await
        .map_err(describe)?;
    Ok(table.version().unwrap_or(version))
}

/// What a vacuum removed (or would remove, on a dry run).
#[derive(Debug, Clone)]
pub struct Vacuumed {
    pub files: Vec<String>,
    pub dry_run: bool,
}

/// Remove the data files no version younger than `retain` refers to, and files the log
/// never referred to (a failed or killed run's), older than `retain` too.
pub async fn vacuum(
    location: &Location,
    retain: chrono::Duration,
    dry_run: bool,
) -> Result<Vacuumed> {
    let table = location.load(At::Latest).await?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retain)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run)
        .await
        .map_err(describe)?;
    Ok(Vacuumed {
        files: metrics.files_deleted,
        dry_run,
    })
}
