//! The interactive shell as a user types into it: the real binary in a pseudo terminal
//! (Python's pexpect from the test venv), keys sent as a terminal sends them, assertions on
//! what the screen shows and on the files the shell writes.

mod common;
use common::server::{python_json, served_project};

/// Drive `sluice shell` over the served project; `steps` is Python run with `shell()` (a
/// fresh shell, waiting for its prompt), `ask(child, keys, pattern)` (type keys, wait for a
/// regex, return what came before it) and `out` (a dict printed as JSON) in scope.
fn drive(steps: &str) -> (serde_json::Value, tempfile::TempDir) {
    let project = served_project();
    let data_home = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
import json, os, pexpect, re, time
binary, project, data_home = {binary:?}, {project:?}, {data_home:?}
env = dict(os.environ, XDG_DATA_HOME=data_home, TERM="xterm", SLUICE_ANALYST_PASSWORD="x")
env.pop("SLUICE_HISTORY", None)
def shell():
    child = pexpect.spawn(binary, ["--project", project, "shell"], env=env, cwd=project,
                          encoding="utf-8", dimensions=(40, 160), timeout=90)
    child.expect_exact("sluice> ")
    return child
def ask(child, keys, pattern):
    child.send(keys)
    child.expect(pattern)
    return child.before
def quit(child):
    child.send("\\q\r")
    child.expect(pexpect.EOF)
out = {{}}
{steps}
print(json.dumps(out))
"#,
        binary = env!("CARGO_BIN_EXE_sluice"),
        project = project.path().display().to_string(),
        data_home = data_home.path().display().to_string(),
    );
    (python_json(&script), project)
}

/// A result cell as the table printer draws it.
fn cell(value: &str) -> String {
    format!(r"\|\s*{}\s*\|", regex_escape(value))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.^$|?*+()[]{}".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[test]
fn history_is_kept_across_sessions_and_a_statement_may_span_lines() {
    let steps = format!(
        r#"
child = shell()
ask(child, "SELECT 41 + 1 AS answer;\r", r"{answer}")
# Three lines: the shell waits for the `;`.
ask(child, "SELECT\r", r"\r\n")
ask(child, "  count(*) AS n\r", r"\r\n")
ask(child, "FROM people;\r", r"{three}")
quit(child)
out["history"] = open(os.path.join(data_home, "sluice", "history")).read()
child = shell()
# Up arrow: the last session's `\q`, then the statement before it, all three lines of it.
ask(child, "\x1b[A\x1b[A\r", r"{three}")
# Ctrl-R: search the history back for an older one.
ask(child, "\x12" + "41 +", "answer")
ask(child, "\r", r"{answer}")
out["recalled"] = True
quit(child)
"#,
        answer = cell("42"),
        three = cell("3"),
    );
    let (v, _project) = drive(&steps);
    assert_eq!(v["recalled"], true);
    let history = v["history"].as_str().unwrap();
    assert!(
        history.ends_with(
            "SELECT 41 + 1 AS answer;\nSELECT\\n  count(*) AS n\\nFROM people;\n\\\\q\n"
        ),
        "{history:?}"
    );
}

#[test]
fn ctrl_c_cancels_a_running_query_and_the_next_one_answers() {
    let steps = format!(
        r#"
child = shell()
child.send("SELECT count(*) FROM generate_series(1, 30000000000) a WHERE sha256_hex(CAST(a.value AS VARCHAR)) LIKE 'ff%';\r")
time.sleep(2)
started = time.time()
child.sendintr()
child.expect_exact("Query cancelled.")
out["cancel_seconds"] = time.time() - started
ask(child, "SELECT 7 AS seven;\r", r"{seven}")
out["answered"] = True
quit(child)
"#,
        seven = cell("7"),
    );
    let (v, _project) = drive(&steps);
    assert_eq!(v["answered"], true);
    // The query would run for hours; the cancel takes effect at once.
    assert!(v["cancel_seconds"].as_f64().unwrap() < 10.0, "{v}");
}

#[test]
fn tab_completes_tables_columns_not_yet_read_functions_and_file_paths() {
    let steps = format!(
        r#"
child = shell()
# `amounts` has not been read in this session: its columns come from its file once the line
# names it (`amou` is then `amount` or `amounts`: Tab completes what they share).
ask(child, "SELECT note FROM amounts WHERE amou\t > 1;\r", r"{first}")
ask(child, "SELECT count(*) AS n FROM peo\t;\r", r"{three}")
ask(child, "SELECT sha256_h\t('abc') AS h;\r", r"{abc}")
ask(child, "SELECT count(*) AS n FROM 'data/peo\t';\r", r"{three}")
out["completed"] = True
quit(child)
"#,
        first = cell("first"),
        three = cell("3"),
        abc = cell("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    );
    let (v, _project) = drive(&steps);
    assert_eq!(v["completed"], true);
}

#[test]
fn output_to_a_file_timing_and_scripts() {
    let steps = format!(
        r#"
open(os.path.join(project, "script.sql"), "w").write("SELECT 'from the script' AS src;\n")
child = shell()
ask(child, "\\o five.txt\r", "sluice> ")
ask(child, "SELECT 5 AS five;\r", "sluice> ")
ask(child, "\\o\r", "sluice> ")
# Answered on the screen: `\o` has run and closed the file.
ask(child, "SELECT 'on screen' AS marker;\r", r"{marker}")
out["file"] = open(os.path.join(project, "five.txt")).read()
ask(child, "\\timing\r", "Timing is on.")
ask(child, "SELECT 1 AS one;\r", r"Time: [0-9]+\.[0-9]{{3}} ms")
out["timing"] = True
ask(child, "\\i script.sql\r", r"{script}")
out["script"] = True
quit(child)
"#,
        script = cell("from the script"),
        marker = cell("on screen"),
    );
    let (v, _project) = drive(&steps);
    assert_eq!(
        v["file"],
        "+------+\n| five |\n+------+\n|    5 |\n+------+\n1 row\n"
    );
    assert_eq!(v["timing"], true, "{v}");
    assert_eq!(v["script"], true);
}

#[test]
fn run_on_a_terminal_shows_identity_resolution_at_work() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join("models")).unwrap();
    std::fs::write(p.join("sluice.toml"), "[project]\nname = \"live\"\n").unwrap();
    // 1.2M edges: long enough for the live line to be redrawn while the ids are resolved.
    std::fs::write(
        p.join("models/edges.sql"),
        "/* @config\nmaterialized = \"view\"\n*/\n\
         SELECT 'L' || CAST(value AS VARCHAR) AS l, 'A' || CAST(value / 2 AS VARCHAR) AS r \
         FROM generate_series(0, 1199999)\n",
    )
    .unwrap();
    std::fs::write(
        p.join("models/linked.sql"),
        "/* @config\nmaterialized = \"table\"\n*/\n\
         SELECT id, shared_id FROM resolve_identities('edges', 'l', 'r')\n",
    )
    .unwrap();
    let script = format!(
        r#"
import json, os, pexpect
env = dict(os.environ, TERM="xterm")
child = pexpect.spawn({binary:?}, ["--project", {project:?}, "run"], env=env,
                      encoding="utf-8", dimensions=(40, 160), timeout=300)
child.expect(r"linked\s+resolve_identities: [0-9.]+[KM]? edges, [0-9.]+[KM]? ids")
live = child.after
child.expect(pexpect.EOF)
child.close()
print(json.dumps({{"live": live, "rest": child.before, "status": child.exitstatus}}))
"#,
        binary = env!("CARGO_BIN_EXE_sluice"),
        project = p.display().to_string(),
    );
    let out = python_json(&script);
    assert_eq!(out["status"], 0, "{out}");
    let rest = out["rest"].as_str().unwrap();
    assert!(
        regex_find(rest, r"linked\s+ok\s+1800000 rows"),
        "the final line should replace the live one: {out}"
    );
}

fn regex_find(text: &str, pattern: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(text)
}
