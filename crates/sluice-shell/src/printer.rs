//! The one printing path: query results and meta-command listings go through the same
//! printer, so `\dt` obeys `\format` like any query.

use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::json::{ArrayWriter, LineDelimitedWriter};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Result, SluiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
    Markdown,
}

impl FromStr for PrintFormat {
    type Err = SluiceError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "table" => PrintFormat::Table,
            "csv" => PrintFormat::Csv,
            "tsv" => PrintFormat::Tsv,
            "json" => PrintFormat::Json,
            "ndjson" | "jsonl" => PrintFormat::Ndjson,
            "markdown" | "md" => PrintFormat::Markdown,
            other => {
                return Err(SluiceError::Usage(format!(
                    "unknown format `{other}`: expected table, csv, tsv, json, ndjson or markdown"
                )))
            }
        })
    }
}

/// How results are shown: the format, and for tables a row limit and a width to fit.
#[derive(Debug, Clone)]
pub struct PrintOptions {
    pub format: PrintFormat,
    /// Rows shown by the table/markdown formats before "N more rows"; None = all.
    pub max_rows: Option<usize>,
    /// Terminal width that table output must fit; None = no limit.
    pub max_width: Option<usize>,
}

fn io_err(e: std::io::Error) -> SluiceError {
    SluiceError::sql(format!("cannot write output: {e}"))
}

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> SluiceError {
    SluiceError::sql(format!("cannot format output: {e}"))
}

/// Receives a result batch by batch: streaming formats write at once, tables buffer the
/// rows they will show and count the rest.
pub struct ResultPrinter<'a> {
    options: PrintOptions,
    out: &'a mut dyn Write,
    schema: SchemaRef,
    kept: Vec<RecordBatch>,
    kept_rows: usize,
    total_rows: usize,
    json_started: bool,
}

impl<'a> ResultPrinter<'a> {
    pub fn new(options: PrintOptions, schema: SchemaRef, out: &'a mut dyn Write) -> Result<Self> {
        let p = ResultPrinter {
            options,
            out,
            schema,
            kept: Vec::new(),
            kept_rows: 0,
            total_rows: 0,
            json_started: false,
        };
        if matches!(p.options.format, PrintFormat::Csv | PrintFormat::Tsv)
            && !p.schema.fields().is_empty()
        {
            let sep = if p.options.format == PrintFormat::Csv {
                b','
            } else {
                b'\t'
            };
            let empty = nested_as_text(&RecordBatch::new_empty(p.schema.clone()))?;
            let mut w = CsvWriterBuilder::new()
                .with_header(true)
                .with_delimiter(sep)
                .build(&mut *p.out);
            w.write(&empty).map_err(arrow_err)?;
        }
        Ok(p)
    }

    pub fn rows(&self) -> usize {
        self.total_rows
    }

    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        self.total_rows += batch.num_rows();
        match self.options.format {
            PrintFormat::Csv | PrintFormat::Tsv => {
                let sep = if self.options.format == PrintFormat::Csv {
                    b','
                } else {
                    b'\t'
                };
                let batch = nested_as_text(batch)?;
                let mut w = CsvWriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(sep)
                    .build(&mut *self.out);
                w.write(&batch).map_err(arrow_err)?;
            }
            PrintFormat::Ndjson => {
                let mut w = LineDelimitedWriter::new(&mut *self.out);
                w.write(batch).map_err(arrow_err)?;
                w.finish().map_err(arrow_err)?;
            }
            PrintFormat::Json => {
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                let mut buf = Vec::new();
                {
                    let mut w = ArrayWriter::new(&mut buf);
                    w.write(batch).map_err(arrow_err)?;
                    w.finish().map_err(arrow_err)?;
                }
                // Join per-batch arrays into one: drop each array's brackets.
                let body = &buf[1..buf.len().saturating_sub(1)];
                let body = body.strip_suffix(b"\n").unwrap_or(body);
                let body = body.strip_suffix(b"]").unwrap_or(body);
                self.out
                    .write_all(if self.json_started { b",\n" } else { b"[\n" })
                    .map_err(io_err)?;
                self.out.write_all(body).map_err(io_err)?;
                self.json_started = true;
            }
            PrintFormat::Table | PrintFormat::Markdown => {
                let room = self
                    .options
                    .max_rows
                    .map(|m| m.saturating_sub(self.kept_rows))
                    .unwrap_or(usize::MAX);
                if room > 0 && batch.num_rows() > 0 {
                    let take = room.min(batch.num_rows());
                    self.kept.push(batch.slice(0, take));
                    self.kept_rows += take;
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        let more = self.total_rows - self.kept_rows;
        match self.options.format {
            PrintFormat::Json => {
                let end: &[u8] = if self.json_started { b"\n]\n" } else { b"[]\n" };
                self.out.write_all(end).map_err(io_err)?;
            }
            PrintFormat::Table => {
                if self.schema.fields().is_empty() {
                    return Ok(());
                }
                let (text, shown) = render_table(&self.schema, &self.kept, self.options.max_width)?;
                self.out.write_all(text.as_bytes()).map_err(io_err)?;
                let rows = self.total_rows;
                let columns = self.schema.fields().len();
                let left_out = if shown < columns {
                    format!("  {columns} columns ({shown} shown)")
                } else {
                    String::new()
                };
                let note = match (rows, more) {
                    (1, _) => "1 row".to_string(),
                    (n, 0) => format!("{n} rows"),
                    (n, m) => format!(
                        "{n} rows ({} shown, {m} more {})",
                        n - m,
                        if m == 1 { "row" } else { "rows" }
                    ),
                };
                writeln!(self.out, "{note}{left_out}").map_err(io_err)?;
            }
            PrintFormat::Markdown => {
                if self.schema.fields().is_empty() {
                    return Ok(());
                }
                let text = render_markdown(&self.schema, &self.kept)?;
                self.out.write_all(text.as_bytes()).map_err(io_err)?;
                if more > 0 {
                    writeln!(self.out, "\n{more} more rows").map_err(io_err)?;
                }
            }
            PrintFormat::Csv | PrintFormat::Tsv | PrintFormat::Ndjson => {}
        }
        self.out.flush().map_err(io_err)
    }
}

/// CSV cannot hold lists, structs or maps: write them as their display text.
fn nested_as_text(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let f = ArrayFormatter::try_new(column.as_ref(), &options).map_err(arrow_err)?;
            let text: datafusion::arrow::array::StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| f.value(i).to_string()))
                .collect();
            fields.push(datafusion::arrow::datatypes::Field::new(
                field.name(),
                DataType::Utf8,
                true,
            ));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(arrow_err)
}

/// Cell texts of every kept row, column by column.
fn cells(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
    for batch in batches {
        for (c, column) in batch.columns().iter().enumerate() {
            let f = ArrayFormatter::try_new(column.as_ref(), &options).map_err(arrow_err)?;
            for r in 0..column.len() {
                columns[c].push(f.value(r).to_string());
            }
        }
    }
    Ok(columns)
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn truncate(s: &str, w: usize) -> String {
    if width(s) <= w {
        s.to_string()
    } else if w <= 1 {
        "…".chars().take(w).collect()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('…');
        t
    }
}

/// Columns are not shrunk below this many characters (or their own width): a wide result
/// leaves middle columns out instead, as DuckDB's shell does ...
const NARROWEST: usize = 6;
/// ... and shows those it keeps up to this wide.
const WIDEST_WHEN_LEAVING_OUT: usize = 24;

/// Which columns a table of these widths shows within `max`: all, shrunk (widest first) down
/// to `NARROWEST`; else the first and last columns that fit (each up to
/// `WIDEST_WHEN_LEAVING_OUT`), alternately, with `None` (a `…` column) for those between.
fn fit_columns(widths: &mut [usize], max: Option<usize>) -> Vec<Option<usize>> {
    let all: Vec<Option<usize>> = (0..widths.len()).map(Some).collect();
    let Some(max) = max else { return all };
    // Each column costs its width plus 3 (" | "), plus 1 for the final border.
    let cost = |cols: &[Option<usize>], widths: &[usize]| {
        cols.iter()
            .map(|c| c.map_or(1, |i| widths[i]) + 3)
            .sum::<usize>()
            + 1
    };
    let natural = widths.to_vec();
    let floors: Vec<usize> = widths.iter().map(|w| (*w).min(NARROWEST)).collect();
    while cost(&all, widths) > max {
        let widest = (0..widths.len())
            .filter(|&i| widths[i] > floors[i])
            .max_by_key(|&i| widths[i]);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    if cost(&all, widths) <= max {
        return all;
    }
    for (w, n) in widths.iter_mut().zip(&natural) {
        *w = (*n).min(WIDEST_WHEN_LEAVING_OUT);
    }
    let (mut front, mut back) = (Vec::new(), Vec::new());
    let fits = |front: &[Option<usize>], back: &[Option<usize>], extra: usize| {
        let mut cols: Vec<Option<usize>> = front.to_vec();
        cols.push(None);
        cols.extend_from_slice(back);
        cols.push(Some(extra));
        cost(&cols, widths) <= max
    };
    let n = widths.len();
    loop {
        let next_front = front.len();
        let next_back = n - 1 - back.len();
        if next_front >= next_back {
            break;
        }
        let mut grew = false;
        if fits(&front, &back, next_front) {
            front.push(Some(next_front));
            grew = true;
        }
        let next_back = n - 1 - back.len();
        if front.len() < next_back && fits(&front, &back, next_back) {
            back.push(Some(next_back));
            grew = true;
        }
        if !grew {
            break;
        }
    }
    back.reverse();
    front.push(None);
    front.extend(back);
    front
}

/// A boxed table with numbers right-aligned that fits `max_width` (see `fit_columns`), and
/// how many columns it shows.
pub fn render_table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: Option<usize>,
) -> Result<(String, usize)> {
    let columns = cells(schema, batches)?;
    let headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut widths: Vec<usize> = headers
        .iter()
        .zip(&columns)
        .map(|(h, col)| {
            col.iter()
                .map(|v| v.lines().map(width).max().unwrap_or(0))
                .chain([width(h)])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let shown = fit_columns(&mut widths, max_width);
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| is_numeric(f.data_type()))
        .collect();
    let mut s = String::new();
    let border = |s: &mut String| {
        s.push('+');
        for c in &shown {
            s.push_str(&"-".repeat(c.map_or(1, |i| widths[i]) + 2));
            s.push('+');
        }
        s.push('\n');
    };
    // A cell of several lines (an EXPLAIN plan) takes as many lines of the row.
    let row = |s: &mut String, value: &dyn Fn(usize) -> String| {
        let cells: Vec<Option<String>> = shown.iter().map(|c| c.map(value)).collect();
        let height = cells
            .iter()
            .flatten()
            .map(|c| c.lines().count().max(1))
            .max()
            .unwrap_or(1);
        for line in 0..height {
            s.push('|');
            for (c, cell) in shown.iter().zip(&cells) {
                let (Some(i), Some(cell)) = (*c, cell) else {
                    s.push_str(" … |");
                    continue;
                };
                let v = truncate(cell.lines().nth(line).unwrap_or(""), widths[i]);
                let pad = widths[i] - width(&v);
                if numeric[i] {
                    s.push_str(&format!(" {}{} |", " ".repeat(pad), v));
                } else {
                    s.push_str(&format!(" {}{} |", v, " ".repeat(pad)));
                }
            }
            s.push('\n');
        }
    };
    border(&mut s);
    row(&mut s, &|i| headers[i].clone());
    border(&mut s);
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    // Rows are across the per-column cells.
    (0..n).for_each(|r| row(&mut s, &|i| columns[i][r].clone()));
    if n > 0 {
        border(&mut s);
    }
    Ok((s, shown.iter().flatten().count()))
}

pub fn render_markdown(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let columns = cells(schema, batches)?;
    let esc = |v: &str| v.replace('|', "\\|").replace('\n', " ");
    let mut s = String::from("|");
    for f in schema.fields() {
        s.push_str(&format!(" {} |", esc(f.name())));
    }
    s.push_str("\n|");
    for f in schema.fields() {
        s.push_str(if is_numeric(f.data_type()) {
            "---:|"
        } else {
            "---|"
        });
    }
    s.push('\n');
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    for r in 0..n {
        s.push('|');
        for c in &columns {
            s.push_str(&format!(" {} |", esc(&c[r])));
        }
        s.push('\n');
    }
    Ok(s)
}

/// Print a complete result (used for meta-command listings).
pub fn print_batches(
    options: &PrintOptions,
    schema: SchemaRef,
    batches: &[RecordBatch],
    out: &mut dyn Write,
) -> Result<()> {
    let mut p = ResultPrinter::new(options.clone(), schema, out)?;
    for b in batches {
        p.push(b)?;
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 22, 333])),
                Arc::new(StringArray::from(vec![
                    Some("ann"),
                    None,
                    Some("a very long name"),
                ])),
            ],
        )
        .unwrap()
    }

    fn print(format: PrintFormat, max_rows: Option<usize>, max_width: Option<usize>) -> String {
        let b = batch();
        let mut out = Vec::new();
        let options = PrintOptions {
            format,
            max_rows,
            max_width,
        };
        print_batches(&options, b.schema(), &[b], &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_cell_of_several_lines_takes_as_many_lines_of_its_row() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan_type", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["physical_plan"])),
                Arc::new(StringArray::from(vec!["SortExec\n  DataSourceExec: x.csv"])),
            ],
        )
        .unwrap();
        let (text, _) = render_table(&schema, &[b], None).unwrap();
        assert_eq!(
            text,
            "+---------------+-------------------------+\n\
             | plan_type     | plan                    |\n\
             +---------------+-------------------------+\n\
             | physical_plan | SortExec                |\n\
             |               |   DataSourceExec: x.csv |\n\
             +---------------+-------------------------+\n"
        );
    }

    #[test]
    fn table_with_limit_and_width() {
        assert_eq!(
            print(PrintFormat::Table, Some(2), None),
            "+----+------+\n| id | name |\n+----+------+\n|  1 | ann  |\n| 22 | NULL |\n+----+------+\n3 rows (2 shown, 1 more row)\n"
        );
        let narrow = print(PrintFormat::Table, None, Some(20));
        assert!(narrow.lines().all(|l| l.chars().count() <= 20), "{narrow}");
        assert!(narrow.contains("| a very lo… |"), "{narrow}");
    }

    #[test]
    fn a_result_wider_than_the_terminal_leaves_middle_columns_out() {
        let fields: Vec<Field> = (1..=12)
            .map(|i| Field::new(format!("column_{i:02}"), DataType::Utf8, true))
            .collect();
        let values: Vec<ArrayRef> = (1..=12)
            .map(|i| Arc::new(StringArray::from(vec![format!("value {i}")])) as ArrayRef)
            .collect();
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), values).unwrap();
        let options = PrintOptions {
            format: PrintFormat::Table,
            max_rows: None,
            max_width: Some(60),
        };
        let mut out = Vec::new();
        print_batches(&options, b.schema(), &[b], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "+-----------+-----------+---+-----------+-----------+\n\
             | column_01 | column_02 | … | column_11 | column_12 |\n\
             +-----------+-----------+---+-----------+-----------+\n\
             | value 1   | value 2   | … | value 11  | value 12  |\n\
             +-----------+-----------+---+-----------+-----------+\n\
             1 row  12 columns (4 shown)\n"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
    }

    #[test]
    fn csv_json_markdown() {
        assert_eq!(
            print(PrintFormat::Csv, None, None),
            "id,name\n1,ann\n22,\n333,a very long name\n"
        );
        assert_eq!(
            print(PrintFormat::Tsv, None, None),
            "id\tname\n1\tann\n22\t\n333\ta very long name\n"
        );
        assert_eq!(
            print(PrintFormat::Json, None, None),
            "[\n{\"id\":1,\"name\":\"ann\"},{\"id\":22},{\"id\":333,\"name\":\"a very long name\"}\n]\n"
        );
        assert_eq!(
            print(PrintFormat::Ndjson, None, None),
            "{\"id\":1,\"name\":\"ann\"}\n{\"id\":22}\n{\"id\":333,\"name\":\"a very long name\"}\n"
        );
        assert_eq!(
            print(PrintFormat::Markdown, None, None),
            "| id | name |\n|---:|---|\n| 1 | ann |\n| 22 | NULL |\n| 333 | a very long name |\n"
        );
    }
}
