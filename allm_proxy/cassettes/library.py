"""The cassettes of one Engine: which one is active, where names may point, and their state.

    library = CassetteLibrary(CassetteSettings(directory="cassettes", record_mode="none"))
    client = httpx.AsyncClient(transport=library.transport(httpx.AsyncHTTPTransport()))
    library.activate("checkout/happy-path")          # cassettes/checkout/happy-path.json

A request picks its cassette by, first that is set: the header
``X-ALLM-Cassette`` (a name inside the cassette directory), the cassette
activated in-process or through ``POST /allm/cassette``, the configured
``path``. Names never leave the directory: no ``..``, no absolute paths, no
symlinks out; a bad name is a 400 envelope.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import httpx

from .. import errors
from ..config import CassetteSettings, RecordMode
from ..state import MemoryState, ReplayCursors, StateStore
from .filters import SecretFilter
from .formats import FORMATS
from .matchers import build
from .tape import Tape
from .transport import CassetteTransport

DEFAULT_SUFFIX = ".json"
_COMPONENT = re.compile(r"^[A-Za-z0-9_\-\[\]@+=,][A-Za-z0-9_.\-\[\]@+=,]*$")
MAX_NAME = 255


class CassetteLibrary:
    """Engine-level cassette state: loaded cassettes, replay cursors, the active cassette."""

    def __init__(
        self, settings: CassetteSettings, *, state: StateStore | None = None, cursor_ttl: float = 86400.0
    ) -> None:
        self.settings = settings
        # replay cursors live in the state store (shared by workers when it is Redis)
        self.cursors = ReplayCursors(state if state is not None else MemoryState(), ttl=cursor_ttl)
        self.matchers = build(settings.match_on)
        self.filter = SecretFilter.from_settings(settings)
        self.directory = Path(settings.directory).resolve() if settings.directory else None
        self._default = Path(settings.path).resolve() if settings.path else None
        if self._default is not None and self._default.suffix.lower() not in FORMATS:
            # Found at start-up (a usage error of `serve`), not at the first request.
            raise ValueError(f"cassette {settings.path!r} needs one of the extensions {', '.join(FORMATS)}")
        self._active: Path | None = None
        self._tapes: dict[Path, Tape] = {}
        self._lock = threading.Lock()
        # Bumped whenever what a replay answers may change (a cassette chosen or rewound, a recording
        # kept): answers remembered under an older generation are stale (server/answer_cache.py).
        self.generation = 0

    # -- choosing a cassette ---------------------------------------------------------------

    def transport(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """`inner` with recording and replay around it."""
        return CassetteTransport(self, inner)

    def activate(
        self, name: str | None = None, *, path: str | Path | None = None, record_mode: str | None = None
    ) -> Path | None:
        """Make a cassette the active one, rewound (a fresh use, as `vcr.use_cassette`).

        `name` is confined to the cassette directory (it comes from clients);
        `path` is any file (in-process callers are trusted). Neither: back to
        the configured `path`, if any. Returns the cassette's path.
        """
        if name is not None and path is not None:
            raise ValueError("give a cassette name or a path, not both")
        mode = self._record_mode(record_mode)
        target = self.resolve(name) if name is not None else None
        if path is not None:
            target = Path(path).resolve()
        if target is not None:
            _check_suffix(target)
            self.tape(target).begin(mode)
        with self._lock:
            self._active = target
        self.changed()
        return target or self._default

    def changed(self) -> None:
        """What replays answer may have changed (see `generation`)."""
        with self._lock:
            self.generation += 1

    async def aactivate(self, name: str | None = None, *, record_mode: str | None = None) -> Path | None:
        """`activate` from a request: also rewinds the cassette's cursors on every worker sharing the state."""
        target = await asyncio.to_thread(self.activate, name, record_mode=record_mode)
        if target is not None and self.cursors.store.shared:
            await (await self.tape_for(name)).rewind()
        return target

    @property
    def active(self) -> Path | None:
        """The cassette requests without an ``X-ALLM-Cassette`` header use."""
        with self._lock:
            return self._active or self._default

    def resolve(self, name: str) -> Path:
        """The file a client-given name stands for, inside the cassette directory; 400 otherwise."""
        if self.directory is None:
            raise errors.InvalidRequestError(
                "This proxy has no cassette directory, so cassettes cannot be chosen by name. "
                "Start it with --cassette-dir DIR.",
                code="invalid_cassette_name",
                param="X-ALLM-Cassette",
            )
        parts = name.split("/")
        if (
            not name
            or len(name) > MAX_NAME
            or name.startswith("/")
            or not all(_COMPONENT.match(part) for part in parts)
        ):
            raise errors.InvalidRequestError(
                f"Invalid cassette name {name[:MAX_NAME]!r}: use letters, digits and _-.[]@+=, in "
                "'/'-separated parts, no '..', no leading '.' or '/'.",
                code="invalid_cassette_name",
                param="X-ALLM-Cassette",
            )
        candidate = self.directory / name
        if candidate.suffix.lower() not in FORMATS:
            existing = [candidate.with_name(candidate.name + s) for s in FORMATS]
            fresh = candidate.with_name(candidate.name + DEFAULT_SUFFIX)
            candidate = next((p for p in existing if p.exists()), fresh)
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.directory):
            raise errors.InvalidRequestError(
                f"The cassette name {name!r} leads outside the cassette directory.",
                code="invalid_cassette_name",
                param="X-ALLM-Cassette",
            )
        return resolved

    async def tape_for(self, name: str | None) -> Tape:
        """The cassette of a call (its header name, else the active one), loaded off the event loop."""
        path = self.resolve(name) if name is not None else self.active
        if path is None:
            raise errors.InvalidRequestError(
                "No cassette is selected: send the header X-ALLM-Cassette: NAME, or choose one with "
                'POST /allm/cassette {"name": NAME} (or library.activate(NAME) in-process).',
                code="cassette_not_selected",
            )
        with self._lock:
            tape = self._tapes.get(path)
        return tape if tape is not None else await asyncio.to_thread(self.tape, path)

    def tape(self, path: Path) -> Tape:
        """The Tape of a cassette file, read from disk on first use."""
        with self._lock:
            tape = self._tapes.get(path)
            if tape is None:
                tape = Tape(
                    path,
                    RecordMode(self.settings.record_mode),
                    self.matchers,
                    self.filter,
                    allow_repeats=self.settings.allow_playback_repeats,
                    cursors=self.cursors,
                )
                tape.load()
                self._tapes[path] = tape
            return tape

    # -- lifecycle -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every cassette with recordings not on disk yet (the engine calls this on close)."""
        with self._lock:
            tapes = list(self._tapes.values())
        for tape in tapes:
            tape.save()

    def status(self) -> dict[str, Any]:
        """What ``GET /allm/cassette`` answers."""
        active = self.active
        with self._lock:
            tape = self._tapes.get(active) if active is not None else None
        return {
            "active": str(active) if active is not None else None,
            "name": self._name_of(active),
            "record_mode": tape.record_mode if tape is not None else self.settings.record_mode,
            "interactions": len(tape) if tape is not None else None,
            "directory": str(self.directory) if self.directory is not None else None,
            "replay_timing": self.settings.replay_timing,
        }

    def _name_of(self, path: Path | None) -> str | None:
        if path is None or self.directory is None or not path.is_relative_to(self.directory):
            return None
        return path.relative_to(self.directory).as_posix()

    def _record_mode(self, mode: str | None) -> RecordMode:
        if mode is None:
            return RecordMode(self.settings.record_mode)
        try:
            return RecordMode(mode)
        except ValueError as exc:
            reason = str(exc)
            raise errors.InvalidRequestError(
                f"{reason[:1].upper()}{reason[1:]}.", code="invalid_record_mode", param="record_mode"
            ) from None


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise errors.InvalidRequestError(
            f"The cassette {path} has no known extension; use one of {', '.join(FORMATS)}.",
            code="invalid_cassette_name",
        )
