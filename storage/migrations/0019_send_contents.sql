-- 0019: a fan-out's content stored once per send, not once per recipient (issue #14,
-- point 5; docs/audiences.md "How a fan-out is stored").
--
-- * send_contents: the content of a send (broadcast, segment, topic) as its recipients
--   get it, one row per distinct rendering within the send (one for a plain send, one
--   per locale, or per differing rendering, for a template send), numbered 1, 2, ...
--   within the send. `id` is `<send id>:<number>`: the row the sealed columns are bound
--   to (storage/crypto.py SEALED_COLUMNS; `pushd rekey` reseals them too). `digest` is
--   a keyed hash of the rendering (storage/sql/send_contents.py) by which a later chunk
--   of the send finds the row of a rendering already stored. `refs`: how many
--   notifications read it, raised by the insert that adds them, lowered by the
--   triggers below.
-- * notifications.content_no: set on a fanned-out notification, whose own title, body,
--   data and channel_content are then NULL: it reads those of (send_id, content_no). A
--   small integer, so that a recipient's row carries a few bytes, not a copy. An edit
--   or a retract of that one notification sets it NULL (copy-on-write into the row).
-- * The triggers: a notification that stops reading a content (deleted by erasure or
--   retention, or taken off it by an edit or a retract) lowers its `refs` in the same
--   transaction, and the content is deleted when the count reaches 0. The count lives
--   in the content row, so a fan-out adding readers (it locks the row,
--   storage/postgres/notifications.py) and a deletion taking the last one away are
--   serialised on that row: a content still read is never deleted, whatever path
--   removes notifications. A trigger, not the code of each path: every DELETE of a
--   notification, present and future, keeps the count right.

CREATE TABLE send_contents (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    send_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL,
    number INTEGER NOT NULL,
    digest TEXT NOT NULL,
    refs BIGINT NOT NULL,
    title TEXT,
    body TEXT,
    data TEXT,
    channel_content TEXT,
    created_at BIGINT NOT NULL
);
-- What a notification's read joins on, and what a chunk looks its renderings up by.
CREATE UNIQUE INDEX send_contents_by_number ON send_contents (send_id, number);
CREATE UNIQUE INDEX send_contents_by_digest ON send_contents (send_id, digest);

ALTER TABLE notifications ADD COLUMN content_no INTEGER;

/*sqlite:
CREATE TRIGGER notifications_release_content_on_delete AFTER DELETE ON notifications
WHEN old.content_no IS NOT NULL BEGIN
    UPDATE send_contents SET refs = refs - 1
    WHERE send_id = old.send_id AND number = old.content_no;
    DELETE FROM send_contents
    WHERE send_id = old.send_id AND number = old.content_no AND refs <= 0;
END;
CREATE TRIGGER notifications_release_content_on_update AFTER UPDATE OF content_no
ON notifications WHEN old.content_no IS NOT NULL AND new.content_no IS NULL BEGIN
    UPDATE send_contents SET refs = refs - 1
    WHERE send_id = old.send_id AND number = old.content_no;
    DELETE FROM send_contents
    WHERE send_id = old.send_id AND number = old.content_no AND refs <= 0;
END;
*/
/*postgresql:
CREATE FUNCTION notifications_release_content() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE send_contents SET refs = refs - 1
    WHERE send_id = OLD.send_id AND number = OLD.content_no;
    DELETE FROM send_contents
    WHERE send_id = OLD.send_id AND number = OLD.content_no AND refs <= 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER notifications_release_content_on_delete AFTER DELETE ON notifications
    FOR EACH ROW WHEN (OLD.content_no IS NOT NULL)
    EXECUTE FUNCTION notifications_release_content();
CREATE TRIGGER notifications_release_content_on_update AFTER UPDATE OF content_no
    ON notifications
    FOR EACH ROW WHEN (OLD.content_no IS NOT NULL AND NEW.content_no IS NULL)
    EXECUTE FUNCTION notifications_release_content();
*/
