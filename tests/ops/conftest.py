"""The retention job runs against both storage backends, like the storage contract."""

from tests.storage.conftest import storage, storage_url

__all__ = ["storage", "storage_url"]
