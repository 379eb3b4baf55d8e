//! Where a table model is published, and the staging of one run's output there: each
//! kind of output's stage and publish live beside this (`local`, `s3`, `delta`,
//! `postgres`); `Stage` and `Published` hand each call to its kind.

use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;

use super::delta::{self, DeltaStage, PublishedDelta};
use super::local::{self as publish, OutputFile};
use super::objects::store_error;
use super::postgres::{DatabaseStage, DatabaseTable};
use super::published::PublishedManifest;
use super::s3::{self, S3Published, S3Stage};
use crate::config::FileFormat;
use crate::error::{Result, SluiceError};
use crate::project::results::Manifest;
use crate::sources::manifest::{self, MANIFEST};

/// A table model's published location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Local(PathBuf),
    /// `s3://bucket/prefix/`, always with the trailing slash.
    S3(String),
    /// A Delta table: a local folder or an S3 prefix, without the trailing slash.
    Delta(String),
    /// A table of a `[databases]` database.
    Database(DatabaseTable),
}

impl Output {
    /// A model's location: a full URL or absolute path as given, else under the target.
    /// A model's location in its format: Delta tables publish by their log; a database
    /// output is `schema.table` (default: the model's name in `public`).
    pub fn of_model(
        target: &str,
        location: Option<&str>,
        name: &str,
        format: FileFormat,
        database: Option<&str>,
    ) -> Output {
        if let (FileFormat::Postgres, Some(database)) = (format, database) {
            let table =
                sluice_postgres::TableName::parse(location.unwrap_or(name)).unwrap_or_else(|_| {
                    sluice_postgres::TableName {
                        schema: "public".into(),
                        table: name.into(),
                    }
                });
            return Output::Database(DatabaseTable {
                database: database.to_string(),
                table,
            });
        }
        match Output::resolve(target, location, name) {
            out if format != FileFormat::Delta => out,
            out => Output::Delta(out.display()),
        }
    }

    pub fn resolve(target: &str, location: Option<&str>, name: &str) -> Output {
        let location = match location {
            Some(l) if l.contains("://") || Path::new(l).is_absolute() => l.to_string(),
            Some(l) => join(target, l),
            None => join(target, name),
        };
        if crate::store_fault::bucket_of(&location).is_some() {
            Output::S3(format!("{}/", location.trim_end_matches('/')))
        } else {
            Output::Local(PathBuf::from(location))
        }
    }

    /// The location as a table URL (folders end with `/`).
    pub fn url(&self) -> String {
        match self {
            Output::Local(p) => format!("{}/", p.display()),
            Output::S3(u) => u.clone(),
            Output::Delta(l) => format!("{l}/"),
            Output::Database(t) => format!("{}/", t.location()),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Output::Local(p) => p.display().to_string(),
            Output::S3(u) => u.trim_end_matches('/').to_string(),
            Output::Delta(l) => l.clone(),
            Output::Database(t) => t.location(),
        }
    }

    /// Where one published file lives.
    pub fn file(&self, relative: &str) -> String {
        match self {
            Output::Local(p) => p.join(relative).display().to_string(),
            Output::S3(u) => format!("{u}{relative}"),
            Output::Delta(l) => format!("{l}/{relative}"),
            Output::Database(t) => t.location(),
        }
    }

    /// Where the manifest of this output lives, for messages.
    pub fn manifest_location(&self) -> String {
        match self {
            Output::Local(p) => p.join(MANIFEST).display().to_string(),
            Output::S3(u) => format!("{u}{MANIFEST}"),
            Output::Delta(l) => format!("{l}/_delta_log"),
            Output::Database(t) => t.location(),
        }
    }

    /// The published manifest, when the model has been published. A manifest that cannot
    /// be read, or lacks its rows, files or schema, is an error naming it: callers decide
    /// what to keep and what to compare from it, and must not take a broken one as empty.
    pub async fn manifest(&self, ctx: &SessionContext) -> Result<Option<PublishedManifest>> {
        let bytes = match self {
            Output::Local(p) => {
                if !p.join("_SUCCESS").exists() {
                    return Ok(None);
                }
                let path = p.join(MANIFEST);
                std::fs::read(&path).map_err(|e| SluiceError::io(&path, e))?
            }
            Output::S3(u) => match s3::manifest_bytes(ctx, u).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
            Output::Delta(l) => return delta::manifest(ctx, l).await,
            Output::Database(t) => return t.manifest(ctx).await,
        };
        PublishedManifest::parse(&bytes, &self.manifest_location()).map(Some)
    }

    /// Whether anything is at the location, published or not (a manifest-less folder of
    /// files is something a rebuild would silently replace).
    pub async fn has_files(&self, ctx: &SessionContext) -> Result<bool> {
        match self {
            Output::Local(p) => match std::fs::read_dir(p) {
                Ok(mut entries) => Ok(entries.next().is_some()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(SluiceError::io(p, e)),
            },
            Output::S3(u) => s3::has_objects(ctx, u).await,
            Output::Delta(l) => delta::has_objects(ctx, l).await,
            // An existing table is published (its rows are the baseline).
            Output::Database(_) => Ok(false),
        }
    }

    pub async fn is_published(&self, ctx: &SessionContext) -> Result<bool> {
        if let Output::Delta(l) = self {
            return delta::exists(ctx, l).await;
        }
        Ok(self.manifest(ctx).await?.is_some())
    }
}

fn join(base: &str, relative: &str) -> String {
    if base.contains("://") {
        format!("{}/{}", base.trim_end_matches('/'), relative)
    } else {
        Path::new(base).join(relative).display().to_string()
    }
}

/// One run's output of one model, written but not yet published.
pub enum Stage {
    Local { dir: PathBuf, location: PathBuf },
    S3(S3Stage),
    Delta(DeltaStage),
    Database(Box<DatabaseStage>),
}

impl Stage {
    /// Whether files carried over from the published output stay where they are (S3
    /// prefixes, Delta tables: the new manifest or version lists them again) instead of
    /// being part of the stage's own files.
    pub fn lists_carried_files(&self) -> bool {
        matches!(self, Stage::S3(_) | Stage::Delta(_))
    }

    /// The staging table, when the output is a database table.
    pub fn database(&self) -> Option<&DatabaseStage> {
        match self {
            Stage::Database(table) => Some(table),
            _ => None,
        }
    }

    /// The uncommitted Delta files, when the output is a Delta table.
    pub fn delta(&self) -> Option<&DeltaStage> {
        match self {
            Stage::Delta(delta) => Some(delta),
            _ => None,
        }
    }

    pub async fn begin(ctx: &SessionContext, output: &Output, staging: PathBuf) -> Result<Stage> {
        match output {
            Output::Local(location) => {
                std::fs::create_dir_all(&staging).map_err(|e| SluiceError::io(&staging, e))?;
                Ok(Stage::Local {
                    dir: staging,
                    location: location.clone(),
                })
            }
            Output::S3(location) => Ok(Stage::S3(S3Stage::begin(ctx, location).await?)),
            Output::Delta(location) => {
                let run = staging
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(Stage::Delta(DeltaStage::begin(ctx, location, &run).await?))
            }
            Output::Database(table) => Ok(Stage::Database(Box::new(
                DatabaseStage::begin(ctx, table).await?,
            ))),
        }
    }

    /// Where the writer puts this run's files.
    pub fn write_url(&self) -> String {
        match self {
            Stage::Local { dir, .. } => format!("{}/", dir.display()),
            Stage::S3(s) => s.location.clone(),
            Stage::Delta(d) => d.write_url(),
            // Rows go in by COPY (`build::to_database`), never by a file writer.
            Stage::Database(d) => d.output.location(),
        }
    }

    /// The data files this run wrote, relative to the output folder.
    pub async fn written_files(&self) -> Result<Vec<OutputFile>> {
        match self {
            Stage::Local { dir, .. } => publish::data_files(dir),
            Stage::S3(s) => s.written_files().await,
            Stage::Delta(d) => d.written_files().await,
            Stage::Database(_) => Ok(Vec::new()),
        }
    }

    /// Keep the published files of an incremental model in the new output.
    pub fn carry(&self, previous: &[OutputFile]) -> Result<()> {
        match self {
            Stage::Local { dir, location } => publish::link_files(location, dir, previous),
            // They stay where they are; the new manifest (or version) lists them again.
            Stage::S3(_) | Stage::Delta(_) | Stage::Database(_) => Ok(()),
        }
    }

    /// The table URL that reads exactly `files` of this stage.
    pub fn table_url(&self, ctx: &SessionContext, files: &[OutputFile]) -> Result<String> {
        match self {
            Stage::Local { dir, .. } => Ok(format!("{}/", dir.display())),
            Stage::S3(s) => s.table_url(ctx, files),
            Stage::Delta(d) => {
                let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
                let url = d.table_url();
                manifest::register_only_listed(&ctx.state(), url.as_str(), &paths)
                    .map_err(|e| store_error(&d.location, &e))
            }
            Stage::Database(d) => Err(SluiceError::sql(format!(
                "{}: a database stage is read through its staging table, not files",
                d.output.location()
            ))),
        }
    }

    /// Publish: `_SUCCESS` and the manifest last. The previous version stays recoverable
    /// until the returned publish is finished (or undone, by `--all-or-nothing` when a
    /// later model's publish fails).
    pub async fn publish(self, manifest: &Manifest) -> Result<Published> {
        let manifest_json =
            &serde_json::to_vec_pretty(manifest).map_err(|e| SluiceError::sql(e.to_string()))?;
        let files = &manifest.files;
        match self {
            Stage::Delta(d) => Ok(Published::Delta(d.publish(manifest).await?)),
            Stage::Database(d) => Ok(Published::Database(Box::new(d.publish().await?))),
            Stage::Local { dir, location } => {
                let published = publish::write_durably(&dir.join("_SUCCESS"), b"")
                    .and_then(|()| publish::write_durably(&dir.join(MANIFEST), manifest_json))
                    .and_then(|()| publish::publish_dir(&dir, &location));
                match published {
                    Ok(p) => Ok(Published::Local(p)),
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(e)
                    }
                }
            }
            Stage::S3(s) => Ok(Published::S3(s.publish(manifest_json, files).await?)),
        }
    }

    /// Remove what this run wrote (a check failed, or the query did).
    pub async fn discard(self) {
        match self {
            Stage::Local { dir, .. } => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Stage::S3(s) => s.discard().await,
            Stage::Delta(d) => d.discard().await,
            Stage::Database(d) => d.discard().await,
        }
    }
}

/// A publish that readers see, with what it takes to finish it or take it back.
pub enum Published {
    Local(publish::LocalPublish),
    S3(S3Published),
    Delta(PublishedDelta),
    /// A transaction left open until the publish is finished.
    Database(Box<sluice_postgres::Publishing>),
}

impl Published {
    /// Whether finishing can still fail (a database COMMIT): such publishes are finished
    /// first, while the others can still be taken back.
    pub fn finishes_by_commit(&self) -> bool {
        matches!(self, Published::Database(_))
    }

    /// The publish stands: delete what only the previous version used.
    pub async fn finish(self) -> Result<()> {
        match self {
            Published::Local(p) => p.finish(),
            Published::S3(p) => p.finish().await,
            // Files older versions use stay for time travel until `sluice vacuum`.
            Published::Delta(_) => Ok(()),
            Published::Database(p) => p.finish().await.map_err(SluiceError::Database),
        }
    }

    /// Take the publish back: the previous version is what readers see again.
    pub async fn undo(self) -> Result<()> {
        match self {
            Published::Local(p) => p.undo(),
            Published::S3(p) => p.undo().await,
            Published::Delta(d) => d.undo().await,
            Published::Database(p) => p.undo().await.map_err(SluiceError::Database),
        }
    }
}
