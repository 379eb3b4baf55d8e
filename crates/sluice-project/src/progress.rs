//! What `run` shows while it works: on a terminal a live line per running model; otherwise
//! (CI, logs, pipes) one timestamped line per event.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

pub struct Reporter {
    live: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
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

    pub fn started(&self, model: &str) {
        let Some(multi) = &self.live else {
            self.line(&format!("{model:<28} started"));
            return;
        };
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(format!("{model:<28} running"));
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.lock().insert(model.to_string(), bar);
    }

    /// A model is done: its live line is replaced by the final one.
    pub fn finished(&self, model: &str, line: &str) {
        if let Some(bar) = self.bars.lock().remove(model) {
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
