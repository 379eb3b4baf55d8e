//! Projects of SQL models: discovery, the plan (order, resolved SQL, inputs, outputs), and
//! `run`: execute each model, write it to staging, check it, then publish it.

pub mod checks;
pub mod dag;
pub mod docs;
pub mod erase;
pub mod lineage;
pub mod model;
pub mod notify;
pub mod output;
pub mod parquet;
pub mod progress;
pub mod publish;
pub mod results;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::TableProvider;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::ViewTable;
use datafusion::prelude::SessionContext;

use crate::config::{Project, SourceFormat};
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;
use crate::sources::{open_source, ModelTable, SourceDef};
use checks::{Baseline, CheckResult};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use model::{Materialized, Model, OutputFormat};
use output::PublishedManifest;
use output::{Output, Stage};
use progress::Reporter;
use publish::OutputFile;
use results::{History, ModelResult, RemoteRecords, RunResults};

/// What `run` will do, computed before anything runs (and printed by `plan`).
pub struct ProjectPlan {
    pub models: Vec<Model>,
    /// Resolved SQL of each model (variables substituted, erasure applied).
    pub sql: Vec<String>,
    /// Lines sluice put before the model's own SQL in `sql` (the erasure filter's).
    pub sql_shift: Vec<usize>,
    pub reads: Vec<BTreeSet<String>>,
    pub deps: Vec<Vec<usize>>,
    pub order: Vec<usize>,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn build_plan(project: &Project, vars: &BTreeMap<String, String>) -> Result<ProjectPlan> {
    let models = model::discover(&project.root)?;
    let names: HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let mut sql = Vec::new();
    let mut sql_shift = Vec::new();
    let mut reads = Vec::new();
    for m in &models {
        let mut text = model::substitute(m, vars)?;
        let r = dag::reads(m, &text)?;
        for t in &r {
            if !names.contains(t.as_str()) && !project.config.sources.contains_key(t) {
                let known = names
                    .iter()
                    .copied()
                    .chain(project.config.sources.keys().map(String::as_str));
                let hint = crate::diagnostic::did_you_mean(t, known)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                let message = format!(
                    "reads `{t}`, which is neither a model nor a source in sluice.toml{hint}"
                );
                return Err(match crate::diagnostic::find_word(&text, t) {
                    Some(at) => m.error_at(at, 0, message),
                    None => m.error(message),
                });
            }
        }
        // The model's SQL starts on a line of its own, so error positions map back to it.
        let mut shift = 0;
        if let Some(e) = &m.erasure {
            shift = 1;
            text = format!(
                "SELECT * FROM (\n{text}\n) AS __model WHERE NOT EXISTS (SELECT 1 FROM {list} AS __erased WHERE __erased.{col} = __model.{col})",
                list = ident(&e.list),
                col = ident(&e.column)
            );
        }
        sql.push(text);
        sql_shift.push(shift);
        reads.push(r);
    }
    let deps: Vec<Vec<usize>> = reads
        .iter()
        .map(|r| {
            r.iter()
                .filter_map(|t| models.iter().position(|m| &m.name == t))
                .collect()
        })
        .collect();
    let order = dag::order(&models, &deps)?;
    Ok(ProjectPlan {
        models,
        sql,
        sql_shift,
        reads,
        deps,
        order,
    })
}

impl ProjectPlan {
    /// Models chosen by `--select`: names, `+name` (with ancestors), `name+` (with
    /// descendants), folders (`staging/`) and `tag:x`. Empty selects everything.
    pub fn select(&self, selectors: &[String]) -> Result<HashSet<usize>> {
        if selectors.is_empty() {
            return Ok((0..self.models.len()).collect());
        }
        let mut out = HashSet::new();
        for s in selectors {
            let (up, s) = match s.strip_prefix('+') {
                Some(r) => (true, r),
                None => (false, s.as_str()),
            };
            let (down, s) = match s.strip_suffix('+') {
                Some(r) => (true, r),
                None => (false, s),
            };
            let base: Vec<usize> = if let Some(tag) = s.strip_prefix("tag:") {
                (0..self.models.len())
                    .filter(|&i| self.models[i].tags.iter().any(|t| t == tag))
                    .collect()
            } else if s.ends_with('/') || s.contains('/') {
                let folder = s.trim_start_matches("models/");
                (0..self.models.len())
                    .filter(|&i| self.models[i].relative.starts_with(folder))
                    .collect()
            } else {
                (0..self.models.len())
                    .filter(|&i| self.models[i].name == s)
                    .collect()
            };
            if base.is_empty() {
                return Err(SluiceError::Usage(format!(
                    "--select {s}: no model matches"
                )));
            }
            for i in base {
                out.insert(i);
                if up {
                    self.walk(i, true, &mut out);
                }
                if down {
                    self.walk(i, false, &mut out);
                }
            }
        }
        Ok(out)
    }

    fn walk(&self, i: usize, up: bool, out: &mut HashSet<usize>) {
        let next: Vec<usize> = if up {
            self.deps[i].clone()
        } else {
            (0..self.models.len())
                .filter(|&k| self.deps[k].contains(&i))
                .collect()
        };
        for k in next {
            if out.insert(k) {
                self.walk(k, up, out);
            }
        }
    }

    /// Where a table model publishes: a local folder or an S3 prefix.
    pub fn location(&self, project: &Project, i: usize) -> Output {
        let m = &self.models[i];
        Output::resolve(&project.target(), m.location.as_deref(), &m.name)
    }

    /// Finish or roll back local publishes a killed run left half done (the rename-aside
    /// protocol), before anything reads a published output. Returns the outputs recovered.
    pub fn recover_publishes(&self, project: &Project) -> Result<Vec<String>> {
        let mut recovered = Vec::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.materialized == Materialized::View {
                continue;
            }
            if let Output::Local(dir) = self.location(project, i) {
                if publish::recover(&dir)? {
                    recovered.push(dir.display().to_string());
                }
            }
        }
        Ok(recovered)
    }

    /// Human-readable plan: order, inputs, outputs and SQL.
    pub fn describe(&self, project: &Project, selected: &HashSet<usize>) -> String {
        let mut s = String::new();
        let mut n = 0;
        for &i in &self.order {
            if !selected.contains(&i) {
                continue;
            }
            n += 1;
            let m = &self.models[i];
            let kind = match m.materialized {
                Materialized::View => "view".to_string(),
                _ => format!(
                    "table -> {} ({}{})",
                    self.location(project, i).display(),
                    m.format.extension(),
                    if m.partition_by.is_empty() {
                        String::new()
                    } else {
                        format!(", partitioned by {}", m.partition_by.join(", "))
                    }
                ),
            };
            s.push_str(&format!("{n}. {} [{}] {kind}\n", m.name, m.relative));
            let reads: Vec<&str> = self.reads[i].iter().map(String::as_str).collect();
            s.push_str(&format!(
                "   reads: {}\n",
                if reads.is_empty() {
                    "-".into()
                } else {
                    reads.join(", ")
                }
            ));
            if !m.checks.is_empty() {
                let names: Vec<String> = m
                    .checks
                    .iter()
                    .map(|c| match c.column() {
                        Some(col) => format!("{}({col})", c.name()),
                        None => c.name().to_string(),
                    })
                    .collect();
                s.push_str(&format!("   checks: {}\n", names.join(", ")));
            }
            for line in self.sql[i].lines() {
                s.push_str(&format!("   | {line}\n"));
            }
        }
        s
    }
}

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

fn new_run_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}-{:08x}",
        now.format("%Y%m%dT%H%M%S"),
        now.timestamp_subsec_nanos() ^ std::process::id()
    )
}

fn output_format(f: OutputFormat) -> SourceFormat {
    match f {
        OutputFormat::Parquet => SourceFormat::Parquet,
        OutputFormat::Csv => SourceFormat::Csv,
        OutputFormat::Ndjson => SourceFormat::Ndjson,
    }
}

/// Register a folder or prefix of output files as a table (a published model, a staged one).
async fn register_location(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    format: OutputFormat,
) -> Result<()> {
    let def = SourceDef::prefix(name, url, output_format(format));
    let table = open_source(&ctx.state(), &def)
        .await
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    replace_table(ctx, name, table)
}

/// Register an already planned query as a view (CREATE OR REPLACE VIEW would plan the
/// SQL a second time).
fn register_view(ctx: &SessionContext, name: &str, df: &DataFrame, sql: &str) -> Result<()> {
    let view = ViewTable::new(df.logical_plan().clone(), Some(sql.to_string()));
    replace_table(ctx, name, Arc::new(view))
}

/// Column names and types of a model's output, as recorded in manifests and history.
fn output_schema(df: &DataFrame) -> Vec<(String, String)> {
    df.schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

fn replace_table(ctx: &SessionContext, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, table)
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    Ok(())
}

/// Make the project's models queryable by name without building them: views by their
/// SQL, tables by their published output (when there is one). Nothing is read or planned
/// until a statement uses a model.
pub fn declare_models(session: &Session, plan: &ProjectPlan) {
    let models = plan.order.iter().filter_map(|&i| {
        let m = &plan.models[i];
        let table = match m.materialized {
            Materialized::View => ModelTable::View {
                sql: plan.sql[i].clone(),
            },
            _ => {
                let output = plan.location(&session.project, i);
                // On S3 whether it was published is known only by asking, on first use.
                if let Output::Local(dir) = &output {
                    if !dir.join("_SUCCESS").exists() {
                        return None;
                    }
                }
                ModelTable::Published(Box::new(SourceDef::prefix(
                    &m.name,
                    &output.url(),
                    output_format(m.format),
                )))
            }
        };
        Some((m.name.clone(), table))
    });
    session.schema.declare_models(models);
}

/// A model written and checked, not yet published.
struct Staged {
    stage: Stage,
    output: Output,
    manifest: results::Manifest,
}

/// What building one model produced.
struct Built {
    result: ModelResult,
    staged: Option<Staged>,
}

/// One line per finished model, for the log or the live display.
fn outcome_line(m: &Model, result: &ModelResult) -> String {
    let mut line = match result.status.as_str() {
        "success" if result.materialized == "view" => format!(
            "{:<28} ok     view{}",
            m.name,
            result
                .rows
                .map(|r| format!(", {r} rows checked"))
                .unwrap_or_default()
        ),
        "success" => format!(
            "{:<28} ok     {} rows, {} files, {:.2}s{}{}",
            m.name,
            result.rows.unwrap_or(0),
            result.output_files.len(),
            result.execution_time,
            if result.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", result.message)
            },
            if result.checks.iter().any(|c| c.status == "warn") {
                " (with warnings)"
            } else {
                ""
            }
        ),
        status => format!("{:<28} {status}  {}", m.name, result.message),
    };
    for c in result.checks.iter().filter(|c| c.status != "pass") {
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
    for dir in plan.recover_publishes(project)? {
        report.line(&format!("recovered {dir} from an interrupted publish"));
    }
    let selected = plan.select(&options.select)?;
    // Models outside the selection stay readable (views, published tables); every model
    // built below is registered over its declaration.
    declare_models(session, plan);
    let run_id = new_run_id();
    let history = History::open(
        &records,
        RemoteRecords::for_target(&session.ctx, &project.target())?,
    )
    .await?;
    let mut results = RunResults::new(&run_id, &project.name());
    let started = Instant::now();

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
            let m = &plan.models[i];
            let inputs: Vec<usize> = plan.deps[i]
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
                report.started(&m.name);
                let build = build_model(session, plan, i, &run_id, &records, &history, options);
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
        let m = &plan.models[i];
        let mut result = match outcome {
            Ok(Built { result, staged }) => {
                let mut result = result;
                if let Some(staged) = staged {
                    if options.all_or_nothing {
                        // Downstream models of this run read the staged output.
                        let registered =
                            match staged.stage.table_url(&session.ctx, &staged.manifest.files) {
                                Ok(url) => {
                                    register_location(&session.ctx, &m.name, &url, m.format).await
                                }
                                Err(e) => Err(e),
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
                            Err(e) => result = ModelResult::error(m, &e.to_string()),
                        }
                    }
                }
                result
            }
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = elapsed;
        report.finished(&m.name, &outcome_line(m, &result));
        done.insert(i);
        if result.status != "success" {
            failed.insert(i);
            stop = options.fail_fast;
        }
        results.push(result);
        results.write(&records)?;
    }

    if options.all_or_nothing {
        let all_ok = results.results.iter().all(|r| r.status == "success");
        let summary = if all_ok {
            publish_all(session, plan, deferred, &history, &mut results).await?
        } else {
            for (i, staged) in deferred {
                staged.stage.discard().await;
                if let Some(r) = results.result_mut(&plan.models[i].name) {
                    r.status = "skipped".into();
                    r.message =
                        "built and checked, not published: another model failed (--all-or-nothing)"
                            .into();
                }
            }
            "nothing published".to_string()
        };
        report.line(&format!("--all-or-nothing: {summary}"));
    }
    results.elapsed_time = started.elapsed().as_secs_f64();
    results.write(&records)?;
    history
        .publish_results("run_results.json", &results)
        .await?;
    Ok(results)
}

/// `--all-or-nothing` once every model passed: publish them all, and when one publish fails
/// (disk full, permissions, S3), take back the ones already published, so every output is
/// the previous version again. Returns the summary line.
async fn publish_all(
    session: &Session,
    plan: &ProjectPlan,
    deferred: Vec<(usize, Staged)>,
    history: &History,
    results: &mut RunResults,
) -> Result<String> {
    let mut committed: Vec<(usize, Committed)> = Vec::new();
    let mut failed: Option<(usize, SluiceError)> = None;
    for (i, staged) in deferred {
        if failed.is_some() {
            staged.stage.discard().await;
            continue;
        }
        match commit_staged(staged).await {
            Ok(c) => committed.push((i, c)),
            Err(e) => failed = Some((i, e)),
        }
    }
    let Some((bad, error)) = failed else {
        let n = committed.len();
        for (i, c) in committed {
            let m = &plan.models[i];
            let outcome = match c.published.finish().await {
                Ok(()) => after_publish(session, m, &c.manifest, &c.output, history).await,
                Err(e) => Err(e),
            };
            if let Some(r) = results.result_mut(&m.name) {
                match outcome {
                    Ok(files) => r.output_files = files,
                    Err(e) => {
                        r.status = "error".into();
                        r.message = e.to_string();
                    }
                }
            }
        }
        return Ok(format!("published {n} models"));
    };
    let bad_name = plan.models[bad].name.clone();
    if let Some(r) = results.result_mut(&bad_name) {
        r.status = "error".into();
        r.message = format!("publish failed: {error}");
    }
    let mut rolled_back = 0;
    for (i, c) in committed.into_iter().rev() {
        let undone = c.published.undo().await;
        if let Some(r) = results.result_mut(&plan.models[i].name) {
            match undone {
                Ok(()) => {
                    rolled_back += 1;
                    r.status = "skipped".into();
                    r.message = format!(
                        "published, then rolled back to the previous version: publishing `{bad_name}` failed (--all-or-nothing)"
                    );
                }
                Err(e) => {
                    r.status = "error".into();
                    r.message = format!(
                        "publishing `{bad_name}` failed and this model's rollback failed too: {e}"
                    );
                }
            }
        }
    }
    for (i, _) in plan.models.iter().enumerate() {
        let name = &plan.models[i].name;
        if let Some(r) = results.result_mut(name) {
            if r.status == "success" {
                r.status = "skipped".into();
                r.message = format!(
                    "built and checked, not published: publishing `{bad_name}` failed (--all-or-nothing)"
                );
            }
        }
    }
    Ok(format!(
        "publishing `{bad_name}` failed; {rolled_back} published model(s) rolled back, nothing changed"
    ))
}

/// A stage made visible to readers, not yet finished.
struct Committed {
    published: output::Published,
    manifest: results::Manifest,
    output: Output,
}

/// Make a checked stage what readers see (manifest last).
async fn commit_staged(staged: Staged) -> Result<Committed> {
    let Staged {
        stage,
        output,
        manifest,
    } = staged;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| SluiceError::sql(e.to_string()))?;
    let published = stage.publish(&json, &manifest.files).await?;
    Ok(Committed {
        published,
        manifest,
        output,
    })
}

/// Publish a checked stage (manifest last) and read the model from its new output.
/// Returns the published data files.
async fn publish_staged(
    session: &Session,
    m: &Model,
    staged: Staged,
    history: &History,
) -> Result<Vec<String>> {
    let c = commit_staged(staged).await?;
    c.published.finish().await?;
    after_publish(session, m, &c.manifest, &c.output, history).await
}

/// Read the model from its new output and record the publish; the published data files.
async fn after_publish(
    session: &Session,
    m: &Model,
    manifest: &results::Manifest,
    output: &Output,
    history: &History,
) -> Result<Vec<String>> {
    register_location(&session.ctx, &m.name, &output.url(), m.format).await?;
    history
        .record(&manifest.run_id, &m.name, manifest.rows, &manifest.schema)
        .await?;
    Ok(manifest
        .files
        .iter()
        .map(|f| output.file(&f.path))
        .collect())
}

/// How an incremental model adds to its published output this run.
enum Increment {
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

async fn plan_increment(
    ctx: &SessionContext,
    m: &Model,
    output: &Output,
    published: Option<&PublishedManifest>,
    full_refresh: bool,
) -> Result<Increment> {
    if m.materialized != Materialized::Incremental || full_refresh {
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
            let max = checks::first_value(
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
    Ok(match (m.unique_key.is_empty(), filter) {
        (true, filter) => Increment::Append {
            // An empty published output has no maximum: add everything.
            filter: filter.unwrap_or_else(|| "true".into()),
            previous: previous_files,
        },
        (false, filter) => Increment::Merge { filter },
    })
}

async fn build_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    run_id: &str,
    records: &Path,
    history: &History,
    options: &RunOptions,
) -> Result<Built> {
    let ctx = &session.ctx;
    let m = &plan.models[i];
    let mut result = ModelResult::new(m);
    if m.materialized == Materialized::View {
        let sql = &plan.sql[i];
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| m.datafusion_error(&e, plan.sql_shift[i]))?;
        let schema = output_schema(&df);
        register_view(ctx, &m.name, &df, sql)?;
        if !m.checks.is_empty() {
            let rows =
                checks::count(ctx, &format!("SELECT count(*) FROM {}", ident(&m.name))).await?;
            result.checks =
                run_checks(ctx, &m.name, m, rows, &schema, &Baseline::default()).await?;
            result.rows = Some(rows);
        }
        result.status = if result.checks.iter().any(CheckResult::failed) {
            "fail".into()
        } else {
            "success".into()
        };
        return Ok(Built {
            result,
            staged: None,
        });
    }

    // On a cluster the executors write the files (to the S3 prefix or a shared folder);
    // this client checks them and commits the manifest.
    let output = plan.location(&session.project, i);
    result.location = Some(output.display());
    let published = output
        .manifest(ctx)
        .await
        .map_err(|e| m.error(e.to_string()))?;
    let baseline = baseline(&output, published.as_ref(), history, m, options);
    let previous = format!("__previous_{}", m.name);
    let increment = plan_increment(ctx, m, &output, published.as_ref(), options.full_refresh).await;
    let increment = match increment {
        Ok(inc) => inc,
        Err(e) => {
            let _ = ctx.deregister_table(&previous);
            return Err(e);
        }
    };
    let staging = publish::staging_dir(records, &m.name, run_id);
    let stage = match Stage::begin(ctx, &output, staging.clone()).await {
        Ok(stage) => stage,
        Err(e) => {
            let _ = ctx.deregister_table(&previous);
            return Err(e);
        }
    };
    let outcome = stage_and_check(
        session,
        plan,
        i,
        &increment,
        &stage,
        &staging.with_extension("new"),
        run_id,
        &baseline,
        &mut result,
    )
    .await;
    let _ = ctx.deregister_table(&previous);
    match outcome {
        Ok(Some(manifest)) => {
            result.status = "success".into();
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

/// What the volume and schema checks compare a new output with: the published manifest
/// (wherever the target is), then the run history for what the manifest lacks.
fn baseline(
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

/// Write a table model's output into its stage and run its checks there. Returns the
/// manifest to publish, or None when a check failed (recorded in `result`).
#[allow(clippy::too_many_arguments)]
async fn stage_and_check(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    increment: &Increment,
    stage: &Stage,
    scratch: &Path,
    run_id: &str,
    baseline: &Baseline,
    result: &mut ModelResult,
) -> Result<Option<results::Manifest>> {
    let ctx = &session.ctx;
    let m = &plan.models[i];
    let model_err = |e: datafusion::error::DataFusionError| m.error(describe_datafusion_error(&e));
    let previous = format!("__previous_{}", m.name);
    let model_sql = &plan.sql[i];
    let (new_rows_sql, shift) = match increment {
        Increment::Append { filter, .. }
        | Increment::Merge {
            filter: Some(filter),
        } => (
            format!("SELECT * FROM (\n{model_sql}\n) AS __new WHERE {filter}"),
            plan.sql_shift[i] + 1,
        ),
        _ => (model_sql.clone(), plan.sql_shift[i]),
    };
    let df = ctx
        .sql(&new_rows_sql)
        .await
        .map_err(|e| m.datafusion_error(&e, shift))?;
    let schema = output_schema(&df);
    for col in &m.partition_by {
        if !schema.iter().any(|(n, _)| n == col) {
            return Err(m.error(format!(
                "partition_by column `{col}` is not in the model's output"
            )));
        }
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
            checks::count(ctx, &format!("SELECT count(*) FROM {}", ident(&previous))).await?;
    }
    let new_rows = if rewrite {
        // New rows first (in a scratch folder), then the published rows that are neither
        // replaced nor erased.
        let new_name = format!("__new_{}", m.name);
        std::fs::create_dir_all(scratch).map_err(|e| SluiceError::io(scratch, e))?;
        let scratch_url = format!("{}/", scratch.display());
        let written = match write_output(df, &scratch_url, m, false).await {
            Ok(n) => register_location(ctx, &new_name, &scratch_url, m.format)
                .await
                .map(|()| n),
            Err(e) => Err(model_err(e)),
        };
        let rows = match written {
            Ok(n) => {
                result.message = format!("{n} new rows");
                let sql = merge_sql(m, &schema, &new_name, &previous);
                match ctx.sql(&sql).await {
                    Ok(df) => write_output(df, &stage.write_url(), m, true)
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
        let _ = ctx.deregister_table(&new_name);
        let _ = std::fs::remove_dir_all(scratch);
        rows?
    } else {
        let n = write_output(df, &stage.write_url(), m, true)
            .await
            .map_err(model_err)?;
        if matches!(increment, Increment::Append { .. }) {
            result.message = format!("{n} new rows");
        }
        n
    };
    finish_staged(
        session,
        plan,
        i,
        new_rows + kept_rows,
        &schema,
        stage,
        carried,
        run_id,
        baseline,
        result,
    )
    .await
}

/// The rows of an incremental model after a merge: this run's new rows, then the published
/// rows whose unique key did not come again and whose erasure key is not on the list.
fn merge_sql(m: &Model, schema: &[(String, String)], new_rows: &str, previous: &str) -> String {
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
async fn write_output(
    df: DataFrame,
    url: &str,
    m: &Model,
    partitioned: bool,
) -> datafusion::error::Result<u64> {
    let partition_by = if partitioned {
        m.partition_by.clone()
    } else {
        vec![]
    };
    let write_options = DataFrameWriteOptions::new().with_partition_by(partition_by);
    let written = match m.format {
        OutputFormat::Parquet => {
            let options = parquet::output_options(&m.compression, df.logical_plan());
            df.write_parquet(url, write_options, Some(options)).await
        }
        OutputFormat::Csv => df.write_csv(url, write_options, None).await,
        OutputFormat::Ndjson => df.write_json(url, write_options, None).await,
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

/// Audit the staged output: every check runs on the staged files, exactly what would be
/// published. Returns the manifest, or None when a check failed.
#[allow(clippy::too_many_arguments)]
async fn finish_staged(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    rows: u64,
    schema: &[(String, String)],
    stage: &Stage,
    carried: &[OutputFile],
    run_id: &str,
    baseline: &Baseline,
    result: &mut ModelResult,
) -> Result<Option<results::Manifest>> {
    let ctx = &session.ctx;
    let m = &plan.models[i];
    let mut files = stage.written_files().await?;
    if let Stage::S3 { .. } = stage {
        // Carried files stay where they are on S3; the new manifest lists them again.
        files.extend(carried.iter().cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let staged_name = format!("__staged_{}", m.name);
    let staged_table = if files.is_empty() {
        // Nothing was written (no rows): checks see an empty result of the model's query.
        let empty = format!("SELECT * FROM ({}) AS __empty WHERE false", plan.sql[i]);
        match ctx.sql(&empty).await {
            Ok(df) => register_view(ctx, &staged_name, &df, &empty),
            Err(e) => Err(SluiceError::sql(describe_datafusion_error(&e))),
        }
    } else {
        match stage.table_url(ctx, &files) {
            Ok(url) => register_location(ctx, &staged_name, &url, m.format).await,
            Err(e) => Err(e),
        }
    };
    let checks = match staged_table {
        Ok(()) => run_checks(ctx, &staged_name, m, rows, schema, baseline).await,
        Err(e) => Err(e),
    };
    let _ = ctx.deregister_table(&staged_name);
    result.checks = checks?;
    result.rows = Some(rows);
    result.bytes = files.iter().map(|f| f.bytes).sum();
    if result.checks.iter().any(CheckResult::failed) {
        result.status = "fail".into();
        let failed: Vec<String> = result
            .checks
            .iter()
            .filter(|c| c.failed())
            .map(CheckResult::label)
            .collect();
        result.message = format!("check failed: {}; nothing published", failed.join(", "));
        return Ok(None);
    }
    Ok(Some(results::Manifest {
        run_id: run_id.to_string(),
        model: m.name.clone(),
        format: m.format.extension().to_string(),
        rows,
        files,
        schema: schema.to_vec(),
        partition_by: m.partition_by.clone(),
        checks: result.checks.clone(),
        published_at: chrono::Utc::now().to_rfc3339(),
    }))
}

async fn run_checks(
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

/// `sluice test`: the checks of the selected models, run again on what is published now
/// (tables) or on what the view returns now. Nothing is written but `test_results.json`.
pub async fn test(session: &Session, plan: &ProjectPlan, select: &[String]) -> Result<RunResults> {
    let project = &session.project;
    let records = project.records_dir();
    let selected = plan.select(select)?;
    declare_models(session, plan);
    let report = Reporter::new();
    let history = History::open(
        &records,
        RemoteRecords::for_target(&session.ctx, &project.target())?,
    )
    .await?;
    let mut results = RunResults::new(&new_run_id(), &project.name());
    let started = Instant::now();
    for &i in &plan.order {
        let m = &plan.models[i];
        if !selected.contains(&i) || m.checks.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let mut result = match test_model(session, plan, i, &history).await {
            Ok(r) => r,
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = t0.elapsed().as_secs_f64();
        let line = match result.status.as_str() {
            "success" => format!(
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

async fn test_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    history: &History,
) -> Result<ModelResult> {
    let ctx = &session.ctx;
    let m = &plan.models[i];
    let mut result = ModelResult::new(m);
    let (table, rows, schema) = if m.materialized == Materialized::View {
        let df = ctx
            .table(ident(&m.name).as_str())
            .await
            .map_err(|e| m.error(describe_datafusion_error(&e)))?;
        let schema = output_schema(&df);
        let rows = checks::count(ctx, &format!("SELECT count(*) FROM {}", ident(&m.name))).await?;
        (m.name.clone(), rows, schema)
    } else {
        let output = plan.location(&session.project, i);
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
        let rows = checks::count(ctx, &format!("SELECT count(*) FROM {}", ident(&table))).await?;
        (table, rows, schema)
    };
    let checks = run_checks(ctx, &table, m, rows, &schema, &history.baseline(&m.name)).await;
    if table != m.name {
        let _ = ctx.deregister_table(&table);
    }
    result.checks = checks?;
    result.rows = Some(rows);
    let failed: Vec<String> = result
        .checks
        .iter()
        .filter(|c| c.failed())
        .map(CheckResult::label)
        .collect();
    if failed.is_empty() {
        result.status = "success".into();
    } else {
        result.status = "fail".into();
        result.message = format!("check failed: {}", failed.join(", "));
    }
    Ok(result)
}
