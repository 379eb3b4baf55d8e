//! The promises of `sluice run` where deliveries are deployed: checks that compare with what
//! is published (not with a local history a fresh checkout lacks), errors instead of silent
//! zeros, model errors at the file's line and column, the fallback publish protocol under
//! SIGKILL, `--all-or-nothing` rolled back when a publish fails, and NDJSON folders.

mod common;
use common::*;
use std::path::Path;

const PEOPLE: &str = "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n4,dee,JP\n5,eve,US\n6,fay,KR\n7,gus,US\n8,hal,JP\n9,ida,KR\n10,jo,US\n";

/// A project whose model publishes to `out` (an absolute folder shared by checkouts).
fn shared_output_project(out: &Path, checks: &str) -> tempfile::TempDir {
    project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", PEOPLE),
        (
            "models/delivery.sql",
            &format!(
                "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\nlocation = \"{}\"\n{checks}*/\nSELECT id, name, country FROM people\n",
                out.display()
            ),
        ),
    ])
}

const VOLUME_AND_SCHEMA: &str =
    "[[checks]]\nvolume = { max_change_pct = 50 }\n[[checks]]\nschema = \"locked\"\n";

fn check<'a>(results: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    results["results"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {results}"))
}

fn run_results(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p.join("target/run_results.json")).unwrap())
        .unwrap()
}

#[test]
fn a_fresh_checkout_compares_volume_and_schema_with_the_published_manifest() {
    let shared = tempfile::tempdir().unwrap();
    let out = shared.path().join("delivery");
    let first = shared_output_project(&out, VOLUME_AND_SCHEMA);
    let r = run(first.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The first publish had nothing to compare with, and says so.
    let results = run_results(first.path());
    assert_eq!(
        check(&results, "volume")["message"],
        "no baseline: nothing published and no run history to compare with; nothing compared"
    );
    let published = snapshot(&out);

    // A second checkout (no target/, no history) with 90% of the rows gone.
    let second = shared_output_project(&out, VOLUME_AND_SCHEMA);
    std::fs::write(
        second.path().join("data/people.csv"),
        "id,name,country\n1,ann,KR\n",
    )
    .unwrap();
    let r = run(second.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "check volume fail: 1 rows vs 10 published (90.0% change, at most 50% allowed)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), published, "the published output changed");
    let results = run_results(second.path());
    assert_eq!(
        check(&results, "volume")["baseline"],
        out.join("_sluice.json").display().to_string()
    );

    // A dropped column fails the locked schema, again without any local history.
    let third = shared_output_project(&out, VOLUME_AND_SCHEMA);
    let model = third.path().join("models/delivery.sql");
    let text = std::fs::read_to_string(&model)
        .unwrap()
        .replace("SELECT id, name, country", "SELECT id, name");
    std::fs::write(&model, text).unwrap();
    let r = run(third.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("check schema fail: column country removed"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), published);
}

#[test]
fn require_baseline_fails_a_first_publish_instead_of_passing_unchecked() {
    let shared = tempfile::tempdir().unwrap();
    let out = shared.path().join("delivery");
    let p = shared_output_project(&out, VOLUME_AND_SCHEMA);
    let r = run(p.path(), &["run", "--require-baseline"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "check volume fail: no baseline: nothing published and no run history to compare with (a baseline is required)"
        ),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "nothing is published unchecked");
    // The same per check: `require_baseline = true` on the volume check only.
    let p = shared_output_project(
        &out,
        "[[checks]]\nvolume = { max_change_pct = 50 }\nrequire_baseline = true\n",
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!out.exists());
    // Once something is published (a run without the option), the baseline exists.
    let p = shared_output_project(&out, VOLUME_AND_SCHEMA);
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let r = run(p.path(), &["run", "--require-baseline"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

const EVENTS_TOML: &str = "[sources.events]\nlocation = \"data/events.csv\"\n";
const INCREMENTAL: &str = "/* @config\nmaterialized = \"incremental\"\nwatermark = \"ts\"\nformat = \"csv\"\n*/\nSELECT id, ts FROM events\n";

#[test]
fn broken_manifests_and_histories_are_errors_that_name_the_file() {
    let p = project(&[
        ("sluice.toml", EVENTS_TOML),
        ("data/events.csv", "id,ts\n1,10\n2,20\n"),
        ("models/log.sql", INCREMENTAL),
    ]);
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let out = p.path().join("target/log");
    let manifest_path = out.join("_sluice.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let published = snapshot(&out);

    // A malformed `files` list: an append must not take it as "no published files".
    let mut broken: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    broken["files"] = serde_json::json!("not a list");
    std::fs::write(&manifest_path, broken.to_string()).unwrap();
    let broken_snapshot = snapshot(&out);
    std::fs::write(
        p.path().join("data/events.csv"),
        "id,ts\n1,10\n2,20\n3,30\n",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}: the manifest's `files` is malformed",
            manifest_path.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), broken_snapshot);

    // No manifest at all next to published files: not a silent rebuild from the sources.
    std::fs::remove_file(&manifest_path).unwrap();
    std::fs::remove_file(out.join("_SUCCESS")).unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} holds files but no manifest ({}), so its published rows are unknown; restore the manifest, or rebuild from the sources with --full-refresh",
            out.display(),
            manifest_path.display()
        )),
        "{}",
        r.stderr
    );
    std::fs::write(&manifest_path, &manifest).unwrap();
    std::fs::write(out.join("_SUCCESS"), "").unwrap();
    assert_eq!(snapshot(&out), published);

    // A history line that is not a record.
    let history = p.path().join("target/run_history.jsonl");
    let mut text = std::fs::read_to_string(&history).unwrap();
    text.push_str("{\"run_id\": \"cut off\n");
    std::fs::write(&history, text).unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:2: not a run history record",
            history.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), published);
}

#[test]
fn model_errors_point_at_the_line_and_column_of_the_file() {
    let model = "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\n-- people by country\nSELECT id,\n       contry\nFROM people\n";
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", PEOPLE),
        ("models/by_country.sql", model),
    ]);
    let file = p.path().join("models/by_country.sql");
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:7:8: Schema error: No field named contry. Did you mean 'people.country'?",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("   7 |        contry\n     |        ^"),
        "{}",
        r.stderr
    );

    // A parse error, counted from the top of the file (the config block included).
    std::fs::write(
        &file,
        "/* @config\nmaterialized = \"table\"\n*/\nSELECT id\nFORM people\n",
    )
    .unwrap();
    let r = run(p.path(), &["plan"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:5:6: syntax error: Expected: end of statement, found: people\n",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("   5 | FORM people\n     |      ^"),
        "{}",
        r.stderr
    );

    // An unknown table: where it is named, and the closest known name.
    std::fs::write(
        &file,
        "/* @config\nmaterialized = \"table\"\n*/\nSELECT id\nFROM peple\n",
    )
    .unwrap();
    let r = run(p.path(), &["plan"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:5:6: reads `peple`, which is neither a model nor a source in sluice.toml; did you mean `people`?\n   5 | FROM peple\n     |      ^",
            file.display()
        )),
        "{}",
        r.stderr
    );

    // Behind an erasure filter the position is still the file's.
    std::fs::write(
        &file,
        "/* @config\nmaterialized = \"table\"\nerasure = { list = \"people\", column = \"id\" }\n*/\nSELECT idd FROM people\n",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:5:8: Schema error: No field named idd",
            file.display()
        )),
        "{}",
        r.stderr
    );
}

fn two_versions_project() -> tempfile::TempDir {
    project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", PEOPLE),
        (
            "models/delivery.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\npartition_by = [\"country\"]\n*/\nSELECT id, name, country FROM people\n",
        ),
    ])
}

fn delivery_rows(p: &Path) -> String {
    query_csv(p, "SELECT count(*) AS n, sum(id) AS s FROM delivery")
}

#[test]
fn the_pointer_protocol_survives_sigkill_at_every_step() {
    let p = two_versions_project();
    let env = [("SLUICE_PUBLISH", "pointer")];
    let r = run_env(p.path(), &["run"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let location = p.path().join("target/delivery");
    assert!(std::fs::symlink_metadata(&location)
        .unwrap()
        .file_type()
        .is_symlink());
    let old = delivery_rows(p.path());
    assert_eq!(old, "n,s\n10,55\n");
    std::fs::write(
        p.path().join("data/people.csv"),
        format!("{PEOPLE}11,kim,KR\n"),
    )
    .unwrap();
    let new = "n,s\n11,66\n";
    // Each step of the protocol pauses 60 ms; kills land before, between and after them.
    let mut seen_new = false;
    for i in 0..16u64 {
        let mut child = sluice()
            .arg("--project")
            .arg(p.path())
            .arg("run")
            .env("SLUICE_PUBLISH", "pointer")
            .env("SLUICE_TEST_PUBLISH_PAUSE_MS", "60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + i * 23));
        child.kill().unwrap();
        child.wait().unwrap();
        // Readers find the old or the new output, complete, without any recovery first.
        let rows = delivery_rows(p.path());
        assert!(rows == old || rows == new, "after a kill at {i}: {rows}");
        seen_new |= rows == new;
        // Put the old version back for the next kill (a normal pointer publish).
        if rows == new {
            std::fs::write(p.path().join("data/people.csv"), PEOPLE).unwrap();
            assert_eq!(run_env(p.path(), &["run"], &env).code, 0);
            std::fs::write(
                p.path().join("data/people.csv"),
                format!("{PEOPLE}11,kim,KR\n"),
            )
            .unwrap();
        }
    }
    assert!(
        seen_new,
        "no kill landed after the publish; the test did not test"
    );
    // The next run removes versions no link points to and publishes normally.
    let r = run_env(p.path(), &["run"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(delivery_rows(p.path()), new);
    let versions = std::fs::read_dir(p.path().join("target"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".delivery.sluice-")
        })
        .count();
    assert_eq!(versions, 1, "only the published version is kept");
}

#[test]
fn a_plain_folder_moves_to_the_pointer_protocol_and_recovers_from_a_kill_in_between() {
    let p = two_versions_project();
    let people = p.path().join("data/people.csv");
    let journal = p.path().join("target/.delivery.sluice-publish.json");
    let (mut saw_gap, mut saw_new) = (false, false);
    for i in 0..14u64 {
        // A plain published folder (the exchange protocol), then new rows.
        std::fs::write(&people, PEOPLE).unwrap();
        let _ = std::fs::remove_dir_all(p.path().join("target"));
        assert_eq!(run(p.path(), &["run"]).code, 0);
        let old = delivery_rows(p.path());
        std::fs::write(&people, format!("{PEOPLE}11,kim,KR\n")).unwrap();
        let mut child = sluice()
            .arg("--project")
            .arg(p.path())
            .arg("run")
            .env("SLUICE_PUBLISH", "pointer")
            .env("SLUICE_TEST_PUBLISH_PAUSE_MS", "80")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120 + i * 40));
        child.kill().unwrap();
        child.wait().unwrap();
        // Killed between moving the folder aside and linking the new version: no output,
        // and the journal that says where the old one is.
        if journal.exists() && !p.path().join("target/delivery").exists() {
            saw_gap = true;
        }
        // Every command that publishes recovers first, before it reads anything: `erase`
        // (no erasure lists here, so it changes nothing else) puts a half-moved output back.
        let r = run(p.path(), &["erase"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!journal.exists());
        let rows = delivery_rows(p.path());
        assert!(
            rows == old || rows == "n,s\n11,66\n",
            "after a kill at {i}: {rows}"
        );
        saw_new |= rows != old;
        if saw_gap && saw_new {
            break;
        }
    }
    assert!(saw_gap, "no kill landed between the two renames");
    assert!(saw_new, "no kill landed after the publish");
}

#[test]
fn all_or_nothing_rolls_back_published_models_when_a_later_publish_fails() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", PEOPLE),
        (
            "models/a_first.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id, name FROM people\n",
        ),
        (
            "models/b_second.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id FROM a_first\n",
        ),
        (
            "models/c_third.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\nlocation = \"third\"\n*/\nSELECT count(*) AS n FROM b_second\n",
        ),
        // Published after c_third: never reached.
        (
            "models/d_fourth.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT n FROM c_third\n",
        ),
        // A view is never published: a failed publish does not change what it reports.
        (
            "models/people_kr.sql",
            "/* @config\nmaterialized = \"view\"\n*/\nSELECT id FROM people WHERE country = 'KR'\n",
        ),
    ]);
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let target = p.path().join("target");
    let before_first = snapshot(&target.join("a_first"));
    let before_second = snapshot(&target.join("b_second"));
    // The third model's publish fails: its location's folder is a file now.
    std::fs::write(
        p.path().join("models/c_third.sql"),
        "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\nlocation = \"blocked/third\"\n*/\nSELECT count(*) AS n FROM b_second\n",
    )
    .unwrap();
    std::fs::write(target.join("blocked"), "a file where a folder should be").unwrap();
    std::fs::write(
        p.path().join("data/people.csv"),
        format!("{PEOPLE}11,kim,KR\n"),
    )
    .unwrap();
    let r = run(p.path(), &["run", "--all-or-nothing", "--threads", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "--all-or-nothing: publishing `c_third` failed; 2 published model(s) rolled back, nothing changed"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&target.join("a_first")), before_first);
    assert_eq!(snapshot(&target.join("b_second")), before_second);
    let results = run_results(p.path());
    let first = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "a_first")
        .unwrap();
    assert_eq!(first["status"], "skipped");
    assert_eq!(
        first["message"],
        "published, then rolled back to the previous version: publishing `c_third` failed (--all-or-nothing)"
    );
    let result = |name: &str| {
        let r = results["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        (r["status"].clone(), r["message"].clone())
    };
    assert_eq!(
        result("d_fourth"),
        (
            "skipped".into(),
            "built and checked, not published: publishing `c_third` failed (--all-or-nothing)"
                .into()
        )
    );
    assert_eq!(result("people_kr").0, "success");
    // Nothing of the rolled-back versions is left behind.
    assert_eq!(
        std::fs::read_dir(target.join(".staging")).unwrap().count(),
        0
    );
}

#[test]
fn ndjson_folders_are_sources_and_ndjson_outputs_read_back() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.clicks]\nlocation = \"data/clicks\"\nformat = \"ndjson\"\n[sources.views]\nlocation = \"data/views\"\nformat = \"ndjson\"\n[sources.mixed]\nlocation = \"data/mixed\"\nformat = \"ndjson\"\n[sources.delivered]\nlocation = \"target/clicks_out\"\nformat = \"ndjson\"\n",
        ),
        (
            "data/clicks/day=1/a.ndjson",
            "{\"id\": 1, \"url\": \"/a\"}\n{\"id\": 2, \"url\": \"/b\"}\n",
        ),
        ("data/clicks/day=2/b.ndjson", "{\"id\": 3, \"url\": \"/c\"}\n"),
        ("data/clicks/_SUCCESS", ""),
        ("data/mixed/a.ndjson", "{\"id\": 1}\n"),
        ("data/mixed/b.jsonl", "{\"id\": 2}\n"),
        (
            "models/clicks_out.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"ndjson\"\n*/\nSELECT id, url, CAST(day AS BIGINT) AS day FROM clicks\n",
        ),
        (
            "models/click_count.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n[[checks]]\nrow_count = { min = 1 }\n*/\nSELECT count(*) AS n, sum(id) AS s FROM clicks_out\n",
        ),
    ]);
    // Gzipped JSON lines files in a folder of their own.
    let views = p.path().join("data/views");
    std::fs::create_dir_all(&views).unwrap();
    for (name, text) in [
        ("1.jsonl.gz", "{\"id\": 10}\n{\"id\": 11}\n"),
        ("2.jsonl.gz", "{\"id\": 12}\n"),
    ] {
        let mut gz = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        gz.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = gz.wait_with_output().unwrap();
        std::fs::write(views.join(name), out.stdout).unwrap();
    }
    assert_eq!(
        query_csv(p.path(), "SELECT day, id, url FROM clicks ORDER BY id"),
        "day,id,url\n1,1,/a\n1,2,/b\n2,3,/c\n"
    );
    assert_eq!(
        query_csv(p.path(), "SELECT sum(id) AS s FROM views"),
        "s\n33\n"
    );
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM mixed"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the folder mixes .ndjson and .jsonl files; one source reads one kind, so use a glob such as `*.ndjson`"),
        "{}",
        r.stderr
    );
    // An NDJSON output is read back by the next model, and by a source over the folder.
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        query_csv(p.path(), "SELECT n, s FROM click_count"),
        "n,s\n3,6\n"
    );
    assert_eq!(
        query_csv(p.path(), "SELECT id, url, day FROM delivered ORDER BY id"),
        "id,url,day\n1,/a,1\n2,/b,1\n3,/c,2\n"
    );
}
