/* @config
materialized = "table"
format = "csv"
location = "analysis/launch_funnel"
description = "Per shared user: deepest launch funnel step within a day (session -> draw entry -> click -> purchase) and day-2 retention"
tags = ["analysis"]

[columns.shared_id]
checks = ["not_null", "unique"]

[columns.funnel_step]
checks = [{ accepted_values = ["0", "1", "2", "3", "4"] }]
*/
SELECT
    shared_id,
    window_funnel(86400, event_ts,
                  event_type = 'session_start', event_type = 'draw_entry',
                  event_type = 'click', event_type = 'purchase') AS funnel_step,
    retention(CAST(event_ts AS DATE) = DATE '${launch_date}',
              CAST(event_ts AS DATE) = DATE '${launch_date}' + INTERVAL '1 day')[2] AS retained_day2
FROM eda_launch_events
GROUP BY shared_id
