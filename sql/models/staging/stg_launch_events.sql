/* @config
materialized = "view"
description = "Launch events, one row per event: exporter retries removed, legacy overseas ids mapped to the migrated account, email cleansed"
tags = ["staging"]

[columns.event_id]
checks = ["not_null", "unique"]
*/
SELECT DISTINCT
    e.event_id,
    COALESCE(m.account_id, e.account_id) AS account_id,
    e.event_type,
    e.event_ts,
    e.day,
    normalize_email(e.email) AS email,
    e.phone,
    e.platform
FROM launch_events e
LEFT JOIN account_migrations m ON m.legacy_account_id = e.account_id
