"""The request journal: what the proxy answered, for the inspector page, `/allm/requests` and tests.

engine = Engine()                       # keeps a MemoryJournal; Engine(journal=False) keeps none
...                                     # requests through the server
engine.journal.list(session="s1")       # entries, oldest first
"""

from __future__ import annotations

from .record import Blob, Record
from .recorder import JournalCall, begin, upstream_transport
from .store import Feed, Journal, MemoryJournal

__all__ = ["Blob", "Feed", "Journal", "JournalCall", "MemoryJournal", "Record", "begin", "upstream_transport"]
