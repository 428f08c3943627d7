-- 0016: edit and retract of sent notifications (issue #13, point 7).
--
-- * version: 1 at insert, raised by one at each edit and at the retract, so that a
--   client holding two copies keeps the higher one (docs/protocol.md, "Edits").
-- * updated_at: when it was last edited or retracted (epoch ms), null if never.
-- * retracted_at: when it was retracted; its title, body, data and channel_content are
--   then null. The row stays so that the user's seqs stay gap-free and cursors, acks
--   and replay keep working.
-- Existing rows get version 1 from the default; no index: these are read with the row.

ALTER TABLE notifications ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE notifications ADD COLUMN updated_at BIGINT;
ALTER TABLE notifications ADD COLUMN retracted_at BIGINT;
