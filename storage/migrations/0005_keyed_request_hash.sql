-- 0005: Idempotency-Key request hashes become keyed (issue #10).
--
-- Until now `request_hash` was the SHA-256 of the canonical request body: a copy of the
-- database gave away guessable content that is encrypted in `notifications` (a 6-digit
-- code was found from its hash in a second). pushd now stores an HMAC under a key that
-- is not in the database (`hmac-sha256:<key id>:<hex>`, pushd/idempotency.py).
--
-- The old hashes are dropped, not kept until they expire. The rows stay: a retry of a
-- request sent before the upgrade still finds its key and gets the first answer, on the
-- key alone (its body can no longer be compared). Deleting them would have turned such a
-- retry into a second notification.
UPDATE idempotency_keys SET request_hash = 'dropped:unkeyed-sha256'
WHERE request_hash NOT LIKE 'hmac-sha256:%';
