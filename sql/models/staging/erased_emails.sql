/* @config
materialized = "view"
description = "Erasure list: hashed emails of every deletion request"
tags = ["staging"]
*/
SELECT DISTINCT hash_pii(email, 'email') AS email_sha256
FROM deletion_requests
