"""Which journal store an engine keeps: the one that goes with its state store."""

from __future__ import annotations

from ..config import JournalSettings
from ..state import StateStore
from .store import Journal, MemoryJournal


def open_journal(settings: JournalSettings, state: StateStore) -> Journal:
    """The journal for `state`: in Redis when the state is shared (a state URL), else in this process."""
    if state.shared:
        # Imported only then: redis-py costs start-up time an engine in memory does not need to pay.
        from ..state.redis_store import RedisState
        from .redis_journal import RedisJournal

        if isinstance(state, RedisState):
            return RedisJournal(state, settings)
    return MemoryJournal(settings)
