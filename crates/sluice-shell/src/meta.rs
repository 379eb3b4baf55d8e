//! Backslash meta-commands. Parsed with `FromStr`, executed against the shell; listings are
//! RecordBatches printed by the same printer as queries.

use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::TableType;

use super::printer::{print_batches, PrintFormat};
use super::Shell;
use crate::error::{describe_datafusion_error, Result, SluiceError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    Describe(Option<String>),
    ListTables,
    ListFunctions(Option<String>),
    Timing(Option<bool>),
    Format(PrintFormat),
    Include(String),
    Output(Option<String>),
    Quit,
    Help,
}

pub const HELP: &str = "\
\\d [name]        list tables, or describe a table's columns
\\dt              list tables (sources, tables and views)
\\df [pattern]    list functions (sluice's own; with a pattern also DataFusion's)
\\timing [on|off] show how long each statement takes
\\format NAME     output format: table, csv, tsv, json, ndjson, markdown
\\i FILE          run the statements in FILE
\\o [FILE]        send results to FILE, or back to the screen
\\q               quit (or Ctrl-D)
\\?               this help
Statements end with `;`. Ctrl-C cancels a running query.";

impl FromStr for MetaCommand {
    type Err = SluiceError;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim().trim_end_matches(';').trim();
        let (cmd, arg) = match text.split_once(char::is_whitespace) {
            Some((c, a)) => (c, Some(a.trim().to_string()).filter(|a| !a.is_empty())),
            None => (text, None),
        };
        let needs = |what: &str| SluiceError::Usage(format!("{cmd} needs {what}"));
        Ok(match cmd {
            "\\d" => MetaCommand::Describe(arg),
            "\\dt" => MetaCommand::ListTables,
            "\\df" => MetaCommand::ListFunctions(arg),
            "\\timing" => MetaCommand::Timing(match arg.as_deref() {
                None => None,
                Some("on") => Some(true),
                Some("off") => Some(false),
                Some(o) => {
                    return Err(SluiceError::Usage(format!(
                        "\\timing takes on or off, not `{o}`"
                    )))
                }
            }),
            "\\format" | "\\pset" => {
                MetaCommand::Format(arg.ok_or_else(|| needs("a format"))?.parse()?)
            }
            "\\i" => MetaCommand::Include(arg.ok_or_else(|| needs("a file"))?),
            "\\o" => MetaCommand::Output(arg),
            "\\q" | "\\quit" => MetaCommand::Quit,
            "\\?" | "\\h" | "\\help" => MetaCommand::Help,
            other => {
                return Err(SluiceError::Usage(format!(
                    "unknown command `{other}`; \\? lists the commands"
                )))
            }
        })
    }
}

fn strings(names: &[&str], columns: Vec<Vec<String>>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as _)
        .collect();
    RecordBatch::try_new(schema, arrays).map_err(|e| SluiceError::sql(e.to_string()))
}

impl MetaCommand {
    pub async fn execute(self, shell: &mut Shell) -> Result<()> {
        match self {
            MetaCommand::Describe(None) | MetaCommand::ListTables => {
                let batch = list_tables(shell).await?;
                print(shell, batch)
            }
            MetaCommand::Describe(Some(name)) => {
                let batch = describe(shell, &name).await?;
                print(shell, batch)?;
                if let Some(line) = delta_version(shell, &name).await? {
                    writeln!(shell.write_out(), "{line}")
                        .map_err(|e| SluiceError::sql(e.to_string()))?;
                }
                Ok(())
            }
            MetaCommand::ListFunctions(pattern) => {
                let batch = list_functions(shell, pattern.as_deref())?;
                print(shell, batch)
            }
            MetaCommand::Timing(v) => {
                shell.timing = v.unwrap_or(!shell.timing);
                eprintln!("Timing is {}.", if shell.timing { "on" } else { "off" });
                Ok(())
            }
            MetaCommand::Format(f) => {
                shell.print.format = f;
                Ok(())
            }
            MetaCommand::Include(file) => {
                let text = std::fs::read_to_string(&file).map_err(|e| SluiceError::io(&file, e))?;
                Box::pin(shell.run_script(&text, &file)).await
            }
            MetaCommand::Output(file) => {
                shell.set_output(file.as_deref().map(std::path::Path::new))
            }
            MetaCommand::Quit => {
                shell.quit = true;
                Ok(())
            }
            MetaCommand::Help => {
                eprintln!("{HELP}");
                Ok(())
            }
        }
    }
}

fn print(shell: &mut Shell, batch: RecordBatch) -> Result<()> {
    let mut options = shell.print.clone();
    options.max_rows = None;
    options.max_width = shell.table_width();
    print_batches(&options, batch.schema(), &[batch], shell.write_out())
}

async fn list_tables(shell: &Shell) -> Result<RecordBatch> {
    let schema = &shell.session.schema;
    let mut names: Vec<String> = datafusion::catalog::SchemaProvider::table_names(schema.as_ref());
    names.sort();
    let (mut kinds, mut details) = (Vec::new(), Vec::new());
    for name in &names {
        if let Some(src) = schema.source(name) {
            kinds.push("source".to_string());
            details.push(format!("{} {}", src.format.name(), src.config.location));
        } else {
            let t = datafusion::catalog::SchemaProvider::table(schema.as_ref(), name)
                .await
                .ok()
                .flatten();
            kinds.push(match t.map(|t| t.table_type()) {
                Some(TableType::View) => "view".to_string(),
                Some(TableType::Temporary) => "temporary".to_string(),
                _ => "table".to_string(),
            });
            details.push(String::new());
        }
    }
    strings(&["name", "kind", "location"], vec![names, kinds, details])
}

/// For a Delta source or model: its version and last commit.
async fn delta_version(shell: &Shell, name: &str) -> Result<Option<String>> {
    let Some(location) = shell.session.schema.delta_location(name) else {
        return Ok(None);
    };
    let location = location.trim_end_matches('/');
    let state = shell.session.ctx.state();
    let table = sluice_delta::Location::new(&state, location)
        .map_err(|e| SluiceError::sql(format!("{location}: {e}")))?;
    let history = table
        .history()
        .await
        .map_err(|e| SluiceError::sql(format!("{location}: {e}")))?;
    let Some(last) = history.first() else {
        return Ok(None);
    };
    let when = last
        .timestamp
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let mut line = format!(
        "Delta table {location}: version {}, last commit {when} ({}",
        last.version, last.operation
    );
    if let Some(run) = &last.run_id {
        line.push_str(&format!(", run {run}"));
    }
    if let Some(rows) = last.rows {
        line.push_str(&format!(", {rows} rows"));
    }
    line.push(')');
    Ok(Some(line))
}

async fn describe(shell: &Shell, name: &str) -> Result<RecordBatch> {
    let ctx = &shell.session.ctx;
    if !ctx.table_exist(name).map_err(SluiceError::from)? {
        return Err(SluiceError::sql(format!(
            "table `{name}` does not exist; \\dt lists the tables"
        )));
    }
    let provider: Arc<dyn TableProvider> =
        ctx.table_provider(name)
            .await
            .map_err(|e| match crate::error::source_error(&e) {
                Some(_) => SluiceError::sql(describe_datafusion_error(&e)),
                None => SluiceError::from(e),
            })?;
    let schema = provider.schema();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| sluice_core::config::sql_type_name(f.data_type()))
        .collect();
    let nullable: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| if f.is_nullable() { "YES" } else { "NO" }.to_string())
        .collect();
    strings(
        &["column", "type", "nullable"],
        vec![columns, types, nullable],
    )
}

/// A `\df` pattern matches by substring, or as a glob when it has `*` or `?`.
fn matches(pattern: Option<&str>, name: &str) -> bool {
    let Some(p) = pattern else { return true };
    let p = p.to_ascii_lowercase();
    if p.contains(['*', '?']) {
        glob_match(p.as_bytes(), name.as_bytes())
    } else {
        name.contains(&p)
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// sluice's functions (the table `sluice functions` prints, without examples), and with a
/// pattern DataFusion's built-in ones too.
fn list_functions(shell: &Shell, pattern: Option<&str>) -> Result<RecordBatch> {
    let ours: Vec<_> = crate::session::function_docs()
        .into_iter()
        .filter(|d| matches(pattern, d.name))
        .collect();
    let table = crate::functions::docs_table(&ours)?
        .project(&[0, 1, 2, 3])
        .map_err(|e| SluiceError::sql(e.to_string()))?;
    if pattern.is_none() {
        return Ok(table);
    }
    let state = shell.session.ctx.state();
    let first_line = |d: Option<&datafusion::logical_expr::Documentation>| {
        d.map(|d| d.description.lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let mut builtin: Vec<(String, &str, String)> = Vec::new();
    for (name, f) in state.scalar_functions() {
        builtin.push((name.clone(), "scalar", first_line(f.documentation())));
    }
    for (name, f) in state.aggregate_functions() {
        builtin.push((name.clone(), "aggregate", first_line(f.documentation())));
    }
    for (name, f) in state.window_functions() {
        builtin.push((name.clone(), "window", first_line(f.documentation())));
    }
    builtin.sort();
    builtin.retain(|(name, _, _)| matches(pattern, name) && !ours.iter().any(|d| d.name == name));
    let mut columns = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for (name, kind, doc) in builtin {
        columns[0].push(name);
        columns[1].push(format!("{kind} (datafusion)"));
        columns[2].push(String::new());
        columns[3].push(doc);
    }
    let theirs = strings(&["name", "kind", "signature", "description"], columns)?;
    datafusion::arrow::compute::concat_batches(&table.schema(), [&table, &theirs])
        .map_err(|e| SluiceError::sql(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_meta() {
        assert_eq!(
            "\\d".parse::<MetaCommand>().unwrap(),
            MetaCommand::Describe(None)
        );
        assert_eq!(
            "\\d events".parse::<MetaCommand>().unwrap(),
            MetaCommand::Describe(Some("events".into()))
        );
        assert_eq!(
            "\\format csv".parse::<MetaCommand>().unwrap(),
            MetaCommand::Format(PrintFormat::Csv)
        );
        assert_eq!(
            "\\timing on".parse::<MetaCommand>().unwrap(),
            MetaCommand::Timing(Some(true))
        );
        assert_eq!(
            "\\o".parse::<MetaCommand>().unwrap(),
            MetaCommand::Output(None)
        );
        assert!("\\format xml".parse::<MetaCommand>().is_err());
        assert!("\\zz"
            .parse::<MetaCommand>()
            .unwrap_err()
            .to_string()
            .contains("unknown command `\\zz`"));
    }

    #[test]
    fn function_patterns() {
        assert!(matches(Some("sha"), "sha256_hex"));
        assert!(matches(Some("*_hex"), "sha256_hex"));
        assert!(!matches(Some("md5*"), "sha256_hex"));
    }
}
