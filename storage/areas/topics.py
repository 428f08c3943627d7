"""Topics and their subscribers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from storage.records import NewTopic, TopicRecord, TopicSubscription

SubscribeOutcome = Literal["subscribed", "already_subscribed", "unknown_user"]


class Topics(Protocol):
    """Named audiences that users subscribe to (a project's watchers, a stock's
    followers). Subscriptions go with their topic and with their user (erasure)."""

    async def create_topic(self, topic: NewTopic) -> TopicRecord:
        """Insert a topic. Raises `ConflictError(field="slug")` if the slug is taken."""
        ...

    async def get_topic(self, slug: str) -> TopicRecord | None:
        """The topic with this slug, or None."""
        ...

    async def list_topics(self, *, after_slug: str | None, limit: int) -> list[TopicRecord]:
        """Topics ordered by slug ascending, after `after_slug` (exclusive), at most `limit`."""
        ...

    async def delete_topic(self, slug: str) -> bool:
        """Remove the topic and all its subscriptions in one transaction; return whether
        it existed."""
        ...

    async def subscribe(
        self, slug: str, user_ids: Sequence[str], *, at: int
    ) -> dict[str, SubscribeOutcome]:
        """Subscribe the users to the topic in one transaction; each id's outcome (ids
        repeated are answered once). An unknown user is left out (`unknown_user`); an
        unknown or meanwhile deleted topic leaves every id out as `unknown_user`, so
        check the topic first."""
        ...

    async def unsubscribe(self, slug: str, user_id: str) -> bool:
        """Remove the subscription; return whether it existed."""
        ...

    async def list_subscribers(
        self, slug: str, *, after_user_id: str | None, limit: int
    ) -> list[TopicSubscription]:
        """The topic's subscriptions ordered by user id ascending, after `after_user_id`
        (exclusive), at most `limit`: a topic send walks them in such pages, each read
        on its own (a subscription made meanwhile behind the page being read is seen)."""
        ...

    async def topics_of_user(
        self, user_id: str, *, after_slug: str | None, limit: int
    ) -> list[TopicSubscription]:
        """The user's subscriptions ordered by topic slug, after `after_slug`
        (exclusive), at most `limit` (empty for an unknown user)."""
        ...
