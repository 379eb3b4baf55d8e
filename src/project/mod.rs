//! Projects of SQL models: discovery, the plan (order, resolved SQL, inputs, outputs), and
//! `run`: execute each model, write it to staging, check it, then publish it.

pub mod checks;
pub mod dag;
pub mod model;
pub mod publish;
pub mod results;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
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
use checks::{run_check, Baseline, CheckResult};
use model::{Materialized, Model, OutputFormat};
use results::{History, ModelResult, RunResults};

/// What `run` will do, computed before anything runs (and printed by `plan`).
pub struct ProjectPlan {
    pub models: Vec<Model>,
    /// Resolved SQL of each model (variables substituted, erasure applied).
    pub sql: Vec<String>,
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
    let mut reads = Vec::new();
    for m in &models {
        let mut text = model::substitute(m, vars)?;
        let r = dag::reads(m, &text)?;
        for t in &r {
            if !names.contains(t.as_str()) && !project.config.sources.contains_key(t) {
                return Err(SluiceError::Model {
                    model: m.name.clone(),
                    file: m.file.clone(),
                    message: format!(
                        "reads `{t}`, which is neither a model nor a source in sluice.toml"
                    ),
                });
            }
        }
        if let Some(e) = &m.erasure {
            text = format!(
                "SELECT * FROM ({text}) AS __model WHERE NOT EXISTS (SELECT 1 FROM {list} AS __erased WHERE __erased.{col} = __model.{col})",
                list = ident(&e.list),
                col = ident(&e.column)
            );
        }
        sql.push(text);
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

    /// The folder a table model publishes to.
    pub fn location(&self, project: &Project, i: usize) -> PathBuf {
        let m = &self.models[i];
        let target = PathBuf::from(project.target());
        match &m.location {
            Some(l) if Path::new(l).is_absolute() => PathBuf::from(l),
            Some(l) => target.join(l),
            None => target.join(&m.name),
        }
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

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub select: Vec<String>,
    pub fail_fast: bool,
}

fn log(line: &str) {
    let now = chrono::Local::now().format("%H:%M:%S");
    eprintln!("{now} {line}");
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

/// Register a folder of output files as a table (a published model, or a staged one).
async fn register_folder(
    ctx: &SessionContext,
    name: &str,
    folder: &Path,
    format: OutputFormat,
) -> Result<()> {
    let def = SourceDef::folder(name, folder, output_format(format));
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
                let loc = plan.location(&session.project, i);
                if !loc.join("_SUCCESS").exists() {
                    return None;
                }
                ModelTable::Published(Box::new(SourceDef::folder(
                    &m.name,
                    &loc,
                    output_format(m.format),
                )))
            }
        };
        Some((m.name.clone(), table))
    });
    session.schema.declare_models(models);
}

/// Build the selected models in order. Returns the results; the caller maps failures to
/// exit codes (1 for a failed model, 3 for a failed check).
pub async fn run(
    session: &Session,
    plan: &ProjectPlan,
    options: &RunOptions,
) -> Result<RunResults> {
    let project = &session.project;
    let target = PathBuf::from(project.target());
    std::fs::create_dir_all(&target).map_err(|e| SluiceError::io(&target, e))?;
    let cleaned = publish::clean_staging(&target)?;
    if cleaned > 0 {
        log(&format!(
            "removed {cleaned} leftover staging folder(s) of an interrupted run"
        ));
    }
    let selected = plan.select(&options.select)?;
    // Models outside the selection stay readable (views, published tables); every model
    // built below is registered over its declaration.
    declare_models(session, plan);
    let run_id = new_run_id();
    let history = History::new(&target);
    let mut results = RunResults::new(&run_id, &project.name());
    let started = Instant::now();
    let mut failed: HashSet<usize> = HashSet::new();
    let mut stop = false;
    for &i in &plan.order {
        let m = &plan.models[i];
        if !selected.contains(&i) {
            continue;
        }
        if stop || plan.deps[i].iter().any(|d| failed.contains(d)) {
            failed.insert(i);
            log(&format!(
                "{:<28} skipped (an upstream model failed)",
                m.name
            ));
            results.push(ModelResult::skipped(m, "an upstream model failed"));
            results.write(&target)?;
            continue;
        }
        log(&format!("{:<28} started", m.name));
        let t0 = Instant::now();
        let outcome = build_model(session, plan, i, &run_id, &target, &history).await;
        let mut result = match outcome {
            Ok(r) => r,
            Err(e) => ModelResult::error(m, &e.to_string()),
        };
        result.execution_time = t0.elapsed().as_secs_f64();
        let line = match result.status.as_str() {
            "success" if result.materialized == "view" => {
                format!(
                    "{:<28} ok     view{}",
                    m.name,
                    result
                        .rows
                        .map(|r| format!(", {r} rows checked"))
                        .unwrap_or_default()
                )
            }
            "success" => format!(
                "{:<28} ok     {} rows, {} files, {:.2}s{}",
                m.name,
                result.rows.unwrap_or(0),
                result.output_files.len(),
                result.execution_time,
                if result.checks.iter().any(|c| c.status == "warn") {
                    " (with warnings)"
                } else {
                    ""
                }
            ),
            status => format!("{:<28} {status}  {}", m.name, result.message),
        };
        log(&line);
        for c in result.checks.iter().filter(|c| c.status != "pass") {
            log(&format!(
                "    check {}{} {}: {}{}",
                c.check,
                c.column
                    .as_ref()
                    .map(|col| format!("({col})"))
                    .unwrap_or_default(),
                c.status,
                c.message,
                if c.samples.is_empty() {
                    String::new()
                } else {
                    format!("; e.g. {}", c.samples.join(", "))
                }
            ));
        }
        if result.status != "success" {
            failed.insert(i);
            stop = options.fail_fast;
        }
        results.push(result);
        results.write(&target)?;
    }
    results.elapsed_time = started.elapsed().as_secs_f64();
    results.write(&target)?;
    Ok(results)
}

async fn build_model(
    session: &Session,
    plan: &ProjectPlan,
    i: usize,
    run_id: &str,
    target: &Path,
    history: &History,
) -> Result<ModelResult> {
    let ctx = &session.ctx;
    let m = &plan.models[i];
    let sql = &plan.sql[i];
    let model_err = |e: datafusion::error::DataFusionError| SluiceError::Model {
        model: m.name.clone(),
        file: m.file.clone(),
        message: describe_datafusion_error(&e),
    };
    let mut result = ModelResult::new(m);
    if m.materialized == Materialized::View {
        let df = ctx.sql(sql).await.map_err(model_err)?;
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
        return Ok(result);
    }

    let df = ctx.sql(sql).await.map_err(model_err)?;
    let schema = output_schema(&df);
    for col in &m.partition_by {
        if !schema.iter().any(|(n, _)| n == col) {
            return Err(SluiceError::Model {
                model: m.name.clone(),
                file: m.file.clone(),
                message: format!("partition_by column `{col}` is not in the model's output"),
            });
        }
    }
    let staged = publish::staging_dir(target, &m.name, run_id);
    std::fs::create_dir_all(&staged).map_err(|e| SluiceError::io(&staged, e))?;
    let dest = format!("{}/", staged.display());
    let write_options = DataFrameWriteOptions::new().with_partition_by(m.partition_by.clone());
    let written = match m.format {
        OutputFormat::Parquet => df.write_parquet(&dest, write_options, None).await,
        OutputFormat::Csv => df.write_csv(&dest, write_options, None).await,
        OutputFormat::Ndjson => df.write_json(&dest, write_options, None).await,
    };
    let written = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(model_err(e));
        }
    };
    let rows: u64 = written
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum();
    let files = publish::data_files(&staged)?;

    // Audit: every check runs on the staged files, exactly what would be published.
    let staged_name = format!("__staged_{}", m.name);
    let staged_table = if files.is_empty() {
        // Nothing was written (no rows): checks see an empty result of the model's query.
        let empty = format!("SELECT * FROM ({sql}) AS __empty WHERE false");
        match ctx.sql(&empty).await {
            Ok(df) => register_view(ctx, &staged_name, &df, &empty),
            Err(e) => Err(model_err(e)),
        }
    } else {
        register_folder(ctx, &staged_name, &staged, m.format).await
    };
    let checks = match staged_table {
        Ok(()) => {
            run_checks(
                ctx,
                &staged_name,
                m,
                rows,
                &schema,
                &history.baseline(&m.name),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let _ = ctx.deregister_table(&staged_name);
    let checks = match checks {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    result.rows = Some(rows);
    result.bytes = files.iter().map(|f| f.bytes).sum();
    result.checks = checks;
    let location = plan.location(&session.project, i);
    result.location = Some(location.display().to_string());
    if result.checks.iter().any(CheckResult::failed) {
        let _ = std::fs::remove_dir_all(&staged);
        result.status = "fail".into();
        let failed: Vec<String> = result
            .checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| {
                format!(
                    "{}{}",
                    c.check,
                    c.column
                        .as_ref()
                        .map(|col| format!("({col})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        result.message = format!("check failed: {}; nothing published", failed.join(", "));
        return Ok(result);
    }

    // Publish: markers are written last inside the staged folder, then one atomic swap.
    let manifest = results::Manifest {
        run_id: run_id.to_string(),
        model: m.name.clone(),
        format: m.format.extension().to_string(),
        rows,
        files: files.clone(),
        schema: schema.clone(),
        partition_by: m.partition_by.clone(),
        checks: result.checks.clone(),
        published_at: chrono::Utc::now().to_rfc3339(),
    };
    publish::write_durably(&staged.join("_SUCCESS"), b"")?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| SluiceError::sql(e.to_string()))?;
    publish::write_durably(&staged.join("_sluice.json"), &json)?;
    publish::publish_dir(&staged, &location)?;
    register_folder(ctx, &m.name, &location, m.format).await?;
    history.record(run_id, &m.name, rows, &schema)?;
    result.output_files = files
        .iter()
        .map(|f| location.join(&f.path).display().to_string())
        .collect();
    result.status = "success".into();
    Ok(result)
}

async fn run_checks(
    ctx: &SessionContext,
    table: &str,
    m: &Model,
    rows: u64,
    schema: &[(String, String)],
    baseline: &Baseline,
) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    for check in &m.checks {
        let r = run_check(ctx, table, check, rows, schema, baseline)
            .await
            .map_err(|e| SluiceError::Model {
                model: m.name.clone(),
                file: m.file.clone(),
                message: format!("check {} could not run: {e}", check.name()),
            })?;
        out.push(r);
    }
    Ok(out)
}
