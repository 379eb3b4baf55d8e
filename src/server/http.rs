//! HTTP next to the Postgres port: `GET /health`, `GET /metrics` (Prometheus text) and
//! `POST /query` with `{"sql": "..."}`, answered as JSON, CSV or Arrow IPC by the Accept
//! header, behind basic auth against `[server.users]`. A deliberately small HTTP/1.1:
//! one request per connection, bounded sizes, nothing a proxy would not expect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::handlers::Handlers;
use super::metrics::Metrics;
use super::{guard, log};
use crate::error::describe_datafusion_error;

const MAX_HEADER: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct HttpState {
    pub ctx: Arc<SessionContext>,
    pub metrics: Arc<Metrics>,
    pub handlers: Arc<Handlers>,
    pub read_only: bool,
    pub gate: Arc<Semaphore>,
    pub timeout: Option<Duration>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
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
                body: state.metrics.render().into_bytes(),
                extra: None,
            },
            None => unauthorised(),
        },
        ("POST", "/query") => match authorised(&request, state) {
            Some(user) => query(&request, state, &user).await,
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

async fn query(request: &Request, state: &HttpState, user: &str) -> Reply {
    let sql = match serde_json::from_slice::<serde_json::Value>(&request.body) {
        Ok(v) => match v["sql"].as_str() {
            Some(s) => s.to_string(),
            None => return json_error(400, "the body must be JSON with a \"sql\" string"),
        },
        Err(e) => return json_error(400, &format!("the body is not JSON: {e}")),
    };
    if state.read_only {
        match Parser::parse_sql(&PostgreSqlDialect {}, &sql) {
            Ok(statements) => {
                if let Some(why) = statements.iter().find_map(guard::refusal) {
                    return json_error(403, &why);
                }
            }
            Err(e) => return json_error(400, &format!("SQL error: {e}")),
        }
    }
    // The plan decides what a statement does, whatever its spelling (SELECT ... INTO).
    let plan = match state.ctx.state().create_logical_plan(&sql).await {
        Ok(plan) => plan,
        Err(e) => {
            state.metrics.query_done(Duration::ZERO, true);
            log(&format!(
                "query user={user} protocol=http duration_ms=0 status=error"
            ));
            return json_error(400, &describe_datafusion_error(&e));
        }
    };
    if state.read_only {
        if let Some(why) = guard::plan_refusal(&plan) {
            return json_error(403, &why);
        }
    }
    let accept = request.header("accept").unwrap_or("application/json");
    let Ok(_permit) = state.gate.acquire().await else {
        return json_error(503, "the server is shutting down");
    };
    let started = Instant::now();
    let work = async {
        let df = state.ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    };
    let outcome = match state.timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(datafusion::error::DataFusionError::Execution(format!(
                "canceling statement due to statement timeout ({} s)",
                limit.as_secs_f64()
            )))
        }),
        None => work.await,
    };
    let elapsed = started.elapsed();
    state.metrics.query_done(elapsed, outcome.is_err());
    let reply = match outcome {
        Ok((schema, batches)) => encode(accept, schema, &batches),
        Err(e) => json_error(400, &describe_datafusion_error(&e)),
    };
    log(&format!(
        "query user={user} protocol=http duration_ms={} status={}",
        elapsed.as_millis(),
        if reply.status == 200 { "ok" } else { "error" }
    ));
    reply
}

fn encode(accept: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Reply {
    let result = if accept.contains("application/vnd.apache.arrow.stream") {
        arrow_ipc(schema, batches).map(|b| ("application/vnd.apache.arrow.stream", b))
    } else if accept.contains("text/csv") {
        csv(batches).map(|b| ("text/csv", b))
    } else {
        json(batches).map(|b| ("application/json", b))
    };
    match result {
        Ok((content_type, body)) => Reply {
            status: 200,
            content_type,
            body,
            extra: None,
        },
        Err(e) => json_error(500, &e.to_string()),
    }
}

fn json(batches: &[RecordBatch]) -> datafusion::arrow::error::Result<Vec<u8>> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

fn csv(batches: &[RecordBatch]) -> datafusion::arrow::error::Result<Vec<u8>> {
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    Ok(writer.into_inner())
}

fn arrow_ipc(
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> datafusion::arrow::error::Result<Vec<u8>> {
    let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    writer.into_inner()
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
    state.metrics.http_response(reply.body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}
