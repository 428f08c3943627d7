-- 0015: broadcast, segments and send progress (issue #14, points 3, 5, 6).
--
-- * sends: one row per broadcast or segment send, written BEFORE the 202 (so a 202
--   means the send is on disk and will be carried out even across a restart). `content`
--   is the request's body (title, body, data, channel plan, ...) as JSON, sealed like
--   the notifications' content (storage/crypto.py SEALED_COLUMNS). `audience` is the
--   audience as JSON: {"kind": "broadcast"} or {"kind": "segment", "segment_id": ...,
--   "filter": {...}} (the filter copied at send time: deleting or changing a saved
--   segment does not change a send in progress). `cursor_user_id` is the id of the last user
--   the fan-out has handled (users are walked in id order); the counters are what the
--   fan-out has done so far. `lease_node`/`lease_until`: the node carrying the send out
--   now; another node (or this one after a restart) takes it over once the lease has
--   run out.
-- * notifications.send_id: the send a fanned-out notification belongs to (NULL for a
--   single send: the hot unicast insert writes one NULL more). The unique index on
--   (send_id, user_id) is what makes a chunk committed twice (a crash between the
--   commit and the progress update) impossible: the fan-out reads which users of the
--   chunk already have their notification and leaves them out, and the index refuses a
--   second one should two nodes ever race. It also serves the send's progress (the
--   per-channel delivery counts join channel_deliveries through it). Partial, so single
--   sends do not grow it.
-- * segments: saved audience filters (docs/audiences.md), in plaintext: a filter is the
--   application's rule (`tag pro and locale de`), written by admins.
-- * api_keys.may_broadcast: a publisher key allowed to send to every user or a segment
--   (admin keys always may).

CREATE TABLE sends (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    audience TEXT NOT NULL,
    content TEXT NOT NULL,
    category TEXT,
    api_key_id TEXT,
    status TEXT NOT NULL,
    cursor_user_id TEXT /*postgresql: COLLATE "C"*/,
    resolved BIGINT NOT NULL DEFAULT 0,
    committed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    lease_node TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
-- What a starting node looks for: the sends not finished yet.
CREATE INDEX sends_unfinished ON sends (created_at, id) WHERE finished_at IS NULL;

ALTER TABLE notifications ADD COLUMN send_id TEXT /*postgresql: COLLATE "C"*/;
CREATE UNIQUE INDEX notifications_by_send ON notifications (send_id, user_id)
    WHERE send_id IS NOT NULL;

CREATE TABLE segments (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

ALTER TABLE api_keys ADD COLUMN may_broadcast BOOLEAN NOT NULL DEFAULT FALSE;
