//! One error type for the whole binary. Each variant carries what the user needs to find
//! the problem (file, line, key, source, model) and maps to one of the documented exit codes.

use std::fmt;
use std::path::PathBuf;

use datafusion::error::DataFusionError;

pub type Result<T, E = SluiceError> = std::result::Result<T, E>;

/// Exit codes shared by every command (SPEC section 1).
pub mod exit {
    pub const OK: i32 = 0;
    pub const SQL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CHECK: i32 = 3;
}

#[derive(Debug)]
pub enum SluiceError {
    /// A configuration file (sluice.toml, a model's @config block) is malformed.
    Config {
        file: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// The command line was wrong.
    Usage(String),
    /// A SQL statement failed; `location` is "file:line" or a model name when known.
    Sql {
        location: Option<String>,
        message: String,
        /// Where in the statement, when the parser or planner said.
        at: Option<crate::diagnostic::Position>,
    },
    /// A model's SQL failed or could not be planned.
    Model {
        model: String,
        file: PathBuf,
        message: String,
        /// Where in the file, when known, and that line with a caret under the column.
        at: Option<(crate::diagnostic::Position, Option<String>)>,
    },
    /// One or more data quality checks failed.
    Check(String),
    /// Reading or writing a local file failed.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A source (or a file queried by path) could not be opened or read.
    Source {
        /// The source's name, or the path when a file was queried directly.
        name: String,
        /// Its location, when it differs from the name.
        location: Option<String>,
        message: String,
    },
    /// An object store (S3, the files of a Delta table) failed while reading or writing
    /// `location`; `fault` says why when the error's types tell (see `store_fault`).
    Store {
        location: String,
        fault: Option<crate::store_fault::StoreFault>,
        message: String,
    },
    /// The publish protocol refused or found something it did not write: a writer lock
    /// held by another run, a manifest or journal that is not sluice's.
    Publish { output: String, message: String },
    /// A PostgreSQL database of `[databases]` failed or refused (never shows the password).
    Database(sluice_postgres::PgError),
    /// The statement was cancelled by the user (Ctrl-C).
    Cancelled,
}

impl SluiceError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SluiceError::Config { .. } | SluiceError::Usage(_) => exit::USAGE,
            SluiceError::Check(_) => exit::CHECK,
            SluiceError::Sql { .. }
            | SluiceError::Model { .. }
            | SluiceError::Io { .. }
            | SluiceError::Source { .. }
            | SluiceError::Store { .. }
            | SluiceError::Publish { .. }
            | SluiceError::Database(_)
            | SluiceError::Cancelled => exit::SQL,
        }
    }

    pub fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SluiceError::Config {
            file: file.into(),
            line: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    pub fn sql(message: impl Into<String>) -> Self {
        SluiceError::Sql {
            location: None,
            message: message.into(),
            at: None,
        }
    }

    /// A DataFusion error about a statement, keeping the position it points at.
    pub fn statement(e: &DataFusionError) -> Self {
        SluiceError::Sql {
            location: None,
            message: crate::diagnostic::without_parser_position(&describe_datafusion_error(e)),
            at: crate::diagnostic::error_position(e),
        }
    }

    /// A store's failure at `location`, classified by the error's types.
    pub fn store(location: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        SluiceError::Store {
            location: location.to_string(),
            fault: crate::store_fault::fault_of(error),
            message: error.to_string(),
        }
    }

    pub fn publish(output: impl Into<String>, message: impl Into<String>) -> Self {
        SluiceError::Publish {
            output: output.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        SluiceError::Io {
            path: path.into(),
            error,
        }
    }

    /// Attach "file:line" (or any other location) to a SQL error that has none yet.
    pub fn at(self, where_: impl Into<String>) -> Self {
        match self {
            SluiceError::Sql {
                location: None,
                message,
                at,
            } => SluiceError::Sql {
                location: Some(where_.into()),
                message,
                at,
            },
            other => other,
        }
    }
}

impl fmt::Display for SluiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SluiceError::Config {
                file,
                line,
                key,
                message,
            } => {
                write!(f, "{}", file.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                if let Some(key) = key {
                    write!(f, ": key `{key}`")?;
                }
                write!(f, ": {message}")
            }
            SluiceError::Usage(m) => write!(f, "{m}"),
            SluiceError::Sql {
                location, message, ..
            } => match location {
                Some(loc) => write!(f, "{loc}: {message}"),
                None => write!(f, "{message}"),
            },
            SluiceError::Model {
                model: _,
                file,
                message,
                at: Some((at, snippet)),
            } => {
                // The caret under the first line of the message; notes (valid fields) after.
                let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
                write!(f, "{}:{}:{}: {first}", file.display(), at.line, at.column)?;
                if let Some(s) = snippet {
                    write!(f, "\n{s}")?;
                }
                if !rest.is_empty() {
                    write!(f, "\n{rest}")?;
                }
                Ok(())
            }
            SluiceError::Model {
                model,
                file,
                message,
                at: None,
            } => write!(f, "model `{model}` ({}): {message}", file.display()),
            SluiceError::Check(m) => write!(f, "{m}"),
            SluiceError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            SluiceError::Source {
                name,
                location: Some(location),
                message,
            } => write!(f, "source `{name}` ({location}): {message}"),
            SluiceError::Source {
                name,
                location: None,
                message,
            } => write!(f, "'{name}': {message}"),
            SluiceError::Store {
                location,
                fault,
                message,
            } => match (fault, crate::store_fault::bucket_of(location)) {
                (Some(fault), Some(bucket)) => write!(f, "{}", fault.describe(bucket, location)),
                _ => write!(f, "{location}: {message}"),
            },
            SluiceError::Publish { output, message } => write!(f, "{output}: {message}"),
            SluiceError::Database(e) => write!(f, "{e}"),
            SluiceError::Cancelled => write!(f, "query cancelled"),
        }
    }
}

impl std::error::Error for SluiceError {}

impl From<DataFusionError> for SluiceError {
    fn from(e: DataFusionError) -> Self {
        SluiceError::sql(describe_datafusion_error(&e))
    }
}

/// The source a DataFusion error is about, when sluice raised it while opening one.
pub fn source_error(e: &DataFusionError) -> Option<&SluiceError> {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            source_error(inner)
        }
        DataFusionError::Shared(inner) => source_error(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<SluiceError>() {
            Some(s @ SluiceError::Source { .. }) => Some(s),
            Some(_) => None,
            None => inner
                .downcast_ref::<DataFusionError>()
                .and_then(source_error),
        },
        DataFusionError::Collection(errs) => errs.first().and_then(source_error),
        _ => None,
    }
}

/// DataFusion wraps errors in context layers and prefixes; show the user the useful part.
pub fn describe_datafusion_error(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Context(ctx, inner) => {
            format!("{ctx}: {}", describe_datafusion_error(inner))
        }
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<SluiceError>() {
                s.to_string()
            } else if let Some(d) = inner.downcast_ref::<DataFusionError>() {
                describe_datafusion_error(d)
            } else {
                inner.to_string()
            }
        }
        DataFusionError::Shared(inner) => describe_datafusion_error(inner),
        DataFusionError::Diagnostic(_, inner) => describe_datafusion_error(inner),
        DataFusionError::Collection(errs) if !errs.is_empty() => {
            describe_datafusion_error(&errs[0])
        }
        other => {
            let s = other.to_string();
            // Drop DataFusion's trailing backtrace hint, keep the message.
            s.split("\n\nBacktrace")
                .next()
                .unwrap_or(&s)
                .trim_end()
                .to_string()
        }
    }
}
