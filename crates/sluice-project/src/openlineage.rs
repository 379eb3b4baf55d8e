//! OpenLineage run events (spec 2-0-2) for `run`: per model a START, then a COMPLETE or a
//! FAIL, each model run with its own runId and a parent facet naming the sluice run. Inputs
//! and outputs are named as OpenLineage names datasets (`file`, `s3://bucket`,
//! `postgres://host:port`); outputs carry their schema, data source, row and byte counts,
//! column lineage (DIRECT carries values, `masking` where the value went through a hash or a
//! count; INDIRECT columns decide which rows there are) and the checks' outcomes.
//!
//! Events go out in order from one background task. Posting never fails a run: an endpoint
//! that refuses or does not answer costs a warning and at most a few seconds at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::lineage::{column_hops, model_plans_then_forget, tracer, Mode};
use super::model::{Materialized, Model};
use super::publish::Output;
use super::results::{ModelResult, ModelStatus};
use super::ProjectPlan;
use crate::config::read_secret;
use crate::error::Result;
use crate::session::Session;

const PRODUCER: &str = concat!(
    "https://github.com/sluice-sql/sluice/tree/v",
    env!("CARGO_PKG_VERSION")
);
const SPEC: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// How long one post may take, and how long the end of a run waits for those still queued.
const POST_TIMEOUT: Duration = Duration::from_secs(3);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn facet(schema: &str) -> Value {
    json!({
        "_producer": PRODUCER,
        "_schemaURL": format!("https://openlineage.io/spec/facets/{schema}"),
    })
}

fn with(mut base: Value, fields: Value) -> Value {
    if let (Some(b), Some(f)) = (base.as_object_mut(), fields.as_object()) {
        b.extend(f.clone());
    }
    base
}

/// What one model's events say about its columns, from its plan.
#[derive(Default)]
struct ModelColumns {
    /// Output column -> the `table.column`s it reads (any use), and those whose values it
    /// carries.
    all: Vec<(String, BTreeSet<String>)>,
    raw: BTreeMap<String, BTreeSet<String>>,
    indirect: BTreeSet<String>,
    /// Output columns and their SQL types.
    types: Vec<(String, String)>,
}

/// A dataset as OpenLineage names it.
#[derive(Clone)]
struct Dataset {
    namespace: String,
    name: String,
}

pub struct Emitter {
    queue: mpsc::UnboundedSender<Value>,
    worker: tokio::task::JoinHandle<Vec<String>>,
    namespace: String,
    project: String,
    parent_run: uuid::Uuid,
    columns: Vec<ModelColumns>,
    datasets: BTreeMap<String, Dataset>,
}

impl Emitter {
    /// An emitter when OpenLineage is configured (environment first, then sluice.toml).
    pub async fn start(
        session: &Session,
        plan: &ProjectPlan,
        run_id: &str,
    ) -> Result<Option<Emitter>> {
        let project = &session.project;
        let config = project
            .config
            .lineage
            .openlineage
            .clone()
            .unwrap_or_default();
        let Some(url) = std::env::var("OPENLINEAGE_URL").ok().or(config.url.clone()) else {
            return Ok(None);
        };
        let namespace = std::env::var("OPENLINEAGE_NAMESPACE")
            .ok()
            .or(config.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let api_key = match std::env::var("OPENLINEAGE_API_KEY") {
            Ok(key) => Some(key),
            Err(_) => match &config.api_key {
                Some(secret) => Some(
                    String::from_utf8_lossy(&read_secret(
                        "lineage.openlineage.api_key",
                        secret,
                        &project.root,
                    )?)
                    .trim()
                    .to_string(),
                ),
                None => None,
            },
        };
        let endpoint = format!("{}/api/v1/lineage", url.trim_end_matches('/'));
        let columns = model_plans_then_forget(session, plan, |planned| ModelColumns {
            all: column_hops(planned, Mode::All),
            raw: column_hops(planned, Mode::Raw).into_iter().collect(),
            indirect: tracer(Mode::All).indirect(planned),
            types: planned
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    (
                        f.name().clone(),
                        crate::config::sql_type_name(f.data_type()),
                    )
                })
                .collect(),
        })
        .await?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
        let (queue, events) = mpsc::unbounded_channel();
        let worker = tokio::spawn(post_all(endpoint, api_key, events));
        Ok(Some(Emitter {
            queue,
            worker,
            namespace,
            project: project.name(),
            parent_run: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, run_id.as_bytes()),
            columns,
            datasets: datasets(session, plan),
        }))
    }

    fn model_run(&self, m: &Model) -> uuid::Uuid {
        uuid::Uuid::new_v5(&self.parent_run, m.name.as_bytes())
    }

    fn event(&self, kind: &str, plan: &ProjectPlan, i: usize, run_facets: Value) -> Value {
        let m = &plan.planned[i].model;
        let inputs: Vec<Value> = plan.planned[i]
            .reads
            .iter()
            .chain(m.erasure.as_ref().map(|e| &e.list))
            .filter_map(|name| self.datasets.get(name))
            .map(|d| json!({ "namespace": d.namespace, "name": d.name }))
            .collect();
        json!({
            "eventType": kind,
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "producer": PRODUCER,
            "schemaURL": SPEC,
            "run": {
                "runId": self.model_run(m).to_string(),
                "facets": with(json!({
                    "parent": with(facet("1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"), json!({
                        "run": { "runId": self.parent_run.to_string() },
                        "job": { "namespace": self.namespace, "name": self.project },
                    })),
                }), run_facets),
            },
            "job": {
                "namespace": self.namespace,
                "name": format!("{}.{}", self.project, m.name),
                "facets": {
                    "sql": with(facet("1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet"), json!({
                        "query": plan.planned[i].sql, "dialect": "datafusion",
                    })),
                },
            },
            "inputs": inputs,
            "outputs": [],
        })
    }

    pub fn started(&self, plan: &ProjectPlan, i: usize) {
        let mut event = self.event("START", plan, i, json!({}));
        if let Some(output) = self.datasets.get(&plan.planned[i].model.name) {
            if plan.planned[i].model.materialized != Materialized::View {
                event["outputs"] = json!([{ "namespace": output.namespace, "name": output.name }]);
            }
        }
        let _ = self.queue.send(event);
    }

    pub fn finished(&self, plan: &ProjectPlan, i: usize, result: &ModelResult) {
        let m = &plan.planned[i].model;
        let (kind, run_facets) = match result.status {
            ModelStatus::Success => ("COMPLETE", json!({})),
            ModelStatus::Skipped => return,
            _ => (
                "FAIL",
                json!({
                    "errorMessage": with(facet("1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"), json!({
                        "message": result.message, "programmingLanguage": "SQL",
                    })),
                }),
            ),
        };
        let mut event = self.event(kind, plan, i, run_facets);
        if m.materialized != Materialized::View {
            if let Some(output) = self.datasets.get(&m.name) {
                event["outputs"] = json!([self.output(i, output, result)]);
            }
        }
        let _ = self.queue.send(event);
    }

    fn output(&self, i: usize, output: &Dataset, result: &ModelResult) -> Value {
        let columns = &self.columns[i];
        let field = |from: &str| {
            let (table, column) = from.split_once('.').unwrap_or((from, ""));
            let d = self.datasets.get(table).cloned().unwrap_or(Dataset {
                namespace: self.namespace.clone(),
                name: table.to_string(),
            });
            (d, column.to_string())
        };
        let mut fields = serde_json::Map::new();
        for (column, feeds) in &columns.all {
            let raw = columns.raw.get(column);
            let inputs: Vec<Value> = feeds
                .iter()
                .map(|from| {
                    let (d, input_column) = field(from);
                    let carried = raw.is_some_and(|r| r.contains(from));
                    json!({
                        "namespace": d.namespace, "name": d.name, "field": input_column,
                        "transformations": [{
                            "type": "DIRECT", "subtype": "TRANSFORMATION", "masking": !carried,
                        }],
                    })
                })
                .collect();
            fields.insert(column.clone(), json!({ "inputFields": inputs }));
        }
        let dataset: Vec<Value> = columns
            .indirect
            .iter()
            .map(|from| {
                let (d, input_column) = field(from);
                json!({
                    "namespace": d.namespace, "name": d.name, "field": input_column,
                    "transformations": [{ "type": "INDIRECT", "subtype": "FILTER" }],
                })
            })
            .collect();
        let schema: Vec<Value> = columns
            .types
            .iter()
            .map(|(name, ty)| json!({ "name": name, "type": ty }))
            .collect();
        let assertions: Vec<Value> = result
            .checks
            .iter()
            .map(|c| {
                let mut a = json!({ "assertion": c.check, "success": !c.failed() });
                if let Some(column) = &c.column {
                    a["column"] = json!(column);
                }
                a
            })
            .collect();
        let facets = json!({
            "schema": with(facet("1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"), json!({ "fields": schema })),
            "dataSource": with(facet("1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet"), json!({
                "name": output.namespace, "uri": output.namespace,
            })),
            "columnLineage": with(facet("1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet"), json!({
                "fields": fields, "dataset": dataset,
            })),
            "dataQualityAssertions": with(facet("1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet"), json!({
                "assertions": assertions,
            })),
        });
        let mut out =
            json!({ "namespace": output.namespace, "name": output.name, "facets": facets });
        if let Some(rows) = result.rows {
            out["outputFacets"] = json!({
                "outputStatistics": with(facet("1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet"), json!({
                    "rowCount": rows, "size": result.bytes,
                })),
            });
        }
        out
    }

    /// Wait (bounded) for the queued events to go out; warnings for those that did not.
    pub async fn finish(self) -> Vec<String> {
        drop(self.queue);
        match tokio::time::timeout(FLUSH_TIMEOUT, self.worker).await {
            Ok(Ok(warnings)) => warnings,
            _ => vec![format!(
                "openlineage: events still unsent after {}s were dropped",
                FLUSH_TIMEOUT.as_secs()
            )],
        }
    }
}

/// Post each event in turn; the warnings of those that failed (one per kind of failure).
async fn post_all(
    endpoint: String,
    api_key: Option<String>,
    mut events: mpsc::UnboundedReceiver<Value>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => return vec![format!("openlineage: {e}")],
    };
    let shown = super::notify::redacted(&endpoint);
    let mut failing = false;
    while let Some(event) = events.recv().await {
        // After one failure the endpoint is taken as down: the rest are not tried.
        if failing {
            continue;
        }
        let mut request = client.post(&endpoint).json(&event);
        if let Some(key) = &api_key {
            request = request.bearer_auth(key);
        }
        let problem = match request.send().await {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the endpoint answered {}", r.status())),
            Err(e) => Some(e.without_url().to_string()),
        };
        if let Some(problem) = problem {
            warnings.push(format!(
                "openlineage: cannot post run events to {shown}: {problem}; the run goes on without them"
            ));
            failing = true;
        }
    }
    warnings
}

/// Every source's and model's dataset name.
fn datasets(session: &Session, plan: &ProjectPlan) -> BTreeMap<String, Dataset> {
    let mut out = BTreeMap::new();
    for def in session.schema.sources() {
        let dataset = match (&def.config.database, &def.config.table) {
            (Some(database), table) => {
                database_dataset(session, database, table.as_deref().unwrap_or(&def.name))
            }
            _ => Some(location_dataset(&def.location)),
        };
        if let Some(d) = dataset {
            out.insert(def.name.clone(), d);
        }
    }
    for (i, m) in plan.models().enumerate() {
        let dataset = match plan.location(i) {
            Output::Database(t) => database_dataset(session, &t.database, &t.table.to_string()),
            other => Some(location_dataset(&other.display())),
        };
        if let Some(d) = dataset {
            out.insert(m.name.clone(), d);
        }
    }
    out
}

/// `s3://bucket/key` -> (`s3://bucket`, `key`); a local path -> (`file`, the absolute path).
fn location_dataset(location: &str) -> Dataset {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        return Dataset {
            namespace: format!("s3://{bucket}"),
            name: key.trim_end_matches('/').to_string(),
        };
    }
    let path = std::path::absolute(location.trim_end_matches('/'))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string());
    Dataset {
        namespace: "file".into(),
        name: path,
    }
}

/// A database table: (`postgres://host:port`, `db.schema.table`).
fn database_dataset(session: &Session, database: &str, table: &str) -> Option<Dataset> {
    let db = crate::sources::postgres::Databases::of_session(&session.ctx.state())
        .database(database)
        .ok()?;
    let table = sluice_postgres::TableName::parse(table).ok()?;
    Some(Dataset {
        namespace: db.namespace(),
        name: format!("{}.{}.{}", db.dbname(), table.schema, table.table),
    })
}
