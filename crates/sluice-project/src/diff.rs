//! `sluice diff MODEL --key k`: what a change does to a model's data. The left side is the
//! model's fresh result (its SQL run now, upstream tables as published; nothing is written
//! or published) or `--left LOCATION`; the right side is its published output or
//! `--against LOCATION` (another environment's target, a folder or an S3 prefix). Rows are
//! matched on the key; values are compared as text, so a type that changed (INT to BIGINT)
//! is not a change of every row.

use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use indexmap::IndexMap;
use serde::Serialize;

use super::plan::{ident, ProjectPlan};
use super::publish::Output;
use super::tables::{register_location, register_view};
use super::unit::cells;
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;

const LEFT: &str = "__sluice_diff_left";
const RIGHT: &str = "__sluice_diff_right";
/// Example rows shown of each kind.
const EXAMPLES: usize = 5;

#[derive(Debug, Default)]
pub struct DiffOptions {
    pub key: Vec<String>,
    /// Compare with this location instead of the published output.
    pub against: Option<String>,
    /// Take the left side from this location instead of a fresh build.
    pub left: Option<String>,
}

/// One example row: its key, and for a changed row each differing column's two values.
#[derive(Debug, Serialize)]
pub struct Example {
    pub kind: &'static str,
    pub key: IndexMap<String, String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub changes: IndexMap<String, (String, String)>,
}

#[derive(Debug, Serialize)]
pub struct DataDiff {
    pub model: String,
    pub key: Vec<String>,
    pub left: String,
    pub right: String,
    pub left_rows: u64,
    pub right_rows: u64,
    pub only_left: u64,
    pub only_right: u64,
    pub changed: u64,
    /// Rows whose key is on both sides, with how many differ in each compared column.
    pub columns: IndexMap<String, u64>,
    pub columns_only_left: Vec<String>,
    pub columns_only_right: Vec<String>,
    pub examples: Vec<Example>,
}

impl DataDiff {
    pub fn differs(&self) -> bool {
        self.only_left + self.only_right + self.changed > 0
            || !self.columns_only_left.is_empty()
            || !self.columns_only_right.is_empty()
    }

    /// The diff as people read it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} by {}: left {} ({} rows), right {} ({} rows)\n",
            self.model,
            self.key.join(", "),
            self.left,
            self.left_rows,
            self.right,
            self.right_rows
        );
        out.push_str(&format!(
            "only left: {}, only right: {}, changed: {}, unchanged: {}\n",
            self.only_left,
            self.only_right,
            self.changed,
            self.left_rows
                .saturating_sub(self.only_left)
                .saturating_sub(self.changed)
        ));
        let changed: Vec<String> = self
            .columns
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if !changed.is_empty() {
            out.push_str(&format!("changed columns: {}\n", changed.join(", ")));
        }
        if !self.columns_only_left.is_empty() {
            out.push_str(&format!(
                "columns only left: {}\n",
                self.columns_only_left.join(", ")
            ));
        }
        if !self.columns_only_right.is_empty() {
            out.push_str(&format!(
                "columns only right: {}\n",
                self.columns_only_right.join(", ")
            ));
        }
        for e in &self.examples {
            let key: Vec<String> = e.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut line = format!("  {:<11} {}", e.kind, key.join(", "));
            if !e.changes.is_empty() {
                let changes: Vec<String> = e
                    .changes
                    .iter()
                    .map(|(c, (l, r))| format!("{c} {l} -> {r}"))
                    .collect();
                line.push_str(&format!(": {}", changes.join("; ")));
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Compare model `name`'s two sides on `options.key`.
pub async fn diff(
    session: &Session,
    plan: &ProjectPlan,
    name: &str,
    options: &DiffOptions,
) -> Result<DataDiff> {
    let ctx = &session.ctx;
    let Some(i) = plan.models().position(|m| m.name == name) else {
        let hint =
            crate::diagnostic::did_you_mean_hint(name, plan.models().map(|m| m.name.as_str()));
        return Err(SluiceError::Usage(format!("no model named `{name}`{hint}")));
    };
    let m = &plan.planned[i].model;
    if options.key.is_empty() {
        return Err(SluiceError::Usage(
            "--key: name the column(s) that identify a row".into(),
        ));
    }
    super::declare_models(session, plan);

    let left = match &options.left {
        Some(location) => {
            let url = location_url(location);
            register_location(ctx, LEFT, &url, m.format)
                .await
                .map_err(|e| side_error("left", LEFT, &url, e))?;
            url
        }
        None => {
            let df = ctx
                .sql(&plan.planned[i].sql)
                .await
                .map_err(|e| m.datafusion_error(&e, plan.planned[i].sql_shift))?;
            register_view(ctx, LEFT, &df, &plan.planned[i].sql)?;
            "fresh build".to_string()
        }
    };
    let right = match &options.against {
        Some(location) => location_url(location),
        None => plan.location(i).url(),
    };
    register_location(ctx, RIGHT, &right, m.format)
        .await
        .map_err(|e| side_error("right", RIGHT, &right, e))?;

    let (left_columns, right_columns) = (
        columns(session, LEFT).await?,
        columns(session, RIGHT).await?,
    );
    for k in &options.key {
        for (side, cols) in [("left", &left_columns), ("right", &right_columns)] {
            if !cols.contains(k) {
                return Err(SluiceError::Usage(format!(
                    "--key {k}: the {side} side has no column `{k}` (its columns: {})",
                    cols.join(", ")
                )));
            }
        }
    }
    let compared: Vec<String> = left_columns
        .iter()
        .filter(|c| right_columns.contains(c) && !options.key.contains(c))
        .cloned()
        .collect();
    let text = |side: &str, c: &str| format!("CAST({side}.{} AS VARCHAR)", ident(c));
    let on: Vec<String> = options
        .key
        .iter()
        .map(|k| format!("{} = {}", text("l", k), text("r", k)))
        .collect();
    let differs = |c: &str| format!("({} IS DISTINCT FROM {})", text("l", c), text("r", c));
    let any_differs = if compared.is_empty() {
        "false".to_string()
    } else {
        compared
            .iter()
            .map(|c| differs(c))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let joined = format!(
        "(SELECT *, true AS __in_left FROM {LEFT}) l FULL OUTER JOIN (SELECT *, true AS __in_right FROM {RIGHT}) r ON {}",
        on.join(" AND ")
    );
    let both = "l.__in_left AND r.__in_right";

    for (side, table) in [("left", LEFT), ("right", RIGHT)] {
        let keys: Vec<String> = options.key.iter().map(|k| ident(k)).collect();
        let dupes = count(
            session,
            &format!(
                "SELECT count(*) FROM (SELECT {} FROM {table} GROUP BY {} HAVING count(*) > 1)",
                keys.join(", "),
                keys.join(", ")
            ),
        )
        .await?;
        if dupes[0] > 0 {
            return Err(SluiceError::Usage(format!(
                "--key {}: {} key values appear more than once on the {side} side; give the columns that identify one row",
                options.key.join(","),
                dupes[0]
            )));
        }
    }

    let mut sums = vec![
        format!("(SELECT count(*) FROM {LEFT})"),
        format!("(SELECT count(*) FROM {RIGHT})"),
        "sum(CASE WHEN r.__in_right IS NULL THEN 1 ELSE 0 END)".to_string(),
        "sum(CASE WHEN l.__in_left IS NULL THEN 1 ELSE 0 END)".to_string(),
        format!("sum(CASE WHEN {both} AND ({any_differs}) THEN 1 ELSE 0 END)"),
    ];
    sums.extend(
        compared
            .iter()
            .map(|c| format!("sum(CASE WHEN {both} AND {} THEN 1 ELSE 0 END)", differs(c))),
    );
    let counts = count(session, &format!("SELECT {} FROM {joined}", aliased(&sums))).await?;

    let mut examples = Vec::new();
    let order_by = |side: &str| -> String {
        options
            .key
            .iter()
            .map(|k| format!("{side}.{}", ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_of =
        |side: &str| -> Vec<String> { options.key.iter().map(|k| text(side, k)).collect() };
    for (kind, side, filter) in [
        ("only left", "l", "r.__in_right IS NULL"),
        ("only right", "r", "l.__in_left IS NULL"),
    ] {
        let keys = key_of(side);
        let sql = format!(
            "SELECT {} FROM {joined} WHERE {filter} ORDER BY {} LIMIT {EXAMPLES}",
            aliased(&keys),
            order_by(side)
        );
        for row in text_rows(session, &sql).await? {
            examples.push(Example {
                kind,
                key: options.key.iter().cloned().zip(row).collect(),
                changes: IndexMap::new(),
            });
        }
    }
    if counts[4] > 0 {
        let keys = key_of("l");
        let values: Vec<String> = compared
            .iter()
            .flat_map(|c| [text("l", c), text("r", c)])
            .collect();
        let selected: Vec<String> = keys.iter().chain(&values).cloned().collect();
        let sql = format!(
            "SELECT {} FROM {joined} WHERE {both} AND ({any_differs}) ORDER BY {} LIMIT {EXAMPLES}",
            aliased(&selected),
            order_by("l")
        );
        for row in text_rows(session, &sql).await? {
            let (key, values) = row.split_at(options.key.len());
            let changes = compared
                .iter()
                .enumerate()
                .filter(|(j, _)| values[2 * j] != values[2 * j + 1])
                .map(|(j, c)| {
                    (
                        c.clone(),
                        (values[2 * j].clone(), values[2 * j + 1].clone()),
                    )
                })
                .collect();
            examples.push(Example {
                kind: "changed",
                key: options
                    .key
                    .iter()
                    .cloned()
                    .zip(key.iter().cloned())
                    .collect(),
                changes,
            });
        }
    }
    for table in [LEFT, RIGHT] {
        let _ = ctx.deregister_table(table);
    }
    Ok(DataDiff {
        model: m.name.clone(),
        key: options.key.clone(),
        left,
        right,
        left_rows: counts[0],
        right_rows: counts[1],
        only_left: counts[2],
        only_right: counts[3],
        changed: counts[4],
        columns: compared
            .iter()
            .cloned()
            .zip(counts[5..].iter().copied())
            .collect(),
        columns_only_left: left_columns
            .iter()
            .filter(|c| !right_columns.contains(c))
            .cloned()
            .collect(),
        columns_only_right: right_columns
            .iter()
            .filter(|c| !left_columns.contains(c))
            .cloned()
            .collect(),
        examples,
    })
}

/// A side that cannot be read, named as the user gave it.
fn side_error(side: &str, table: &str, location: &str, e: SluiceError) -> SluiceError {
    let message = e.to_string();
    let message = message
        .strip_prefix(&format!("source `{table}` ({location}): "))
        .unwrap_or(&message);
    SluiceError::sql(format!(
        "the {side} side {location} cannot be read: {message}"
    ))
}

async fn columns(session: &Session, table: &str) -> Result<Vec<String>> {
    let schema = session
        .ctx
        .table_provider(table)
        .await
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?
        .schema();
    Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
}

/// A folder (relative to the current directory) or a URL, as a location to read.
fn location_url(location: &str) -> String {
    if location.contains("://") || Path::new(location).is_absolute() {
        return Output::resolve("", Some(location), "").url();
    }
    let here = std::env::current_dir().unwrap_or_default();
    format!(
        "{}/",
        here.join(location)
            .display()
            .to_string()
            .trim_end_matches('/')
    )
}

/// Expressions named `__c0`, `__c1`, ... so that no two results share a name.
fn aliased(exprs: &[String]) -> String {
    exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS __c{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one row of integers `sql` returns (NULL sums of no rows as 0).
async fn count(session: &Session, sql: &str) -> Result<Vec<u64>> {
    let batches = collect(session, sql).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(vec![0]);
    };
    (0..batch.num_columns())
        .map(|c| {
            let column = datafusion::arrow::compute::cast(
                batch.column(c),
                &datafusion::arrow::datatypes::DataType::Int64,
            )
            .map_err(|e| SluiceError::sql(e.to_string()))?;
            let ints = column
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| SluiceError::sql("diff: a count is not an integer"))?;
            Ok(if ints.is_null(0) {
                0
            } else {
                ints.value(0).max(0) as u64
            })
        })
        .collect()
}

async fn text_rows(session: &Session, sql: &str) -> Result<Vec<Vec<String>>> {
    let batches = collect(session, sql).await?;
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    cells(&batches, &names).map_err(SluiceError::sql)
}

async fn collect(session: &Session, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = session
        .ctx
        .sql(sql)
        .await
        .map_err(|e| SluiceError::sql(format!("diff: {}", describe_datafusion_error(&e))))?;
    df.collect()
        .await
        .map_err(|e| SluiceError::sql(format!("diff: {}", describe_datafusion_error(&e))))
}
