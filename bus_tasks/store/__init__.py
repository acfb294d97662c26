"""Where the view survives a restart: the Store protocol, its write buffer, SQLite and Redis."""

from bus_tasks.store.base import (
    LOCK_FILE,
    SQLITE_FILE,
    BufferedStore,
    DataDirLock,
    NullStore,
    Store,
    WriteBuffer,
)
from bus_tasks.store.opening import open_store

__all__ = [
    "LOCK_FILE",
    "SQLITE_FILE",
    "BufferedStore",
    "DataDirLock",
    "NullStore",
    "Store",
    "WriteBuffer",
    "open_store",
]
