//! `sluice diff`: a model's fresh result against what is published (or another location),
//! on data with known differences: counts, per-column changes, examples, JSON, exit codes.

mod common;
use common::*;

const PEOPLE: &str = "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n4,dee,JP\n";

fn published_project() -> tempfile::TempDir {
    let p = project(&[
        ("sluice.toml", "[sources.people]\nlocation = \"data/people.csv\"\n"),
        ("data/people.csv", PEOPLE),
        (
            "models/people_out.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id, name, country FROM people\n",
        ),
    ]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The data changes after the publish: bob renamed and moved, cy gone, eve new.
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name,country\n1,ann,KR\n2,rob,KR\n4,dee,JP\n5,eve,US\n",
    )
    .unwrap();
    p
}

#[test]
fn a_fresh_build_against_the_published_output() {
    let p = published_project();
    let r = run(p.path(), &["diff", "people_out", "--key", "id"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let published = p.path().join("target/people_out/");
    assert_eq!(
        r.stdout,
        format!(
            "people_out by id: left fresh build (4 rows), right {} (4 rows)\nonly left: 1, only right: 1, changed: 1, unchanged: 2\nchanged columns: name 1, country 1\n  only left   id=5\n  only right  id=3\n  changed     id=2: name rob -> bob; country KR -> US\n",
            published.display()
        )
    );
    let r = run(
        p.path(),
        &["diff", "people_out", "--key", "id", "--format", "json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (
            &j["left_rows"],
            &j["right_rows"],
            &j["only_left"],
            &j["only_right"],
            &j["changed"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(4),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );
    assert_eq!(j["columns"], serde_json::json!({"name": 1, "country": 1}));
    // Nothing was written or published by the diff.
    assert!(query_csv(p.path(), "SELECT name FROM people_out WHERE id = 2").contains("bob"));
    let r = run(
        p.path(),
        &["diff", "people_out", "--key", "id", "--fail-on-change"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r
        .stderr
        .contains("error: model `people_out`: the left side differs from"));
}

#[test]
fn two_stored_locations_and_clear_errors() {
    let p = published_project();
    let before = p.path().join("before");
    copy_dir(&p.path().join("target/people_out"), &before);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = p.path().join("target/people_out");
    let r = run(
        p.path(),
        &[
            "diff",
            "people_out",
            "--key",
            "id",
            "--left",
            after.to_str().unwrap(),
            "--against",
            before.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["only_left"], 1);
    assert_eq!(j["only_right"], 1);
    assert_eq!(j["changed"], 1);
    // The fresh build equals what was just published.
    let r = run(
        p.path(),
        &["diff", "people_out", "--key", "id", "--fail-on-change"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r
        .stdout
        .contains("only left: 0, only right: 0, changed: 0, unchanged: 4"));

    let r = run(p.path(), &["diff", "people_out", "--key", "nmae"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(
            "--key nmae: the left side has no column `nmae` (its columns: id, name, country)"
        ),
        "{}",
        r.stderr
    );
    let r = run(p.path(), &["diff", "people_out", "--key", "country"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("--key country: 1 key values appear more than once on the left side"),
        "{}",
        r.stderr
    );
    let r = run(p.path(), &["diff", "peple_out", "--key", "id"]);
    assert!(r
        .stderr
        .contains("no model named `peple_out`; did you mean `people_out`?"));
}
