//! `sluice test`: the checks of the selected models run again on what is published now.

use crate::project::results::ModelStatus;
use std::time::Instant;

use super::build::*;
use super::checks::CheckResult;
use super::model::Materialized;
use super::plan::*;
use super::progress::Reporter;
use super::results::{History, ModelResult, RunResults};
use super::run::*;
use super::tables::*;
use crate::error::{describe_datafusion_error, Result};
use crate::session::Session;

/// `sluice test`: the checks of the selected models, run again on what is published now
/// (tables) or on what the view returns now. Nothing is written but `test_results.json`.
pub async fn test(session: &Session, plan: &ProjectPlan, select: &[String]) -> Result<RunResults> {
    let project = &session.project;
    let records = project.records_dir();
    let selected = plan.select(select)?;
    declare_models(session, plan);
    let report = Reporter::new();
    let history = History::of_project(session).await?;
    let mut results = RunResults::new(&new_run_id(), &project.name());
    let started = Instant::now();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        if !selected.contains(&i) || m.checks.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let mut result = match test_model(session, plan, i, &history).await {
            Ok(r) => r,
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = t0.elapsed().as_secs_f64();
        let line = match result.status {
            ModelStatus::Success => format!(
                "{:<28} pass   {} checks on {} rows, {:.2}s",
                m.name,
                result.checks.len(),
                result.rows.unwrap_or(0),
                result.execution_time
            ),
            _ => outcome_line(m, &result),
        };
        report.line(&line);
        results.push(result);
    }
    results.elapsed_time = started.elapsed().as_secs_f64();
    if records.is_dir() {
        results.write_as(&records, "test_results.json")?;
    }
    history
        .publish_results("test_results.json", &results)
        .await?;
    Ok(results)
}

pub(crate) async fn test_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    history: &History,
) -> Result<ModelResult> {
    let ctx = &session.ctx;
    let m = &plan.planned[i].model;
    let mut result = ModelResult::new(m);
    let (table, rows, schema) = if m.materialized == Materialized::View {
        let df = ctx
            .table(ident(&m.name).as_str())
            .await
            .map_err(|e| m.error(describe_datafusion_error(&e)))?;
        let schema = output_schema(&df);
        let rows =
            super::query::count(ctx, &format!("SELECT count(*) FROM {}", ident(&m.name))).await?;
        (m.name.clone(), rows, schema)
    } else {
        let output = plan.location(i);
        result.location = Some(output.display());
        let Some(manifest) = output.manifest(ctx).await? else {
            return Ok(ModelResult::error(
                m,
                &format!(
                    "nothing published at {}; run `sluice run` first",
                    output.display()
                ),
            ));
        };
        // The schema the model had when it was published (files may read back with other
        // string types).
        let schema = manifest.schema;
        let table = format!("__published_{}", m.name);
        register_location(ctx, &table, &output.url(), m.format).await?;
        let rows =
            super::query::count(ctx, &format!("SELECT count(*) FROM {}", ident(&table))).await?;
        (table, rows, schema)
    };
    // A published table read for the checks only; a view model stays registered.
    let _published = (table != m.name).then(|| TempTable::new(ctx, table.clone()));
    let checks = run_checks(ctx, &table, m, rows, &schema, &history.baseline(&m.name)).await;
    result.checks = checks?;
    result.rows = Some(rows);
    if result.checks.iter().any(CheckResult::failed) {
        result.status = ModelStatus::Fail;
        result.message = format!(
            "check failed: {}",
            CheckResult::failed_labels(&result.checks)
        );
    } else {
        result.status = ModelStatus::Success;
    }
    Ok(result)
}
