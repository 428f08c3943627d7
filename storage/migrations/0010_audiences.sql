-- 0010: audiences (issue #14): user tags and attributes, topics and subscriptions.
--
-- * users.tags: the user's tags as a JSON array of distinct strings, sorted, in
--   plaintext. Audiences select users by tag (segments, issue #14 point 3), which the
--   database must be able to read; a tag is a short label the application chooses
--   (`beta`, `plan:pro`), documented as not the place for personal data.
-- * users.attributes: a flat JSON object, sealed like the other profile fields
--   (storage/crypto.py): applications put plan names, companies and countries there,
--   which can be personal data. Selecting users by attribute therefore cannot be done
--   in SQL; README "User tags and attributes" says so.
--
-- Existing users get no tags and no attributes.

ALTER TABLE users ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN attributes TEXT;

-- Topics (issue #14, "topics"): a slug (the primary key, named in URLs and sends) and a
-- display name; `self_subscribe` lets users subscribe themselves with their user token.
-- Subscriptions are keyed (topic, user_id): a topic send and the subscriber list walk
-- that key in user_id order, page by page; the second index serves a user's topics and
-- erasure. Deleting a topic or erasing a user removes their subscriptions (CASCADE).
-- Nothing here is sealed: a topic's slug and name are the application's labels, and who
-- subscribes is a pair of ids.

CREATE TABLE topics (
    slug TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    name TEXT NOT NULL,
    self_subscribe BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE topic_subscriptions (
    topic TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES topics (slug) ON DELETE CASCADE,
    user_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (topic, user_id)
);
CREATE INDEX topic_subscriptions_by_user ON topic_subscriptions (user_id, topic);
