//! The rustyline helper: completion of keywords, tables, columns, functions and quoted file
//! paths, and multi-line input until `;`. Kept apart from execution.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::catalog::SchemaProvider;
use sluice_core::sources::ProjectSchema;

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
    /// The project's tables, opened when a line names one so that its columns complete
    /// before it has been queried.
    schema: Arc<ProjectSchema>,
    runtime: tokio::runtime::Handle,
    /// Columns of each table the input has named, read once.
    columns: Mutex<HashMap<String, Vec<String>>>,
}

impl ShellHelper {
    pub fn new(schema: Arc<ProjectSchema>, runtime: tokio::runtime::Handle) -> Self {
        ShellHelper {
            names: Vec::new(),
            files: FilenameCompleter::new(),
            schema,
            runtime,
            columns: Mutex::new(HashMap::new()),
        }
    }

    /// The columns of the project's tables that `line` names (opening a table reads its
    /// schema: a file's header, a Parquet footer, an S3 listing; a table that cannot be
    /// opened completes nothing).
    fn columns_named_in(&self, line: &str) -> Vec<String> {
        let mut columns = self.columns.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if word.is_empty() || !self.schema.table_exist(word) {
                continue;
            }
            let known = columns.entry(word.to_string()).or_insert_with(|| {
                let table =
                    tokio::task::block_in_place(|| self.runtime.block_on(self.schema.table(word)));
                match table {
                    Ok(Some(t)) => t
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect(),
                    _ => Vec::new(),
                }
            });
            out.extend(known.iter().cloned());
        }
        out
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
        for name in self.names.iter().chain(&self.columns_named_in(line)) {
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
