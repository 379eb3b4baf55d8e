//! The SQL shell: interactive (rustyline) and scripted (-c, -f, stdin). Statements and
//! meta-commands run against the shared session; results go through one printer.

// The crates below, under the names the modules use.
use sluice_core::{diagnostic, error};
use sluice_functions as functions;
use sluice_session as session;

mod complete;
mod meta;
pub mod printer;
mod progress;
mod repl;
pub mod script;
pub mod split;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;

use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;
pub use meta::MetaCommand;
use printer::{PrintFormat, PrintOptions, ResultPrinter};
pub use repl::run_interactive;
use split::{split, Piece, PieceKind};

/// Rows the interactive table format shows before "N more rows".
pub const INTERACTIVE_MAX_ROWS: usize = 40;

pub struct Shell {
    pub session: Session,
    pub print: PrintOptions,
    pub timing: bool,
    /// Interactive: Ctrl-C cancels a query, progress is shown, tables fit the terminal.
    pub interactive: bool,
    pub continue_on_error: bool,
    out: Box<dyn Write + Send>,
    out_path: Option<PathBuf>,
    pub quit: bool,
    /// `[vars]` with `--var`s over them: `${name}` in statements, as in models.
    pub vars: std::collections::BTreeMap<String, String>,
}

impl Shell {
    pub fn new(session: Session, format: PrintFormat, interactive: bool) -> Self {
        let vars = session.project.vars();
        Shell {
            session,
            print: PrintOptions {
                format,
                max_rows: interactive.then_some(INTERACTIVE_MAX_ROWS),
                max_width: None,
            },
            timing: false,
            interactive,
            continue_on_error: false,
            out: Box::new(std::io::stdout()),
            out_path: None,
            quit: false,
            vars,
        }
    }

    /// Send results to a file (`--output`, `\o file`) or back to stdout (`\o`).
    pub fn set_output(&mut self, path: Option<&Path>) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| SluiceError::sql(format!("cannot flush output: {e}")))?;
        match path {
            Some(p) => {
                let f = File::create(p).map_err(|e| SluiceError::io(p, e))?;
                self.out = Box::new(BufWriter::new(f));
                self.out_path = Some(p.to_path_buf());
            }
            None => {
                self.out = Box::new(std::io::stdout());
                self.out_path = None;
            }
        }
        Ok(())
    }

    fn table_width(&self) -> Option<usize> {
        if self.interactive && self.out_path.is_none() && std::io::stdout().is_terminal() {
            terminal_width()
        } else {
            None
        }
    }

    /// Run a script: each statement in turn; the first error stops it unless
    /// `continue_on_error`. Errors name `origin:line`. Returns the first error.
    pub async fn run_script(&mut self, text: &str, origin: &str) -> Result<()> {
        let mut first_error = None;
        for piece in split(text) {
            if self.quit {
                break;
            }
            let result = match piece.kind {
                PieceKind::Sql => self.run_sql(&piece.text).await,
                PieceKind::Meta => self.run_meta_text(&piece.text).await,
            };
            if let Err(e) = result {
                let e = locate(e, text, origin, &piece);
                if !self.continue_on_error {
                    return Err(e);
                }
                eprintln!("error: {e}");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub async fn run_meta_text(&mut self, text: &str) -> Result<()> {
        let cmd: MetaCommand = text.parse()?;
        cmd.execute(self).await
    }

    /// Plan and run one SQL statement, streaming its result to the output.
    pub async fn run_sql(&mut self, sql: &str) -> Result<()> {
        let substituted = if sql.contains("${") {
            sluice_core::config::substitute_vars(sql, &self.vars).map_err(SluiceError::sql)?
        } else {
            sql.to_string()
        };
        let sql = substituted.as_str();
        let start = Instant::now();
        let ctx = self.session.ctx.clone();
        let planned = async {
            let df = ctx.sql(sql).await?;
            let sources = self.sources_read(df.logical_plan());
            let plan = df.create_physical_plan().await?;
            Ok::<_, datafusion::error::DataFusionError>((plan, sources))
        };
        let (plan, sources) = match self.cancellable(planned).await? {
            Ok(p) => p,
            Err(e) => return Err(SluiceError::statement(&e)),
        };
        let progress = progress::Progress::start(plan.clone(), self.interactive);
        let result = self.stream_result(plan, &sources).await;
        progress.finish();
        result?;
        if self.timing {
            eprintln!("Time: {}", format_duration(start.elapsed()));
        }
        Ok(())
    }

    async fn stream_result(
        &mut self,
        plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        sources: &[String],
    ) -> Result<()> {
        let mut options = self.print.clone();
        options.max_width = self.table_width();
        let interactive = self.interactive;
        let described = self.describe_sources(sources);
        let annotate = |e: datafusion::error::DataFusionError| annotate(e, &described);
        let mut stream = execute_stream(plan, self.session.ctx.task_ctx()).map_err(annotate)?;
        let mut printer = ResultPrinter::new(options, stream.schema(), &mut *self.out)?;
        loop {
            let next = if interactive {
                tokio::select! {
                    b = stream.next() => b,
                    _ = tokio::signal::ctrl_c() => return Err(SluiceError::Cancelled),
                }
            } else {
                stream.next().await
            };
            match next {
                Some(Ok(batch)) => printer.push(&batch)?,
                Some(Err(e)) => return Err(annotate(e)),
                None => break,
            }
        }
        printer.finish()
    }

    async fn cancellable<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T> {
        if self.interactive {
            tokio::select! {
                v = fut => Ok(v),
                _ = tokio::signal::ctrl_c() => Err(SluiceError::Cancelled),
            }
        } else {
            Ok(fut.await)
        }
    }

    /// Names of project sources a plan scans, to name them in execution errors.
    fn sources_read(&self, plan: &LogicalPlan) -> Vec<String> {
        let mut names = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                if self.session.schema.source(&name).is_some() && !names.contains(&name) {
                    names.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        names
    }

    fn describe_sources(&self, sources: &[String]) -> Vec<String> {
        sources
            .iter()
            .filter_map(|s| self.session.schema.source(s))
            .map(|s| format!("source `{}` ({})", s.name, s.config.location))
            .collect()
    }

    pub fn write_out(&mut self) -> &mut dyn Write {
        &mut *self.out
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// Name the sources a failed query was reading, unless the message already does.
fn annotate(e: datafusion::error::DataFusionError, described: &[String]) -> SluiceError {
    let message = describe_datafusion_error(&e);
    if crate::error::source_error(&e).is_some() || described.is_empty() {
        SluiceError::sql(message)
    } else if described.len() == 1 {
        SluiceError::sql(format!("{}: {message}", described[0]))
    } else {
        SluiceError::sql(format!(
            "{message} (while reading {})",
            described.join(", ")
        ))
    }
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.3} ms ({:.3} s)", ms / 1000.0)
    }
}

fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size().map(|(w, _)| w.0 as usize)
}

/// Name where in the script a statement's error is: `file:line:col` with the line and a
/// caret when the parser or planner gave a position, else `file:line` of the statement.
fn locate(e: SluiceError, text: &str, origin: &str, piece: &Piece) -> SluiceError {
    let SluiceError::Sql {
        location: None,
        message,
        at: Some(at),
    } = e
    else {
        return e.at(format!("{origin}:{}", piece.line));
    };
    let in_file = crate::diagnostic::Position {
        line: piece.line + at.line - 1,
        column: if at.line == 1 {
            piece.column + at.column - 1
        } else {
            at.column
        },
    };
    let (first, rest) = message.split_once('\n').unwrap_or((&message, ""));
    let mut shown = first.to_string();
    if let Some(s) = crate::diagnostic::snippet(text, in_file) {
        shown.push('\n');
        shown.push_str(&s);
    }
    if !rest.is_empty() {
        shown.push('\n');
        shown.push_str(rest);
    }
    SluiceError::Sql {
        location: Some(format!("{origin}:{}:{}", in_file.line, in_file.column)),
        message: shown,
        at: None,
    }
}
