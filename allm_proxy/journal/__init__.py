"""The request journal: what the proxy answered, for the inspector page, `/allm/requests` and tests.

engine = Engine()                                   # keeps a journal; Engine(journal=False) keeps none
...                                                 # requests through the server
await engine.journal.list(session="s1")             # entries, oldest first
engine.run_sync(engine.journal.list(session="s1"))  # the same from sync code
"""

from __future__ import annotations

from .opening import open_journal
from .record import Blob, OnDisk, Record
from .recorder import JournalCall, begin, upstream_transport
from .store import Feed, Journal, MemoryJournal

__all__ = [
    "Blob",
    "Feed",
    "Journal",
    "JournalCall",
    "MemoryJournal",
    "OnDisk",
    "Record",
    "begin",
    "open_journal",
    "upstream_transport",
]
