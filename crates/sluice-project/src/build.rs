//! What building a model's output needs, below the build itself (`build_model`) and its
//! database branch (`to_database`): the model's build context, the increment it adds,
//! the rows it writes, the checks on what was staged, and the manifest to publish.

use crate::project::results::ModelStatus;

use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::prelude::SessionContext;

use super::checks::{self, Baseline, CheckResult};
use super::model::Model;
use super::parquet;
use super::partitioned_parquet;
use super::plan::*;
use super::plan::{increment, Increment as Decided};
use super::progress::Watch;
use super::publish::{self, OutputFile};
use super::publish::{Output, PublishedManifest, Stage};
use super::results::{self, History, ModelResult};
use super::tables::*;
use crate::config::FileFormat;
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub select: Vec<String>,
    pub fail_fast: bool,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Publish the run's models only when every model and check succeeded.
    pub all_or_nothing: bool,
    /// Models built at the same time.
    pub threads: usize,
    /// Volume and schema checks fail when there is nothing published to compare with.
    pub require_baseline: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            select: Vec::new(),
            fail_fast: false,
            full_refresh: false,
            all_or_nothing: false,
            threads: 4,
            require_baseline: false,
        }
    }
}

pub(crate) fn new_run_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}-{:08x}",
        now.format("%Y%m%dT%H%M%S"),
        now.timestamp_subsec_nanos() ^ std::process::id()
    )
}

/// One model's build in one run: the session, the model, the run, and what the model's
/// volume and schema checks compare with.
pub(crate) struct ModelBuild<'a> {
    pub session: &'a Session,
    pub plan: &'a ProjectPlan,
    pub i: usize,
    pub run_id: &'a str,
    pub baseline: Baseline,
    /// Where the plan writing the output is shown while it runs.
    pub watch: Watch,
}

impl<'a> ModelBuild<'a> {
    pub(crate) fn model(&self) -> &'a Model {
        &self.plan.planned[self.i].model
    }

    pub(crate) fn ctx(&self) -> &'a SessionContext {
        &self.session.ctx
    }
}

/// What a stage holds once written: its rows, its schema, and the published files it keeps.
pub(crate) struct Written<'a> {
    pub rows: u64,
    pub schema: &'a [(String, String)],
    pub carried: &'a [OutputFile],
}

/// How an incremental model adds to its published output this run, with what it needs.
pub(crate) enum Increment {
    /// Nothing published yet, or --full-refresh: build it whole.
    Full,
    /// Keep every published file; add the query's rows above the published maximum.
    Append {
        filter: String,
        previous: Vec<OutputFile>,
    },
    /// Replace published rows whose key comes again; keep the rest.
    Merge { filter: Option<String> },
}

pub(crate) async fn plan_increment(
    ctx: &SessionContext,
    m: &Model,
    output: &Output,
    published: Option<&PublishedManifest>,
    full_refresh: bool,
) -> Result<Increment> {
    // Decided as if an output were published; without one (below) it is a full build.
    let decided = increment(m, true, full_refresh);
    if decided == Decided::Full {
        return Ok(Increment::Full);
    }
    let Some(manifest) = published else {
        if output.has_files(ctx).await? {
            // Rebuilding from the sources would lose the rows they no longer hold.
            return Err(m.error(format!(
                "{} holds files but no manifest ({}), so its published rows are unknown; \
                 restore the manifest, or rebuild from the sources with --full-refresh",
                output.display(),
                output.manifest_location()
            )));
        }
        return Ok(Increment::Full);
    };
    let previous_files = manifest.files.clone();
    let previous = format!("__previous_{}", m.name);
    register_location(ctx, &previous, &output.url(), m.format).await?;
    let filter = match &m.watermark {
        Some(col) => {
            let max = super::query::first_value(
                ctx,
                &format!(
                    "SELECT CAST(max({c}) AS VARCHAR) FROM {p}",
                    c = ident(col),
                    p = ident(&previous)
                ),
            )
            .await
            .map_err(|e| m.error(format!("watermark `{col}` of the published output: {e}")))?;
            max.map(|_| {
                format!(
                    "{c} > (SELECT max({c}) FROM {p})",
                    c = ident(col),
                    p = ident(&previous)
                )
            })
        }
        None => None,
    };
    Ok(match decided {
        Decided::Append => Increment::Append {
            // An empty published output has no maximum: add everything.
            filter: filter.unwrap_or_else(|| "true".into()),
            previous: previous_files,
        },
        Decided::Merge => Increment::Merge { filter },
        Decided::Full => Increment::Full,
    })
}

/// What the volume and schema checks compare a new output with: the published manifest
/// (wherever the target is), then the run history for what the manifest lacks.
pub(crate) fn baseline(
    output: &Output,
    published: Option<&PublishedManifest>,
    history: &History,
    m: &Model,
    options: &RunOptions,
) -> Baseline {
    let from_manifest = match published {
        Some(p) => Baseline {
            rows: Some(p.rows),
            schema: Some(p.schema.clone()),
            source: Some(output.manifest_location()),
            required: options.require_baseline,
        },
        None => Baseline {
            required: options.require_baseline,
            ..Baseline::default()
        },
    };
    from_manifest.or(history.baseline(&m.name))
}

/// The model's rows this run adds: all of them, or those above the published watermark.
pub(crate) async fn new_rows(build: &ModelBuild<'_>, increment: &Increment) -> Result<DataFrame> {
    let (ctx, m, plan, i) = (build.ctx(), build.model(), build.plan, build.i);
    let model_sql = &plan.planned[i].sql;
    let (new_rows_sql, shift) = match increment {
        Increment::Append { filter, .. }
        | Increment::Merge {
            filter: Some(filter),
        } => (
            format!("SELECT * FROM (\n{model_sql}\n) AS __new WHERE {filter}"),
            plan.planned[i].sql_shift + 1,
        ),
        _ => (model_sql.clone(), plan.planned[i].sql_shift),
    };
    ctx.sql(&new_rows_sql)
        .await
        .map_err(|e| m.datafusion_error(&e, shift))
}

/// The rows of an incremental model after a merge: this run's new rows, then the published
/// rows whose unique key did not come again and whose erasure key is not on the list.
pub(crate) fn merge_sql(
    m: &Model,
    schema: &[(String, String)],
    new_rows: &str,
    previous: &str,
) -> String {
    let columns = schema
        .iter()
        .map(|(c, _)| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut keep = Vec::new();
    if !m.unique_key.is_empty() {
        let on = m
            .unique_key
            .iter()
            .map(|k| format!("n.{k} = p.{k}", k = ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        keep.push(format!(
            "NOT EXISTS (SELECT 1 FROM {} AS n WHERE {on})",
            ident(new_rows)
        ));
    }
    if let Some(e) = &m.erasure {
        keep.push(format!(
            "NOT EXISTS (SELECT 1 FROM {list} AS e WHERE e.{c} = p.{c})",
            list = ident(&e.list),
            c = ident(&e.column)
        ));
    }
    let filter = if keep.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", keep.join(" AND "))
    };
    format!(
        "SELECT {columns} FROM {n} UNION ALL SELECT {columns} FROM {p} AS p{filter}",
        n = ident(new_rows),
        p = ident(previous),
    )
}

/// Write a query's rows in the model's format (partitioned if asked) under `url`, a
/// folder or prefix ending in `/`; the row count.
pub(crate) async fn write_output(
    df: DataFrame,
    url: &str,
    m: &Model,
    partitioned: bool,
    watch: &Watch,
) -> datafusion::error::Result<u64> {
    let partition_by = if partitioned {
        m.partition_by.clone()
    } else {
        vec![]
    };
    let df = match m.format {
        FileFormat::Delta => delta_types(df)?,
        _ => df,
    };
    let columnar = matches!(m.format, FileFormat::Parquet | FileFormat::Delta);
    if columnar
        && partitioned_parquet::splits(df.schema().inner(), &partition_by)
        && !crate::session::cluster_client::runs_on_cluster(df.task_ctx().session_config())
    {
        let (state, plan, physical) = started(df, watch).await?;
        return partitioned_parquet::write(
            physical,
            state.task_ctx(),
            url,
            &partition_by,
            |sample| parquet::output_options(&m.compression, &plan, sample),
        )
        .await;
    }
    let write_options = DataFrameWriteOptions::new().with_partition_by(partition_by);
    let written = match m.format {
        FileFormat::Delta => {
            let (df, first) = with_first_batch(df, watch).await?;
            let options =
                parquet::output_options(&m.compression, &first.plan, first.batch.as_ref());
            df.write_parquet(url, write_options, Some(options)).await
        }
        FileFormat::Parquet => {
            let (df, first) = with_first_batch(df, watch).await?;
            let options =
                parquet::output_options(&m.compression, &first.plan, first.batch.as_ref());
            df.write_parquet(url, write_options, Some(options)).await
        }
        FileFormat::Csv => df.write_csv(url, write_options, None).await,
        FileFormat::Ndjson => df.write_json(url, write_options, None).await,
        FileFormat::Postgres => Err(datafusion::error::DataFusionError::Plan(format!(
            "model `{}`: a database table is written by COPY, not as files at {url}",
            m.name
        ))),
    }?;
    Ok(written
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum())
}

/// The query's plan and first batch, read ahead so the writer's options can follow the rows.
struct FirstBatch {
    plan: datafusion::logical_expr::LogicalPlan,
    batch: Option<datafusion::arrow::array::RecordBatch>,
}

/// Start `df`, read its first batch, and give back a DataFrame that yields that batch and
/// then the rest of the same run (nothing is computed twice).
/// On a cluster the executors write the files from the plan itself, so nothing is read ahead.
async fn with_first_batch(
    df: DataFrame,
    watch: &Watch,
) -> datafusion::error::Result<(DataFrame, FirstBatch)> {
    use datafusion::catalog::streaming::StreamingTable;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;
    if crate::session::cluster_client::runs_on_cluster(df.task_ctx().session_config()) {
        let plan = df.logical_plan().clone();
        return Ok((df, FirstBatch { plan, batch: None }));
    }
    let (state, plan, physical) = started(df, watch).await?;
    let schema = plan.schema().inner().clone();
    let mut rows = datafusion::physical_plan::execute_stream(physical, state.task_ctx())?;
    let batch = rows.next().await.transpose()?;
    let replay = futures::stream::iter(batch.clone().map(Ok)).chain(rows);
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema.clone(), replay));
    let source: std::sync::Arc<dyn datafusion::physical_plan::streaming::PartitionStream> =
        std::sync::Arc::new(crate::session::engine::one_shot::OneShot::new(stream));
    let table = StreamingTable::try_new(schema, vec![source])?;
    let df = SessionContext::new_with_state(state).read_table(std::sync::Arc::new(table))?;
    Ok((df, FirstBatch { plan, batch }))
}

/// The query's physical plan, shown to the progress watch from now on; with the session
/// state and logical plan it came from.
async fn started(
    df: DataFrame,
    watch: &Watch,
) -> datafusion::error::Result<(
    datafusion::execution::SessionState,
    datafusion::logical_expr::LogicalPlan,
    std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
)> {
    let (state, plan) = df.into_parts();
    let physical = DataFrame::new(state.clone(), plan.clone())
        .create_physical_plan()
        .await?;
    watch.running(physical.clone());
    Ok((state, plan, physical))
}

/// The rows cast to the types a Delta table holds (see `publish::delta::delta_compatible`).
fn delta_types(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    use datafusion::prelude::{cast, col};
    let casts: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let to = publish::delta::delta_compatible(f.data_type());
            let column = col(datafusion::common::Column::from_name(f.name()));
            if &to == f.data_type() {
                column
            } else {
                cast(column, to).alias(f.name())
            }
        })
        .collect();
    df.select(casts)
}

/// Audit the staged output: every check runs on the staged files, exactly what would be
/// published. Returns the manifest, or None when a check failed.
pub(crate) async fn finish_staged(
    build: &ModelBuild<'_>,
    written: Written<'_>,
    stage: &Stage,
    result: &mut ModelResult,
) -> Result<Option<results::Manifest>> {
    let (ctx, m) = (build.ctx(), build.model());
    let Written {
        rows,
        schema,
        carried,
    } = written;
    let mut files = stage.written_files().await?;
    if stage.lists_carried_files() {
        files.extend(carried.iter().cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let staged = TempTable::new(ctx, format!("__staged_{}", m.name));
    let staged_name = &staged.name;
    let staged_table = if files.is_empty() {
        // Nothing was written (no rows): checks see an empty result of the model's query.
        let empty = format!(
            "SELECT * FROM ({}) AS __empty WHERE false",
            build.plan.planned[build.i].sql
        );
        match ctx.sql(&empty).await {
            Ok(df) => register_view(ctx, staged_name, &df, &empty),
            Err(e) => Err(SluiceError::sql(describe_datafusion_error(&e))),
        }
    } else {
        match stage.table_url(ctx, &files) {
            Ok(url) => register_location(ctx, staged_name, &url, m.format.data_files()).await,
            Err(e) => Err(e),
        }
    };
    let checks = match staged_table {
        Ok(()) => run_checks(ctx, staged_name, m, rows, schema, &build.baseline).await,
        Err(e) => Err(e),
    };
    drop(staged);
    result.checks = checks?;
    let bytes = files.iter().map(|f| f.bytes).sum();
    let output = CheckedOutput {
        format: m.format.extension().to_string(),
        rows,
        bytes,
        files,
        schema: schema.to_vec(),
        partition_by: m.partition_by.clone(),
    };
    Ok(output.manifest_if_passed(build, result))
}

/// A staged output whose checks have run (their results in the model's result).
pub(crate) struct CheckedOutput {
    pub format: String,
    pub rows: u64,
    pub bytes: u64,
    pub files: Vec<OutputFile>,
    pub schema: Vec<(String, String)>,
    pub partition_by: Vec<String>,
}

impl CheckedOutput {
    /// The manifest to publish; None when a check failed (said in `result`).
    pub(crate) fn manifest_if_passed(
        self,
        build: &ModelBuild<'_>,
        result: &mut ModelResult,
    ) -> Option<results::Manifest> {
        let m = build.model();
        result.rows = Some(self.rows);
        result.bytes = self.bytes;
        if result.checks.iter().any(CheckResult::failed) {
            result.status = ModelStatus::Fail;
            result.message = format!(
                "check failed: {}; nothing published",
                CheckResult::failed_labels(&result.checks)
            );
            return None;
        }
        Some(results::Manifest {
            run_id: build.run_id.to_string(),
            model: m.name.clone(),
            format: self.format,
            rows: self.rows,
            files: self.files,
            schema: self.schema,
            partition_by: self.partition_by,
            checks: result.checks.clone(),
            published_at: chrono::Utc::now().to_rfc3339(),
            allowed_personal: m.allow_personal.clone(),
        })
    }
}

pub(crate) async fn run_checks(
    ctx: &SessionContext,
    table: &str,
    m: &Model,
    rows: u64,
    schema: &[(String, String)],
    baseline: &Baseline,
) -> Result<Vec<CheckResult>> {
    checks::run_all(ctx, table, &m.checks, rows, schema, baseline)
        .await
        .map_err(|(k, e)| m.error(format!("check {} could not run: {e}", m.checks[k].name())))
}
