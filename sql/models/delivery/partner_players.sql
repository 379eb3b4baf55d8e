/* @config
materialized = "table"
format = "delta"
location = "partner/players"
partition_by = ["country"]
description = "One row per player for the publishing partner's Databricks workspace, as a Delta table: each publish is one atomic commit for every reader, older versions stay readable until `sluice vacuum`"
erasure = { list = "erased_emails", column = "email_sha256" }
tags = ["delivery"]

[columns.shared_id]
description = "Shared user identifier (pseudonymous: kept out of the Delta log's statistics)"
checks = ["not_null", "unique"]
pii = true

[columns.email_sha256]
checks = [{ matches = "^[0-9a-f]{64}$" }]

[[checks]]
volume = { max_change_pct = 30 }  # against the rows the Delta log holds now
*/
SELECT
    shared_id,
    max(email_sha256) AS email_sha256,
    country,
    min(event_ts) AS first_seen,
    count(*) AS events
FROM eda_launch_events
GROUP BY shared_id, country
