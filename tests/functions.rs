//! sluice's SQL functions through the binary: published vectors, NULLs, empty strings,
//! invalid input, Unicode and wrong argument types.

mod common;
use common::*;

fn q(sql: &str) -> String {
    let p = project(&[]);
    query_csv(p.path(), sql)
}

fn err(sql: &str) -> String {
    let p = project(&[]);
    let r = run(p.path(), &["shell", "-c", sql]);
    assert_eq!(r.code, 1, "expected failure: {sql}\n{}", r.stdout);
    r.stderr
}

#[test]
fn sha256_hex_fips_vector_nulls_and_binary() {
    // FIPS 180-2 Appendix B.1: SHA-256("abc").
    assert_eq!(
        q("SELECT sha256_hex('abc') AS h, sha256_hex(NULL) AS n, sha256_hex(X'616263') AS b, sha256_hex(arrow_cast('abc', 'Utf8View')) AS v"),
        "h,n,b,v\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad,,ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad,ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    );
    assert!(err("SELECT sha256_hex(1, 2)").contains("sha256_hex"));
}

#[test]
fn hmac_uses_the_secret_without_showing_it() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let p = project(&[("sluice.toml", "[secrets]\njefe = { env = \"TEST_HMAC_KEY\" }\nhexkey = { env = \"TEST_HMAC_HEX\", encoding = \"hex\" }\n")]);
    let r = run_env(
        p.path(),
        &["shell", "--format", "csv", "-c", "SELECT hmac_sha256('what do ya want for nothing?', 'jefe') AS a, hmac_sha256('Hi There', 'hexkey') AS b"],
        &[("TEST_HMAC_KEY", "Jefe"), ("TEST_HMAC_HEX", "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "a,b\n5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843,b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7\n"
    );
    let r = run_env(
        p.path(),
        &["shell", "-c", "EXPLAIN SELECT hmac_sha256('x', 'jefe')"],
        &[("TEST_HMAC_KEY", "SuperSecretValue")],
    );
    assert!(!r.stdout.contains("SuperSecretValue") && !r.stderr.contains("SuperSecretValue"));
    let r = run(
        p.path(),
        &["shell", "-c", "SELECT hmac_sha256('x', 'jefe')"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("secret `jefe`: environment variable TEST_HMAC_KEY is not set"),
        "{}",
        r.stderr
    );
    let r = run(
        p.path(),
        &["shell", "-c", "SELECT hmac_sha256('x', 'nope')"],
    );
    assert!(
        r.stderr.contains("hmac_sha256: unknown secret `nope`"),
        "{}",
        r.stderr
    );
}

#[test]
fn hash_pii_normalises_like_the_ad_platforms() {
    // Meta's customer information parameters example: john_smith@gmail.com.
    assert_eq!(
        q("SELECT hash_pii('  John_Smith@Gmail.com ', 'email') AS e"),
        "e\n62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f\n"
    );
    assert_eq!(
        q("SELECT normalize_email(' Jane.Doe+news@GMAIL.com ', 'google') AS g, normalize_email('Jane.Doe+news@gmail.com') AS m, normalize_email('nope') AS bad, normalize_email('') AS empty, normalize_email(NULL) AS n"),
        "g,m,bad,empty,n\njanedoe@gmail.com,jane.doe+news@gmail.com,,,\n"
    );
    assert_eq!(
        q("SELECT normalize_phone('010-1234-5678', 'meta', '82') AS kr, normalize_phone('+1 (415) 555-0100', 'google') AS us, normalize_phone('12 34') AS short"),
        "kr,us,short\n821012345678,+14155550100,\n"
    );
    // Already hashed values pass through lower-cased; junk is NULL, not a hash of junk.
    assert_eq!(
        q("SELECT hash_pii('BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD', 'email') AS h, hash_pii('not-an-email', 'email') AS junk, hash_pii('   ', 'phone') AS blank"),
        "h,junk,blank\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad,,\n"
    );
    // NFC: a decomposed é hashes like the composed one.
    assert_eq!(
        q("SELECT hash_pii('E\u{301}lodie', 'first_name') = hash_pii('\u{e9}lodie', 'first_name') AS same, hash_pii('1990-01-31', 'dob') = sha256_hex('19900131') AS dob, hash_pii(DATE '1990-01-31', 'dob') = sha256_hex('19900131') AS date_dob"),
        "same,dob,date_dob\ntrue,true,true\n"
    );
    assert!(err("SELECT hash_pii('x', 'emial')").contains("hash_pii: unknown kind `emial`"));
    assert!(err("SELECT hash_pii('x', 'email', 'tiktok')")
        .contains("hash_pii: unknown profile `tiktok`"));
    assert!(err("SELECT hash_pii('x')").contains("hash_pii takes 2 to 4 arguments"));
    assert!(err("SELECT hash_pii([1,2], 'email')").contains("hash_pii: argument 1 must be text"));
}

#[test]
fn shared_id_rfc9562_vector() {
    // RFC 9562 Appendix A.4.
    assert_eq!(
        q("SELECT shared_id('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'www.example.com') AS a, shared_id('www.example.com', 'x') IS NOT NULL AS b, shared_id('ns', 'a', NULL) AS c"),
        "a,b,c\n2ed6657d-e927-568b-95e1-2665a8aea6a2,true,\n"
    );
    assert!(
        err("SELECT shared_id('ns')").contains("shared_id takes a namespace and at least one key")
    );
}

#[test]
fn spark_hashes_match_spark_docs() {
    // Examples from Spark SQL's built-in function reference (Spark's literals are INT).
    assert_eq!(
        q("SELECT sha2('Spark', 256) AS s2, sha1('Spark') AS s1, crc32('Spark') AS c, xxhash64('Spark', make_array(arrow_cast(123, 'Int32')), arrow_cast(2, 'Int32')) AS x"),
        "s2,s1,c,x\n529bc3b07127ecb7e53a4dcf1991d9152c24537d919178022b2c42657f79a26b,85f5955f4b27a9a4c2aab6ffe5d7189fc298b92c,1557323817,5602566077635097486\n"
    );
}

const FUNNEL_EVENTS: &str = "(VALUES (0,1000),(1,1001),(2,1002),(3,1003),(4,1004),(5,1005),(6,1006),(7,1007),(8,1008)) AS t(ts, e)";

#[test]
fn window_funnel_clickhouse_vectors() {
    // ClickHouse tests/queries/0_stateless/00632_aggregation_window_funnel.sql.
    let cases = [
        ("window_funnel(10000, ts, e = 1000)", "1"),
        ("window_funnel(10000, ts, e = 1000, e = 1001)", "2"),
        (
            "window_funnel(10000, ts, e = 1000, e = 1001, e = 1002)",
            "3",
        ),
        (
            "window_funnel(10000, ts, e = 1000, e = 1001, e = 1002, e = 1008)",
            "4",
        ),
        ("window_funnel(1, ts, e = 1000)", "1"),
        (
            "window_funnel(2, ts, e = 1003, e = 1004, e = 1005, e = 1006, e = 1007)",
            "3",
        ),
        (
            "window_funnel(3, ts, e = 1003, e = 1004, e = 1005, e = 1006, e = 1007)",
            "4",
        ),
        (
            "window_funnel(4, ts, e = 1003, e = 1004, e = 1005, e = 1006, e = 1007)",
            "5",
        ),
    ];
    for (expr, level) in cases {
        assert_eq!(
            q(&format!("SELECT {expr} AS l FROM {FUNNEL_EVENTS}")),
            format!("l\n{level}\n"),
            "{expr}"
        );
    }
    // strict_order stops at an intervening event: A -> B -> D -> C gives 2 (ClickHouse docs).
    let abdc = "(VALUES (1,'A'),(2,'B'),(3,'D'),(4,'C')) AS t(ts, e)";
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, ts, e='A', e='B', e='C') AS l FROM {abdc}"
        )),
        "l\n3\n"
    );
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, 'strict_order', ts, e='A', e='B', e='C') AS l FROM {abdc}"
        )),
        "l\n2\n"
    );
    // strict_deduplication: a repeated step ends the chain.
    let aab = "(VALUES (1,'A'),(2,'B'),(3,'B'),(4,'C')) AS t(ts, e)";
    assert_eq!(q(&format!("SELECT window_funnel(10, 'strict_deduplication', ts, e='A', e='B', e='C') AS l FROM {aab}")), "l\n2\n");
    // strict_increase: steps at the same timestamp do not advance.
    let same = "(VALUES (1,'A'),(1,'B'),(2,'C')) AS t(ts, e)";
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, ts, e='A', e='B', e='C') AS l FROM {same}"
        )),
        "l\n3\n"
    );
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, 'strict_increase', ts, e='A', e='B', e='C') AS l FROM {same}"
        )),
        "l\n1\n"
    );
    // strict_once: one row matching two conditions counts once.
    let once = "(VALUES (1, true, false), (2, true, true)) AS t(ts, a, b)";
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, ts, a, b, b) AS l FROM {once}"
        )),
        "l\n3\n"
    );
    assert_eq!(
        q(&format!(
            "SELECT window_funnel(10, 'strict_once', ts, a, b, b) AS l FROM {once}"
        )),
        "l\n2\n"
    );
    // Timestamps: the window is in seconds.
    let ts = "(VALUES (TIMESTAMP '2026-05-01 10:00:00', 'A'), (TIMESTAMP '2026-05-01 11:00:00', 'B')) AS t(ts, e)";
    assert_eq!(q(&format!("SELECT window_funnel(3599, ts, e='A', e='B') AS a, window_funnel(3600, ts, e='A', e='B') AS b FROM {ts}")), "a,b\n1,2\n");
    assert!(err("SELECT window_funnel(10, 'strict', 1, true, true)")
        .contains("window_funnel: unknown mode `strict`"));
    assert!(err("SELECT window_funnel(10, 1, 2, true)").contains("condition 1 must be BOOLEAN"));
}

#[test]
fn retention_clickhouse_semantics() {
    // ClickHouse docs: user 0 active on all three days -> [1,1,1]; user 1 on days 1 and 3
    // -> [1,0,1]; user 2 only on day 2 -> [0,0,0].
    let data = "(VALUES (0, DATE '2020-01-01'), (0, DATE '2020-01-02'), (0, DATE '2020-01-03'), (1, DATE '2020-01-01'), (1, DATE '2020-01-03'), (2, DATE '2020-01-02')) AS t(uid, d)";
    assert_eq!(
        q(&format!("SELECT uid, retention(d = DATE '2020-01-01', d = DATE '2020-01-02', d = DATE '2020-01-03') AS r FROM {data} GROUP BY uid ORDER BY uid")),
        "uid,r\n0,\"[1, 1, 1]\"\n1,\"[1, 0, 1]\"\n2,\"[0, 0, 0]\"\n"
    );
    assert!(err("SELECT retention(true)").contains("retention takes 2 to 32 conditions"));
}

/// Deterministic events of 20,011 users, about ten each, in no order.
const MANY_USERS: &str = "WITH ev AS (SELECT g % 20011 AS u, ((g * 40503) % 100003) % 4000 AS ts, ((g * 2654435761) % 1000003) % 5 AS e FROM generate_series(1, 200000) AS t(g))";
const PER_USER: &str = "window_funnel(3600, ts, e = 0, e = 1, e = 2, e = 3) AS f, window_funnel(7200, 'strict_once', ts, e < 3, e < 2, e = 1) AS s, retention(e = 0, e = 1, e = 4) AS r";

#[test]
fn funnel_and_retention_per_group_match_the_window_form_across_batches_partitions_and_spills() {
    let p = project(&[]);
    let shell = |limit: &[&str], settings: &str, sql: &str| {
        let statement = format!("{settings} {sql}");
        let args = [
            limit,
            &["shell", "--format", "csv", "-c"],
            &[statement.as_str()],
        ]
        .concat();
        let r = run(p.path(), &args);
        assert_eq!(r.code, 0, "{settings} {sql}\n{}", r.stderr);
        r.stdout
    };
    // Over a window the functions run one accumulator per user, a path of their own.
    let expected = shell(
        &[],
        "",
        &format!(
            "{MANY_USERS} SELECT DISTINCT u, {} FROM ev ORDER BY u",
            PER_USER.replace(" AS ", " OVER (PARTITION BY u) AS ")
        ),
    );
    assert_eq!(expected.lines().count(), 20_012, "{}", &expected[..200]);
    let levels: std::collections::BTreeSet<&str> = expected
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(levels.len(), 5, "every funnel depth occurs: {levels:?}");
    let grouped = format!("{MANY_USERS} SELECT u, {PER_USER} FROM ev GROUP BY u ORDER BY u");
    for (limit, settings) in [
        (&[][..], ""),
        (&[][..], "SET datafusion.execution.batch_size = 7; SET datafusion.execution.target_partitions = 3;"),
        (&["--memory-limit", "10M"][..], "SET datafusion.execution.target_partitions = 2; SET datafusion.execution.sort_spill_reservation_bytes = 262144;"),
        // The partial aggregate gives up grouping and passes each row on as a state.
        (&[][..], "SET datafusion.execution.skip_partial_aggregation_probe_rows_threshold = 100; SET datafusion.execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;"),
    ] {
        assert_eq!(shell(limit, settings, &grouped), expected, "{limit:?} {settings}");
    }
    // The small limit did make the aggregate spill, and it still gave every user's row.
    let analyzed = shell(
        &["--memory-limit", "10M"],
        "SET datafusion.execution.target_partitions = 2; SET datafusion.execution.sort_spill_reservation_bytes = 262144;",
        &format!("EXPLAIN ANALYZE {grouped}"),
    );
    let spills: Vec<u64> = analyzed
        .split("spill_count=")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(spills.iter().any(|&n| n > 0), "{analyzed}");
}

#[test]
fn resolve_identities_links_groups_and_keeps_sticky_ids() {
    let p = project(&[
        ("sluice.toml", "[sources.edges]\nlocation = \"edges.csv\"\n[sources.previous]\nlocation = \"previous.csv\"\n"),
        ("edges.csv", "l,r\nOS-1,A1\nA1,e:x\nOS-2,A2\nA3,\n"),
        ("previous.csv", "id,shared_id\nA2,prev-2\nA1,prev-9\nOS-1,prev-1\n"),
    ]);
    let ns = "'sluice.identity'";
    let out = query_csv(
        p.path(),
        &format!(
            "SELECT r.id, r.group_size, r.shared_id = shared_id({ns}, 'A1') AS new_a1, r.shared_id = shared_id({ns}, 'A2') AS new_a2, r.shared_id = shared_id({ns}, 'A3') AS new_a3 FROM resolve_identities('edges', 'l', 'r') r ORDER BY id"
        ),
    );
    assert_eq!(
        out,
        "id,group_size,new_a1,new_a2,new_a3\nA1,3,true,false,false\nA2,2,false,true,false\nA3,1,false,false,true\nOS-1,3,true,false,false\nOS-2,2,false,true,false\ne:x,3,true,false,false\n"
    );
    // With the previous mapping: the group of A1 had prev-9 and prev-1; the smallest wins.
    let out = query_csv(p.path(), "SELECT id, shared_id, previous_shared_id FROM resolve_identities('edges', 'l', 'r', 'previous') WHERE id <> 'A3' ORDER BY id");
    assert_eq!(out, "id,shared_id,previous_shared_id\nA1,prev-1,prev-9\nA2,prev-2,prev-2\nOS-1,prev-1,prev-1\nOS-2,prev-2,\ne:x,prev-1,\n");
    let r = run(
        p.path(),
        &[
            "shell",
            "-c",
            "SELECT * FROM resolve_identities('edges', 'l', 'nope')",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("resolve_identities: cannot read l, nope from `edges`"),
        "{}",
        r.stderr
    );
}

#[test]
fn functions_command_lists_every_function_with_a_working_example() {
    let p = project(&[]);
    let r = run(p.path(), &["functions", "--format", "csv"]);
    assert_eq!(r.code, 0);
    let names: Vec<&str> = r
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    for f in [
        "sha256_hex",
        "hmac_sha256",
        "normalize_email",
        "normalize_phone",
        "hash_pii",
        "shared_id",
        "resolve_identities",
        "window_funnel",
        "retention",
        "sha2",
        "sha1",
        "xxhash64",
        "crc32",
    ] {
        assert!(names.contains(&f), "{f} missing from {names:?}");
    }
    // Every example runs (hmac needs its secret; resolve_identities needs its table).
    let p = project(&[
        ("sluice.toml", "[secrets]\npii_key = { env = \"K\" }\n[sources.account_migrations]\nlocation = \"m.csv\"\n"),
        ("m.csv", "legacy_account_id,account_id\nOS-1,A1\n"),
    ]);
    for doc in sluice::functions::docs() {
        let r = run_env(p.path(), &["shell", "-c", doc.example], &[("K", "k")]);
        assert_eq!(r.code, 0, "example of {} failed: {}", doc.name, r.stderr);
    }
}
