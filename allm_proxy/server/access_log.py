"""The access log: one line per finished request, on the `allm_proxy.access` logger at INFO.

    access = AccessLog()
    access.line(scope, call)   # the answer went: queue its line, stamped now
    access.flush()             # hand what is queued to `logging` (also: next loop turn, shutdown, exit)

Each line is stamped with the time its request ended and reaches `logging` on the event loop's
next turn, together with the lines of the other answers that ended in that turn; when a turn
brought `BUSY_LINES` or more, the loop is busy, and the next lines wait up to `BUSY_DELAY` to go
together, until a batch comes out small again. Why not one `logging` call per answer, right after
it: between two answers a busy proxy copies an image into a socket, and the logging code runs cold
each time; served at C=16, one line cost about 50 µs of a kept answer's 220, against 7 µs in a tight
loop. Why not always the timer: at one request at a time its batch delayed the next answer (replay
C=1 -12%), where a line on the next turn is written while the client reads its answer. Measured in
docs/benchmarks.md ("Issue 15, part 8"). Everything else is `logging`'s own: the level is checked
when the line is queued, and handlers, filters, formatters and record factories apply as they
would to `logger.info`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from typing import Any

from starlette.types import Scope

from ..call import Call
from .failures import printable

logger = logging.getLogger("allm_proxy.access")

FORMAT = "%s %s model=%s provider=%s status=%d ms=%.1f bytes=%d%s"
# A flush that found this many lines or more means a busy loop: the next one waits `BUSY_DELAY`.
BUSY_LINES = 4
BUSY_DELAY = 0.01

_unflushed: weakref.WeakSet[AccessLog] = weakref.WeakSet()


class AccessLog:
    """The access-log lines of one app, queued until `flush`. Used on its event loop's thread;
    `flush` may also run from another once that loop is gone (at exit)."""

    def __init__(self) -> None:
        self._queued: list[tuple[float, tuple[Any, ...]]] = []
        self._scheduled: asyncio.Handle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # the last flush found BUSY_LINES or more
        _unflushed.add(self)

    def line(self, scope: Scope, call: Call) -> None:
        """Queue the line of the request `call` answered; it reaches `logging` on the loop's next
        turn, or within `BUSY_DELAY` while the loop is busy (at once when no event loop runs here)."""
        if not logger.isEnabledFor(logging.INFO):
            return
        route = call.route
        args = (
            printable(scope["method"]),
            printable(scope["path"]),
            printable(route.requested_model or "-") if route else "-",
            route.provider if route else "-",
            call.status or 0,
            call.ms,
            call.bytes_out,
            f" fault={call.fault.kind}" if call.fault is not None else "",
        )
        self._queued.append((time.time(), args))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_loop is not None and self._flush_loop is not loop:
            self.flush()  # the flush is another loop's, one that may have stopped: these lines go now
            return
        if self._scheduled is None:
            self._scheduled = loop.call_later(BUSY_DELAY, self.flush) if self._busy else loop.call_soon(self.flush)
            self._flush_loop = loop

    def flush(self) -> None:
        """Hand every queued line to `logging`, oldest first."""
        if self._scheduled is not None:
            self._scheduled.cancel()  # a no-op when it is the scheduled flush that runs this
            self._scheduled = self._flush_loop = None
        queued, self._queued = self._queued, []
        self._busy = len(queued) >= BUSY_LINES
        for ended, args in queued:
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, FORMAT, args, None, "line")
            # Stamped when the request ended, not when its batch went (`LogRecord` takes `time.time()`).
            record.relativeCreated -= (record.created - ended) * 1000
            record.created = ended
            record.msecs = int((ended - int(ended)) * 1000) + 0.0
            logger.handle(record)


@atexit.register
def _flush_all() -> None:
    """Lines still queued when the process ends (a loop closed before its next turn)."""
    for access in list(_unflushed):
        access.flush()
