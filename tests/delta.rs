//! Delta Lake outputs and sources, read and written by an independent implementation: the
//! Python `deltalake` package (and polars through it) in the test venv, on local folders
//! and on a real S3-compatible server (moto).

mod common;
use common::s3::Moto;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOML: &str = "[sources.signups]\nlocation = \"data/signups.csv\"\n[sources.erasure_requests]\nlocation = \"data/erasure_requests.csv\"\n";

const SIGNUPS: &str = "id,name,email,country,amount,signed_up\n\
1,Ann,ann@example.com,KR,10,2024-01-02\n\
2,Bob,bob@example.com,US,20,2024-02-03\n\
3,Cy,cy@example.com,KR,30,2024-03-04\n\
4,Dee,dee@example.com,JP,40,2024-04-05\n\
5,Eve,eve@example.com,KR,50,2024-05-06\n";

/// The delivery, once as a Delta table and once as plain Parquet, from the same SQL.
fn delivery_model(format: &str) -> String {
    format!(
        r#"/* @config
materialized = "table"
format = "{format}"
partition_by = ["country"]
erasure = {{ list = "erasure_requests", column = "email_hash" }}
[columns.id]
checks = ["not_null", "unique"]
[columns.name]
pii = true
*/
SELECT id, name, hash_pii(email, 'email') AS email_hash, country, amount,
       CAST(signed_up AS DATE) AS signed_up
FROM signups
"#
    )
}

fn delta_project(target: Option<&str>) -> tempfile::TempDir {
    let toml = match target {
        Some(t) => format!("[project]\ntarget = \"{t}\"\n{TOML}"),
        None => TOML.to_string(),
    };
    project(&[
        ("sluice.toml", &toml),
        ("data/signups.csv", SIGNUPS),
        ("data/erasure_requests.csv", "email_hash\n"),
        ("models/delivery.sql", &delivery_model("delta")),
        ("models/delivery_parquet.sql", &delivery_model("parquet")),
    ])
}

/// Run Python in the test venv and parse the JSON it prints. deltalake's threads can abort
/// the interpreter at exit, so the script leaves with `os._exit` once its output is out.
fn py(script: &str) -> serde_json::Value {
    let script = format!(
        "import json, os, sys\nfrom deltalake import DeltaTable\nimport polars as pl\nimport pyarrow.dataset as ds\n{script}\nsys.stdout.flush()\nos._exit(0)\n"
    );
    common::server::python_json(&script)
}

/// Python that defines `rows(table)` (sorted by id, dates as text) and `opts`, the storage
/// options of `moto` (none for local tables).
fn py_prelude(moto: Option<&Moto>) -> String {
    let opts = match moto {
        Some(m) => format!(
            "{{'AWS_ENDPOINT_URL': '{}', 'AWS_ALLOW_HTTP': 'true', 'AWS_ACCESS_KEY_ID': 'k', 'AWS_SECRET_ACCESS_KEY': 's', 'AWS_REGION': 'us-east-1'}}",
            m.endpoint()
        ),
        None => "None".into(),
    };
    format!(
        "opts = {opts}\n\
         def rows(table):\n    \
         out = [{{k: (str(v) if hasattr(v, 'isoformat') else v) for k, v in r.items()}} for r in table.to_pylist()]\n    \
         return sorted(out, key=lambda r: r['id'])\n"
    )
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn delta_output_reads_in_deltalake_and_polars_as_the_parquet_run() {
    let p = delta_project(None);
    ok(&run(p.path(), &["run"]));
    ok(&run(p.path(), &["run"]));
    let table = p.path().join("target/delivery");
    let parquet = p.path().join("target/delivery_parquet");
    let got = py(&format!(
        "{prelude}\n\
t = DeltaTable('{table}')\n\
delta_rows = rows(t.to_pyarrow_table())\n\
first = rows(DeltaTable('{table}', version=0).to_pyarrow_table())\n\
polars_rows = pl.read_delta('{table}').sort('id').with_columns(pl.col('signed_up').cast(pl.Utf8)).to_dicts()\n\
parquet_rows = rows(ds.dataset('{parquet}', format='parquet', partitioning='hive').to_table())\n\
print(json.dumps({{'version': t.version(), 'delta': delta_rows, 'first': first, 'polars': polars_rows,\n\
  'parquet': parquet_rows, 'partitions': t.metadata().partition_columns,\n\
  'history': [[h['operation'], h.get('sluice', {{}}).get('rows')] for h in t.history()]}}))",
        prelude = py_prelude(None),
        table = table.display(),
        parquet = parquet.display()
    ));
    assert_eq!(got["version"], 1);
    assert_eq!(got["partitions"], serde_json::json!(["country"]));
    let delta = got["delta"].as_array().unwrap();
    assert_eq!(delta.len(), 5);
    // hash_pii of ann@example.com: its SHA-256 (hashlib.sha256(b"ann@example.com")).
    assert_eq!(
        delta[0],
        serde_json::json!({"id": 1, "name": "Ann",
            "email_hash": "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476",
            "country": "KR", "amount": 10, "signed_up": "2024-01-02"})
    );
    // The same rows whichever reader: the Parquet run of the same model, polars, and
    // version 0 (time travel) of the two identical runs.
    let parquet: Vec<serde_json::Value> = got["parquet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            // Hive partition values read back as text; Delta keeps the column's type.
            r["country"] = serde_json::json!(r["country"].as_str().unwrap());
            r
        })
        .collect();
    let by_name =
        |rows: &[serde_json::Value]| -> Vec<std::collections::BTreeMap<String, serde_json::Value>> {
            rows.iter()
                .map(|r| serde_json::from_value(r.clone()).unwrap())
                .collect()
        };
    assert_eq!(by_name(delta), by_name(&parquet));
    assert_eq!(by_name(delta), by_name(got["polars"].as_array().unwrap()));
    assert_eq!(got["first"], got["delta"]);
    assert_eq!(
        got["history"],
        serde_json::json!([
            ["CREATE OR REPLACE TABLE", 5],
            ["CREATE OR REPLACE TABLE", 5]
        ])
    );
    // sluice reads its own output through the log, not the folder (which holds both runs).
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT count(*) AS n, sum(amount) AS total FROM delivery"
        ),
        "n,total\n5,150\n"
    );
}

#[test]
fn a_failed_check_leaves_the_table_at_its_previous_version() {
    let p = delta_project(None);
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    let table = p.path().join("target/delivery");
    let files_before = walk(&table).len();
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}5,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    let r = run(p.path(), &["run", "--select", "delivery"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("model `delivery`: check failed: unique(id); nothing published"),
        "{}",
        r.stderr
    );
    let got = py(&format!(
        "t = DeltaTable('{}')\nprint(json.dumps([t.version(), t.to_pyarrow_table().num_rows]))",
        table.display()
    ));
    assert_eq!(got, serde_json::json!([0, 5]));
    // The failed run's files are gone too: the folder is as the first run left it.
    assert_eq!(walk(&table).len(), files_before);
}

#[test]
fn erase_and_vacuum_leave_no_erased_hash_anywhere_under_the_table() {
    let p = delta_project(None);
    // A warning that fails on every row: its sample values (hashes) must not reach the
    // commit info either.
    std::fs::write(
        p.path().join("models/delivery.sql"),
        delivery_model("delta").replace(
            "[columns.name]",
            "[columns.email_hash]\nchecks = [{ matches = \"^never\", severity = \"warn\" }]\n[columns.name]",
        ),
    )
    .unwrap();
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    let cy = query_csv(p.path(), "SELECT hash_pii('cy@example.com', 'email') AS h");
    let cy = cy.lines().nth(1).unwrap().to_string();
    let table = p.path().join("target/delivery");
    let holding = |needle: &str| -> Vec<String> {
        walk(&table)
            .into_iter()
            .filter(|f| {
                let bytes = std::fs::read(f).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .map(|f| f.strip_prefix(&table).unwrap().display().to_string())
            .collect()
    };
    // Both runs' files hold the hash, so the scan below can find it.
    assert_eq!(holding(&cy).len(), 2, "{:?}", walk(&table));
    std::fs::write(
        p.path().join("data/erasure_requests.csv"),
        format!("email_hash\n{cy}\n"),
    )
    .unwrap();
    let r = run(p.path(), &["erase"]);
    ok(&r);
    assert!(
        r.stderr.contains("delivery") && r.stderr.contains("removed 1 rows: rewrote 1 of 3 files"),
        "{}",
        r.stderr
    );
    // Erased from the latest version; the older versions (time travel) still hold it.
    let latest = query_csv(p.path(), "SELECT id FROM delivery ORDER BY id");
    assert_eq!(latest, "id\n1\n2\n4\n5\n");
    assert_eq!(holding(&cy).len(), 2);
    let r = run(p.path(), &["vacuum", "delivery", "--retain", "0h"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("add --confirm"), "{}", r.stderr);
    let r = run(
        p.path(),
        &["vacuum", "delivery", "--retain", "0h", "--confirm"],
    );
    ok(&r);
    assert!(r.stdout.contains("delivery"), "{}", r.stdout);
    assert_eq!(holding(&cy), Vec::<String>::new());

    // The log holds no statistics of the personal columns, and partitions no PII.
    let log = table.join("_delta_log");
    let mut stats_columns = std::collections::BTreeSet::new();
    for f in walk(&log) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(stats) = action["add"]["stats"].as_str() {
                let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
                for part in ["minValues", "maxValues", "nullCount"] {
                    for k in stats[part].as_object().unwrap().keys() {
                        stats_columns.insert(k.clone());
                    }
                }
            }
        }
    }
    assert_eq!(
        stats_columns.into_iter().collect::<Vec<_>>(),
        ["amount", "id", "signed_up"]
    );
    let got = py(&format!(
        "t = DeltaTable('{}')\nprint(json.dumps([t.version(), sorted(r['id'] for r in t.to_pyarrow_table().to_pylist()), t.metadata().configuration, [h['operation'] for h in t.history()]]))",
        table.display()
    ));
    assert_eq!(got[1], serde_json::json!([1, 2, 4, 5]));
    assert_eq!(
        got[2],
        serde_json::json!({"delta.dataSkippingStatsColumns": "id,amount,signed_up"})
    );
    assert_eq!(
        got[3],
        serde_json::json!([
            "VACUUM END",
            "VACUUM START",
            "DELETE",
            "CREATE OR REPLACE TABLE",
            "CREATE OR REPLACE TABLE"
        ])
    );

    // Time travel to a version whose files the vacuum removed says so.
    std::fs::write(
        p.path().join("sluice.toml"),
        format!("{TOML}[sources.delivery_v0]\nlocation = \"target/delivery\"\nformat = \"delta\"\nversion = 0\n"),
    )
    .unwrap();
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM delivery_v0"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("source `delivery_v0` (target/delivery): version 0 can no longer be read: 3 of its 3 files were deleted by a vacuum"),
        "{}",
        r.stderr
    );
}

#[test]
fn delta_sources_written_by_deltalake_with_time_travel() {
    let p = project(&[(
        "sluice.toml",
        "[sources.orders]\nlocation = \"lake/orders\"\nformat = \"delta\"\n\
         [sources.orders_v0]\nlocation = \"lake/orders\"\nformat = \"delta\"\nversion = 0\n\
         [sources.orders_v5]\nlocation = \"lake/orders\"\nformat = \"delta\"\nversion = 5\n",
    )]);
    let table = p.path().join("lake/orders");
    // Two commits a second and a half apart; the time between them pins version 0.
    let between = py(&format!(
        "import pyarrow as pa, time, datetime\nfrom deltalake import write_deltalake\n\
write_deltalake('{t}', pa.table({{'id': [1, 2], 'sku': ['a', 'b'], 'day': ['2026-11-01', '2026-11-01']}}), partition_by=['day'])\n\
time.sleep(1.5)\n\
write_deltalake('{t}', pa.table({{'id': [3], 'sku': ['c'], 'day': ['2026-11-02']}}), mode='append', partition_by=['day'])\n\
first = min(h['timestamp'] for h in DeltaTable('{t}').history())\n\
at = datetime.datetime.fromtimestamp((first + 700) / 1000, datetime.timezone.utc)\n\
print(json.dumps(at.isoformat(timespec='milliseconds')))",
        t = table.display()
    ));
    let toml = p.path().join("sluice.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "[sources.orders_then]\nlocation = \"lake/orders\"\nformat = \"delta\"\ntimestamp = \"{}\"\n\
         [sources.orders_before]\nlocation = \"lake/orders\"\nformat = \"delta\"\ntimestamp = \"2000-01-01\"\n",
        between.as_str().unwrap()
    ));
    std::fs::write(&toml, text).unwrap();
    assert_eq!(
        query_csv(p.path(), "SELECT id FROM orders_then ORDER BY id"),
        "id\n1\n2\n"
    );
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM orders_before"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("source `orders_before` (lake/orders): cannot read the version as of 2000-01-01 00:00:00 UTC"),
        "{}",
        r.stderr
    );
    assert_eq!(
        query_csv(p.path(), "SELECT id, sku, day FROM orders ORDER BY id"),
        "id,sku,day\n1,a,2026-11-01\n2,b,2026-11-01\n3,c,2026-11-02\n"
    );
    assert_eq!(
        query_csv(p.path(), "SELECT id, sku, day FROM orders_v0 ORDER BY id"),
        "id,sku,day\n1,a,2026-11-01\n2,b,2026-11-01\n"
    );
    // A path names a Delta table by its log too.
    assert_eq!(
        query_csv(
            p.path(),
            &format!("SELECT count(*) AS n FROM '{}'", table.display())
        ),
        "n\n3\n"
    );
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM orders_v5"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "source `orders_v5` (lake/orders): cannot read version 5: the latest version is 1"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn delta_on_s3_commits_only_checked_runs_and_reads_back_in_deltalake() {
    let moto = Moto::start();
    moto.bucket("lake");
    let p = delta_project(Some("s3://lake/out"));
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(&run_env(p.path(), &["run"], &env));
    let read = || {
        py(&format!(
            "{prelude}\nt = DeltaTable('s3://lake/out/delivery', storage_options=opts)\n\
parquet = ds.dataset('lake/out/delivery_parquet', format='parquet', partitioning='hive', filesystem=__import__('pyarrow.fs', fromlist=['S3FileSystem']).S3FileSystem(endpoint_override='{endpoint}', access_key='k', secret_key='s', region='us-east-1', scheme='http'))\n\
print(json.dumps({{'version': t.version(), 'rows': rows(t.to_pyarrow_table()), 'parquet': rows(parquet.to_table())}}))",
            prelude = py_prelude(Some(&moto)),
            endpoint = moto.endpoint()
        ))
    };
    let first = read();
    assert_eq!(first["version"], 0);
    let ids: Vec<i64> = first["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // The Parquet run of the same model on the same store holds the same rows.
    let by_name =
        |rows: &serde_json::Value| -> Vec<std::collections::BTreeMap<String, serde_json::Value>> {
            serde_json::from_value(rows.clone()).unwrap()
        };
    assert_eq!(by_name(&first["rows"]), by_name(&first["parquet"]));
    // A duplicated id fails the check: no commit, and the run's files are removed.
    let keys_before = moto.keys("lake", "out/delivery/");
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}5,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    let r = run_env(p.path(), &["run", "--select", "delivery"], &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(read()["version"], 0);
    assert_eq!(moto.keys("lake", "out/delivery/"), keys_before);
    // A good run commits version 1, which sluice and deltalake both read.
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}6,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    ok(&run_env(p.path(), &["run", "--select", "delivery"], &env));
    let second = read();
    assert_eq!(second["version"], 1);
    assert_eq!(second["rows"].as_array().unwrap().len(), 6);
    let r = run_env(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM delivery",
        ],
        &env,
    );
    ok(&r);
    assert_eq!(r.stdout, "n\n6\n");
    assert!(!r.stderr.contains("testing-secret"));

    // A fresh checkout (no local run history) compares its volume check with the rows the
    // table's log holds: half the signups fail it, and nothing is committed.
    let fresh = project(&[
        (
            "sluice.toml",
            &format!("[project]\ntarget = \"s3://lake/out\"\n{TOML}"),
        ),
        (
            "data/signups.csv",
            &SIGNUPS.lines().take(4).collect::<Vec<_>>().join("\n"),
        ),
        ("data/erasure_requests.csv", "email_hash\n"),
        (
            "models/delivery.sql",
            &delivery_model("delta").replace(
                "[columns.id]",
                "[[checks]]\nvolume = { max_change_pct = 30 }\n[columns.id]",
            ),
        ),
    ]);
    let r = run_env(fresh.path(), &["run", "--require-baseline"], &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "check volume fail: 3 rows vs 6 published (50.0% change, at most 30% allowed)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(read()["version"], 1);

    // A Delta source on S3 that deltalake wrote, at its latest version and at version 0.
    py(&format!(
        "{prelude}\nimport pyarrow as pa\nfrom deltalake import write_deltalake\n\
opts = dict(opts, AWS_S3_ALLOW_UNSAFE_RENAME='true')\n\
write_deltalake('s3://lake/src/orders', pa.table({{'id': [1, 2], 'sku': ['a', 'b']}}), storage_options=opts)\n\
write_deltalake('s3://lake/src/orders', pa.table({{'id': [3], 'sku': ['c']}}), mode='append', storage_options=opts)\n\
print('{{}}')",
        prelude = py_prelude(Some(&moto))
    ));
    std::fs::write(
        fresh.path().join("sluice.toml"),
        format!("{TOML}[sources.orders]\nlocation = \"s3://lake/src/orders\"\nformat = \"delta\"\n\
                 [sources.orders_v0]\nlocation = \"s3://lake/src/orders\"\nformat = \"delta\"\nversion = 0\n"),
    )
    .unwrap();
    let csv = |sql: &str| {
        let r = run_env(fresh.path(), &["shell", "--format", "csv", "-c", sql], &env);
        ok(&r);
        r.stdout
    };
    assert_eq!(
        csv("SELECT id, sku FROM orders ORDER BY id"),
        "id,sku\n1,a\n2,b\n3,c\n"
    );
    assert_eq!(
        csv("SELECT id, sku FROM orders_v0 ORDER BY id"),
        "id,sku\n1,a\n2,b\n"
    );
}

#[test]
fn killed_runs_always_leave_a_readable_version() {
    // Big enough that a run takes a while: the kills land while files are written, while
    // checks run, and around the commit.
    let rows = 200_000;
    let write_batch = |p: &Path, batch: u32| {
        let mut csv = String::from("id,name,email,country,amount,signed_up\n");
        for i in 0..rows {
            csv.push_str(&format!(
                "{i},n{i},u{i}@example.com,{},{batch},2024-01-02\n",
                ["KR", "US", "JP"][i % 3]
            ));
        }
        std::fs::write(p.join("data/signups.csv"), csv).unwrap();
    };
    let p = delta_project(None);
    write_batch(p.path(), 0);
    // Kills at fractions of how long an uninterrupted run takes on this machine now.
    let started = std::time::Instant::now();
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    let whole = started.elapsed().as_millis() as f64;
    let table = p.path().join("target/delivery");
    let read = || {
        py(&format!(
            "t = DeltaTable('{}')\nimport pyarrow.compute as pc\na = t.to_pyarrow_table().column('amount')\n\
print(json.dumps([t.version(), len(a), sorted(set(a.to_pylist()))]))",
            table.display()
        ))
    };
    let mut committed = 0u32;
    let fractions = [0.05, 0.3, 0.6, 0.8, 0.9, 0.95, 1.0, 1.1];
    for (k, fraction) in fractions.into_iter().enumerate() {
        let delay_ms = (whole * fraction) as u64;
        let batch = k as u32 + 1;
        write_batch(p.path(), batch);
        let mut child = sluice()
            .arg("--project")
            .arg(p.path())
            .args(["run", "--select", "delivery"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let seen = read();
        // One whole version: every row from one batch, the last committed or this one.
        let batches = seen[2].as_array().unwrap();
        assert_eq!(seen[1], rows, "after a kill at {delay_ms} ms: {seen}");
        assert_eq!(batches.len(), 1, "after a kill at {delay_ms} ms: {seen}");
        let b = batches[0].as_u64().unwrap() as u32;
        assert!(
            b == committed || b == batch,
            "after a kill at {delay_ms} ms: batch {b}, expected {committed} or {batch}"
        );
        committed = b;
    }
    // The next run commits; vacuum then removes what the killed runs left behind, so the
    // folder holds exactly the latest version's files.
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    ok(&run(p.path(), &["vacuum", "--retain", "0h", "--confirm"]));
    let got = py(&format!(
        "t = DeltaTable('{0}')\nprint(json.dumps(sorted(f.removeprefix('file://').removeprefix('{0}/') for f in t.file_uris())))",
        table.display()
    ));
    let mut on_disk: Vec<String> = walk(&table)
        .into_iter()
        .map(|f| f.strip_prefix(&table).unwrap().display().to_string())
        .filter(|f| !f.starts_with("_delta_log"))
        .collect();
    on_disk.sort();
    assert_eq!(serde_json::json!(on_disk), got);
}

#[test]
fn all_or_nothing_commits_no_delta_model_when_a_check_fails() {
    let p = delta_project(None);
    ok(&run(p.path(), &["run"]));
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}5,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    // Both models fail the unique check here; make the Parquet one pass so only the Delta
    // model's failure stops the run.
    std::fs::write(
        p.path().join("models/delivery_parquet.sql"),
        delivery_model("parquet").replace(
            "checks = [\"not_null\", \"unique\"]",
            "checks = [\"not_null\"]",
        ),
    )
    .unwrap();
    let extra = "models/other_delta.sql";
    std::fs::write(
        p.path().join(extra),
        "/* @config\nformat = \"delta\"\n*/\nSELECT country, count(*) AS n FROM signups GROUP BY country\n",
    )
    .unwrap();
    let r = run(p.path(), &["run", "--all-or-nothing"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        !p.path().join("target/other_delta/_delta_log").exists(),
        "{}",
        r.stderr
    );
    let got = py(&format!(
        "print(json.dumps(DeltaTable('{}').version()))",
        p.path().join("target/delivery").display()
    ));
    assert_eq!(got, 0);
}

#[test]
fn delta_version_and_last_commit_in_the_shell_the_server_and_docs() {
    let p = delta_project(None);
    let toml = p.path().join("sluice.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("[server.users.analyst]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\n");
    std::fs::write(&toml, text).unwrap();
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let run_id = results["metadata"]["run_id"].as_str().unwrap();

    let r = run_stdin(p.path(), &["shell"], "\\d delivery\n");
    ok(&r);
    let table = p.path().join("target/delivery");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Delta table"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(
        line.starts_with(&format!(
            "Delta table {}: version 1, last commit ",
            table.display()
        )) && line.ends_with(&format!(
            "UTC (CREATE OR REPLACE TABLE, run {run_id}, 5 rows)"
        )),
        "{line}"
    );

    let history =
        "SELECT version, operation, rows, checks FROM delta_history('delivery') ORDER BY version";
    let expected =
        "1,CREATE OR REPLACE TABLE,5,2 of 2 passed\n0,CREATE OR REPLACE TABLE,5,2 of 2 passed\n";
    let expected_sorted: String = expected.lines().rev().map(|l| format!("{l}\n")).collect();
    assert_eq!(
        query_csv(p.path(), history),
        format!("version,operation,rows,checks\n{expected_sorted}")
    );
    let server = common::server::Server::start(p.path(), &[]);
    let r = server.psql(common::server::PASSWORD, history);
    ok(&r);
    assert_eq!(r.stdout, expected_sorted);
    // A running server reads each new version as it is committed, and no file a vacuum
    // deleted (it held version 1's file list before).
    let count = "SELECT count(*) FROM delivery";
    assert_eq!(server.psql(common::server::PASSWORD, count).stdout, "5\n");
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}6,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    assert_eq!(server.psql(common::server::PASSWORD, count).stdout, "6\n");
    ok(&run(p.path(), &["vacuum", "--retain", "0h", "--confirm"]));
    assert_eq!(server.psql(common::server::PASSWORD, count).stdout, "6\n");
    let r = server.psql(
        common::server::PASSWORD,
        "SELECT * FROM delta_history('signups')",
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("delta_history: `signups` is neither a Delta source, a model with format = \"delta\", nor a path"),
        "{}",
        r.stderr
    );
    server.stop();

    let site = p.path().join("site");
    ok(&run(p.path(), &["docs", "--out", site.to_str().unwrap()]));
    let html = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(
        html.contains("<dt>Delta table</dt><dd>version 4, last commit VACUUM END at "),
        "{html}"
    );
    assert!(
        html.contains("<dt>Published</dt><dd>6 rows in 3 files, "),
        "{html}"
    );
}

#[test]
fn incremental_delta_models_append_and_merge_in_one_commit_each() {
    let p = project(&[
        ("sluice.toml", TOML),
        ("data/signups.csv", SIGNUPS),
        ("data/erasure_requests.csv", "email_hash\n"),
        (
            "models/appended.sql",
            "/* @config\nmaterialized = \"incremental\"\nformat = \"delta\"\nwatermark = \"id\"\n*/\nSELECT id, country, amount FROM signups\n",
        ),
        (
            "models/merged.sql",
            "/* @config\nmaterialized = \"incremental\"\nformat = \"delta\"\nunique_key = [\"id\"]\n*/\nSELECT id, country, amount FROM signups\n",
        ),
    ]);
    ok(&run(p.path(), &["run"]));
    // One new signup, and Bob's amount corrected.
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!(
            "{}6,Fay,fay@example.com,US,60,2024-06-07\n",
            SIGNUPS.replace("2,Bob,bob@example.com,US,20", "2,Bob,bob@example.com,US,25")
        ),
    )
    .unwrap();
    ok(&run(p.path(), &["run"]));
    let read = |name: &str| {
        py(&format!(
            "t = DeltaTable('{}')\nrows = sorted((r['id'], r['amount']) for r in t.to_pyarrow_table().to_pylist())\n\
print(json.dumps({{'version': t.version(), 'files': len(t.file_uris()), 'rows': rows, 'ops': [h['operation'] for h in t.history()]}}))",
            p.path().join("target").join(name).display()
        ))
    };
    // The watermark model appends the row above the published maximum id (Bob's change
    // is below it, so it stays as first published) in a WRITE commit that adds one file.
    assert_eq!(
        read("appended"),
        serde_json::json!({"version": 1, "files": 2,
            "rows": [[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60]],
            "ops": ["WRITE", "CREATE OR REPLACE TABLE"]})
    );
    // The unique_key model replaces Bob's row and adds Fay's: one commit replacing the table.
    assert_eq!(
        read("merged"),
        serde_json::json!({"version": 1, "files": 1,
            "rows": [[1, 10], [2, 25], [3, 30], [4, 40], [5, 50], [6, 60]],
            "ops": ["CREATE OR REPLACE TABLE", "CREATE OR REPLACE TABLE"]})
    );
}

#[test]
fn partitioning_a_delta_table_by_a_personal_column_is_refused() {
    let p = delta_project(None);
    std::fs::write(
        p.path().join("models/delivery.sql"),
        delivery_model("delta").replace(
            "partition_by = [\"country\"]",
            "partition_by = [\"email_hash\"]",
        ),
    )
    .unwrap();
    let r = run(p.path(), &["run", "--select", "delivery"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("partition_by column `email_hash` holds personal data, and a Delta table writes partition values into its log; partition by another column"),
        "{}",
        r.stderr
    );
    assert!(!p.path().join("target/delivery/_delta_log").exists());
}

#[test]
fn one_run_at_a_time_writes_a_delta_table() {
    let p = delta_project(None);
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    let table = p.path().join("target/delivery");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = |pid: u32| {
        std::fs::write(
            table.join("_sluice_writing.json"),
            format!(
                r#"{{"run":"other-run","host":"{}","pid":{pid},"since":"2026-11-29T10:00:00+00:00"}}"#,
                host.trim()
            ),
        )
        .unwrap()
    };
    // A run that is alive (this test) holds the table: the run is refused, nothing written.
    lock(std::process::id());
    let files_before = walk(&table).len();
    let r = run(p.path(), &["run", "--select", "delivery"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "run other-run (pid {} on {}, since 2026-11-29T10:00:00+00:00) is writing this Delta table; one run at a time writes a table. If that run is gone, delete {}/_sluice_writing.json",
            std::process::id(),
            host.trim(),
            table.display()
        )),
        "{}",
        r.stderr
    );
    let r = run(p.path(), &["vacuum", "--retain", "0h", "--confirm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("is writing this Delta table"),
        "{}",
        r.stderr
    );
    assert_eq!(walk(&table).len(), files_before);
    // A lock left by a killed run on this machine is taken over, and released after.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    lock(dead);
    ok(&run(p.path(), &["run", "--select", "delivery"]));
    assert!(!table.join("_sluice_writing.json").exists());
    let got = py(&format!(
        "print(json.dumps(DeltaTable('{}').version()))",
        table.display()
    ));
    assert_eq!(got, 1);
}

#[test]
fn delta_history_is_listed_and_its_example_runs_on_the_example_project() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("sql"), dir.path());
    let _ = std::fs::remove_dir_all(dir.path().join("target"));
    ok(&run(dir.path(), &["run"]));
    let listed = run(dir.path(), &["functions", "--format", "csv"]);
    ok(&listed);
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("delta_history,table,"))
        .unwrap_or_else(|| panic!("{}", listed.stdout));
    let example =
        "SELECT version, operation, run_id, rows, checks FROM delta_history('partner_players')";
    assert!(line.ends_with(&format!("\"{example}\"")), "{line}");
    let rows = query_csv(dir.path(), example);
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rows,
        format!(
            "version,operation,run_id,rows,checks\n0,CREATE OR REPLACE TABLE,{},108,4 of 4 passed\n",
            results["metadata"]["run_id"].as_str().unwrap()
        )
    );
}

#[test]
fn a_delta_commit_is_taken_back_when_a_later_publish_fails_under_all_or_nothing() {
    let p = delta_project(None);
    std::fs::remove_file(p.path().join("models/delivery_parquet.sql")).unwrap();
    ok(&run(p.path(), &["run"]));
    // A Parquet model downstream (it reads the Delta model's staged files) whose publish
    // fails after every check passed: its folder's parent is a file.
    std::fs::write(
        p.path().join("models/z_blocked.sql"),
        "/* @config\nmaterialized = \"table\"\nlocation = \"blocker/out\"\n*/\nSELECT id FROM delivery\n",
    )
    .unwrap();
    std::fs::write(p.path().join("target/blocker"), "not a folder").unwrap();
    std::fs::write(
        p.path().join("data/signups.csv"),
        format!("{SIGNUPS}6,Fay,fay@example.com,US,60,2024-06-07\n"),
    )
    .unwrap();
    let table = p.path().join("target/delivery");
    let r = run(p.path(), &["run", "--all-or-nothing"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("publishing `z_blocked` failed; 1 published model(s) rolled back"),
        "{}",
        r.stderr
    );
    // The table is back at the first run's rows, by a restore commit after the taken-back
    // one, and the taken-back commit's files are gone.
    let got = py(&format!(
        "t = DeltaTable('{}')\nprint(json.dumps([t.version(), sorted(r['id'] for r in t.to_pyarrow_table().to_pylist()), [h['operation'] for h in t.history()], len(t.file_uris())]))",
        table.display()
    ));
    assert_eq!(
        got,
        serde_json::json!([
            2,
            [1, 2, 3, 4, 5],
            [
                "RESTORE",
                "CREATE OR REPLACE TABLE",
                "CREATE OR REPLACE TABLE"
            ],
            3
        ])
    );
    let parquet_files = walk(&table)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(parquet_files, 3);
}
