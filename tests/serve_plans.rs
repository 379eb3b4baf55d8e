//! `sluice serve` runs a connection's query again from the plan it made the first time, with
//! the new values bound: the answers are those of planning anew (other values, a value of
//! another type, a source whose file changed, `now()`, a connection's own table).

mod common;
use common::server::*;

/// base64("analyst:correct horse battery"), the served project's user.
const BASIC_AUTH: &str = "YW5hbHlzdDpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=";

fn plans_reused(http_port: u16) -> u64 {
    let metrics = http(
        http_port,
        &format!("GET /metrics HTTP/1.1\r\nAuthorization: Basic {BASIC_AUTH}\r\n\r\n"),
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_plans_reused_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn a_query_sent_again_with_other_literals_runs_its_plan_with_the_new_values() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    let out = server.psql_script(
        "SELECT name, country FROM people WHERE id = 1;
SELECT name, country FROM people WHERE id = 2;
SELECT name, country FROM people WHERE id = 3;
SELECT name, country FROM people WHERE id = 4;
SELECT 'none' AS marker;
SELECT name, country FROM people WHERE id = 2.5;
SELECT name FROM people WHERE id IN (1, 3) ORDER BY id;
SELECT name FROM people WHERE id IN (2, 3) ORDER BY id;
SELECT name FROM people WHERE name = 'bob';
SELECT name FROM people WHERE name = 'cy';
SELECT count(*) FROM people WHERE id BETWEEN 2 AND 3 AND name LIKE 'b%';
SELECT count(*) FROM people WHERE id BETWEEN 1 AND 3 AND name LIKE '%y';
SELECT country, count(*) FROM people WHERE id > 1 GROUP BY country HAVING count(*) >= 1 ORDER BY country;
SELECT country, count(*) FROM people WHERE id > 0 GROUP BY country HAVING count(*) >= 2 ORDER BY country;
SELECT note FROM amounts WHERE at > '2026-05-02' AND amount < 1 ORDER BY id;
SELECT note FROM amounts WHERE at > '2026-05-01' AND amount < 11 ORDER BY id;
",
    );
    assert_eq!(
        out.stdout,
        "ann,KR\nbob,US\ncy,KR\nnone\nann\ncy\nbob\ncy\nbob\ncy\n1\n1\nKR,1\nUS,1\nKR,2\n\nfirst\n\n",
        "{}",
        out.stderr
    );
    // Planned once for each shape; the second and later of a shape reused it: 3 of `id = ?`
    // (`id = 2.5` is a shape of its own), and one each of the other five.
    assert_eq!(plans_reused(server.http), 3 + 5);
    server.stop();
}

#[test]
fn a_literal_of_another_type_is_planned_as_written() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    // Each has the shape of the statement before it, but compares a value of another type
    // (or one an integer column cannot hold): planned as written, it answers as it would have.
    let out = server.psql_script(
        "SELECT name FROM people WHERE id = 1;
SELECT name FROM people WHERE id = '2';
SELECT name FROM people WHERE id = 9223372036854775808;
SELECT name FROM people WHERE country = 'KR' ORDER BY id;
SELECT name FROM people WHERE country = 1;
",
    );
    assert_eq!(out.stdout, "ann\nbob\nann\ncy\n");
    assert!(
        out.stderr
            .contains("ERROR:  Arrow error: Cast error: Cannot cast string '")
            && out.stderr.contains("' to value of Int64 type"),
        "{}",
        out.stderr
    );
    assert_eq!(plans_reused(server.http), 0);
    server.stop();
}

#[test]
fn a_kept_plan_reads_what_the_file_holds_now_and_now_is_not_kept() {
    let p = served_project();
    let server = Server::start(p.path(), &[]);
    let people = p.path().join("data/people.csv");
    let script = format!(
        r#"
import psycopg, json, time
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="{PASSWORD}", dbname="sluice", autocommit=True)
name = lambda i: [r[0] for r in conn.execute("SELECT name FROM people WHERE id = %s", (i,)).fetchall()]
out = {{"before": [name(1), name(2), name(1)]}}
# Longer, so that the file's size changes whatever the file system's time step.
open("{people}", "w").write("id,name,country\n1,zed,KR\n2,yan,US\n3,cy,KR\n4,dee,US\n")
out["after"] = [name(1), name(4)]
stamps = []
for _ in range(2):
    stamps.append(str(conn.execute("SELECT now() AS t FROM people WHERE id = %s", (1,)).fetchone()[0]))
    time.sleep(0.05)
out["now_differs"] = stamps[0] != stamps[1]
print(json.dumps(out))
"#,
        port = server.port,
        people = people.display()
    );
    let v = python_json(&script);
    assert_eq!(v["before"], serde_json::json!([["ann"], ["bob"], ["ann"]]));
    assert_eq!(v["after"], serde_json::json!([["zed"], ["dee"]]));
    assert_eq!(v["now_differs"], true, "{v}");
    // The extended protocol reuses too: the second and third `name()` before the change
    // and the second after it (the first after it planned again).
    assert_eq!(plans_reused(server.http), 3);
    server.stop();
}

#[test]
fn a_connections_own_table_is_read_as_it_is_now() {
    let p = served_project();
    let server = Server::start(p.path(), &["--allow-write"]);
    let out = server.psql_script(
        "CREATE TABLE t AS SELECT 1 AS a;
SELECT count(*) FROM t WHERE a = 1;
INSERT INTO t VALUES (1);
SELECT count(*) FROM t WHERE a = 1;
INSERT INTO t VALUES (2);
SELECT count(*) FROM t WHERE a = 2;
",
    );
    assert_eq!(
        out.stdout, "CREATE TABLE\n1\nINSERT 0 1\n2\nINSERT 0 1\n1\n",
        "{}",
        out.stderr
    );
    assert_eq!(plans_reused(server.http), 0);
    server.stop();
}
