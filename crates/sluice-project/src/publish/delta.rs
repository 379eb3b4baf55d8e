//! Write-audit-publish on a Delta table: the run writes its data files into the table's
//! folder (no Delta reader sees a file the log does not list), the checks read exactly
//! those files, and the publish is one commit to the log. A failed check or a killed run
//! commits nothing; its files are removed then, or by `sluice vacuum`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sluice_delta::{DeltaTable, Location, NewVersion, VersionKind};

use super::local::OutputFile;
use super::objects::{delete, key, list, new_files};
use super::published::PublishedManifest;
use super::writer_lock::WriterLock;
use crate::error::{Result, SluiceError};
use crate::project::results;

pub(crate) fn error(location: &str, e: impl std::error::Error + 'static) -> SluiceError {
    SluiceError::store(location, &e)
}

pub(crate) fn open(ctx: &SessionContext, location: &str) -> Result<Location> {
    Location::new(&ctx.state(), location).map_err(|e| error(location, e))
}

/// The latest version as a published manifest: its files and rows from the log, its
/// schema and run record from the newest commit sluice made (from the log's schema when
/// another writer made the table).
pub(crate) async fn manifest(
    ctx: &SessionContext,
    location: &str,
) -> Result<Option<PublishedManifest>> {
    let table_location = open(ctx, location)?;
    let Some(table) = table_location
        .load_latest()
        .await
        .map_err(|e| error(location, e))?
    else {
        return Ok(None);
    };
    let state = sluice_delta::state(&table)
        .await
        .map_err(|e| error(location, e))?;
    let record = state.sluice.clone().unwrap_or(serde_json::Value::Null);
    let schema: Vec<(String, String)> = record
        .get("schema")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_else(|| {
            state
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect()
        });
    let rows = match state.rows() {
        Some(rows) => rows,
        None => count_rows(ctx, &table, location).await?,
    };
    let files: Vec<OutputFile> = state
        .files
        .into_iter()
        .map(|f| OutputFile {
            path: f.path,
            bytes: f.bytes,
        })
        .collect();
    // The record is the run's; the version may be newer (an erasure, another writer).
    let mut json = match record {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    json.insert("rows".into(), rows.into());
    json.insert(
        "files".into(),
        serde_json::to_value(&files).unwrap_or_default(),
    );
    json.insert("delta_version".into(), state.version.into());
    if let Some(last) = &state.last_commit {
        let at = last
            .timestamp
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        json.insert(
            "delta_last_commit".into(),
            serde_json::json!({"operation": last.operation, "at": at}),
        );
    }
    Ok(Some(PublishedManifest {
        rows,
        files,
        schema,
        json: serde_json::Value::Object(json),
    }))
}

async fn count_rows(ctx: &SessionContext, table: &DeltaTable, location: &str) -> Result<u64> {
    let provider = sluice_delta::table_provider(&ctx.state(), table)
        .await
        .map_err(|e| error(location, e))?;
    let df = ctx.read_table(provider).map_err(|e| error(location, e))?;
    let n = df.count().await.map_err(|e| error(location, e))?;
    Ok(n as u64)
}

/// One run's files in a Delta table's folder, not yet committed.
pub struct DeltaStage {
    pub(crate) location: String,
    table_location: Location,
    /// The version the run writes against; None for a new table.
    table: Option<DeltaTable>,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Objects in the folder before this run wrote anything.
    before: HashSet<ObjectPath>,
    /// This run is the table's only writer until it commits or discards.
    lock: WriterLock,
    /// Columns whose values may go into the log's statistics (None: as the table has it).
    stats_columns: Mutex<Option<Vec<String>>>,
}

impl DeltaStage {
    /// `run`: a name unique to this run, recorded in the writer lock.
    pub(crate) async fn begin(
        ctx: &SessionContext,
        location: &str,
        run: &str,
    ) -> Result<DeltaStage> {
        let table_location = open(ctx, location)?;
        let (store, prefix) = table_location.store();
        let lock = WriterLock::acquire(&store, &prefix, location, run).await?;
        let table = match table_location.load_latest().await {
            Ok(table) => table,
            Err(e) => {
                lock.release().await;
                return Err(error(location, e));
            }
        };
        let before = match list(&store, &prefix, location).await {
            Ok(listed) => listed.into_iter().map(|(p, _)| p).collect(),
            Err(e) => {
                lock.release().await;
                return Err(e);
            }
        };
        Ok(DeltaStage {
            location: location.to_string(),
            table_location,
            table,
            store,
            prefix,
            before,
            lock,
            stats_columns: Mutex::new(None),
        })
    }

    /// Keep these columns' values (and only these) in the statistics of the new version.
    pub fn keep_statistics_of(&self, columns: Vec<String>) {
        if let Ok(mut slot) = self.stats_columns.lock() {
            *slot = Some(columns);
        }
    }

    pub(crate) fn write_url(&self) -> String {
        format!("{}/", self.location)
    }

    /// The table's folder as a URL (`file:///...` locally).
    pub(crate) fn table_url(&self) -> String {
        self.table_location.url().to_string()
    }

    /// The data files this run wrote (the log and sluice's own names left out).
    pub(crate) async fn written_files(&self) -> Result<Vec<OutputFile>> {
        let hidden = |relative: &str| {
            relative
                .split('/')
                .any(|part| part.starts_with('_') || part.starts_with('.'))
        };
        new_files(
            &self.store,
            &self.prefix,
            &self.location,
            &self.before,
            hidden,
        )
        .await
    }

    /// Commit the version holding exactly `files`: the run's new files and the table's
    /// files it keeps. Replaced when it keeps none, appended to when it keeps all, and
    /// otherwise (an erasure) the files left out are removed.
    pub(crate) async fn publish(self, manifest: &results::Manifest) -> Result<PublishedDelta> {
        let location = &self.location;
        let previous = match &self.table {
            Some(t) => Some(
                sluice_delta::state(t)
                    .await
                    .map_err(|e| error(location, e))?,
            ),
            None => None,
        };
        let kept: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let kind = match &previous {
            None => VersionKind::Replace,
            Some(p) if p.files.iter().all(|f| kept.contains(f.path.as_str())) => {
                VersionKind::Append
            }
            Some(p) if p.files.iter().any(|f| kept.contains(f.path.as_str())) => VersionKind::Erase,
            Some(_) => VersionKind::Replace,
        };
        let stats_columns = match (
            self.stats_columns.lock().ok().and_then(|s| s.clone()),
            &self.table,
        ) {
            (Some(columns), _) if kind == VersionKind::Replace => columns,
            (_, Some(t)) => sluice_delta::stats_columns(t),
            (columns, None) => columns.unwrap_or_default(),
        };
        let schema =
            delta_schema(&manifest.schema).map_err(|e| SluiceError::publish(location, e))?;
        let files: Vec<(String, u64)> = manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), f.bytes))
            .collect();
        let mut record = serde_json::to_value(manifest).map_err(|e| error(location, e))?;
        if let serde_json::Value::Object(map) = &mut record {
            // The log lists the files; a long list would only repeat it.
            map.remove("files");
            // A check's sample values (a warning's failing rows) may be personal data, and
            // the log keeps every commit's info for good.
            if let Some(serde_json::Value::Array(checks)) = map.get_mut("checks") {
                for check in checks.iter_mut().filter_map(|c| c.as_object_mut()) {
                    check.remove("samples");
                }
            }
        }
        let committed = sluice_delta::commit(
            &self.table_location,
            self.table.as_ref().zip(previous.as_ref()),
            NewVersion {
                files: &files,
                schema,
                partition_by: &manifest.partition_by,
                stats_columns: &stats_columns,
                kind,
                record,
            },
        )
        .await;
        let version = match committed {
            Ok(version) => version,
            Err(e) => {
                // A store's failure (credentials that may read but not write the log)
                // is said as every store failure is; a lost race as the publish's own.
                let error = match e {
                    sluice_delta::CommitError::Conflict(e) => SluiceError::publish(
                        location.as_str(),
                        format!(
                            "another writer committed to the table while this run ran ({e}); \
                             nothing of this run was committed: run it again"
                        ),
                    ),
                    sluice_delta::CommitError::Failed(e) => {
                        SluiceError::store(location, &e.prefixed("cannot commit to the Delta log"))
                    }
                };
                self.discard().await;
                return Err(error);
            }
        };
        self.lock.release().await;
        let had: HashSet<&str> = previous
            .iter()
            .flat_map(|s| s.files.iter().map(|f| f.path.as_str()))
            .collect();
        let written = files
            .iter()
            .filter(|(p, _)| !had.contains(p.as_str()))
            .map(|(p, _)| key(&self.prefix, p))
            .collect();
        Ok(PublishedDelta {
            location: self.location,
            table_location: self.table_location,
            store: self.store,
            prefix: self.prefix,
            previous_version: previous.map(|p| p.version),
            version,
            written,
        })
    }

    /// Remove what this run wrote; the log is untouched (a commit made meanwhile by
    /// another writer is new too, and stays).
    pub(crate) async fn discard(self) {
        let log = key(&self.prefix, "_delta_log");
        if let Ok(now) = list(&self.store, &self.prefix, &self.location).await {
            let new: Vec<ObjectPath> = now
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| !self.before.contains(p) && !p.prefix_matches(&log))
                .collect();
            let _ = delete(&self.store, new, &self.location).await;
        }
        self.lock.release().await;
    }
}

/// A commit readers see, with what it takes to take it back.
pub struct PublishedDelta {
    location: String,
    table_location: Location,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    previous_version: Option<u64>,
    pub version: u64,
    /// The data files this commit added.
    written: Vec<ObjectPath>,
}

impl PublishedDelta {
    /// Take the commit back (`--all-or-nothing`, a later model failed): the previous
    /// version becomes the latest again by a restore commit, and the files this one added
    /// are deleted; a table this run created is removed.
    pub(crate) async fn undo(self) -> Result<()> {
        match self.previous_version {
            Some(v) => {
                sluice_delta::restore(&self.table_location, v)
                    .await
                    .map_err(|e| error(&self.location, e))?;
                delete(&self.store, self.written, &self.location).await
            }
            None => {
                let everything: Vec<ObjectPath> = list(&self.store, &self.prefix, &self.location)
                    .await?
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                delete(&self.store, everything, &self.location).await
            }
        }
    }
}

/// The Delta schema of an output from its recorded column types: the types Delta holds
/// (strings and binaries as themselves, unsigned integers widened, timestamps in
/// microseconds), as [`delta_compatible`] casts the rows before they are written.
fn delta_schema(columns: &[(String, String)]) -> std::result::Result<Arc<Schema>, String> {
    let fields = columns
        .iter()
        .map(|(name, type_name)| {
            let data_type: DataType = type_name
                .parse()
                .map_err(|e| format!("column `{name}` of type {type_name}: {e}"))?;
            Ok(Field::new(name, delta_compatible(&data_type), true))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The type a column is written as in a Delta table.
pub fn delta_compatible(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    }
}

/// Whether a Delta log is at the location.
pub(crate) async fn exists(ctx: &SessionContext, location: &str) -> Result<bool> {
    open(ctx, location)?
        .is_table()
        .await
        .map_err(|e| error(location, e))
}

/// Any object under the location.
pub(crate) async fn has_objects(ctx: &SessionContext, location: &str) -> Result<bool> {
    let (store, prefix) = open(ctx, location)?.store();
    let prefix = (!prefix.as_ref().is_empty()).then_some(&prefix);
    store
        .list(prefix)
        .try_next()
        .await
        .map(|o| o.is_some())
        .or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(false),
            e => Err(error(location, e)),
        })
}
