//! sluice's planner additions, checked through the binary: the `row_number() = 1`
//! deduplication gives exactly DataFusion's own answer, across batch boundaries, with
//! NULL keys, and only where it applies.

mod common;
use common::*;

const EVENTS: &str = "id,ts,v\n3,2026-05-01 10:00:00,c-late\n1,2026-05-01 09:00:00,a-late\n1,2026-05-01 08:00:00,a-first\n2,2026-05-01 07:00:00,b-only\n,2026-05-01 06:00:00,null-late\n3,2026-05-01 01:00:00,c-first\n,2026-05-01 05:00:00,null-first\n1,2026-05-01 08:30:00,a-middle\n4,2026-05-01 04:00:00,d-first\n4,2026-05-01 04:30:00,d-late\n";

fn events() -> tempfile::TempDir {
    project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\nschema = { id = \"BIGINT\", ts = \"TIMESTAMP\", v = \"VARCHAR\" }\n",
        ),
        ("data/events.csv", EVENTS),
    ])
}

const FIRST: &str = "SELECT id, v, rn FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 1 ORDER BY id NULLS LAST";

fn query(p: &std::path::Path, settings: &str, sql: &str) -> String {
    let r = run(
        p,
        &[
            "shell",
            "--format",
            "csv",
            "-c",
            &format!("{settings} {sql}"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
}

#[test]
fn row_number_one_keeps_the_first_row_per_key() {
    let p = events();
    let expected = "id,v,rn\n1,a-first,1\n2,b-only,1\n3,c-first,1\n4,d-first,1\n,null-first,1\n";
    // Tiny batches put equal keys in different batches; one and several partitions.
    for settings in [
        "",
        "SET datafusion.execution.batch_size = 1;",
        "SET datafusion.execution.batch_size = 2; SET datafusion.execution.target_partitions = 1;",
        "SET datafusion.execution.batch_size = 3; SET datafusion.execution.target_partitions = 3;",
    ] {
        let out = query(p.path(), settings, FIRST);
        let body: String = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(body, expected, "with {settings:?}");
    }
    // The same rows by another formulation that does not use the window at all.
    let other = query(
        p.path(),
        "",
        "SELECT e.id, e.v, 1 AS rn FROM events e JOIN (SELECT id, min(ts) AS ts FROM events GROUP BY id) f ON (e.id IS NOT DISTINCT FROM f.id) AND e.ts = f.ts ORDER BY e.id NULLS LAST",
    );
    assert_eq!(other, expected);
    // The plan uses the first-row operator, not the window.
    let plan = query(p.path(), "", &format!("EXPLAIN {FIRST}"));
    assert!(plan.contains("FirstRowPerKeyExec: keys=[id@0]"), "{plan}");
    assert!(!plan.contains("BoundedWindowAggExec"), "{plan}");
}

#[test]
fn other_window_filters_keep_the_window() {
    let p = events();
    let second = "SELECT id, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 2 ORDER BY id";
    assert_eq!(
        query(p.path(), "", second),
        "id,v\n1,a-middle\n3,c-late\n4,d-late\n,null-late\n"
    );
    assert!(query(p.path(), "", &format!("EXPLAIN {second}")).contains("BoundedWindowAggExec"));
    let ranked = "SELECT id, v FROM (SELECT *, rank() OVER (PARTITION BY id ORDER BY ts) AS rk FROM events) AS r WHERE rk = 1 ORDER BY id";
    assert!(query(p.path(), "", &format!("EXPLAIN {ranked}")).contains("BoundedWindowAggExec"));
    assert_eq!(
        query(p.path(), "", ranked),
        "id,v\n1,a-first\n2,b-only\n3,c-first\n4,d-first\n,null-first\n"
    );
}

/// A large CSV of visits and two small lookup CSVs, none with statistics (read from their
/// files: the shell would otherwise hold them in memory, where DataFusion knows their size).
fn visits() -> tempfile::TempDir {
    let mut big = String::from("visit,account\n");
    for i in 0..3000 {
        big.push_str(&format!("{i},a{}\n", i % 7));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.visits]\nlocation = \"data/visits.csv\"\ncache = false\n\
             [sources.renames]\nlocation = \"data/renames.csv\"\ncache = false\n\
             [sources.blocked]\nlocation = \"data/blocked.csv\"\ncache = false\n",
        ),
        ("data/visits.csv", &big),
        ("data/renames.csv", "old,new\na1,b1\na2,b2\nzz,b9\n"),
        ("data/blocked.csv", "account\na3\nb2\n"),
    ])
}

const LINKED: &str = "SELECT COALESCE(r.new, v.account) AS account, count(*) AS n \
     FROM visits v LEFT JOIN renames r ON r.old = v.account \
     WHERE NOT EXISTS (SELECT 1 FROM blocked b WHERE b.account = COALESCE(r.new, v.account)) \
     GROUP BY 1 ORDER BY 1";

/// A CSV result's rows without its header, sorted: for answers whose order is not asked for.
fn sorted(csv: String) -> Vec<String> {
    let mut lines: Vec<String> = csv.lines().skip(1).map(String::from).collect();
    lines.sort();
    lines
}

/// The value after `key` up to the next comma, for each plan line that has `key`.
fn plan_values<'a>(plan: &'a str, key: &str) -> Vec<&'a str> {
    plan.lines()
        .filter_map(|l| l.split(key).nth(1))
        .map(|t| t.split(',').next().unwrap_or(""))
        .collect()
}

#[test]
fn hash_joins_build_on_the_input_with_fewer_bytes() {
    let p = visits();
    // DataFusion alone would hash the 3000 visits (the left input) for both joins; the
    // smaller files are the build side instead, and the answer is the same.
    let plan = query(p.path(), "", &format!("EXPLAIN {LINKED}"));
    assert_eq!(
        plan_values(&plan, "join_type="),
        ["RightAnti", "Right"],
        "{plan}"
    );
    // The small build sides are collected once, so the visits are not repartitioned.
    assert_eq!(
        plan_values(&plan, "JoinExec: mode="),
        ["CollectLeft", "CollectLeft"],
        "{plan}"
    );
    // The one hash repartition left is the aggregation's.
    assert_eq!(plan.matches("partitioning=Hash(").count(), 1, "{plan}");
    assert!(
        plan.contains("partitioning=Hash([coalesce(r.new,v.account)@0], 2)"),
        "{plan}"
    );
    // Two inputs of the same size stay partitioned, both built and probed in parallel.
    let twin = "SELECT count(*) AS n FROM visits a JOIN visits b ON a.visit = b.visit";
    let plan = query(p.path(), "", &format!("EXPLAIN {twin}"));
    assert!(plan.contains("HashJoinExec: mode=Partitioned"), "{plan}");
    assert_eq!(query(p.path(), "", twin), "n\n3000\n");
    let rows = "account,n\na0,429\nb1,429\na4,428\na5,428\na6,428\n";
    assert_eq!(
        sorted(query(p.path(), "", LINKED)),
        sorted(rows.to_string())
    );
    // With join reordering off the written order stays, with the same rows.
    let off = "SET datafusion.optimizer.join_reordering = false;";
    let plan = query(p.path(), off, &format!("EXPLAIN {LINKED}"));
    assert!(
        plan.contains("join_type=LeftAnti") && plan.contains("join_type=Left,"),
        "{plan}"
    );
    assert_eq!(
        sorted(query(p.path(), off, LINKED)),
        sorted(rows.to_string())
    );
    // NOT IN is a null-aware anti join: its outer input stays the probe side, and it runs.
    let not_in = LINKED.replace(
        "WHERE NOT EXISTS (SELECT 1 FROM blocked b WHERE b.account = COALESCE(r.new, v.account))",
        "WHERE COALESCE(r.new, v.account) NOT IN (SELECT account FROM blocked)",
    );
    assert_ne!(not_in, LINKED);
    let plan = query(p.path(), "", &format!("EXPLAIN {not_in}"));
    assert!(plan.contains("join_type=LeftAnti"), "{plan}");
    assert_eq!(
        sorted(query(p.path(), "", &not_in)),
        sorted(rows.to_string())
    );
}

#[test]
fn joins_build_on_small_sources_held_in_memory_under_a_dedup() {
    // The lookups are small enough for the session to hold in memory (their size known,
    // no file under them); the visits are read from their file and deduplicated first, as
    // the delivery pipeline does. Every join still builds on a lookup, collected once.
    let mut big = String::from("visit,account\n");
    for i in 0..3000 {
        big.push_str(&format!("{},a{}\n", i % 2500, i % 7));
    }
    let p = project(&[
        (
            "sluice.toml",
            "[sources.visits]\nlocation = \"data/visits.csv\"\ncache = false\n\
             [sources.renames]\nlocation = \"data/renames.csv\"\n\
             [sources.blocked]\nlocation = \"data/blocked.csv\"\n",
        ),
        ("data/visits.csv", &big),
        ("data/renames.csv", "old,new\na1,b1\na2,b2\nzz,b9\n"),
        ("data/blocked.csv", "account\na3\nb2\n"),
    ]);
    let sql = "WITH first AS (SELECT *, row_number() OVER (PARTITION BY visit ORDER BY account) AS rn FROM visits) \
               SELECT COALESCE(r.new, v.account) AS account, count(*) AS n \
               FROM first v LEFT JOIN renames r ON r.old = v.account \
               WHERE v.rn = 1 AND NOT EXISTS (SELECT 1 FROM blocked b WHERE b.account = COALESCE(r.new, v.account)) \
               GROUP BY 1 ORDER BY 1";
    let plan = query(p.path(), "", &format!("EXPLAIN {sql}"));
    assert!(plan.contains("BestRowPerKeyExec"), "{plan}");
    assert_eq!(
        plan_values(&plan, "join_type="),
        ["RightAnti", "Right"],
        "{plan}"
    );
    assert_eq!(
        plan_values(&plan, "JoinExec: mode="),
        ["CollectLeft", "CollectLeft"],
        "{plan}"
    );
    assert_eq!(
        query(p.path(), "", sql),
        "account,n\na0,429\na4,357\na5,357\na6,286\nb1,357\n"
    );
}

/// Events in random key order with repeated keys, some tied on the ORDER BY column.
fn shuffled_events() -> tempfile::TempDir {
    let mut rows = String::from("id,ts,v\n");
    let mut next = lcg(12345);
    for n in 0..3000u64 {
        let id = next() % 700;
        // Timestamps from a small range: many keys have two rows at the same time.
        let ts = next() % 40;
        let id = if n % 97 == 0 {
            String::new()
        } else {
            id.to_string()
        };
        rows.push_str(&format!("{id},2026-05-01 10:{:02}:00,v{n}\n", ts));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\nschema = { id = \"BIGINT\", ts = \"TIMESTAMP\", v = \"VARCHAR\" }\n",
        ),
        ("data/events.csv", &rows),
    ])
}

/// `id,ts,v` lines by id; a key whose ORDER BY value ties may differ in `v` only.
fn by_key(csv: &str) -> std::collections::BTreeMap<String, (String, String)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let (id, ts, v) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            (id.to_string(), (ts.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn unsorted_input_is_deduplicated_by_hash_with_the_window_operators_answer() {
    let p = shuffled_events();
    for (order, tie_break) in [("ts", ""), ("ts DESC", ""), ("ts", ", v DESC")] {
        let hashed = format!("SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY {order}{tie_break}) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v");
        // rn * 2 = 2 is not a form the rewrite knows: DataFusion's window answers it.
        let windowed = hashed.replace("WHERE rn = 1", "WHERE rn * 2 = 2");
        for settings in [
            "SET sluice.dedup = 'hash';",
            "SET sluice.dedup = 'hash'; SET datafusion.execution.batch_size = 7;",
            "SET sluice.dedup = 'hash'; SET datafusion.execution.target_partitions = 1;",
            "SET sluice.dedup = 'hash'; SET datafusion.execution.batch_size = 5; SET datafusion.execution.target_partitions = 3;",
        ] {
            let plan = query(p.path(), settings, &format!("EXPLAIN {hashed}"));
            assert!(plan.contains("BestRowPerKeyExec: keys=[id@0]"), "{plan}");
            assert!(!plan.contains("BoundedWindowAggExec"), "{plan}");
            assert!(
                query(p.path(), settings, &format!("EXPLAIN {windowed}"))
                    .contains("BoundedWindowAggExec")
            );
            let (ours, theirs) = (
                by_key(&query(p.path(), settings, &hashed)),
                by_key(&query(p.path(), settings, &windowed)),
            );
            assert_eq!(ours.len(), theirs.len(), "{order}{tie_break} {settings}");
            assert!(ours.len() > 600, "{}", ours.len());
            let mut ties = 0;
            for (id, (ts, v)) in &theirs {
                let (our_ts, our_v) = &ours[id];
                // The same time for every key; the same row unless the time ties (then
                // both picked one of the tied rows, and a full ORDER BY picks the same).
                assert_eq!(our_ts, ts, "key {id} with {order}{tie_break} {settings}");
                if our_v != v {
                    assert!(tie_break.is_empty(), "key {id}: {our_v} vs {v}");
                    ties += 1;
                }
            }
            assert!(ties < ours.len() / 2, "{ties}");
        }
    }
}

#[test]
fn the_hash_dedup_is_the_default_and_the_sort_is_chosen_by_name() {
    let p = shuffled_events();
    let sql = "EXPLAIN SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v";
    let plan = query(p.path(), "", sql);
    assert!(
        plan.contains("BestRowPerKeyExec: keys=[id@0], order=[ts@1 ASC NULLS LAST]"),
        "{plan}"
    );
    let plan = query(p.path(), "SET sluice.dedup = 'sort';", sql);
    assert!(plan.contains("FirstRowPerKeyExec: keys=[id@0]"), "{plan}");
    assert!(plan.contains("SortExec"), "{plan}");
    let r = run_env(
        p.path(),
        &["shell", "--format", "csv", "-c", sql],
        &[("SLUICE_DEDUP", "sort")],
    );
    assert!(r.stdout.contains("FirstRowPerKeyExec"), "{}", r.stdout);
    // A typo is an error, not a silent choice of one of the two.
    let r = run(
        p.path(),
        &["shell", "-c", &format!("SET sluice.dedup = 'hsah'; {sql}")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("sluice.dedup must be 'hash', 'split' or 'sort', not 'hsah'"),
        "{}",
        r.stderr
    );
}

/// 40,000 events in random key order: 6,000 ids, 30% of the rows on 5 hot ids, times from a
/// small range (ties), NULL ids and NULL times among them.
fn skewed_events() -> tempfile::TempDir {
    let mut rows = String::from("id,ts,v\n");
    let mut next = lcg(987654321);
    for n in 0..40_000u64 {
        let id = if next() % 10 < 3 {
            next() % 5
        } else {
            next() % 6000
        };
        let id = if n % 211 == 0 {
            String::new()
        } else {
            id.to_string()
        };
        let ts = if n % 173 == 0 {
            String::new()
        } else {
            format!("2026-05-01 10:{:02}:00", next() % 60)
        };
        rows.push_str(&format!("{id},{ts},v{n}\n"));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\nschema = { id = \"BIGINT\", ts = \"TIMESTAMP\", v = \"VARCHAR\" }\n",
        ),
        ("data/events.csv", &rows),
    ])
}

const ONE_PARTITION: &str = "SET datafusion.execution.target_partitions = 1;";

/// `sql`'s rows under `--memory-limit limit` (small batches and sort reservations, and
/// `partitions`' settings), and what `EXPLAIN ANALYZE` says of its `BestRowPerKeyExec`:
/// the operator's line up to the end of its metrics.
fn dedup_under_memory_limit(
    p: &std::path::Path,
    limit: &str,
    partitions: &str,
    sql: &str,
) -> (String, String) {
    let shell = ["--memory-limit", limit, "shell", "--format", "csv", "-c"];
    let settings = format!("SET datafusion.execution.batch_size = 512; SET datafusion.execution.sort_spill_reservation_bytes = 65536; {partitions}");
    let r = run(p, &[&shell[..], &[&format!("{settings} {sql}")]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let explained = run(
        p,
        &[&shell[..], &[&format!("{settings} EXPLAIN ANALYZE {sql}")]].concat(),
    );
    let operator = explained
        .stdout
        .split("BestRowPerKeyExec")
        .nth(1)
        .and_then(|rest| {
            let metrics = rest.find("metrics=[")?;
            let end = metrics + rest[metrics..].find(']')?;
            Some(rest[..end].to_string())
        })
        .unwrap_or_else(|| panic!("{}", explained.stdout));
    (r.stdout, operator)
}

/// `sql` under `settings` is split by key in front of the dedup, as DataFusion plans it.
fn assert_split_by_key(p: &std::path::Path, settings: &str, sql: &str, partitions: usize) {
    let plan = query(p, settings, &format!("EXPLAIN {sql}"));
    assert!(
        plan.contains("BestRowPerKeyExec") && !plan.contains("table=shared"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "RepartitionExec: partitioning=Hash([id@0], {partitions})"
        )),
        "{plan}"
    );
}

#[test]
fn skewed_keys_and_a_memory_pool_too_small_for_the_table_give_the_window_operators_rows() {
    let p = skewed_events();
    // Without an ORDER BY any row of a key is row number 1: one row per key, NULL included.
    let unordered = "SELECT count(*) AS n, count(DISTINCT id) AS ids, count(*) FILTER (WHERE id IS NULL) AS nulls FROM (SELECT *, row_number() OVER (PARTITION BY id) AS rn FROM events) AS r WHERE rn = 1";
    let plan = query(p.path(), "", &format!("EXPLAIN {unordered}"));
    assert!(plan.contains("BestRowPerKeyExec"), "{plan}");
    let counts = query(p.path(), "", unordered);
    let values: Vec<u64> = counts
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(values[0], values[1] + 1, "{counts}");
    assert_eq!(values[2], 1, "{counts}");
    // A full ORDER BY (v breaks every tie) makes row number 1 one row per key: the hash
    // table, its spilling fallback and DataFusion's window must keep exactly the same rows.
    for order in ["ts, v", "ts DESC NULLS LAST, v DESC", "ts NULLS FIRST, v"] {
        let sql = format!("SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY {order}) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v");
        let windowed = query(
            p.path(),
            "",
            &sql.replace("WHERE rn = 1", "WHERE rn * 2 = 2"),
        );
        // Nearly all of the 6,000 ids appear, plus the NULL key.
        assert!(
            windowed.lines().count() > 5800,
            "{}",
            windowed.lines().count()
        );
        for settings in [
            "",
            "SET datafusion.execution.batch_size = 333;",
            "SET datafusion.execution.target_partitions = 1;",
            "SET sluice.dedup = 'sort';",
        ] {
            assert_eq!(
                query(p.path(), settings, &sql),
                windowed,
                "{order} {settings}"
            );
        }
        // 1 MiB holds the sort's buffers but not the table and every batch: the dedup
        // falls back to DataFusion's sort, which spills, and keeps the same rows.
        let (rows, dedup) = dedup_under_memory_limit(p.path(), "1M", ONE_PARTITION, &sql);
        assert_eq!(rows, windowed, "{order} under 1M");
        assert!(dedup.contains("fallback_sorts=1"), "{dedup}");
        assert!(dedup.contains("sorts_up_front=0"), "{dedup}");
        assert!(
            dedup.contains("spill_count=") && !dedup.contains("spill_count=0"),
            "{dedup}"
        );
    }
}

/// 45,000 events like [`skewed_events`] (hot keys, NULL ids and times), with times that tie
/// within a key or not. With three partitions and no minimum size for splitting a file, the
/// scan reads the file in three byte ranges and the dedup shares one table among them.
fn skewed_events_in_one_file(ties: bool) -> tempfile::TempDir {
    let mut next = lcg(55555);
    let mut rows = String::from("id,ts,v\n");
    for n in 0..45_000u64 {
        let id = if next() % 10 < 3 {
            next() % 5
        } else {
            next() % 6000
        };
        let id = match (n % 211 == 0, n % 173 == 0 && !ties) {
            // A NULL time on a key of its own: NULLs tie with each other.
            (_, true) => (100_000 + n).to_string(),
            (true, false) => String::new(),
            (false, false) => id.to_string(),
        };
        let minute = next() % 60;
        let ts = match (n % 173 == 0, ties) {
            (true, _) => String::new(),
            (false, true) => format!("2026-05-01 10:{minute:02}:00"),
            // Every time distinct: row number 1 is one row, whatever the order of arrival.
            (false, false) => format!("2026-05-01 10:{minute:02}:00.{n:06}"),
        };
        rows.push_str(&format!("{id},{ts},v{n:05}\n"));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\ncache = false\nschema = { id = \"BIGINT\", ts = \"TIMESTAMP\", v = \"VARCHAR\" }\n",
        ),
        ("data/events.csv", &rows),
    ])
}

#[test]
fn partitions_sharing_one_table_keep_the_window_operators_rows() {
    let three = "SET datafusion.execution.target_partitions = 3; SET datafusion.optimizer.repartition_file_min_size = 1;";
    let settings = [
        three.to_string(),
        format!("{three} SET datafusion.execution.batch_size = 97;"),
    ];
    for ties in [false, true] {
        let p = skewed_events_in_one_file(ties);
        for order in ["ts", "ts DESC", "ts NULLS FIRST"] {
            let sql = format!("SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY {order}) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v");
            let windowed = query(
                p.path(),
                three,
                &sql.replace("WHERE rn = 1", "WHERE rn * 2 = 2"),
            );
            assert!(windowed.lines().count() > 5800, "{windowed}");
            // No RepartitionExec under the dedup: the scan's partitions feed it directly.
            let plan = query(p.path(), three, &format!("EXPLAIN {sql}"));
            let dedup = plan
                .lines()
                .skip_while(|l| !l.contains("BestRowPerKeyExec"))
                .take(2)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(dedup.contains(", table=shared"), "{plan}");
            assert!(
                dedup.contains("DataSourceExec: file_groups={3 groups"),
                "{plan}"
            );
            // `split` keeps DataFusion's repartition in front of a table per partition.
            let split = format!("{three} SET sluice.dedup = 'split';");
            assert_split_by_key(p.path(), &split, &sql, 3);
            for settings in &settings {
                let ours = query(p.path(), settings, &sql);
                if !ties {
                    assert_eq!(ours, windowed, "{order} {settings}");
                    continue;
                }
                // Ties: the same time for every key, and the same row unless the time ties.
                let (ours, theirs) = (by_key(&ours), by_key(&windowed));
                assert_eq!(ours.len(), theirs.len(), "{order} {settings}");
                for (id, (ts, _)) in &theirs {
                    assert_eq!(&ours[id].0, ts, "key {id} with {order} {settings}");
                }
            }
        }
    }
    let p = skewed_events_in_one_file(false);
    let sql = "SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v";
    // One byte range (the file is not split) into two partitions: DataFusion splits by
    // key, as before.
    assert_split_by_key(
        p.path(),
        "SET datafusion.execution.target_partitions = 2; SET datafusion.optimizer.repartition_file_scans = false;",
        sql,
        2,
    );
    // A pool too small for the table: the winners so far and the rest of every partition
    // go through one sort, which spills, and the rows are the same.
    let windowed = query(
        p.path(),
        three,
        &sql.replace("WHERE rn = 1", "WHERE rn * 2 = 2"),
    );
    let (rows, metrics) = dedup_under_memory_limit(p.path(), "1M", three, sql);
    assert_eq!(rows, windowed);
    assert!(metrics.contains("table=shared"), "{metrics}");
    assert!(metrics.contains("fallback_sorts=1"), "{metrics}");
    assert!(
        metrics.contains("spill_count=") && !metrics.contains("spill_count=0,"),
        "{metrics}"
    );
}

#[test]
fn an_input_far_larger_than_the_memory_pool_is_sorted_from_the_start_with_the_same_rows() {
    let p = skewed_events();
    let sql = "SELECT id, ts, v FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts, v) AS rn FROM events) AS r WHERE rn = 1 ORDER BY v";
    let windowed = query(
        p.path(),
        "",
        &sql.replace("WHERE rn = 1", "WHERE rn * 2 = 2"),
    );
    assert!(windowed.lines().count() > 5800, "{windowed}");
    // 1.2 MB of CSV against a pool of 448 KiB (512K less the eighth kept outside it): the
    // table could not hold the input, so the dedup sorts (spilling) without trying it.
    let (rows, dedup) = dedup_under_memory_limit(p.path(), "512K", ONE_PARTITION, sql);
    assert_eq!(rows, windowed);
    assert!(dedup.contains("sorts_up_front=1"), "{dedup}");
    assert!(dedup.contains("fallback_sorts=0"), "{dedup}");
    assert!(
        dedup.contains("spill_count=") && !dedup.contains("spill_count=0"),
        "{dedup}"
    );
}

#[test]
fn an_ordered_result_keeps_the_sorted_dedup_and_a_tiny_memory_pool_says_so() {
    let p = shuffled_events();
    // ORDER BY the key: the window's output order serves it, so the sorted path stays.
    let by_id = "SELECT id, ts FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 1 ORDER BY id";
    let plan = query(p.path(), "", &format!("EXPLAIN {by_id}"));
    assert!(
        plan.contains("FirstRowPerKeyExec") || plan.contains("BestRowPerKeyExec"),
        "{plan}"
    );
    let out = query(p.path(), "", by_id);
    let ids: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.parse::<i64>().unwrap_or(i64::MAX));
    assert_eq!(ids, sorted, "the result is ordered by id");
    // A pool too small for the keys: a clear error, not a wrong answer.
    let r = run(
        p.path(),
        &[
            "--memory-limit",
            "64K",
            "shell",
            "-c",
            "SELECT count(*) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts) AS rn FROM events) AS r WHERE rn = 1",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Resources exhausted"), "{}", r.stderr);
}

/// Events looked up in smaller tables: one with duplicate and NULL keys, one with unique
/// keys that miss some events, one keyed by two columns.
fn lookups() -> tempfile::TempDir {
    let mut events = String::from("id,k,day,note\n");
    for i in 0..600 {
        let k = if i % 29 == 0 {
            String::new()
        } else {
            format!("k{}", i % 13)
        };
        events.push_str(&format!("{i},{k},{},n{}\n", i % 3, i % 5));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.events]\nlocation = \"data/events.csv\"\ncache = false\n\
             schema = { id = \"BIGINT\", k = \"VARCHAR\", day = \"BIGINT\", note = \"VARCHAR\" }\n\
             [sources.dims]\nlocation = \"data/dims.csv\"\ncache = false\n\
             schema = { k = \"VARCHAR\", name = \"VARCHAR\" }\n\
             [sources.uniq]\nlocation = \"data/uniq.csv\"\ncache = false\n\
             schema = { k = \"VARCHAR\", name = \"VARCHAR\" }\n\
             [sources.daily]\nlocation = \"data/daily.csv\"\ncache = false\n\
             schema = { k = \"VARCHAR\", day = \"BIGINT\", rate = \"BIGINT\" }\n\
             [sources.ids]\nlocation = \"data/ids.csv\"\ncache = false\n\
             schema = { id = \"BIGINT\", label = \"VARCHAR\" }\n\
             [sources.longs]\nlocation = \"data/longs.csv\"\ncache = false\n\
             schema = { key = \"VARCHAR\", name = \"VARCHAR\" }\n",
        ),
        (
            "data/ids.csv",
            "id,label\n0,zero\n7,seven\n14,fourteen\n599,last\n-3,negative\n7,seven-again\n",
        ),
        (
            "data/longs.csv",
            "key,name\nk1-with-a-rather-long-suffix,long-one\nk2,short-two\nk3-with-a-rather-long-suffix,long-three\n",
        ),
        ("data/events.csv", &events),
        (
            "data/dims.csv",
            "k,name\nk1,one\nk1,uno\nk2,two\n,nobody\nk3,three\nk3,drei\nk3,trois\nk99,none\n",
        ),
        (
            "data/uniq.csv",
            "k,name\nk0,zero\nk4,four\nk5,five\nk12,twelve\n",
        ),
        (
            "data/daily.csv",
            "k,day,rate\nk1,0,10\nk1,1,11\nk2,2,22\nk7,0,70\nk7,0,71\n,1,99\n",
        ),
    ])
}

#[test]
fn lookup_joins_give_datafusions_hash_join_rows() {
    let p = lookups();
    let queries = [
        // Inner, duplicate build keys, NULL keys on both sides.
        "SELECT e.id, e.k, d.name FROM events e JOIN dims d ON e.k = d.k",
        // Right outer: every event, NULLs where no build row matches.
        "SELECT e.id, e.note, d.name FROM events e LEFT JOIN dims d ON e.k = d.k",
        // Unique build keys, some events unmatched: inner and outer.
        "SELECT e.id, u.name FROM events e JOIN uniq u ON e.k = u.k",
        "SELECT e.id, e.k, u.name FROM events e LEFT JOIN uniq u ON u.k = e.k",
        // Semi and anti joins.
        "SELECT id, note FROM events WHERE k IN (SELECT k FROM dims)",
        "SELECT e.id FROM events e WHERE EXISTS (SELECT 1 FROM uniq u WHERE u.k = e.k)",
        "SELECT e.id, e.k FROM events e WHERE NOT EXISTS (SELECT 1 FROM dims d WHERE d.k = e.k)",
        // Two key columns, a duplicate pair and an expression key.
        "SELECT e.id, r.rate FROM events e JOIN daily r ON e.k = r.k AND e.day = r.day",
        "SELECT e.id, r.rate FROM events e LEFT JOIN daily r ON upper(e.k) = upper(r.k) AND e.day = r.day",
        // Integer keys (packed into the table), a duplicate among them.
        "SELECT e.id, x.label FROM events e JOIN ids x ON e.id = x.id",
        "SELECT e.id, x.label FROM events e LEFT JOIN ids x ON x.id = e.id - 1",
        // Keys longer than the table packs: build side (compared by value) and probe side.
        "SELECT e.id, l.name FROM events e LEFT JOIN longs l ON concat(e.k, '-with-a-rather-long-suffix') = l.key",
        "SELECT e.id, l.name FROM events e JOIN longs l ON e.k = l.key",
        "SELECT e.id, u.name FROM events e LEFT JOIN uniq u ON concat(e.k, '-with-a-rather-long-suffix') = u.k",
        "SELECT e.id, u.name FROM events e LEFT JOIN uniq u ON concat(e.k, '-', e.day) = u.k",
        // Outputs that read no column of the join (as an erasure count does).
        "SELECT count(*) AS n FROM events e WHERE NOT EXISTS (SELECT 1 FROM dims d WHERE d.k = e.k)",
        "SELECT count(*) AS n FROM events e JOIN dims d ON e.k = d.k",
        "SELECT count(*) AS n FROM events e JOIN uniq u ON e.k = u.k",
        "SELECT count(*) AS n FROM events e LEFT JOIN uniq u ON e.k = u.k",
    ];
    let off = "SET sluice.lookup_joins = false;";
    for sql in queries {
        let plan = query(p.path(), "", &format!("EXPLAIN {sql}"));
        assert!(plan.contains("LookupJoinExec"), "{sql}\n{plan}");
        assert!(!plan.contains("HashJoinExec"), "{sql}\n{plan}");
        let datafusion = sorted(query(p.path(), off, sql));
        let plan = query(p.path(), off, &format!("EXPLAIN {sql}"));
        assert!(
            plan.contains("HashJoinExec: mode=CollectLeft"),
            "{sql}\n{plan}"
        );
        assert!(!datafusion.is_empty(), "{sql}");
        // Batches of one row, of a few rows over three partitions, and the default.
        for settings in [
            "",
            "SET datafusion.execution.batch_size = 1;",
            "SET datafusion.execution.batch_size = 7; SET datafusion.execution.target_partitions = 3;",
        ] {
            assert_eq!(
                sorted(query(p.path(), settings, sql)),
                datafusion,
                "{sql} with {settings:?}"
            );
        }
    }
    // A few rows checked by hand: duplicates multiply, NULL keys match nothing.
    assert_eq!(
        query(
            p.path(),
            "",
            "SELECT e.k, count(*) AS n FROM events e JOIN dims d ON e.k = d.k GROUP BY 1 ORDER BY 1"
        ),
        "k,n\nk1,92\nk2,44\nk3,132\n"
    );
    assert_eq!(
        query(
            p.path(),
            "",
            "SELECT count(*) AS n, count(d.name) AS named FROM events e LEFT JOIN dims d ON e.k = d.k"
        ),
        "n,named\n734,268\n"
    );
    assert_eq!(
        query(
            p.path(),
            "",
            "SELECT count(*) AS n, count(l.name) AS named FROM events e LEFT JOIN longs l ON concat(e.k, '-with-a-rather-long-suffix') = l.key"
        ),
        "n,named\n600,90\n"
    );
}
