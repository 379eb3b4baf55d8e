//! What `run` shows while it works: on a terminal a live line per running model; otherwise
//! (CI, logs, pipes) one timestamped line per event.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::session::engine::progress::work_line;

pub struct Reporter {
    live: Option<MultiProgress>,
    bars: Mutex<HashMap<String, LiveLine>>,
}

struct LiveLine {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

/// Where a model's build puts the plan it is running, so that the model's live line can
/// show what the plan has done so far (rows scanned, or identity resolution's ids and
/// spilled bytes).
#[derive(Clone, Default)]
pub struct Watch(Arc<Mutex<Option<Arc<dyn ExecutionPlan>>>>);

impl Watch {
    pub fn running(&self, plan: Arc<dyn ExecutionPlan>) {
        *self.0.lock() = Some(plan);
    }

    fn work(&self) -> Option<String> {
        self.0.lock().as_ref().map(|plan| work_line(plan.as_ref()))
    }
}

fn timestamped(line: &str) -> String {
    format!("{} {line}", chrono::Local::now().format("%H:%M:%S"))
}

impl Reporter {
    /// Live lines only when standard error is a terminal that can redraw.
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal()
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Reporter {
            live: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// A model started; its build reports the plan it runs to the returned watch.
    pub fn started(&self, model: &str) -> Watch {
        let watch = Watch::default();
        let Some(multi) = &self.live else {
            self.line(&format!("{model:<28} started"));
            return watch;
        };
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(format!("{model:<28} running"));
        bar.enable_steady_tick(Duration::from_millis(120));
        let ticker = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (bar, watch, model) = (bar.clone(), watch.clone(), model.to_string());
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Some(work) = watch.work() {
                        bar.set_message(format!("{model:<28} {work}"));
                    }
                }
            })
        });
        self.bars
            .lock()
            .insert(model.to_string(), LiveLine { bar, ticker });
        watch
    }

    /// A model is done: its live line is replaced by the final one.
    pub fn finished(&self, model: &str, line: &str) {
        if let Some(LiveLine { bar, ticker }) = self.bars.lock().remove(model) {
            if let Some(ticker) = ticker {
                ticker.abort();
            }
            bar.finish_and_clear();
            if let Some(multi) = &self.live {
                multi.remove(&bar);
            }
        }
        self.line(line);
    }

    pub fn line(&self, line: &str) {
        let line = timestamped(line);
        match &self.live {
            // Printed above the live lines, so they stay at the bottom.
            Some(multi) => {
                if multi.println(&line).is_err() {
                    eprintln!("{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}
