//! `sluice vacuum`: delete the files of Delta outputs that no version younger than the
//! retention uses any more, and the files of runs that never committed. After an erasure
//! this is what takes the erased rows off storage: until then older versions (time travel)
//! still hold them.

use super::model::Materialized;
use super::publish::writer_lock::WriterLock;
use super::publish::{delta, Output};
use super::ProjectPlan;
use crate::error::{Result, SluiceError};
use crate::session::Session;

/// Delta's own default: a week of versions stays readable.
pub const DEFAULT_RETAIN_HOURS: i64 = 168;

/// What vacuum did to one model's table.
#[derive(Debug, Clone)]
pub struct Vacuumed {
    pub model: String,
    pub location: String,
    /// Relative to the table's folder.
    pub files: Vec<String>,
    pub dry_run: bool,
}

/// `168h`, `7d`, `30m` or `0h`.
pub fn parse_retention(text: &str) -> Result<chrono::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        SluiceError::Usage(format!(
            "--retain {text}: expected hours or days like 168h, 7d or 0h"
        ))
    };
    let n: i64 = number.parse().map_err(|_| bad())?;
    match unit {
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "" if n == 0 => Ok(chrono::Duration::zero()),
        _ => Err(bad()),
    }
}

/// Vacuum the selected models' Delta outputs. A retention under a week needs `confirm`:
/// the versions it gives up can no longer be read.
pub async fn vacuum(
    session: &Session,
    plan: &ProjectPlan,
    select: &[String],
    retain: chrono::Duration,
    confirm: bool,
    dry_run: bool,
) -> Result<Vec<Vacuumed>> {
    if retain < chrono::Duration::hours(DEFAULT_RETAIN_HOURS) && !confirm && !dry_run {
        return Err(SluiceError::Usage(format!(
            "--retain {}h makes versions younger than a week unreadable (time travel to \
             them fails); add --confirm to go ahead, or --dry-run to see the files",
            retain.num_hours()
        )));
    }
    let selected = plan.select(select)?;
    let mut done = Vec::new();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        if !selected.contains(&i) || m.materialized == Materialized::View {
            continue;
        }
        let Output::Delta(location) = plan.location(i) else {
            continue;
        };
        let table = delta::open(&session.ctx, &location)?;
        if !table
            .is_table()
            .await
            .map_err(|e| delta::error(&location, e))?
        {
            continue;
        }
        // A run's files are in the folder before its commit lists them: vacuum while no
        // run writes.
        let (store, prefix) = table.store();
        let run = format!("vacuum-{}", std::process::id());
        let lock = WriterLock::acquire(&store, &prefix, &location, &run).await?;
        let result = sluice_delta::vacuum(&table, retain, dry_run).await;
        lock.release().await;
        let result = result.map_err(|e| m.error(format!("vacuum of {location}: {e}")))?;
        done.push(Vacuumed {
            model: m.name.clone(),
            location,
            files: result.files,
            dry_run,
        });
    }
    if done.is_empty() {
        return Err(SluiceError::Usage(
            "no selected model has a Delta output (`format = \"delta\"`) to vacuum".into(),
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_periods() {
        assert_eq!(
            parse_retention("168h").unwrap(),
            chrono::Duration::hours(168)
        );
        assert_eq!(parse_retention("7d").unwrap(), chrono::Duration::days(7));
        assert_eq!(parse_retention("0h").unwrap(), chrono::Duration::zero());
        assert_eq!(parse_retention("0").unwrap(), chrono::Duration::zero());
        assert_eq!(
            parse_retention("1w").unwrap_err().to_string(),
            "--retain 1w: expected hours or days like 168h, 7d or 0h"
        );
    }
}
