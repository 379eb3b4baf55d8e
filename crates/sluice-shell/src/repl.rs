//! The interactive loop: read a (multi-line) input, run it, keep going after errors and
//! cancelled queries; history lives in the user's data directory.

use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use super::complete::ShellHelper;
use super::Shell;
use crate::error::{Result, SluiceError};

/// `$SLUICE_HISTORY`, else `<data dir>/sluice/history` (never the working directory).
pub fn history_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_HISTORY") {
        return Some(PathBuf::from(p));
    }
    dirs::data_dir().map(|d| d.join("sluice").join("history"))
}

pub async fn run_interactive(shell: &mut Shell) -> Result<()> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .max_history_size(10_000)
        .map_err(|e| SluiceError::Usage(e.to_string()))?
        .build();
    let mut rl: Editor<ShellHelper, FileHistory> = Editor::with_config(config)
        .map_err(|e| SluiceError::Usage(format!("cannot start the shell: {e}")))?;
    rl.set_helper(Some(ShellHelper::new(
        shell.session.schema.clone(),
        tokio::runtime::Handle::current(),
    )));
    let history = history_path();
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.load_history(h);
    }
    eprintln!(
        "sluice {} on DataFusion · project {} · \\? for help, \\q to quit",
        env!("CARGO_PKG_VERSION"),
        shell.session.project.name()
    );
    refresh_names(shell, &mut rl).await;
    loop {
        match rl.readline("sluice> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(line.trim_end());
                if let Some(h) = &history {
                    let _ = rl.append_history(h);
                }
                match shell.run_script(&line, "input").await {
                    Ok(()) => {}
                    Err(SluiceError::Cancelled) => eprintln!("Query cancelled."),
                    Err(e) => eprintln!("Error: {}", strip_input_location(&e.to_string())),
                }
                shell.flush();
                if shell.quit {
                    break;
                }
                refresh_names(shell, &mut rl).await;
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(SluiceError::Usage(format!("terminal error: {e}"))),
        }
    }
    Ok(())
}

/// Interactive errors of a one-line input need no "input:1:" prefix.
fn strip_input_location(message: &str) -> String {
    match message.strip_prefix("input:1: ") {
        Some(rest) => rest.to_string(),
        None => message.to_string(),
    }
}

async fn refresh_names(shell: &Shell, rl: &mut Editor<ShellHelper, FileHistory>) {
    let mut names = shell.session.schema.known_names().await;
    let state = shell.session.ctx.state();
    names.extend(state.scalar_functions().keys().cloned());
    names.extend(state.aggregate_functions().keys().cloned());
    names.extend(state.window_functions().keys().cloned());
    names.extend(state.table_functions().keys().cloned());
    names.sort();
    names.dedup();
    if let Some(h) = rl.helper_mut() {
        h.names = names;
    }
}
