//! `sluice run` and `plan` end to end on temporary projects: published rows, checks that
//! block publishing, errors that name models, and the atomic publish.

mod common;
use common::*;
use std::path::Path;

const TOML: &str = "[sources.people]\nlocation = \"data/people.csv\"\n[sources.erase]\nlocation = \"data/erase.csv\"\n";
const PEOPLE: &str = "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n4,dee,JP\n";

const DELIVERY: &str = r#"/* @config
materialized = "table"
location = "out/people"
partition_by = ["country"]
erasure = { list = "erase", column = "name" }
[columns.id]
checks = ["not_null", "unique"]
[columns.country]
checks = [{ accepted_values = ["KR", "US", "JP"] }]
[[checks]]
volume = { max_change_pct = 50 }
*/
SELECT id, upper(name) AS name_upper, name, country FROM stg_people
"#;

const STAGING: &str =
    "/* @config\nmaterialized = \"view\"\n*/\nSELECT DISTINCT id, name, country FROM people\n";

fn delivery_project() -> tempfile::TempDir {
    project(&[
        ("sluice.toml", TOML),
        ("data/people.csv", PEOPLE),
        ("data/erase.csv", "name\ncy\n"),
        ("models/staging/stg_people.sql", STAGING),
        ("models/delivery.sql", DELIVERY),
    ])
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

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.push((
            entry.strip_prefix(dir).unwrap().display().to_string(),
            std::fs::read(&entry).unwrap(),
        ));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
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
            "check accepted_values(country) fail: 1 values not in the accepted list; e.g. FR"
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
    assert!(r.stderr.contains("check volume fail: 1 rows vs 3 in the last successful run (66.7% change, at most 50% allowed)"), "{}", r.stderr);
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
    assert!(r.stderr.contains("error: model `broken` ("), "{}", r.stderr);
    assert!(r.stderr.contains("No field named surname"), "{}", r.stderr);
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
        r.stderr.contains("model `a`")
            && r.stderr
                .contains("reads `peeple`, which is neither a model nor a source"),
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
            .contains("6 models: 6 ok, 0 failed checks, 0 errors, 0 skipped"),
        "{}",
        r.stderr
    );
    // Erased emails never reach the delivery.
    let leaked = query_csv(dir.path(), "SELECT count(*) AS n FROM eda_launch_events d JOIN erased_emails e ON d.email_sha256 = e.email_sha256");
    assert_eq!(leaked, "n\n0\n");
    // Every event of a migrated overseas account carries the same shared id as its new account.
    let split = query_csv(dir.path(), "SELECT count(*) AS n FROM (SELECT l.shared_id FROM account_links l GROUP BY l.shared_id HAVING count(DISTINCT l.group_size) > 1)");
    assert_eq!(split, "n\n0\n");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            if p.file_name().unwrap() != "target" {
                copy_dir(&p, &dest);
            }
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
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
