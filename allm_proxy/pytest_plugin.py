"""pytest plugin: record-then-replay of image API calls, one cassette per test, through an in-process proxy.

    @pytest.mark.allm_cassette                       # replays cassettes/<module>/<test>.json
    def test_thumbnails():
        client = OpenAI()                            # OPENAI_BASE_URL points at the proxy
        client.images.generate(model="gpt-image-1", prompt="a kestrel")

    pytest --allm-record-mode=once                   # record the missing cassettes (default: none)

    @pytest.mark.allm_cassette(faults=["rate_limit; times=1"])   # faults for this test (nothing recorded)

One proxy per pytest process (per xdist worker) runs on a free loopback port
for the whole session; each test using the marker or the `allm_cassette`
fixture activates its own cassette, rewound. Override `allm_config` in a
conftest.py to choose the provider and its options:

    @pytest.fixture
    def allm_config():
        return {"provider": "openai", "options": {"base_url": "https://api.openai.com/v1"},
                "filter_headers": ["x-team-token"]}

The default record mode is ``none``: a test run never reaches the network
unless asked to. Precedence: ``--allm-record-mode`` > the marker's
``record_mode=`` > ``allm_config["record_mode"]`` > ``none``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .config import CASSETTE_KEYS, RecordMode

# What `allm_config()` may hold: the provider and its options, and the `[cassettes]` settings but where
# the cassette lives (the plugin chooses one per test).
CONFIG_KEYS = frozenset(
    {"provider", "options", "providers", "default_model"} | (CASSETTE_KEYS - {"path", "dir", "directory"})
)
DUMMY_KEY = "sk-test-allm-replay"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]@+=,]")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("allm-proxy", "allm-proxy record-then-replay cassettes")
    group.addoption(
        "--allm-record-mode",
        action="store",
        default=None,
        choices=[mode.value for mode in RecordMode],
        help="Record mode for allm_cassette tests (vcrpy's meanings). [default: none]",
    )
    group.addoption(
        "--allm-cassette-dir",
        action="store",
        default=None,
        help="Where cassettes live. [default: a 'cassettes' directory next to each test module]",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allm_cassette(name=None, provider=None, record_mode=None, faults=None): record or replay a "
        "cassette; faults=['rate_limit; times=1'] injects faults for this test",
    )


@dataclass(frozen=True)
class AllmCassette:
    """What a test gets from the `allm_cassette` fixture."""

    path: Path
    record_mode: str
    url: str  # the proxy, e.g. http://127.0.0.1:41234
    engine: Any
    journal_before: frozenset[str] = frozenset()  # Entries older than this test.

    @property
    def base_url(self) -> str:
        """What an OpenAI client's base_url should be."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """This test's journal entries, oldest first:
        `allm_cassette.requests[0]["params"]["size"] == "1024x1024"`."""
        journal = self.engine.journal
        if journal is None:
            return []
        return [e for e in self.engine.run_sync(journal.list()) if e["id"] not in self.journal_before]


def _uses_a_cassette(item: pytest.Item) -> bool:
    """The `allm_cassette` fixture, asked for by name or by the marker (whose autouse fixture asks
    for it only when the test runs, so it is not among the collected fixture names)."""
    return "allm_cassette" in getattr(item, "fixturenames", ()) or item.get_closest_marker("allm_cassette") is not None


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a collected test uses a cassette, import the server and the cassette layer now, once
    collection is done, so the first proxy starts in tens of milliseconds when its test asks. (Not in
    a background thread: importing the same modules from two threads at once can see one
    half-initialized.) A run with no such test imports nothing more. The cassette layer is named
    because a proxy imports it, and vcrpy, only once it uses a cassette; every proxy of the plugin
    does."""
    if any(_uses_a_cassette(item) for item in session.items):
        import uvicorn  # noqa: F401

        from . import server  # noqa: F401
        from .cassettes import library  # noqa: F401


@pytest.fixture
def allm_config() -> dict[str, Any]:
    """Provider, provider options and cassette settings for allm_cassette tests; override in conftest.py."""
    return {}


@pytest.fixture(scope="session")
def allm_proxies() -> Iterator[_Proxies]:
    """The proxies of this pytest process, one per distinct configuration, started on first use."""
    proxies = _Proxies()
    yield proxies
    proxies.close()


@pytest.fixture
def allm_cassette(
    request: pytest.FixtureRequest, allm_config: dict[str, Any], allm_proxies: _Proxies
) -> Iterator[AllmCassette]:
    """Activate this test's cassette in the session's proxy and point OpenAI clients at it."""
    unknown = set(allm_config) - CONFIG_KEYS
    if unknown:
        raise pytest.UsageError(f"allm_config: unknown keys {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    marker = request.node.get_closest_marker("allm_cassette")
    marker_kwargs = dict(marker.kwargs) if marker is not None else {}
    provider = marker_kwargs.get("provider") or allm_config.get("provider") or "openai"
    mode = (
        request.config.getoption("--allm-record-mode")
        or marker_kwargs.get("record_mode")
        or allm_config.get("record_mode")
        or "none"
    )
    try:
        mode = RecordMode(mode)
    except ValueError as exc:
        raise pytest.UsageError(f"allm {exc}") from None
    name = (marker.args[0] if marker is not None and marker.args else marker_kwargs.get("name")) or _default_name(
        request
    )
    path = _cassette_dir(request) / name
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        path = path.with_name(path.name + ".json")
    proxy = allm_proxies.get(provider, allm_config, enabled=mode != "off", root=request.config.rootpath)
    library = proxy.engine.cassette_library
    try:  # the marker's faults hold for this test only, with fresh counts
        proxy.engine.faults.set(marker_kwargs.get("faults") or ())
    except ValueError as exc:
        raise pytest.UsageError(f"allm_cassette(faults=...): {exc}") from None
    if library is not None:
        library.activate(path=path, record_mode=mode)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", proxy.url + "/v1")
        if not os.environ.get("OPENAI_API_KEY"):
            env.setenv("OPENAI_API_KEY", DUMMY_KEY)
        try:
            journal = proxy.engine.journal
            entries = proxy.engine.run_sync(journal.list()) if journal is not None else []
            before = frozenset(e["id"] for e in entries)
            yield AllmCassette(path=path, record_mode=mode, url=proxy.url, engine=proxy.engine, journal_before=before)
        finally:
            proxy.engine.faults.clear()
            if library is not None:
                library.flush()
                library.activate(None)  # a stray call after the test misses loudly


@pytest.fixture(autouse=True)
def _allm_cassette_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("allm_cassette") is not None:
        request.getfixturevalue("allm_cassette")


def _default_name(request: pytest.FixtureRequest) -> str:
    module = Path(str(request.node.path)).stem
    test = request.node.name if request.cls is None else f"{request.cls.__name__}.{request.node.name}"
    return f"{module}/{_UNSAFE.sub('-', test)}"


def _cassette_dir(request: pytest.FixtureRequest) -> Path:
    option = request.config.getoption("--allm-cassette-dir")
    if option:
        return Path(option).resolve()
    return Path(str(request.node.path)).parent / "cassettes"


@dataclass
class _Proxy:
    url: str
    engine: Any
    server: Any
    thread: threading.Thread


class _Proxies:
    """Proxies started in this process (uvicorn in a thread each), keyed by their configuration."""

    def __init__(self) -> None:
        self._running: dict[str, _Proxy] = {}

    def get(self, provider: str, config: dict[str, Any], *, enabled: bool, root: Path) -> _Proxy:
        spec = {k: v for k, v in config.items() if k != "record_mode"}
        key = json.dumps([provider, spec, enabled], sort_keys=True, default=str)
        if key not in self._running:
            self._running[key] = _start(_engine(provider, config, enabled=enabled, root=root))
        return self._running[key]

    def close(self) -> None:
        for proxy in self._running.values():
            proxy.server.should_exit = True
        for proxy in self._running.values():
            proxy.thread.join(timeout=10)
            proxy.engine.close()  # the loop its journal was read on, and the journal's files
        self._running.clear()


def _engine(provider: str, config: dict[str, Any], *, enabled: bool, root: Path) -> Any:
    from .config import CassetteSettings
    from .engine import Engine

    providers = {k: dict(v) for k, v in (config.get("providers") or {}).items()}
    providers.setdefault(provider, {}).update(config.get("options") or {})
    settings = None
    if enabled:
        # Every [cassettes] setting but where the cassette lives and how it records (chosen per test).
        cassette_keys = CASSETTE_KEYS - {"path", "dir", "directory", "record_mode"}
        values: dict[str, Any] = {
            k: tuple(config[k]) if isinstance(config[k], list) else config[k] for k in cassette_keys if k in config
        }
        # Tests activate cassettes by path; the directory only serves X-ALLM-Cassette names.
        settings = CassetteSettings(directory=str(root), record_mode="none", **values)
    return Engine(
        image_adapter=provider, image_default_model=config.get("default_model"), providers=providers, cassettes=settings
    )


def _start(engine: Any) -> _Proxy:
    import uvicorn

    from .config import ProxyConfig
    from .server import create_app

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine, ProxyConfig(port=port)), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name=f"allm-proxy-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"allm-proxy did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    return _Proxy(url=f"http://127.0.0.1:{port}", engine=engine, server=server, thread=thread)
