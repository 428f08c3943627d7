-- 0001: users, their devices, their notifications (the durable mailbox) and API keys.
--
-- One text for SQLite and PostgreSQL: TEXT ids, BIGINT Unix epoch milliseconds, JSON
-- stored as TEXT (encoded by msgspec, never queried by the database).
--
-- `/*postgresql: ...*/` is text that only PostgreSQL runs (see storage/migrations).
-- Every id column is byte-ordered there, as TEXT always is in SQLite: otherwise
-- `list_users` pages would follow the server's locale and differ between backends.
--
-- No secondary index is created: each query is served by a primary key or by the
-- index behind a UNIQUE constraint (devices by user: UNIQUE (user_id, kind, address);
-- a user's mailbox in either direction: UNIQUE (user_id, seq)). Those two also keep
-- ON DELETE CASCADE from scanning whole tables.

CREATE TABLE users (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    external_id TEXT UNIQUE,
    name TEXT,
    email TEXT,
    phone TEXT,
    locale TEXT,
    timezone TEXT,
    created_at BIGINT NOT NULL,
    -- Highest seq assigned to this user's notifications; bumped under the row lock.
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- Highest seq the user's clients acknowledged; only ever moves forward.
    ack_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, kind, address)
);

CREATE TABLE notifications (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    title TEXT,
    body TEXT,
    data TEXT,
    category TEXT,
    priority TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, seq)
);

CREATE TABLE api_keys (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
