//! The rustyline helper: completion of keywords, tables, columns, functions and quoted file
//! paths, and multi-line input until `;`. Kept apart from execution.

use std::borrow::Cow;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use super::split::is_complete;

pub struct ShellHelper {
    /// Tables, columns and functions currently known to the session.
    pub names: Vec<String>,
    files: FilenameCompleter,
}

impl ShellHelper {
    pub fn new() -> Self {
        ShellHelper {
            names: Vec::new(),
            files: FilenameCompleter::new(),
        }
    }
}

fn keywords() -> impl Iterator<Item = &'static str> {
    datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .copied()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.matches('\'').count() % 2 == 1 {
            // Inside a quoted string: complete a file path.
            let quote = before.rfind('\'').map(|i| i + 1).unwrap_or(0);
            let (start, pairs) = self.files.complete(&line[quote..], pos - quote, ctx)?;
            return Ok((start + quote, pairs));
        }
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = word.to_lowercase();
        let upper_typed = word.chars().any(|c| c.is_uppercase());
        let mut out: Vec<Pair> = Vec::new();
        for name in &self.names {
            if name.to_lowercase().starts_with(&lower)
                && !out.iter().any(|p| &p.replacement == name)
            {
                out.push(Pair {
                    display: name.clone(),
                    replacement: name.clone(),
                });
            }
        }
        for kw in keywords() {
            if kw.to_lowercase().starts_with(&lower) {
                let replacement = if upper_typed {
                    kw.to_string()
                } else {
                    kw.to_lowercase()
                };
                if !out
                    .iter()
                    .any(|p| p.replacement.eq_ignore_ascii_case(&replacement))
                {
                    out.push(Pair {
                        display: replacement.clone(),
                        replacement,
                    });
                }
            }
        }
        Ok((start, out))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if input.trim_start().starts_with('\\') || is_complete(input) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

impl Helper for ShellHelper {}
