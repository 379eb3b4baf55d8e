//! PostgreSQL as a source and as a delivery target, against a real PostgreSQL 15 server on
//! loopback (tests/common/postgres.rs): reads with their filters and limits sent to the
//! server, publishes that readers see whole or not at all, incremental merges, erasure,
//! and errors that name the database without its password.

mod common;
use common::postgres::{Postgres, PASSWORD};
use common::server::Server;
use common::*;
use std::path::Path;
use std::time::Duration;

const CONTACTS: &str = "
CREATE SCHEMA crm;
CREATE SCHEMA delivery;
CREATE TABLE crm.contacts (
  id bigint PRIMARY KEY, email text, score numeric(12, 2), active boolean,
  signed_up date, seen_at timestamptz, tags text[], meta jsonb, ref uuid, visits integer);
INSERT INTO crm.contacts VALUES
  (1, ' Ann@Example.com ', 12.50, true, '2024-01-31', '2024-02-01 10:00:00+00', '{a,b}', '{\"k\": 1}', '6f1c0b5e-0000-4000-8000-000000000001', 3),
  (2, 'bob@example.com', -0.05, false, '2024-03-01', NULL, '{}', NULL, NULL, NULL),
  (3, NULL, NULL, NULL, NULL, '1999-12-31 23:59:59.5+00', '{c,NULL}', '[1, 2]', NULL, 0),
  (4, 'cy@example.com', 99999999.99, true, '1970-01-01', '2030-06-15 12:00:00+00', NULL, '{}', NULL, 7);
";

fn write_project(p: &Path, pg: &Postgres, files: &[(&str, &str)]) {
    let toml = "[databases.warehouse]\nurl = { file = \"warehouse.url\" }\n\n\
        [sources.contacts]\ndatabase = \"warehouse\"\ntable = \"crm.contacts\"\n\n\
        [sources.active_contacts]\ndatabase = \"warehouse\"\n\
        query = \"SELECT id, lower(btrim(email)) AS email FROM crm.contacts WHERE active\"\n";
    std::fs::write(p.join("sluice.toml"), toml).unwrap();
    std::fs::write(p.join("warehouse.url"), pg.url()).unwrap();
    for (path, text) in files {
        let path = p.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn pg_with_contacts() -> (Postgres, tempfile::TempDir) {
    let pg = Postgres::start();
    pg.psql("delivery", CONTACTS);
    let p = tempfile::tempdir().unwrap();
    write_project(p.path(), &pg, &[]);
    (pg, p)
}

#[test]
fn a_table_and_a_query_read_as_sources_with_their_types_and_pushdown() {
    let (pg, p) = pg_with_contacts();
    assert_eq!(
        query_csv(p.path(), "SELECT * FROM contacts ORDER BY id"),
        "id,email,score,active,signed_up,seen_at,tags,meta,ref,visits\n\
         1, Ann@Example.com ,12.50,true,2024-01-31,2024-02-01T10:00:00Z,\"[a, b]\",\"{\"\"k\"\": 1}\",6f1c0b5e-0000-4000-8000-000000000001,3\n\
         2,bob@example.com,-0.05,false,2024-03-01,,[],,,\n\
         3,,,,,1999-12-31T23:59:59.500Z,\"[c, ]\",\"[1, 2]\",,0\n\
         4,cy@example.com,99999999.99,true,1970-01-01,2030-06-15T12:00:00Z,,{},,7\n"
    );
    let r = run(
        p.path(),
        &["shell", "--format", "csv", "-c", "DESCRIBE contacts"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "id,Int64,YES",
        "score,\"Decimal128(12, 2)\",YES",
        "signed_up,Date32,YES",
        "seen_at,\"Timestamp(µs, \"\"UTC\"\")\",YES",
        "tags,List(Utf8),YES",
        "meta,Utf8,YES",
    ] {
        assert!(r.stdout.contains(line), "{line} not in\n{}", r.stdout);
    }
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT id, email FROM active_contacts ORDER BY id"
        ),
        "id,email\n1,ann@example.com\n4,cy@example.com\n"
    );

    // Columns, exact filters and the limit go to the server; the rest stays here.
    let sql = "SELECT id, email FROM contacts WHERE id >= 2 AND email = 'cy@example.com' LIMIT 5";
    assert_eq!(query_csv(p.path(), sql), "id,email\n4,cy@example.com\n");
    let plan = query_csv(p.path(), &format!("EXPLAIN {sql}")).replace("\"\"", "\"");
    assert!(
        plan.contains(
            "PostgresScanExec: database=warehouse, sql=SELECT \"id\", \"email\" FROM \"crm\".\"contacts\" \
             WHERE (\"id\" >= 2) AND (\"email\" = 'cy@example.com') LIMIT 5"
        ),
        "{plan}"
    );
    // Ordering on text depends on the collation: DataFusion applies it.
    let sql = "SELECT id FROM contacts WHERE email > 'b' ORDER BY id";
    assert_eq!(query_csv(p.path(), sql), "id\n2\n4\n");
    let plan = query_csv(p.path(), &format!("EXPLAIN {sql}")).replace("\"\"", "\"");
    assert!(
        plan.contains("sql=SELECT \"id\", \"email\" FROM \"crm\".\"contacts\"\n")
            || plan.contains("sql=SELECT \"id\", \"email\" FROM \"crm\".\"contacts\","),
        "{plan}"
    );
    // count(*) reads no column at all.
    assert_eq!(
        query_csv(p.path(), "SELECT count(*) AS n FROM contacts"),
        "n\n4\n"
    );
    drop(pg);
}

#[test]
fn errors_name_the_database_and_table_never_the_password() {
    let (pg, p) = pg_with_contacts();
    std::fs::write(
        p.path().join("warehouse.url"),
        pg.url().replace("%C3%98", "wrong"),
    )
    .unwrap();
    let r = run(p.path(), &["shell", "-c", "SELECT count(*) FROM contacts"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "source `contacts` (database `warehouse`, table crm.contacts): postgres://sluice@127.0.0.1:{}/delivery: password authentication failed for user `sluice`",
            pg.port
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);

    std::fs::write(p.path().join("warehouse.url"), pg.url()).unwrap();
    std::fs::write(
        p.path().join("sluice.toml"),
        "[databases.warehouse]\nurl = { file = \"warehouse.url\" }\n\
         [sources.missing]\ndatabase = \"warehouse\"\ntable = \"crm.nope\"\n",
    )
    .unwrap();
    let r = run(p.path(), &["shell", "-c", "SELECT * FROM missing"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "source `missing` (database `warehouse`, table crm.nope): relation \"crm.nope\" does not exist"
        ),
        "{}",
        r.stderr
    );

    // A model publishing into a schema that is not there: named, nothing created.
    std::fs::write(
        p.path().join("sluice.toml"),
        "[databases.warehouse]\nurl = { file = \"warehouse.url\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.path().join("models")).unwrap();
    std::fs::write(
        p.path().join("models/out.sql"),
        "/* @config\nmaterialized = \"table\"\nformat = \"postgres\"\ndatabase = \"warehouse\"\nlocation = \"nowhere.out\"\n*/\nSELECT 1 AS x",
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("database `warehouse`, table nowhere.out: schema `nowhere` does not exist"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(PASSWORD), "{}", r.stderr);
}

const HASHED: &str = r#"/* @config
materialized = "table"
format = "postgres"
database = "warehouse"
location = "delivery.hashed_contacts"
[columns.id]
checks = ["not_null", "unique"]
[columns.email_sha256]
checks = ["not_null"]
*/
SELECT id, sha256_hex(lower(btrim(email))) AS email_sha256, score, signed_up
FROM contacts
"#;

/// How many `_sluice_staging_*` tables are in the database.
fn staging_tables_left(pg: &Postgres) -> String {
    pg.psql(
        "delivery",
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_sluice%'",
    )
}

fn published(pg: &Postgres, table: &str) -> String {
    pg.psql("delivery", &format!("SELECT * FROM {table} ORDER BY 1"))
}

#[test]
fn a_model_publishes_into_a_table_keeping_grants_and_views_and_a_failed_check_keeps_the_old_rows() {
    let pg = Postgres::start();
    pg.psql(
        "delivery",
        &CONTACTS.replace("(3, NULL, NULL", "(3, 'dee@example.com', NULL"),
    );
    let p = tempfile::tempdir().unwrap();
    write_project(p.path(), &pg, &[("models/hashed_contacts.sql", HASHED)]);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.hashed_contacts"),
        "1|71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476|12.50|2024-01-31\n\
         2|5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018|-0.05|2024-03-01\n\
         3|81125bf4a7b2bf34bcb85b72fdf330be5b45bf8ba3113c4dd74c456057cf5f3b||\n\
         4|c42f5d0033a838d1fd7175a5c0a93acae479330b37bfd307e7fbe62ffae16029|99999999.99|1970-01-01"
    );
    // The hashes are SHA-256 of the cleaned email, computed by PostgreSQL as well.
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT count(*) FROM delivery.hashed_contacts h JOIN crm.contacts c USING (id) \
             WHERE h.email_sha256 = encode(sha256(convert_to(lower(btrim(c.email)), 'UTF8')), 'hex')"
        ),
        "4"
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'delivery.hashed_contacts'::regclass AND attnum > 0 ORDER BY attnum"
        ),
        "bigint\ntext\nnumeric(12,2)\ndate"
    );

    // Consumers grant access and build views on the delivered table.
    pg.psql(
        "delivery",
        "CREATE ROLE analyst; GRANT SELECT ON delivery.hashed_contacts TO analyst; \
         CREATE VIEW delivery.top AS SELECT id FROM delivery.hashed_contacts WHERE score > 10",
    );
    pg.psql(
        "delivery",
        "INSERT INTO crm.contacts (id, email, score) VALUES (5, 'eve@example.com', 50)",
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        pg.psql("delivery", "SELECT count(*) FROM delivery.hashed_contacts"),
        "5"
    );
    assert_eq!(
        pg.psql("delivery", "SELECT id FROM delivery.top ORDER BY id"),
        "1\n4\n5"
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT has_table_privilege('analyst', 'delivery.hashed_contacts', 'SELECT')"
        ),
        "t"
    );
    let second = published(&pg, "delivery.hashed_contacts");

    // A row without an email fails the not_null check: exit 3, the table as it was.
    pg.psql("delivery", "INSERT INTO crm.contacts (id) VALUES (6)");
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("nothing published"), "{}", r.stderr);
    assert_eq!(published(&pg, "delivery.hashed_contacts"), second);
    assert_eq!(staging_tables_left(&pg), "0");

    // The model's output is a table of the project: queried through the database.
    pg.psql("delivery", "DELETE FROM crm.contacts WHERE id = 6");
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT count(*) AS n FROM hashed_contacts WHERE score > 10"
        ),
        "n\n3\n"
    );
}

const MERGED: &str = r#"/* @config
materialized = "incremental"
format = "postgres"
database = "warehouse"
location = "delivery.contact_scores"
unique_key = ["id"]
erasure = { list = "erased", column = "id" }
[columns.id]
checks = ["unique"]
*/
SELECT id, score FROM contacts WHERE score IS NOT NULL
"#;

#[test]
fn an_incremental_model_merges_on_its_key_and_erase_deletes_listed_keys_in_one_transaction() {
    let (pg, p) = pg_with_contacts();
    write_project(
        p.path(),
        &pg,
        &[
            ("models/contact_scores.sql", MERGED),
            ("data/erased.csv", "id\n"),
        ],
    );
    let toml = std::fs::read_to_string(p.path().join("sluice.toml")).unwrap()
        + "\n[sources.erased]\nlocation = \"data/erased.csv\"\nschema = { id = \"BIGINT\" }\n";
    std::fs::write(p.path().join("sluice.toml"), toml).unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.contact_scores"),
        "1|12.50\n2|-0.05\n4|99999999.99"
    );
    // A row published by hand stays unless the model's rows replace it.
    pg.psql(
        "delivery",
        "INSERT INTO delivery.contact_scores VALUES (9, 1.00)",
    );
    pg.psql(
        "delivery",
        "UPDATE crm.contacts SET score = 20 WHERE id = 1; UPDATE crm.contacts SET score = 3 WHERE id = 3",
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.contact_scores"),
        "1|20.00\n2|-0.05\n3|3.00\n4|99999999.99\n9|1.00"
    );

    // Ids 2 and 9 ask to be erased: `sluice erase` deletes them and says so.
    std::fs::write(p.path().join("data/erased.csv"), "id\n2\n9\n").unwrap();
    let r = run(p.path(), &["erase"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "removed 2 rows of 2 listed keys from delivery.contact_scores in one transaction"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        published(&pg, "delivery.contact_scores"),
        "1|20.00\n3|3.00\n4|99999999.99"
    );
    // The next merge keeps them out (the model reads contacts, which still has id 2).
    pg.psql("delivery", "DELETE FROM crm.contacts WHERE id = 2");
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.contact_scores"),
        "1|20.00\n3|3.00\n4|99999999.99"
    );
}

const MILLION: &str = r#"/* @config
materialized = "table"
format = "postgres"
database = "warehouse"
location = "delivery.big"
*/
SELECT value AS id, ${version} AS version, sha256_hex(CAST(value AS VARCHAR)) AS h
FROM range(1000000)
"#;

#[test]
fn a_killed_publish_of_a_million_rows_never_leaves_a_partial_table() {
    let pg = Postgres::start();
    pg.psql("delivery", "CREATE SCHEMA delivery");
    let p = tempfile::tempdir().unwrap();
    write_project(p.path(), &pg, &[("models/big.sql", MILLION)]);
    let toml = std::fs::read_to_string(p.path().join("sluice.toml")).unwrap();
    let with_version = |v: u32| {
        std::fs::write(
            p.path().join("sluice.toml"),
            format!("{toml}\n[vars]\nversion = {v}\n"),
        )
        .unwrap()
    };
    with_version(1);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let whole = |v: u32| format!("1000000|{v}|{v}");
    let state = || {
        pg.psql(
            "delivery",
            "SELECT count(*), min(version), max(version) FROM delivery.big",
        )
    };
    assert_eq!(state(), whole(1));

    let mut published_version = 1;
    let mut killed_mid_publish = 0;
    for (round, delay_ms) in [300u64, 900, 1500, 2000, 2400, 2800, 4000]
        .into_iter()
        .enumerate()
    {
        let next = round as u32 + 2;
        with_version(next);
        let mut child = sluice()
            .arg("--project")
            .arg(p.path())
            .arg("run")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            published_version = next;
        }
        // Whatever the moment of the kill: the old rows or the new, all of them.
        let seen = state();
        assert!(
            seen == whole(published_version) || seen == whole(next),
            "round {round}: {seen}"
        );
        if seen == whole(next) {
            published_version = next;
        }
        let left = staging_tables_left(&pg);
        eprintln!("round {round}: killed after {delay_ms} ms: {status}; table {seen}; staging tables left: {left}");
        killed_mid_publish += usize::from(!status.success() && left == "1");
    }
    // The kills landed while rows were being copied, not only before or after.
    assert!(killed_mid_publish >= 1);
    // The next run drops what the killed ones left and publishes.
    with_version(99);
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(state(), whole(99));
    assert_eq!(staging_tables_left(&pg), "0");
}

#[test]
fn psql_reads_a_postgres_source_through_sluice_serve() {
    let (pg, p) = pg_with_contacts();
    let server = Server::start(p.path(), &[]);
    let r = server.psql(
        common::server::PASSWORD,
        "SELECT id, sha256_hex(lower(btrim(email))) AS h, score FROM contacts WHERE id <= 2 ORDER BY id",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "1,71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476,12.50\n\
         2,5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018,-0.05\n"
    );
    let r = server.psql(
        common::server::PASSWORD,
        "SELECT count(*) FROM active_contacts",
    );
    assert_eq!(r.stdout, "2\n", "{}", r.stderr);
    drop(pg);
    server.stop();
}

fn table_model(location: &str, sql: &str) -> String {
    format!(
        "/* @config\nmaterialized = \"table\"\nformat = \"postgres\"\ndatabase = \"warehouse\"\nlocation = \"{location}\"\n*/\n{sql}\n"
    )
}

#[test]
fn a_column_change_recreates_the_table_with_its_grants_unless_a_view_depends_on_it() {
    let (pg, p) = pg_with_contacts();
    let model = p.path().join("models/scores.sql");
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    std::fs::write(
        &model,
        table_model("delivery.scores", "SELECT id, score FROM contacts"),
    )
    .unwrap();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    pg.psql(
        "delivery",
        "CREATE ROLE reporting; GRANT SELECT, INSERT ON delivery.scores TO reporting WITH GRANT OPTION",
    );
    // A new column: the table is recreated, its grants carried over.
    std::fs::write(
        &model,
        table_model("delivery.scores", "SELECT id, score, visits FROM contacts"),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.scores"),
        "1|12.50|3\n2|-0.05|\n3||0\n4|99999999.99|7"
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT privilege_type || ' ' || is_grantable FROM information_schema.role_table_grants \
             WHERE table_name = 'scores' AND grantee = 'reporting' ORDER BY 1"
        ),
        "INSERT YES\nSELECT YES"
    );
    // A view on it: dropping the table would drop the view, so nothing changes.
    pg.psql(
        "delivery",
        "CREATE VIEW delivery.busy AS SELECT id FROM delivery.scores WHERE visits > 1",
    );
    std::fs::write(
        &model,
        table_model("delivery.scores", "SELECT id FROM contacts"),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "model `scores` (", 
        ) && r.stderr.contains(
            "database `warehouse`, table delivery.scores: cannot drop table delivery.scores because other objects depend on it (view delivery.busy depends on table delivery.scores)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        published(&pg, "delivery.scores"),
        "1|12.50|3\n2|-0.05|\n3||0\n4|99999999.99|7"
    );
    assert_eq!(
        pg.psql("delivery", "SELECT id FROM delivery.busy ORDER BY id"),
        "1\n4"
    );
    assert_eq!(staging_tables_left(&pg), "0");
}

#[test]
fn all_or_nothing_rolls_back_the_database_publish_when_a_file_publish_fails() {
    let (pg, p) = pg_with_contacts();
    let models = p.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(
        models.join("a_scores.sql"),
        table_model("delivery.scores", "SELECT id, score FROM contacts"),
    )
    .unwrap();
    let csv_model = |location: &str| {
        format!("/* @config\nmaterialized = \"table\"\nformat = \"csv\"\nlocation = \"{location}\"\n*/\nSELECT count(*) AS n FROM a_scores\n")
    };
    std::fs::write(models.join("z_count.sql"), csv_model("count")).unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = published(&pg, "delivery.scores");

    pg.psql("delivery", "UPDATE crm.contacts SET score = 1");
    std::fs::write(models.join("z_count.sql"), csv_model("blocked/count")).unwrap();
    std::fs::write(
        p.path().join("target/blocked"),
        "a file where a folder should be",
    )
    .unwrap();
    let r = run(p.path(), &["run", "--all-or-nothing", "--threads", "1"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "publishing `z_count` failed; 1 published model(s) rolled back, nothing changed"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(published(&pg, "delivery.scores"), before);
    assert_eq!(staging_tables_left(&pg), "0");
    let results = std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap();
    assert!(
        results.contains("published, then rolled back to the previous version: publishing `z_count` failed (--all-or-nothing)"),
        "{results}"
    );

    // Unblocked, both publish.
    std::fs::remove_file(p.path().join("target/blocked")).unwrap();
    let r = run(p.path(), &["run", "--all-or-nothing"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        published(&pg, "delivery.scores"),
        "1|1.00\n2|1.00\n3|1.00\n4|1.00"
    );
}

#[test]
fn a_connection_lost_mid_copy_or_a_type_without_a_column_type_leaves_the_target_unchanged() {
    let pg = Postgres::start();
    pg.psql("delivery", "CREATE SCHEMA delivery");
    let p = tempfile::tempdir().unwrap();
    write_project(p.path(), &pg, &[("models/big.sql", MILLION)]);
    let toml = std::fs::read_to_string(p.path().join("sluice.toml")).unwrap();
    std::fs::write(
        p.path().join("sluice.toml"),
        format!("{toml}\n[vars]\nversion = 1\n"),
    )
    .unwrap();
    assert_eq!(run(p.path(), &["run"]).code, 0);
    std::fs::write(
        p.path().join("sluice.toml"),
        format!("{toml}\n[vars]\nversion = 2\n"),
    )
    .unwrap();

    // The server ends sluice's COPY session half-way.
    let child = sluice()
        .arg("--project")
        .arg(p.path())
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ended = pg.psql(
            "delivery",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'sluice' AND query LIKE 'COPY%FROM STDIN%'",
        );
        if ended != "0" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no COPY seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("model `big` (")
            && stderr.contains("database `warehouse`, table delivery.big: "),
        "{stderr}"
    );
    assert!(!stderr.contains("pg-s3cret"), "{stderr}");
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT count(*), min(version), max(version) FROM delivery.big"
        ),
        "1000000|1|1"
    );

    // A column PostgreSQL has no type for here: named, nothing written.
    std::fs::write(
        p.path().join("models/big.sql"),
        table_model("delivery.big", "SELECT 1 AS id, named_struct('a', 1) AS s"),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "database `warehouse`, table delivery.big: column `s` is Struct(\"a\": Int64), which has no PostgreSQL column type here; cast it in the model"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT count(*), min(version) FROM delivery.big"
        ),
        "1000000|1"
    );
}

#[test]
fn a_table_the_consumers_created_is_filled_by_column_name_with_its_own_types() {
    let (pg, p) = pg_with_contacts();
    pg.psql(
        "delivery",
        "CREATE TABLE delivery.emails (email varchar(20), id integer PRIMARY KEY)",
    );
    let model = p.path().join("models/emails.sql");
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    std::fs::write(
        &model,
        table_model(
            "delivery.emails",
            "SELECT id, lower(btrim(email)) AS email FROM contacts WHERE email IS NOT NULL",
        ),
    )
    .unwrap();
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT id, email FROM delivery.emails ORDER BY id"
        ),
        "1|ann@example.com\n2|bob@example.com\n4|cy@example.com"
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'delivery.emails'::regclass AND attnum > 0"
        ),
        "email character varying(20), id integer"
    );
    // A value the consumers' column cannot hold: the server says so, nothing changes.
    pg.psql(
        "delivery",
        "UPDATE crm.contacts SET email = 'a-very-long-address@example.com' WHERE id = 1",
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "database `warehouse`, table delivery.emails: value too long for type character varying(20)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        pg.psql(
            "delivery",
            "SELECT id, email FROM delivery.emails ORDER BY id"
        ),
        "1|ann@example.com\n2|bob@example.com\n4|cy@example.com"
    );
}

#[test]
fn volume_checks_compare_with_the_table_and_unit_tests_type_fixtures_like_the_database() {
    let (pg, p) = pg_with_contacts();
    let model =
        "/* @config\nmaterialized = \"table\"\nformat = \"postgres\"\ndatabase = \"warehouse\"\n\
        location = \"delivery.active\"\n[[checks]]\nvolume = { max_change_pct = 40 }\n*/\n\
        SELECT id, score * 2 AS doubled FROM contacts WHERE active\n";
    let tests = "[test.doubles_the_score_of_active_contacts]\nmodel = \"active\"\n\
        inputs.contacts = { rows = [\n  { id = 7, score = 1.25, active = true },\n  { id = 8, score = 3.00, active = false },\n] }\n\
        expect.rows = [ { id = 7, doubled = 2.50 } ]\n";
    let files = [("models/active.sql", model), ("tests/active.toml", tests)];
    for (path, text) in files {
        let path = p.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    // The fixture's rows take the database columns' types (numeric(12, 2), boolean).
    let r = run(p.path(), &["test", "--unit"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("doubles_the_score_of_active_contacts") && said.contains("1 passed"),
        "{said}"
    );

    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        pg.psql("delivery", "SELECT count(*) FROM delivery.active"),
        "2"
    );
    // Half the active contacts go: the volume check compares with the table's 2 rows.
    pg.psql(
        "delivery",
        "UPDATE crm.contacts SET active = false WHERE id = 4",
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let results = std::fs::read_to_string(p.path().join("target/run_results.json")).unwrap();
    assert!(
        results.contains("\"baseline\": \"pgtable://warehouse/delivery.active\""),
        "{results}"
    );
    assert_eq!(
        pg.psql("delivery", "SELECT id FROM delivery.active ORDER BY id"),
        "1\n4"
    );
}

#[test]
fn tls_connections_verify_the_server_against_the_system_or_the_given_ca() {
    let (pg, ca) = Postgres::start_with_tls();
    pg.psql("delivery", CONTACTS);
    let p = tempfile::tempdir().unwrap();
    write_project(p.path(), &pg, &[]);
    let url = |query: &str| pg.url().replace("?sslmode=disable", query);
    // The CA a managed database documents, given as libpq takes it (sslmode=verify-full:
    // no TLS, no connection).
    std::fs::write(
        p.path().join("warehouse.url"),
        url(&format!(
            "?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )),
    )
    .unwrap();
    assert_eq!(
        query_csv(p.path(), "SELECT count(*) AS n FROM contacts"),
        "n\n4\n"
    );
    // Without it, a certificate the system does not know is refused, plainly.
    std::fs::write(p.path().join("warehouse.url"), url("?sslmode=require")).unwrap();
    let r = run(p.path(), &["shell", "-c", "SELECT count(*) FROM contacts"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "source `contacts` (database `warehouse`, table crm.contacts): postgres://sluice@127.0.0.1:{}/delivery: cannot connect: ",
            pg.port
        )) && r.stderr.contains("UnknownIssuer"),
        "{}",
        r.stderr
    );
}
