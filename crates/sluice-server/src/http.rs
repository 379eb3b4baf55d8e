//! HTTP next to the Postgres port: `GET /health`, `GET /metrics` (Prometheus text) and
//! `POST /query` with `{"sql": "..."}`, answered as JSON, CSV or Arrow IPC by the Accept
//! header, behind basic auth against `[server.users]`. A deliberately small HTTP/1.1:
//! one request per connection, bounded sizes, nothing a proxy would not expect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::admission::{Admission, Admitted};
use super::guard;
use super::metrics::Metrics;
use super::pgwire::Handlers;
use super::statement::Statements;
use crate::error::describe_datafusion_error;

const MAX_HEADER: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct HttpState {
    /// Each request runs in a session of its own, as a Postgres connection does.
    pub statements: Arc<Statements>,
    pub admission: Arc<Admission>,
    pub handlers: Arc<Handlers>,
    pub read_only: bool,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpState {
    fn metrics(&self) -> &Metrics {
        self.admission.metrics()
    }
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: Option<(&'static str, &'static str)>,
}

fn json_error(status: u16, message: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
        extra: None,
    }
}

pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = handle(stream, &state).await;
        });
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn handle(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await else {
        let reply = json_error(400, "malformed or too large HTTP request");
        return write_reply(&mut stream, state, reply).await;
    };
    let path = request
        .path
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let reply = match (request.method.as_str(), path.as_str()) {
        ("GET", "/health") => Reply {
            status: 200,
            content_type: "text/plain",
            body: b"ok\n".to_vec(),
            extra: None,
        },
        // With users configured, the metrics say who is busy with what: credentials first.
        ("GET", "/metrics") => match authorised(&request, state) {
            Some(_) => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: state.metrics().render().into_bytes(),
                extra: None,
            },
            None => unauthorised(),
        },
        ("POST", "/query") => match authorised(&request, state) {
            Some(user) => return query(&request, state, &user, &mut stream).await,
            None => unauthorised(),
        },
        _ => json_error(
            404,
            "not found: use GET /health, GET /metrics or POST /query",
        ),
    };
    write_reply(&mut stream, state, reply).await
}

fn unauthorised() -> Reply {
    Reply {
        status: 401,
        content_type: "application/json",
        body: br#"{"error":"authentication required"}"#.to_vec(),
        extra: Some(("WWW-Authenticate", "Basic realm=\"sluice\"")),
    }
}

/// The user a request authenticates as (basic auth), or None.
fn authorised(request: &Request, state: &HttpState) -> Option<String> {
    if !state.handlers.has_users() {
        return Some("-".into());
    }
    let encoded = request.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    state
        .handlers
        .check_password(user, password)
        .then(|| user.to_string())
}

/// Answer `POST /query`: refusals and errors before the first row as a JSON error; rows
/// streamed as they come (chunked), so a large result never sits in the server's memory.
async fn query(
    request: &Request,
    state: &HttpState,
    user: &str,
    stream: &mut TcpStream,
) -> std::io::Result<()> {
    match prepare(request, state, user).await {
        Err(reply) => write_reply(stream, state, reply).await,
        Ok(prepared) => stream_rows(prepared, state, user, stream).await,
    }
}

/// A query planned, admitted and started, with its first batch in hand.
struct Prepared {
    format: Format,
    rows: datafusion::execution::SendableRecordBatchStream,
    first: Option<RecordBatch>,
    turn: Admitted,
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    JsonLines,
    Csv,
    ArrowIpc,
}

impl Format {
    fn of(accept: &str) -> Format {
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

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv",
            Format::ArrowIpc => "application/vnd.apache.arrow.stream",
        }
    }
}

async fn prepare(request: &Request, state: &HttpState, user: &str) -> Result<Prepared, Reply> {
    let sql = match serde_json::from_slice::<serde_json::Value>(&request.body) {
        Ok(v) => match v["sql"].as_str() {
            Some(s) => s.to_string(),
            None => {
                return Err(json_error(
                    400,
                    "the body must be JSON with a \"sql\" string",
                ))
            }
        },
        Err(e) => return Err(json_error(400, &format!("the body is not JSON: {e}"))),
    };
    if state.read_only {
        match Parser::parse_sql(&PostgreSqlDialect {}, &sql) {
            Ok(statements) => {
                if let Some(why) = statements.iter().find_map(guard::refusal) {
                    return Err(json_error(403, &why));
                }
            }
            Err(e) => return Err(json_error(400, &format!("SQL error: {e}"))),
        }
    }
    // The plan decides what a statement does, whatever its spelling (SELECT ... INTO).
    let session = state.statements.connection_session();
    let snapshot = session.state();
    let plan = match snapshot.create_logical_plan(&sql).await {
        Ok(plan) => plan,
        Err(e) => {
            let message = describe_datafusion_error(&e);
            state
                .admission
                .record(user, "http", "duration_ms", Instant::now(), Some(&message));
            return Err(json_error(400, &message));
        }
    };
    if state.read_only {
        if let Some(why) = guard::plan_refusal(&plan) {
            return Err(json_error(403, &why));
        }
    }
    if let Some(why) = state.statements.personal.refusal(&plan, user) {
        return Err(json_error(403, &why));
    }
    let format = Format::of(request.header("accept").unwrap_or("application/json"));
    let turn = match state.admission.admit().await {
        Ok(turn) => turn,
        Err(why) => return Err(json_error(503, &why.to_string())),
    };
    // Up to the first batch: an error here is still an HTTP error with a status.
    let start = async {
        let mut rows = state.statements.execute(&session, snapshot, plan).await?;
        let first = rows.next().await.transpose()?;
        Ok::<_, datafusion::error::DataFusionError>((rows, first))
    };
    match turn.within(start).await {
        Ok((rows, first)) => Ok(Prepared {
            format,
            rows,
            first,
            turn,
        }),
        Err(e) => {
            let message = describe_datafusion_error(&e);
            state
                .admission
                .record(user, "http", "duration_ms", turn.queued, Some(&message));
            Err(json_error(400, &message))
        }
    }
}

/// Encodes batches one at a time in the requested format.
struct Encoder {
    format: Format,
    /// Whether the opening bytes (`[`, the CSV header) went out.
    opened: bool,
    ipc: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> datafusion::arrow::error::Result<Encoder> {
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
    fn batch(&mut self, b: &RecordBatch) -> datafusion::arrow::error::Result<Vec<u8>> {
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
    fn finish(&mut self, schema: &SchemaRef) -> datafusion::arrow::error::Result<Vec<u8>> {
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

/// Write one chunk of a chunked response.
async fn chunk(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    stream
        .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
        .await?;
    stream.write_all(bytes).await?;
    stream.write_all(b"\r\n").await
}

/// Send the rows as they are produced. An error after the first chunk cannot change the
/// status any more: the response then ends without its last chunk, which every HTTP client
/// reports as an incomplete response.
async fn stream_rows(
    prepared: Prepared,
    state: &HttpState,
    user: &str,
    stream: &mut TcpStream,
) -> std::io::Result<()> {
    let Prepared {
        format,
        mut rows,
        first,
        turn,
    } = prepared;
    let deadline = turn.deadline.map(|(at, _)| at);
    let schema = rows.schema();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        format.content_type()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut sent = 0usize;
    let outcome: Result<(), String> = async {
        let mut encoder = Encoder::new(format, &schema).map_err(|e| e.to_string())?;
        let mut next = first;
        loop {
            let Some(batch) = next.take() else { break };
            let bytes = encoder.batch(&batch).map_err(|e| e.to_string())?;
            sent += bytes.len();
            chunk(stream, &bytes).await.map_err(|e| e.to_string())?;
            let pulled = match deadline {
                Some(at) => match tokio::time::timeout_at(at, rows.next()).await {
                    Ok(b) => b,
                    Err(_) => return Err("statement timeout".to_string()),
                },
                None => rows.next().await,
            };
            next = pulled
                .transpose()
                .map_err(|e| describe_datafusion_error(&e))?;
        }
        let bytes = encoder.finish(&schema).map_err(|e| e.to_string())?;
        sent += bytes.len();
        chunk(stream, &bytes).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    state.metrics().http_response(sent);
    state.admission.record(
        user,
        "http",
        "duration_ms",
        turn.queued,
        outcome.as_ref().err().map(String::as_str),
    );
    stream.shutdown().await
}

async fn write_reply(
    stream: &mut TcpStream,
    state: &HttpState,
    reply: Reply,
) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if let Some((k, v)) = reply.extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    state.metrics().http_response(reply.body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}
