//! `sluice serve` with real clients on loopback: psql (catalog commands, queries, a wrong
//! password, every refused write), psycopg (parameters, prepared statements, types, timeout,
//! cancel), pgbench (simple and extended, 8 clients), HTTP, and misbehaving clients.

mod common;
use common::python::python;
use common::server::*;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn psql_catalog_queries_auth_and_refused_writes() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    let r = server.psql(PASSWORD, "SELECT id, name FROM people ORDER BY id");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "1,ann\n2,bob\n3,cy\n");
    // Models are served as views.
    let r = server.psql(PASSWORD, "SELECT name FROM kr_people ORDER BY id");
    assert_eq!(r.stdout, "ANN\nCY\n", "{}", r.stderr);
    let r = server.psql(PASSWORD, "\\dt");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("people"), "{}", r.stdout);
    let r = server.psql(PASSWORD, "\\d people");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("country"), "{}", r.stdout);
    // sluice's functions run on the server too.
    let r = server.psql(PASSWORD, "SELECT sha256_hex('abc')");
    assert_eq!(
        r.stdout,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    );

    let r = server.psql("wrong", "SELECT 1");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("password authentication failed for user \"analyst\""),
        "{}",
        r.stderr
    );
    for (sql, expected) in [
        (
            "INSERT INTO people VALUES (9, 'x', 'KR')",
            "INSERT is not allowed",
        ),
        ("CREATE TABLE t AS SELECT 1", "DDL is not allowed"),
        ("COPY people TO '/tmp/out.csv'", "COPY is not allowed"),
        (
            "SELECT * FROM '/etc/hosts.csv'",
            "reading files or URLs by path (/etc/hosts.csv) is not allowed",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            "SET of engine settings is not allowed",
        ),
        ("DROP TABLE people", "DDL is not allowed"),
        // A query in the grammar, a CREATE in the plan: decided by the plan.
        (
            "SELECT 1 AS a INTO t",
            "creating a table (CREATE TABLE, SELECT ... INTO) is not allowed",
        ),
        (
            "WITH x AS (SELECT id FROM people) SELECT id INTO t FROM x",
            "creating a table (CREATE TABLE, SELECT ... INTO) is not allowed",
        ),
        (
            "EXPLAIN ANALYZE SELECT 1 AS a INTO t",
            "creating a table (CREATE TABLE, SELECT ... INTO) is not allowed",
        ),
    ] {
        let r = server.psql(PASSWORD, sql);
        assert_eq!(r.code, 1, "{sql}: {}", r.stderr);
        assert!(r.stderr.contains(expected), "{sql}: {}", r.stderr);
        assert!(r.stderr.contains("--allow-write"), "{sql}: {}", r.stderr);
    }
    // Nothing was created: another client does not see `t`.
    let r = server.psql(PASSWORD, "SELECT * FROM t");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("table 'datafusion.public.t' not found"),
        "{}",
        r.stderr
    );
    // The extended protocol (a prepared statement) goes through the same guard: 25006.
    let out = python(&format!(
        "import psycopg\nc = psycopg.connect(host='127.0.0.1', port={}, user='analyst', password='{PASSWORD}', dbname='sluice')\ntry:\n    c.execute('SELECT %s::int AS a INTO t', (1,), prepare=True)\nexcept psycopg.Error as e:\n    print(e.sqlstate, str(e).splitlines()[0])",
        server.port
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "25006 creating a table (CREATE TABLE, SELECT ... INTO) is not allowed: sluice serve is read-only; start it with --allow-write to allow this",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = server.stop();
    assert!(log.contains("query user=analyst protocol=simple"), "{log}");
    assert!(log.contains("SCRAM-SHA-256"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(
        !log.contains("ORDER BY"),
        "the log must not carry SQL text: {log}"
    );
}

#[test]
fn psycopg_parameters_prepared_types_timeout_and_cancel() {
    let p = served_project();
    let server = Server::start(p.path(), &["--statement-timeout", "2s"]);
    let script = format!(
        r#"
import psycopg, json, threading, time
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", autocommit=True)
out = {{}}
cur = conn.cursor()
cur.execute("SELECT name FROM people WHERE id = %s", (2,))
out["param"] = cur.fetchall()
cur.execute("SELECT name FROM people WHERE country = %s ORDER BY id", ("KR",), prepare=True)
out["prepared"] = cur.fetchall()
cur.execute("SELECT name FROM people WHERE country = %s ORDER BY id", ("US",), prepare=True)
out["prepared_again"] = cur.fetchall()
cur.execute("SELECT id, amount, at, note FROM amounts ORDER BY id")
rows = cur.fetchall()
out["types"] = [[r[0], str(r[1]), r[2].isoformat(), r[3]] for r in rows]
out["type_names"] = [type(v).__name__ for v in rows[0]]
cur.execute("SELECT make_array(1, 2, 3) AS a, arrow_cast('view', 'Utf8View') AS v")
out["list_and_view"] = [str(x) for x in cur.fetchone()]
try:
    cur.execute("SELECT count(*) FROM generate_series(1, 2000000000) a, generate_series(1, 10) b")
    out["timeout"] = "finished"
except Exception as e:
    out["timeout"] = type(e).__name__ + ": " + str(e).strip()
out["after"] = conn.execute("SELECT count(*) FROM people").fetchone()[0]
print(json.dumps(out))
"#,
        port = server.port
    );
    let v = python_json(&script);
    assert_eq!(v["param"], serde_json::json!([["bob"]]));
    assert_eq!(v["prepared"], serde_json::json!([["ann"], ["cy"]]));
    assert_eq!(v["prepared_again"], serde_json::json!([["bob"]]));
    assert_eq!(
        v["types"],
        serde_json::json!([
            [1, "10.50", "2026-05-01T10:00:00", "first"],
            [2, "0.05", "2026-05-02T11:30:00", null]
        ])
    );
    assert_eq!(
        v["type_names"],
        serde_json::json!(["int", "Decimal", "datetime", "str"])
    );
    assert_eq!(v["list_and_view"], serde_json::json!(["[1, 2, 3]", "view"]));
    assert!(
        v["timeout"]
            .as_str()
            .unwrap()
            .contains("canceling statement due to statement timeout"),
        "{v}"
    );
    assert_eq!(v["after"], 3);
}

#[test]
fn a_cancel_stops_the_statement_on_a_server_without_a_timeout() {
    let p = served_project();
    // No statement timeout: only the cancel can stop the statement (it would run for
    // minutes), so a quick QueryCanceled is the cancel's doing.
    let server = Server::start(p.path(), &[]);
    let script = format!(
        r#"
import psycopg, json, threading, time
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", autocommit=True)
threading.Timer(0.5, conn.cancel).start()
t0 = time.time()
out = {{}}
try:
    conn.execute("SELECT count(*) FROM generate_series(1, 2000000000) a, generate_series(1, 10) b")
    out["cancel"] = "finished"
except Exception as e:
    out["cancel"] = type(e).__name__ + ": " + str(e).strip().splitlines()[0]
out["seconds"] = time.time() - t0
out["after"] = conn.execute("SELECT count(*) FROM people").fetchone()[0]
print(json.dumps(out))
"#,
        port = server.port
    );
    let v = python_json(&script);
    assert!(
        v["cancel"]
            .as_str()
            .unwrap()
            .starts_with("QueryCanceled: canceling statement due to user request"),
        "{v}"
    );
    // Cancelled at 0.5 s; the statement alone runs for minutes on this machine.
    assert!(v["seconds"].as_f64().unwrap() < 5.0, "{v}");
    assert_eq!(v["after"], 3);
}

#[test]
fn pgbench_simple_and_extended_with_8_clients() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    let script = p.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 3)\nSELECT name FROM people WHERE id = :id;\n",
    )
    .unwrap();
    for mode in ["simple", "extended"] {
        let out = Command::new("pgbench")
            .args(["-n", "-M", mode, "-c", "8", "-j", "2", "-t", "25", "-f"])
            .arg(&script)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "analyst",
                "sluice",
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{mode}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("number of transactions actually processed: 200/200"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
    }
}

/// One request; the response's head and body, a chunked body put back together (and
/// checked to end with its last chunk).
#[test]
fn http_health_metrics_and_query() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    assert!(http(server.http, "GET /health HTTP/1.1\r\n\r\n").ends_with("\r\n\r\nok\n"));
    // base64("analyst:correct horse battery")
    let auth = "YW5hbHlzdDpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=";
    let r = post_query(
        server.http,
        Some(auth),
        "application/json",
        "SELECT id, name FROM people ORDER BY id LIMIT 2",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(
        r.ends_with(r#"[{"id":1,"name":"ann"},{"id":2,"name":"bob"}]"#),
        "{r}"
    );
    let r = post_query(
        server.http,
        Some(auth),
        "text/csv",
        "SELECT id, name FROM people ORDER BY id",
    );
    assert!(r.ends_with("\r\n\r\nid,name\n1,ann\n2,bob\n3,cy\n"), "{r}");
    let r = post_query(server.http, None, "application/json", "SELECT 1");
    assert!(r.starts_with("HTTP/1.1 401 Unauthorized"), "{r}");
    let r = post_query(
        server.http,
        Some(auth),
        "application/json",
        "DROP TABLE people",
    );
    assert!(r.starts_with("HTTP/1.1 403 Forbidden"), "{r}");
    let r = post_query(
        server.http,
        Some(auth),
        "application/json",
        "SELECT id INTO copied FROM people",
    );
    assert!(r.starts_with("HTTP/1.1 403 Forbidden"), "{r}");
    assert!(r.ends_with(r#"{"error":"creating a table (CREATE TABLE, SELECT ... INTO) is not allowed: sluice serve is read-only; start it with --allow-write to allow this"}"#), "{r}");
    let r = post_query(server.http, Some(auth), "text/csv", "SELECT * FROM copied");
    assert!(r.starts_with("HTTP/1.1 400 Bad Request"), "{r}");
    // With users configured, /metrics wants credentials too; /health stays open.
    let r = http(server.http, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401 Unauthorized"), "{r}");
    let metrics = http(
        server.http,
        &format!("GET /metrics HTTP/1.1\r\nAuthorization: Basic {auth}\r\n\r\n"),
    );
    // Two answered, one that did not plan (`copied` does not exist); refusals are not run.
    assert!(metrics.contains("sluice_queries_total 3"), "{metrics}");
    assert!(metrics.contains("sluice_query_errors_total 1"), "{metrics}");
    assert!(
        metrics.contains("sluice_query_duration_seconds_count 3"),
        "{metrics}"
    );
}

/// Peak resident memory of a process so far, in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

#[test]
fn http_query_streams_large_results_in_every_format() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    let auth = "YW5hbHlzdDpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=";
    // Empty results and JSON lines.
    let r = post_query(
        server.http,
        Some(auth),
        "application/json",
        "SELECT id FROM people WHERE id > 9",
    );
    assert!(r.ends_with("\r\n\r\n[]"), "{r}");
    let r = post_query(
        server.http,
        Some(auth),
        "text/csv",
        "SELECT id, name FROM people WHERE id > 9",
    );
    assert!(r.ends_with("\r\n\r\nid,name\n"), "{r}");
    let r = post_query(
        server.http,
        Some(auth),
        "application/x-ndjson",
        "SELECT id, name FROM people ORDER BY id",
    );
    assert!(
        r.ends_with("\r\n\r\n{\"id\":1,\"name\":\"ann\"}\n{\"id\":2,\"name\":\"bob\"}\n{\"id\":3,\"name\":\"cy\"}\n"),
        "{r}"
    );
    let before = peak_rss_mb(server.child.id());
    // 5M rows of about 110 bytes (550 MB of CSV), read by a real client as they come:
    // Python's urllib for CSV, pyarrow's IPC reader for Arrow.
    let script = format!(
        r#"
import urllib.request, json, base64, pyarrow.ipc as ipc
def post(accept, sql):
    req = urllib.request.Request("http://127.0.0.1:{port}/query", data=json.dumps({{"sql": sql}}).encode(),
        headers={{"Authorization": "Basic {auth}", "Accept": accept, "Content-Type": "application/json"}})
    return urllib.request.urlopen(req)
rows = 0
total = 0
with post("text/csv", "SELECT value, repeat('x', 100) AS pad FROM generate_series(1, 5000000)") as r:
    first = r.readline()
    for line in r:
        rows += 1
        total += int(line.split(b",")[0])
with post("application/vnd.apache.arrow.stream", "SELECT value FROM generate_series(1, 3000000)") as r:
    t = ipc.open_stream(r).read_all()
print(first.decode().strip(), rows, total, t.num_rows, t.column(0).to_pylist()[-1])
"#,
        port = server.http
    );
    let out = python(&script);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "value,pad 5000000 12500002500000 3000000 3000000\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The 550 MB answer never sat in the server: its peak grew by far less.
    let after = peak_rss_mb(server.child.id());
    assert!(after < before + 200, "peak RSS {before} MB -> {after} MB");
}

#[test]
fn garbage_and_abandoned_clients_do_not_disturb_others() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    // Random bytes, a truncated startup message, and a client that leaves mid-result.
    let mut junk = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    junk.write_all(b"\x00\x00\x00\x08garbage!garbage").unwrap();
    let mut truncated = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    truncated.write_all(b"\x00\x00\x01\x00\x00\x03").unwrap();
    let mut leaver = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=sluice sslmode=disable",
            server.port
        ))
        .args(["-X", "-c", "SELECT * FROM generate_series(1, 5000000)"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = leaver.kill();
    let _ = leaver.wait();
    drop(junk);
    let r = server.psql(PASSWORD, "SELECT count(*) FROM people");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "3\n");
    drop(truncated);
}

#[test]
fn no_users_means_loopback_only_and_tls_problems_stop_the_server() {
    let p = project(&[("sluice.toml", "")]);
    let r = run(p.path(), &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "no [server.users] configured: refusing to listen on 0.0.0.0:0 without passwords"
        ),
        "{}",
        r.stderr
    );
    // The same rule for the HTTP port.
    let r = run(
        p.path(),
        &["serve", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "no [server.users] configured: refusing to serve HTTP on 0.0.0.0:0 without passwords; use --http 127.0.0.1:PORT or add users"
        ),
        "{}",
        r.stderr
    );
    let r = run(
        p.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("TLS: cannot read /nonexistent/cert.pem"),
        "{}",
        r.stderr
    );
}

#[test]
fn tls_with_a_certificate() {
    let p = served_project();
    let (cert, key) = test_certificate(p.path());
    let server = Server::start(
        p.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=sluice sslmode=require",
            server.port
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT ssl FROM (SELECT 'on' AS ssl)",
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "on\n");
    // The client's own view of the connection: encrypted, by TLS.
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=sluice sslmode=require",
            server.port
        ))
        .args(["-X", "-c", "\\conninfo"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("SSL connection (protocol: TLSv1."), "{info}");
    let out = python(&format!(
        "import psycopg\nc = psycopg.connect(host='127.0.0.1', port={}, user='analyst', password='{PASSWORD}', dbname='sluice', sslmode='require')\nprint(c.pgconn.ssl_in_use, c.execute('SELECT 1').fetchone()[0])",
        server.port
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "True 1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = server.stop();
    assert!(
        log.contains("(TLS, SCRAM-SHA-256 passwords, read-only, "),
        "{log}"
    );
}

#[test]
fn a_client_past_max_connections_gets_postgres_too_many_clients() {
    let p = served_project();
    let server = Server::start(p.path(), &["--max-connections", "1"]);
    let out = python_json(&format!(
        r#"
import json, os, subprocess, sys, time, psycopg
def connect():
    return psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", connect_timeout=10)
def holder():
    # The start-up probe's connection may still hold the one slot for a moment.
    for _ in range(50):
        try:
            return connect()
        except psycopg.Error:
            time.sleep(0.1)
    raise SystemExit("no connection at all")
held = holder()
try:
    connect()
    refused = None
except psycopg.OperationalError as e:
    refused = str(e).strip().splitlines()[-1]
# libpq keeps a start-up error's SQLSTATE to itself: read the server's ErrorResponse raw.
import socket, struct
raw = socket.create_connection(("127.0.0.1", {port}))
params = b"user\0analyst\0database\0sluice\0\0"
raw.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
reply = b""
while True:
    chunk = raw.recv(4096)
    if not chunk:
        break
    reply += chunk
fields = dict((f[:1].decode(), f[1:].decode()) for f in reply[5:].split(b"\0") if f)
raw_reply = [reply[:1].decode(), fields]
psql = subprocess.run(["psql", "host=127.0.0.1 port={port} user=analyst dbname=sluice", "-X", "-c", "SELECT 1"],
                      env=dict(os.environ, PGPASSWORD="{PASSWORD}"), capture_output=True, text=True)
answer = held.execute("SELECT count(*) FROM people").fetchone()[0]
held.close()
again = holder().execute("SELECT 1").fetchone()[0]
print(json.dumps({{"refused": refused, "raw": raw_reply, "psql": [psql.returncode, psql.stderr.strip()], "held": answer, "again": again}}))
sys.stdout.flush()
os._exit(0)
"#,
        port = server.port
    ));
    assert!(
        out["refused"]
            .as_str()
            .unwrap()
            .ends_with("failed: FATAL:  sorry, too many clients already"),
        "{out}"
    );
    assert_eq!(
        out["raw"],
        serde_json::json!(["E", {"S": "FATAL", "V": "FATAL", "C": "53300", "M": "sorry, too many clients already"}]),
        "{out}"
    );
    assert_eq!(out["psql"][0], 2, "{out}");
    assert!(
        out["psql"][1]
            .as_str()
            .unwrap()
            .ends_with("FATAL:  sorry, too many clients already"),
        "{out}"
    );
    assert_eq!(out["held"], 3);
    assert_eq!(out["again"], 1);
}
