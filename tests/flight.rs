//! `sluice serve --flight` with the real ADBC Flight SQL driver (adbc-driver-flightsql,
//! the Go driver behind pyarrow's ADBC API) and polars: queries with their Arrow types,
//! prepared statements with parameters, catalog browsing, logins, the read-only rule,
//! the per-statement memory limit and TLS.

mod common;
use common::cluster::free_port;
use common::server::*;

fn flight_server(project: &std::path::Path, extra: &[&str]) -> (Server, u16) {
    let flight = free_port();
    let addr = format!("127.0.0.1:{flight}");
    let mut args = vec!["--flight", addr.as_str()];
    args.extend_from_slice(extra);
    (Server::start(project, &args), flight)
}

#[test]
fn adbc_reads_arrow_types_binds_parameters_browses_objects_and_logs_in() {
    let p = served_project();
    let (server, flight) = flight_server(p.path(), &[]);
    let script = flight_prelude(flight, None)
        + r#"
out = {}
conn = connect()
cur = conn.cursor()
cur.execute("SELECT id, amount, at, note, CAST(NULL AS BIGINT) AS missing FROM amounts ORDER BY id")
t = cur.fetch_arrow_table()
out["types"] = [str(f.type) for f in t.schema]
out["rows"] = rows(t)
cur.execute("SELECT id, name FROM people ORDER BY id")
df = pl.from_arrow(cur.fetch_arrow_table())
out["polars"] = [[str(c), str(d)] for c, d in zip(df.columns, df.dtypes)]
out["polars_rows"] = df.rows()
# A prepared statement with parameters ($1), run twice with different values.
cur.execute("SELECT name FROM people WHERE id = $1 OR country = $2 ORDER BY id", parameters=(2, "KR"))
out["bound"] = cur.fetchall()
cur.execute("SELECT name FROM people WHERE id = $1 OR country = $2 ORDER BY id", parameters=(1, "US"))
out["bound_again"] = cur.fetchall()
objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
tables = {}
for catalog in objects:
    for schema in catalog["catalog_db_schemas"]:
        for table in schema["db_schema_tables"] or []:
            columns = [c["column_name"] for c in table["table_columns"] or []]
            tables[f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'] = [table["table_type"], columns]
out["objects"] = {k: v for k, v in tables.items() if ".public." in k}
out["schemas"] = sorted({k.rsplit(".", 1)[0] for k in tables})
out["filtered"] = sorted(
    t["table_name"]
    for c in conn.adbc_get_objects(depth="tables", catalog_filter="datafusion", db_schema_filter="public", table_name_filter="peo%").read_all().to_pylist()
    for s in c["catalog_db_schemas"] for t in s["db_schema_tables"] or [])
out["table_types"] = sorted(conn.adbc_get_table_types())
info = conn.adbc_get_info()
out["vendor"] = info.get("vendor_name")
try:
    cur.execute("SELECT * FROM nowhere")
    out["missing"] = "ran"
except adbc_driver_manager.Error as e:
    out["missing"] = str(e)
try:
    connect(password="wrong").cursor().execute("SELECT 1")
    out["wrong"] = "logged in"
except adbc_driver_manager.Error as e:
    out["wrong"] = error(e)
for sql in ["CREATE TABLE t AS SELECT 1", "SELECT 1 AS a INTO t", "INSERT INTO people VALUES (9, 'x', 'KR')"]:
    try:
        cur.execute(sql)
        cur.fetchall()
        out.setdefault("writes", []).append("ran")
    except adbc_driver_manager.Error as e:
        out.setdefault("writes", []).append(str(e))
conn.close()
done(out)
"#;
    let v = python_json(&script);
    assert_eq!(
        v["types"],
        serde_json::json!([
            "int64",
            "decimal128(10, 2)",
            "timestamp[ns]",
            "string",
            "int64"
        ]),
        "{v}"
    );
    assert_eq!(
        v["rows"],
        serde_json::json!([
            [1, "10.50", "2026-05-01 10:00:00", "first", null],
            [2, "0.05", "2026-05-02 11:30:00", null, null]
        ]),
        "{v}"
    );
    assert_eq!(
        v["polars"],
        serde_json::json!([["id", "Int64"], ["name", "String"]]),
        "{v}"
    );
    assert_eq!(
        v["polars_rows"],
        serde_json::json!([[1, "ann"], [2, "bob"], [3, "cy"]])
    );
    assert_eq!(v["bound"], serde_json::json!([["ann"], ["bob"], ["cy"]]));
    assert_eq!(v["bound_again"], serde_json::json!([["ann"], ["bob"]]));
    assert_eq!(
        v["objects"],
        serde_json::json!({
            "datafusion.public.amounts": ["TABLE", ["id", "amount", "at", "note"]],
            "datafusion.public.kr_people": ["VIEW", ["id", "name"]],
            "datafusion.public.people": ["TABLE", ["id", "name", "country"]]
        }),
        "{v}"
    );
    assert_eq!(
        v["schemas"],
        serde_json::json!(["datafusion.pg_catalog", "datafusion.public"])
    );
    assert_eq!(v["filtered"], serde_json::json!(["people"]));
    assert_eq!(v["table_types"], serde_json::json!(["TABLE", "VIEW"]));
    assert_eq!(v["vendor"], "sluice");
    let missing = v["missing"].as_str().unwrap();
    assert!(
        missing.contains("table 'datafusion.public.nowhere' not found"),
        "{missing}"
    );
    assert!(missing.contains("(InvalidArgument; "), "{missing}");
    let wrong = v["wrong"][1].as_str().unwrap();
    assert!(wrong.contains("UNAUTHENTICATED"), "{wrong}");
    assert!(
        wrong.contains("password authentication failed for user \"analyst\""),
        "{wrong}"
    );
    assert!(!wrong.contains(PASSWORD), "{wrong}");
    let writes = v["writes"].as_array().unwrap();
    for (write, expected) in writes.iter().zip([
        "DDL is not allowed",
        "creating a table (CREATE TABLE, SELECT ... INTO) is not allowed",
        "INSERT is not allowed",
    ]) {
        let write = write.as_str().unwrap();
        assert!(write.contains(expected), "{write}");
        assert!(write.contains("(PermissionDenied; "), "{write}");
        assert!(write.contains("--allow-write"), "{write}");
    }
    let log = server.stop();
    assert!(log.contains("Flight SQL on grpc://127.0.0.1:"), "{log}");
    assert!(
        log.contains("query user=analyst protocol=flight duration_ms="),
        "{log}"
    );
    assert!(
        log.contains("flight: login of user=analyst refused: wrong password"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}

#[test]
fn a_greedy_flight_query_stops_at_its_limit_while_another_client_is_answered() {
    let p = served_project();
    let (_server, flight) = flight_server(p.path(), &["--query-memory-limit", "16M"]);
    let script = flight_prelude(flight, None)
        + r#"
out = {"answers": []}
def greedy():
    try:
        cur = connect().cursor()
        cur.execute("SELECT array_length(array_agg(value), 1) FROM generate_series(1, 50000000)")
        cur.fetchall()
        out["greedy"] = "finished"
    except adbc_driver_manager.Error as e:
        out["greedy"] = str(e)
other = connect().cursor()
t = threading.Thread(target=greedy)
t.start()
while t.is_alive() or not out["answers"]:
    other.execute("SELECT count(*) FROM people")
    out["answers"].append(other.fetchone()[0])
    time.sleep(0.01)
t.join()
other.execute("SELECT array_length(array_agg(value), 1) FROM generate_series(1, 100000)")
out["small"] = other.fetchone()[0]
done(out)
"#;
    let v = python_json(&script);
    let greedy = v["greedy"].as_str().unwrap();
    // ADBC names the gRPC status in parentheses.
    assert!(greedy.contains("(ResourceExhausted; DoGet"), "{greedy}");
    assert!(
        greedy.contains("the statement needs more memory than the per-query limit of 16.0 MB (--query-memory-limit)"),
        "{greedy}"
    );
    let answers = v["answers"].as_array().unwrap();
    assert!(!answers.is_empty(), "{v}");
    assert!(answers.iter().all(|a| a == 3), "{v}");
    assert_eq!(v["small"], 100000);
}

#[test]
fn flight_over_tls_with_the_servers_certificate() {
    let p = served_project();
    let (cert, key) = test_certificate(p.path());
    let (server, flight) = flight_server(
        p.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let script = flight_prelude(flight, Some(&cert))
        + &format!(
            r#"
out = {{}}
cur = connect().cursor()
cur.execute("SELECT name FROM people ORDER BY id")
out["rows"] = cur.fetchall()
# Plaintext to the TLS port fails instead of talking in the clear.
try:
    c = flight_sql.connect("grpc://127.0.0.1:{flight}", db_kwargs={{"username": "analyst", "password": "{PASSWORD}", "adbc.flight.sql.rpc.call_header.x-probe": "1"}})
    c.cursor().execute("SELECT 1")
    out["plain"] = "answered"
except adbc_driver_manager.Error as e:
    out["plain"] = "refused"
done(out)
"#
        );
    let v = python_json(&script);
    assert_eq!(v["rows"], serde_json::json!([["ann"], ["bob"], ["cy"]]));
    assert_eq!(v["plain"], "refused");
    let log = server.stop();
    assert!(log.contains("Flight SQL on grpc+tls://127.0.0.1:"), "{log}");
}
