//! What `sluice serve` was asked for, merged with `[server]` in sluice.toml and the
//! defaults, and the TLS setup those options name.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::config::units::{parse_duration, parse_memory_size};
use crate::config::ServerSection;
use crate::error::{Result, SluiceError};

/// Options given on the command line; each None falls back to `[server]`, then a default.
#[derive(Debug, Clone, Default)]
pub struct ServeRequest {
    pub listen: Option<String>,
    pub http: Option<String>,
    pub flight: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub allow_write: bool,
    pub max_connections: Option<usize>,
    pub max_concurrent_queries: Option<usize>,
    pub statement_timeout: Option<String>,
    pub query_memory_limit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub http: Option<String>,
    pub flight: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub allow_write: bool,
    pub max_connections: usize,
    pub max_concurrent_queries: usize,
    pub statement_timeout: Option<Duration>,
    /// Bytes one statement may hold; None = the memory limit over the concurrent queries.
    pub query_memory_limit: Option<usize>,
    /// `model.column`s published models carry unhashed (`allow_personal`): personal, like
    /// the sources' `personal` columns.
    pub personal_outputs: Vec<String>,
}

impl ServeOptions {
    /// The command line over `[server]` over the defaults: 127.0.0.1:5433, 64
    /// connections, one running statement per core, no timeout, an equal share of memory
    /// per running statement.
    pub fn resolve(requested: ServeRequest, server: &ServerSection) -> Result<ServeOptions> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let timeout = match requested
            .statement_timeout
            .as_ref()
            .or(server.statement_timeout.as_ref())
        {
            Some(t) => Some(parse_duration(t)?),
            None => None,
        };
        Ok(ServeOptions {
            listen: requested
                .listen
                .or_else(|| server.listen.clone())
                .unwrap_or_else(|| "127.0.0.1:5433".into()),
            http: requested.http.or_else(|| server.http.clone()),
            flight: requested.flight.or_else(|| server.flight.clone()),
            tls_cert: requested.tls_cert,
            tls_key: requested.tls_key,
            allow_write: requested.allow_write,
            max_connections: requested
                .max_connections
                .or(server.max_connections)
                .unwrap_or(64),
            max_concurrent_queries: requested
                .max_concurrent_queries
                .or(server.max_concurrent_queries)
                .unwrap_or(cores),
            statement_timeout: timeout,
            query_memory_limit: match requested
                .query_memory_limit
                .as_ref()
                .or(server.query_memory_limit.as_ref())
            {
                Some(size) => Some(parse_memory_size(size)?),
                None => None,
            },
            personal_outputs: Vec::new(),
        })
    }
}

pub(super) fn usage(message: String) -> SluiceError {
    SluiceError::Usage(message)
}

/// A TLS setup from PEM files; any problem stops the server (never plaintext instead).
pub(super) fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| usage(format!("TLS: cannot read {path}: {e}")))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| usage(format!("TLS: {cert} is not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(usage(format!("TLS: no certificate in {cert}")));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| usage(format!("TLS: {key} is not a PEM private key: {e}")))?
        .ok_or_else(|| usage(format!("TLS: no private key in {key}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            usage(format!(
                "TLS: {cert} and {key} do not make a TLS setup: {e}"
            ))
        })?;
    Ok(Arc::new(config))
}
