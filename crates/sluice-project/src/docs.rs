//! `sluice docs --out DIR`: one self-contained `index.html` (styles, script and the lineage
//! graph inline; no server, network or CDN) describing the project's sources and models:
//! descriptions, columns and types, the columns each is computed from, checks with their
//! last results, the last run's status and the published row counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use datafusion::arrow::array::{Array, Int64Array};

use super::charts;
use super::html::esc;
use super::lineage::{self, Lineage};
use super::model::Materialized;
use super::results::History;
use super::ProjectPlan;
use crate::error::{Result, SluiceError};
use crate::session::Session;

/// What the page says about one table (source or model).
struct Table {
    name: String,
    kind: &'static str,
    description: String,
    location: String,
    columns: Vec<(String, String)>,
    /// Why the columns could not be read, when they could not.
    problem: Option<String>,
}

/// Write the site and return the path of its `index.html`.
pub async fn write_site(session: &Session, plan: &ProjectPlan, out: &Path) -> Result<PathBuf> {
    let project = &session.project;
    // Which columns hold personal data unhashed; planned before the lineage, whose tables
    // of the models' output schemas the columns below are read from.
    let personal = super::policy::personal_data(session, plan).await?;
    // Plans every model (registering each as a table of its output schema), so the schemas
    // below come from the same plans as the lineage.
    let lineage = lineage::lineage(session, plan, &[]).await?;
    let marks = personal_marks(project, plan, &personal, &lineage);
    let ctx = &session.ctx;
    let mut tables = Vec::new();
    for (name, source) in &project.config.sources {
        let (columns, problem) = columns_of(session, name).await;
        tables.push(Table {
            name: name.clone(),
            kind: "source",
            description: source.description.clone().unwrap_or_default(),
            location: source.location.clone(),
            columns,
            problem,
        });
    }
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        let (columns, problem) = columns_of(session, &m.name).await;
        tables.push(Table {
            name: m.name.clone(),
            kind: match m.materialized {
                Materialized::View => "view",
                Materialized::Table => "table",
                Materialized::Incremental => "incremental",
            },
            description: m.description.clone().unwrap_or_default(),
            location: match m.materialized {
                Materialized::View => String::new(),
                _ => plan.location(i).display(),
            },
            columns,
            problem,
        });
    }

    let records = project.records_dir();
    let last_run = read_json(&records.join("run_results.json"));
    let last_test = read_json(&records.join("test_results.json"));
    let results_by_model = |doc: &Option<Value>| -> HashMap<String, Value> {
        doc.as_ref()
            .and_then(|d| d["results"].as_array())
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| Some((r["name"].as_str()?.to_string(), r.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let runs = results_by_model(&last_run);
    let tests = results_by_model(&last_test);
    let mut published = HashMap::new();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        if m.materialized != Materialized::View {
            if let Ok(Some(manifest)) = plan.location(i).manifest(ctx).await {
                published.insert(m.name.clone(), manifest.json);
            }
        }
    }

    // The run history feeds the charts; one that cannot be read leaves them out, saying why.
    let (recorded_runs, history_problem) = match History::of_project(session).await {
        Ok(h) => (h.runs_by_model(), None),
        Err(e) => (HashMap::new(), Some(e.to_string())),
    };

    let mut html = String::new();
    let title = format!("{} · sluice docs", project.name());
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(
        html,
        "<header><h1>{}</h1><p class=\"muted\">{} sources, {} models{}</p>\
         <input id=\"filter\" type=\"search\" placeholder=\"Filter tables and columns\" aria-label=\"Filter\"></header>",
        esc(&project.name()),
        project.config.sources.len(),
        plan.planned.len(),
        last_run
            .as_ref()
            .and_then(|d| d["metadata"]["generated_at"].as_str())
            .map(|t| format!(" · last run {}", esc(t)))
            .unwrap_or_default()
    );
    if let Some(problem) = &history_problem {
        let _ = writeln!(
            html,
            "<p class=\"error\">Run history charts left out: {}</p>",
            esc(problem)
        );
    }
    html.push_str("<section id=\"lineage\"><h2>Lineage</h2>\n");
    html.push_str(&graph_svg(&tables, &lineage));
    html.push_str("</section>\n");

    let feeds = feeds_by_column(&lineage);
    for t in &tables {
        let m = plan
            .models()
            .find(|m| m.name == t.name && t.kind != "source");
        let _ = write!(
            html,
            "<section class=\"table {kind}\" id=\"{id}\" data-name=\"{name}\">\n<h2>{name} <span class=\"badge {kind}\">{kind}</span></h2>\n",
            kind = t.kind,
            id = anchor(&t.name),
            name = esc(&t.name)
        );
        if !t.description.is_empty() {
            let _ = writeln!(html, "<p>{}</p>", esc(&t.description));
        }
        if !t.location.is_empty() {
            let _ = writeln!(
                html,
                "<p class=\"muted\">Location: <code>{}</code></p>",
                esc(&t.location)
            );
        }
        if let Some(m) = m {
            let _ = writeln!(
                html,
                "<p class=\"muted\">File: <code>models/{}</code>{}</p>",
                esc(&m.relative),
                if m.tags.is_empty() {
                    String::new()
                } else {
                    format!(" · tags: {}", esc(&m.tags.join(", ")))
                }
            );
            html.push_str(&status_html(runs.get(&t.name), published.get(&t.name)));
            if let Some(runs) = recorded_runs.get(&t.name) {
                html.push_str(&charts::run_history_svg(&t.name, runs));
            }
            if let (Some((column, steps)), true) =
                (funnel_column(&m.sql), published.contains_key(&t.name))
            {
                html.push_str(&funnel_html(session, plan, &m.name, &column, steps).await);
            }
        }
        if let Some(p) = &t.problem {
            let _ = writeln!(
                html,
                "<p class=\"error\">Columns unavailable: {}</p>",
                esc(p)
            );
        }
        html.push_str("<table class=\"columns\"><thead><tr><th>Column</th><th>Type</th><th>Description</th><th>Computed from</th></tr></thead><tbody>\n");
        for (column, ty) in &t.columns {
            let description = m
                .and_then(|m| m.column_descriptions.get(column))
                .cloned()
                .unwrap_or_default();
            let from = feeds
                .get(&format!("{}.{column}", t.name))
                .map(|f| {
                    f.iter()
                        .map(|c| {
                            let table = c.split_once('.').map(|(t, _)| t).unwrap_or(c);
                            format!("<a href=\"#{}\"><code>{}</code></a>", anchor(table), esc(c))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let mark = match marks.get(&format!("{}.{column}", t.name)) {
                Some(Mark::Personal) => " <span class=\"tag personal\" title=\"personal data, unhashed\">personal</span>",
                Some(Mark::Masked) => " <span class=\"tag masked\" title=\"computed from personal data through a hash or a count\">masked</span>",
                None => "",
            };
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code>{mark}</td><td><code>{}</code></td><td>{}</td><td>{from}</td></tr>",
                esc(column),
                esc(ty),
                esc(&description)
            );
        }
        html.push_str("</tbody></table>\n");
        if let Some(m) = m {
            if !m.checks.is_empty() {
                let last = tests
                    .get(&t.name)
                    .filter(|_| newer(&last_test, &last_run))
                    .or(runs.get(&t.name));
                html.push_str(&checks_html(m, last));
            }
        }
        html.push_str("</section>\n");
    }
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");

    std::fs::create_dir_all(out).map_err(|e| SluiceError::io(out, e))?;
    let index = out.join("index.html");
    std::fs::write(&index, html).map_err(|e| SluiceError::io(&index, e))?;
    Ok(index)
}

/// The column a model computes with `window_funnel(window, time, step1, step2, ...) AS
/// column`, and its number of steps: such a model is drawn as a funnel.
fn funnel_column(sql: &str) -> Option<(String, i64)> {
    let lower = sql.to_ascii_lowercase();
    let start = lower.find("window_funnel(")? + "window_funnel".len();
    let mut depth = 0usize;
    let mut end = None;
    let mut arguments = 1;
    for (i, c) in lower[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ',' if depth == 1 => arguments += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(start + i + 1);
                    break;
                }
            }
            _ => {}
        }
    }
    let rest = lower[end?..].trim_start().strip_prefix("as")?;
    let name: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && rest.starts_with(char::is_whitespace)).then_some((name, arguments - 2))
}

/// A funnel model's published output as a funnel: how many reached at least each step.
async fn funnel_html(
    session: &Session,
    plan: &ProjectPlan,
    model: &str,
    column: &str,
    steps: i64,
) -> String {
    let Some(i) = plan.models().position(|m| m.name == model) else {
        return String::new();
    };
    let m = &plan.planned[i].model;
    let ctx = &session.ctx;
    let name = format!("__docs_funnel_{model}");
    let url = plan.location(i).url();
    let counted = async {
        super::tables::register_location(ctx, &name, &url, m.format).await?;
        let sql = format!(
            "SELECT CAST({} AS BIGINT) AS step, count(*) AS users FROM {} GROUP BY 1 ORDER BY 1",
            crate::functions::quote_ident(column),
            crate::functions::quote_ident(&name)
        );
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| SluiceError::sql(e.to_string()))?
            .collect()
            .await
            .map_err(|e| SluiceError::sql(e.to_string()))?;
        Ok::<_, SluiceError>(batches)
    }
    .await;
    let _ = ctx.deregister_table(name.as_str());
    let Ok(batches) = counted else {
        return String::new();
    };
    let mut by_step: Vec<(i64, u64)> = Vec::new();
    for b in &batches {
        let (Some(steps), Some(users)) = (
            b.column(0).as_any().downcast_ref::<Int64Array>(),
            b.column(1).as_any().downcast_ref::<Int64Array>(),
        ) else {
            return String::new();
        };
        for r in 0..b.num_rows() {
            if steps.is_valid(r) {
                by_step.push((steps.value(r), users.value(r).max(0) as u64));
            }
        }
    }
    // Reached at least step k: the users whose deepest step is k or more (step 0 is none).
    let reached: Vec<(i64, u64)> = (1..=steps)
        .map(|k| {
            let users = by_step
                .iter()
                .filter(|(s, _)| *s >= k)
                .map(|(_, n)| n)
                .sum();
            (k, users)
        })
        .collect();
    charts::funnel_svg(model, column, &reached)
}

/// How the docs mark a column: it holds personal data unhashed, or it is computed from
/// personal data through a hash or a count.
enum Mark {
    Personal,
    Masked,
}

/// `table.column` -> its mark: sources' `personal` columns and model columns carrying them
/// unhashed are personal; model columns computed from them otherwise are masked.
fn personal_marks(
    project: &crate::config::Project,
    plan: &ProjectPlan,
    personal: &super::leaks::PersonalData,
    lineage: &Lineage,
) -> HashMap<String, Mark> {
    let mut marks = HashMap::new();
    for column in project.config.personal_columns() {
        marks.insert(column, Mark::Personal);
    }
    for m in plan.models() {
        for column in &m.pii_columns {
            marks.insert(format!("{}.{column}", m.name), Mark::Personal);
        }
    }
    for column in &personal.carried {
        marks.insert(column.clone(), Mark::Personal);
    }
    for edge in &lineage.source_columns {
        if matches!(marks.get(&edge.from), Some(Mark::Personal)) && !marks.contains_key(&edge.to) {
            marks.insert(edge.to.clone(), Mark::Masked);
        }
    }
    marks
}

/// A table's columns and types as the engine plans them, or why they cannot be read.
async fn columns_of(session: &Session, name: &str) -> (Vec<(String, String)>, Option<String>) {
    match session.ctx.table(format!("\"{name}\"").as_str()).await {
        Ok(df) => (
            df.schema()
                .fields()
                .iter()
                .map(|f| {
                    (
                        f.name().clone(),
                        sluice_core::config::sql_type_name(f.data_type()),
                    )
                })
                .collect(),
            None,
        ),
        Err(e) => (
            Vec::new(),
            Some(crate::error::describe_datafusion_error(&e)),
        ),
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether results document `a` was generated after `b` (RFC 3339 times sort as text).
fn newer(a: &Option<Value>, b: &Option<Value>) -> bool {
    let at = |d: &Option<Value>| {
        d.as_ref()
            .and_then(|d| d["metadata"]["generated_at"].as_str().map(str::to_string))
    };
    at(a) > at(b)
}

fn feeds_by_column(lineage: &Lineage) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &lineage.columns {
        out.entry(e.to.clone()).or_default().insert(e.from.clone());
    }
    out
}

fn status_html(run: Option<&Value>, manifest: Option<&Value>) -> String {
    let mut s = String::from("<dl class=\"status\">");
    if let Some(r) = run {
        let status = r["status"].as_str().unwrap_or("unknown");
        let _ = write!(
            s,
            "<dt>Last run</dt><dd><span class=\"status-{status}\">{}</span>{}{}</dd>",
            esc(status),
            r["rows"]
                .as_u64()
                .map(|n| format!(", {n} rows"))
                .unwrap_or_default(),
            r["execution_time"]
                .as_f64()
                .map(|t| format!(", {t:.2}s"))
                .unwrap_or_default()
        );
        if let Some(m) = r["message"].as_str().filter(|m| !m.is_empty()) {
            let _ = write!(s, "<dt>Message</dt><dd>{}</dd>", esc(m));
        }
    }
    if let Some(m) = manifest {
        let _ = write!(
            s,
            "<dt>Published</dt><dd>{} rows in {} files, {}</dd>",
            m["rows"].as_u64().unwrap_or(0),
            m["files"].as_array().map(Vec::len).unwrap_or(0),
            esc(m["published_at"].as_str().unwrap_or("at an unknown time"))
        );
        if let Some(version) = m["delta_version"].as_u64() {
            let last = &m["delta_last_commit"];
            let _ = write!(
                s,
                "<dt>Delta table</dt><dd>version {version}, last commit {} at {}</dd>",
                esc(last["operation"].as_str().unwrap_or("unknown")),
                esc(last["at"].as_str().unwrap_or("an unknown time"))
            );
        }
    } else if run.is_some_and(|r| r["materialized"] != "view") {
        s.push_str("<dt>Published</dt><dd>not yet</dd>");
    }
    s.push_str("</dl>\n");
    s
}

fn checks_html(m: &super::model::Model, last: Option<&Value>) -> String {
    let results: Vec<&Value> = last
        .and_then(|r| r["checks"].as_array())
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let mut s = String::from(
        "<table class=\"checks\"><thead><tr><th>Check</th><th>Column</th><th>Last result</th></tr></thead><tbody>\n",
    );
    for c in &m.checks {
        let column = c.column();
        let result = results.iter().find(|r| {
            r["check"].as_str() == Some(c.name()) && r["column"].as_str() == column.as_deref()
        });
        let (status, message) = match result {
            Some(r) => (
                r["status"].as_str().unwrap_or("unknown").to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            ),
            None => ("not run".to_string(), String::new()),
        };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td><span class=\"status-{}\">{}</span> {}</td></tr>",
            esc(c.name()),
            column
                .map(|c| format!("<code>{}</code>", esc(&c)))
                .unwrap_or_default(),
            esc(&status.replace(' ', "-")),
            esc(&status),
            esc(&message)
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

/// The table-level lineage as an inline SVG: one column of boxes per depth (sources at
/// depth 0, each model one right of its deepest input), edges as curves, each box a link
/// to its section.
fn graph_svg(tables: &[Table], lineage: &Lineage) -> String {
    const W: f64 = 170.0;
    const H: f64 = 34.0;
    const GAP_X: f64 = 56.0;
    const GAP_Y: f64 = 18.0;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut depth: HashMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    // Longest path from a source; the edges form a DAG, so |tables| rounds settle it.
    for _ in 0..names.len() {
        for e in &lineage.tables {
            let d = depth.get(e.from.as_str()).copied().unwrap_or(0) + 1;
            if let Some(slot) = depth.get_mut(e.to.as_str()) {
                *slot = (*slot).max(d);
            }
        }
    }
    let mut rows_at: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: HashMap<&str, (f64, f64)> = HashMap::new();
    for t in tables {
        let d = depth.get(t.name.as_str()).copied().unwrap_or(0);
        let row = rows_at.entry(d).or_insert(0);
        pos.insert(
            &t.name,
            (
                10.0 + d as f64 * (W + GAP_X),
                10.0 + *row as f64 * (H + GAP_Y),
            ),
        );
        *row += 1;
    }
    let width = 20.0 + (rows_at.len().max(1)) as f64 * (W + GAP_X) - GAP_X;
    let height = 20.0 + rows_at.values().max().copied().unwrap_or(1) as f64 * (H + GAP_Y) - GAP_Y;
    let mut s = format!(
        "<svg id=\"lineage-graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Table lineage\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#8a94a6\"/></marker></defs>\n"
    );
    for e in &lineage.tables {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str()))
        else {
            continue;
        };
        let (ax, ay, bx, by) = (x1 + W, y1 + H / 2.0, x2, y2 + H / 2.0);
        let mid = (ax + bx) / 2.0;
        let _ = writeln!(
            s,
            "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{ax},{ay} C{mid},{ay} {mid},{by} {bx},{by}\" marker-end=\"url(#arrow)\"/>",
            esc(&e.from),
            esc(&e.to)
        );
    }
    for t in tables {
        let Some(&(x, y)) = pos.get(t.name.as_str()) else {
            continue;
        };
        let _ = writeln!(
            s,
            "<a href=\"#{id}\"><g class=\"node {kind}\" data-name=\"{name}\"><rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\"/><text x=\"{tx}\" y=\"{ty}\">{name}</text></g></a>",
            id = anchor(&t.name),
            kind = t.kind,
            name = esc(&t.name),
            tx = x + 10.0,
            ty = y + H / 2.0 + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn anchor(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("t-{clean}")
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:16px 28px;display:flex;gap:20px;align-items:baseline;flex-wrap:wrap}
header h1{margin:0;font-size:20px}header .muted{color:#b9c0cc}
#filter{margin-left:auto;padding:6px 10px;border-radius:6px;border:0;min-width:260px}
section{background:#fff;margin:18px 28px;padding:14px 20px;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{margin:4px 0 8px;font-size:17px}
#lineage{overflow-x:auto}
.muted{color:#667085}.error{color:#b42318}
.badge{font-size:11px;padding:2px 7px;border-radius:10px;vertical-align:middle;font-weight:500}
.badge.source{background:#e0f2fe;color:#075985}.badge.view{background:#f3e8ff;color:#6b21a8}
.badge.table,.badge.incremental{background:#dcfce7;color:#166534}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{font-weight:600;color:#475467;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
dl.status{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:6px 0}
.tag{font-size:.75em;padding:0 5px;border-radius:3px;margin-left:4px;white-space:nowrap}.tag.personal{background:#fde2e1;color:#8a1c14}.tag.masked{background:#e3f1e6;color:#1d5e2a}
dt{color:#667085}dd{margin:0}
.status-success,.status-pass{color:#067647;font-weight:600}
.status-fail,.status-error{color:#b42318;font-weight:600}
.status-warn,.status-skipped{color:#b54708;font-weight:600}
.node rect{fill:#fff;stroke:#98a2b3;stroke-width:1.2}
.node.source rect{fill:#e0f2fe;stroke:#0284c7}.node.view rect{fill:#f3e8ff;stroke:#9333ea}
.node.table rect,.node.incremental rect{fill:#dcfce7;stroke:#16a34a}
.node text{font:12px ui-monospace,monospace;fill:#1d2330}
.edge{fill:none;stroke:#8a94a6;stroke-width:1.4}
.edge.hl{stroke:#f04438;stroke-width:2.4}.hidden{display:none}
figure{margin:10px 0 14px}figcaption{color:#5b6472;font-size:13px;margin-bottom:4px}
svg text.axis{font-size:11px;fill:#5b6472}svg line.axis{stroke:#c5cad3}
.run-history .published rect{fill:#3f8f5f}.run-history .failed rect{fill:#c94a4a}
.run-history .volume-mark{fill:none;stroke:#c94a4a;stroke-width:2}
.funnel polygon{fill:#4a78c2}
"#;

/// Filtering by name or column, and highlighting a table's edges on hover.
const SCRIPT: &str = r#"
const filter=document.getElementById('filter');
filter.addEventListener('input',()=>{
  const q=filter.value.trim().toLowerCase();
  document.querySelectorAll('section.table').forEach(s=>{
    s.classList.toggle('hidden',q!==''&&!s.textContent.toLowerCase().includes(q));
  });
});
document.querySelectorAll('#lineage-graph .node').forEach(n=>{
  const name=n.dataset.name;
  const edges=[...document.querySelectorAll('#lineage-graph .edge')]
    .filter(e=>e.dataset.from===name||e.dataset.to===name);
  n.addEventListener('mouseenter',()=>edges.forEach(e=>e.classList.add('hl')));
  n.addEventListener('mouseleave',()=>edges.forEach(e=>e.classList.remove('hl')));
});
"#;
