//! HTTP next to the Postgres port: `GET /health`, `GET /metrics` (Prometheus text) and
//! `POST /query` with `{"sql": "..."}`, answered as JSON, CSV or Arrow IPC by the Accept
//! header, behind basic auth against `[server.users]`. A deliberately small HTTP/1.1:
//! one request per connection, bounded sizes, nothing a proxy would not expect.

mod encode;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::admission::{Admission, Admitted};
use super::guard;
use super::metrics::Metrics;
use super::pgwire::Handlers;
use super::statement::Statements;
use crate::error::describe_datafusion_error;
use encode::{Encoder, Format};
use wire::{chunk, json_error, read_request, write_reply, Reply, Request};

pub struct HttpState {
    /// Each request runs in a session of its own, as a Postgres connection does.
    pub statements: Arc<Statements>,
    pub admission: Arc<Admission>,
    pub handlers: Arc<Handlers>,
    pub read_only: bool,
}

impl HttpState {
    fn metrics(&self) -> &Metrics {
        self.admission.metrics()
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

async fn handle(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await else {
        let reply = json_error(400, "malformed or too large HTTP request");
        return write_reply(&mut stream, state.metrics(), reply).await;
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
    write_reply(&mut stream, state.metrics(), reply).await
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
        Err(reply) => write_reply(stream, state.metrics(), reply).await,
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
