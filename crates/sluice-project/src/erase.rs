//! `sluice erase`: apply the current erasure lists to what is already published.
//!
//! A model that names an erasure list never publishes a listed key, but a key put on the
//! list after a publish is still in the published files. `erase` finds, per published data
//! file, whether it holds any listed key; files that do not are kept as they are (hard
//! links locally, listed again on S3), files that do are rewritten without those rows, and
//! the result goes through the same stage, check and publish steps as `run`.

use crate::project::results::ModelStatus;
use std::time::Instant;

use datafusion::prelude::SessionContext;

use super::build::{finish_staged, new_run_id, write_output, ModelBuild, Written};
use super::checks::Baseline;
use super::model::{Erasure, Materialized, Model};
use super::plan::{ident, ProjectPlan};
use super::progress::Watch;
use super::publish::commit::{publish_staged, Staged};
use super::publish::{self, OutputFile};
use super::publish::{Output, Stage};
use super::results::{History, ModelResult, RunResults};
use super::tables::{declare_models, register_location, TempTable};
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;
use crate::sources::manifest;

/// Apply the erasure lists to the selected published models. Every model with an erasure
/// list gets one result: `success` (rows removed or nothing to remove), `fail` (a check
/// failed on the rewritten output; nothing published) or `error`. Also written to
/// `target/erase_results.json`; each rewrite is recorded in the run history.
pub async fn erase(session: &Session, plan: &ProjectPlan, select: &[String]) -> Result<RunResults> {
    let project = &session.project;
    let records = project.records_dir();
    std::fs::create_dir_all(&records).map_err(|e| SluiceError::io(&records, e))?;
    publish::clean_staging(&records)?;
    plan.recover_publishes()?;
    let selected = plan.select(select)?;
    declare_models(session, plan);
    let run_id = new_run_id();
    let history = History::of_project(session).await?;
    let mut results = RunResults::new(&run_id, &project.name());
    let started = Instant::now();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        let Some(erasure) = &m.erasure else { continue };
        if !selected.contains(&i) || m.materialized == Materialized::View {
            // A view reads its inputs on every query; the list applies there already.
            continue;
        }
        let t0 = Instant::now();
        let mut result = match erase_model(session, plan, i, erasure, &run_id, &history).await {
            Ok(r) => r,
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = t0.elapsed().as_secs_f64();
        eprintln!("{}", outcome_line(m, &result));
        results.push(result);
        results.write_as(&records, "erase_results.json")?;
    }
    results.elapsed_time = started.elapsed().as_secs_f64();
    results.write_as(&records, "erase_results.json")?;
    history
        .publish_results("erase_results.json", &results)
        .await?;
    Ok(results)
}

fn outcome_line(m: &Model, r: &ModelResult) -> String {
    let mut line = format!("{:<28} {:<6} {}", m.name, status_word(r), r.message);
    for c in r.checks.iter().filter(|c| c.failed()) {
        line.push_str(&format!(
            "\n    check {} {}: {}",
            c.label(),
            c.status,
            c.message
        ));
    }
    line
}

fn status_word(r: &ModelResult) -> &str {
    match r.status.as_str() {
        "success" => "ok",
        other => other,
    }
}

async fn erase_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    erasure: &Erasure,
    run_id: &str,
    history: &History,
) -> Result<ModelResult> {
    let ctx = &session.ctx;
    let m = &plan.planned[i].model;
    let output = plan.location(i);
    let mut result = ModelResult::new(m);
    result.location = Some(output.display());
    let Some(published) = output.manifest(ctx).await? else {
        result.status = ModelStatus::Success;
        result.message = format!("nothing published at {}", output.display());
        return Ok(result);
    };
    if let Output::Database(table) = &output {
        return erase_rows(session, m, table, &output, result, published.rows).await;
    }
    let files = published.files.clone();
    let schema = published.schema.clone();
    let published_rows = published.rows;
    let baseline = Baseline {
        rows: Some(published.rows),
        schema: Some(published.schema.clone()),
        source: Some(output.manifest_location()),
        required: false,
    };

    // Which files hold a listed key, and how many such rows each.
    let scan = "__erase_scan";
    let mut affected: Vec<OutputFile> = Vec::new();
    let mut kept: Vec<OutputFile> = Vec::new();
    let mut removed = 0u64;
    for file in &files {
        let url = listed_url(ctx, &output, std::slice::from_ref(file))?;
        let table = TempTable::new(ctx, scan.to_string());
        register_location(ctx, scan, &url, m.format.data_files()).await?;
        let n = super::query::count(ctx, &listed_rows_sql(scan, erasure)).await;
        drop(table);
        let n = n.map_err(|e| {
            m.error(format!(
                "erasure list `{}` against {}: {e}",
                erasure.list,
                output.file(&file.path)
            ))
        })?;
        if n > 0 {
            removed += n;
            affected.push(file.clone());
        } else {
            kept.push(file.clone());
        }
    }
    if affected.is_empty() {
        result.status = ModelStatus::Success;
        result.rows = Some(published_rows);
        result.message = format!("nothing to erase ({} files checked)", files.len());
        return Ok(result);
    }

    let staging = publish::staging_dir(&session.project.records_dir(), &m.name, run_id);
    let stage = Stage::begin(ctx, &output, staging).await?;
    let build = ModelBuild {
        session,
        plan,
        i,
        run_id,
        baseline,
        watch: Watch::default(),
    };
    let files_after = Rewrite {
        affected: &affected,
        kept: &kept,
        schema: &schema,
        rows: published_rows.saturating_sub(removed),
    };
    let staged = rewrite(&build, erasure, &output, &stage, files_after, &mut result).await;
    match staged {
        Ok(Some(manifest)) => {
            let staged = Staged {
                stage,
                output: output.clone(),
                manifest,
            };
            result.output_files = publish_staged(session, m, staged, history).await?;
            history
                .record_erasure(run_id, &m.name, removed, &affected)
                .await?;
            result.status = ModelStatus::Success;
            result.message = format!(
                "removed {removed} rows: rewrote {} of {} files ({}), kept {} as they were",
                affected.len(),
                files.len(),
                affected
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kept.len()
            );
            Ok(result)
        }
        Ok(None) => {
            stage.discard().await;
            result.message = format!(
                "{}; {removed} listed rows stay published until the check passes",
                result.message
            );
            Ok(result)
        }
        Err(e) => {
            stage.discard().await;
            Err(e)
        }
    }
}

/// A database output: the listed keys' rows are deleted in one transaction.
async fn erase_rows(
    session: &Session,
    m: &Model,
    table: &publish::postgres::DatabaseTable,
    output: &Output,
    mut result: ModelResult,
    published_rows: u64,
) -> Result<ModelResult> {
    let ctx = &session.ctx;
    let scan = TempTable::new(ctx, "__erase_scan".to_string());
    register_location(ctx, &scan.name, &output.url(), m.format).await?;
    let keys = super::to_database::listed_keys(ctx, m, &scan.name).await;
    drop(scan);
    let Some(listed) = keys? else {
        return Ok(result);
    };
    let removed = if listed.keys.is_empty() {
        0
    } else {
        sluice_postgres::erase(
            &table.connection(ctx)?,
            &table.table,
            &listed.column,
            &listed.keys,
        )
        .await
        .map_err(SluiceError::Database)?
    };
    result.status = ModelStatus::Success;
    result.rows = Some(published_rows.saturating_sub(removed));
    result.message = match removed {
        0 => format!("nothing to erase ({published_rows} rows checked)"),
        n => format!(
            "removed {n} rows of {} listed keys from {} in one transaction",
            listed.keys.len(),
            table.table
        ),
    };
    Ok(result)
}

/// The published files an erasure rewrites and keeps, the published schema, and the rows
/// left once the listed ones are gone.
struct Rewrite<'a> {
    affected: &'a [OutputFile],
    kept: &'a [OutputFile],
    schema: &'a [(String, String)],
    rows: u64,
}

/// Stage the kept files and the rewritten ones, then check the whole staged output.
async fn rewrite(
    build: &ModelBuild<'_>,
    erasure: &Erasure,
    output: &Output,
    stage: &Stage,
    files: Rewrite<'_>,
    result: &mut ModelResult,
) -> Result<Option<super::results::Manifest>> {
    let (ctx, m) = (build.ctx(), build.model());
    let Rewrite {
        affected,
        kept,
        schema,
        rows,
    } = files;
    stage.carry(kept)?;
    let source = TempTable::new(ctx, "__erase_source".to_string());
    let url = listed_url(ctx, output, affected)?;
    register_location(ctx, &source.name, &url, m.format.data_files()).await?;
    // The published column order and types: partition columns read back last from the
    // folders, and Parquet strings read back as views, so every file keeps one schema.
    let columns = schema
        .iter()
        .map(|(c, t)| format!("arrow_cast({c}, '{t}') AS {c}", c = ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM {s} AS p WHERE NOT EXISTS (SELECT 1 FROM {list} AS e WHERE e.{c} = p.{c})",
        s = ident(&source.name),
        list = ident(&erasure.list),
        c = ident(&erasure.column),
    );
    let written = match ctx.sql(&sql).await {
        Ok(df) => write_output(df, &stage.write_url(), m, true, &build.watch).await,
        Err(e) => Err(e),
    };
    drop(source);
    written.map_err(|e| {
        m.error(format!(
            "rewriting without erased rows: {}",
            describe_datafusion_error(&e)
        ))
    })?;
    let written = Written {
        rows,
        schema,
        carried: kept,
    };
    finish_staged(build, written, stage, result).await
}

/// Rows of `table` whose erasure key is on the list.
fn listed_rows_sql(table: &str, erasure: &Erasure) -> String {
    format!(
        "SELECT count(*) FROM {t} AS p WHERE EXISTS (SELECT 1 FROM {list} AS e WHERE e.{c} = p.{c})",
        t = ident(table),
        list = ident(&erasure.list),
        c = ident(&erasure.column),
    )
}

/// A table URL that reads exactly `files` of a published output, partition folders
/// included.
fn listed_url(ctx: &SessionContext, output: &Output, files: &[OutputFile]) -> Result<String> {
    let location = match output {
        Output::S3(url) => url.clone(),
        Output::Delta(l) => publish::delta::open(ctx, l)?.url().to_string(),
        Output::Database(t) => {
            return Err(SluiceError::sql(format!(
                "{}: a database table has no files",
                t.location()
            )))
        }
        Output::Local(dir) => {
            let dir = std::path::absolute(dir).map_err(|e| SluiceError::io(dir, e))?;
            url::Url::from_directory_path(&dir)
                .map_err(|()| SluiceError::sql(format!("{}: not a directory path", dir.display())))?
                .to_string()
        }
    };
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    manifest::register_only_listed(&ctx.state(), &location, &paths)
        .map_err(|e| SluiceError::sql(format!("{location}: {}", describe_datafusion_error(&e))))
}
