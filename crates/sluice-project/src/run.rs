//! `sluice run`: the scheduler loop that builds models as their inputs finish, and the
//! publish of what passed (one by one, or all or nothing).

use super::checks::{CheckResult, CheckStatus};
use crate::project::results::ModelStatus;
use std::collections::HashSet;
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::build::*;
use super::build_model::{build_model, Built, RunScope};
use super::model::{Materialized, Model};
use super::plan::*;
use super::progress::Reporter;
use super::publish;
use super::publish::commit::{publish_all, publish_staged, Staged};
use super::results::{History, ModelResult, RunResults};
use super::tables::*;
use crate::error::{Result, SluiceError};
use crate::session::Session;

/// One line per finished model, for the log or the live display.
pub(crate) fn outcome_line(m: &Model, result: &ModelResult) -> String {
    let mut line = match result.status {
        ModelStatus::Success if result.materialized == Materialized::View => format!(
            "{:<28} ok     view{}",
            m.name,
            result
                .rows
                .map(|r| format!(", {r} rows checked"))
                .unwrap_or_default()
        ),
        ModelStatus::Success => format!(
            "{:<28} ok     {} rows, {}, {:.2}s{}{}",
            m.name,
            result.rows.unwrap_or(0),
            match (m.format, &result.location) {
                (crate::config::FileFormat::Postgres, Some(table)) => format!("into {table}"),
                _ => format!("{} files", result.output_files.len()),
            },
            result.execution_time,
            if result.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", result.message)
            },
            if result.checks.iter().any(|c| c.status == CheckStatus::Warn) {
                " (with warnings)"
            } else {
                ""
            }
        ),
        status => format!("{:<28} {}  {}", m.name, status.as_str(), result.message),
    };
    for c in result
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Pass)
    {
        line.push_str(&format!(
            "\n    check {} {}: {}{}",
            c.label(),
            c.status,
            c.message,
            if c.samples.is_empty() {
                String::new()
            } else {
                format!("; e.g. {}", c.samples.join(", "))
            }
        ));
    }
    line
}

/// Build the selected models, independent ones at the same time (up to `threads`), each
/// as soon as the models it reads are done. Returns the results; the caller maps failures
/// to exit codes (1 for a failed model, 3 for a failed check).
pub async fn run(
    session: &Session,
    plan: &ProjectPlan,
    options: &RunOptions,
) -> Result<RunResults> {
    let project = &session.project;
    let records = project.records_dir();
    std::fs::create_dir_all(&records).map_err(|e| SluiceError::io(&records, e))?;
    let report = Reporter::new();
    let cleaned = publish::clean_staging(&records)?;
    if cleaned > 0 {
        report.line(&format!(
            "removed {cleaned} leftover staging folder(s) of an interrupted run"
        ));
    }
    for dir in plan.recover_publishes()? {
        report.line(&format!("recovered {dir} from an interrupted publish"));
    }
    let selected = plan.select(&options.select)?;
    // Nothing is written when a published model would carry personal data unhashed.
    super::policy::refuse_leaks(session, plan, &selected).await?;
    // Models outside the selection stay readable (views, published tables); every model
    // built below is registered over its declaration.
    declare_models(session, plan);
    let run_id = new_run_id();
    let history = History::of_project(session).await?;
    let mut results = RunResults::new(&run_id, &project.name());
    let started = Instant::now();
    // Lineage events never fail a run: a configuration that cannot be used is a warning.
    let events = match super::openlineage::Emitter::start(session, plan, &run_id).await {
        Ok(events) => events,
        Err(e) => {
            report.line(&format!("openlineage: {e}; the run goes on without events"));
            None
        }
    };

    let mut waiting: Vec<usize> = plan
        .order
        .iter()
        .copied()
        .filter(|i| selected.contains(i))
        .collect();
    let mut done: HashSet<usize> = HashSet::new();
    let mut failed: HashSet<usize> = HashSet::new();
    let mut deferred: Vec<(usize, Staged)> = Vec::new();
    let mut stop = false;
    let mut running = FuturesUnordered::new();
    let threads = options.threads.max(1);
    loop {
        // Start every model whose selected inputs are built, in plan order.
        let mut k = 0;
        while k < waiting.len() {
            let i = waiting[k];
            let m = &plan.planned[i].model;
            let inputs: Vec<usize> = plan.planned[i]
                .deps
                .iter()
                .copied()
                .filter(|d| selected.contains(d))
                .collect();
            let upstream_failed = inputs.iter().any(|d| failed.contains(d));
            if stop || upstream_failed {
                waiting.remove(k);
                failed.insert(i);
                done.insert(i);
                let why = if upstream_failed {
                    "an upstream model failed"
                } else {
                    "--fail-fast: an earlier model failed"
                };
                report.line(&format!("{:<28} skipped ({why})", m.name));
                results.push(ModelResult::skipped(m, why));
                results.write(&records)?;
                continue;
            }
            if running.len() < threads && inputs.iter().all(|d| done.contains(d)) {
                waiting.remove(k);
                let watch = report.started(&m.name);
                if let Some(events) = &events {
                    events.started(plan, i);
                }
                let scope = RunScope {
                    run_id: &run_id,
                    records: &records,
                    history: &history,
                    options,
                };
                let build = build_model(session, plan, i, scope, watch);
                running.push(async move {
                    let t0 = Instant::now();
                    (i, build.await, t0.elapsed().as_secs_f64())
                });
                continue;
            }
            k += 1;
        }
        let Some((i, outcome, elapsed)) = running.next().await else {
            break;
        };
        let m = &plan.planned[i].model;
        let mut result = match outcome {
            Ok(Built { result, staged }) => {
                let mut result = result;
                if let Some(staged) = staged {
                    if options.all_or_nothing {
                        // Downstream models of this run read the staged output.
                        let stage = &staged.stage;
                        let registered = match stage.database() {
                            Some(table) => {
                                super::to_database::register_staged(&session.ctx, m, table).await
                            }
                            None => match stage.table_url(&session.ctx, &staged.manifest.files) {
                                Ok(url) => {
                                    register_location(
                                        &session.ctx,
                                        &m.name,
                                        &url,
                                        m.format.data_files(),
                                    )
                                    .await
                                }
                                Err(e) => Err(e),
                            },
                        };
                        match registered {
                            Ok(()) => deferred.push((i, staged)),
                            Err(e) => {
                                staged.stage.discard().await;
                                result = ModelResult::error(m, &e.to_string());
                            }
                        }
                    } else {
                        match publish_staged(session, m, staged, &history).await {
                            Ok(files) => result.output_files = files,
                            // A database's message names the database and table; the
                            // model is named here.
                            Err(e @ SluiceError::Database(_)) => {
                                result = ModelResult::error(m, &m.error(e.to_string()).to_string())
                            }
                            Err(e) => result = ModelResult::error(m, &e.to_string()),
                        }
                    }
                }
                result
            }
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = elapsed;
        if result.status == ModelStatus::Fail {
            let failed: Vec<String> = result
                .checks
                .iter()
                .filter(|c| c.failed())
                .map(CheckResult::label)
                .collect();
            if let Err(e) = history
                .record_checks_failed(&run_id, &m.name, result.rows, &failed)
                .await
            {
                result.message =
                    format!("{}; not recorded in the run history: {e}", result.message);
            }
        }
        report.finished(&m.name, &outcome_line(m, &result));
        if let Some(events) = &events {
            events.finished(plan, i, &result);
        }
        done.insert(i);
        if result.status != ModelStatus::Success {
            failed.insert(i);
            stop = options.fail_fast;
        }
        results.push(result);
        results.write(&records)?;
    }

    if options.all_or_nothing {
        let all_ok = results
            .results
            .iter()
            .all(|r| r.status == ModelStatus::Success);
        let summary = if all_ok {
            publish_all(session, plan, deferred, &history, &mut results).await?
        } else {
            for (i, staged) in deferred {
                staged.stage.discard().await;
                if let Some(r) = results.result_mut(&plan.planned[i].model.name) {
                    r.status = ModelStatus::Skipped;
                    r.message =
                        "built and checked, not published: another model failed (--all-or-nothing)"
                            .into();
                }
            }
            "nothing published".to_string()
        };
        report.line(&format!("--all-or-nothing: {summary}"));
    }
    if let Some(events) = events {
        for warning in events.finish().await {
            report.line(&warning);
        }
    }
    results.elapsed_time = started.elapsed().as_secs_f64();
    results.write(&records)?;
    history
        .publish_results("run_results.json", &results)
        .await?;
    Ok(results)
}
