-- 0011: user preferences (issue #13), the one store of what a user wants to receive.
--
-- * user_preferences: the user-wide switches: the global mute, and the user's own
--   quiet hours (JSON text whose meaning pushd/routing/quiet_hours.py owns; NULL: the
--   server's default). No row: nothing set.
-- * channel_preferences: per category x channel on/off. `category` is '' for
--   notifications without one; `channel` is a preference channel (email, push, sms).
--   No row: the default (on).
-- * channel_optouts (0008), written by the one-click unsubscribe link, becomes
--   channel_preferences rows turned off, and is dropped: one source of truth.
-- Both new tables go with their user (ON DELETE CASCADE; erase deletes them too).

CREATE TABLE user_preferences (
    user_id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY
        REFERENCES users (id) ON DELETE CASCADE,
    muted BOOLEAN NOT NULL DEFAULT FALSE,
    quiet_hours TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE channel_preferences (
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    category TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    channel TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    enabled BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, category, channel)
);

INSERT INTO channel_preferences (user_id, category, channel, enabled, updated_at)
    SELECT user_id, category, channel, FALSE, created_at FROM channel_optouts;

DROP TABLE channel_optouts;
