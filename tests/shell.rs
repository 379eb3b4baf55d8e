//! End-to-end tests of the shell's scripted mode, sources and configuration errors,
//! driving the real binary.

mod common;
use common::*;

const THINGS: &str = "id,name,amount\n1,ann,10\n2,bob,\n3,cy,30\n";

fn things_project() -> tempfile::TempDir {
    project(&[
        (
            "sluice.toml",
            "[sources.things]\nlocation = \"data/things.csv\"\noptions = { null = \"\" }\n",
        ),
        ("data/things.csv", THINGS),
    ])
}

#[test]
fn counts_rows_of_a_configured_source() {
    let p = things_project();
    let r = run(
        p.path(),
        &["shell", "-c", "SELECT count(*) AS n FROM things"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "+---+\n| n |\n+---+\n| 3 |\n+---+\n1 row\n");
}

#[test]
fn output_formats() {
    let p = things_project();
    let sql = "SELECT id, name, amount FROM things ORDER BY id";
    assert_eq!(
        query_csv(p.path(), sql),
        "id,name,amount\n1,ann,10\n2,bob,\n3,cy,30\n"
    );
    let r = run(p.path(), &["shell", "--format", "json", "-c", sql]);
    assert_eq!(
        r.stdout,
        "[\n{\"id\":1,\"name\":\"ann\",\"amount\":10},{\"id\":2,\"name\":\"bob\"},{\"id\":3,\"name\":\"cy\",\"amount\":30}\n]\n"
    );
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "markdown",
            "-c",
            "SELECT id, name FROM things ORDER BY id LIMIT 1",
        ],
    );
    assert_eq!(r.stdout, "| id | name |\n|---:|---|\n| 1 | ann |\n");
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "tsv",
            "-c",
            "SELECT name FROM things WHERE id = 3",
        ],
    );
    assert_eq!(r.stdout, "name\ncy\n");
}

#[test]
fn output_file() {
    let p = things_project();
    let out = p.path().join("out.csv");
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "--output",
            out.to_str().unwrap(),
            "-c",
            "SELECT id FROM things ORDER BY id",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(std::fs::read_to_string(out).unwrap(), "id\n1\n2\n3\n");
}

#[test]
fn script_stops_at_first_failing_statement_naming_file_and_line() {
    let p = things_project();
    let script = p.path().join("script.sql");
    std::fs::write(
        &script,
        "SELECT 1 AS a;\n\nSELECT nope\n  FROM things;\nSELECT 2 AS b;\n",
    )
    .unwrap();
    let r = run(
        p.path(),
        &["shell", "--format", "csv", "-f", script.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "a\n1\n");
    assert!(
        r.stderr.starts_with(&format!(
            "error: {}:3:8: Schema error: No field named nope. Did you mean 'things.name'?\n   3 | SELECT nope\n     |        ^\nValid fields are things.id, things.name, things.amount.\n",
            script.display()
        )),
        "{}",
        r.stderr
    );
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "--continue-on-error",
            "-f",
            script.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "the failure is still reported");
    assert_eq!(r.stdout, "a\n1\nb\n2\n");
}

#[test]
fn script_errors_point_at_line_and_column_of_the_file() {
    let p = things_project();
    let script = p.path().join("script.sql");
    // A statement that starts mid-line after another, and a syntax error on its 2nd line.
    std::fs::write(&script, "SELECT 1 AS a; SELECT 2 AS b,\n  3 c d;\n").unwrap();
    let r = run(
        p.path(),
        &["shell", "--format", "csv", "-f", script.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with(&format!(
            "error: {}:2:7: syntax error: Expected: end of statement, found: d\n   2 |   3 c d;\n     |       ^\n",
            script.display()
        )),
        "{}",
        r.stderr
    );
    std::fs::write(&script, "SELECT 1 AS a; SELECT nope FROM things;\n").unwrap();
    let r = run(
        p.path(),
        &["shell", "--format", "csv", "-f", script.to_str().unwrap()],
    );
    assert!(
        r.stderr.starts_with(&format!(
            "error: {}:1:23: Schema error: No field named nope",
            script.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn several_c_and_stdin() {
    let p = things_project();
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "-c",
            "SELECT 1 AS x",
            "-c",
            "SELECT 2 AS y; SELECT 3 AS z",
        ],
    );
    assert_eq!(r.stdout, "x\n1\ny\n2\nz\n3\n");
    let r = run_stdin(
        p.path(),
        &["--format", "csv"],
        "SELECT name FROM things\nWHERE id = 1;\nSELECT oops;\nSELECT 9 AS n;",
    );
    // `sluice shell` is the default command; stdin is read when it is not a terminal.
    assert_eq!(
        r.code, 2,
        "--format belongs to the shell subcommand: {}",
        r.stderr
    );
    let r = run_stdin(
        p.path(),
        &["shell", "--format", "csv"],
        "SELECT name FROM things\nWHERE id = 1;\nSELECT oops;\nSELECT 9 AS n;",
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "name\nann\n");
    assert!(
        r.stderr
            .starts_with("error: stdin:3:8: Schema error: No field named oops.\n   3 | SELECT oops;\n     |        ^\n"),
        "{}",
        r.stderr
    );
    let r = run_stdin(p.path(), &[], "SELECT count(*) AS n FROM things;");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("| 3 |"), "{}", r.stdout);
}

#[test]
fn meta_commands_in_scripts() {
    let p = things_project();
    let r = run_stdin(
        p.path(),
        &["shell", "--format", "csv"],
        "\\dt\n\\d things\n\\df hash_p\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected_start = "name,kind,location\nthings,source,csv data/things.csv\ncolumn,type,nullable\nid,BIGINT,YES\nname,VARCHAR,YES\namount,BIGINT,YES\nname,kind,signature,description\nhash_pii,scalar,";
    assert!(r.stdout.starts_with(expected_start), "{}", r.stdout);
    let r = run_stdin(p.path(), &["shell"], "\\d nothing\n");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("table `nothing` does not exist"),
        "{}",
        r.stderr
    );
}

#[test]
fn broken_config_exits_2_naming_the_key() {
    let p = project(&[(
        "sluice.toml",
        "[sources.things]\nlocation = \"x.csv\"\nformat = \"xlsx\"\n",
    )]);
    let r = run(p.path(), &["shell", "-c", "SELECT 1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("sluice.toml:3: key `sources.things.format`: unknown variant `xlsx`, expected one of `csv`, `parquet`, `ndjson`"),
        "{}",
        r.stderr
    );
    let p = project(&[("sluice.toml", "[project]\nname = \"x\"\ntargte = \"out\"\n")]);
    let r = run(p.path(), &["shell", "-c", "SELECT 1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("sluice.toml:3: key `project.targte`: unknown field `targte`"),
        "{}",
        r.stderr
    );
    let p = project(&[(
        "sluice.toml",
        "[sources.t]\nlocation = \"t.csv\"\noptions = { delimiter = \";;\" }\n",
    )]);
    let r = run(p.path(), &["shell", "-c", "SELECT 1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("key `sources.t.options.delimiter`: expected a single ASCII character"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_usage_exits_2() {
    let p = things_project();
    let r = run(p.path(), &["shell", "--format", "xml", "-c", "SELECT 1"]);
    assert_eq!(r.code, 2);
    let r = run(
        p.path(),
        &["--memory-limit", "lots", "shell", "-c", "SELECT 1"],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("invalid memory size `lots`"),
        "{}",
        r.stderr
    );
    let r = run(
        p.path(),
        &["--memory-limit", "64M", "shell", "-c", "SELECT 1 AS one"],
    );
    assert_eq!(r.code, 0);
}

#[test]
fn missing_source_fails_only_the_statement_that_reads_it() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.things]\nlocation = \"data/things.csv\"\n[sources.gone]\nlocation = \"data/gone/*.parquet\"\n",
        ),
        ("data/things.csv", THINGS),
    ]);
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM things",
        ],
    );
    assert_eq!(r.stdout, "n\n3\n");
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM gone"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("source `gone` (data/gone/*.parquet): no parquet files found"),
        "{}",
        r.stderr
    );
}

#[test]
fn unparseable_csv_names_source_and_line() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\nschema = { id = \"BIGINT\", ts = \"TIMESTAMP\" }\n",
        ),
        ("data/events.csv", "id,ts\n1,2026-05-01 10:00:00\n2,2026-05-01 11:00:00\nthree,2026-05-01 12:00:00\n"),
    ]);
    let r = run(p.path(), &["shell", "-c", "SELECT sum(id) FROM events"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("source `events` (data/events.csv)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("three"), "{}", r.stderr);
    assert!(
        r.stderr.contains("line 4") || r.stderr.contains("line 3"),
        "{}",
        r.stderr
    );
}

#[test]
fn folders_globs_and_hive_partitions() {
    let p = project(&[
        ("sluice.toml", "[sources.ev]\nlocation = \"data/ev/\"\nformat = \"csv\"\n[sources.g]\nlocation = \"data/logs/*/*.csv\"\n"),
        ("data/logs/2026-05-01/a.csv", "id\n1\n2\n"),
        ("data/logs/2026-05-02/b.csv", "id\n3\n"),
        ("data/logs/2026-05-02/notes.txt", "not data"),
        ("data/ev/day=2026-05-01/a.csv", "id\n1\n2\n"),
        ("data/ev/day=2026-05-02/a.csv", "id\n3\n"),
        ("data/ev/_SUCCESS", ""),
    ]);
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT day, count(*) AS n FROM ev GROUP BY day ORDER BY day"
        ),
        "day,n\n2026-05-01,2\n2026-05-02,1\n"
    );
    assert_eq!(query_csv(p.path(), "SELECT sum(id) AS s FROM g"), "s\n6\n");
    // A glob across hive folders matches the whole path and still finds the partitions.
    let dir = p.path().display();
    assert_eq!(
        query_csv(
            p.path(),
            &format!(
                "SELECT day, sum(id) AS s FROM '{dir}/data/ev/*/*.csv' GROUP BY day ORDER BY day"
            )
        ),
        "day,s\n2026-05-01,3\n2026-05-02,3\n"
    );
    assert_eq!(
        query_csv(
            p.path(),
            &format!("SELECT count(*) AS n FROM '{dir}/data/ev/day=2026-05-02/*.csv'")
        ),
        "n\n1\n"
    );
}

#[test]
fn query_files_by_path_and_copy() {
    let p = things_project();
    let dir = p.path().display().to_string();
    let sql = format!(
        "COPY (SELECT id, name FROM '{dir}/data/things.csv' WHERE id < 3) TO '{dir}/out.parquet' STORED AS PARQUET; SELECT * FROM '{dir}/out.parquet' ORDER BY id"
    );
    assert_eq!(
        query_csv(p.path(), &sql),
        "count\n2\nid,name\n1,ann\n2,bob\n"
    );
}

#[test]
fn empty_project_folder_still_works() {
    let p = project(&[]);
    assert_eq!(query_csv(p.path(), "SELECT 1 + 1 AS two"), "two\n2\n");
    let r = run(
        std::path::Path::new("/nonexistent/project"),
        &["shell", "-c", "SELECT 1"],
    );
    assert_eq!(r.code, 2);
}

#[test]
fn vars_substitute_in_statements_and_scripts_as_in_models() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.people]\nlocation = \"data/people.csv\"\n[vars]\ncountry = \"KR\"\nmin_id = 1\n",
        ),
        ("data/people.csv", "id,name,country\n1,ann,KR\n2,bob,US\n3,cy,KR\n"),
        (
            "by_country.sql",
            "SELECT name FROM people WHERE country = '${country}' AND id > ${min_id} ORDER BY id;\n",
        ),
    ]);
    let sql = "SELECT name FROM people WHERE country = '${country}' ORDER BY id";
    let r = run(p.path(), &["shell", "--format", "csv", "-c", sql]);
    assert_eq!(r.stdout, "name\nann\ncy\n", "{}", r.stderr);
    // --var over [vars], in -c and -f alike.
    let r = run(
        p.path(),
        &["shell", "--format", "csv", "--var", "country=US", "-c", sql],
    );
    assert_eq!(r.stdout, "name\nbob\n", "{}", r.stderr);
    let script = p.path().join("by_country.sql");
    let r = run(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "--var",
            "min_id=0",
            "-f",
            script.to_str().unwrap(),
        ],
    );
    assert_eq!(r.stdout, "name\nann\ncy\n", "{}", r.stderr);
    let r = run(p.path(), &["shell", "-c", "SELECT '${nope}' AS x"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("unknown variable ${nope}; set it in [vars] or with --var nope=..."),
        "{}",
        r.stderr
    );
}
