//! `run_results.json` (per model: status, timing, rows, bytes, files, checks; the shape a
//! dbt user knows), the published manifest, and the run history the volume and schema
//! checks compare with.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::checks::{Baseline, CheckResult};
use super::model::{Materialized, Model};
use super::publish::{write_durably, OutputFile};
use crate::error::{Result, SluiceError};

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub run_id: String,
    pub project: String,
    pub sluice_version: String,
    pub generated_at: String,
}

/// Where a model ended in a run (the `status` of `run_results.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Running,
    /// Built, checked and (for tables) published.
    Success,
    /// A check failed: nothing published.
    Fail,
    /// The query, a write or a publish failed.
    Error,
    /// Not built (an upstream model failed, --fail-fast), or not published (--all-or-nothing).
    Skipped,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Running => "running",
            ModelStatus::Success => "success",
            ModelStatus::Fail => "fail",
            ModelStatus::Error => "error",
            ModelStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelResult {
    pub unique_id: String,
    pub name: String,
    pub file: String,
    pub materialized: Materialized,
    pub status: ModelStatus,
    pub execution_time: f64,
    pub rows: Option<u64>,
    pub bytes: u64,
    pub location: Option<String>,
    pub output_files: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub message: String,
    /// Output columns published with personal data unhashed, as the model allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_personal: Vec<String>,
}

impl ModelResult {
    pub fn new(m: &Model) -> Self {
        ModelResult {
            unique_id: format!("model.{}", m.name),
            name: m.name.clone(),
            file: m.file.display().to_string(),
            materialized: m.materialized,
            status: ModelStatus::Running,
            execution_time: 0.0,
            rows: None,
            bytes: 0,
            location: None,
            output_files: Vec::new(),
            checks: Vec::new(),
            message: String::new(),
            allowed_personal: m.allow_personal.clone(),
        }
    }

    pub fn error(m: &Model, message: &str) -> Self {
        let mut r = Self::new(m);
        r.status = ModelStatus::Error;
        r.message = message.to_string();
        r
    }

    pub fn skipped(m: &Model, message: &str) -> Self {
        let mut r = Self::new(m);
        r.status = ModelStatus::Skipped;
        r.message = message.to_string();
        r
    }
}

#[derive(Debug, Serialize)]
pub struct RunResults {
    pub metadata: Metadata,
    pub results: Vec<ModelResult>,
    pub elapsed_time: f64,
}

impl RunResults {
    pub fn new(run_id: &str, project: &str) -> Self {
        RunResults {
            metadata: Metadata {
                run_id: run_id.to_string(),
                project: project.to_string(),
                sluice_version: env!("CARGO_PKG_VERSION").to_string(),
                generated_at: chrono::Utc::now().to_rfc3339(),
            },
            results: Vec::new(),
            elapsed_time: 0.0,
        }
    }

    pub fn push(&mut self, r: ModelResult) {
        self.results.push(r);
    }

    pub fn result_mut(&mut self, model: &str) -> Option<&mut ModelResult> {
        self.results.iter_mut().find(|r| r.name == model)
    }

    /// Rewritten after every model, so a killed run still leaves a record.
    pub fn write(&self, target: &Path) -> Result<()> {
        self.write_as(target, "run_results.json")
    }

    /// Replace `target/NAME` in one rename, so readers never see half a file.
    pub fn write_as(&self, target: &Path, name: &str) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| SluiceError::sql(e.to_string()))?;
        let tmp = target.join(format!(".{name}.tmp"));
        write_durably(&tmp, &json)?;
        let path = target.join(name);
        std::fs::rename(&tmp, &path).map_err(|e| SluiceError::io(&path, e))
    }

    pub fn any_error(&self) -> bool {
        self.results.iter().any(|r| r.status == ModelStatus::Error)
    }

    pub fn any_check_failure(&self) -> bool {
        self.results.iter().any(|r| r.status == ModelStatus::Fail)
    }

    fn count(&self, status: ModelStatus) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    fn first(&self, status: ModelStatus) -> Option<&ModelResult> {
        self.results.iter().find(|r| r.status == status)
    }

    /// The line `sluice run` ends with.
    pub fn run_summary(&self, records: &Path) -> String {
        format!(
            "{} models: {} ok, {} failed checks, {} errors, {} skipped in {:.2}s; results in {}/run_results.json",
            self.results.len(),
            self.count(ModelStatus::Success),
            self.count(ModelStatus::Fail),
            self.count(ModelStatus::Error),
            self.count(ModelStatus::Skipped),
            self.elapsed_time,
            records.display()
        )
    }

    /// The line `sluice test` ends with.
    pub fn test_summary(&self) -> String {
        let checks: usize = self.results.iter().map(|r| r.checks.len()).sum();
        format!(
            "{} models, {checks} checks: {} passed, {} failed, {} errors in {:.2}s",
            self.results.len(),
            self.count(ModelStatus::Success),
            self.count(ModelStatus::Fail),
            self.count(ModelStatus::Error),
            self.elapsed_time
        )
    }

    /// The process outcome: exit 1 naming the first model in error, else 3 naming the
    /// first failed check. A run's error messages already name their model.
    pub fn outcome(&self, messages_name_the_model: bool) -> Result<()> {
        if let Some(r) = self.first(ModelStatus::Error) {
            return Err(SluiceError::sql(if messages_name_the_model {
                r.message.clone()
            } else {
                format!("model `{}`: {}", r.name, r.message)
            }));
        }
        if let Some(r) = self.first(ModelStatus::Fail) {
            return Err(SluiceError::Check(format!(
                "model `{}`: {}",
                r.name, r.message
            )));
        }
        Ok(())
    }
}

/// `_sluice.json`, written into a published folder last.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub run_id: String,
    pub model: String,
    pub format: String,
    pub rows: u64,
    pub files: Vec<OutputFile>,
    pub schema: Vec<(String, String)>,
    pub partition_by: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub published_at: String,
    /// Output columns published with personal data unhashed (`allow_personal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_personal: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HistoryEntry {
    run_id: String,
    model: String,
    rows: u64,
    schema: Vec<(String, String)>,
    finished_at: String,
}

/// One run of a model as the history recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRun {
    pub run_id: String,
    pub finished_at: String,
    /// Rows published, or that would have been when checks failed (None: not counted).
    pub rows: Option<u64>,
    pub published: bool,
    /// `volume`, `unique(shared_id)`, ...: the checks that failed.
    pub failed_checks: Vec<String>,
}

/// The run history: one JSON line per published model, per model whose checks failed, and
/// per erasure rewrite.
///
/// It lives in the local records folder (`target/run_history.jsonl`). When the target is on
/// S3 the history is kept next to the outputs as well (`<target>/_sluice/run_history.jsonl`),
/// and that copy is the one read, so a fresh checkout or another machine sees it. Object
/// stores cannot append: a record rewrites the remote file (last writer wins between two
/// runs writing at the same moment).
pub struct History {
    path: PathBuf,
    remote: Option<RemoteRecords>,
    lines: parking_lot::Mutex<Vec<String>>,
}

/// The records folder under an S3 target.
pub struct RemoteRecords {
    pub store: Arc<dyn ObjectStore>,
    /// `_sluice` under the target prefix.
    pub prefix: ObjectPath,
    /// The target URL, for messages.
    pub url: String,
}

impl RemoteRecords {
    /// The records prefix of an `s3://` target.
    pub fn for_target(ctx: &SessionContext, target: &str) -> Result<Option<RemoteRecords>> {
        if crate::store_fault::bucket_of(target).is_none() {
            return Ok(None);
        }
        let url = format!("{}/{RECORDS_FOLDER}/", target.trim_end_matches('/'));
        let (store, prefix) = super::publish::s3_store(ctx, &url)?;
        Ok(Some(RemoteRecords { store, prefix, url }))
    }

    fn key(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}", self.prefix))
    }

    /// The file's bytes, None when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.key(name)).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| SluiceError::sql(format!("{}{name}: {e}", self.url)))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(SluiceError::sql(format!("{}{name}: {e}", self.url))),
        }
    }

    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.key(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| SluiceError::sql(format!("{}{name}: {e}", self.url)))
    }
}

/// The records folder's name under an S3 target.
pub const RECORDS_FOLDER: &str = "_sluice";
const HISTORY_FILE: &str = "run_history.jsonl";

impl History {
    /// Read the history (the S3 copy when the target is on S3). A file that cannot be read
    /// or a line that is not a record is an error naming the file and line: checks must not
    /// quietly compare with nothing.
    pub async fn open(target: &Path, remote: Option<RemoteRecords>) -> Result<Self> {
        let path = target.join(HISTORY_FILE);
        let (text, origin) = match &remote {
            Some(r) => (
                r.get(HISTORY_FILE)
                    .await?
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
                format!("{}{HISTORY_FILE}", r.url),
            ),
            None => match std::fs::read_to_string(&path) {
                Ok(t) => (Some(t), path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (None, path.display().to_string())
                }
                Err(e) => return Err(SluiceError::io(&path, e)),
            },
        };
        let mut lines = Vec::new();
        for (n, line) in text.unwrap_or_default().lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
                return Err(SluiceError::sql(format!(
                    "{origin}:{}: not a run history record ({e}); fix or remove the line",
                    n + 1
                )));
            }
            lines.push(line.to_string());
        }
        Ok(History {
            path,
            remote,
            lines: parking_lot::Mutex::new(lines),
        })
    }

    /// The history of a project's target: `target/`, and under the target when on S3.
    pub async fn of_project(session: &crate::session::Session) -> Result<Self> {
        let project = &session.project;
        let remote = RemoteRecords::for_target(&session.ctx, &project.target())?;
        Self::open(&project.records_dir(), remote).await
    }

    /// Where the history is read from, for messages.
    pub fn origin(&self) -> String {
        match &self.remote {
            Some(r) => format!("{}{HISTORY_FILE}", r.url),
            None => self.path.display().to_string(),
        }
    }

    pub async fn record(
        &self,
        run_id: &str,
        model: &str,
        rows: u64,
        schema: &[(String, String)],
    ) -> Result<()> {
        let entry = HistoryEntry {
            run_id: run_id.to_string(),
            model: model.to_string(),
            rows,
            schema: schema.to_vec(),
            finished_at: chrono::Utc::now().to_rfc3339(),
        };
        let line = serde_json::to_string(&entry).map_err(|e| SluiceError::sql(e.to_string()))?;
        self.append(line).await
    }

    async fn append(&self, line: String) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SluiceError::io(&self.path, e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| SluiceError::io(&self.path, e))?;
        let text = {
            let mut lines = self.lines.lock();
            lines.push(line);
            lines.join("\n") + "\n"
        };
        if let Some(r) = &self.remote {
            r.put(HISTORY_FILE, text.into_bytes()).await?;
        }
        Ok(())
    }

    /// A model whose checks failed: nothing was published; the rows it would have
    /// published and the checks that failed, for the run history people look at.
    pub async fn record_checks_failed(
        &self,
        run_id: &str,
        model: &str,
        rows: Option<u64>,
        failed_checks: &[String],
    ) -> Result<()> {
        let entry = serde_json::json!({
            "run_id": run_id,
            "model": model,
            "action": "checks_failed",
            "rows": rows,
            "failed_checks": failed_checks,
            "finished_at": chrono::Utc::now().to_rfc3339(),
        });
        self.append(entry.to_string()).await
    }

    /// Each model's runs in order: each publish and each run whose checks failed.
    pub fn runs_by_model(&self) -> HashMap<String, Vec<RecordedRun>> {
        let mut runs: HashMap<String, Vec<RecordedRun>> = HashMap::new();
        let lines = self.lines.lock();
        let recorded = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let published = match v["action"].as_str() {
                    None => true,
                    Some("checks_failed") => false,
                    Some(_) => return None,
                };
                let model = v["model"].as_str()?.to_string();
                let run = RecordedRun {
                    run_id: v["run_id"].as_str()?.to_string(),
                    finished_at: v["finished_at"].as_str().unwrap_or_default().to_string(),
                    rows: v["rows"].as_u64(),
                    published,
                    failed_checks: v["failed_checks"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|c| Some(c.as_str()?.to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                Some((model, run))
            });
        for (model, run) in recorded {
            runs.entry(model).or_default().push(run);
        }
        runs
    }

    /// A rewrite by `sluice erase`: how many rows left which files. A line of its own kind,
    /// next to the publish line `record` writes for the rewritten output.
    pub async fn record_erasure(
        &self,
        run_id: &str,
        model: &str,
        erased_rows: u64,
        rewritten: &[super::publish::OutputFile],
    ) -> Result<()> {
        let entry = serde_json::json!({
            "run_id": run_id,
            "model": model,
            "action": "erase",
            "erased_rows": erased_rows,
            "rewritten_files": rewritten.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            "finished_at": chrono::Utc::now().to_rfc3339(),
        });
        self.append(entry.to_string()).await
    }

    /// The last successful publish of a model recorded in the history.
    pub fn baseline(&self, model: &str) -> Baseline {
        self.lines
            .lock()
            .iter()
            .rev()
            // Erasure lines have no rows or schema of their own.
            .filter_map(|l| serde_json::from_str::<HistoryEntry>(l).ok())
            .find(|e| e.model == model)
            .map(|e| Baseline {
                rows: Some(e.rows),
                schema: Some(e.schema),
                source: Some(self.origin()),
                required: false,
            })
            .unwrap_or_default()
    }

    /// Keep a copy of a run's results next to the outputs when the target is on S3.
    pub async fn publish_results(&self, name: &str, results: &RunResults) -> Result<()> {
        if let Some(r) = &self.remote {
            let json =
                serde_json::to_vec_pretty(results).map_err(|e| SluiceError::sql(e.to_string()))?;
            r.put(name, json).await?;
        }
        Ok(())
    }
}
