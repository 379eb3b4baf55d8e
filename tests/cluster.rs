//! A sluice cluster on loopback, started from the real binary: a Ballista scheduler and two
//! executors. The example project runs with `--cluster` and publishes exactly what a local
//! run publishes; a scalar, an aggregate and a table function of sluice's run on the
//! executors; and the client reports an unreachable scheduler and lost executors clearly.

mod common;
use common::cluster::{Cluster, Node};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Tasks an executor's log says it ran.
fn tasks_run(node: &Node) -> usize {
    node.log().matches("Finished task").count()
}

const OUTPUTS: [(&str, usize); 5] = [
    ("identity/account_links", 166),
    // A Delta table: the executors write its files, the client commits them.
    ("partner/players", 108),
    ("eda/launch_events", 291),
    ("analysis/daily_activity", 18),
    ("analysis/launch_funnel", 108),
];

#[test]
fn example_project_on_a_cluster_publishes_what_a_local_run_does() {
    let root = tempfile::tempdir().unwrap();
    let (on_cluster, local) = (root.path().join("cluster"), root.path().join("local"));
    copy_dir(&repo_root().join("sql"), &on_cluster);
    copy_dir(&repo_root().join("sql"), &local);
    let cluster = Cluster::start(&on_cluster, 2, &[]);

    let r = run(&on_cluster, &["run", "--cluster", &cluster.url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let summary = format!("{}{}", r.stdout, r.stderr);
    assert!(
        summary.contains("8 models: 8 ok, 0 failed checks, 0 errors"),
        "{summary}"
    );
    let r = run(&local, &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    for (output, rows) in OUTPUTS {
        let read = |dir: &Path| {
            let path = dir.join("target").join(output);
            query_csv(
                dir,
                &format!(
                    "SELECT * FROM '{}/' ORDER BY 1, 2, 3",
                    path.display().to_string().replace('\'', "''")
                ),
            )
        };
        let (a, b) = (read(&on_cluster), read(&local));
        assert_eq!(a.lines().count(), rows + 1, "{output}:\n{a}");
        assert_eq!(
            a, b,
            "{output} differs between the cluster and the local run"
        );
    }

    // The work ran on the executors: the scheduler finished jobs, and both executors ran tasks.
    let jobs = cluster
        .scheduler
        .log()
        .matches("Job finished successfully")
        .count();
    assert!(jobs >= 7, "{jobs} jobs:\n{}", cluster.scheduler.log());
    for (i, executor) in cluster.executors.iter().enumerate() {
        assert!(
            tasks_run(executor) > 0,
            "executor {i} ran no task:\n{}",
            executor.log()
        );
    }

    // Each kind of sluice function, on the cluster, gives the local answer.
    let queries = [
        // scalar: PII normalisation + hashing, shared ids
        "SELECT event_id, hash_pii(email, 'email') AS e, hash_pii(phone, 'phone') AS p, \
         shared_id('sluice.test', account_id) AS s FROM launch_events ORDER BY 1, 2, 3, 4",
        // aggregate: window_funnel and retention per account
        "SELECT account_id, window_funnel(86400, event_ts, event_type = 'session_start', \
         event_type = 'draw_entry', event_type = 'click') AS f, \
         retention(event_type = 'session_start', event_type = 'purchase') AS r \
         FROM launch_events GROUP BY account_id ORDER BY account_id",
        // table function over a view of the project (planned on the client)
        "SELECT id, shared_id, group_size FROM \
         resolve_identities('identity_edges', 'left_id', 'right_id') ORDER BY id",
        // a Delta table the executors wrote, read through its log by the client and its
        // files by the executors
        "SELECT shared_id, email_sha256, country, first_seen, events FROM partner_players \
         ORDER BY 1, 3",
        // row_number() dedup (the FirstRowPerKey operator crosses the wire)
        "SELECT event_id, event_ts, account_id FROM (SELECT *, row_number() OVER \
         (PARTITION BY event_id ORDER BY event_ts) AS rn FROM launch_events) WHERE rn = 1 \
         ORDER BY event_id",
    ];
    for sql in queries {
        let remote = cluster.query(&on_cluster, sql);
        assert!(remote.lines().count() > 100, "{sql}:\n{remote}");
        assert_eq!(remote, query_csv(&on_cluster, sql), "{sql}");
    }
    let digest = cluster.query(
        &on_cluster,
        "SELECT DISTINCT sha256_hex('abc') AS h FROM countries",
    );
    assert_eq!(
        digest,
        "h\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    );
    let explain = cluster.query(
        &on_cluster,
        "EXPLAIN ANALYZE SELECT count(*) FROM resolve_identities('identity_edges', 'left_id', 'right_id')",
    );
    assert!(
        explain.contains("SuccessfulStage")
            && explain.contains("IdentityExec: edges=identity_edges"),
        "{explain}"
    );
}

#[test]
fn unreachable_scheduler_and_lost_executors_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("sql"), dir.path());
    let port = common::cluster::free_port();
    let r = run(
        dir.path(),
        &["run", "--cluster", &format!("df://127.0.0.1:{port}")],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot reach the sluice cluster scheduler at df://127.0.0.1:{port}: \
             Connection refused (os error 111); start one with \
             `sluice cluster scheduler --bind 127.0.0.1:{port}`\n"
        )
    );
    assert!(!dir.path().join("target").join("eda").exists());

    let r = run(
        dir.path(),
        &["shell", "--cluster", "127.0.0.1:50050", "-c", "SELECT 1"],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("invalid cluster address `127.0.0.1:50050`: it must start with df://"),
        "{}",
        r.stderr
    );

    // Every executor gone: the query fails after the scheduler's timeout instead of hanging.
    let mut cluster = Cluster::start(dir.path(), 1, &[]);
    assert_eq!(
        cluster.query(dir.path(), "SELECT count(*) AS n FROM launch_events"),
        "n\n321\n"
    );
    cluster.executors[0].kill();
    let started = Instant::now();
    let r = run(
        dir.path(),
        &[
            "shell",
            "--cluster",
            &cluster.url,
            "-c",
            "SELECT count(*) FROM launch_events",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("no executors remain to run the tasks for this job"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A graph with a long chain in shuffled order, a giant random component with cycles,
/// duplicate and reversed edges, self-loops and NULL ends, in four Parquet files so the
/// edges scan has several partitions; `previous` maps part of it from an earlier run.
fn identity_project() -> tempfile::TempDir {
    let dir = project(&[(
        "sluice.toml",
        "[sources.edges]\nlocation = \"edges/\"\nformat = \"parquet\"\n\n\
         [sources.old_edges]\nlocation = \"old_edges.parquet\"\n\n\
         [sources.previous]\nlocation = \"previous.parquet\"\n",
    )]);
    std::fs::create_dir(dir.path().join("edges")).unwrap();
    // COPY writes where the process runs, not into the project.
    let at = dir.path().display();
    let all = "SELECT 'c' || CAST((value * 7919) % 3001 AS VARCHAR) AS l, \
                      'c' || CAST(((value + 1) * 7919) % 3001 AS VARCHAR) AS r, value AS k \
               FROM generate_series(0, 2999) \
               UNION ALL SELECT 'g' || CAST((value * 2654435761) % 5000 AS VARCHAR), \
                      'g' || CAST((value * 40503 + 7) % 5000 AS VARCHAR), value FROM generate_series(0, 3999) \
               UNION ALL SELECT 'c' || CAST(((value + 1) * 7919) % 3001 AS VARCHAR), \
                      'c' || CAST((value * 7919) % 3001 AS VARCHAR), value FROM generate_series(0, 499) \
               UNION ALL SELECT 's' || CAST(value AS VARCHAR), 's' || CAST(value AS VARCHAR), value FROM generate_series(0, 99) \
               UNION ALL SELECT 'n' || CAST(value AS VARCHAR), NULL, value FROM generate_series(0, 49) \
               UNION ALL SELECT NULL, 'm' || CAST(value AS VARCHAR), value FROM generate_series(0, 49) \
               UNION ALL SELECT NULL, NULL, value FROM generate_series(0, 9)";
    for part in 0..4 {
        query_csv(
            dir.path(),
            &format!(
                "COPY (SELECT l, r FROM ({all}) WHERE k % 4 = {part}) TO '{at}/edges/part-{part}.parquet'"
            ),
        );
    }
    // An earlier graph: some of today's ids, in groups that today's edges merge.
    query_csv(
        dir.path(),
        &format!(
            "COPY (SELECT 'g' || CAST(value * 3 AS VARCHAR) AS l, 'x' || CAST(value AS VARCHAR) \
             AS r FROM generate_series(0, 999)) TO '{at}/old_edges.parquet'"
        ),
    );
    query_csv(
        dir.path(),
        &format!(
            "COPY (SELECT id, shared_id FROM resolve_identities('old_edges', 'l', 'r')) \
             TO '{at}/previous.parquet'"
        ),
    );
    dir
}

#[test]
fn identity_resolution_on_a_cluster_contracts_on_every_executor_and_maps_as_locally() {
    let dir = identity_project();
    let cluster = Cluster::start(dir.path(), 2, &[]);
    let before: Vec<usize> = cluster.executors.iter().map(tasks_run).collect();
    for sql in [
        "SELECT * FROM resolve_identities('edges', 'l', 'r') ORDER BY id",
        "SELECT * FROM resolve_identities('edges', 'l', 'r', 'previous') ORDER BY id",
    ] {
        let local = query_csv(dir.path(), sql);
        // 3001 chain ids, 5000 random ones at most, 100 self-loops, 50 + 50 single ends.
        assert!(local.lines().count() > 7000, "{local}");
        // More partitions than one executor has slots, so the contraction spreads.
        let spread = format!("SET datafusion.execution.target_partitions = 8; {sql}");
        assert_eq!(cluster.query(dir.path(), &spread), local, "{sql}");
    }
    let groups = "SELECT count(*) AS ids, count(DISTINCT shared_id) AS groups, \
                  max(group_size) AS largest FROM resolve_identities('edges', 'l', 'r')";
    assert_eq!(
        cluster.query(dir.path(), groups),
        query_csv(dir.path(), groups)
    );

    let explain = cluster.query(
        dir.path(),
        "EXPLAIN ANALYZE SELECT count(*) FROM resolve_identities('edges', 'l', 'r')",
    );
    assert!(
        explain.contains("IdentityForestExec") && explain.contains("IdentityExec: edges=edges"),
        "{explain}"
    );
    // The contraction ran in its own stage, on both executors.
    for (i, executor) in cluster.executors.iter().enumerate() {
        assert!(
            tasks_run(executor) > before[i],
            "executor {i} ran no task:\n{}",
            executor.log()
        );
    }
}
