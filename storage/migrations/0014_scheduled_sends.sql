-- 0014: scheduled sends (issue #13, point 5): notifications accepted now and committed
-- to the user's mailbox later, by the release loop (pushd/ingest/release.py).
--
-- A scheduled notification takes no seq at accept time: seq order is delivery order on
-- the socket, so it is numbered when it is released. Until then it lives here whole:
-- `payload` is the notification as it will be inserted (title, body, data, channel
-- content, planned deliveries), one JSON text sealed like notification content
-- (storage/crypto.py SEALED_COLUMNS). Release deletes the row in the transaction that
-- inserts the notification under the same id, so a row is released at most once, on any
-- node. A cancelled row stays (status `cancelled`) until the user is erased.
--
-- An Idempotency-Key of a scheduled send is stored at accept time with seq 0 (no seq
-- yet); release sets the seq.

CREATE TABLE scheduled_notifications (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    -- scheduled, cancelled
    status TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    category TEXT,
    priority TEXT NOT NULL,
    payload TEXT NOT NULL,
    has_claim BOOLEAN NOT NULL DEFAULT FALSE,
    accepted_at BIGINT NOT NULL,
    cancelled_at BIGINT
);

-- Release: the due rows in due order; holds only the rows still to release.
CREATE INDEX scheduled_notifications_due ON scheduled_notifications (due_at)
    WHERE status = 'scheduled';
-- A user's scheduled sends (history, export, erase, ON DELETE CASCADE).
CREATE INDEX scheduled_notifications_by_user ON scheduled_notifications (user_id, id);
