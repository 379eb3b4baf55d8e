//! `sluice gen launch`: deterministic data in the example project's schema, and the
//! pipeline benchmark's project run on it.

mod common;
use common::*;
use std::path::Path;

fn gen(out: &Path, rows: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "gen",
        "launch",
        "--rows",
        rows,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(Path::new("."), &args)
}

#[test]
fn same_seed_same_bytes_other_seed_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for (out, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let r = gen(out, "20000", &["--seed", seed, "--days", "3"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stderr
                .starts_with("wrote 20000 events over 3 days, 1000 accounts ("),
            "{}",
            r.stderr
        );
    }
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_ne!(snapshot(&a), snapshot(&c));
    for day in ["2026-05-01", "2026-05-02", "2026-05-03"] {
        assert!(a
            .join(format!("launch_events/day={day}/events.csv"))
            .is_file());
    }
}

#[test]
fn generated_data_is_messy_and_linked_like_the_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let r = gen(&data, "100000", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let p = project(&[(
        "sluice.toml",
        &std::fs::read_to_string(repo_root().join("benches/pipeline/project/sluice.toml")).unwrap(),
    )]);
    std::os::unix::fs::symlink(&data, p.path().join("data")).unwrap();
    // Exactly --rows rows, some written twice by the "exporter", over 7 days.
    assert_eq!(
        query_csv(
            p.path(),
            "SELECT count(*) AS n, count(DISTINCT day) AS days, count(*) > count(DISTINCT event_id) AS dups FROM launch_events"
        ),
        "n,days,dups\n100000,7,true\n"
    );
    // A duplicate is the same row again.
    assert_eq!(
        query_csv(p.path(), "SELECT count(*) AS n FROM (SELECT event_id FROM launch_events GROUP BY event_id HAVING count(DISTINCT (account_id, event_ts, email)) > 1)"),
        "n\n0\n"
    );
    // Legacy ids in events all resolve through the migrations; padded and upper-case emails.
    assert_eq!(
        query_csv(p.path(), "SELECT count(*) AS n FROM launch_events e WHERE e.account_id LIKE 'OS-%' AND NOT EXISTS (SELECT 1 FROM account_migrations m WHERE m.legacy_account_id = e.account_id)"),
        "n\n0\n"
    );
    let messy = query_csv(
        p.path(),
        "SELECT bool_or(email <> trim(email)) AS padded, bool_or(email = upper(email)) AS upper, bool_or(account_id LIKE 'OS-%') AS legacy FROM launch_events",
    );
    assert_eq!(messy, "padded,upper,legacy\ntrue,true,true\n");
    let requests = query_csv(
        p.path(),
        "SELECT count(*) > 0 AS any FROM deletion_requests",
    );
    assert_eq!(requests, "any\ntrue\n");

    // The pipeline benchmark's model on it equals the same delivery written another way
    // (DISTINCT instead of row_number, NOT IN instead of NOT EXISTS).
    copy_dir(
        &repo_root().join("benches/pipeline/project/models"),
        &p.path().join("models"),
    );
    let r = run(p.path(), &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = query_csv(
        p.path(),
        "SELECT count(*) AS n, count(DISTINCT sha256_hex(account_id)) AS keys, sum(event_id) AS s FROM (
            SELECT DISTINCT e.event_id, COALESCE(m.account_id, e.account_id) AS account_id
            FROM launch_events e LEFT JOIN account_migrations m ON m.legacy_account_id = e.account_id
            JOIN accounts a ON a.account_id = COALESCE(m.account_id, e.account_id)
            WHERE lower(trim(e.email)) NOT IN (SELECT email FROM deletion_requests))",
    );
    let got = query_csv(
        p.path(),
        "SELECT count(*) AS n, count(DISTINCT shared_key) AS keys, sum(event_id) AS s FROM delivery",
    );
    assert_eq!(got, expected);
    assert!(
        got.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 80_000
    );
}

#[test]
fn random_order_in_one_file_holds_the_same_events_as_the_day_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (days, shuffled) = (dir.path().join("days"), dir.path().join("one"));
    assert_eq!(gen(&days, "30000", &["--days", "3"]).code, 0);
    let r = gen(
        &shuffled,
        "30000",
        &["--days", "3", "--order", "random", "--layout", "one-file"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(shuffled.join("launch_events/events.csv").is_file());
    assert!(!shuffled.join("launch_events/day=2026-05-01").exists());
    let stats = |data: &Path| {
        let p = project(&[(
            "sluice.toml",
            "[sources.events]\nlocation = \"data/launch_events/\"\nformat = \"csv\"\nschema = { event_id = \"BIGINT\", account_id = \"VARCHAR\", event_type = \"VARCHAR\", event_ts = \"TIMESTAMP\", email = \"VARCHAR\", phone = \"VARCHAR\", platform = \"VARCHAR\" }\n",
        )]);
        std::os::unix::fs::symlink(data, p.path().join("data")).unwrap();
        query_csv(
            p.path(),
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, count(DISTINCT account_id) AS accounts, min(event_id) >= 1 AND max(event_id) <= 30000 AS in_range FROM events",
        )
    };
    // As many events, distinct ids and accounts; ids within 1..=rows either way.
    let (a, b) = (stats(&days), stats(&shuffled));
    assert_eq!(a, b);
    assert!(a.ends_with(",true\n"), "{a}");
    // Random: the first rows of the file are nowhere near id order.
    let text = std::fs::read_to_string(shuffled.join("launch_events/events.csv")).unwrap();
    let first: Vec<u64> = text
        .lines()
        .skip(1)
        .take(1000)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let ascending = first.windows(2).filter(|w| w[1] >= w[0]).count();
    assert!(
        (300..700).contains(&ascending),
        "{ascending} of 999 steps ascend"
    );
    assert!(
        first.iter().any(|&id| id > 20000),
        "ids from every day appear early"
    );
}

#[test]
fn hot_percent_puts_that_share_of_the_events_on_five_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let share = |extra: &[&str]| {
        let out = dir.path().join(format!("out{}", extra.join("_")));
        let r = gen(
            &out,
            "20000",
            &[&["--layout", "one-file"][..], extra].concat(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        // The five hot accounts by their ids and their legacy (pre-migration) ids.
        let sql = format!(
            "SELECT count(*) FILTER (WHERE account_id IN ('A0000001', 'A0000002', 'A0000003', 'A0000004', 'A0000005', \
             'OS-000007919', 'OS-000015838', 'OS-000023757', 'OS-000031676', 'OS-000039595')) * 1000 / count(*) AS permille \
             FROM '{}/launch_events/events.csv'",
            out.display()
        );
        let csv = query_csv(&out, &sql);
        csv.lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    // Uniformly, 5 of 1000 accounts get about 0.5% of the events.
    let even = share(&[]);
    assert!(even < 15, "{even}");
    let hot = share(&["--hot-percent", "30"]);
    assert!((285..=325).contains(&hot), "{hot}");
    let r = gen(&dir.path().join("bad"), "100", &["--hot-percent", "101"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
