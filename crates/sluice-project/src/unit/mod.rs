//! Unit tests of models (`sluice test --unit`): each test runs one model's SQL on fixed
//! inputs given in `tests/*.toml` and compares what it returns with the rows expected.
//! Nothing reads the project's sources or published outputs: the test session has no
//! sources at all, and an input the model reads but the test does not give is an error.

mod compare;
mod fixture;
mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::model::{self, Model};
use super::plan::{build_plan, ident, ProjectPlan};
use crate::config::{parse_sql_type, Project};
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::{build_session, SessionOptions};
pub(crate) use compare::cells;
pub use spec::{discover, Expectation, Fixture, UnitTest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitStatus {
    Pass,
    Fail,
    Error,
}

/// What one unit test did.
#[derive(Debug)]
pub struct UnitOutcome {
    pub test: String,
    pub model: String,
    pub file: std::path::PathBuf,
    pub status: UnitStatus,
    /// The row diff of a failure, or the error.
    pub message: String,
    pub seconds: f64,
}

/// Every unit test of the project (of the selected models when `models` is given), run
/// in order; each prints one line, a failure its diff too.
pub async fn run_unit_tests(
    project: &Arc<Project>,
    options: &SessionOptions,
    models: Option<&BTreeSet<String>>,
) -> Result<Vec<UnitOutcome>> {
    let tests = discover(&project.root)?;
    let mut outcomes = Vec::new();
    // The real inputs' schemas depend only on the variables: told once per set of them.
    let mut schemas = SchemaCache::new();
    for test in tests
        .iter()
        .filter(|t| models.is_none_or(|m| m.contains(&t.model)))
    {
        let started = Instant::now();
        let (status, message) = match run_one(project, options, &mut schemas, test).await {
            Ok(None) => (UnitStatus::Pass, String::new()),
            Ok(Some(diff)) => (UnitStatus::Fail, diff),
            Err(e) => (UnitStatus::Error, e.to_string()),
        };
        let outcome = UnitOutcome {
            test: test.name.clone(),
            model: test.model.clone(),
            file: test.file.clone(),
            status,
            message,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!("{}", outcome.line());
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

impl UnitOutcome {
    /// `unit ok    name (model)`, or FAIL / ERROR with the diff or error indented below.
    pub fn line(&self) -> String {
        let head = match self.status {
            UnitStatus::Pass => "ok   ",
            UnitStatus::Fail => "FAIL ",
            UnitStatus::Error => "ERROR",
        };
        let mut line = format!("unit {head} {} ({})", self.test, self.model);
        for l in self.message.lines() {
            line.push_str("\n      ");
            line.push_str(l);
        }
        line
    }
}

/// The summary line and the exit: 1 when a test could not run, 3 when one failed.
pub fn unit_outcome(outcomes: &[UnitOutcome], elapsed: f64) -> (String, Result<()>) {
    let count = |s: UnitStatus| outcomes.iter().filter(|o| o.status == s).count();
    let summary = format!(
        "{} unit tests: {} passed, {} failed, {} errors in {elapsed:.2}s",
        outcomes.len(),
        count(UnitStatus::Pass),
        count(UnitStatus::Fail),
        count(UnitStatus::Error)
    );
    let first = |s: UnitStatus| outcomes.iter().find(|o| o.status == s);
    let result = if let Some(o) = first(UnitStatus::Error) {
        Err(SluiceError::sql(format!(
            "unit test `{}` ({}): {}",
            o.test,
            o.file.display(),
            o.message
        )))
    } else if let Some(o) = first(UnitStatus::Fail) {
        Err(SluiceError::Check(format!(
            "unit test `{}` of model `{}` failed",
            o.test, o.model
        )))
    } else {
        Ok(())
    };
    (summary, result)
}

/// Ok(None) when the test passes, Ok(Some(diff)) when the model returns other rows.
/// Real input schemas (and whether each is exact) by the variables they were planned with.
type SchemaCache = HashMap<BTreeMap<String, String>, HashMap<String, (SchemaRef, bool)>>;

async fn run_one(
    project: &Arc<Project>,
    options: &SessionOptions,
    cache: &mut SchemaCache,
    test: &UnitTest,
) -> Result<Option<String>> {
    let mut vars = project.vars();
    vars.extend(test.vars.clone());
    let plan = build_plan(project, &vars)?;
    let Some(i) = plan.models().position(|m| m.name == test.model) else {
        let hint = crate::diagnostic::did_you_mean_hint(
            &test.model,
            plan.models().map(|m| m.name.as_str()),
        );
        return Err(SluiceError::sql(format!(
            "no model named `{}`{hint}",
            test.model
        )));
    };
    let m = &plan.planned[i].model;
    let text = model::substitute(m, &vars)?;
    check_inputs(m, &super::dag::sql_reads(m, &text)?, test)?;

    let schemas = match cache.get(&vars) {
        Some(s) => s,
        None => {
            let told = real_schemas(project, &plan, options).await;
            cache.entry(vars.clone()).or_insert(told)
        }
    };
    let ctx = fixture_session(project, options, test)?;
    for (input, fixture) in &test.inputs {
        let table = fixture_table(&ctx, input, fixture, schemas.get(input)).await?;
        ctx.register_table(input.as_str(), table)
            .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    }

    let mut failures = Vec::new();
    let actual = collect(&ctx, &plan.planned[i].sql)
        .await
        .map_err(|e| m.datafusion_error(&e, plan.planned[i].sql_shift))?;
    if let Some(d) = expect(&actual, &test.expect).await? {
        failures.push(d);
    }
    if !test.expect_cte.is_empty() {
        for (cte, expectation) in &test.expect_cte {
            let sql = cte_query(&text, cte).map_err(|e| m.error(e))?;
            let rows = collect(&ctx, &sql)
                .await
                .map_err(|e| m.error(format!("CTE `{cte}`: {}", describe_datafusion_error(&e))))?;
            if let Some(d) = expect(&rows, expectation).await? {
                failures.push(format!("CTE `{cte}`: {d}"));
            }
        }
    }
    Ok((!failures.is_empty()).then(|| failures.join("\n")))
}

/// Every table the model's SQL reads is given, and nothing else.
fn check_inputs(m: &Model, reads: &BTreeSet<String>, test: &UnitTest) -> Result<()> {
    let missing: Vec<&String> = reads
        .iter()
        .filter(|r| !test.inputs.contains_key(*r))
        .collect();
    if let Some(first) = missing.first() {
        let names: Vec<String> = missing.iter().map(|r| format!("`{r}`")).collect();
        return Err(SluiceError::sql(format!(
            "model `{}` reads {}, which the test does not give; add inputs.{first} = {{ rows = [...] }} (or csv, or sql)",
            m.name,
            names.join(", ")
        )));
    }
    if let Some(extra) = test.inputs.keys().find(|k| !reads.contains(*k)) {
        let read: Vec<&str> = reads.iter().map(String::as_str).collect();
        return Err(SluiceError::sql(format!(
            "the test gives `{extra}`, which model `{}` does not read (it reads {})",
            m.name,
            read.join(", ")
        )));
    }
    Ok(())
}

/// The schema of every source and model the project can tell without reading rows, and
/// whether it is exact: a source's files' schema (partition columns included), else its
/// declared schema; each model planned on empty tables of what it reads. What cannot be
/// told is left out (the fixture's own types are used then).
async fn real_schemas(
    project: &Arc<Project>,
    plan: &ProjectPlan,
    options: &SessionOptions,
) -> HashMap<String, (SchemaRef, bool)> {
    let mut out = HashMap::new();
    let files = SessionOptions {
        query_files_by_path: false,
        cluster: None,
        ..options.clone()
    };
    let Ok(with_sources) = build_session(project.clone(), &files) else {
        return out;
    };
    for (name, source) in &project.config.sources {
        if let Ok(t) = with_sources.ctx.table_provider(name).await {
            out.insert(name.clone(), (t.schema(), true));
            continue;
        }
        let declared = source.schema.as_ref().and_then(|columns| {
            columns
                .iter()
                .map(|(c, t)| parse_sql_type(t).ok().map(|t| Field::new(c, t, true)))
                .collect::<Option<Vec<_>>>()
        });
        if let Some(fields) = declared {
            out.insert(name.clone(), (Arc::new(Schema::new(fields)), false));
        }
    }
    // Models are planned on empty tables of what they read, so no file is opened again.
    let empty_only = SessionOptions {
        without_sources: true,
        ..files
    };
    let Ok(session) = build_session(project.clone(), &empty_only) else {
        return out;
    };
    for (name, (schema, _)) in &out {
        let _ = session
            .ctx
            .register_table(name.as_str(), Arc::new(EmptyTable::new(schema.clone())));
    }
    for &i in &plan.order {
        let name = &plan.planned[i].model.name;
        if let Ok(df) = session.ctx.sql(&plan.planned[i].sql).await {
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let empty = Arc::new(EmptyTable::new(schema.clone()));
            if session.ctx.register_table(name.as_str(), empty).is_ok() {
                out.insert(name.clone(), (schema, true));
            }
        }
    }
    out
}

/// A session with sluice's functions and no sources: the test's fixtures are its only
/// tables. Secrets the test sets replace the project's for `hmac_sha256`.
fn fixture_session(
    project: &Arc<Project>,
    options: &SessionOptions,
    test: &UnitTest,
) -> Result<SessionContext> {
    let fixture_options = SessionOptions {
        query_files_by_path: false,
        cluster: None,
        without_sources: true,
        ..options.clone()
    };
    let session = build_session(project.clone(), &fixture_options)?;
    if !test.secrets.is_empty() {
        let secrets = Arc::new(TestSecrets(test.secrets.clone()));
        session
            .ctx
            .register_udf(crate::functions::hmac_sha256(secrets));
    }
    Ok(session.ctx)
}

/// Secrets given in a test file, in place of the project's.
#[derive(Debug)]
struct TestSecrets(BTreeMap<String, String>);

impl crate::functions::Secrets for TestSecrets {
    fn declares(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn read(&self, name: &str) -> std::result::Result<Vec<u8>, String> {
        self.0
            .get(name)
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| format!("unknown secret `{name}`: the test's [secrets] do not set it"))
    }
}

/// One fixture as a table, typed by the input's real schema when there is one.
async fn fixture_table(
    ctx: &SessionContext,
    input: &str,
    fixture: &Fixture,
    schema: Option<&(SchemaRef, bool)>,
) -> Result<Arc<MemTable>> {
    let problem = |m: String| SluiceError::sql(format!("input `{input}`: {m}"));
    let df = match fixture {
        Fixture::Rows(rows) => {
            let batch = fixture::rows_batch(rows).map_err(problem)?;
            ctx.read_batch(batch)
        }
        Fixture::Csv(path) => {
            let path = path.display().to_string();
            ctx.read_csv(path.as_str(), CsvReadOptions::new().has_header(true))
                .await
        }
        Fixture::Sql(sql) => ctx.sql(sql).await,
    }
    .map_err(|e| problem(describe_datafusion_error(&e)))?;
    let df = match schema {
        Some((s, exact)) => {
            fixture::conform(df, s, *exact, &format!("`{input}`")).map_err(problem)?
        }
        None => df,
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .map_err(|e| problem(describe_datafusion_error(&e)))?;
    Ok(Arc::new(
        MemTable::try_new(schema, vec![batches]).map_err(|e| problem(e.to_string()))?,
    ))
}

async fn collect(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await?))
}

/// The diff between what came back and what was expected, on the columns the expected
/// rows name (typed like the output's columns).
async fn expect(
    actual: &(SchemaRef, Vec<RecordBatch>),
    expectation: &Expectation,
) -> Result<Option<String>> {
    let (schema, batches) = actual;
    let mut columns: Vec<String> = Vec::new();
    for row in &expectation.rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    if columns.is_empty() {
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        return Ok((n > 0).then(|| format!("expected no rows, got {n}")));
    }
    let mut fields = Vec::new();
    for c in &columns {
        match schema.field_with_name(c) {
            Ok(f) => fields.push(f.clone()),
            Err(_) => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(SluiceError::sql(format!(
                    "expected column `{c}` is not in the output (its columns: {})",
                    names.join(", ")
                )));
            }
        }
    }
    let typed = Schema::new(fields);
    let problem = |m: String| SluiceError::sql(format!("expected rows: {m}"));
    let scratch = SessionContext::new();
    let df = scratch
        .read_batch(fixture::rows_batch(&expectation.rows).map_err(problem)?)
        .map_err(|e| problem(describe_datafusion_error(&e)))?;
    let expected_batches = fixture::conform(df, &typed, true, "the expected rows")
        .map_err(problem)?
        .collect()
        .await
        .map_err(|e| problem(describe_datafusion_error(&e)))?;
    let want = compare::cells(&expected_batches, &columns).map_err(problem)?;
    let got = compare::cells(batches, &columns).map_err(problem)?;
    Ok(compare::diff(&columns, &want, &got, expectation.ordered))
}

/// The model's WITH clause, then `SELECT * FROM cte`.
fn cte_query(sql: &str, cte: &str) -> std::result::Result<String, String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
    let with = match statements.first() {
        Some(Statement::Query(q)) => q.with.as_ref(),
        _ => None,
    };
    let Some(with) = with else {
        return Err(format!("expect_cte.{cte}: the model has no WITH clause"));
    };
    if !with.cte_tables.iter().any(|t| t.alias.name.value == cte) {
        let names: Vec<String> = with
            .cte_tables
            .iter()
            .map(|t| t.alias.name.value.clone())
            .collect();
        return Err(format!(
            "expect_cte.{cte}: the model has no CTE `{cte}` (its CTEs: {})",
            names.join(", ")
        ));
    }
    Ok(format!("{with} SELECT * FROM {}", ident(cte)))
}
