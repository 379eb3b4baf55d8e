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

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir()
            .unwrap();
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
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50",
                    dir.path().display()
                ));
            if start.status().unwrap().success() {
                let pg = Postgres { port, dir };
                pg.psql("postgres", "CREATE DATABASE delivery");
                return pg;
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
