//! Unit tests of models (`sluice test --unit`): fixtures in, expected rows out, no source
//! data, exact row diffs, inputs that must all be given, fixtures typed like the real input.

mod common;
use common::*;

const SOURCES: &str = "[sources.people]\nlocation = \"data/people.csv\"\nschema = { id = \"BIGINT\", name = \"VARCHAR\", age = \"INT\", joined = \"TIMESTAMP\" }\n\n[sources.countries]\nlocation = \"data/countries.csv\"\n";

const ADULTS: &str =
    "/* @config\nmaterialized = \"view\"\n\n[columns.id]\nchecks = [\"not_null\"]\n*/\nSELECT id, upper(name) AS name, age FROM people WHERE age >= 18\n";

fn people_project(tests: &str) -> tempfile::TempDir {
    project(&[
        ("sluice.toml", SOURCES),
        (
            "data/people.csv",
            "id,name,age,joined\n1,ann,30,2026-01-01 00:00:00\n",
        ),
        ("data/countries.csv", "code,name\nKR,Korea\n"),
        ("models/adults.sql", ADULTS),
        ("tests/adults.toml", tests),
    ])
}

#[test]
fn the_example_projects_unit_tests_pass_with_and_without_its_data() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("sql"), dir.path());
    std::fs::remove_dir_all(dir.path().join("target")).ok();
    let r = run(dir.path(), &["test", "--unit"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("8 unit tests: 8 passed, 0 failed, 0 errors"),
        "{}",
        r.stderr
    );
    for name in [
        "exporter_duplicates_collapse_and_legacy_ids_map_to_the_migrated_account",
        "a_legacy_id_and_its_migrated_account_share_one_id",
        "an_erasure_request_removes_the_events",
        "the_funnel_stops_at_a_skipped_step_and_at_the_window",
    ] {
        assert!(
            r.stderr.contains(&format!("unit ok    {name} (")),
            "{name}: {}",
            r.stderr
        );
    }
    // No data and nothing published: the tests still run, on their fixtures alone.
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let r = run(dir.path(), &["test", "--unit"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("8 unit tests: 8 passed"), "{}", r.stderr);
    assert!(!dir.path().join("target").join("eda").exists());
}

#[test]
fn a_failing_test_prints_the_row_diff_and_exits_3() {
    let p = people_project(
        r#"
[test.upper_names_of_adults]
model = "adults"
inputs.people = { rows = [
  { id = 1, name = "ann", age = 30 },
  { id = 2, name = "bob", age = 17 },
  { id = 3, name = "cy", age = 40 },
  { id = 4, name = "dee", age = 50 },
] }
expect.rows = [
  { id = 1, name = "ANN" },
  { id = 2, name = "BOB" },
  { id = 3, name = "cy" },
]
"#,
    );
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "unit FAIL  upper_names_of_adults (adults)\n      expected 3 rows, got 3 rows (compared on id, name)\n      changed    id=3: name expected cy, got CY\n      missing    id=2, name=BOB\n      unexpected id=4, name=DEE\n"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("1 unit tests: 0 passed, 1 failed, 0 errors"),
        "{}",
        r.stderr
    );
    assert!(r
        .stderr
        .contains("error: unit test `upper_names_of_adults` of model `adults` failed"));
}

#[test]
fn an_input_the_test_does_not_give_is_named_and_nothing_real_is_read() {
    let p = project(&[
        ("sluice.toml", SOURCES),
        ("data/people.csv", "id,name,age,joined\n1,ann,30,2026-01-01 00:00:00\n"),
        ("data/countries.csv", "code,name\nKR,Korea\n"),
        (
            "models/named.sql",
            "SELECT p.id, c.name FROM people p JOIN countries c ON c.code = p.name\n",
        ),
        (
            "tests/named.toml",
            "[test.t]\nmodel = \"named\"\ninputs.people = { rows = [ { id = 1 } ] }\nexpect.rows = []\n\n[test.extra]\nmodel = \"named\"\ninputs.people = { rows = [] }\ninputs.countries = { rows = [] }\ninputs.orders = { rows = [] }\nexpect.rows = []\n\n[test.typo]\nmodel = \"nmaed\"\nexpect.rows = []\n",
        ),
    ]);
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("unit ERROR t (named)\n      model `named` reads `countries`, which the test does not give; add inputs.countries = { rows = [...] } (or csv, or sql)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("unit ERROR extra (named)\n      the test gives `orders`, which model `named` does not read (it reads countries, people)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "unit ERROR typo (nmaed)\n      no model named `nmaed`; did you mean `named`?"
        ),
        "{}",
        r.stderr
    );
    assert!(r
        .stderr
        .contains("3 unit tests: 0 passed, 0 failed, 3 errors"));
}

#[test]
fn fixtures_are_typed_like_the_real_input_and_come_from_rows_csv_or_sql() {
    let p = project(&[
        ("sluice.toml", SOURCES),
        ("data/people.csv", "id,name,age,joined\n"),
        ("data/countries.csv", "code,name\nKR,Korea\n"),
        (
            "models/tenure.sql",
            "SELECT p.id, p.age IS NULL AS no_age, p.joined + INTERVAL '1 day' AS day_after, c.name AS country\nFROM people p LEFT JOIN countries c ON c.code = p.name\n",
        ),
        ("tests/fixtures/countries.csv", "code,name\nKR,Korea\n"),
        (
            "tests/tenure.toml",
            r#"
# `joined` is a TIMESTAMP in sluice.toml: the text is cast; `age` left out is NULL.
[test.typed]
model = "tenure"
inputs.people = { rows = [ { id = 1, name = "KR", joined = "2026-05-01 10:00:00" } ] }
inputs.countries = { csv = "fixtures/countries.csv" }
expect = { rows = [ { id = 1, no_age = true, day_after = "2026-05-02T10:00:00", country = "Korea" } ] }

[test.from_sql]
model = "tenure"
inputs.people = { sql = "SELECT 7 AS id, 'JP' AS name" }
inputs.countries = { rows = [ { code = "JP", name = "Japan" } ] }
expect.rows = [ { id = 7, country = "Japan" } ]

[test.unknown_column]
model = "tenure"
inputs.people = { rows = [ { id = 1, nmae = "x" } ] }
inputs.countries = { rows = [] }
expect.rows = []
"#,
        ),
    ]);
    let r = run(p.path(), &["test", "--unit"]);
    assert!(
        r.stderr.contains("unit ok    typed (tenure)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("unit ok    from_sql (tenure)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("unit ERROR unknown_column (tenure)\n      input `people`: `people` has no column `nmae`; did you mean `name`? (its columns: id, name, age, joined)"),
        "{}",
        r.stderr
    );
    assert_eq!(r.code, 1);
}

#[test]
fn cte_expectations_ordered_rows_and_per_test_vars_and_secrets() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\nschema = { id = \"BIGINT\", email = \"VARCHAR\", ts = \"TIMESTAMP\" }\n\n[secrets]\npii_key = { env = \"UNSET_IN_TESTS\" }\n\n[vars]\nmin_id = \"0\"\n",
        ),
        ("data/events.csv", "id,email,ts\n"),
        (
            "models/latest.sql",
            "WITH ranked AS (\n  SELECT id, email, row_number() OVER (PARTITION BY id ORDER BY ts DESC) AS n FROM events\n),\nlatest AS (SELECT id, email FROM ranked WHERE n = 1)\nSELECT id, hmac_sha256(email, 'pii_key') AS email_hmac FROM latest WHERE id > ${min_id} ORDER BY id\n",
        ),
        (
            "tests/latest.toml",
            r#"
[test.latest_row_wins]
model = "latest"
vars = { min_id = 1 }
secrets = { pii_key = "test-key" }
inputs.events = { rows = [
  { id = 1, email = "old@example.com", ts = 2026-05-01T10:00:00 },
  { id = 2, email = "old@example.com", ts = 2026-05-01T10:00:00 },
  { id = 2, email = "a@example.com", ts = 2026-05-01T11:00:00 },
  { id = 3, email = "a@example.com", ts = 2026-05-01T09:00:00 },
] }
# hmac_sha256('a@example.com', key 'test-key'); id 1 is below min_id
expect = { ordered = true, rows = [
  { id = 2, email_hmac = "2363ab9eace4d9958d6b6038632c35049a8dfc7f3e5030b5035f95ee42b9677a" },
  { id = 3, email_hmac = "2363ab9eace4d9958d6b6038632c35049a8dfc7f3e5030b5035f95ee42b9677a" },
] }
expect_cte.latest = { rows = [
  { id = 1, email = "old@example.com" },
  { id = 2, email = "a@example.com" },
  { id = 3, email = "a@example.com" },
] }
expect_cte.ranked = { rows = [ { id = 2, n = 1 } ] }
"#,
        ),
    ]);
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("unit FAIL  latest_row_wins (latest)\n      CTE `ranked`: expected 1 row, got 4 rows (compared on id, n)\n"),
        "{}",
        r.stderr
    );
    // Everything else held: the ordered rows, the secret and the vars, the other CTE.
    let diff: Vec<&str> = r
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("unit FAIL"))
        .take_while(|l| l.starts_with("unit FAIL") || l.starts_with("      "))
        .collect();
    assert!(
        diff.iter()
            .all(|l| !l.contains("email_hmac") && !l.contains("CTE `latest`")),
        "{diff:?}"
    );
}

#[test]
fn sluice_test_runs_the_unit_tests_and_then_the_checks_on_data() {
    let p = people_project(
        "[test.ok]\nmodel = \"adults\"\ninputs.people = { rows = [ { id = 1, name = \"ann\", age = 30 } ] }\nexpect.rows = [ { id = 1, name = \"ANN\" } ]\n",
    );
    let r = run(p.path(), &["test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("1 unit tests: 1 passed, 0 failed, 0 errors"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("1 models, 1 checks: 1 passed, 0 failed, 0 errors"),
        "{}",
        r.stderr
    );
    // A malformed test file is named with its line.
    std::fs::write(
        p.path().join("tests/broken.toml"),
        "[test.x]\nmodel = \"adults\"\nexpected.rows = []\n",
    )
    .unwrap();
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("broken.toml:3"), "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown field `expected`"),
        "{}",
        r.stderr
    );
}

/// The report validated against JUnit's schema (Jenkins' junit-10.xsd, as pytest ships it)
/// with `xmlschema`, then read with `junitparser`: "suite case outcome" lines, sorted.
fn junit(report: &std::path::Path) -> String {
    let script = r#"
import sys, xmlschema, junitparser
xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])
lines = []
for suite in junitparser.JUnitXml.fromfile(sys.argv[2]):
    for case in suite:
        kinds = [type(r).__name__.lower() for r in case.result] or ["pass"]
        lines.append(f"{suite.name} {case.name} {kinds[0]}")
print("\n".join(sorted(lines)))
"#;
    let out = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(repo_root().join(".venv/junit-10.xsd"))
        .arg(report)
        .output()
        .expect("the test venv's python runs (./test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn junit_reports_validate_against_the_junit_schema_and_read_with_junitparser() {
    let p = project(&[
        ("sluice.toml", "[sources.people]\nlocation = \"data/people.csv\"\n"),
        ("data/people.csv", "id,name\n1,ann\n2,\n"),
        (
            "models/people_out.sql",
            "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n\n[columns.id]\nchecks = [\"unique\"]\n\n[columns.name]\nchecks = [\"not_null\"]\n*/\nSELECT id, name FROM people\n",
        ),
        ("models/broken.sql", "SELECT nope FROM people\n"),
        (
            "tests/t.toml",
            "[test.ids]\nmodel = \"people_out\"\ninputs.people = { rows = [ { id = 1, name = \"a<b\" } ] }\nexpect.rows = [ { id = 2 } ]\n",
        ),
    ]);
    let report = p.path().join("report.xml");
    let r = run(p.path(), &["run", "--junit", report.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        junit(&report),
        "model.broken build error\nmodel.people_out not_null(name) failure\nmodel.people_out unique(id) pass\n"
    );
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.contains("nope"),
        "the error message is in the report: {xml}"
    );

    let r = run(
        p.path(),
        &["test", "--unit", "--junit", report.to_str().unwrap()],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(junit(&report), "unit tests ids failure\n");
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(xml.contains("missing    id=2"), "{xml}");
}
