"""The adapter registry: built-in and third-party providers, found alike and loaded on first lookup.

A provider is an `AdapterInfo`. The built-ins (`fake`, `openai`, `gemini`)
and every entry point of the group `allm_proxy.adapters` are *sources*:
names known up front, whose module is imported only when the name is first
looked up, and then registered with `register`, the same call a program
makes to add an adapter by hand. An entry point's object is an `AdapterInfo`
or a zero-argument callable returning one:

    [project.entry-points."allm_proxy.adapters"]
    tiny = "tiny_adapter:INFO"

Precedence: adapters registered by hand, then built-ins, then entry points
(one that reuses a taken name is skipped with a warning). A name not found is
looked for again among the entry points, so a package installed after the
first lookup is still found.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint

from .base import AdapterInfo

ENTRY_POINT_GROUP = "allm_proxy.adapters"
BUILTINS = {
    "fake": "allm_proxy.adapters.fake:INFO",
    "openai": "allm_proxy.adapters.openai:INFO",
    "gemini": "allm_proxy.adapters.gemini:INFO",
}

log = logging.getLogger("allm_proxy.adapters")


class AdapterLoadError(ValueError):
    """An adapter's module or entry point could not give an `AdapterInfo`.

    A ValueError, like an unknown name, so `allm-proxy serve` reports it as a usage error.
    """


@dataclass(frozen=True)
class _Source:
    """A provider known by name whose `AdapterInfo` is not loaded yet."""

    name: str
    target: str  # "module:attribute"
    origin: str  # for messages: where the name came from

    def load(self) -> object:
        module_name, _, attribute = self.target.partition(":")
        value: object = importlib.import_module(module_name)
        for part in filter(None, attribute.split(".")):
            value = getattr(value, part)
        return value


def installed_entry_points() -> Iterable[EntryPoint]:
    """The entry points of the group `allm_proxy.adapters` on the current `sys.path`."""
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


class AdapterRegistry:
    """Provider names to `AdapterInfo`s. `entry_points` lists the third-party sources (tests pass their own)."""

    def __init__(
        self,
        entry_points: Callable[[], Iterable[EntryPoint]] = installed_entry_points,
        builtins: dict[str, str] | None = None,
    ) -> None:
        self._entry_points = entry_points
        self._builtins = dict(BUILTINS if builtins is None else builtins)
        self._loaded: dict[str, AdapterInfo] = {}
        self._sources: dict[str, _Source] = {}
        self._scanned = False
        # Engines are built from any thread (the sync API, test workers); one lookup at a time.
        self._lock = threading.RLock()

    def register(self, info: AdapterInfo) -> None:
        """Make a provider available by name; a later registration of the same name replaces it."""
        if not isinstance(info, AdapterInfo):
            raise TypeError(f"register_adapter takes an AdapterInfo, not {type(info).__name__}")
        with self._lock:
            self._loaded[info.name] = info
            self._sources.pop(info.name, None)

    def get(self, name: str) -> AdapterInfo:
        """The provider `name`, loading it on first use; ValueError naming every known provider if none."""
        with self._lock:
            self._scan(again=False)
            if name not in self._loaded and name not in self._sources:
                self._scan(again=True)  # perhaps installed since the last look
            info = self._loaded.get(name)
            if info is not None:
                return info
            source = self._sources.get(name)
            if source is None:
                raise ValueError(f"unknown image adapter {name!r}; known adapters: {', '.join(self.names())}")
            info = _info_from(source)
            self.register(info)
            return info

    def names(self) -> list[str]:
        """Every provider name, loaded or not (nothing is imported to list them)."""
        with self._lock:
            self._scan(again=False)
            return sorted({*self._loaded, *self._sources})

    def _scan(self, *, again: bool) -> None:
        if self._scanned and not again:
            return
        if not self._scanned:
            for name, target in self._builtins.items():
                if name not in self._loaded:
                    self._sources[name] = _Source(name, target, origin="built-in adapter")
        self._scanned = True
        try:
            found = list(self._entry_points())
        except Exception as exc:  # a broken distribution's metadata must not hide the built-ins
            log.warning("could not list the %s entry points: %s: %s", ENTRY_POINT_GROUP, type(exc).__name__, exc)
            return
        for entry_point in found:
            name = entry_point.name
            taken = self._sources.get(name)
            if name in self._loaded or (taken is not None and taken.target != entry_point.value):
                if not again and taken is not None:
                    log.warning(
                        "skipping the %s entry point %s = %r: the name is taken by the %s %r",
                        ENTRY_POINT_GROUP,
                        name,
                        entry_point.value,
                        taken.origin,
                        taken.target,
                    )
                continue
            self._sources[name] = _Source(name, entry_point.value, origin=_describe(entry_point))


def _describe(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    where = f" of the distribution {dist.name!r}" if dist is not None else ""
    return f"entry point {entry_point.name} = {entry_point.value!r} (group {ENTRY_POINT_GROUP}{where})"


def _info_from(source: _Source) -> AdapterInfo:
    """Load a source: an AdapterInfo, or a zero-argument callable returning one, named as the source is."""
    what = f"the image adapter {source.name!r} ({source.origin})"
    try:
        value = source.load()
        if not isinstance(value, AdapterInfo) and callable(value):
            value = value()
    except Exception as exc:  # any failure of third-party code becomes one clear message, not a traceback
        raise AdapterLoadError(f"{what} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, AdapterInfo):
        raise AdapterLoadError(
            f"{what} gave a {type(value).__name__}, not an AdapterInfo (or a zero-argument callable returning one)"
        )
    if value.name != source.name:
        raise AdapterLoadError(f"{what} gave an AdapterInfo named {value.name!r}; the two names must be the same")
    return value
