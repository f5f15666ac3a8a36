"""A client that leaves before its answer stops the provider call: heard from the connection when
the proxy serves (`http_guard.ClientLeft`), from the next ASGI message under any other server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import httpx
import pytest
from starlette.requests import Request

from allm_proxy import AdapterInfo, Call, Engine, ImageRequest, ImageResponse
from allm_proxy.adapters import AdapterSetup
from allm_proxy.server import endpoints
from allm_proxy.server.endpoints import _unless_client_leaves
from allm_proxy.server.http_guard import CLIENT_LEFT, ClientLeft
from tests.support.adapters import register_for_test
from tests.support.asgi_server import running_proxy


class FakeRequest:
    """What `_unless_client_leaves` uses of a starlette Request: its scope and `receive`."""

    def __init__(self, *, notice: ClientLeft | None = None) -> None:
        self.scope: dict[str, Any] = {"state": {CLIENT_LEFT: notice} if notice is not None else {}}
        self.leaves = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leaves.wait()
        return {"type": "http.disconnect"}


async def provider_call(started: asyncio.Event, cancelled: list[bool]) -> str:
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.append(True)
        raise
    return "answered"


def leave(request: FakeRequest, notice: ClientLeft | None) -> None:
    if notice is not None:
        notice.tell()  # as the protocol's connection_lost does
    else:
        request.leaves.set()


@pytest.mark.parametrize("heard_from", ["connection", "asgi"])
async def test_the_client_leaving_cancels_the_work_and_leaves_the_task_uncancelled(heard_from: str) -> None:
    resumed: list[bool] = []
    notice = ClientLeft(lambda: resumed.append(True)) if heard_from == "connection" else None
    request = FakeRequest(notice=notice)
    started, cancelled = asyncio.Event(), list[bool]()

    async def handler() -> tuple[str | None, int]:
        result = await _unless_client_leaves(cast(Request, request), provider_call(started, cancelled))
        await asyncio.sleep(0)  # the task goes on: the cancellation was taken back
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.ensure_future(handler())
    await started.wait()
    leave(request, notice)
    assert await asyncio.wait_for(task, 5) == (None, 0)
    assert cancelled == [True]
    if notice is not None:
        assert resumed == [True]  # reading resumed, so that the close is seen


@pytest.mark.parametrize("heard_from", ["connection", "asgi"])
async def test_work_that_ends_is_its_answer_and_a_later_leave_changes_nothing(heard_from: str) -> None:
    notice = ClientLeft(lambda: None) if heard_from == "connection" else None
    request = FakeRequest(notice=notice)

    async def quick() -> str:
        await asyncio.sleep(0)
        return "answered"

    assert await _unless_client_leaves(cast(Request, request), quick()) == "answered"
    leave(request, notice)  # the answer is under way: nobody listens any more
    await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_that_is_not_the_clients_goes_on_up() -> None:
    notice = ClientLeft(lambda: None)
    request = FakeRequest(notice=notice)
    started, cancelled = asyncio.Event(), list[bool]()
    task = asyncio.ensure_future(_unless_client_leaves(cast(Request, request), provider_call(started, cancelled)))
    await started.wait()
    task.cancel()  # a server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]
    notice.tell()  # the listener is gone with the request


async def test_work_that_takes_the_cancellation_as_its_end_is_still_a_client_that_left() -> None:
    notice = ClientLeft(lambda: None)
    request = FakeRequest(notice=notice)
    started = asyncio.Event()

    async def swallowing() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "partial"
        return "answered"

    async def handler() -> tuple[str | None, int]:
        result = await _unless_client_leaves(cast(Request, request), swallowing())
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.ensure_future(handler())
    await started.wait()
    notice.tell()
    assert await asyncio.wait_for(task, 5) == (None, 0)


async def test_work_that_turns_the_cancellation_into_an_error_is_still_a_client_that_left() -> None:
    notice = ClientLeft(lambda: None)
    request = FakeRequest(notice=notice)
    started = asyncio.Event()

    async def converting() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("the upstream call was interrupted") from None
        return "answered"

    async def handler() -> tuple[str | None, int]:
        result = await _unless_client_leaves(cast(Request, request), converting())
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.ensure_future(handler())
    await started.wait()
    notice.tell()
    assert await asyncio.wait_for(task, 5) == (None, 0)


async def test_an_error_of_work_whose_client_is_there_goes_on_up() -> None:
    request = FakeRequest(notice=ClientLeft(lambda: None))

    async def failing() -> str:
        raise RuntimeError("upstream said no")

    with pytest.raises(RuntimeError, match="upstream said no"):
        await _unless_client_leaves(cast(Request, request), failing())


def test_served_the_connection_tells_of_a_client_that_left_with_no_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the proxy's own connection layer the provider call is cancelled by the connection's close
    itself: no task awaits the disconnect message (the watcher is never started)."""
    cancelled = threading.Event()

    def no_watcher(*args: object) -> None:
        raise AssertionError("a watcher task was started although the connection tells of the close")

    monkeypatch.setattr(endpoints, "_watch_for_disconnect", no_watcher)

    class Hanging:
        name = "hanging-client-left"

        def __init__(self, setup: AdapterSetup) -> None:
            pass

        async def generate(self, request: ImageRequest, ctx: Call) -> ImageResponse:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("not cancelled")

        edit = variation = generate

        async def aclose(self) -> None:
            pass

    register_for_test(
        monkeypatch,
        AdapterInfo(name="hanging-client-left", factory=Hanging, needs_key=False, default_model="gpt-image-1.5"),
    )
    with running_proxy(Engine("hanging-client-left")) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/images/generations", json={"prompt": "x"}, timeout=0.5)
        assert cancelled.wait(5), "the provider call kept running after the client left"
        entries = httpx.get(f"{url}/allm/requests").json()["data"]
        assert [e["status"] for e in entries] == [499]
        # The connection goes on serving others.
        assert httpx.get(f"{url}/healthz").status_code == 200
