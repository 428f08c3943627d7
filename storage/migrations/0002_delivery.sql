-- 0002: delivery guarantees (issue #3).
--
-- * users.sent_seq: highest seq written to any socket of the user (the ack cursor,
--   users.ack_seq, already exists). Both cursors only move forward.
-- * notifications: expiry, read state, the explicit "will not be delivered" mark set when
--   a socket was sent a `gap` over it, and what the outbox relay needs: which node
--   committed the row (node_id) and a global commit order (gid).
-- * cursor_history: one row per cursor advance (not per notification): the time a
--   notification was sent or acknowledged is that of the first advance reaching its seq,
--   so delivery tracking costs no per-notification write.
-- * idempotency_keys: Idempotency-Key of POST /api/notifications, written in the same
--   statement as the notification it answers for.
-- * relay_marks: per node, the gid up to which its commits were handed to the bus.

ALTER TABLE users ADD COLUMN sent_seq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE notifications ADD COLUMN expires_at BIGINT;
ALTER TABLE notifications ADD COLUMN read_at BIGINT;
ALTER TABLE notifications ADD COLUMN dropped_at BIGINT;
-- `expired` (ttl passed) or `not_retained` (beyond the backlog bounds), when dropped_at is set.
ALTER TABLE notifications ADD COLUMN dropped_reason TEXT;
ALTER TABLE notifications ADD COLUMN node_id TEXT /*postgresql: COLLATE "C"*/;
-- PostgreSQL numbers rows itself; SQLite's single writer takes them from `counters`.
ALTER TABLE notifications ADD COLUMN gid BIGINT /*postgresql: GENERATED ALWAYS AS IDENTITY*/;

-- The relay reads a node's own commits after its mark, in commit order.
CREATE INDEX notifications_by_node_gid ON notifications (node_id, gid);

CREATE TABLE cursor_history (
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    cursor TEXT NOT NULL,   -- 'sent' or 'acked'
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (user_id, cursor, seq)
);

CREATE TABLE idempotency_keys (
    scope TEXT /*postgresql: COLLATE "C"*/ NOT NULL,  -- the API key id that sent it
    key TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    request_hash TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE relay_marks (
    node_id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    published_gid BIGINT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('notification_gid', 0);
