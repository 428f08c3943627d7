-- 0007: channel deliveries (issue #12): the durable queue of a notification's steps
-- beyond the socket (email, web push, FCM, APNs, SMS, webhooks) and their history.
--
-- * notifications.channel_content: per-channel content given with the notification
--   (JSON), sealed like title/body/data (storage/crypto.py SEALED_COLUMNS).
-- * channel_deliveries: one row per step of the plan and address, inserted in the
--   notification's transaction. `seq` is the notification's (a copy: reads and acks
--   cancel by (user_id, seq) without touching notifications). `event` is a webhook
--   row's event, sealed. No foreign key on user_id: the rows go with their
--   notification (ON DELETE CASCADE), which goes with its user, so erasure and
--   retention remove them; a second cascade from users would need a full index on
--   user_id, which nothing else reads. No foreign key on device_id either: a removed
--   device leaves its deliveries' history in place.
-- * channel_delivery_history: one row per attempt or status change (cancelled, a
--   provider's receipt); `id` orders rows of the same instant.
--
-- Booleans are BOOLEAN on both (0/1 in SQLite). Partial indexes hold only the rows their
-- queries look for, so a queue whose history holds millions of sent rows stays small.

ALTER TABLE notifications ADD COLUMN channel_content TEXT;

CREATE TABLE channel_deliveries (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    notification_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES notifications (id) ON DELETE CASCADE,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    seq BIGINT NOT NULL,
    channel TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    device_id TEXT /*postgresql: COLLATE "C"*/,
    endpoint_id TEXT /*postgresql: COLLATE "C"*/,
    -- scheduled, queued, sending, sent, delivered, failed, skipped, cancelled
    status TEXT NOT NULL,
    reason TEXT,
    due_at BIGINT NOT NULL,
    first_due_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    provider TEXT /*postgresql: COLLATE "C"*/,
    fallback BOOLEAN NOT NULL DEFAULT FALSE,
    provider_message_id TEXT /*postgresql: COLLATE "C"*/,
    last_error TEXT,
    cancel_on_read BOOLEAN NOT NULL,
    event TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Leasing: a channel's unsent rows in due order, and its rows whose lease may run out.
CREATE INDEX channel_deliveries_due ON channel_deliveries (channel, due_at)
    WHERE status IN ('scheduled', 'queued');
CREATE INDEX channel_deliveries_leased ON channel_deliveries (channel, lease_until)
    WHERE status = 'sending';
-- A read or an ack cancels the user's unsent steps of those seqs: a user with none
-- costs one descent into an index that holds only cancellable rows.
CREATE INDEX channel_deliveries_cancellable ON channel_deliveries (user_id, seq)
    WHERE status IN ('scheduled', 'queued') AND cancel_on_read;
-- A notification's deliveries (tracking, the user's export, ON DELETE CASCADE).
CREATE INDEX channel_deliveries_by_notification ON channel_deliveries (notification_id);
-- A provider's receipt names its own message id.
CREATE INDEX channel_deliveries_by_provider_message ON channel_deliveries
    (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE channel_delivery_history (
    id /*sqlite: INTEGER PRIMARY KEY*/
       /*postgresql: BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY*/,
    delivery_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES channel_deliveries (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    status TEXT NOT NULL,
    provider TEXT,
    provider_message_id TEXT,
    provider_code TEXT,
    error TEXT,
    detail TEXT,
    duration_ms BIGINT,
    fallback BOOLEAN NOT NULL DEFAULT FALSE
);

-- A delivery's history in order, and ON DELETE CASCADE.
CREATE INDEX channel_delivery_history_by_delivery ON channel_delivery_history (delivery_id, id);
