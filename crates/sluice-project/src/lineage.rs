//! `sluice lineage`: which tables feed each model (from the DAG) and which columns feed
//! each output column (from DataFusion's logical plan of the model's SQL).
//!
//! Every model is planned over the models it reads, registered as empty tables of their
//! output schema, so lineage needs no data and stops at each model: a model's columns point at
//! the columns of the models and sources it reads, and following the edges from model to
//! model leads down to the sources.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::datasource::{source_as_provider, MemTable};
use serde::Serialize;

use super::plan::ProjectPlan;
use super::tables::replace_table;
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::functions::identity::identity_inputs;
pub(crate) use crate::session::engine::column_feeds::Mode;
use crate::session::engine::column_feeds::{Feeds, Tracer};
use crate::session::Session;
use datafusion::logical_expr::LogicalPlan;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LineageFormat {
    Json,
    Mermaid,
    Dot,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Lineage {
    /// `source_or_model -> model`.
    pub tables: Vec<Edge>,
    /// `table.column -> model.column`: one hop.
    pub columns: Vec<Edge>,
    /// `source.column -> model.column`: the `[sources]` columns each model column is
    /// computed from, followed through every model and view in between.
    pub source_columns: Vec<Edge>,
}

/// What `f` says of each model's plan (None for a model that cannot be planned when not
/// `strict`; its build reports it). Every model is planned over the models it reads,
/// registered as empty tables of their output schema (a scan that stops at the model,
/// where a view would be inlined into its reader's plan), so nothing is read. Those tables
/// stay registered: the docs site reads the models' columns from them.
pub(crate) async fn model_plans<T>(
    session: &Session,
    plan: &ProjectPlan,
    strict: bool,
    f: impl Fn(&LogicalPlan) -> T,
) -> Result<Vec<Option<T>>> {
    let ctx = &session.ctx;
    let mut out: Vec<Option<T>> = (0..plan.planned.len()).map(|_| None).collect();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        let planned = match ctx.sql(&plan.planned[i].sql).await {
            Ok(planned) => planned,
            Err(_) if !strict => continue,
            Err(e) => return Err(m.error(describe_datafusion_error(&e))),
        };
        let schema = Arc::new(planned.schema().as_arrow().clone());
        let table = MemTable::try_new(schema, vec![vec![]])
            .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
        replace_table(ctx, &m.name, Arc::new(table))?;
        out[i] = Some(f(planned.logical_plan()));
    }
    Ok(out)
}

/// `model_plans` for a caller that reads the plans only (the personal data policy,
/// OpenLineage): the empty tables the models were planned over give way to the models
/// again, whether planning went through or not.
pub(crate) async fn model_plans_then_forget<T>(
    session: &Session,
    plan: &ProjectPlan,
    f: impl Fn(&LogicalPlan) -> T,
) -> Result<Vec<Option<T>>> {
    let planned = model_plans(session, plan, false, f).await;
    for m in plan.models() {
        let _ = session.ctx.deregister_table(&m.name);
    }
    planned
}

/// Each model's output columns with the `table.column`s each is computed from, one hop.
pub(crate) async fn model_hops(
    session: &Session,
    plan: &ProjectPlan,
    mode: Mode,
    strict: bool,
) -> Result<Vec<Vec<(String, BTreeSet<String>)>>> {
    let hops = model_plans(session, plan, strict, |planned| column_hops(planned, mode)).await?;
    Ok(hops.into_iter().map(Option::unwrap_or_default).collect())
}

/// A plan's output columns with what feeds each.
pub(crate) fn column_hops(planned: &LogicalPlan, mode: Mode) -> Vec<(String, BTreeSet<String>)> {
    planned
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .zip(tracer(mode).trace(planned))
        .collect()
}

/// A tracer that knows `resolve_identities`: its shared ids come from the edges' columns
/// (and the previous mapping's).
pub(crate) fn tracer(mode: Mode) -> Tracer<'static> {
    Tracer {
        mode,
        scans: &identity_feeds,
    }
}

fn identity_feeds(scan: &datafusion::logical_expr::TableScan) -> Option<Feeds> {
    let provider = source_as_provider(&scan.source).ok()?;
    let inputs = identity_inputs(provider.as_ref())?;
    let edges = BTreeSet::from([
        format!("{}.{}", inputs.edges, inputs.left),
        format!("{}.{}", inputs.edges, inputs.right),
    ]);
    let previous = inputs
        .previous
        .map(|p| BTreeSet::from([format!("{p}.shared_id")]))
        .unwrap_or_default();
    Some(
        scan.projected_schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "previous_shared_id" => previous.clone(),
                "shared_id" => edges.union(&previous).cloned().collect(),
                _ => edges.clone(),
            })
            .collect(),
    )
}

/// Lineage of the selected models (all when `select` is empty).
pub async fn lineage(session: &Session, plan: &ProjectPlan, select: &[String]) -> Result<Lineage> {
    let selected = plan.select(select)?;
    let hops = model_hops(session, plan, Mode::All, true).await?;
    let mut tables = BTreeSet::new();
    let mut columns = BTreeSet::new();
    let mut source_columns = BTreeSet::new();
    // Every model column's source columns, filled in plan order so inputs come first.
    let mut from_sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let is_source = |column: &str| {
        column
            .split_once('.')
            .is_some_and(|(t, _)| session.project.config.sources.contains_key(t))
    };
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        for (field, direct) in &hops[i] {
            let mut upstream = BTreeSet::new();
            for from in direct {
                if is_source(from) {
                    upstream.insert(from.clone());
                } else if let Some(deeper) = from_sources.get(from) {
                    upstream.extend(deeper.iter().cloned());
                }
            }
            from_sources.insert(format!("{}.{field}", m.name), upstream);
        }
        if !selected.contains(&i) {
            continue;
        }
        for input in &plan.planned[i].reads {
            tables.insert(Edge {
                from: input.clone(),
                to: m.name.clone(),
            });
        }
        if let Some(e) = &m.erasure {
            tables.insert(Edge {
                from: e.list.clone(),
                to: m.name.clone(),
            });
        }
        for (field, sources) in &hops[i] {
            let to = format!("{}.{field}", m.name);
            for from in sources {
                columns.insert(Edge {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            for from in from_sources.get(&to).into_iter().flatten() {
                source_columns.insert(Edge {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
    }
    Ok(Lineage {
        tables: tables.into_iter().collect(),
        columns: columns.into_iter().collect(),
        source_columns: source_columns.into_iter().collect(),
    })
}

impl Lineage {
    /// `model.column` and what it is computed from, hop by hop down to the sources:
    /// ```text
    /// eda_launch_events.email_sha256
    ///   <- stg_launch_events.email
    ///     <- launch_events.email (source)
    /// ```
    pub fn upstream(&self, column: &str, sources: &dyn Fn(&str) -> bool) -> Result<String> {
        if !self.columns.iter().any(|e| e.to == column) {
            let known: Vec<&str> = self.columns.iter().map(|e| e.to.as_str()).collect();
            let hint = crate::diagnostic::did_you_mean_hint(column, known.iter().copied());
            return Err(SluiceError::Usage(format!(
                "--column {column}: not a column of a selected model (write model.column){hint}"
            )));
        }
        let mut out = String::new();
        self.upstream_into(column, 0, sources, &mut BTreeSet::new(), &mut out);
        Ok(out)
    }

    fn upstream_into(
        &self,
        column: &str,
        depth: usize,
        sources: &dyn Fn(&str) -> bool,
        seen: &mut BTreeSet<String>,
        out: &mut String,
    ) {
        let indent = "  ".repeat(depth);
        let arrow = if depth == 0 { "" } else { "<- " };
        let note = if sources(column) { " (source)" } else { "" };
        let _ = writeln!(out, "{indent}{arrow}{column}{note}");
        if !seen.insert(column.to_string()) {
            return;
        }
        for e in self.columns.iter().filter(|e| e.to == column) {
            self.upstream_into(&e.from, depth + 1, sources, seen, out);
        }
    }
}

impl Lineage {
    pub fn render(&self, format: LineageFormat) -> String {
        match format {
            LineageFormat::Json => serde_json::to_string_pretty(self).unwrap_or_default(),
            LineageFormat::Mermaid => self.mermaid(),
            LineageFormat::Dot => self.dot(),
        }
    }

    /// Each table with the columns that appear in an edge, in name order.
    fn tables_with_columns(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &self.tables {
            out.entry(e.from.as_str()).or_default();
            out.entry(e.to.as_str()).or_default();
        }
        for e in &self.columns {
            for c in [&e.from, &e.to] {
                let (table, column) = split(c);
                out.entry(table).or_default().insert(column);
            }
        }
        out
    }

    /// Table edges that no column edge already draws (e.g. a model counting rows only).
    fn bare_table_edges(&self) -> Vec<&Edge> {
        let linked: BTreeSet<(&str, &str)> = self
            .columns
            .iter()
            .map(|e| (split(&e.from).0, split(&e.to).0))
            .collect();
        self.tables
            .iter()
            .filter(|e| !linked.contains(&(e.from.as_str(), e.to.as_str())))
            .collect()
    }

    fn mermaid(&self) -> String {
        let tables = self.tables_with_columns();
        let ids = node_ids(&tables);
        let mut s = String::from("flowchart LR\n");
        for (t, (tid, columns)) in tables.iter().zip(ids.iter()) {
            let _ = writeln!(s, "  subgraph {tid}[\"{}\"]", t.0);
            for (c, cid) in t.1.iter().zip(columns) {
                let _ = writeln!(s, "    {cid}[\"{c}\"]");
            }
            s.push_str("  end\n");
        }
        let id = |qualified: &str| node_id(&tables, &ids, qualified);
        for e in &self.columns {
            let _ = writeln!(s, "  {} --> {}", id(&e.from), id(&e.to));
        }
        for e in self.bare_table_edges() {
            let _ = writeln!(
                s,
                "  {} -.-> {}",
                table_id(&tables, &ids, &e.from),
                table_id(&tables, &ids, &e.to)
            );
        }
        s
    }

    fn dot(&self) -> String {
        let tables = self.tables_with_columns();
        let mut s = String::from(
            "digraph lineage {\n  rankdir=LR;\n  compound=true;\n  node [shape=box, fontsize=10];\n",
        );
        for (k, (table, columns)) in tables.iter().enumerate() {
            let _ = writeln!(s, "  subgraph cluster_{k} {{\n    label={};", quote(table));
            // An invisible anchor so table-level edges have an end inside the cluster.
            let _ = writeln!(s, "    {} [shape=point, style=invis];", quote(table));
            for c in columns {
                let _ = writeln!(
                    s,
                    "    {} [label={}];",
                    quote(&format!("{table}.{c}")),
                    quote(c)
                );
            }
            s.push_str("  }\n");
        }
        for e in &self.columns {
            let _ = writeln!(s, "  {} -> {};", quote(&e.from), quote(&e.to));
        }
        for e in self.bare_table_edges() {
            let _ = writeln!(
                s,
                "  {} -> {} [style=dashed];",
                quote(&e.from),
                quote(&e.to)
            );
        }
        s.push_str("}\n");
        s
    }
}

/// `table.column` -> (`table`, `column`); model and source names have no dots.
fn split(qualified: &str) -> (&str, &str) {
    qualified.split_once('.').unwrap_or((qualified, ""))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Mermaid ids: `t3` for the fourth table, `t3c1` for its second column.
fn node_ids(tables: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<(String, Vec<String>)> {
    tables
        .values()
        .enumerate()
        .map(|(k, cols)| {
            (
                format!("t{k}"),
                (0..cols.len()).map(|c| format!("t{k}c{c}")).collect(),
            )
        })
        .collect()
}

fn table_id(
    tables: &BTreeMap<&str, BTreeSet<&str>>,
    ids: &[(String, Vec<String>)],
    table: &str,
) -> String {
    tables
        .keys()
        .position(|t| *t == table)
        .map(|k| ids[k].0.clone())
        .unwrap_or_default()
}

fn node_id(
    tables: &BTreeMap<&str, BTreeSet<&str>>,
    ids: &[(String, Vec<String>)],
    qualified: &str,
) -> String {
    let (table, column) = split(qualified);
    tables
        .iter()
        .position(|(t, _)| *t == table)
        .and_then(|k| {
            let c = tables[table].iter().position(|c| *c == column)?;
            Some(ids[k].1[c].clone())
        })
        .unwrap_or_default()
}
