//! Rows as JSON, JSON lines, CSV or an Arrow IPC stream, chosen by the Accept header and
//! encoded one batch at a time.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

#[derive(Clone, Copy)]
pub(super) enum Format {
    Json,
    JsonLines,
    Csv,
    ArrowIpc,
}

impl Format {
    pub(super) fn of(accept: &str) -> Format {
        if accept.contains("application/vnd.apache.arrow.stream") {
            Format::ArrowIpc
        } else if accept.contains("text/csv") {
            Format::Csv
        } else if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
            Format::JsonLines
        } else {
            Format::Json
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv",
            Format::ArrowIpc => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Encodes batches one at a time in the requested format.
pub(super) struct Encoder {
    format: Format,
    /// Whether the opening bytes (`[`, the CSV header) went out.
    opened: bool,
    ipc: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Encoder {
    pub(super) fn new(
        format: Format,
        schema: &SchemaRef,
    ) -> datafusion::arrow::error::Result<Encoder> {
        let ipc = match format {
            Format::ArrowIpc => Some(datafusion::arrow::ipc::writer::StreamWriter::try_new(
                Vec::new(),
                schema,
            )?),
            _ => None,
        };
        Ok(Encoder {
            format,
            opened: false,
            ipc,
        })
    }

    /// The bytes of one batch (the format's opening with the first rows).
    pub(super) fn batch(&mut self, b: &RecordBatch) -> datafusion::arrow::error::Result<Vec<u8>> {
        if b.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let first = !self.opened;
        self.opened = true;
        match self.format {
            Format::Json => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
                writer.write(b)?;
                writer.finish()?;
                let array = writer.into_inner();
                // `[r1,r2]` goes out as `[r1,r2` first and `,r1,r2` after; `]` at the end.
                let inner = array
                    .strip_prefix(b"[")
                    .and_then(|a| a.strip_suffix(b"]"))
                    .unwrap_or(&array);
                let mut out = Vec::with_capacity(inner.len() + 1);
                out.push(if first { b'[' } else { b',' });
                out.extend_from_slice(inner);
                Ok(out)
            }
            Format::JsonLines => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(b)?;
                writer.finish()?;
                Ok(writer.into_inner())
            }
            Format::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(first)
                    .build(Vec::new());
                writer.write(b)?;
                Ok(writer.into_inner())
            }
            Format::ArrowIpc => match self.ipc.as_mut() {
                Some(writer) => {
                    writer.write(b)?;
                    Ok(std::mem::take(writer.get_mut()))
                }
                None => Ok(Vec::new()),
            },
        }
    }

    /// The closing bytes.
    pub(super) fn finish(
        &mut self,
        schema: &SchemaRef,
    ) -> datafusion::arrow::error::Result<Vec<u8>> {
        match self.format {
            Format::Json if !self.opened => Ok(b"[]".to_vec()),
            Format::Json => Ok(b"]".to_vec()),
            Format::Csv if !self.opened => {
                // No rows: the header alone.
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Ok(format!("{}\n", names.join(",")).into_bytes())
            }
            Format::ArrowIpc => match self.ipc.as_mut() {
                Some(writer) => {
                    writer.finish()?;
                    Ok(std::mem::take(writer.get_mut()))
                }
                None => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }
}
