//! The last step of a model's write -> check -> publish: a checked stage made what readers
//! see (`commit_staged`), finished, and the model read from its new output; under
//! `--all-or-nothing` every stage published together, or each taken back when one fails.
//! `run` only decides when; this module owns how.

use crate::error::{Result, SluiceError};
use crate::model::Model;
use crate::plan::ProjectPlan;
use crate::publish::{Output, Published, Stage};
use crate::results::{self, History, ModelStatus, RunResults};
use crate::session::Session;
use crate::tables::register_location;

/// A model written and checked, not yet published.
pub(crate) struct Staged {
    pub(crate) stage: Stage,
    pub(crate) output: Output,
    pub(crate) manifest: results::Manifest,
}

/// `--all-or-nothing` once every model passed: publish them all, and when one publish fails
/// (disk full, permissions, S3), take back the ones already published, so every output is
/// the previous version again. Returns the summary line.
pub(crate) async fn publish_all(
    session: &Session,
    plan: &ProjectPlan,
    deferred: Vec<(usize, Staged)>,
    history: &History,
    results: &mut RunResults,
) -> Result<String> {
    let mut committed: Vec<(usize, Committed)> = Vec::new();
    let mut failed: Option<(usize, SluiceError)> = None;
    let mut never_reached = Vec::new();
    for (i, staged) in deferred {
        if failed.is_some() {
            staged.stage.discard().await;
            never_reached.push(i);
            continue;
        }
        match commit_staged(staged).await {
            Ok(c) => committed.push((i, c)),
            Err(e) => failed = Some((i, e)),
        }
    }
    let Some((bad, error)) = failed else {
        return Ok(finish_all(session, plan, committed, history, results).await);
    };
    let bad_name = plan.planned[bad].model.name.clone();
    if let Some(r) = results.result_mut(&bad_name) {
        r.status = ModelStatus::Error;
        r.message = format!("publish failed: {error}");
    }
    let mut rolled_back = 0;
    for (i, c) in committed.into_iter().rev() {
        let undone = c.published.undo().await;
        if let Some(r) = results.result_mut(&plan.planned[i].model.name) {
            match undone {
                Ok(()) => {
                    rolled_back += 1;
                    r.status = ModelStatus::Skipped;
                    r.message = format!(
                        "published, then rolled back to the previous version: publishing `{bad_name}` failed (--all-or-nothing)"
                    );
                }
                Err(e) => {
                    r.status = ModelStatus::Error;
                    r.message = format!(
                        "publishing `{bad_name}` failed and this model's rollback failed too: {e}"
                    );
                }
            }
        }
    }
    // Only outputs that were waiting to publish; views publish nothing.
    for i in never_reached {
        if let Some(r) = results.result_mut(&plan.planned[i].model.name) {
            r.status = ModelStatus::Skipped;
            r.message = format!(
                "built and checked, not published: publishing `{bad_name}` failed (--all-or-nothing)"
            );
        }
    }
    Ok(format!(
        "publishing `{bad_name}` failed; {rolled_back} published model(s) rolled back, nothing changed"
    ))
}

/// Finish every publish of an all-or-nothing run. Database transactions commit first:
/// a COMMIT is the one finish that can still fail, and while it can, the file outputs
/// after it are taken back instead of finished.
async fn finish_all(
    session: &Session,
    plan: &ProjectPlan,
    mut committed: Vec<(usize, Committed)>,
    history: &History,
    results: &mut RunResults,
) -> String {
    committed.sort_by_key(|(_, c)| !c.published.finishes_by_commit());
    let n = committed.len();
    let mut commit_failed: Option<String> = None;
    for (i, c) in committed {
        let m = &plan.planned[i].model;
        if let Some(bad) = &commit_failed {
            let undone = c.published.undo().await;
            if let Some(r) = results.result_mut(&m.name) {
                r.status = if undone.is_ok() {
                    ModelStatus::Skipped
                } else {
                    ModelStatus::Error
                };
                r.message = match undone {
                    Ok(()) => format!("published, then rolled back to the previous version: committing `{bad}` failed (--all-or-nothing)"),
                    Err(e) => format!("committing `{bad}` failed and this model's rollback failed too: {e}"),
                };
            }
            continue;
        }
        let by_commit = c.published.finishes_by_commit();
        let outcome = match c.published.finish().await {
            Ok(()) => after_publish(session, m, &c.manifest, &c.output, history).await,
            Err(e) => {
                if by_commit {
                    commit_failed = Some(m.name.clone());
                }
                Err(e)
            }
        };
        if let Some(r) = results.result_mut(&m.name) {
            match outcome {
                Ok(files) => r.output_files = files,
                Err(e) => {
                    r.status = ModelStatus::Error;
                    r.message = e.to_string();
                }
            }
        }
    }
    match commit_failed {
        None => format!("published {n} models"),
        Some(bad) => format!("committing `{bad}` failed; the outputs after it were rolled back"),
    }
}

/// A stage made visible to readers, not yet finished.
pub(crate) struct Committed {
    pub(crate) published: Published,
    pub(crate) manifest: results::Manifest,
    pub(crate) output: Output,
}

/// Make a checked stage what readers see (manifest last).
pub(crate) async fn commit_staged(staged: Staged) -> Result<Committed> {
    let Staged {
        stage,
        output,
        manifest,
    } = staged;
    let published = stage.publish(&manifest).await?;
    Ok(Committed {
        published,
        manifest,
        output,
    })
}

/// Publish a checked stage (manifest last) and read the model from its new output.
/// Returns the published data files.
pub(crate) async fn publish_staged(
    session: &Session,
    m: &Model,
    staged: Staged,
    history: &History,
) -> Result<Vec<String>> {
    let c = commit_staged(staged).await?;
    c.published.finish().await?;
    after_publish(session, m, &c.manifest, &c.output, history).await
}

/// Read the model from its new output and record the publish; the published data files.
pub(crate) async fn after_publish(
    session: &Session,
    m: &Model,
    manifest: &results::Manifest,
    output: &Output,
    history: &History,
) -> Result<Vec<String>> {
    register_location(&session.ctx, &m.name, &output.url(), m.format).await?;
    history
        .record(&manifest.run_id, &m.name, manifest.rows, &manifest.schema)
        .await?;
    Ok(manifest
        .files
        .iter()
        .map(|f| output.file(&f.path))
        .collect())
}
