//! `sluice run` and `plan` end to end on temporary projects: published rows, checks that
//! block publishing, errors that name models, and the atomic publish.

mod common;
use common::*;
use std::path::Path;

// The delivery project of tests/fixtures/people: a staging view, a partitioned delivery
// with checks, an erasure list.
const TOML: &str = include_str!("fixtures/people/sluice.toml");
const PEOPLE: &str = include_str!("fixtures/people/data/people.csv");

fn delivery_project() -> tempfile::TempDir {
    fixture("people", &[])
}

fn published(p: &Path) -> String {
    let dir = p.join("target/out/people");
    query_csv(
        p,
        &format!(
            "SELECT id, name_upper, name, country FROM '{}/' ORDER BY id",
            dir.display()
        ),
    )
}

#[test]
fn run_publishes_checked_partitioned_output() {
    let p = delivery_project();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("2 models: 2 ok, 0 failed checks, 0 errors, 0 skipped"),
        "{}",
        r.stderr
    );
    // cy is on the erasure list: never published.
    assert_eq!(
        published(p.path()),
        "id,name_upper,name,country\n1,ANN,ann,KR\n2,BOB,bob,US\n4,DEE,dee,JP\n"
    );
    let out = p.path().join("target/out/people");
    assert!(out.join("country=KR").is_dir() && out.join("_SUCCESS").exists());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_sluice.json")).unwrap()).unwrap();
    assert_eq!(manifest["rows"], 3);
    assert_eq!(manifest["model"], "delivery");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let delivery = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "delivery")
        .unwrap();
    assert_eq!(delivery["status"], "success");
    assert_eq!(delivery["rows"], 3);
    assert_eq!(delivery["checks"].as_array().unwrap().len(), 4);
    // The published model is a table in the shell.
    assert_eq!(
        query_csv(p.path(), "SELECT count(*) AS n FROM delivery"),
        "n\n3\n"
    );
}

#[test]
fn failing_check_exits_3_and_keeps_the_previous_output() {
    let p = delivery_project();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let out = p.path().join("target/out/people");
    let before = snapshot(&out);
    // A duplicate id with a different name, and a country outside the accepted list.
    std::fs::write(
        p.path().join("data/people.csv"),
        format!("{PEOPLE}1,ann2,KR\n5,eve,FR\n"),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("check unique(id) fail: 1 duplicated values; e.g. 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "check accepted_values(country) fail: 1 rows have values not in the accepted list; e.g. FR"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("error: model `delivery`: check failed: unique(id), accepted_values(country), volume; nothing published"), "{}", r.stderr);
    assert_eq!(
        snapshot(&out),
        before,
        "published files must be byte-identical"
    );
    assert!(
        std::fs::read_dir(p.path().join("target/.staging"))
            .unwrap()
            .next()
            .is_none(),
        "staging cleaned"
    );
}

#[test]
fn volume_check_trips_on_a_big_change() {
    let p = delivery_project();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name,country\n1,ann,KR\n",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains(
            "check volume fail: 1 rows vs 3 published (66.7% change, at most 50% allowed)"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn failing_query_exits_1_naming_model_and_column() {
    let p = project(&[
        ("sluice.toml", TOML),
        ("data/people.csv", PEOPLE),
        (
            "models/broken.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT id, surname FROM people\n",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("models/broken.sql:4:12: Schema error: No field named surname"),
        "{}",
        r.stderr
    );
}

#[test]
fn cycles_and_unknown_tables_are_reported_before_running() {
    let p = project(&[
        ("sluice.toml", TOML),
        ("models/a.sql", "SELECT * FROM b"),
        ("models/b.sql", "SELECT * FROM a"),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("models form a cycle: a -> b -> a")
            || r.stderr.contains("models form a cycle: b -> a -> b"),
        "{}",
        r.stderr
    );
    assert!(!p.path().join("target").exists(), "nothing ran");
    let p = project(&[
        ("sluice.toml", TOML),
        ("models/a.sql", "SELECT * FROM peeple"),
    ]);
    let r = run(p.path(), &["plan"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "models/a.sql:1:15: reads `peeple`, which is neither a model nor a source in sluice.toml; did you mean `people`?"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_model_config_names_file_line_and_key() {
    let p = project(&[
        ("sluice.toml", TOML),
        (
            "models/a.sql",
            "/* @config\nmaterialized = \"tabel\"\n*/\nSELECT 1 AS x",
        ),
    ]);
    let r = run(p.path(), &["plan"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("models/a.sql:2: key `materialized`: unknown variant `tabel`"),
        "{}",
        r.stderr
    );
}

#[test]
fn plan_shows_order_sql_and_vars_and_select_works() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n[vars]\nmin_id = \"2\"\n",
        ),
        ("data/people.csv", PEOPLE),
        ("models/a.sql", "SELECT * FROM people WHERE id >= ${min_id}"),
        (
            "models/b.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT count(*) AS n FROM a",
        ),
    ]);
    let r = run(p.path(), &["plan", "--var", "min_id=3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let target = p.path().join("target/b").display().to_string();
    assert_eq!(
        r.stdout,
        format!("1. a [a.sql] view\n   reads: people\n   | SELECT * FROM people WHERE id >= 3\n2. b [b.sql] table -> {target} (parquet)\n   reads: a\n   | SELECT count(*) AS n FROM a\n")
    );
    let r = run(p.path(), &["run", "--select", "b"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(query_csv(p.path(), "SELECT n FROM b"), "n\n3\n");
    let r = run(p.path(), &["run", "--select", "nope"]);
    assert_eq!(r.code, 2);
}

#[test]
fn example_project_runs_with_every_check_passing() {
    let src = repo_root().join("sql");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path());
    let _ = std::fs::remove_dir_all(dir.path().join("target"));
    let r = run(dir.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("8 models: 8 ok, 0 failed checks, 0 errors, 0 skipped"),
        "{}",
        r.stderr
    );
    // Erased emails never reach the delivery.
    let leaked = query_csv(dir.path(), "SELECT count(*) AS n FROM eda_launch_events d JOIN erased_emails e ON d.email_sha256 = e.email_sha256");
    assert_eq!(leaked, "n\n0\n");
    // Every event of a migrated overseas account carries the same shared id as its new account.
    let split = query_csv(dir.path(), "SELECT count(*) AS n FROM (SELECT l.shared_id FROM account_links l GROUP BY l.shared_id HAVING count(DISTINCT l.group_size) > 1)");
    assert_eq!(split, "n\n0\n");
    // The incremental model merges by key: a second run replaces the days it sees again.
    let combos = query_csv(dir.path(), "SELECT count(*) AS n FROM (SELECT DISTINCT CAST(event_ts AS DATE), country, platform FROM eda_launch_events)");
    let r = run(dir.path(), &["run", "--select", "daily_activity"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        query_csv(dir.path(), "SELECT count(*) AS n FROM daily_activity"),
        combos
    );
    // And every check passes again on what is published.
    let r = run(dir.path(), &["test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("0 failed, 0 errors"), "{}", r.stderr);
}

#[test]
fn killed_runs_never_leave_a_partial_published_output() {
    let p = delivery_project();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let expected = published(p.path());
    // Kill runs at moments spread over a run's life (it takes a few hundred ms here).
    for i in 0..12u64 {
        let mut child = sluice()
            .arg("--project")
            .arg(p.path())
            .arg("run")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(i * 37 % 400));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever moment the kill hit, the published folder is complete and readable.
        assert_eq!(
            published(p.path()),
            expected,
            "after a kill at iteration {i}"
        );
        let manifest =
            std::fs::read_to_string(p.path().join("target/out/people/_sluice.json")).unwrap();
        assert!(manifest.contains("\"rows\": 3"), "{manifest}");
    }
    // The next run cleans what the killed ones left in staging and publishes normally.
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read_dir(p.path().join("target/.staging"))
        .unwrap()
        .next()
        .is_none());
}

const EVENTS_TOML: &str = "[sources.events]\nlocation = \"data/events.csv\"\n";

fn events_rows(p: &Path, table: &str) -> String {
    query_csv(p, &format!("SELECT id, ts, v FROM {table} ORDER BY id, ts"))
}

#[test]
fn incremental_watermark_adds_only_rows_above_the_published_maximum() {
    let model = "/* @config\nmaterialized = \"incremental\"\nwatermark = \"ts\"\nformat = \"csv\"\n[columns.id]\nchecks = [\"not_null\"]\n*/\nSELECT id, ts, v FROM events\n";
    let p = project(&[
        ("sluice.toml", EVENTS_TOML),
        ("data/events.csv", "id,ts,v\n1,10,a\n2,20,b\n"),
        ("models/events_log.sql", model),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        events_rows(p.path(), "events_log"),
        "id,ts,v\n1,10,a\n2,20,b\n"
    );
    let r = run(p.path(), &["plan"]);
    assert!(
        r.stdout
            .contains("1. events_log [events_log.sql] incremental -> ")
            && r.stdout
                .contains("\n   this run: append the rows above the published max(ts)\n"),
        "{}",
        r.stdout
    );
    // Row 2 changed in the source (below the watermark: not picked up); 3 and 4 are new.
    std::fs::write(
        p.path().join("data/events.csv"),
        "id,ts,v\n1,10,a\n2,20,CHANGED\n3,30,c\n4,40,d\n",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("4 rows, 2 files"), "{}", r.stderr);
    assert!(r.stderr.contains("(2 new rows)"), "{}", r.stderr);
    assert_eq!(
        events_rows(p.path(), "events_log"),
        "id,ts,v\n1,10,a\n2,20,b\n3,30,c\n4,40,d\n"
    );
    // Nothing new: the output is unchanged.
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("4 rows"), "{}", r.stderr);
    // --full-refresh rebuilds from the source.
    let r = run(p.path(), &["run", "--full-refresh"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        events_rows(p.path(), "events_log"),
        "id,ts,v\n1,10,a\n2,20,CHANGED\n3,30,c\n4,40,d\n"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/events_log/_sluice.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["rows"], 4);
}

#[test]
fn incremental_unique_key_replaces_rows_with_the_same_key() {
    let model = "/* @config\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n[columns.id]\nchecks = [\"unique\"]\n*/\nSELECT id, ts, v FROM events\n";
    let p = project(&[
        ("sluice.toml", EVENTS_TOML),
        ("data/events.csv", "id,ts,v\n1,10,a\n2,20,b\n3,30,c\n"),
        ("models/latest.sql", model),
    ]);
    // `sluice plan` says what the run will do, from what is published.
    let plan_says = |p: &Path| {
        let r = run(p, &["plan"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
            .lines()
            .find(|l| l.starts_with("   this run: "))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        plan_says(p.path()),
        "   this run: full build (nothing published yet)"
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        plan_says(p.path()),
        "   this run: merge on (id) with the published rows"
    );
    // 2 changes, 3 leaves the source (kept), 4 arrives.
    std::fs::write(
        p.path().join("data/events.csv"),
        "id,ts,v\n1,10,a\n2,25,b2\n4,40,d\n",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        events_rows(p.path(), "latest"),
        "id,ts,v\n1,10,a\n2,25,b2\n3,30,c\n4,40,d\n"
    );
}

#[test]
fn incremental_model_without_watermark_or_key_is_a_config_error() {
    let p = project(&[
        ("sluice.toml", EVENTS_TOML),
        ("data/events.csv", "id,ts,v\n1,10,a\n"),
        (
            "models/bad.sql",
            "/* @config\nmaterialized = \"incremental\"\n*/\nSELECT * FROM events\n",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "bad.sql:2: key `materialized`: an incremental model needs `watermark = \"column\"`"
        ),
        "{}",
        r.stderr
    );
}

fn two_outputs_project() -> tempfile::TempDir {
    project(&[
        ("sluice.toml", TOML),
        ("data/people.csv", PEOPLE),
        ("data/erase.csv", "name\ncy\n"),
        (
            "models/good.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id, name FROM people\n",
        ),
        (
            "models/also_good.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id FROM good\n",
        ),
        (
            "models/strict.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n[columns.country]\nchecks = [{ accepted_values = [\"KR\", \"US\"] }]\n*/\nSELECT id, country FROM people\n",
        ),
    ])
}

#[test]
fn all_or_nothing_publishes_nothing_when_one_model_fails() {
    let p = two_outputs_project();
    let r = run(p.path(), &["run", "--all-or-nothing"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("--all-or-nothing: nothing published"),
        "{}",
        r.stderr
    );
    for m in ["good", "also_good", "strict"] {
        assert!(!p.path().join("target").join(m).exists(), "{m} published");
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let status = |name: &str| {
        results["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| {
                (
                    r["status"].as_str().unwrap().to_string(),
                    r["message"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    assert_eq!(status("strict").0, "fail");
    assert_eq!(
        status("good"),
        (
            "skipped".to_string(),
            "built and checked, not published: another model failed (--all-or-nothing)".to_string()
        )
    );
    // Nothing is left in staging either.
    assert_eq!(
        std::fs::read_dir(p.path().join("target/.staging"))
            .unwrap()
            .count(),
        0
    );
    // Without the flag the good models publish and the failing one does not; with it and
    // every check passing, all publish (also_good read good's staged output).
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(p.path().join("target/good/_SUCCESS").exists());
    assert!(!p.path().join("target/strict").exists());
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name,country\n1,ann,KR\n2,bob,US\n7,eve,US\n",
    )
    .unwrap();
    let r = run(p.path(), &["run", "--all-or-nothing", "--threads", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("--all-or-nothing: published"),
        "{}",
        r.stderr
    );
    assert_eq!(
        query_csv(p.path(), "SELECT id FROM also_good ORDER BY id"),
        "id\n1\n2\n7\n"
    );
}

#[test]
fn sluice_test_rechecks_what_is_published() {
    let p = project(&[
        ("sluice.toml", "[sources.codes]\nlocation = \"data/codes.csv\"\n[sources.people]\nlocation = \"data/people.csv\"\n"),
        ("data/codes.csv", "code\nKR\nUS\nJP\n"),
        ("data/people.csv", PEOPLE),
        (
            "models/out.sql",
            "/* @config\nmaterialized = \"table\"\n[columns.country]\nchecks = [{ relationships = \"codes.code\" }, \"not_null\"]\n*/\nSELECT id, country FROM people\n",
        ),
    ]);
    let r = run(p.path(), &["test"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("model `out`: nothing published at"),
        "{}",
        r.stderr
    );
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let r = run(p.path(), &["test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("1 models, 2 checks: 1 passed, 0 failed, 0 errors"),
        "{}",
        r.stderr
    );
    // The reference list loses JP: the published output now fails, and stays as it was.
    let before = snapshot(&p.path().join("target/out"));
    std::fs::write(p.path().join("data/codes.csv"), "code\nKR\nUS\n").unwrap();
    let r = run(p.path(), &["test"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "check relationships(country) fail: 1 values have no match in codes.code; e.g. JP"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&p.path().join("target/out")), before);
    assert!(p.path().join("target/test_results.json").exists());
}

/// A webhook on loopback that records one request's body.
fn webhook() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hooks/sluice?token=s3cret",
        listener.local_addr().unwrap().port()
    );
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        format!("{}{}", request_line, String::from_utf8(body).unwrap())
    });
    (url, handle)
}

#[test]
fn notify_posts_the_run_results_when_the_run_fails() {
    let p = two_outputs_project();
    let (url, hook) = webhook();
    let r = run(p.path(), &["run", "--notify", &url]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("notified the webhook (HTTP 200)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    let request = hook.join().unwrap();
    let (line, body) = request.split_once('\n').unwrap();
    assert!(
        line.starts_with("POST /hooks/sluice?token=s3cret "),
        "{line}"
    );
    let results: serde_json::Value = serde_json::from_str(body).unwrap();
    let strict = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "strict")
        .unwrap();
    assert_eq!(strict["status"], "fail");
    assert_eq!(strict["checks"][0]["samples"][0], "JP");
}

#[test]
fn notify_to_an_unreachable_webhook_warns_without_the_token() {
    let p = two_outputs_project();
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook?token=s3cret");
    let r = run(p.path(), &["run", "--notify", &url]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("warning: notify http://127.0.0.1:{port}/hook:")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
}

#[test]
fn parquet_outputs_use_128k_row_groups_and_dictionaries_only_where_they_pay() {
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let p = project(&[
        ("sluice.toml", "[project]\nname = \"groups\"\n"),
        (
            "models/numbers.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT value AS n, value % 10 AS digit FROM range(1200000)",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // DataFusion spreads an unpartitioned output over a few files; in each, every row group
    // but the last is full.
    let mut total = 0;
    for entry in std::fs::read_dir(p.path().join("target/numbers")).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let groups = reader.metadata().row_groups();
        let rows: Vec<i64> = groups.iter().map(|g| g.num_rows()).collect();
        let (last, full) = rows.split_last().unwrap();
        assert!(
            full.iter().all(|&n| n == 131072) && *last <= 131072,
            "{file:?}: {rows:?}"
        );
        total += rows.iter().sum::<i64>();
        // Unique ids (distinct in the first rows written) get no dictionary at all, in any
        // row group; ten digits stay dictionary-encoded throughout.
        let pages = |column: usize| *groups[0].column(column).page_encoding_stats_mask().unwrap();
        assert!(pages(0).is_set(Encoding::PLAIN), "{file:?}");
        assert!(
            groups
                .iter()
                .all(|g| g.column(0).dictionary_page_offset().is_none()),
            "{file:?}"
        );
        assert!(pages(1).is_only(Encoding::RLE_DICTIONARY), "{file:?}");
    }
    assert_eq!(total, 1200000);
}

/// Every column chunk of every row group of the Parquet files directly in `dir`.
fn for_each_column_chunk(
    dir: &std::path::Path,
    mut f: impl FnMut(&std::path::Path, &datafusion::parquet::file::metadata::ColumnChunkMetaData),
) {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                f(&file, column);
            }
        }
    }
}

/// Hex digests gain nothing from snappy and are stored uncompressed, wherever in the query
/// they were computed, without a dictionary or min/max; other columns keep the codec. A
/// codec with an entropy stage (zstd) shortens hex, so under it every column is compressed.
#[test]
fn digest_columns_skip_lz_compression_only() {
    use datafusion::parquet::basic::Compression;
    let model = |name: &str, compression: &str| {
        (
            format!("models/{name}.sql"),
            format!(
                "/* @config\nmaterialized = \"table\"\n{compression}*/\n\
                 WITH keyed AS (SELECT value AS n, sha256_hex(CAST(value AS VARCHAR)) AS k FROM range(5000))\n\
                 SELECT n, k, md5(CAST(n AS VARCHAR)) AS m, upper(k) AS shouted FROM keyed WHERE n >= 0"
            ),
        )
    };
    let (snappy, zstd) = (
        model("snappy", ""),
        model("zstd", "compression = \"zstd(1)\"\n"),
    );
    let p = project(&[
        ("sluice.toml", "[project]\nname = \"digests\"\n"),
        (&snappy.0, &snappy.1),
        (&zstd.0, &zstd.1),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Digests are unique: no dictionary and no min/max, under either codec.
    let (mut digests, mut others) = (0, 0);
    for model in ["snappy", "zstd"] {
        for_each_column_chunk(&p.path().join("target").join(model), |file, column| {
            let name = column.column_path().string();
            if name == "k" || name == "m" {
                digests += 1;
                assert!(column.dictionary_page_offset().is_none(), "{name} {file:?}");
                assert!(
                    column
                        .statistics()
                        .is_none_or(|s| s.min_bytes_opt().is_none()),
                    "{name} {file:?}"
                );
            } else {
                others += 1;
                assert!(
                    column
                        .statistics()
                        .is_some_and(|s| s.min_bytes_opt().is_some()),
                    "{name} {file:?}"
                );
            }
        });
    }
    assert!(digests >= 4 && others >= 4, "{digests} {others}");
    let codecs = |model: &str| {
        let mut seen = std::collections::BTreeSet::new();
        for_each_column_chunk(&p.path().join("target").join(model), |_, column| {
            seen.insert((
                column.column_path().string(),
                format!("{:?}", column.compression()),
            ));
        });
        seen.into_iter().collect::<Vec<_>>()
    };
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(c, k)| (c.to_string(), k.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        codecs("snappy"),
        pairs(&[
            ("k", "UNCOMPRESSED"),
            ("m", "UNCOMPRESSED"),
            ("n", "SNAPPY"),
            ("shouted", "SNAPPY")
        ])
    );
    let zstd = format!("{:?}", Compression::ZSTD(Default::default()));
    let zstd = zstd.as_str();
    assert_eq!(
        codecs("zstd"),
        pairs(&[("k", zstd), ("m", zstd), ("n", zstd), ("shouted", zstd)])
    );
}

#[test]
fn a_model_named_like_a_source_is_an_error_naming_both() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", "id\n1\n"),
        (
            "models/people.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT 1 AS id\n",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "model `people` ({}): a source in sluice.toml has the same name ([sources.people]); rename the model or the source",
            p.path().join("models/people.sql").display()
        )),
        "{}",
        r.stderr
    );
}

/// A partitioned output is split in every partition of the query: one folder level per
/// column, the values' text escaped as a path part, one file per combination under one
/// name, and every row in the file of its own values. Rows of many values in each batch go
/// through the copy in partition order, rows of one value in a batch go as they are.
#[test]
fn partitioned_outputs_put_every_row_in_the_file_of_its_values() {
    let regions = ["eu", "us", "apac"];
    let cities = ["São Paulo", "Köln", "a b", "x%y", ""];
    let region = |i: u64| {
        if i % 1000 == 0 {
            ""
        } else {
            regions[(i % 3) as usize]
        }
    };
    let city = |i: u64| cities[((i / 7) % 5) as usize];
    let mut csv = String::from("id,region,city\n");
    let mut expected = std::collections::BTreeMap::new();
    for i in 1..=200_000u64 {
        csv.push_str(&format!("{i},{},{}\n", region(i), city(i)));
        let e = expected.entry((region(i), city(i))).or_insert((0u64, 0u64));
        e.0 += 1;
        e.1 += i;
    }
    let p = project(&[
        ("sluice.toml", "[sources.events]\nlocation = \"data/events.csv\"\n"),
        ("data/events.csv", &csv),
        (
            "models/by_place.sql",
            "/* @config\nmaterialized = \"table\"\nlocation = \"out/by_place\"\npartition_by = [\"region\", \"city\"]\n*/\nSELECT id, region, city, id * 2 AS twice FROM events\n",
        ),
        (
            "models/by_half.sql",
            "/* @config\nmaterialized = \"table\"\nlocation = \"out/by_half\"\npartition_by = [\"half\"]\n*/\nSELECT id, CASE WHEN id <= 100000 THEN 'low' ELSE 'high' END AS half FROM events\n",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let out = p.path().join("target/out/by_place");
    let mut folders = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for file in walk(&out) {
        let relative = file
            .strip_prefix(&out)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if let Some((folder, name)) = relative.rsplit_once('/') {
            assert!(name.ends_with(".parquet"), "{relative}");
            folders.push(folder.to_string());
            names.insert(name.to_string());
        }
    }
    folders.sort();
    let escaped = |c: &str| {
        c.replace('%', "%25")
            .replace('ö', "%C3%B6")
            .replace('ã', "%C3%A3")
    };
    let mut want: Vec<String> = expected
        .keys()
        .map(|(r, c)| format!("region={r}/city={}", escaped(c)))
        .collect();
    want.sort();
    assert_eq!(folders, want, "one file per pair of values");
    assert_eq!(names.len(), 1, "one name for the write's files: {names:?}");

    let mut rows = String::from("region,city,n,ids,twice\n");
    for ((r, c), (n, ids)) in &expected {
        rows.push_str(&format!("{r},{c},{n},{ids},{}\n", 2 * ids));
    }
    assert_eq!(
        query_csv(
            p.path(),
            &format!(
                "SELECT region, city, count(*) AS n, sum(id) AS ids, sum(twice) AS twice FROM '{}/' GROUP BY region, city ORDER BY region, city",
                out.display()
            ),
        ),
        rows
    );
    assert_eq!(
        query_csv(
            p.path(),
            &format!(
                "SELECT half, count(*) AS n, min(id) AS lo, max(id) AS hi FROM '{}/' GROUP BY half ORDER BY half",
                p.path().join("target/out/by_half").display()
            ),
        ),
        "half,n,lo,hi\nhigh,100000,100001,200000\nlow,100000,1,100000\n"
    );
}
