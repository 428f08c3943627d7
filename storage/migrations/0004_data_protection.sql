-- 0004: data protection (issue #4): retention and erasure.
--
-- Encryption at rest needs no schema change: sealed values are TEXT in the same columns
-- (storage/crypto.py), and rows written before it stay readable.
--
-- The retention job deletes the oldest notifications first (created_at); without this
-- index every batch would scan the whole table. It costs one more index entry per
-- inserted notification.
CREATE INDEX notifications_by_created_at ON notifications (created_at);

-- A user's idempotency keys, for export and erasure (and for ON DELETE CASCADE, which
-- otherwise scans the table), in seq order.
CREATE INDEX idempotency_keys_by_user ON idempotency_keys (user_id, seq);
