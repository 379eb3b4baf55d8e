//! `run_results.json` (per model: status, timing, rows, bytes, files, checks; the shape a
//! dbt user knows), the published manifest, and the run history the volume and schema
//! checks compare with.

use std::io::Write;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Serialize)]
pub struct ModelResult {
    pub unique_id: String,
    pub name: String,
    pub file: String,
    pub materialized: String,
    pub status: String,
    pub execution_time: f64,
    pub rows: Option<u64>,
    pub bytes: u64,
    pub location: Option<String>,
    pub output_files: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub message: String,
}

impl ModelResult {
    pub fn new(m: &Model) -> Self {
        ModelResult {
            unique_id: format!("model.{}", m.name),
            name: m.name.clone(),
            file: m.file.display().to_string(),
            materialized: match m.materialized {
                Materialized::View => "view",
                Materialized::Table => "table",
                Materialized::Incremental => "incremental",
            }
            .to_string(),
            status: "running".into(),
            execution_time: 0.0,
            rows: None,
            bytes: 0,
            location: None,
            output_files: Vec::new(),
            checks: Vec::new(),
            message: String::new(),
        }
    }

    pub fn error(m: &Model, message: &str) -> Self {
        let mut r = Self::new(m);
        r.status = "error".into();
        r.message = message.to_string();
        r
    }

    pub fn skipped(m: &Model, message: &str) -> Self {
        let mut r = Self::new(m);
        r.status = "skipped".into();
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
        self.results.iter().any(|r| r.status == "error")
    }

    pub fn any_check_failure(&self) -> bool {
        self.results.iter().any(|r| r.status == "fail")
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
}

#[derive(Debug, Serialize, Deserialize)]
struct HistoryEntry {
    run_id: String,
    model: String,
    rows: u64,
    schema: Vec<(String, String)>,
    finished_at: String,
}

/// `target/run_history.jsonl`: one line per published model.
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn new(target: &Path) -> Self {
        History {
            path: target.join("run_history.jsonl"),
        }
    }

    pub fn record(
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
        self.append(&line)
    }

    fn append(&self, line: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SluiceError::io(&self.path, e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| SluiceError::io(&self.path, e))
    }

    /// A rewrite by `sluice erase`: how many rows left which files. A line of its own kind,
    /// next to the publish line `record` writes for the rewritten output.
    pub fn record_erasure(
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
        self.append(&entry.to_string())
    }

    /// The last successful publish of a model.
    pub fn baseline(&self, model: &str) -> Baseline {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Baseline::default();
        };
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<HistoryEntry>(l).ok())
            .find(|e| e.model == model)
            .map(|e| Baseline {
                rows: Some(e.rows),
                schema: Some(e.schema),
            })
            .unwrap_or_default()
    }
}
