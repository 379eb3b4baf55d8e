//! S3 end to end against a real S3-compatible server (moto) on loopback: sources, globs and
//! hive partitions by URL, models published to S3 with the manifest protocol, another client
//! reading the result, interrupted publishes, and the error texts.

mod common;
use common::s3::Moto;
use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn sluice_s3(moto: &Moto, project: &Path, args: &[&str]) -> Run {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_env(project, args, &env)
}

fn csv(moto: &Moto, project: &Path, sql: &str) -> String {
    let r = sluice_s3(moto, project, &["shell", "--format", "csv", "-c", sql]);
    assert_eq!(r.code, 0, "{sql}\n{}", r.stderr);
    assert!(!r.stderr.contains("testing-secret"), "{}", r.stderr);
    r.stdout
}

fn raw_events(moto: &Moto) {
    moto.bucket("raw");
    moto.put("raw", "flat/a.csv", "id,email\n1,a@x.com\n2,b@x.com\n");
    moto.put("raw", "flat/b.csv", "id,email\n3,c@x.com\n");
    moto.put("raw", "flat/notes.txt", "not data");
    moto.put("raw", "events/day=1/part.csv", "id,country\n1,KR\n2,US\n");
    moto.put(
        "raw",
        "events/day=2/part.csv",
        "id,country\n3,KR\n4,JP\n5,KR\n",
    );
}

#[test]
fn s3_globs_prefixes_hive_partitions_and_external_tables() {
    let moto = Moto::start();
    raw_events(&moto);
    let p = project(&[(
        "sluice.toml",
        "[sources.events]\nlocation = \"s3://raw/events\"\nformat = \"csv\"\n",
    )]);
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT id, email FROM 's3://raw/flat/*.csv' ORDER BY id"
        ),
        "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n"
    );
    // A glob across hive folders keeps the partition column.
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT day, count(*) AS n FROM 's3://raw/events/*/*.csv' GROUP BY day ORDER BY day"
        ),
        "day,n\n1,2\n2,3\n"
    );
    // A prefix by URL: the format comes from the files in it.
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT count(*) AS n FROM 's3://raw/events/'"
        ),
        "n\n5\n"
    );
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT day, count(*) AS n FROM events GROUP BY day ORDER BY day"
        ),
        "day,n\n1,2\n2,3\n"
    );
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "CREATE EXTERNAL TABLE flat STORED AS CSV LOCATION 's3://raw/flat/a.csv' OPTIONS ('format.has_header' 'true'); SELECT max(id) AS m FROM flat"
        ),
        "m\n2\n"
    );
}

#[test]
fn s3_errors_name_bucket_and_key_never_the_secret() {
    let moto = Moto::start();
    raw_events(&moto);
    let p = project(&[]);
    let r = sluice_s3(
        &moto,
        p.path(),
        &["shell", "-c", "SELECT * FROM 's3://no-such-bucket/x/*.csv'"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("bucket `no-such-bucket` does not exist"),
        "{}",
        r.stderr
    );
    let r = sluice_s3(
        &moto,
        p.path(),
        &["shell", "-c", "SELECT * FROM 's3://raw/missing/*.csv'"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no csv files found"), "{}", r.stderr);
    // Nothing listens on this port: the endpoint is named as the problem.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let mut env = moto.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", endpoint));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = run_env(
        p.path(),
        &["shell", "-c", "SELECT * FROM 's3://raw/flat/*.csv'"],
        &env,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot reach the S3 endpoint for bucket `raw`"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("testing-secret"), "{}", r.stderr);
}

#[test]
fn denied_access_is_said_plainly() {
    // This server checks credentials: keys it never issued are refused.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let p = project(&[]);
    let r = sluice_s3(
        &moto,
        p.path(),
        &["shell", "-c", "SELECT * FROM 's3://raw/flat/*.csv'"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("access denied to s3://raw/flat/*.csv: check the credentials"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("testing-secret"), "{}", r.stderr);
}

#[test]
fn aws_profile_from_the_shared_files() {
    let moto = Moto::start();
    raw_events(&moto);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[dev]\naws_access_key_id = dev-key\naws_secret_access_key = dev-secret-never-printed\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile dev]\nregion = us-east-1\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let p = project(&[]);
    let home_dir = home.path().to_str().unwrap();
    let r = run_env(
        p.path(),
        &[
            "shell",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM 's3://raw/flat/*.csv'",
        ],
        &[
            ("HOME", home_dir),
            ("AWS_PROFILE", "dev"),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "n\n3\n");
    let r = run_env(
        p.path(),
        &["shell", "-c", "SELECT count(*) FROM 's3://raw/flat/*.csv'"],
        &[("HOME", home_dir), ("AWS_PROFILE", "nope")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "AWS profile `nope` (from AWS_PROFILE) is not in the shared credentials or config file"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("dev-secret"), "{}", r.stderr);
}

const DELIVERY_TOML: &str = "[project]\ntarget = \"s3://out/delivery\"\n[sources.events]\nlocation = \"s3://raw/events/\"\nformat = \"csv\"\n";
const DELIVERY_MODEL: &str = "/* @config\nmaterialized = \"table\"\npartition_by = [\"country\"]\n[columns.id]\nchecks = [\"not_null\", \"unique\"]\n[columns.country]\nchecks = [{ accepted_values = [\"KR\", \"US\", \"JP\"] }]\n*/\nSELECT CAST(id AS BIGINT) AS id, CAST(day AS BIGINT) AS day, country FROM events\n";

/// Rows of the published model, read by pyarrow through the manifest's file list.
fn read_back(moto: &Moto) -> String {
    moto.boto(
        "import pyarrow.parquet as pq\n\
         m = json.loads(s3.get_object(Bucket='out', Key='delivery/by_country/_sluice.json')['Body'].read())\n\
         rows = []\n\
         for f in m['files']:\n\
         \x20   country = f['path'].split('/')[0].split('=')[1]\n\
         \x20   t = pq.read_table(io.BytesIO(s3.get_object(Bucket='out', Key='delivery/by_country/' + f['path'])['Body'].read()))\n\
         \x20   rows += [(r['id'], country) for r in t.to_pylist()]\n\
         print(m['rows'], sorted(rows))\n\
         # pyarrow's threads can abort a normal interpreter exit; leave at once.\n\
         sys.stdout.flush()\n\
         import os\n\
         os._exit(0)",
    )
}

#[test]
fn models_publish_to_s3_with_the_manifest_protocol() {
    let moto = Moto::start();
    raw_events(&moto);
    moto.bucket("out");
    let p = project(&[
        ("sluice.toml", DELIVERY_TOML),
        ("models/by_country.sql", DELIVERY_MODEL),
    ]);
    let r = sluice_s3(&moto, p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_back(&moto).trim(),
        "5 [(1, 'KR'), (2, 'US'), (3, 'KR'), (4, 'JP'), (5, 'KR')]"
    );
    let first = moto.keys("out", "delivery/by_country/");
    assert!(first.contains(&"delivery/by_country/_SUCCESS".to_string()));
    assert!(first
        .iter()
        .any(|k| k.starts_with("delivery/by_country/country=KR/")));
    // sluice reads the published model back (through its manifest) in the shell.
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT country, count(*) AS n FROM by_country GROUP BY country ORDER BY country"
        ),
        "country,n\nJP,1\nKR,3\nUS,1\n"
    );
    // A second run replaces the output: new files, the old ones deleted after the manifest.
    moto.put("raw", "events/day=3/part.csv", "id,country\n6,US\n");
    let r = sluice_s3(&moto, p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let second = moto.keys("out", "delivery/by_country/");
    let data = |keys: &[String]| -> Vec<String> {
        keys.iter().filter(|k| !k.contains("/_")).cloned().collect()
    };
    assert!(
        data(&first).iter().all(|k| !second.contains(k)),
        "{second:?}"
    );
    assert_eq!(
        read_back(&moto).trim(),
        "6 [(1, 'KR'), (2, 'US'), (3, 'KR'), (4, 'JP'), (5, 'KR'), (6, 'US')]"
    );
    // A failing check publishes nothing: the manifest and its files stay as they were.
    moto.put("raw", "events/day=4/part.csv", "id,country\n7,FR\n");
    let manifest = moto.get("out", "delivery/by_country/_sluice.json");
    let r = sluice_s3(&moto, p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        moto.get("out", "delivery/by_country/_sluice.json"),
        manifest
    );
    assert_eq!(moto.keys("out", "delivery/by_country/"), second);
}

#[test]
fn interrupted_s3_publishes_leave_a_complete_version() {
    let moto = Moto::start();
    raw_events(&moto);
    moto.bucket("out");
    let p = project(&[
        (
            "sluice.toml",
            &format!("{DELIVERY_TOML}[storage.s3]\ntimeout_secs = 2\n"),
        ),
        ("models/by_country.sql", DELIVERY_MODEL),
    ]);
    assert_eq!(sluice_s3(&moto, p.path(), &["run"]).code, 0);
    let old = "5 [(1, 'KR'), (2, 'US'), (3, 'KR'), (4, 'JP'), (5, 'KR')]";
    let new = "6 [(1, 'KR'), (2, 'US'), (3, 'KR'), (4, 'JP'), (5, 'KR'), (6, 'US')]";
    moto.put("raw", "events/day=3/part.csv", "id,country\n6,US\n");
    // Pause the server at different moments of a run, and also kill the run itself.
    for (k, delay_ms) in [0u64, 150, 300, 450, 600].into_iter().enumerate() {
        let env = moto.env();
        let mut cmd = sluice();
        cmd.arg("--project")
            .arg(p.path())
            .arg("run")
            .stdin(Stdio::null());
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        for (key, v) in &env {
            cmd.env(key, v);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if k % 2 == 0 {
            moto.signal("-STOP");
            let _ = child.wait();
            moto.signal("-CONT");
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        let seen = read_back(&moto);
        assert!(
            seen.trim() == old || seen.trim() == new,
            "after an interruption at {delay_ms} ms: {seen}"
        );
    }
    // The next run completes and tidies up what the interrupted ones left.
    assert_eq!(sluice_s3(&moto, p.path(), &["run"]).code, 0);
    assert_eq!(read_back(&moto).trim(), new);
    let manifest: serde_json::Value =
        serde_json::from_str(&moto.get("out", "delivery/by_country/_sluice.json")).unwrap();
    let listed: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("delivery/by_country/{}", f["path"].as_str().unwrap()))
        .collect();
    let data: Vec<String> = moto
        .keys("out", "delivery/by_country/")
        .into_iter()
        .filter(|k| !k.contains("/_"))
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(data, listed_sorted);
}

#[test]
fn erase_on_s3_rewrites_only_the_partition_with_a_listed_key() {
    let moto = Moto::start();
    raw_events(&moto);
    moto.bucket("out");
    let toml = format!("{DELIVERY_TOML}[sources.erase]\nlocation = \"data/erase.csv\"\n");
    let model = DELIVERY_MODEL.replace(
        "partition_by = [\"country\"]\n",
        "partition_by = [\"country\"]\nerasure = { list = \"erase\", column = \"id\" }\n",
    );
    let p = project(&[
        ("sluice.toml", toml.as_str()),
        ("data/erase.csv", "id\n99\n"),
        ("models/by_country.sql", model.as_str()),
    ]);
    let r = sluice_s3(&moto, p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = moto.keys("out", "delivery/by_country/");
    let untouched: Vec<&String> = before
        .iter()
        .filter(|k| k.contains("country=US/") || k.contains("country=JP/"))
        .collect();
    assert_eq!(untouched.len(), 2, "{before:?}");
    // Parquet is binary: compare the objects by digest.
    let digest = |k: &str| {
        moto.boto(&format!(
            "import hashlib\nprint(hashlib.sha256(s3.get_object(Bucket='out', Key='{k}')['Body'].read()).hexdigest())"
        ))
    };
    let us_bytes: Vec<String> = untouched.iter().map(|k| digest(k)).collect();

    // Event 3 (KR) must go.
    std::fs::write(p.path().join("data/erase.csv"), "id\n99\n3\n").unwrap();
    let r = sluice_s3(&moto, p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("removed 1 rows: rewrote 1 of 3 files (country=KR/"),
        "{}",
        r.stderr
    );
    assert_eq!(
        read_back(&moto).trim(),
        "4 [(1, 'KR'), (2, 'US'), (4, 'JP'), (5, 'KR')]"
    );
    let after = moto.keys("out", "delivery/by_country/");
    // The US and JP objects are the same objects; the old KR file is gone.
    for (k, bytes) in untouched.iter().zip(&us_bytes) {
        assert!(after.contains(k), "{k} was rewritten: {after:?}");
        assert_eq!(&digest(k), bytes);
    }
    let old_kr: Vec<&String> = before
        .iter()
        .filter(|k| k.contains("country=KR/"))
        .collect();
    assert!(old_kr.iter().all(|k| !after.contains(k)), "{after:?}");
    let r = sluice_s3(&moto, p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("nothing to erase (3 files checked)"),
        "{}",
        r.stderr
    );
    assert_eq!(moto.keys("out", "delivery/by_country/"), after);
}

#[test]
fn a_cluster_reads_s3_with_the_nodes_own_credentials() {
    let moto = Moto::start();
    raw_events(&moto);
    moto.bucket("out");
    // The same model twice: published to a local folder, and to S3.
    let local_toml =
        DELIVERY_TOML.replace("target = \"s3://out/delivery\"", "target = \"target/out\"");
    let p = project(&[
        ("sluice.toml", local_toml.as_str()),
        ("models/by_country.sql", DELIVERY_MODEL),
    ]);
    // The executors get the S3 settings from their own environment, as on real machines.
    let cluster = common::cluster::Cluster::start(p.path(), 2, &moto.env());
    assert_eq!(
        cluster.query(
            p.path(),
            "SELECT day, count(*) AS n, sum(CAST(id AS BIGINT)) AS ids FROM events GROUP BY day ORDER BY day"
        ),
        "day,n,ids\n1,2,3\n2,3,12\n"
    );
    let r = cluster.sluice(p.path(), &["run", "--cluster", &cluster.url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT country, count(*) AS n, sum(id) AS ids FROM by_country GROUP BY country ORDER BY country"
        ),
        "country,n,ids\nJP,1,4\nKR,3,9\nUS,1,2\n"
    );
    for node in std::iter::once(&cluster.scheduler).chain(&cluster.executors) {
        assert!(!node.log().contains("testing-secret"), "{}", node.log());
    }

    // The same project with its target on S3: the executors write the files, the client
    // checks them and commits the manifest. Every row matches the local run.
    let local_rows = csv(
        &moto,
        p.path(),
        "SELECT id, day, country FROM by_country ORDER BY id",
    );
    assert_eq!(local_rows.lines().count(), 6, "{local_rows}");
    std::fs::write(p.path().join("sluice.toml"), DELIVERY_TOML).unwrap();
    let r = cluster.sluice(p.path(), &["run", "--cluster", &cluster.url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        csv(
            &moto,
            p.path(),
            "SELECT id, day, country FROM by_country ORDER BY id"
        ),
        local_rows
    );
    assert_eq!(
        read_back(&moto).trim(),
        "5 [(1, 'KR'), (2, 'US'), (3, 'KR'), (4, 'JP'), (5, 'KR')]"
    );
    // A downstream model on the cluster reads the published S3 model through its manifest
    // (executors resolve the listed view to the bucket), and a failing check on the
    // cluster leaves the published version as it was.
    std::fs::write(
        p.path().join("models/kr_count.sql"),
        "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT count(*) AS n FROM by_country WHERE country = 'KR'\n",
    )
    .unwrap();
    moto.put("raw", "events/day=3/part.csv", "id,country\n6,FR\n");
    let manifest = moto.get("out", "delivery/by_country/_sluice.json");
    let r = cluster.sluice(p.path(), &["run", "--cluster", &cluster.url]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("check accepted_values(country) fail"),
        "{}",
        r.stderr
    );
    assert_eq!(
        moto.get("out", "delivery/by_country/_sluice.json"),
        manifest
    );
    std::fs::write(
        p.path().join("models/by_country.sql"),
        DELIVERY_MODEL.replace("FROM events", "FROM events WHERE country <> 'FR'"),
    )
    .unwrap();
    let r = cluster.sluice(p.path(), &["run", "--cluster", &cluster.url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(csv(&moto, p.path(), "SELECT n FROM kr_count"), "n\n3\n");
    // A stray copy of a KR file (what an interrupted publish leaves) is not in the
    // manifest: the scheduler plans the downstream model over the manifest's files only.
    let kr = moto
        .keys("out", "delivery/by_country/country=KR/")
        .into_iter()
        .next()
        .unwrap();
    moto.boto(&format!(
        "s3.copy_object(Bucket='out', Key='delivery/by_country/country=KR/stray.parquet', CopySource={{'Bucket': 'out', 'Key': '{kr}'}})"
    ));
    let r = cluster.sluice(
        p.path(),
        &["run", "--cluster", &cluster.url, "--select", "kr_count"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(csv(&moto, p.path(), "SELECT n FROM kr_count"), "n\n3\n");
    for node in std::iter::once(&cluster.scheduler).chain(&cluster.executors) {
        assert!(!node.log().contains("testing-secret"), "{}", node.log());
    }
}

#[test]
fn a_fresh_checkout_publishing_to_s3_compares_with_the_published_manifest() {
    let moto = Moto::start();
    raw_events(&moto);
    moto.bucket("out");
    let model = |select: &str| {
        format!("/* @config\nmaterialized = \"table\"\n[[checks]]\nvolume = {{ max_change_pct = 50 }}\n[[checks]]\nschema = \"locked\"\n*/\n{select}\n")
    };
    let full = "SELECT CAST(id AS BIGINT) AS id, country FROM events";
    let first = project(&[
        ("sluice.toml", DELIVERY_TOML),
        ("models/by_country.sql", &model(full)),
    ]);
    let r = sluice_s3(&moto, first.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The run history and results live next to the outputs, not only in this checkout.
    let history = moto.get("out", "delivery/_sluice/run_history.jsonl");
    assert!(history.contains("\"model\":\"by_country\""), "{history}");
    assert!(history.contains("\"rows\":5"), "{history}");
    assert!(moto
        .get("out", "delivery/_sluice/run_results.json")
        .contains("\"status\": \"success\""));
    let published = moto.keys("out", "delivery/by_country/");
    let manifest = moto.get("out", "delivery/by_country/_sluice.json");

    // A fresh copy of the project (no target/) whose sources lost 80% of the rows.
    let second = project(&[
        ("sluice.toml", DELIVERY_TOML),
        (
            "models/by_country.sql",
            &model(&format!("{full} WHERE CAST(id AS BIGINT) = 1")),
        ),
    ]);
    let r = sluice_s3(&moto, second.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "check volume fail: 1 rows vs 5 published (80.0% change, at most 50% allowed)"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("testing-secret"), "{}", r.stderr);
    assert_eq!(moto.keys("out", "delivery/by_country/"), published);
    assert_eq!(
        moto.get("out", "delivery/by_country/_sluice.json"),
        manifest
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(second.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let volume = results["results"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "volume")
        .unwrap();
    assert_eq!(
        volume["baseline"],
        "s3://out/delivery/by_country/_sluice.json"
    );

    // A third fresh copy drops a column: the locked schema fails, nothing changes.
    let third = project(&[
        ("sluice.toml", DELIVERY_TOML),
        (
            "models/by_country.sql",
            &model("SELECT CAST(id AS BIGINT) AS id FROM events"),
        ),
    ]);
    let r = sluice_s3(&moto, third.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("check schema fail: column country removed"),
        "{}",
        r.stderr
    );
    assert_eq!(moto.keys("out", "delivery/by_country/"), published);
}

#[test]
fn diff_against_an_output_published_on_s3() {
    let moto = Moto::start();
    moto.bucket("out");
    let p = project(&[
        (
            "sluice.toml",
            "[project]\ntarget = \"s3://out/delivery\"\n[sources.people]\nlocation = \"data/people.csv\"\n",
        ),
        ("data/people.csv", "id,name\n1,ann\n2,bob\n3,cy\n"),
        (
            "models/people_out.sql",
            "/* @config\nmaterialized = \"table\"\n*/\nSELECT id, name FROM people\n",
        ),
    ]);
    let r = sluice_s3(&moto, p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::write(
        p.path().join("data/people.csv"),
        "id,name\n1,ann\n2,rob\n4,dee\n",
    )
    .unwrap();
    let r = sluice_s3(
        &moto,
        p.path(),
        &["diff", "people_out", "--key", "id", "--format", "json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["right"], "s3://out/delivery/people_out/");
    assert_eq!(
        [
            &j["left_rows"],
            &j["right_rows"],
            &j["only_left"],
            &j["only_right"],
            &j["changed"]
        ],
        [3, 3, 1, 1, 1]
    );
    assert_eq!(j["columns"], serde_json::json!({"name": 1}));
    assert_eq!(
        j["examples"][2],
        serde_json::json!({"kind": "changed", "key": {"id": "2"}, "changes": {"name": ["rob", "bob"]}})
    );
    // Another environment's output given by URL, against a local copy of this one.
    let local = p.path().join("published-copy");
    let r = sluice_s3(
        &moto,
        p.path(),
        &[
            "diff",
            "people_out",
            "--key",
            "id",
            "--left",
            "s3://out/delivery/people_out",
            "--against",
            local.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!(
            "error: the right side {}/ cannot be read: no parquet files found",
            local.display()
        )),
        "{}",
        r.stderr
    );
}
