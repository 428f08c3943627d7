"""Notification templates (issue #13): operator-authored, versioned content that
pushd/routing/templates.py renders per recipient. Not personal data: stored in clear."""

from __future__ import annotations

from typing import Protocol

from storage.records import NewTemplateVersion, TemplateRecord


class Templates(Protocol):
    """Templates keyed by id, each a list of versions 1, 2, 3, ... A version number is
    never given twice for one id, not even after the template was deleted and saved
    again: a (id, version) pair names one content forever, so a cache keyed by it can
    never be stale (storage/migrations/0013)."""

    async def save_template(self, template: NewTemplateVersion) -> TemplateRecord:
        """Store `template` as the id's next version (1 for an id never saved) in ONE
        transaction and return it. Concurrent saves of one id get distinct versions.
        Older versions stay readable."""
        ...

    async def get_template(
        self, template_id: str, version: int | None = None
    ) -> TemplateRecord | None:
        """The latest version (`version` None) or that version of the template, or None
        when the template (or that version) does not exist or was deleted."""
        ...

    async def list_templates(self, *, after_id: str | None, limit: int) -> list[TemplateRecord]:
        """The latest version of each template, ordered by id ascending (bytewise),
        after `after_id` (exclusive), at most `limit`."""
        ...

    async def delete_template(self, template_id: str) -> bool:
        """Delete every version of the template; return whether it existed. Its id keeps
        its last version number: a later save continues from it."""
        ...
