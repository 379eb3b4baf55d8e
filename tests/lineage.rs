//! `sluice lineage` and `sluice docs` on the example project: column lineage traced from
//! the sources through views, CTEs and the identity linkage, and the static docs site
//! loaded in headless Chromium.

mod common;
use common::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("sql"), dir.path());
    dir
}

fn lineage_json(p: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["lineage"];
    all.extend_from_slice(args);
    let r = run(p, &all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn edges(v: &serde_json::Value, kind: &str) -> Vec<(String, String)> {
    v[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The columns that feed `to` directly.
fn feeds(columns: &[(String, String)], to: &str) -> BTreeSet<String> {
    columns
        .iter()
        .filter(|(_, t)| t == to)
        .map(|(f, _)| f.clone())
        .collect()
}

/// Every column `to` is computed from, following the edges down to the sources.
fn sources_of(columns: &[(String, String)], to: &str) -> BTreeSet<String> {
    let mut by_to: HashMap<&str, Vec<&str>> = HashMap::new();
    for (f, t) in columns {
        by_to.entry(t).or_default().push(f);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![to];
    while let Some(c) = stack.pop() {
        match by_to.get(c) {
            Some(froms) => stack.extend(froms.iter().copied()),
            None if c != to => {
                out.insert(c.to_string());
            }
            None => {}
        }
    }
    out
}

#[test]
fn lineage_traces_columns_through_views_and_the_identity_linkage() {
    let p = example();
    let v = lineage_json(p.path(), &[]);
    let tables = edges(&v, "tables");
    for (from, to) in [
        ("launch_events", "stg_launch_events"),
        ("account_migrations", "stg_launch_events"),
        ("identity_edges", "account_links"),
        ("stg_launch_events", "eda_launch_events"),
        ("account_links", "eda_launch_events"),
        ("erased_emails", "eda_launch_events"),
        ("eda_launch_events", "daily_activity"),
    ] {
        assert!(
            tables.contains(&(from.to_string(), to.to_string())),
            "{from} -> {to} missing from {tables:?}"
        );
    }
    let columns = edges(&v, "columns");
    // email -> normalised email (a view) -> email hash.
    assert_eq!(
        feeds(&columns, "stg_launch_events.email"),
        BTreeSet::from(["launch_events.email".to_string()])
    );
    assert_eq!(
        feeds(&columns, "eda_launch_events.email_sha256"),
        BTreeSet::from(["stg_launch_events.email".to_string()])
    );
    assert_eq!(
        sources_of(&columns, "eda_launch_events.email_sha256"),
        BTreeSet::from(["launch_events.email".to_string()])
    );
    // COALESCE(m.account_id, e.account_id): both account ids.
    assert_eq!(
        feeds(&columns, "stg_launch_events.account_id"),
        BTreeSet::from([
            "account_migrations.account_id".to_string(),
            "launch_events.account_id".to_string()
        ])
    );
    // Account ids -> shared user id through resolve_identities over the edges view.
    assert_eq!(
        feeds(&columns, "account_links.shared_id"),
        BTreeSet::from([
            "identity_edges.left_id".to_string(),
            "identity_edges.right_id".to_string()
        ])
    );
    assert_eq!(
        feeds(&columns, "eda_launch_events.shared_id"),
        BTreeSet::from(["account_links.shared_id".to_string()])
    );
    assert_eq!(
        sources_of(&columns, "eda_launch_events.shared_id"),
        BTreeSet::from([
            "account_migrations.account_id".to_string(),
            "account_migrations.legacy_account_id".to_string(),
            "accounts.account_id".to_string(),
        ])
    );
    // An aggregate: count(DISTINCT shared_id) reads shared_id only.
    assert_eq!(
        feeds(&columns, "daily_activity.active_users"),
        BTreeSet::from(["eda_launch_events.shared_id".to_string()])
    );
    // The phone hash does not come from the email.
    assert!(!sources_of(&columns, "eda_launch_events.phone_sha256").contains("launch_events.email"));

    // --select keeps the edges into the selected models.
    let v = lineage_json(p.path(), &["--select", "account_links"]);
    assert_eq!(
        edges(&v, "tables"),
        vec![("identity_edges".to_string(), "account_links".to_string())]
    );
    assert!(edges(&v, "columns")
        .iter()
        .all(|(_, to)| to.starts_with("account_links.")));

    // The same graph as Mermaid and dot.
    let r = run(p.path(), &["lineage", "--format", "mermaid"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("flowchart LR\n"), "{}", r.stdout);
    assert!(r.stdout.contains("subgraph") && r.stdout.contains("[\"email_sha256\"]"));
    assert_eq!(
        r.stdout.lines().filter(|l| l.contains(" --> ")).count(),
        columns.len()
    );
    let r = run(p.path(), &["lineage", "--format", "dot"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("digraph lineage {"), "{}", r.stdout);
    assert!(r
        .stdout
        .contains("\"stg_launch_events.email\" -> \"eda_launch_events.email_sha256\";"));
}

fn chromium() -> Command {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.map(|o| o.status.success()).unwrap_or(false),
        "chromium is missing: ./test.sh installs it (Debian package `chromium`)"
    );
    let mut c = Command::new("chromium");
    let profile = tempfile::tempdir().unwrap().keep();
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn docs_site_opens_from_the_file_system_in_chromium() {
    let p = example();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let site = p.path().join("site");
    let r = run(p.path(), &["docs", "--out", site.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let index = site.join("index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    // Nothing is fetched from anywhere.
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("url(http"),
        "the page must not load anything remote"
    );

    let url = format!("file://{}", index.display());
    let dom = dom(&url);
    for model in [
        "stg_launch_events",
        "erased_emails",
        "identity_edges",
        "account_links",
        "eda_launch_events",
        "daily_activity",
        "launch_funnel",
    ] {
        assert!(
            dom.contains(&format!("id=\"t-{model}\"")),
            "section of {model} missing"
        );
        assert!(
            dom.contains(&format!("data-name=\"{model}\"><rect")),
            "graph node of {model} missing"
        );
    }
    // 5 sources + 8 models in the graph, and an edge per table dependency.
    assert_eq!(dom.matches("<g class=\"node ").count(), 13);
    assert!(dom.matches("<path class=\"edge\"").count() >= 11);
    // Columns with types, the column lineage, and the last results.
    // The example's hashed email is marked as computed from personal data, the source's
    // email as personal.
    assert!(dom.contains(
        "<code>email_sha256</code> <span class=\"tag masked\" title=\"computed from personal data through a hash or a count\">masked</span></td><td><code>VARCHAR"
    ));
    assert!(dom.contains(
        "<code>email</code> <span class=\"tag personal\" title=\"personal data, unhashed\">personal</span></td><td><code>VARCHAR"
    ));
    assert!(dom.contains("<code>stg_launch_events.email</code>"));
    assert!(dom.contains("class=\"status-success\">success</span>"));
    assert!(dom.contains("Published</dt><dd>"));
    assert!(dom.contains("class=\"status-pass\">pass</span>"));

    let png = screenshot(&url, "1400,1800", &p.path().join("docs.png"));
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());
}

/// The page at `url` as headless Chromium has built it.
fn dom(url: &str) -> String {
    let out = chromium().arg("--dump-dom").arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG screenshot of the page at `url` in headless Chromium.
fn screenshot(url: &str, window: &str, path: &Path) -> Vec<u8> {
    let out = chromium()
        .arg(format!("--screenshot={}", path.display()))
        .arg(format!("--window-size={window}"))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    png
}

#[test]
fn docs_chart_every_run_of_a_model_and_draw_the_funnel() {
    let p = example();
    for _ in 0..2 {
        let r = run(p.path(), &["run"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    // Half the events go: the delivery's volume check (30%) fails and nothing is published.
    std::fs::remove_dir_all(p.path().join("data/launch_events/day=2026-05-02")).unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let site = p.path().join("site");
    let r = run(p.path(), &["docs", "--out", site.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let url = format!("file://{}", site.join("index.html").display());
    let dom = dom(&url);

    let chart = section(
        &dom,
        "<svg class=\"run-history\" data-model=\"eda_launch_events\"",
    );
    let runs: Vec<&str> = chart
        .split("<g class=\"run ")
        .skip(1)
        .map(|g| g.split('"').next().unwrap())
        .collect();
    assert_eq!(
        runs,
        ["published", "published", "failed volume-failed"],
        "{chart}"
    );
    assert_eq!(chart.matches("<circle class=\"volume-mark\"").count(), 1);
    assert!(
        chart.contains(" rows · not published: volume failed</title>"),
        "{chart}"
    );
    assert!(
        chart.contains(" rows · published, every check passed</title>"),
        "{chart}"
    );

    // The funnel from the published launch_funnel: users whose deepest step is k or more.
    let mut deepest: Vec<u64> = Vec::new();
    for file in std::fs::read_dir(p.path().join("target/analysis/launch_funnel")).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_none_or(|x| x != "csv") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let at = header.iter().position(|c| *c == "funnel_step").unwrap();
        deepest.extend(
            text.lines()
                .skip(1)
                .map(|l| l.split(',').nth(at).unwrap().parse::<u64>().unwrap()),
        );
    }
    assert!(deepest.len() > 50, "{} users", deepest.len());
    let funnel = section(&dom, "<svg class=\"funnel\" data-model=\"launch_funnel\"");
    for step in 1..=4u64 {
        let users = deepest.iter().filter(|d| **d >= step).count();
        assert!(
            funnel.contains(&format!("data-step=\"{step}\" data-users=\"{users}\"")),
            "step {step}: {users} users expected in {funnel}"
        );
    }

    let png = screenshot(&url, "1200,4000", &p.path().join("charts.png"));
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());

    // A history line that is not a record: the page says so where the charts would be.
    let history = p.path().join("target/run_history.jsonl");
    let lines = std::fs::read_to_string(&history).unwrap().lines().count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .unwrap();
    std::io::Write::write_all(&mut f, b"not json\n").unwrap();
    let r = run(p.path(), &["docs", "--out", site.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(
        html.contains(&format!(
            "<p class=\"error\">Run history charts left out: {}:{}: not a run history record",
            history.display(),
            lines + 1
        )),
        "{html}"
    );
    assert!(!html.contains("<svg class=\"run-history\""));
}

/// The text from `start` to the end of its `</svg>`.
fn section<'a>(dom: &'a str, start: &str) -> &'a str {
    let from = dom.find(start).unwrap_or_else(|| panic!("{start} missing"));
    let to = dom[from..].find("</svg>").unwrap();
    &dom[from..from + to]
}

#[test]
fn lineage_follows_ctes_windows_unions_and_subqueries() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.orders]\nlocation = \"data/orders.csv\"\n[sources.refunds]\nlocation = \"data/refunds.csv\"\n",
        ),
        ("data/orders.csv", "order_id,customer,amount,placed_at\n1,a,10,2026-05-01\n"),
        ("data/refunds.csv", "order_id,customer,amount\n1,a,3\n"),
        (
            "models/ranked.sql",
            "/* @config\nmaterialized = \"view\"\n*/\n\
             WITH money AS (\n\
               SELECT order_id, customer, amount FROM orders\n\
               UNION ALL\n\
               SELECT order_id, customer, -amount AS amount FROM refunds\n\
             )\n\
             SELECT customer,\n\
                    sum(amount) OVER (PARTITION BY customer ORDER BY order_id) AS running,\n\
                    row_number() OVER (ORDER BY order_id) AS seq,\n\
                    (SELECT max(placed_at) FROM orders) AS last_order\n\
             FROM money\n",
        ),
    ]);
    let v = lineage_json(p.path(), &[]);
    let columns = edges(&v, "columns");
    assert_eq!(
        feeds(&columns, "ranked.customer"),
        BTreeSet::from([
            "orders.customer".to_string(),
            "refunds.customer".to_string()
        ])
    );
    // A window function reads its argument, partition and order columns.
    assert_eq!(
        feeds(&columns, "ranked.running"),
        BTreeSet::from([
            "orders.amount".to_string(),
            "orders.customer".to_string(),
            "orders.order_id".to_string(),
            "refunds.amount".to_string(),
            "refunds.customer".to_string(),
            "refunds.order_id".to_string(),
        ])
    );
    assert_eq!(
        feeds(&columns, "ranked.seq"),
        BTreeSet::from([
            "orders.order_id".to_string(),
            "refunds.order_id".to_string()
        ])
    );
    assert_eq!(
        feeds(&columns, "ranked.last_order"),
        BTreeSet::from(["orders.placed_at".to_string()])
    );
    assert_eq!(
        edges(&v, "tables"),
        vec![
            ("orders".to_string(), "ranked".to_string()),
            ("refunds".to_string(), "ranked".to_string())
        ]
    );
}

#[test]
fn source_columns_follow_every_model_between_and_column_prints_the_chain() {
    let p = project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\n[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/events.csv", "id,email,person\n1,a@x.com,1\n"),
        ("data/people.csv", "id,country\n1,KR\n"),
        (
            "models/clean.sql",
            "SELECT id, lower(trim(email)) AS email, person FROM events",
        ),
        (
            "models/joined.sql",
            "SELECT c.id, c.email, p.country FROM clean c JOIN people p ON p.id = c.person",
        ),
        (
            "models/delivered.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT id, sha256_hex(email) AS email_sha256, country FROM joined",
        ),
    ]);
    let v = lineage_json(p.path(), &[]);
    let source_columns = edges(&v, "source_columns");
    assert_eq!(
        feeds(&source_columns, "delivered.email_sha256"),
        BTreeSet::from(["events.email".to_string()])
    );
    assert_eq!(
        feeds(&source_columns, "delivered.country"),
        BTreeSet::from(["people.country".to_string()])
    );
    assert_eq!(
        feeds(&source_columns, "joined.email"),
        BTreeSet::from(["events.email".to_string()])
    );
    // The per-hop edges stay as they were.
    assert_eq!(
        feeds(&edges(&v, "columns"), "delivered.email_sha256"),
        BTreeSet::from(["joined.email".to_string()])
    );
    // Every model column's sources agree with following the hops.
    let columns = edges(&v, "columns");
    for (_, to) in &columns {
        assert_eq!(feeds(&source_columns, to), sources_of(&columns, to), "{to}");
    }
    let r = run(p.path(), &["lineage", "--column", "delivered.email_sha256"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "delivered.email_sha256\n  <- joined.email\n    <- clean.email\n      <- events.email (source)\n"
    );
    let r = run(p.path(), &["lineage", "--column", "delivered.email_sha"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--column delivered.email_sha: not a column of a selected model (write model.column); did you mean `delivered.email_sha256`?"),
        "{}",
        r.stderr
    );
}
