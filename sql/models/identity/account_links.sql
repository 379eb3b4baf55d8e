/* @config
materialized = "table"
location = "identity/account_links"
description = "Every known account id (legacy or migrated) and the shared user id of its group"

[columns.id]
checks = ["not_null", "unique"]

[columns.shared_id]
checks = ["not_null", { matches = "^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$" }]
*/
SELECT id, shared_id, group_size
FROM resolve_identities('identity_edges', 'left_id', 'right_id')
