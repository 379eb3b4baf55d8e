//! The scripted shell: `-c` statements, `-f` files, then standard input when neither is
//! given. Each runs in order; `--continue-on-error` keeps going and reports the first error.

use std::io::Read;
use std::path::PathBuf;

use super::Shell;
use crate::error::{Result, SluiceError};

/// What a scripted shell runs, in this order.
#[derive(Debug, Default, Clone)]
pub struct Script {
    pub commands: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Script {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.files.is_empty()
    }
}

/// Run every piece of `script` (standard input when it is empty).
pub async fn run_script(shell: &mut Shell, script: &Script) -> Result<()> {
    let mut first_error: Option<SluiceError> = None;
    for (i, sql) in script.commands.iter().enumerate() {
        let origin = if script.commands.len() == 1 {
            "-c".to_string()
        } else {
            format!("-c #{}", i + 1)
        };
        run_piece(shell, sql, &origin, &mut first_error).await?;
    }
    for file in &script.files {
        let text = std::fs::read_to_string(file).map_err(|e| SluiceError::io(file, e))?;
        run_piece(shell, &text, &file.display().to_string(), &mut first_error).await?;
    }
    if script.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| SluiceError::io("<stdin>", e))?;
        run_piece(shell, &text, "stdin", &mut first_error).await?;
    }
    shell.flush();
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Run one piece; an error stops the script unless the shell continues on error, in which
/// case the first one is kept for the exit code.
async fn run_piece(
    shell: &mut Shell,
    text: &str,
    origin: &str,
    first_error: &mut Option<SluiceError>,
) -> Result<()> {
    if let Err(e) = shell.run_script(text, origin).await {
        shell.flush();
        if !shell.continue_on_error {
            return Err(e);
        }
        first_error.get_or_insert(e);
    }
    Ok(())
}
