//! `sluice serve` started from the binary for tests, with the clients' helpers.

use super::cluster::free_port;
use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "correct horse battery";

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub http: u16,
}

impl Server {
    pub fn start(project: &Path, extra: &[&str]) -> Server {
        // Free ports are free when asked for, not always when the server binds them (tests
        // run in parallel): a server that could not bind is started again on other ports.
        for _ in 0..3 {
            let (port, http) = (free_port(), free_port());
            let mut child = sluice()
                .arg("--project")
                .arg(project)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(extra)
                .env("SLUICE_ANALYST_PASSWORD", PASSWORD)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server { child, port, http };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    assert!(
                        err.contains("in use"),
                        "sluice serve exited ({status}) before listening:\n{err}"
                    );
                    break;
                }
                assert!(Instant::now() < deadline, "sluice serve did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("sluice serve found no free port in three tries")
    }

    /// psql as the served project's user, unaligned, comma-separated, no headers.
    fn psql_command(&self, password: &str) -> Command {
        let mut psql = Command::new("psql");
        psql.arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=sluice sslmode=disable",
            self.port
        ))
        .args(["-X", "-A", "-t", "-F", ",", "-v", "ON_ERROR_STOP=1"])
        .env("PGPASSWORD", password);
        psql
    }

    pub fn psql(&self, password: &str, sql: &str) -> Run {
        let out = self
            .psql_command(password)
            .args(["-c", sql])
            .output()
            .expect("psql runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A psql script in one connection, each statement its own simple-protocol query,
    /// stopping at the first error.
    pub fn psql_script(&self, script: &str) -> Run {
        let mut child = self
            .psql_command(PASSWORD)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs");
        let mut stdin = child.stdin.take().expect("psql's stdin");
        stdin
            .write_all(script.as_bytes())
            .expect("psql reads the script");
        drop(stdin);
        let out = child.wait_with_output().expect("psql runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Stop the server and return what it logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        let _ = self.child.wait();
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn served_project() -> tempfile::TempDir {
    project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n[sources.amounts]\nlocation = \"data/amounts.csv\"\nschema = { id = \"BIGINT\", amount = \"DECIMAL(10,2)\", at = \"TIMESTAMP\", note = \"VARCHAR\" }\n[server.users.analyst]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\n",
        ),
        ("data/people.csv", "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n"),
        (
            "data/amounts.csv",
            "id,amount,at,note\n1,10.50,2026-05-01T10:00:00,first\n2,0.05,2026-05-02T11:30:00,\n",
        ),
        (
            "models/kr_people.sql",
            "SELECT id, upper(name) AS name FROM people WHERE country = 'KR'\n",
        ),
    ])
}

/// Run a Python script in the test venv; the JSON it prints (the script must succeed).
pub fn python_json(script: &str) -> serde_json::Value {
    let out = super::python::python(script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let Some((head, mut body)) = out.split_once("\r\n\r\n") else {
        return out;
    };
    if !head.contains("transfer-encoding: chunked") {
        return out;
    }
    let mut decoded = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            assert_eq!(rest, "\r\n", "the body ends with its last chunk");
            break;
        }
        decoded.push_str(&rest[..size]);
        body = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
    format!("{head}\r\n\r\n{decoded}")
}

pub fn post_query(port: u16, auth: Option<&str>, accept: &str, sql: &str) -> String {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let auth = auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    http(
        port,
        &format!(
            "POST /query HTTP/1.1\r\nHost: x\r\n{auth}Accept: {accept}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A self-signed certificate and key for 127.0.0.1 in `dir` (cert.pem, key.pem), with the
/// address as a subject alternative name, which gRPC clients require.
pub fn test_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl makes a test certificate");
    (cert, key)
}

/// Python opening every script: an ADBC connection to the Flight port, once it listens.
pub fn flight_prelude(flight: u16, tls: Option<&std::path::Path>) -> String {
    let (scheme, root) = match tls {
        Some(cert) => ("grpc+tls", format!("open({:?}).read()", cert)),
        None => ("grpc", "None".to_string()),
    };
    format!(
        r#"
import json, os, socket, sys, time, datetime, decimal, threading
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import polars as pl
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", {flight}), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
ROOT = {root}
def connect(user="analyst", password="{PASSWORD}"):
    db = {{"username": user, "password": password}}
    if ROOT:
        db["adbc.flight.sql.client_option.tls_root_certs"] = ROOT
    return flight_sql.connect("{scheme}://127.0.0.1:{flight}", db_kwargs=db, autocommit=True)
def plain(v):
    if isinstance(v, (decimal.Decimal, datetime.datetime, datetime.date)):
        return str(v)
    return v
def rows(table):
    return [[plain(v) for v in r.values()] for r in table.to_pylist()]
def error(e):
    return [type(e).__name__, str(e)]
def done(out):
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)
"#
    )
}
