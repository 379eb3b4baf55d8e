//! `sluice erase` end to end: erasure requests that arrive after a publish are applied to
//! the published output in place, rewriting only the files that hold them.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// The delivery project of tests/fixtures/people, with six people.
const TOML: &str = include_str!("fixtures/people/sluice.toml");
const PEOPLE: &str = "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n4,dee,JP\n5,eve,KR\n6,fay,US\n";

fn erase_project() -> tempfile::TempDir {
    fixture("people", &[("data/people.csv", PEOPLE)])
}

fn published(p: &Path) -> String {
    query_csv(
        p,
        "SELECT id, name_upper, name, country FROM delivery ORDER BY id",
    )
}

/// Data files of one partition folder: name -> (inode, bytes).
fn partition_files(p: &Path, partition: &str) -> Vec<(String, u64, Vec<u8>)> {
    let dir = p.join("target/out/people").join(partition);
    let mut out: Vec<_> = walk(&dir)
        .into_iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::metadata(&f).unwrap().ino(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn erase_rewrites_only_the_partition_that_holds_a_listed_key() {
    let p = erase_project();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(p.path()),
        "id,name_upper,name,country\n1,ANN,ann,KR\n2,BOB,bob,US\n4,DEE,dee,JP\n5,EVE,eve,KR\n6,FAY,fay,US\n"
    );
    let us = partition_files(p.path(), "country=US");
    let jp = partition_files(p.path(), "country=JP");
    let kr = partition_files(p.path(), "country=KR");
    assert!(!us.is_empty() && !jp.is_empty() && !kr.is_empty());

    // A deletion request for ann arrives after the publish.
    std::fs::write(p.path().join("data/erase.csv"), "name\ncy\nann\n").unwrap();
    let r = run(p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("delivery")
            && r.stderr
                .contains("removed 1 rows: rewrote 1 of 3 files (country=KR/"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("kept 2 as they were"), "{}", r.stderr);
    assert_eq!(
        published(p.path()),
        "id,name_upper,name,country\n2,BOB,bob,US\n4,DEE,dee,JP\n5,EVE,eve,KR\n6,FAY,fay,US\n"
    );
    // The other partitions' files are the very same files (same inode, same bytes).
    assert_eq!(partition_files(p.path(), "country=US"), us);
    assert_eq!(partition_files(p.path(), "country=JP"), jp);
    assert_ne!(partition_files(p.path(), "country=KR"), kr);
    let out = p.path().join("target/out/people");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_sluice.json")).unwrap()).unwrap();
    assert_eq!(manifest["rows"], 4);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 3);

    // Recorded: the run history has the erase line, erase_results.json the model.
    let history = std::fs::read_to_string(p.path().join("target/run_history.jsonl")).unwrap();
    let erased: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["action"] == "erase")
        .collect();
    assert_eq!(erased.len(), 1, "{history}");
    assert_eq!(erased[0]["model"], "delivery");
    assert_eq!(erased[0]["erased_rows"], 1);
    assert!(erased[0]["rewritten_files"][0]
        .as_str()
        .unwrap()
        .starts_with("country=KR/"));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/erase_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["results"][0]["status"], "success");
    assert_eq!(results["results"][0]["rows"], 4);

    // Idempotent: nothing matches now, nothing is written.
    let before = snapshot(&out);
    let r = run(p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("nothing to erase (3 files checked)"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), before);
}

#[test]
fn erase_that_fails_a_check_publishes_nothing() {
    let p = erase_project();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    let out = p.path().join("target/out/people");
    let before = snapshot(&out);
    // Four of five rows at once: more than the volume check's 50%.
    std::fs::write(
        p.path().join("data/erase.csv"),
        "name\nann\nbob\ndee\neve\n",
    )
    .unwrap();
    let r = run(p.path(), &["erase"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("check volume fail"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("4 listed rows stay published until the check passes"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&out), before);
    assert!(std::fs::read_dir(p.path().join("target/.staging"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));
}

#[test]
fn erase_without_a_published_output_or_list_says_so() {
    let p = erase_project();
    let r = run(p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("nothing published at"), "{}", r.stderr);
    let q = project(&[
        ("sluice.toml", TOML),
        ("data/people.csv", PEOPLE),
        ("data/erase.csv", "name\n"),
        (
            "models/plain.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT * FROM people\n",
        ),
    ]);
    let r = run(q.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no published model names an erasure list"),
        "{}",
        r.stderr
    );
}
