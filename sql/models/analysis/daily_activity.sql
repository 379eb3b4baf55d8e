/* @config
materialized = "incremental"
unique_key = ["activity_date", "country", "platform"]
format = "parquet"
location = "analysis/daily_activity"
description = "Daily active shared users and events per country and platform; each run replaces the days it sees again and keeps older days"
tags = ["analysis"]

[columns.active_users]
checks = ["not_null"]

[[checks]]
unique = ["activity_date", "country", "platform"]
*/
SELECT
    CAST(event_ts AS DATE) AS activity_date,
    country,
    platform,
    count(DISTINCT shared_id) AS active_users,
    count(*) AS events
FROM eda_launch_events
GROUP BY CAST(event_ts AS DATE), country, platform
