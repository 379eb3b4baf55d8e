/* @config
materialized = "table"
format = "parquet"
location = "delivery"
partition_by = ["country"]
description = "Launch events, deduplicated, migrated accounts linked, PII hashed, erasure requests dropped"
*/
WITH ranked AS (
    SELECT e.*, row_number() OVER (PARTITION BY event_id ORDER BY event_ts) AS rn
    FROM launch_events e
),
linked AS (
    SELECT r.event_id, r.event_type, r.event_ts, r.email, r.phone, r.platform,
           COALESCE(m.account_id, r.account_id) AS account_id
    FROM ranked r
    LEFT JOIN account_migrations m ON m.legacy_account_id = r.account_id
    WHERE r.rn = 1
)
SELECT
    l.event_id,
    sha256_hex(l.account_id) AS shared_key,
    sha256_hex(lower(trim(l.email))) AS email_sha256,
    sha256_hex(regexp_replace(l.phone, '[^0-9]', '', 'g')) AS phone_sha256,
    l.event_type,
    l.event_ts,
    l.platform,
    a.country
FROM linked l
JOIN accounts a ON a.account_id = l.account_id
WHERE NOT EXISTS (
    SELECT 1 FROM deletion_requests d WHERE d.email = lower(trim(l.email))
)
