"""The call in progress, visible to the layers under the adapters.

The engine sets `current_call` around every adapter call. The cassette
transport reads it to pick the cassette and the replay session without any
adapter having to pass them along. A ContextVar is per task, so concurrent
calls never see each other's values.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .adapters.base import CallContext

current_call: ContextVar[CallContext | None] = ContextVar("allm_proxy_current_call", default=None)
