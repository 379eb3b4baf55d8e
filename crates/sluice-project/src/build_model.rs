//! Building one model: a view is registered and checked; a table's output is written into
//! its stage (incremental models add to or merge with what is published, a database
//! table goes through `to_database`), its checks run on exactly what was staged, and the
//! manifest to publish is handed back.

use std::path::Path;

use super::build::{
    baseline, finish_staged, merge_sql, new_rows, plan_increment, run_checks, write_output,
    Increment, ModelBuild, RunOptions, Written,
};
use super::checks::{Baseline, CheckResult};
use super::model::Materialized;
use super::plan::{ident, ProjectPlan};
use super::progress::Watch;
use super::publish::commit::Staged;
use super::publish::{self, OutputFile, Stage};
use super::results::{self, History, ModelResult, ModelStatus};
use super::tables::{output_schema, register_location, register_view, TempTable};
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;

/// What building one model produced.
pub(crate) struct Built {
    pub(crate) result: ModelResult,
    pub(crate) staged: Option<Staged>,
}

/// What every model's build in one run shares: the run's id, where its records go, its
/// history and its options.
#[derive(Clone, Copy)]
pub(crate) struct RunScope<'a> {
    pub run_id: &'a str,
    pub records: &'a Path,
    pub history: &'a History,
    pub options: &'a RunOptions,
}

pub(crate) async fn build_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    run: RunScope<'_>,
    watch: Watch,
) -> Result<Built> {
    let RunScope {
        run_id,
        records,
        history,
        options,
    } = run;
    let ctx = &session.ctx;
    let m = &plan.planned[i].model;
    let mut result = ModelResult::new(m);
    if m.materialized == Materialized::View {
        let sql = &plan.planned[i].sql;
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| m.datafusion_error(&e, plan.planned[i].sql_shift))?;
        let schema = output_schema(&df);
        register_view(ctx, &m.name, &df, sql)?;
        if !m.checks.is_empty() {
            let rows =
                super::query::count(ctx, &format!("SELECT count(*) FROM {}", ident(&m.name)))
                    .await?;
            result.checks =
                run_checks(ctx, &m.name, m, rows, &schema, &Baseline::default()).await?;
            result.rows = Some(rows);
        }
        result.status = if result.checks.iter().any(CheckResult::failed) {
            ModelStatus::Fail
        } else {
            ModelStatus::Success
        };
        return Ok(Built {
            result,
            staged: None,
        });
    }

    // On a cluster the executors write the files (to the S3 prefix or a shared folder);
    // this client checks them and commits the manifest.
    let output = plan.location(i);
    result.location = Some(output.display());
    let published = output
        .manifest(ctx)
        .await
        .map_err(|e| m.error(e.to_string()))?;
    let build = ModelBuild {
        session,
        plan,
        i,
        run_id,
        baseline: baseline(&output, published.as_ref(), history, m, options),
        watch,
    };
    // `plan_increment` registers the published output under this name.
    let _previous = TempTable::new(ctx, format!("__previous_{}", m.name));
    let increment =
        plan_increment(ctx, m, &output, published.as_ref(), options.full_refresh).await?;
    let staging = publish::staging_dir(records, &m.name, run_id);
    let stage = Stage::begin(ctx, &output, staging.clone()).await?;
    let outcome = stage_and_check(
        &build,
        &increment,
        &stage,
        &staging.with_extension("new"),
        &mut result,
    )
    .await;
    match outcome {
        Ok(Some(manifest)) => {
            result.status = ModelStatus::Success;
            Ok(Built {
                result,
                staged: Some(Staged {
                    stage,
                    output,
                    manifest,
                }),
            })
        }
        Ok(None) => {
            stage.discard().await;
            Ok(Built {
                result,
                staged: None,
            })
        }
        Err(e) => {
            stage.discard().await;
            Err(e)
        }
    }
}

/// Write a table model's output into its stage and run its checks there. Returns the
/// manifest to publish, or None when a check failed (recorded in `result`).
pub(crate) async fn stage_and_check(
    build: &ModelBuild<'_>,
    increment: &Increment,
    stage: &Stage,
    scratch: &Path,
    result: &mut ModelResult,
) -> Result<Option<results::Manifest>> {
    if let Some(table) = stage.database() {
        return super::to_database::stage_and_check(build, increment, table, result).await;
    }
    let (ctx, m, plan, i) = (build.ctx(), build.model(), build.plan, build.i);
    let model_err = |e: datafusion::error::DataFusionError| m.error(describe_datafusion_error(&e));
    let previous = format!("__previous_{}", m.name);
    let df = new_rows(build, increment).await?;
    let schema = output_schema(&df);
    for col in &m.partition_by {
        if !schema.iter().any(|(n, _)| n == col) {
            return Err(m.error(format!(
                "partition_by column `{col}` is not in the model's output"
            )));
        }
    }
    if let Some(delta) = stage.delta() {
        let personal =
            super::personal::personal_columns_in_project(ctx, plan, i, df.logical_plan()).await;
        if let Some(col) = m.partition_by.iter().find(|c| personal.contains(c)) {
            return Err(m.error(format!(
                "partition_by column `{col}` holds personal data, and a Delta table writes \
                 partition values into its log; partition by another column"
            )));
        }
        delta.keep_statistics_of(
            schema
                .iter()
                .map(|(c, _)| c)
                .filter(|c| !personal.contains(c) && !m.partition_by.contains(c))
                .cloned()
                .collect(),
        );
    }
    let rewrite = match increment {
        Increment::Full => false,
        Increment::Merge { .. } => true,
        // Published rows whose key was put on the erasure list since must go too.
        Increment::Append { .. } => m.erasure.is_some(),
    };
    let mut carried: &[OutputFile] = &[];
    let mut kept_rows = 0u64;
    if let (
        Increment::Append {
            previous: files, ..
        },
        false,
    ) = (increment, rewrite)
    {
        // Keep every published file as it is; the new rows go next to them.
        stage.carry(files)?;
        carried = files;
        kept_rows =
            super::query::count(ctx, &format!("SELECT count(*) FROM {}", ident(&previous))).await?;
    }
    let new_rows = if rewrite {
        // New rows first (in a scratch folder), then the published rows that are neither
        // replaced nor erased.
        let new_rows = TempTable::new(ctx, format!("__new_{}", m.name));
        let new_name = &new_rows.name;
        std::fs::create_dir_all(scratch).map_err(|e| SluiceError::io(scratch, e))?;
        let scratch_url = format!("{}/", scratch.display());
        let written = match write_output(df, &scratch_url, m, false, &build.watch).await {
            Ok(n) => register_location(ctx, new_name, &scratch_url, m.format.data_files())
                .await
                .map(|()| n),
            Err(e) => Err(model_err(e)),
        };
        let rows = match written {
            Ok(n) => {
                result.message = format!("{n} new rows");
                let sql = merge_sql(m, &schema, new_name, &previous);
                match ctx.sql(&sql).await {
                    Ok(df) => write_output(df, &stage.write_url(), m, true, &build.watch)
                        .await
                        .map_err(model_err),
                    Err(e) => Err(m.error(format!(
                            "cannot merge with the published output (run with --full-refresh if the columns changed): {}",
                            describe_datafusion_error(&e)
                        ))),
                }
            }
            Err(e) => Err(e),
        };
        drop(new_rows);
        let _ = std::fs::remove_dir_all(scratch);
        rows?
    } else {
        let n = write_output(df, &stage.write_url(), m, true, &build.watch)
            .await
            .map_err(model_err)?;
        if matches!(increment, Increment::Append { .. }) {
            result.message = format!("{n} new rows");
        }
        n
    };
    let written = Written {
        rows: new_rows + kept_rows,
        schema: &schema,
        carried,
    };
    finish_staged(build, written, stage, result).await
}
