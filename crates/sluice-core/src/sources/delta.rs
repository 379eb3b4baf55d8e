//! Delta Lake sources: the table's latest version, or the one a source pins with
//! `version = N` or `timestamp = "..."`, read through the Delta log.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Column;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::{provider_as_source, MemTable, TableType, ViewTable};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{col, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use super::{ModelTable, ProjectSchema, SourceDef};
use crate::config::FileFormat;

pub(super) async fn open(
    state: &SessionState,
    def: &SourceDef,
) -> DFResult<Arc<dyn TableProvider>> {
    open_version(state, def).await.map(|(_, table)| table)
}

/// The table at the version the source asks for, and that version's number.
async fn open_version(
    state: &SessionState,
    def: &SourceDef,
) -> DFResult<(u64, Arc<dyn TableProvider>)> {
    let at = version_of(def).map_err(|e| def.error(e))?;
    let location = def.location.trim_end_matches('/');
    let table_location = sluice_delta::Location::new(state, location).map_err(|e| def.error(e))?;
    let table = table_location.load(at).await.map_err(|e| {
        def.error(crate::storage::explain(location, &e).unwrap_or_else(|| e.to_string()))
    })?;
    let version = table.version().unwrap_or(0);
    let files = sluice_delta::plain_files(&table)
        .await
        .map_err(|e| def.error(e))?;
    let provider = match files {
        Some(files) => as_listed_files(state, def, &table_location, &table, files).await?,
        None => sluice_delta::table_provider(state, &table)
            .await
            .map_err(|e| def.error(e))?,
    };
    Ok((version, provider))
}

/// A Delta source or model in a session that outlives commits (the shell, the server):
/// each statement reads the latest version, found by one listing of the log, and opens it
/// again only when it is newer. Sessions whose plans travel to a cluster, and sources
/// pinned to a version, hold the version they opened.
#[derive(Debug)]
pub struct LatestVersion {
    def: SourceDef,
    current: parking_lot::Mutex<(u64, Arc<dyn TableProvider>)>,
}

impl LatestVersion {
    pub(super) async fn open(
        state: &SessionState,
        def: &SourceDef,
    ) -> DFResult<Arc<dyn TableProvider>> {
        if version_of(def).map_err(|e| def.error(e))? != sluice_delta::At::Latest {
            return open(state, def).await;
        }
        let current = open_version(state, def).await?;
        Ok(Arc::new(LatestVersion {
            def: def.clone(),
            current: parking_lot::Mutex::new(current),
        }))
    }

    fn table(&self) -> Arc<dyn TableProvider> {
        self.current.lock().1.clone()
    }

    async fn latest(&self, state: &SessionState) -> DFResult<Arc<dyn TableProvider>> {
        let location = self.def.location.trim_end_matches('/');
        let table_location =
            sluice_delta::Location::new(state, location).map_err(|e| self.def.error(e))?;
        let latest = table_location
            .latest_version()
            .await
            .map_err(|e| self.def.error(e))?;
        let (held, table) = self.current.lock().clone();
        if latest == Some(held) {
            return Ok(table);
        }
        let (version, newer) = open_version(state, &self.def).await?;
        let changed = newer.schema() != table.schema();
        *self.current.lock() = (version, newer.clone());
        if changed {
            return Err(self.def.error(format!(
                "version {version} changed the table's columns since this statement was planned; run it again"
            )));
        }
        Ok(newer)
    }
}

#[async_trait]
impl TableProvider for LatestVersion {
    fn schema(&self) -> SchemaRef {
        self.table().schema()
    }

    fn table_type(&self) -> TableType {
        self.table().table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.table().supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.latest(session_state(state, "a Delta table")?)
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The version read as its Parquet files through a listed view, which a cluster's
/// executors read too (Delta's own scan does not travel to them): the log's schema and
/// typed partition columns, in the log's column order.
async fn as_listed_files(
    state: &SessionState,
    def: &SourceDef,
    location: &sluice_delta::Location,
    table: &sluice_delta::DeltaTable,
    files: Vec<String>,
) -> DFResult<Arc<dyn TableProvider>> {
    let table_state = sluice_delta::state(table).await.map_err(|e| def.error(e))?;
    let schema = table_state.schema.clone();
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let partitions = &table_state.partition_columns;
    let file_schema = Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !partitions.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let partition_cols = partitions
        .iter()
        .map(|p| {
            let field = schema.field_with_name(p)?;
            Ok((p.clone(), field.data_type().clone()))
        })
        .collect::<DFResult<Vec<_>>>()?;
    let listed = super::manifest::register_only_listed(state, location.url().as_str(), &files)
        .map_err(|e| def.error(e))?;
    let options = ListingOptions::new(Arc::new(super::format::parquet_format()))
        .with_file_extension("")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(super::parse_table_url(&listed)?)
        .with_listing_options(options)
        .with_schema(Arc::new(file_schema));
    let listing: Arc<dyn TableProvider> =
        Arc::new(ListingTable::try_new(config).map_err(|e| def.error(e))?);
    let host = listed
        .strip_prefix(&format!("{}://", super::manifest::LISTED_SCHEME))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let inner: Arc<dyn TableProvider> = match super::manifest::listed_files(&host) {
        Some(listed_files) => Arc::new(super::listed::ListedTable {
            inner: listing,
            host,
            files: listed_files,
        }),
        None => listing,
    };
    if partitions.is_empty() {
        return Ok(inner);
    }
    // Partition columns come last from a listing; put them back where the log has them.
    let scan = LogicalPlanBuilder::scan(def.name.clone(), provider_as_source(inner), None)?;
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| col(Column::new_unqualified(f.name())))
        .collect();
    let plan = scan.project(columns)?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The version a source asks for.
fn version_of(def: &SourceDef) -> Result<sluice_delta::At, String> {
    match (def.config.version, &def.config.timestamp) {
        (Some(_), Some(_)) => Err("give `version` or `timestamp`, not both".into()),
        (Some(v), None) => u64::try_from(v)
            .map(sluice_delta::At::Version)
            .map_err(|_| format!("version {v}: versions start at 0")),
        (None, Some(t)) => parse_time(t).map(sluice_delta::At::Timestamp),
        (None, None) => Ok(sluice_delta::At::Latest),
    }
}

/// RFC 3339 (`2026-11-29T10:00:00Z`), `2026-11-29 10:00:00` (UTC) or a date (its start, UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(format!(
        "timestamp `{text}`: expected RFC 3339 (2026-11-29T10:00:00Z), `2026-11-29 10:00:00` or a date"
    ))
}

/// `delta_history('name')`: the commits of a Delta source, of a model published as a
/// Delta table, or of the table at a path, newest first: version, time, operation and the
/// run sluice recorded (run id, rows, checks). The same in the shell, the server and `run`.
#[derive(Debug)]
pub struct DeltaHistory {
    schema: Weak<ProjectSchema>,
}

impl DeltaHistory {
    pub fn new(schema: &Arc<ProjectSchema>) -> DeltaHistory {
        DeltaHistory {
            schema: Arc::downgrade(schema),
        }
    }
}

impl TableFunctionImpl for DeltaHistory {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let usage = || {
            DataFusionError::Plan(
                "delta_history takes the name of a Delta source or model, or a path: delta_history('orders')".into(),
            )
        };
        let [Expr::Literal(ScalarValue::Utf8(Some(name)) | ScalarValue::Utf8View(Some(name)), _)] =
            args.exprs()
        else {
            return Err(usage());
        };
        let schema = self.schema.upgrade().ok_or_else(usage)?;
        let location = schema
            .delta_location(name)
            .or_else(|| (name.contains('/') || name.contains("://")).then(|| name.clone()));
        let Some(location) = location else {
            return Err(DataFusionError::Plan(format!(
                "delta_history: `{name}` is neither a Delta source, a model with format = \"delta\", nor a path"
            )));
        };
        Ok(Arc::new(HistoryTable {
            name: name.clone(),
            location,
        }))
    }
}

#[derive(Debug)]
struct HistoryTable {
    name: String,
    location: String,
}

fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "committed_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("checks", DataType::Utf8, true),
    ]))
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        history_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let session_state = session_state(state, "delta_history")?;
        let failed = |e: sluice_delta::DeltaError| {
            DataFusionError::Plan(format!("delta_history('{}'): {e}", self.name))
        };
        let location =
            sluice_delta::Location::new(session_state, self.location.trim_end_matches('/'))
                .map_err(failed)?;
        let commits = location.history().await.map_err(failed)?;
        let column = |f: &dyn Fn(&sluice_delta::Commit) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(commits.iter().map(f).collect::<Vec<_>>()))
        };
        let batch = RecordBatch::try_new(
            history_schema(),
            vec![
                Arc::new(Int64Array::from(
                    commits.iter().map(|c| c.version as i64).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMillisecondArray::from(
                        commits.iter().map(|c| c.timestamp).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                column(&|c| Some(c.operation.clone())),
                column(&|c| c.run_id.clone()),
                Arc::new(Int64Array::from(
                    commits
                        .iter()
                        .map(|c| c.rows.map(|r| r as i64))
                        .collect::<Vec<_>>(),
                )),
                column(&|c| c.checks.clone()),
            ],
        )?;
        MemTable::try_new(history_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The full session state a scan that opens tables needs.
fn session_state<'a>(state: &'a dyn Session, what: &str) -> DFResult<&'a SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Internal(format!("{what} needs a SessionState")))
}

impl ProjectSchema {
    /// Where the Delta table of a source or a published model is.
    pub fn delta_location(&self, name: &str) -> Option<String> {
        if let Some(def) = self.source(name) {
            return (def.format == FileFormat::Delta).then(|| def.location.clone());
        }
        match self.model(name)? {
            ModelTable::Published(def) if def.format == FileFormat::Delta => {
                Some(def.location.clone())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_source_may_pin() {
        assert_eq!(
            parse_time("2026-11-29T10:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-29T09:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-29 10:00:00").unwrap().to_rfc3339(),
            "2026-11-29T10:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-29").unwrap().to_rfc3339(),
            "2026-11-29T00:00:00+00:00"
        );
        assert!(parse_time("yesterday")
            .unwrap_err()
            .starts_with("timestamp `yesterday`"));
    }
}
