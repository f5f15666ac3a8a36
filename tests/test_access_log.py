"""The access log hands its lines to `logging` in batches: on the next turn of the loop (within a
few milliseconds while it is busy), in order, each stamped with the time its request ended, through
the logger's own level, filters and handlers; and nothing queued is lost when a loop stops, an app
shuts down or the process exits."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator

import httpx
import pytest

from allm_proxy import Engine
from allm_proxy.call import Call
from allm_proxy.server import access_log
from allm_proxy.server.access_log import AccessLog
from tests.support.asgi_server import running_proxy


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler = Kept()
    logger = logging.getLogger("allm_proxy.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def scope(path: str = "/v1/images/generations") -> dict[str, object]:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


def finished(status: int = 200, size: int = 10) -> Call:
    call = Call()
    call.bytes_out = size
    call.finish(status)
    return call


async def test_a_turns_lines_reach_the_handlers_on_the_next_turn_in_order_stamped_when_their_request_ended(
    kept: Kept,
) -> None:
    access = AccessLog()
    ended = []
    for size in (1, 2, 3):  # three answers that end in one turn of the loop
        ended.append(time.time())
        access.line(scope(), finished(size=size))
        time.sleep(0.005)
    assert kept.records == []  # queued, not yet handed over
    await asyncio.sleep(0)
    assert [line.rsplit(" ", 1)[1] for line in kept.lines()] == ["bytes=1", "bytes=2", "bytes=3"]
    first = r"POST /v1/images/generations model=- provider=- status=200 ms=\d+\.\d bytes=1"
    assert re.fullmatch(first, kept.lines()[0])
    for record, when in zip(kept.records, ended, strict=True):
        assert abs(record.created - when) < 0.002  # its request's end, not its batch's (5-15 ms later)
        assert record.msecs == int((record.created - int(record.created)) * 1000)
    assert kept.records[2].created - kept.records[0].created >= 0.009
    # A formatter prints the time the request ended.
    stamp = logging.Formatter("%(asctime)s").format(kept.records[0])
    assert stamp.endswith(f",{int(kept.records[0].msecs):03d}")
    # The next turn's lines are a batch of their own.
    access.line(scope(), finished(size=4))
    await asyncio.sleep(0)
    assert kept.lines()[-1].endswith("bytes=4")


async def test_a_busy_loops_lines_wait_to_go_together_until_a_batch_comes_out_small(kept: Kept) -> None:
    access = AccessLog()
    for size in range(access_log.BUSY_LINES):  # one turn's worth of answers: a busy loop
        access.line(scope(), finished(size=size))
    await asyncio.sleep(0)
    assert len(kept.records) == access_log.BUSY_LINES
    access.line(scope(), finished(size=100))
    await asyncio.sleep(0)
    assert len(kept.records) == access_log.BUSY_LINES  # waits for more to come
    await asyncio.sleep(access_log.BUSY_DELAY * 3)
    assert kept.lines()[-1].endswith("bytes=100")  # the delay, at most, and that batch was small:
    access.line(scope(), finished(size=101))
    await asyncio.sleep(0)
    assert kept.lines()[-1].endswith("bytes=101")  # next turn again


async def test_the_level_is_checked_when_a_line_is_queued_and_filters_apply(kept: Kept) -> None:
    access = AccessLog()
    logger = logging.getLogger("allm_proxy.access")
    logger.setLevel(logging.WARNING)
    access.line(scope(), finished())
    logger.setLevel(logging.INFO)
    access.flush()
    assert kept.records == []  # off when the request ended: never queued

    def no_healthz(record: logging.LogRecord) -> bool:
        return "/healthz" not in record.getMessage()

    logger.addFilter(no_healthz)
    try:
        access.line(scope("/healthz"), finished())
        access.line(scope(), finished())
        access.flush()
    finally:
        logger.removeFilter(no_healthz)
    assert len(kept.lines()) == 1 and kept.lines()[0].startswith("POST /v1/images/generations ")


def test_a_line_with_no_event_loop_goes_at_once(kept: Kept) -> None:
    AccessLog().line(scope(), finished(status=404))
    assert len(kept.lines()) == 1 and "status=404" in kept.lines()[0]


def test_lines_left_on_a_stopped_loop_go_before_the_next_loops_lines(kept: Kept) -> None:
    access = AccessLog()

    def stop_then_answer() -> None:
        loop.stop()  # this turn is the loop's last: the flush scheduled for the next never runs
        access.line(scope(), finished(size=1))

    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(stop_then_answer)
        loop.run_forever()
    finally:
        loop.close()
    assert kept.records == []

    async def answer(size: int) -> None:
        access.line(scope(), finished(size=size))

    asyncio.run(answer(2))
    assert [line.rsplit(" ", 1)[1] for line in kept.lines()] == ["bytes=1", "bytes=2"]


def test_lines_still_queued_when_the_process_exits_are_written() -> None:
    code = (
        "import asyncio, logging, sys\n"
        "from allm_proxy.call import Call\n"
        "from allm_proxy.server.access_log import AccessLog\n"
        "logging.basicConfig(level='INFO', stream=sys.stderr, format='%(name)s: %(message)s')\n"
        "access = AccessLog()\n"
        "async def main():\n"
        "    call = Call(); call.finish(201)\n"
        "    access.line({'method': 'POST', 'path': '/v1/images/edits'}, call)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "allm_proxy.access: POST /v1/images/edits model=- provider=- status=201" in done.stderr


def test_an_app_that_stops_hands_over_its_queued_lines(kept: Kept, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTurns:
        """A loop whose next turn never comes: only the app's shutdown can hand the lines over."""

        def call_soon(self, callback: object) -> asyncio.Handle:
            return asyncio.Handle(lambda: None, (), unused)

    unused = asyncio.new_event_loop()
    never = NoTurns()
    monkeypatch.setattr(access_log, "asyncio", types.SimpleNamespace(get_running_loop=lambda: never))
    try:
        with running_proxy(Engine("fake")) as url:
            for _ in range(3):
                assert httpx.post(f"{url}/v1/images/generations", json={"prompt": "a kestrel"}).status_code == 200
            time.sleep(0.2)
            assert [line for line in kept.lines() if "generations" in line] == []
    finally:
        unused.close()
    lines = [line for line in kept.lines() if "generations" in line]
    assert len(lines) == 3 and all("status=200" in line for line in lines)
