//! Personal data that cannot leak: a published model whose output carries a personal
//! source column's values unhashed is refused before anything is written, through any
//! number of views; hashes, counts, filters, joins and group keys are allowed; a model may
//! opt in with `allow_personal`, which run_results and the manifest record.

mod common;
use common::*;

const TOML: &str =
    "[sources.contacts]\nlocation = \"data/contacts.csv\"\npersonal = [\"email\", \"phone\"]\n\n\
[sources.orders]\nlocation = \"data/orders.csv\"\n";
const CONTACTS: &str = "id,email,phone,country\n1,ann@example.com,010-1,KR\n2,bob@example.com,010-2,US\n3,ann@example.com,010-3,KR\n";
const ORDERS: &str = "id,amount\n1,10\n2,20\n3,30\n";

const CLEAN: &str = "/* @config\nmaterialized = \"view\"\n*/\n\
SELECT id, lower(btrim(email)) AS contact, phone, country FROM contacts\n";
const KR_ONLY: &str = "/* @config\nmaterialized = \"view\"\n*/\n\
SELECT id, contact AS address, country FROM clean WHERE country = 'KR'\n";
// Hashes, counts, and a filter, a join and a group key on personal columns: allowed.
const SAFE: &str = "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\n\
SELECT hash_pii(c.contact, 'email') AS email_sha256, count(DISTINCT c.phone) AS phones,\n\
       sum(o.amount) AS amount\n\
FROM clean c JOIN orders o ON o.id = c.id\n\
WHERE c.contact LIKE '%@example.com'\n\
GROUP BY c.contact\n";

fn personal_project(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let mut files = vec![
        ("sluice.toml", TOML),
        ("data/contacts.csv", CONTACTS),
        ("data/orders.csv", ORDERS),
        ("models/clean.sql", CLEAN),
        ("models/kr_only.sql", KR_ONLY),
        ("models/safe.sql", SAFE),
    ];
    files.extend_from_slice(extra);
    project(&files)
}

const LEAKY: &str = "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\n\
SELECT id, address, upper(country) AS country FROM kr_only\n";

#[test]
fn a_raw_personal_column_through_two_views_is_refused_before_anything_is_written() {
    let p = personal_project(&[("models/leaky.sql", LEAKY)]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let file = p.path().join("models/leaky.sql");
    assert!(
        r.stderr.contains(&format!(
            "model `leaky` ({}): column `address` carries personal data from `contacts.email` through clean.contact -> kr_only.address without hashing it; hash it (hash_pii, hmac_sha256, sha256_hex, sha2), count it, drop it, or allow it with allow_personal = [\"address\"]",
            file.display()
        )),
        "{}",
        r.stderr
    );
    // Nothing was built or published, not even the models that are fine.
    assert!(!p.path().join("target/safe").exists());
    assert!(!p.path().join("target/leaky").exists());

    // `sluice plan` says the same, and fails the same way.
    let r = run(p.path(), &["plan"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "   refused, personal data: column `address` carries personal data from `contacts.email` through clean.contact -> kr_only.address"
        ),
        "{}",
        r.stdout
    );

    // `sluice test` (unit tests and checks) fails the same way.
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("model `leaky` (")
            && r.stderr
                .contains("column `address` carries personal data from `contacts.email`"),
        "{}",
        r.stderr
    );

    // A view may show raw data (it is not written anywhere): only published outputs count.
    std::fs::write(
        &file,
        LEAKY.replace(
            "materialized = \"table\"\nformat = \"csv\"",
            "materialized = \"view\"",
        ),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT email_sha256, phones, amount FROM safe ORDER BY amount"
        ),
        "email_sha256,phones,amount\n\
         5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018,1,20\n\
         71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476,2,40\n"
    );
}

#[test]
fn a_model_that_must_carry_raw_data_opts_in_and_the_run_records_it() {
    let allowed = LEAKY.replace(
        "format = \"csv\"\n",
        "format = \"csv\"\nallow_personal = [\"address\"]\n",
    );
    let p = personal_project(&[("models/leaky.sql", &allowed)]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        query_csv(p.path(), "SELECT id, address FROM leaky ORDER BY id"),
        "id,address\n1,ann@example.com\n3,ann@example.com\n"
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let leaky = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "leaky")
        .unwrap();
    assert_eq!(leaky["allowed_personal"], serde_json::json!(["address"]));
    let safe = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "safe")
        .unwrap();
    assert!(safe.get("allowed_personal").is_none(), "{safe}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("target/leaky/_sluice.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["allowed_personal"], serde_json::json!(["address"]));
    let r = run(p.path(), &["plan", "--select", "leaky"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("   personal data allowed: `address` carries `contacts.email` unhashed (allow_personal)"),
        "{}",
        r.stdout
    );

    // A pii = true column of an upstream model is personal too.
    let marked = "/* @config\nmaterialized = \"view\"\n[columns.note]\npii = true\n*/\n\
        SELECT id, 'note ' || CAST(id AS VARCHAR) AS note FROM orders\n";
    let copy =
        "/* @config\nmaterialized = \"table\"\nformat = \"csv\"\n*/\nSELECT id, note FROM notes\n";
    let p = personal_project(&[("models/notes.sql", marked), ("models/copy.sql", copy)]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("column `note` carries personal data from `notes.note` without hashing it"),
        "{}",
        r.stderr
    );
}

/// psql as `user` against a served project, errors verbose (with their SQLSTATE).
fn psql_as(server: &common::server::Server, user: &str, sql: &str) -> Run {
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user={user} dbname=sluice sslmode=disable",
            server.port
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-F",
            ",",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", common::server::PASSWORD)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn serve_gives_personal_columns_only_to_users_allowed_to_read_them() {
    let users = "\n[server.users.analyst]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\n\
        [server.users.dpo]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\npersonal = true\n";
    let p = personal_project(&[]);
    std::fs::write(p.path().join("sluice.toml"), format!("{TOML}{users}")).unwrap();
    let server = common::server::Server::start(p.path(), &[]);

    // The analyst: raw emails refused with 42501, directly and through a view.
    let r = psql_as(
        &server,
        "analyst",
        "SELECT id, email FROM contacts ORDER BY id",
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "ERROR:  42501: column `email` is personal data (from `contacts.email`), which user `analyst` may not read; select it hashed, e.g. hash_pii(email, 'email'), or counted"
        ),
        "{}",
        r.stderr
    );
    let r = psql_as(
        &server,
        "analyst",
        "SELECT upper(address) AS a FROM kr_only",
    );
    assert!(
        r.stderr
            .contains("42501: column `a` is personal data (from `contacts.email`)"),
        "{}",
        r.stderr
    );
    // Hashed, counted, filtered on: given.
    let r = psql_as(
        &server,
        "analyst",
        "SELECT id, hash_pii(email, 'email') AS h FROM contacts WHERE email LIKE 'bob%' ORDER BY id",
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "2,5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018\n"
        ),
        "{}",
        r.stderr
    );
    let r = psql_as(
        &server,
        "analyst",
        "SELECT count(DISTINCT email) FROM contacts",
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "2\n"), "{}", r.stderr);
    // The same on HTTP: 403 with the same message.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("analyst:{}", common::server::PASSWORD));
    let reply = common::server::post_query(
        server.http,
        Some(&auth),
        "application/json",
        "SELECT phone FROM contacts",
    );
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply.contains("column `phone` is personal data (from `contacts.phone`)"),
        "{reply}"
    );

    // The data protection officer reads them.
    let r = psql_as(&server, "dpo", "SELECT id, email FROM contacts ORDER BY id");
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "1,ann@example.com\n2,bob@example.com\n3,ann@example.com\n"
        ),
        "{}",
        r.stderr
    );
    server.stop();
}

#[test]
fn the_docs_site_marks_personal_columns_and_the_masked_outputs() {
    let allowed = LEAKY.replace(
        "format = \"csv\"\n",
        "format = \"csv\"\nallow_personal = [\"address\"]\n",
    );
    let p = personal_project(&[("models/leaky.sql", &allowed)]);
    let out = p.path().join("site");
    let r = run(p.path(), &["docs", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let personal = "</code> <span class=\"tag personal\" title=\"personal data, unhashed\">personal</span></td>";
    let masked = "</code> <span class=\"tag masked\" title=\"computed from personal data through a hash or a count\">masked</span></td>";
    // The source's columns, the views' and the allowed output's: personal.
    for column in ["email", "phone", "contact", "address"] {
        assert!(
            html.contains(&format!("<code>{column}{personal}")),
            "{column} not marked personal"
        );
    }
    // Hashed and counted outputs: masked; others: unmarked.
    for column in ["email_sha256", "phones"] {
        assert!(
            html.contains(&format!("<code>{column}{masked}")),
            "{column} not marked masked"
        );
    }
    assert!(html.contains("<tr><td><code>amount</code></td>"));
    assert!(html.contains("<tr><td><code>country</code></td>"));
}

#[test]
fn flight_sql_gives_personal_columns_only_to_users_allowed_to_read_them() {
    let users = "\n[server.users.analyst]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\n\
        [server.users.dpo]\npassword = { env = \"SLUICE_ANALYST_PASSWORD\" }\npersonal = true\n";
    let p = personal_project(&[]);
    std::fs::write(p.path().join("sluice.toml"), format!("{TOML}{users}")).unwrap();
    let flight = common::cluster::free_port();
    let addr = format!("127.0.0.1:{flight}");
    let server = common::server::Server::start(p.path(), &["--flight", &addr]);
    let script = common::server::flight_prelude(flight, None)
        + r#"
def query(user, sql):
    cur = connect(user).cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    except adbc_driver_manager.Error as e:
        return str(e)
done({
    "refused": query("analyst", "SELECT email FROM contacts"),
    "hashed": query("analyst", "SELECT hash_pii(email, 'email') FROM contacts WHERE id = 2"),
    "allowed": query("dpo", "SELECT email FROM contacts WHERE id = 2"),
})
"#;
    let v = common::server::python_json(&script);
    let refused = v["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("column `email` is personal data (from `contacts.email`), which user `analyst` may not read")
            && refused.contains("PermissionDenied"),
        "{v}"
    );
    assert_eq!(
        v["hashed"],
        serde_json::json!([["5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"]])
    );
    assert_eq!(v["allowed"], serde_json::json!([["bob@example.com"]]));
    server.stop();
}
