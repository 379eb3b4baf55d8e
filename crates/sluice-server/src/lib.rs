//! `sluice serve`: the project's sources and models over the Postgres wire protocol (psql,
//! psycopg, JDBC, BI tools, pgbench), and `/health`, `/metrics` and `POST /query` over HTTP.
//! The session comes from the same builder as the shell and `run`.

// The crates below, under the names the modules use.
use sluice_core::{config, error};
use sluice_session as session;

mod admission;
mod auth;
mod connection;
mod flight;
mod guard;
mod http;
mod metrics;
mod options;
mod own_catalog;
mod personal;
mod pgwire;
mod plan_cache;
mod statement;
mod statement_kind;
mod too_many;

use options::{tls_config, usage};
pub use options::{ServeOptions, ServeRequest};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{read_secret, Project};
use crate::error::Result;
use crate::session::{build_session, SessionOptions};
use admission::Admission;
use auth::Users;
use metrics::Metrics;
use pgwire::Handlers;
use statement::Statements;

/// One timestamped line on standard error per connection, query and server event.
pub(crate) fn log(line: &str) {
    eprintln!(
        "{} {line}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The address a listener beside the Postgres port was asked for (`--http`, `--flight`),
/// refused off loopback when no users are configured.
fn side_listener(
    flag: &str,
    what: &str,
    addr: Option<&str>,
    users: &Users,
) -> Result<Option<SocketAddr>> {
    let Some(addr) = addr else { return Ok(None) };
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| usage(format!("{flag} {addr}: {e}")))?;
    if users.is_empty() && !is_loopback(&parsed) {
        return Err(usage(format!(
            "no [server.users] configured: refusing to {what} on {parsed} without passwords; use {flag} 127.0.0.1:PORT or add users"
        )));
    }
    Ok(Some(parsed))
}

/// Serve until interrupted (Ctrl-C or SIGTERM).
pub async fn serve(
    project: Arc<Project>,
    mut session_options: SessionOptions,
    options: ServeOptions,
) -> Result<()> {
    let listen: SocketAddr = options
        .listen
        .parse()
        .map_err(|e| usage(format!("--listen {}: {e}", options.listen)))?;
    let mut passwords = Vec::new();
    for (name, user) in &project.config.server.users {
        let secret = read_secret(
            &format!("server.users.{name}.password"),
            &user.password,
            &project.root,
        )?;
        let password = String::from_utf8(secret)
            .map_err(|_| usage(format!("server.users.{name}.password is not UTF-8 text")))?;
        passwords.push((name.clone(), password));
    }
    let users = Users::new(passwords);
    if users.is_empty() && !is_loopback(&listen) {
        return Err(usage(format!(
            "no [server.users] configured: refusing to listen on {listen} without passwords; listen on 127.0.0.1 or add users"
        )));
    }
    // The same rule on every listener: no passwords, loopback only.
    let http_addr = side_listener("--http", "serve HTTP", options.http.as_deref(), &users)?;
    let flight_addr = side_listener(
        "--flight",
        "serve Flight SQL",
        options.flight.as_deref(),
        &users,
    )?;
    let tls_config = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        (None, None) => None,
        _ => return Err(usage("TLS needs both --tls-cert and --tls-key".into())),
    };
    let tls = tls_config
        .as_ref()
        .map(|config| tokio_rustls::TlsAcceptor::from(config.clone()));

    // Reading files by path is a write-mode feature: the read-only server serves the
    // project's tables only.
    session_options.query_files_by_path = options.allow_write;
    // Statements run under per-statement memory pools and stream to clients as rows come:
    // DataFusion's batch size, whatever the server's memory.
    session_options.batch_rows = Some(crate::session::DEFAULT_BATCH_ROWS);
    let session = build_session(project.clone(), &session_options)?;
    setup_pg_catalog(&session.ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| usage(format!("cannot set up pg_catalog: {e}")))?;
    let ctx = Arc::new(session.ctx.clone());
    let concurrent = options.max_concurrent_queries.max(1);
    // By default each of the statements that may run at once gets an equal share.
    let query_memory_limit = options
        .query_memory_limit
        .unwrap_or(session.memory_limit / concurrent);
    let personal = crate::personal::PersonalAccess::new(
        project
            .config
            .personal_columns()
            .chain(options.personal_outputs.iter().cloned()),
        project
            .config
            .server
            .users
            .iter()
            .filter(|(_, u)| u.personal)
            .map(|(name, _)| name.clone()),
        !project.config.server.users.is_empty(),
    );
    let statements = Arc::new(
        Statements::new(ctx.clone(), options.allow_write, query_memory_limit)
            .with_personal(personal),
    );

    let metrics = Arc::new(Metrics::default());
    let admission = Arc::new(Admission::new(
        Arc::new(Semaphore::new(concurrent)),
        options.statement_timeout,
        metrics.clone(),
    ));
    let handlers = Arc::new(Handlers::new(
        ctx.clone(),
        statements.clone(),
        users,
        !options.allow_write,
        admission.clone(),
    ));

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(listen);
    log(&format!(
        "sluice {} serving project {} on postgres://{bound} ({}, {}, {}, {} per statement)",
        env!("CARGO_PKG_VERSION"),
        project.name(),
        if tls.is_some() { "TLS" } else { "no TLS" },
        if handlers.has_users() {
            "SCRAM-SHA-256 passwords"
        } else {
            "no [server.users]: loopback only, no password"
        },
        if options.allow_write {
            "read-write, objects per connection"
        } else {
            "read-only"
        },
        datafusion::execution::memory_pool::human_readable_size(statements.memory_limit())
    ));

    if let Some(addr) = http_addr {
        let http_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| usage(format!("cannot listen on {addr}: {e}")))?;
        log(&format!(
            "HTTP on http://{} (/health, /metrics, POST /query)",
            http_listener.local_addr().unwrap_or(addr)
        ));
        let state = Arc::new(http::HttpState {
            statements: statements.clone(),
            admission: admission.clone(),
            handlers: handlers.clone(),
            read_only: !options.allow_write,
        });
        tokio::spawn(http::serve(http_listener, state));
    }

    if let Some(addr) = flight_addr {
        let flight_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| usage(format!("cannot listen on {addr}: {e}")))?;
        log(&format!(
            "Flight SQL on grpc{}://{} ({})",
            if tls_config.is_some() { "+tls" } else { "" },
            flight_listener.local_addr().unwrap_or(addr),
            if handlers.has_users() {
                "basic-auth handshake, bearer tokens"
            } else {
                "no [server.users]: loopback only, no password"
            },
        ));
        let service = flight::FlightSql::new(
            statements.clone(),
            admission.clone(),
            handlers.clone(),
            !options.allow_write,
        );
        tokio::spawn(flight::serve(flight_listener, service, tls_config.clone()));
    }

    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| usage(format!("cannot watch for SIGTERM: {e}")))?;
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log(&format!("accept failed: {e}"));
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.connection_refused();
            log(&format!(
                "connection from {peer} refused: {} connections open (--max-connections): {}",
                options.max_connections,
                too_many::MESSAGE
            ));
            tokio::spawn(too_many::refuse(socket, tls.clone()));
            continue;
        };
        let (handlers, tls, metrics) = (handlers.clone(), tls.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            metrics.connection_opened();
            log(&format!("connection from {peer} opened"));
            // A client that sends garbage or disconnects only ends its own connection.
            let outcome = ::pgwire::tokio::process_socket(socket, tls, handlers).await;
            metrics.connection_closed();
            log(&format!(
                "connection from {peer} closed after {} ms{}",
                started.elapsed().as_millis(),
                outcome.err().map(|e| format!(": {e}")).unwrap_or_default()
            ));
        });
    }
    log("shutting down");
    Ok(())
}
