//! Progress for long queries: after a second, a spinner on the terminal's stderr shows the
//! rows and bytes scanned so far and the elapsed time. Nothing is drawn on a pipe or in CI.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

pub struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl Progress {
    pub fn start(plan: Arc<dyn ExecutionPlan>, interactive: bool) -> Progress {
        let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::new(Mutex::new(None));
        if !interactive || !std::io::stderr().is_terminal() {
            return Progress { task: None, bar };
        }
        let shared = bar.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            if let Ok(mut b) = shared.lock() {
                *b = Some(pb.clone());
            }
            loop {
                let (rows, bytes) = scanned(plan.as_ref());
                let work = match identity_work(plan.as_ref()) {
                    Some(line) => line,
                    None => format!("{} rows, {} scanned", human_count(rows), human_bytes(bytes)),
                };
                pb.set_message(format!("{work}, {:.1} s", start.elapsed().as_secs_f64()));
                pb.tick();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        Progress {
            task: Some(task),
            bar,
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
        }
    }
}

/// Rows and bytes read so far by the plan's leaves (the scans).
fn scanned(plan: &dyn ExecutionPlan) -> (usize, usize) {
    let children = plan.children();
    if children.is_empty() {
        let metrics = plan.metrics();
        let rows = metrics.as_ref().and_then(|m| m.output_rows()).unwrap_or(0);
        let bytes = metrics
            .as_ref()
            .and_then(|m| m.sum_by_name("bytes_scanned"))
            .map(|v| v.as_usize())
            .unwrap_or(0);
        return (rows, bytes);
    }
    children.iter().fold((0, 0), |(r, b), c| {
        let (cr, cb) = scanned(c.as_ref());
        (r + cr, b + cb)
    })
}

/// What a `resolve_identities` in the plan has done so far: it reads its inputs itself, so
/// the scans above show nothing while it works.
fn identity_work(plan: &dyn ExecutionPlan) -> Option<String> {
    if plan.name() == "IdentityExec" {
        let metrics = plan.metrics()?;
        let count = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize()).unwrap_or(0);
        return Some(format!(
            "resolve_identities: {} edges, {} ids, {} groups, {} spilled",
            human_count(count("edges")),
            human_count(count("ids")),
            human_count(count("groups")),
            human_bytes(count("spilled_bytes"))
        ));
    }
    plan.children()
        .into_iter()
        .find_map(|c| identity_work(c.as_ref()))
}

pub fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}
