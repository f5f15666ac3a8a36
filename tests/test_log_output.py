"""The proxy's log handler and formatter (`server/log_output.py`): a loop turn's lines in one write,
the time formatted once a second, and the same text `logging`'s own would write."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from allm_proxy.server.log_output import MAX_PENDING_LINES, SecondCachedFormatter, TurnStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream, TurnStreamHandler]]:
    stream = CountingStream()
    handler = TurnStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test_log_output.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)
    handler.close()


def test_the_lines_of_one_loop_turn_leave_in_one_write_in_order_after_the_turn(logged) -> None:
    logger, stream, _ = logged

    async def main() -> list[str]:
        for n in range(5):
            logger.info("line %d", n)
        waiting = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends
        for n in range(5, 7):
            logger.info("line %d", n)
        await asyncio.sleep(0)
        return waiting

    assert asyncio.run(main()) == []
    assert stream.writes == [
        "".join(f"INFO line {n}\n" for n in range(5)),
        "INFO line 5\nINFO line 6\n",
    ]


def test_a_warning_goes_at_once_with_every_line_before_it(logged) -> None:
    logger, stream, _ = logged

    async def main() -> list[str]:
        logger.info("before")
        logger.warning("careful")
        return list(stream.writes)

    assert asyncio.run(main()) == ["INFO before\nWARNING careful\n"]


def test_a_line_with_no_running_loop_or_from_a_thread_goes_at_once(logged) -> None:
    logger, stream, _ = logged
    logger.info("no loop")
    assert stream.writes == ["INFO no loop\n"]

    async def main() -> list[str]:
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        return list(stream.writes)

    assert asyncio.run(main()) == ["INFO no loop\n", "INFO from a thread\n"]


def test_a_turn_that_logs_without_end_is_written_every_max_pending_lines(logged) -> None:
    logger, stream, _ = logged

    async def main() -> int:
        for n in range(MAX_PENDING_LINES * 2 + 1):
            logger.info("%d", n)
        return len(stream.writes)

    assert asyncio.run(main()) == 2
    assert [len(w.splitlines()) for w in stream.writes] == [MAX_PENDING_LINES, MAX_PENDING_LINES, 1]


def test_lines_left_by_a_loop_that_stopped_go_with_the_next_line_and_at_flush(logged) -> None:
    logger, stream, handler = logged
    stopped = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logger.info("left")  # its write is scheduled on a loop that stops before running it
        stopped.stop()

    stopped.call_soon(log_and_stop)
    stopped.run_forever()
    stopped.close()
    assert stream.writes == []

    async def next_loop() -> list[str]:
        logger.info("next")
        return list(stream.writes)

    assert asyncio.run(next_loop()) == ["INFO left\nINFO next\n"]

    stopped = asyncio.new_event_loop()
    stopped.call_soon(log_and_stop)
    stopped.run_forever()
    stopped.close()
    handler.flush()  # as logging.shutdown does at exit
    assert stream.writes[1:] == ["INFO left\n"]


def test_flush_writes_what_waits(logged) -> None:
    logger, stream, handler = logged

    async def main() -> list[str]:
        logger.info("waiting")
        handler.flush()
        return list(stream.writes)

    assert asyncio.run(main()) == ["INFO waiting\n"]


def test_a_failing_stream_is_reported_by_logging_and_the_handler_goes_on(logged, capsys) -> None:
    logger, stream, handler = logged

    def broken(text: str) -> int:
        raise OSError("disk full")

    handler.stream = type("Broken", (), {"write": staticmethod(broken), "flush": lambda self: None})()
    logger.info("lost")
    assert "disk full" in capsys.readouterr().err
    handler.stream = stream
    logger.info("after")
    assert stream.writes == ["INFO after\n"]


@pytest.mark.parametrize("fmt", ["%(asctime)s %(message)s", "[%(asctime)s] %(levelname)s %(name)s: %(message)s"])
@pytest.mark.parametrize("converter", [time.localtime, time.gmtime])
def test_the_cached_time_is_the_text_logging_formatter_writes(fmt: str, converter) -> None:
    ours, theirs = SecondCachedFormatter(fmt), logging.Formatter(fmt)
    ours.converter = theirs.converter = converter
    start = 1_764_892_800.0
    for offset in (0.0, 0.001, 0.5, 0.999, 1.0, 1.25, 61.7, 3600.0, 3600.0005, 86_399.999):
        record = logging.makeLogRecord({"msg": "m", "levelname": "INFO", "name": "n"})
        record.created = start + offset
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        assert ours.format(record) == theirs.format(record)


def test_a_date_format_of_its_own_is_logging_formatters() -> None:
    record = logging.makeLogRecord({"msg": "m"})
    assert SecondCachedFormatter("%(asctime)s").formatTime(record, "%H:%M") == logging.Formatter().formatTime(
        record, "%H:%M"
    )


def test_the_proxys_logging_writes_every_line_before_the_process_exits() -> None:
    code = (
        "import asyncio, logging, sys\n"
        "from allm_proxy.server.workers import setup_logging\n"
        "setup_logging('info')\n"
        "async def main():\n"
        "    for n in range(100):\n"
        "        logging.getLogger('allm_proxy.access').info('line %d', n)\n"
        "asyncio.run(main())\n"  # the loop ends with the last lines' flush scheduled on it
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stderr.splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(n) for n in range(100)]
    assert all(" INFO allm_proxy.access: line " in line for line in lines)
