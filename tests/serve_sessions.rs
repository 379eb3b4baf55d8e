//! `sluice serve`: what one client does does not reach another. A statement over its memory
//! limit fails alone; with `--allow-write`, what a connection creates is its own; small
//! sources are held in memory and read again when their file changes.

mod common;
use common::server::*;
use common::*;

/// base64("analyst:correct horse battery"), the served project's user.
const BASIC_AUTH: &str = "YW5hbHlzdDpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=";

#[test]
fn a_statement_over_its_memory_limit_fails_while_another_client_is_answered() {
    let p = served_project();
    let server = Server::start(p.path(), &["--query-memory-limit", "16M"]);
    let script = format!(
        r#"
import psycopg, json, threading, time
def connect():
    return psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", autocommit=True)
out = {{"answers": []}}
def greedy():
    try:
        connect().execute("SELECT array_length(array_agg(value), 1) FROM generate_series(1, 50000000)").fetchone()
        out["greedy"] = "finished"
    except psycopg.Error as e:
        out["greedy"] = [e.sqlstate, str(e).strip()]
other = connect()
t = threading.Thread(target=greedy)
t.start()
# Ask while the greedy statement runs (and at least once, however fast it fails).
while t.is_alive() or not out["answers"]:
    out["answers"].append(int(other.execute("SELECT count(*) FROM people").fetchone()[0]))
    time.sleep(0.01)
t.join()
out["small"] = int(other.execute("SELECT array_length(array_agg(value), 1) FROM generate_series(1, 100000)").fetchone()[0])
print(json.dumps(out))
"#,
        port = server.port
    );
    let v = python_json(&script);
    let greedy = &v["greedy"];
    assert_eq!(greedy[0], "53200", "{v}");
    let message = greedy[1].as_str().unwrap();
    assert!(
        message.starts_with("resources exhausted: the statement needs more memory than the per-query limit of 16.0 MB (--query-memory-limit)"),
        "{message}"
    );
    // The other client was answered while the greedy statement ran, and right.
    let answers = v["answers"].as_array().unwrap();
    assert!(!answers.is_empty(), "{v}");
    assert!(answers.iter().all(|a| a == 3), "{v}");
    // The limit is per statement: a statement within it runs after the failure.
    assert_eq!(v["small"], 100000);

    // HTTP statements have the same limit.
    let reply = post_query(
        server.http,
        Some(BASIC_AUTH),
        "application/json",
        "SELECT array_length(array_agg(value), 1) FROM generate_series(1, 50000000)",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("per-query limit of 16.0 MB (--query-memory-limit)"),
        "{reply}"
    );
    let log = server.stop();
    assert!(log.contains("16.0 MB per statement"), "{log}");
}

#[test]
fn with_allow_write_what_a_connection_creates_is_its_own() {
    let p = served_project();
    let server = Server::start(p.path(), &["--allow-write"]);
    let script = format!(
        r#"
import psycopg, json
def connect():
    return psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", autocommit=True)
def error(conn, sql):
    try:
        conn.execute(sql)
        return "ran"
    except psycopg.Error as e:
        return str(e).strip()
out = {{}}
one, two = connect(), connect()
out["into"] = one.execute("SELECT 1 AS a INTO t").statusmessage
out["view"] = one.execute("CREATE VIEW v AS SELECT a + 1 AS b FROM t").statusmessage
out["insert"] = one.execute("INSERT INTO t VALUES (5)").statusmessage
out["one_reads"] = [r[0] for r in one.execute("SELECT b FROM v ORDER BY b")]
out["two_reads_t"] = error(two, "SELECT * FROM t")
out["two_creates_t"] = two.execute("CREATE TABLE t AS SELECT 'two' AS x").statusmessage
out["two_t"] = [r[0] for r in two.execute("SELECT x FROM t")]
out["one_t"] = [r[0] for r in one.execute("SELECT a FROM t ORDER BY a")]
out["drop_project"] = error(one, "DROP TABLE people")
out["replace_project"] = error(one, "CREATE OR REPLACE VIEW people AS SELECT 1")
out["people"] = int(one.execute("SELECT count(*) FROM people").fetchone()[0])
# A setting is the connection's own too.
one.execute("SET datafusion.execution.batch_size = 3")
out["one_batch"] = one.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'").fetchone()[0]
out["two_batch"] = two.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'").fetchone()[0]
one.close()
out["after_close"] = error(connect(), "SELECT * FROM v")
print(json.dumps(out))
"#,
        port = server.port
    );
    let v = python_json(&script);
    assert_eq!(v["into"], "CREATE TABLE");
    assert_eq!(v["view"], "CREATE VIEW");
    assert_eq!(v["insert"], "INSERT 0 1");
    assert_eq!(v["one_reads"], serde_json::json!([2, 6]));
    assert!(
        v["two_reads_t"]
            .as_str()
            .unwrap()
            .contains("table 'datafusion.public.t' not found"),
        "{v}"
    );
    assert_eq!(v["two_creates_t"], "CREATE TABLE");
    assert_eq!(v["two_t"], serde_json::json!(["two"]));
    assert_eq!(v["one_t"], serde_json::json!([1, 5]));
    for key in ["drop_project", "replace_project"] {
        assert!(
            v[key].as_str().unwrap().contains(
                "`people` is the project's table: a connection cannot replace or drop it"
            ),
            "{key}: {v}"
        );
    }
    assert_eq!(v["people"], 3);
    assert_eq!(v["one_batch"], "3");
    assert_eq!(v["two_batch"], "8192");
    assert!(
        v["after_close"]
            .as_str()
            .unwrap()
            .contains("table 'datafusion.public.v' not found"),
        "{v}"
    );

    // Each HTTP request is a session of its own too.
    let auth = BASIC_AUTH;
    let created = post_query(
        server.http,
        Some(auth),
        "application/json",
        "SELECT 1 AS a INTO h",
    );
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let read = post_query(
        server.http,
        Some(auth),
        "application/json",
        "SELECT * FROM h",
    );
    assert!(read.starts_with("HTTP/1.1 400"), "{read}");
    assert!(
        read.contains("table 'datafusion.public.h' not found"),
        "{read}"
    );
}

#[test]
fn a_small_source_is_held_in_memory_and_read_again_when_its_file_changes() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n[sources.raw]\nlocation = \"data/raw.csv\"\ncache = false\n",
        ),
        ("data/people.csv", "id,name\n1,ann\n2,bob\n"),
        ("data/raw.csv", "id\n1\n"),
    ]);
    let server = Server::start(p.path(), &[]);
    let plan = |table: &str| {
        let r = server.psql("", &format!("EXPLAIN SELECT * FROM {table}"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let count = || {
        let r = server.psql("", "SELECT count(*), max(name) FROM people");
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    assert_eq!(count(), "2,bob\n");
    // Held: the scan reads batches in memory, not the CSV file.
    let held = plan("people");
    assert!(held.contains("partition_sizes=[1]"), "{held}");
    assert!(!held.contains("file_type=csv"), "{held}");
    // `cache = false` reads its file every time.
    assert!(plan("raw").contains("file_type=csv"), "{}", plan("raw"));

    // The file changes (a different size): the next query reads it again.
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name\n1,ann\n2,bob\n3,cy\n4,dee\n",
    )
    .unwrap();
    assert_eq!(count(), "4,dee\n");
    // Same size, new content and time (past a file system's coarsest time step): read again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name\n1,ann\n2,bob\n3,cy\n4,eve\n",
    )
    .unwrap();
    assert_eq!(count(), "4,eve\n");
}
