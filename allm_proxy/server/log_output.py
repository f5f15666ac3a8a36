"""Where the proxy's log lines go: stderr, a loop turn's lines in one write.

    handler = TurnStreamHandler(sys.stderr)
    handler.setFormatter(SecondCachedFormatter(LOG_FORMAT))

`logging.StreamHandler` writes and flushes every record on its own: on a busy proxy, one write
system call per access-log line, each between two answers, when the code and data it needs have
gone cold. `TurnStreamHandler` formats each record when it comes, as `StreamHandler` does, and
keeps the text until the end of the event loop's turn, when that turn's lines leave in one write
(the access log hands its lines over once a turn, `access_log.AccessLog`). A record of WARNING or
above, one logged from a thread with no running loop, and any line once `MAX_PENDING_LINES` wait,
go at once, with every line before them, in order. `flush` (which `logging.shutdown` calls at exit)
writes whatever waits.

`SecondCachedFormatter` is `logging.Formatter` with `formatTime` done once per second of the
clock: `time.strftime` of the same second for every line of it took a line's formatting from 2.1
to 3.4 µs. Both measured in docs/benchmarks.md ("Issue 15, part 11").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TextIO

# Lines kept at most before they are written regardless (a loop turn that logs without end).
MAX_PENDING_LINES = 256


class TurnStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """`logging.StreamHandler`, writing the lines of one event-loop turn together."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock (`Handler.handle`), as `StreamHandler.emit` is.
        try:
            self._pending.append(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._pending) >= MAX_PENDING_LINES:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # a thread, or no loop: nothing would end the turn
            return
        if self._scheduled_on is loop:
            return
        if self._scheduled_on is not None:
            self.flush()  # lines another loop was to write, one that may have stopped: they go now
            return
        self._scheduled_on = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every waiting line, in one write, and flush the stream."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._scheduled_on = None
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:  # as in StreamHandler.emit: a failing stream is logging's to report
                    self.handleError(logging.makeLogRecord({"msg": "%s", "args": (text.rstrip("\n"),)}))
            super().flush()


class SecondCachedFormatter(logging.Formatter):
    """`logging.Formatter`, with the default time format of each second formatted once."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._second: int | None = None
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            # Converted (local time, or whatever `converter` is) as `Formatter.formatTime` does.
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._second_text, record.msecs)
