"""The in-process state store: expiry, counters, a capped journal, a byte bound; and the [state] settings."""

from __future__ import annotations

import asyncio

import pytest

from allm_proxy.config import config_from_mapping
from allm_proxy.state import MemoryState, StateSettings, parse_state_url


async def test_values_expire_and_counters_count_from_one() -> None:
    store = MemoryState()
    await store.set("a", b"1", ttl=0.05)
    assert await store.get("a") == b"1"
    await asyncio.sleep(0.1)
    assert await store.get("a") is None
    assert [await store.incr("n") for _ in range(3)] == [1, 2, 3]
    await store.delete("n")
    assert await store.incr("n") == 1


async def test_stored_bytes_are_bounded_dropping_the_oldest_first() -> None:
    store = MemoryState(max_bytes=250)
    for i in range(5):
        await store.set(f"v{i}", bytes(100))
    assert [await store.get(f"v{i}") is not None for i in range(5)] == [False, False, False, True, True]


async def test_prefixes_keep_two_proxies_apart() -> None:
    store = MemoryState(prefix="team-a:")
    assert store.key("file:x") == "team-a:file:x"


@pytest.mark.parametrize(
    "url", ["localhost:6379", "http://127.0.0.1:6379/0", "redis://", "redis://h:1/x", "redis://h:99999/0"]
)
def test_a_state_url_that_does_not_parse_says_the_expected_form(url: str) -> None:
    with pytest.raises(ValueError, match="redis://HOST:PORT/DB"):
        StateSettings(url=url)


def test_state_settings_come_from_the_config_file() -> None:
    config = config_from_mapping({"state": {"url": "redis://127.0.0.1:6390/2", "prefix": "ci:"}})
    assert parse_state_url(config.state.url or "") == ("127.0.0.1", 6390, 2)
    assert config.state.prefix == "ci:"
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_mapping({"state": {"uri": "redis://h/0"}})
