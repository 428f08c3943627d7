"""Topics (`storage.areas.topics`): SQL, row mapping, and the methods, the same on both
backends."""

# S608 (SQL built from strings): every query here is assembled from the constants of this
# module and the backend's `_in_list` placeholder form; values travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from storage.areas.topics import SubscribeOutcome
from storage.records import NewTopic, TopicRecord, TopicSubscription
from storage.sql.common import Row, check_limit
from storage.sql.engine import SqlEngine

TOPIC_COLUMNS = "slug, name, self_subscribe, created_at"
INSERT_TOPIC = (
    f"INSERT INTO topics ({TOPIC_COLUMNS}) VALUES ($1, $2, $3, $4) RETURNING {TOPIC_COLUMNS}"
)
GET_TOPIC = f"SELECT {TOPIC_COLUMNS} FROM topics WHERE slug = $1"
LIST_TOPICS_FIRST = f"SELECT {TOPIC_COLUMNS} FROM topics ORDER BY slug LIMIT $1"
LIST_TOPICS_AFTER = f"SELECT {TOPIC_COLUMNS} FROM topics WHERE slug > $1 ORDER BY slug LIMIT $2"
DELETE_TOPIC = "DELETE FROM topics WHERE slug = $1 RETURNING slug"
DELETE_SUBSCRIPTION = (
    "DELETE FROM topic_subscriptions WHERE topic = $1 AND user_id = $2 RETURNING user_id"
)
SUBSCRIPTION_COLUMNS = "topic, user_id, created_at"
SUBSCRIBERS_FIRST = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM topic_subscriptions WHERE topic = $1 "
    "ORDER BY user_id LIMIT $2"
)
SUBSCRIBERS_AFTER = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM topic_subscriptions WHERE topic = $1 AND user_id > $2 "
    "ORDER BY user_id LIMIT $3"
)
TOPICS_OF_USER_FIRST = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM topic_subscriptions WHERE user_id = $1 "
    "ORDER BY topic LIMIT $2"
)
TOPICS_OF_USER_AFTER = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM topic_subscriptions WHERE user_id = $1 AND topic > $2 "
    "ORDER BY topic LIMIT $3"
)


def topic_from_row(row: Row) -> TopicRecord:
    """A row of TOPIC_COLUMNS."""
    return TopicRecord(slug=row[0], name=row[1], self_subscribe=bool(row[2]), created_at=row[3])


def subscription_from_row(row: Row) -> TopicSubscription:
    """A row of SUBSCRIPTION_COLUMNS."""
    return TopicSubscription(topic=row[0], user_id=row[1], created_at=row[2])


class TopicsSql(SqlEngine):
    """`Topics`."""

    async def create_topic(self, topic: NewTopic) -> TopicRecord:
        """See `Topics.create_topic`."""
        row = await self._write_one(
            INSERT_TOPIC, topic.slug, topic.name, topic.self_subscribe, topic.created_at
        )
        return topic_from_row(row)

    async def get_topic(self, slug: str) -> TopicRecord | None:
        """See `Topics.get_topic`."""
        row = await self._fetch_one(GET_TOPIC, slug)
        return None if row is None else topic_from_row(row)

    async def list_topics(self, *, after_slug: str | None, limit: int) -> list[TopicRecord]:
        """See `Topics.list_topics`."""
        check_limit(limit)
        if after_slug is None:
            rows = await self._fetch_all(LIST_TOPICS_FIRST, limit)
        else:
            rows = await self._fetch_all(LIST_TOPICS_AFTER, after_slug, limit)
        return [topic_from_row(row) for row in rows]

    async def delete_topic(self, slug: str) -> bool:
        """See `Topics.delete_topic`."""
        return await self._write_one(DELETE_TOPIC, slug) is not None

    async def subscribe(
        self, slug: str, user_ids: Sequence[str], *, at: int
    ) -> dict[str, SubscribeOutcome]:
        """See `Topics.subscribe`: one insert of the known users, then which of the ids
        are subscribed now, in the same transaction."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        in_ids = self._in_list(2)
        insert = (
            "INSERT INTO topic_subscriptions (topic, user_id, created_at) "
            f"SELECT CAST($1 AS TEXT), id, CAST($3 AS BIGINT) FROM users WHERE id {in_ids} "
            "AND EXISTS (SELECT 1 FROM topics WHERE slug = $1) "
            "ON CONFLICT (topic, user_id) DO NOTHING RETURNING user_id"
        )
        subscribed = (
            f"SELECT user_id FROM topic_subscriptions WHERE topic = $1 AND user_id {in_ids}"
        )
        listed = self._list_param(ids)
        created, present = await self._write_many(
            [(insert, (slug, listed, at)), (subscribed, (slug, listed))]
        )
        created_ids = {row[0] for row in created}
        present_ids = {row[0] for row in present}
        return {
            user_id: "subscribed"
            if user_id in created_ids
            else "already_subscribed"
            if user_id in present_ids
            else "unknown_user"
            for user_id in ids
        }

    async def unsubscribe(self, slug: str, user_id: str) -> bool:
        """See `Topics.unsubscribe`."""
        return await self._write_one(DELETE_SUBSCRIPTION, slug, user_id) is not None

    async def list_subscribers(
        self, slug: str, *, after_user_id: str | None, limit: int
    ) -> list[TopicSubscription]:
        """See `Topics.list_subscribers`."""
        check_limit(limit)
        if after_user_id is None:
            rows = await self._fetch_all(SUBSCRIBERS_FIRST, slug, limit)
        else:
            rows = await self._fetch_all(SUBSCRIBERS_AFTER, slug, after_user_id, limit)
        return [subscription_from_row(row) for row in rows]

    async def topics_of_user(
        self, user_id: str, *, after_slug: str | None, limit: int
    ) -> list[TopicSubscription]:
        """See `Topics.topics_of_user`."""
        check_limit(limit)
        if after_slug is None:
            rows = await self._fetch_all(TOPICS_OF_USER_FIRST, user_id, limit)
        else:
            rows = await self._fetch_all(TOPICS_OF_USER_AFTER, user_id, after_slug, limit)
        return [subscription_from_row(row) for row in rows]
