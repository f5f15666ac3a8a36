"""Cross-request state behind one interface: process memory, or Redis shared by workers and replicas.

    from allm_proxy.state import StateSettings, open_state
    store = open_state(StateSettings(url="redis://127.0.0.1:6379/0"))

See `base.StateStore` for the interface; `files`, `cursors` hold what the
proxy keeps in it.
"""

from .base import DEFAULT_PREFIX, StateStore
from .cursors import ReplayCursors, ScriptCursors
from .memory import MemoryState
from .settings import StateSettings, check_recording, open_state, parse_state_url

__all__ = [
    "DEFAULT_PREFIX",
    "MemoryState",
    "ReplayCursors",
    "ScriptCursors",
    "StateSettings",
    "StateStore",
    "check_recording",
    "open_state",
    "parse_state_url",
]
