//! OpenLineage run events from `sluice run`: received by an HTTP server on loopback,
//! validated against the specification's JSON schemas (tests/fixtures/openlineage, with
//! Python's jsonschema), with their facets checked value by value; a failed check gives a
//! FAIL event; an endpoint that is down does not fail the run.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// An HTTP/1.1 server that keeps each POST's path, Authorization header and JSON body and
/// answers 201.
fn collector() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                    let (mut length, mut auth) = (0usize, String::new());
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap(),
                            "authorization" => auth = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    keep.lock()
                        .unwrap()
                        .push((path, auth, serde_json::from_slice(&body).unwrap()));
                    stream
                        .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (port, received)
}

const TOML: &str = "[project]\nname = \"crm\"\n[sources.contacts]\nlocation = \"data/contacts.csv\"\npersonal = [\"email\"]\n";
const CONTACTS: &str =
    "id,email,country\n1,ann@example.com,KR\n2,bob@example.com,US\n3,cy@example.com,KR\n";
const HASHED: &str = "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n[columns.id]\nchecks = [\"not_null\"]\n*/\n\
SELECT id, hash_pii(email, 'email') AS email_sha256 FROM contacts WHERE country = 'KR'\n";
const STRICT: &str = "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n[columns.country]\nchecks = [{ accepted_values = [\"KR\"] }]\n*/\n\
SELECT id, country FROM contacts\n";

/// The schema validation's errors for every event and every facet in it.
fn schema_errors(events: &[Value]) -> Vec<String> {
    let dir = repo_root().join("tests/fixtures/openlineage");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(events).unwrap()).unwrap();
    let script = format!("FOLDER, EVENTS = {:?}, {:?}\n", dir, file.path())
        + r#"
import json, os, sys
import jsonschema
from referencing import Registry, Resource
folder, events = FOLDER, json.load(open(EVENTS))
schemas = {}
for f in sorted(os.listdir(folder)):
    if f.endswith('.json'):
        s = json.load(open(os.path.join(folder, f)))
        schemas[s['$id']] = s
registry = Registry().with_resources([(k, Resource.from_contents(v)) for k, v in schemas.items()])
check = lambda schema, value: [e.message for e in jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(value)]
errors = []
for event in events:
    errors += check({'$ref': 'https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent'}, event)
    facets = list(event['run']['facets'].items()) + list(event['job']['facets'].items())
    for d in event['outputs']:
        facets += list(d.get('facets', {}).items()) + list(d.get('outputFacets', {}).items())
    for name, facet in facets:
        url = facet['_schemaURL'].split('#')[0]
        if url not in schemas:
            errors.append(name + ': no schema ' + url)
            continue
        errors += [name + ': ' + m for m in check(schemas[url], {name: facet})]
print(json.dumps(errors))
sys.stdout.flush()
os._exit(0)
"#;
    let errors = common::server::python_json(&script);
    serde_json::from_value(errors).unwrap()
}

#[test]
fn run_posts_start_and_complete_or_fail_events_that_match_the_spec() {
    let (port, received) = collector();
    let p = project(&[
        ("sluice.toml", TOML),
        ("data/contacts.csv", CONTACTS),
        ("models/hashed.sql", HASHED),
        ("models/strict.sql", STRICT),
    ]);
    let url = format!("http://127.0.0.1:{port}");
    let r = run_env(
        p.path(),
        &["run", "--threads", "1"],
        &[
            ("OPENLINEAGE_URL", &url),
            ("OPENLINEAGE_NAMESPACE", "marketing"),
            ("OPENLINEAGE_API_KEY", "ol-key"),
        ],
    );
    // strict's check fails: exit 3, and the run is otherwise as without lineage.
    assert_eq!(r.code, 3, "{}", r.stderr);
    let received = received.lock().unwrap().clone();
    let events: Vec<Value> = received.iter().map(|(_, _, e)| e.clone()).collect();
    assert!(
        received
            .iter()
            .all(|(path, auth, _)| path == "/api/v1/lineage" && auth == "Bearer ol-key"),
        "{received:?}"
    );
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["job"]["name"].as_str().unwrap().to_string(),
                e["eventType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs = |model: &str| -> Vec<String> {
        kinds
            .iter()
            .filter(|(job, _)| job == model)
            .map(|(_, kind)| kind.clone())
            .collect()
    };
    assert_eq!(pairs("crm.hashed"), ["START", "COMPLETE"], "{kinds:?}");
    assert_eq!(pairs("crm.strict"), ["START", "FAIL"], "{kinds:?}");
    assert_eq!(schema_errors(&events), Vec::<String>::new());
    // The validation bites: an event without its run id, a facet without its fields.
    let mut broken = events[1].clone();
    broken["run"].as_object_mut().unwrap().remove("runId");
    broken["outputs"][0]["facets"]["schema"]["fields"] = json!("id");
    let errors = schema_errors(&[broken]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("'runId' is a required property"))
            && errors.iter().any(|e| e.starts_with("schema: ")),
        "{errors:?}"
    );

    // One runId per model run, one parent for the sluice run.
    let run_of = |job: &str, kind: &str| {
        events
            .iter()
            .find(|e| e["job"]["name"] == job && e["eventType"] == kind)
            .unwrap()
            .clone()
    };
    let complete = run_of("crm.hashed", "COMPLETE");
    let fail = run_of("crm.strict", "FAIL");
    assert_eq!(
        run_of("crm.hashed", "START")["run"]["runId"],
        complete["run"]["runId"]
    );
    assert_ne!(complete["run"]["runId"], fail["run"]["runId"]);
    let parent = &complete["run"]["facets"]["parent"];
    assert_eq!(
        parent["job"],
        json!({ "namespace": "marketing", "name": "crm" })
    );
    assert_eq!(fail["run"]["facets"]["parent"]["run"], parent["run"]);
    assert_eq!(complete["job"]["namespace"], "marketing");

    let root = p.path().canonicalize().unwrap();
    let source = root.join("data/contacts.csv").display().to_string();
    assert_eq!(
        complete["inputs"],
        json!([{ "namespace": "file", "name": source }])
    );
    let output = &complete["outputs"][0];
    assert_eq!(output["namespace"], "file");
    assert_eq!(
        output["name"],
        root.join("target/hashed").display().to_string()
    );
    let facets = &output["facets"];
    assert_eq!(
        facets["schema"]["fields"],
        json!([{ "name": "id", "type": "BIGINT" }, { "name": "email_sha256", "type": "VARCHAR" }])
    );
    assert_eq!(facets["dataSource"]["uri"], "file");
    assert_eq!(output["outputFacets"]["outputStatistics"]["rowCount"], 2);
    assert!(
        output["outputFacets"]["outputStatistics"]["size"]
            .as_u64()
            .unwrap()
            > 0
    );
    let lineage = &facets["columnLineage"];
    let direct = |masking: bool, field: &str| {
        json!([{ "namespace": "file", "name": source, "field": field,
                 "transformations": [{ "type": "DIRECT", "subtype": "TRANSFORMATION", "masking": masking }] }])
    };
    // The hashed email is masked; the id is carried as it is; the country only filters.
    assert_eq!(
        lineage["fields"]["email_sha256"]["inputFields"],
        direct(true, "email")
    );
    assert_eq!(lineage["fields"]["id"]["inputFields"], direct(false, "id"));
    assert_eq!(
        lineage["dataset"],
        json!([{ "namespace": "file", "name": source, "field": "country",
                 "transformations": [{ "type": "INDIRECT", "subtype": "FILTER" }] }])
    );
    assert_eq!(
        facets["dataQualityAssertions"]["assertions"],
        json!([{ "assertion": "not_null", "success": true, "column": "id" }])
    );
    // The failed check: its assertion and the error message.
    assert_eq!(
        fail["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"],
        json!([{ "assertion": "accepted_values", "success": false, "column": "country" }])
    );
    let message = fail["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.starts_with("check failed: accepted_values(country)"),
        "{message}"
    );
}

#[test]
fn an_endpoint_that_is_down_is_a_warning_not_a_failure() {
    let p = project(&[
        ("sluice.toml", TOML),
        ("data/contacts.csv", CONTACTS),
        ("models/hashed.sql", HASHED),
    ]);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let r = run_env(p.path(), &["run"], &[("OPENLINEAGE_URL", &url)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "openlineage: cannot post run events to http://127.0.0.1:{port}/api/v1/lineage: "
        )) && r.stderr.contains("the run goes on without them"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        query_csv(p.path(), "SELECT id FROM hashed ORDER BY id"),
        "id\n1\n3\n"
    );
}
