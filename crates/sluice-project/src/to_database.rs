//! Building a model whose output is a database table: this run's rows are copied into the
//! staging table, and the checks read what the table will hold once published (the staged
//! rows, or for an incremental model the published rows merged with them, as for files).

use datafusion::prelude::DataFrame;
use sluice_postgres::{Erased, Publish};

use super::build::{merge_sql, new_rows, run_checks, CheckedOutput, Increment, ModelBuild};
use super::plan::ident;
use super::publish::postgres::DatabaseStage;
use super::results::{self, ModelResult};
use super::tables::{output_schema, register_location, register_view, TempTable};
use crate::config::FileFormat;
use crate::error::{describe_datafusion_error, Result};

pub(crate) async fn stage_and_check(
    build: &ModelBuild<'_>,
    increment: &Increment,
    stage: &DatabaseStage,
    result: &mut ModelResult,
) -> Result<Option<results::Manifest>> {
    let (ctx, m) = (build.ctx(), build.model());
    let model_err = |e: datafusion::error::DataFusionError| m.error(describe_datafusion_error(&e));
    let df = new_rows(build, increment).await?;
    let written = copy_rows(build, df, stage).await.map_err(model_err)?;

    let staged_rows = TempTable::new(ctx, format!("__new_{}", m.name));
    register_location(
        ctx,
        &staged_rows.name,
        &stage.staging_location().await,
        FileFormat::Postgres,
    )
    .await?;
    let previous = format!("__previous_{}", m.name);
    let staged = TempTable::new(ctx, format!("__staged_{}", m.name));
    // What a reader will see, in the types the table holds.
    let schema = output_schema(&ctx.table(staged_rows.name.as_str()).await?);
    let (how, rows) = match increment {
        Increment::Full => {
            let all = format!("SELECT * FROM {}", ident(&staged_rows.name));
            register_view(ctx, &staged.name, &ctx.sql(&all).await?, &all)?;
            (Publish::Replace, written.rows)
        }
        Increment::Append { .. } | Increment::Merge { .. } => {
            let sql = merge_sql(m, &schema, &staged_rows.name, &previous);
            let df = ctx.sql(&sql).await.map_err(|e| {
                m.error(format!(
                    "cannot merge with the published table (run with --full-refresh if the columns changed): {}",
                    describe_datafusion_error(&e)
                ))
            })?;
            register_view(ctx, &staged.name, &df, &sql)?;
            result.message = format!("{} new rows", written.rows);
            let rows = super::query::count(
                ctx,
                &format!("SELECT count(*) FROM {}", ident(&staged.name)),
            )
            .await?;
            let how = match increment {
                Increment::Merge { .. } => Publish::Merge {
                    keys: m.unique_key.clone(),
                },
                _ => Publish::Append,
            };
            (how, rows)
        }
    };
    let erased = match increment {
        Increment::Full => None,
        _ => listed_keys(ctx, m, &previous).await?,
    };
    stage.publish_as(how, erased);

    result.checks = run_checks(ctx, &staged.name, m, rows, &schema, &build.baseline).await?;
    let output = CheckedOutput {
        format: FileFormat::Postgres.name().to_string(),
        rows,
        bytes: written.bytes,
        files: Vec::new(),
        schema,
        partition_by: Vec::new(),
    };
    Ok(output.manifest_if_passed(build, result))
}

/// Run the model's query and copy its rows into the staging table.
async fn copy_rows(
    build: &ModelBuild<'_>,
    df: DataFrame,
    stage: &DatabaseStage,
) -> datafusion::error::Result<sluice_postgres::Written> {
    let schema = df.schema().inner().clone();
    let task = df.task_ctx();
    let plan = df.create_physical_plan().await?;
    build.watch.running(plan.clone());
    let rows = datafusion::physical_plan::execute_stream(plan, std::sync::Arc::new(task))?;
    stage.staging.lock().await.write(schema, rows).await
}

/// The keys of `table`'s rows that the model's erasure list names (the published rows a
/// publish, or `sluice erase`, deletes in its transaction); None without a list.
pub(crate) async fn listed_keys(
    ctx: &datafusion::prelude::SessionContext,
    m: &super::model::Model,
    table: &str,
) -> Result<Option<Erased>> {
    let Some(erasure) = &m.erasure else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT DISTINCT CAST(p.{c} AS VARCHAR) FROM {p} AS p \
         WHERE EXISTS (SELECT 1 FROM {list} AS e WHERE e.{c} = p.{c})",
        c = ident(&erasure.column),
        p = ident(table),
        list = ident(&erasure.list),
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| m.error(describe_datafusion_error(&e)))?
        .collect()
        .await
        .map_err(|e| m.error(describe_datafusion_error(&e)))?;
    let keys = batches
        .iter()
        .flat_map(|b| {
            let column = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .ok();
            column
                .map(|c| {
                    let strings = datafusion::arrow::array::AsArray::as_string::<i32>(&c).clone();
                    strings
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    Ok(Some(Erased {
        column: erasure.column.clone(),
        keys,
    }))
}

/// Under `--all-or-nothing`, the run's later models read this model before it is
/// published: what the table will hold, as a view of the staging table (and for an
/// incremental model, of the published rows it keeps).
pub(crate) async fn register_staged(
    ctx: &datafusion::prelude::SessionContext,
    m: &super::model::Model,
    stage: &DatabaseStage,
) -> Result<()> {
    let staged = format!("__staged_rows_{}", m.name);
    register_location(
        ctx,
        &staged,
        &stage.staging_location().await,
        FileFormat::Postgres,
    )
    .await?;
    if stage.replaces() {
        let sql = format!("SELECT * FROM {}", ident(&staged));
        return register_view(ctx, &m.name, &ctx.sql(&sql).await?, &sql);
    }
    let published = format!("__published_{}", m.name);
    register_location(
        ctx,
        &published,
        &stage.output.location(),
        FileFormat::Postgres,
    )
    .await?;
    let schema = output_schema(&ctx.table(staged.as_str()).await?);
    let sql = merge_sql(m, &schema, &staged, &published);
    register_view(ctx, &m.name, &ctx.sql(&sql).await?, &sql)
}
