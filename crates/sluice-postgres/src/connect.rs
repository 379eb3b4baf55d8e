//! A database of `[databases]`: its connection settings parsed from a `postgres://` URL,
//! connections over TLS when the URL asks for it, and errors that name the database, the
//! user and the server but never the password.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// One PostgreSQL database as sluice.toml names it.
#[derive(Clone)]
pub struct Database {
    pub name: String,
    config: Config,
    /// `sslrootcert`: the CA the server's certificate is checked against, instead of the
    /// system's roots.
    root_cert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Database {
    // The derived form would print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({}, {})", self.name, self.endpoint())
    }
}

/// What went wrong talking to a database, said without the password.
#[derive(Debug)]
pub enum PgError {
    /// The URL of `[databases.NAME]` cannot be used.
    Url { database: String, message: String },
    /// The server could not be reached, or refused the user.
    Connect {
        database: String,
        endpoint: String,
        message: String,
    },
    /// A statement failed: `what` says which (a table, a model's publish).
    Statement {
        database: String,
        what: String,
        message: String,
        code: Option<String>,
    },
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Url { database, message } => {
                write!(f, "database `{database}`: bad URL: {message}")
            }
            PgError::Connect {
                database,
                endpoint,
                message,
            } => write!(f, "database `{database}` ({endpoint}): {message}"),
            PgError::Statement {
                database,
                what,
                message,
                ..
            } => write!(f, "database `{database}`, {what}: {message}"),
        }
    }
}

impl std::error::Error for PgError {}

impl PgError {
    /// A failed statement, with the server's message, detail and hint.
    pub(crate) fn statement(
        database: &Database,
        what: impl Into<String>,
        e: &tokio_postgres::Error,
    ) -> PgError {
        PgError::Statement {
            database: database.name.clone(),
            what: what.into(),
            message: server_message(e),
            code: e.code().map(|c| c.code().to_string()),
        }
    }

    /// A failure of sluice's own side of a statement (encoding rows, a type that does not fit).
    pub(crate) fn other(database: &Database, what: impl Into<String>, message: String) -> PgError {
        PgError::Statement {
            database: database.name.clone(),
            what: what.into(),
            message,
            code: None,
        }
    }

    /// What happened, without the database's name (for messages that already give it).
    pub fn message(&self) -> String {
        match self {
            PgError::Url { message, .. } => format!("bad URL: {message}"),
            PgError::Connect {
                endpoint, message, ..
            } => format!("{endpoint}: {message}"),
            PgError::Statement { message, .. } => message.clone(),
        }
    }

    /// The SQLSTATE the server answered with, when it did.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Statement { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// The server's own words: message, then detail and hint when there are any.
fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(cause) if !text.contains(&cause.to_string()) => format!("{text}: {cause}"),
                _ => text,
            }
        }
    }
}

impl Database {
    /// Parse a `postgres://user[:password]@host[:port]/db?sslmode=...` URL (or libpq's
    /// `key=value` form). The URL itself never appears in an error.
    pub fn parse(name: &str, url: &str) -> Result<Database, PgError> {
        let (url, root_cert) = libpq_tls_options(url.trim());
        let mut config = Config::from_str(&url).map_err(|e| PgError::Url {
            database: name.to_string(),
            message: e.to_string(),
        })?;
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("sluice");
        Ok(Database {
            name: name.to_string(),
            config,
            root_cert,
        })
    }

    /// `user@host:port/db`, for messages: everything but the password.
    pub fn endpoint(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        format!("postgres://{user}@{host}:{port}/{db}")
    }

    /// `postgres://host:port`, the dataset namespace OpenLineage gives PostgreSQL.
    pub fn namespace(&self) -> String {
        let endpoint = self.endpoint();
        let rest = endpoint.trim_start_matches("postgres://");
        let host_port = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
        let host_port = host_port.split('/').next().unwrap_or(host_port);
        format!("postgres://{host_port}")
    }

    /// The database name (the user's name when the URL gives none).
    pub fn dbname(&self) -> String {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres")
            .to_string()
    }

    /// A new connection; its driver runs on the current runtime until the client is dropped.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let connect_error = |e: tokio_postgres::Error| {
            let message = match e.code() {
                Some(c) if *c == SqlState::INVALID_PASSWORD => format!(
                    "password authentication failed for user `{}`",
                    self.config.get_user().unwrap_or("")
                ),
                Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
                    "database `{}` does not exist on the server",
                    self.config.get_dbname().unwrap_or("")
                ),
                _ => format!("cannot connect: {}", server_message(&e)),
            };
            PgError::Connect {
                database: self.name.clone(),
                endpoint: self.endpoint(),
                message,
            }
        };
        let client = match self.config.get_ssl_mode() {
            SslMode::Disable => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(connect_error)?;
                tokio::spawn(drive(connection, self.name.clone()));
                client
            }
            _ => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                    &self.name,
                    self.root_cert.as_deref(),
                )?);
                let (client, connection) = self.config.connect(tls).await.map_err(connect_error)?;
                tokio::spawn(drive(connection, self.name.clone()));
                client
            }
        };
        Ok(client)
    }
}

async fn drive<F>(connection: F, database: String)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        log::debug!("database `{database}`: connection ended: {e}");
    }
}

/// libpq's TLS options that tokio-postgres does not take: `sslmode=verify-ca|verify-full`
/// (sluice always verifies, so they mean `require`), `allow` (as `prefer`), and
/// `sslrootcert=FILE`, taken out and returned.
fn libpq_tls_options(url: &str) -> (String, Option<std::path::PathBuf>) {
    let mut root_cert = None;
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match (key, value) {
            ("sslmode", "verify-ca" | "verify-full") => Some("sslmode=require".into()),
            ("sslmode", "allow") => Some("sslmode=prefer".into()),
            ("sslrootcert", path) => {
                root_cert = Some(std::path::PathBuf::from(path));
                None
            }
            (key, value) => Some(format!("{key}={value}")),
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let query: Vec<String> = query
            .split('&')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(key, value)
            })
            .collect();
        let url = match query.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", query.join("&")),
        };
        return (url, root_cert);
    }
    // `key=value` pairs separated by spaces (values here have no spaces of their own).
    let pairs: Vec<String> = url
        .split_whitespace()
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            keep(key, value)
        })
        .collect();
    (pairs.join(" "), root_cert)
}

/// Server certificates are checked against the system's roots, as libpq's `verify-full`,
/// or against `sslrootcert` when the URL gives one.
fn tls_config(
    database: &str,
    root_cert: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, PgError> {
    static SYSTEM: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    let tls_error = |message: String| PgError::Url {
        database: database.to_string(),
        message,
    };
    let roots = match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| tls_error(format!("sslrootcert {}: {e}", path.display())))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| tls_error(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error(format!("sslrootcert {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(tls_error(format!(
                    "sslrootcert {}: no PEM certificate in it",
                    path.display()
                )));
            }
            Arc::new(roots)
        }
        None => SYSTEM
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                Arc::new(roots)
            })
            .clone(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A double-quoted identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let db = Database::parse(
            "warehouse",
            "postgres://ana:s3cret@db.example:6543/crm?sslmode=disable",
        )
        .unwrap();
        assert_eq!(db.endpoint(), "postgres://ana@db.example:6543/crm");
        assert!(!format!("{db:?}").contains("s3cret"));
    }

    #[test]
    fn libpq_tls_options_are_understood() {
        let db = Database::parse(
            "rds",
            "postgres://ana:pw@db.example:5432/crm?sslmode=verify-full&sslrootcert=/etc/ssl/rds.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(db.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(
            db.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ssl/rds.pem"))
        );
        let db = Database::parse("kv", "host=db user=ana sslmode=verify-ca dbname=crm").unwrap();
        assert_eq!(db.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(db.dbname(), "crm");
        let e = tls_config("rds", Some(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("database `rds`: bad URL: sslrootcert /nonexistent/ca.pem: "),
            "{e}"
        );
    }

    #[test]
    fn a_bad_url_names_the_database_not_the_url() {
        let e = Database::parse("warehouse", "postgres://ana:s3cret@db:notaport/crm").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("database `warehouse`: bad URL: "),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
