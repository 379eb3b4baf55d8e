//! A real PostgreSQL 15 server on loopback for one test: initdb into a temporary folder,
//! pg_ctl start on a free port with password authentication over TCP, stopped (immediate)
//! when the guard drops. As root the server runs as the `postgres` user (PostgreSQL refuses
//! root).

use super::cluster::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USER: &str = "sluice";
pub const PASSWORD: &str = "pg-s3cret-Ø";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The folder of PostgreSQL 15's server programs.
fn bin(program: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql/15/bin").join(program);
    assert!(
        debian.exists(),
        "{} is missing: test.sh installs postgresql-15",
        debian.display()
    );
    debian
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the server's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate it signed for 127.0.0.1, in `dir`: (ca.pem, server.pem,
/// server.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(dir);
        check(c, "openssl");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=sluice test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(false).0
    }

    /// A server that also speaks TLS with a certificate for 127.0.0.1; the CA that signed
    /// it.
    pub fn start_with_tls() -> (Postgres, PathBuf) {
        let (pg, ca) = Self::start_with(true);
        (pg, ca.expect("a CA"))
    }

    fn start_with(tls: bool) -> (Postgres, Option<PathBuf>) {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir()
            .unwrap();
        let (ca, ssl) = if tls {
            let (ca, cert, key) = certificates(dir.path());
            let ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            );
            (Some(ca), ssl)
        } else {
            (None, String::new())
        };
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            check(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            );
        }
        if tls {
            // The server refuses a key others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let mut init = as_owner(&bin("initdb"));
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        check(init, "initdb");
        for _ in 0..3 {
            let port = free_port();
            let mut start = as_owner(&bin("pg_ctl"));
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "60", "start", "-o"])
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50{ssl}",
                    dir.path().display()
                ));
            if start.status().unwrap().success() {
                let pg = Postgres { port, dir };
                pg.psql("postgres", "CREATE DATABASE delivery");
                return (pg, ca);
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    /// A URL for sluice.toml's `[databases]`, for the `delivery` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/delivery?sslmode=disable",
            PASSWORD.replace('Ø', "%C3%98"),
            self.port
        )
    }

    /// Run SQL with psql (over TCP, with the password); its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// The server's log, for assertions about the statements sluice sent.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = as_owner(&bin("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}
