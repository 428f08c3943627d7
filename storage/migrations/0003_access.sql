-- 0003: access control (issue #4): API key categories, per-user token revocation and
-- the audit trail.

-- JSON array of the notification categories a key is limited to; NULL: not limited.
ALTER TABLE api_keys ADD COLUMN categories TEXT;

-- Epoch ms: every user token issued at or before this instant is refused (0: none).
ALTER TABLE users ADD COLUMN tokens_revoked_before BIGINT NOT NULL DEFAULT 0;

-- Append-only: pushd never deletes or edits a row, except `pseudonymise_audit`, which
-- replaces an erased user's id. `id` is assigned by the database in insertion order and
-- is the pagination cursor.
CREATE TABLE audit_log (
    id /*sqlite: INTEGER PRIMARY KEY AUTOINCREMENT*/
       /*postgresql: BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY*/,
    at BIGINT NOT NULL,
    actor TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    action TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    target TEXT /*postgresql: COLLATE "C"*/,
    source TEXT,
    result TEXT NOT NULL,
    detail TEXT
);

-- Filters by who and by what, newest first; `target` also serves pseudonymisation and
-- a user's export.
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
