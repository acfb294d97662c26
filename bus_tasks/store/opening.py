"""Opening the store the settings name: kept apart from ``base`` so the backends can import it."""

from __future__ import annotations

from bus_tasks.config import Settings
from bus_tasks.store.base import SQLITE_FILE, NullStore, Store


def open_store(settings: Settings) -> Store:
    """The store ``settings`` name: a SQLite file in ``data_dir``, a shared Redis, or none."""
    # Importing the backends late keeps redis-py out of processes that never use it.
    if settings.store == "sqlite":
        from bus_tasks.store.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(settings.data_dir / SQLITE_FILE)
    if settings.store == "redis":
        from bus_tasks.store.redis import RedisStore  # noqa: PLC0415

        assert settings.store_redis_url is not None  # Settings refuses store="redis" without it
        return RedisStore(
            settings.store_redis_url.get_secret_value(),
            settings.store_key_prefix,
            connect_timeout_s=settings.connect_timeout_s,
        )
    return NullStore()
