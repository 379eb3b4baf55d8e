//! Data quality checks of a model, run on the staged output before it is published.

use crate::functions::quote_ident as ident;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::query::{count, first_row, parse_count, values};
use crate::error::{Result, SluiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    NotNull(String),
    Unique(Vec<String>),
    AcceptedValues(String, Vec<String>),
    Relationships(String, String, String),
    Matches(String, String),
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    /// `require_baseline`: fail when there is nothing published to compare with.
    Volume {
        max_change_pct: f64,
        require_baseline: bool,
    },
    SchemaLocked {
        require_baseline: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub severity: Severity,
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self.kind {
            CheckKind::NotNull(_) => "not_null",
            CheckKind::Unique(_) => "unique",
            CheckKind::AcceptedValues(..) => "accepted_values",
            CheckKind::Relationships(..) => "relationships",
            CheckKind::Matches(..) => "matches",
            CheckKind::RowCount { .. } => "row_count",
            CheckKind::Volume { .. } => "volume",
            CheckKind::SchemaLocked { .. } => "schema",
        }
    }

    pub fn column(&self) -> Option<String> {
        match &self.kind {
            CheckKind::NotNull(c) | CheckKind::AcceptedValues(c, _) | CheckKind::Matches(c, _) => {
                Some(c.clone())
            }
            CheckKind::Relationships(c, _, _) => Some(c.clone()),
            CheckKind::Unique(cols) => Some(cols.join(", ")),
            _ => None,
        }
    }

    /// Tables other than the model that the check reads (for dependencies).
    pub fn reads(&self) -> Option<&str> {
        match &self.kind {
            CheckKind::Relationships(_, t, _) => Some(t),
            _ => None,
        }
    }
}

fn severity(table: &toml::Table) -> std::result::Result<Severity, String> {
    match table.get("severity").and_then(|v| v.as_str()) {
        None | Some("error") => Ok(Severity::Error),
        Some("warn") => Ok(Severity::Warn),
        Some(other) => Err(format!(
            "severity must be \"error\" or \"warn\", not \"{other}\""
        )),
    }
}

fn strings(v: &toml::Value, what: &str) -> std::result::Result<Vec<String>, String> {
    match v {
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s.clone()),
                other => Ok(other.to_string()),
            })
            .collect(),
        _ => Err(format!("{what} expects a list")),
    }
}

const COLUMN_CHECKS: &str = "\"not_null\", \"unique\", { accepted_values = [...] }, { relationships = \"table.column\" }, { matches = \"regex\" }";

pub fn parse_column_check(column: &str, value: &toml::Value) -> std::result::Result<Check, String> {
    let col = column.to_string();
    match value {
        toml::Value::String(s) => {
            let kind = match s.as_str() {
                "not_null" => CheckKind::NotNull(col),
                "unique" => CheckKind::Unique(vec![col]),
                other => {
                    return Err(format!(
                        "unknown check `{other}`, expected one of {COLUMN_CHECKS}"
                    ))
                }
            };
            Ok(Check {
                kind,
                severity: Severity::Error,
            })
        }
        toml::Value::Table(t) => {
            let severity = severity(t)?;
            let mut kinds = t.iter().filter(|(k, _)| k.as_str() != "severity");
            let (key, v) = kinds
                .next()
                .ok_or_else(|| format!("empty check, expected one of {COLUMN_CHECKS}"))?;
            let kind = match key.as_str() {
                "not_null" => CheckKind::NotNull(col),
                "unique" => CheckKind::Unique(vec![col]),
                "accepted_values" => CheckKind::AcceptedValues(col, strings(v, "accepted_values")?),
                "relationships" => {
                    let target = v.as_str().ok_or("relationships expects \"table.column\"")?;
                    let (t, c) = target
                        .split_once('.')
                        .ok_or("relationships expects \"table.column\"")?;
                    CheckKind::Relationships(col, t.to_string(), c.to_string())
                }
                "matches" => {
                    let re = v
                        .as_str()
                        .ok_or("matches expects a regular expression string")?;
                    regex::Regex::new(re).map_err(|e| format!("bad regular expression: {e}"))?;
                    CheckKind::Matches(col, re.to_string())
                }
                other => {
                    return Err(format!(
                        "unknown check `{other}`, expected one of {COLUMN_CHECKS}"
                    ))
                }
            };
            Ok(Check { kind, severity })
        }
        other => Err(format!("a check is a name or a table, not {other}")),
    }
}

pub fn parse_table_check(value: &toml::Value) -> std::result::Result<Check, String> {
    let t = value.as_table().ok_or("a [[checks]] entry is a table")?;
    let severity = severity(t)?;
    let require_baseline = match t.get("require_baseline") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or("require_baseline expects true or false")?,
    };
    let (key, v) = t
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "severity" | "require_baseline"))
        .ok_or("empty check, expected row_count, volume, schema or unique")?;
    let kind = match key.as_str() {
        "row_count" => {
            let r = v
                .as_table()
                .ok_or("row_count expects { min = N, max = N }")?;
            let get = |k: &str| {
                r.get(k)
                    .and_then(|x| x.as_integer())
                    .map(|x| x.max(0) as u64)
            };
            CheckKind::RowCount {
                min: get("min"),
                max: get("max"),
            }
        }
        "volume" => {
            let r = v
                .as_table()
                .ok_or("volume expects { max_change_pct = N }")?;
            let pct = r
                .get("max_change_pct")
                .and_then(|x| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)))
                .ok_or("volume expects { max_change_pct = N }")?;
            CheckKind::Volume {
                max_change_pct: pct,
                require_baseline,
            }
        }
        "schema" => match v.as_str() {
            Some("locked") => CheckKind::SchemaLocked { require_baseline },
            _ => return Err("schema expects \"locked\"".into()),
        },
        "unique" => CheckKind::Unique(strings(v, "unique")?),
        other => {
            return Err(format!(
                "unknown check `{other}`, expected row_count, volume, schema or unique"
            ))
        }
    };
    if require_baseline
        && !matches!(
            kind,
            CheckKind::Volume { .. } | CheckKind::SchemaLocked { .. }
        )
    {
        return Err("require_baseline applies to the volume and schema checks only".into());
    }
    Ok(Check { kind, severity })
}

/// A check's outcome: passed, failed with `severity = "warn"`, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub column: Option<String>,
    pub status: CheckStatus,
    pub severity: Severity,
    pub failures: u64,
    pub samples: Vec<String>,
    pub message: String,
    /// What a volume or schema check compared with: the published manifest or the history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

impl CheckResult {
    /// `check(column)`, or just the check for table-level checks.
    pub fn label(&self) -> String {
        match &self.column {
            Some(col) => format!("{}({col})", self.check),
            None => self.check.clone(),
        }
    }

    /// Labels of the failed checks among `results`, for "check failed: ..." messages.
    pub fn failed_labels(results: &[CheckResult]) -> String {
        results
            .iter()
            .filter(|c| c.failed())
            .map(CheckResult::label)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Fail
    }
}

/// What the volume and schema checks compare against: the published output's manifest,
/// else the run history.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub rows: Option<u64>,
    pub schema: Option<Vec<(String, String)>>,
    /// Where the figures come from (a manifest or history file), for the check result.
    pub source: Option<String>,
    /// `--require-baseline`: a volume or schema check with nothing to compare with fails.
    pub required: bool,
}

impl Baseline {
    /// Fill what this baseline lacks from another (the manifest first, then the history).
    pub fn or(self, other: Baseline) -> Baseline {
        let source = match (&self.source, &other.source) {
            (Some(a), Some(b))
                if (self.rows.is_none() && other.rows.is_some())
                    || (self.schema.is_none() && other.schema.is_some()) =>
            {
                Some(format!("{a}, {b}"))
            }
            (Some(a), _) => Some(a.clone()),
            (None, b) => b.clone(),
        };
        Baseline {
            rows: self.rows.or(other.rows),
            schema: self.schema.or(other.schema),
            source,
            required: self.required || other.required,
        }
    }
}

const NO_BASELINE: &str = "no baseline: nothing published and no run history to compare with";

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The condition a failing row meets, for checks that look at one row at a time.
fn row_condition(kind: &CheckKind) -> Option<String> {
    match kind {
        CheckKind::NotNull(c) => Some(format!("{} IS NULL", ident(c))),
        CheckKind::AcceptedValues(c, accepted) => {
            let list = accepted
                .iter()
                .map(|v| literal(v))
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!(
                "{c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN ({list})",
                c = ident(c)
            ))
        }
        CheckKind::Matches(c, re) => Some(format!(
            "{c} IS NOT NULL AND NOT regexp_like(CAST({c} AS VARCHAR), {re})",
            c = ident(c),
            re = literal(re)
        )),
        _ => None,
    }
}

fn result(check: &Check, failures: u64, samples: Vec<String>, message: String) -> CheckResult {
    let status = if failures == 0 {
        CheckStatus::Pass
    } else if check.severity == Severity::Warn {
        CheckStatus::Warn
    } else {
        CheckStatus::Fail
    };
    CheckResult {
        check: check.name().to_string(),
        column: check.column(),
        status,
        severity: check.severity,
        failures,
        samples: samples.into_iter().take(5).collect(),
        message,
        baseline: None,
    }
}

/// Run all of a model's checks on `table`. The row-level checks (not_null, accepted_values,
/// matches) share one scan; unique and relationships need a query each; row_count, volume
/// and schema use what the writer already counted. Failing values are fetched only for
/// checks that failed. An error names the check that could not run.
pub async fn run_all(
    ctx: &SessionContext,
    table: &str,
    checks: &[Check],
    rows: u64,
    schema: &[(String, String)],
    baseline: &Baseline,
) -> std::result::Result<Vec<CheckResult>, (usize, SluiceError)> {
    let t = ident(table);
    let row_level: Vec<(usize, String)> = checks
        .iter()
        .enumerate()
        .filter_map(|(k, c)| row_condition(&c.kind).map(|cond| (k, cond)))
        .collect();
    let mut counts: Vec<Option<u64>> = vec![None; checks.len()];
    if !row_level.is_empty() {
        let aggregates = row_level
            .iter()
            .map(|(_, cond)| format!("count(*) FILTER (WHERE {cond})"))
            .collect::<Vec<_>>()
            .join(", ");
        // On an error, the checks run one at a time below, which names the one that failed.
        let sql = format!("SELECT {aggregates} FROM {t}");
        if let Ok(row) = first_row(ctx, &sql).await {
            for ((k, _), v) in row_level.iter().zip(row) {
                counts[*k] = Some(parse_count(&v, &sql).map_err(|e| (*k, e))?);
            }
        }
    }
    let mut out = Vec::with_capacity(checks.len());
    for (k, check) in checks.iter().enumerate() {
        let r = match (counts[k], row_condition(&check.kind)) {
            (Some(n), Some(cond)) => row_level_result(ctx, &t, check, n, &cond).await,
            _ => run_check(ctx, table, check, rows, schema, baseline).await,
        };
        out.push(r.map_err(|e| (k, e))?);
    }
    Ok(out)
}

/// The result of a row-level check whose failing rows were counted in the shared scan.
async fn row_level_result(
    ctx: &SessionContext,
    t: &str,
    check: &Check,
    n: u64,
    cond: &str,
) -> Result<CheckResult> {
    let samples = match (&check.kind, n) {
        (_, 0) | (CheckKind::NotNull(_), _) => vec![],
        (CheckKind::AcceptedValues(c, _) | CheckKind::Matches(c, _), _) => {
            values(
                ctx,
                &format!(
                    "SELECT DISTINCT CAST({c} AS VARCHAR) AS v FROM {t} WHERE {cond} ORDER BY v LIMIT 5",
                    c = ident(c)
                ),
            )
            .await?
        }
        _ => vec![],
    };
    let message = match &check.kind {
        CheckKind::NotNull(c) => format!("{n} rows have NULL {c}"),
        CheckKind::AcceptedValues(..) => format!("{n} rows have values not in the accepted list"),
        CheckKind::Matches(_, re) => format!("{n} rows have values that do not match {re}"),
        _ => String::new(),
    };
    Ok(result(check, n, samples, message))
}

/// Run one check against `table`; `rows` and `schema` describe the staged output.
pub async fn run_check(
    ctx: &SessionContext,
    table: &str,
    check: &Check,
    rows: u64,
    schema: &[(String, String)],
    baseline: &Baseline,
) -> Result<CheckResult> {
    let t = ident(table);
    let (failures, samples, message): (u64, Vec<String>, String) = match &check.kind {
        CheckKind::NotNull(_) | CheckKind::AcceptedValues(..) | CheckKind::Matches(..) => {
            let cond = row_condition(&check.kind).unwrap_or_default();
            let n = count(ctx, &format!("SELECT count(*) FROM {t} WHERE {cond}")).await?;
            return row_level_result(ctx, &t, check, n, &cond).await;
        }
        CheckKind::Unique(cols) => {
            let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let key = if cols.len() == 1 {
                format!("CAST({list} AS VARCHAR)")
            } else {
                format!(
                    "concat_ws(', ', {})",
                    cols.iter()
                        .map(|c| format!("CAST({} AS VARCHAR)", ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let dup = values(
                ctx,
                &format!("SELECT k FROM (SELECT {key} AS k FROM {t} GROUP BY {list} HAVING count(*) > 1) AS d ORDER BY k"),
            )
            .await?;
            let n = dup.len() as u64;
            (n, dup, format!("{n} duplicated values"))
        }
        CheckKind::Relationships(c, other, oc) => {
            let bad = values(
                ctx,
                &format!(
                    "SELECT DISTINCT CAST(m.{c} AS VARCHAR) AS v FROM {t} m WHERE m.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {o} r WHERE r.{oc} = m.{c}) ORDER BY v",
                    c = ident(c),
                    o = ident(other),
                    oc = ident(oc)
                ),
            )
            .await?;
            let n = bad.len() as u64;
            (n, bad, format!("{n} values have no match in {other}.{oc}"))
        }
        CheckKind::RowCount { min, max } => {
            let low = min.map(|m| rows < m).unwrap_or(false);
            let high = max.map(|m| rows > m).unwrap_or(false);
            let bound = match (min, max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => "any".into(),
            };
            (
                (low || high) as u64,
                vec![],
                format!("{rows} rows, expected {bound}"),
            )
        }
        CheckKind::Volume {
            max_change_pct,
            require_baseline,
        } => match baseline.rows {
            None => return Ok(no_baseline(check, *require_baseline || baseline.required)),
            Some(prev) => {
                let change = if prev == 0 {
                    if rows == 0 {
                        0.0
                    } else {
                        100.0
                    }
                } else {
                    (rows as f64 - prev as f64).abs() / prev as f64 * 100.0
                };
                let bad = change > *max_change_pct;
                (bad as u64, vec![], format!("{rows} rows vs {prev} published ({change:.1}% change, at most {max_change_pct}% allowed)"))
            }
        },
        CheckKind::SchemaLocked { require_baseline } => match &baseline.schema {
            None => return Ok(no_baseline(check, *require_baseline || baseline.required)),
            Some(prev) => {
                let mut diffs = Vec::new();
                for (name, ty) in prev {
                    match schema.iter().find(|(n, _)| n == name) {
                        None => diffs.push(format!("column {name} removed")),
                        Some((_, t)) if t != ty => {
                            diffs.push(format!("column {name} changed from {ty} to {t}"))
                        }
                        _ => {}
                    }
                }
                for (name, ty) in schema {
                    if !prev.iter().any(|(n, _)| n == name) {
                        diffs.push(format!("column {name} {ty} added"));
                    }
                }
                let n = diffs.len() as u64;
                let msg = if diffs.is_empty() {
                    "schema unchanged".to_string()
                } else {
                    diffs.join("; ")
                };
                (n, diffs, msg)
            }
        },
    };
    let mut r = result(check, failures, samples, message);
    if matches!(
        check.kind,
        CheckKind::Volume { .. } | CheckKind::SchemaLocked { .. }
    ) {
        r.baseline = baseline.source.clone();
    }
    Ok(r)
}

/// A volume or schema check on a first publish: nothing to compare with, said plainly; a
/// failure when a baseline is required (CI jobs that must never publish unchecked).
fn no_baseline(check: &Check, required: bool) -> CheckResult {
    if required {
        let mut r = result(
            check,
            1,
            vec![],
            format!("{NO_BASELINE} (a baseline is required)"),
        );
        // A required baseline is not a warning matter.
        r.status = CheckStatus::Fail;
        r
    } else {
        result(check, 0, vec![], format!("{NO_BASELINE}; nothing compared"))
    }
}
