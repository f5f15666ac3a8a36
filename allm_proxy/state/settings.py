"""`[state]` settings: where shared state lives, and the rules that come with sharing it.

[state]
url = "redis://127.0.0.1:6379/0"   # or --state-url, or ALLM_PROXY_STATE_URL; none: process memory
prefix = "allm:"                   # namespace, so several proxies can share one Redis
cursor_ttl = 86400                 # seconds an idle replay/script cursor is kept
journal_max = 1000                 # journal entries kept
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from .base import DEFAULT_JOURNAL_MAX, DEFAULT_PREFIX, StateStore

URL_FORM = "redis://HOST:PORT/DB (e.g. redis://127.0.0.1:6379/0; rediss:// for TLS)"
RECORDING_MODES = ("once", "new_episodes", "all")


@dataclass(frozen=True)
class StateSettings:
    """Resolved `[state]` settings; a URL that does not parse is a `ValueError` naming the expected form."""

    url: str | None = None
    prefix: str = DEFAULT_PREFIX
    cursor_ttl: float = 86400.0
    journal_max: int = DEFAULT_JOURNAL_MAX

    def __post_init__(self) -> None:
        if self.url is not None:
            parse_state_url(self.url)
        if not self.prefix:
            raise ValueError("[state] prefix must not be empty (it keeps several proxies apart in one Redis)")
        if self.cursor_ttl <= 0 or self.journal_max <= 0:
            raise ValueError("[state] cursor_ttl and journal_max must be positive")


def parse_state_url(url: str) -> tuple[str, int, int]:
    """(host, port, db) of a state URL; `ValueError` saying the expected form otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"state URL {_safe(url)!r} does not parse; expected {URL_FORM}") from None
    db_text = parts.path.lstrip("/") or "0"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or not db_text.isdigit() or parts.query:
        raise ValueError(f"state URL {_safe(url)!r} does not parse; expected {URL_FORM}")
    return parts.hostname, port, int(db_text)


def is_loopback(url: str) -> bool:
    """True when the state URL's host is this machine."""
    return host_is_loopback(parse_state_url(url)[0])


def host_is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (the server's bind warning asks this too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_recording(settings: StateSettings, record_mode: str, cassettes_enabled: bool) -> None:
    """Refuse to record when the state is shared beyond this host.

    A cassette is locked with `flock` around each read-merge-write, which
    keeps every worker on one host from losing another's recordings; locks do
    not cross machines (nor do most network file systems honour them). A
    non-loopback state URL means replicas on other hosts, so recording is
    refused and replay (record mode `none`) is what such a fleet may do.
    """
    if settings.url is None or not cassettes_enabled or record_mode not in RECORDING_MODES:
        return
    if not is_loopback(settings.url):
        raise ValueError(
            f"record mode {record_mode!r} with a state URL on another host ({_safe(settings.url)}) is refused: "
            "recording is safe only for workers on one host (cassette files are locked with flock, which "
            "does not cross machines). Record with one host (a loopback --state-url, or none), then replay "
            "across hosts with --record-mode none."
        )


def open_state(settings: StateSettings) -> StateStore:
    """The store the settings name: Redis for a URL, else process memory."""
    if settings.url is None:
        from .memory import MemoryState

        return MemoryState(prefix=settings.prefix, journal_max=settings.journal_max)
    from .redis_store import RedisState

    return RedisState(settings.url, prefix=settings.prefix, journal_max=settings.journal_max)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return url
