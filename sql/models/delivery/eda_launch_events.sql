/* @config
materialized = "table"
format = "parquet"
location = "eda/launch_events"
partition_by = ["country"]
description = "Launch events delivered to global ED&A: one row per event, keyed by shared user id, PII hashed, erasure requests honoured"
erasure = { list = "erased_emails", column = "email_sha256" }
tags = ["delivery"]

[columns.shared_id]
description = "Shared user identifier"
checks = ["not_null"]

[columns.email_sha256]
checks = [{ matches = "^[0-9a-f]{64}$" }]

[columns.country]
checks = [{ accepted_values = ["KR", "US", "JP"] }, { relationships = "countries.code" }]

[[checks]]
unique = ["event_id"]
[[checks]]
row_count = { min = 1 }
[[checks]]
volume = { max_change_pct = 30 }
[[checks]]
schema = "locked"
*/
SELECT
    e.event_id,
    l.shared_id,
    e.event_type,
    e.event_ts,
    e.platform,
    hash_pii(e.email, 'email') AS email_sha256,
    hash_pii(e.phone, 'phone', 'meta',
             CASE a.country WHEN 'KR' THEN '82' WHEN 'US' THEN '1' WHEN 'JP' THEN '81' END) AS phone_sha256,
    a.country
FROM stg_launch_events e
JOIN account_links l ON l.id = e.account_id
JOIN accounts a ON a.account_id = e.account_id
