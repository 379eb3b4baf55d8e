//! Progress for long queries: after a second, a spinner on the terminal's stderr shows the
//! rows and bytes scanned so far and the elapsed time. Nothing is drawn on a pipe or in CI.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_session::engine::progress::work_line;
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
                let work = work_line(plan.as_ref());
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
