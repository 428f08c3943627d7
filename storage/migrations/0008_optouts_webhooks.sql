-- 0008: channel opt-outs and webhook endpoints (issue #12).
--
-- * channel_optouts: a user's "not this category on this channel" (an email's one-click
--   List-Unsubscribe link stores one). `category` is '' for notifications without one.
--   The primary key serves the plan's lookup by (user, category), and ON DELETE CASCADE
--   from users.
-- * webhook_endpoints: where applications want events (admin API). `event_types` is a
--   JSON array of the event types it receives.
-- * webhook_secrets: an endpoint's signing secrets, sealed. A table of their own, and
--   only ever inserted or deleted (a rotation inserts the new one and gives the older
--   ones an expiry), because rekeying reseals a row in place and must never race an
--   update of the same sealed value.
-- * channel_deliveries.announced_status: the status of the delivery that webhooks were
--   last told about (`delivery.updated`, and for a webhook row its endpoint's failure
--   count). The status column is the durable record of the change; a sweep turns every
--   row whose status is not yet announced into webhook rows, and marks it, in one
--   transaction (pushd/channels/webhook_events.py). Existing rows count as announced.

CREATE TABLE channel_optouts (
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    category TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    channel TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, category, channel)
);

CREATE TABLE webhook_endpoints (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    event_types TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    disabled_at BIGINT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE webhook_secrets (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    endpoint_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);

CREATE INDEX webhook_secrets_by_endpoint ON webhook_secrets (endpoint_id, created_at);

ALTER TABLE channel_deliveries ADD COLUMN announced_status TEXT;
UPDATE channel_deliveries SET announced_status = status
    WHERE status IN ('sent', 'delivered', 'failed');
-- The sweep's work: rows whose final status webhooks were not told yet. Empty when the
-- sweep keeps up, however many sent rows the table holds.
CREATE INDEX channel_deliveries_unannounced ON channel_deliveries (updated_at)
    WHERE status IN ('sent', 'delivered', 'failed')
      AND (announced_status IS NULL OR announced_status <> status);
