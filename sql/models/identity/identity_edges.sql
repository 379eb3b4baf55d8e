/* @config
materialized = "view"
description = "Identity graph: each account is a node; each migration links a legacy overseas id to its new account"
*/
SELECT legacy_account_id AS left_id, account_id AS right_id FROM account_migrations
UNION ALL
SELECT account_id AS left_id, account_id AS right_id FROM accounts
