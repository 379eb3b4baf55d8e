//! The project plan: models discovered, their resolved SQL, what each reads, the order
//! they run in, and where each publishes.

pub(crate) use crate::functions::quote_ident as ident;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::dag;
use super::model::{self, Materialized, Model};
use super::publish::Output;
use super::publish::{self};
use crate::config::Project;
use crate::error::{Result, SluiceError};

/// One model as `run` will build it, computed before anything runs and without side
/// effects (nothing registered, read or written).
pub struct PlannedModel {
    pub model: Model,
    /// Resolved SQL (variables substituted, erasure applied).
    pub sql: String,
    /// Lines sluice put before the model's own SQL in `sql` (the erasure filter's).
    pub sql_shift: usize,
    /// The tables the SQL reads: models and sources.
    pub reads: BTreeSet<String>,
    /// The models among them, as indexes into the plan.
    pub deps: Vec<usize>,
    /// Where a table model publishes: a local folder, an S3 prefix, a Delta table or a
    /// database table (a view publishes nothing).
    pub output: Output,
}

/// What `run` will do, computed before anything runs (and printed by `plan`).
pub struct ProjectPlan {
    pub planned: Vec<PlannedModel>,
    /// Indexes into `planned`, each model after the models it reads.
    pub order: Vec<usize>,
}

pub fn build_plan(project: &Project, vars: &BTreeMap<String, String>) -> Result<ProjectPlan> {
    let models = model::discover(&project.root)?;
    let names: HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let mut sql = Vec::new();
    let mut sql_shift = Vec::new();
    let mut reads = Vec::new();
    // A model and a source of one name would both be that table: which one a query read
    // would depend on the order things were registered in.
    if let Some(m) = models
        .iter()
        .find(|m| project.config.sources.contains_key(&m.name))
    {
        return Err(m.error(format!(
            "a source in sluice.toml has the same name ([sources.{}]); rename the model or the source",
            m.name
        )));
    }
    for m in &models {
        let mut text = model::substitute(m, vars)?;
        let r = dag::reads(m, &text)?;
        for t in &r {
            if !names.contains(t.as_str()) && !project.config.sources.contains_key(t) {
                let known = names
                    .iter()
                    .copied()
                    .chain(project.config.sources.keys().map(String::as_str));
                let hint = crate::diagnostic::did_you_mean_hint(t, known);
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
    let target = project.target();
    let planned = models
        .into_iter()
        .zip(sql)
        .zip(sql_shift)
        .zip(reads)
        .zip(deps)
        .map(|((((model, sql), sql_shift), reads), deps)| PlannedModel {
            output: Output::of_model(
                &target,
                model.location.as_deref(),
                &model.name,
                model.format,
                model.database.as_deref(),
            ),
            model,
            sql,
            sql_shift,
            reads,
            deps,
        })
        .collect();
    Ok(ProjectPlan { planned, order })
}

impl ProjectPlan {
    /// Models chosen by `--select`: names, `+name` (with ancestors), `name+` (with
    /// descendants), folders (`staging/`) and `tag:x`. Empty selects everything.
    pub fn select(&self, selectors: &[String]) -> Result<HashSet<usize>> {
        if selectors.is_empty() {
            return Ok((0..self.planned.len()).collect());
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
                (0..self.planned.len())
                    .filter(|&i| self.planned[i].model.tags.iter().any(|t| t == tag))
                    .collect()
            } else if s.ends_with('/') || s.contains('/') {
                let folder = s.trim_start_matches("models/");
                (0..self.planned.len())
                    .filter(|&i| self.planned[i].model.relative.starts_with(folder))
                    .collect()
            } else {
                (0..self.planned.len())
                    .filter(|&i| self.planned[i].model.name == s)
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
            self.planned[i].deps.clone()
        } else {
            (0..self.planned.len())
                .filter(|&k| self.planned[k].deps.contains(&i))
                .collect()
        };
        for k in next {
            if out.insert(k) {
                self.walk(k, up, out);
            }
        }
    }

    /// The models, in the order they were found.
    pub fn models(&self) -> impl Iterator<Item = &Model> + '_ {
        self.planned.iter().map(|p| &p.model)
    }

    /// Where a table model publishes: a local folder, an S3 prefix or a Delta table.
    pub fn location(&self, i: usize) -> Output {
        self.planned[i].output.clone()
    }

    /// Finish or roll back local publishes a killed run left half done (the rename-aside
    /// protocol), before anything reads a published output. Returns the outputs recovered.
    pub fn recover_publishes(&self) -> Result<Vec<String>> {
        let mut recovered = Vec::new();
        for (i, m) in self.models().enumerate() {
            if m.materialized == Materialized::View {
                continue;
            }
            if let Output::Local(dir) = self.location(i) {
                if publish::recover(&dir)? {
                    recovered.push(dir.display().to_string());
                }
            }
        }
        Ok(recovered)
    }

    /// What this run would do with each selected incremental model, from what is published
    /// (its manifest) alone; nothing is registered or written.
    pub async fn increments(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        selected: &HashSet<usize>,
    ) -> Result<HashMap<usize, Increment>> {
        let mut out = HashMap::new();
        for &i in selected {
            let m = &self.planned[i].model;
            if m.materialized != Materialized::Incremental {
                continue;
            }
            let published = self
                .location(i)
                .manifest(ctx)
                .await
                .map_err(|e| m.error(e.to_string()))?;
            out.insert(i, increment(m, published.is_some(), false));
        }
        Ok(out)
    }

    /// Human-readable plan: order, inputs, outputs and SQL; `increments` says what each
    /// incremental model's run would do, `personal` which outputs carry personal data raw.
    pub fn describe(
        &self,
        selected: &HashSet<usize>,
        increments: &HashMap<usize, Increment>,
        personal: &super::leaks::PersonalData,
    ) -> String {
        let mut s = String::new();
        let mut n = 0;
        for &i in &self.order {
            if !selected.contains(&i) {
                continue;
            }
            n += 1;
            let m = &self.planned[i].model;
            let kind = match m.materialized {
                Materialized::View => "view".to_string(),
                other => format!(
                    "{} -> {} ({}{})",
                    match other {
                        Materialized::Incremental => "incremental",
                        _ => "table",
                    },
                    self.location(i).display(),
                    match m.format {
                        crate::config::FileFormat::Postgres => "postgres",
                        other => other.extension(),
                    },
                    if m.partition_by.is_empty() {
                        String::new()
                    } else {
                        format!(", partitioned by {}", m.partition_by.join(", "))
                    }
                ),
            };
            s.push_str(&format!("{n}. {} [{}] {kind}\n", m.name, m.relative));
            if let Some(inc) = increments.get(&i) {
                let what = match inc {
                    Increment::Full => "full build (nothing published yet)".to_string(),
                    Increment::Append => match &m.watermark {
                        Some(w) => format!("append the rows above the published max({w})"),
                        None => "append to the published rows".to_string(),
                    },
                    Increment::Merge => format!(
                        "merge on ({}) with the published rows{}",
                        m.unique_key.join(", "),
                        match &m.watermark {
                            Some(w) => format!(", reading the rows above the published max({w})"),
                            None => String::new(),
                        }
                    ),
                };
                s.push_str(&format!("   this run: {what}\n"));
            }
            for leak in personal.leaks.get(&i).into_iter().flatten() {
                s.push_str(&format!("   refused, personal data: {}\n", leak.describe()));
            }
            for leak in personal.allowed.get(&i).into_iter().flatten() {
                s.push_str(&format!(
                    "   personal data allowed: `{}` carries `{}` unhashed (allow_personal)\n",
                    leak.column, leak.personal
                ));
            }
            let reads: Vec<&str> = self.planned[i].reads.iter().map(String::as_str).collect();
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
            for line in self.planned[i].sql.lines() {
                s.push_str(&format!("   | {line}\n"));
            }
        }
        s
    }
}

/// How a model's run adds to its published output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Increment {
    /// Build it whole: not incremental, nothing published yet, or --full-refresh.
    Full,
    /// Keep every published row; add the query's new rows.
    Append,
    /// Replace published rows whose unique key comes again; keep the rest.
    Merge,
}

/// The one rule deciding it: what `run` does and what `sluice plan` says.
pub fn increment(m: &Model, published: bool, full_refresh: bool) -> Increment {
    if m.materialized != Materialized::Incremental || full_refresh || !published {
        Increment::Full
    } else if m.unique_key.is_empty() {
        Increment::Append
    } else {
        Increment::Merge
    }
}
