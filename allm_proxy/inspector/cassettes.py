"""Cassettes as the inspector shows them: each interaction shaped like a journal entry.

    shelf = CassetteShelf(Path("cassettes"))
    shelf.listing()                      # [{"name", "path", "interactions": [entry, ...]}, ...]
    shelf.blob("demo.json", 0, "images", 0)   # (bytes, MIME type) or None

Reading is `cassettes.report` and `cassettes.summary` (what `allm-proxy cassettes
show` uses); parsed files are cached until their size or mtime changes. `report`
(and vcrpy with it) is imported when a cassette is first listed, not with the
server: a proxy nobody opens the Cassettes tab of never needs it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..cassettes.bodies import as_bytes
from ..cassettes.summary import content_type_of, response_images, summarize_request
from ..journal.record import Blob

if TYPE_CHECKING:
    from ..cassettes.report import Entry

MAX_CACHED = 64


class CassetteShelf:
    """The cassettes under `root` (a file or a directory), read on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, tuple[tuple[int, int], list[Entry], dict[int, tuple[list[Blob], list[Blob]]]]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[tuple[str, Path]]:
        """(name shown, file) of every cassette; names are paths relative to the directory."""
        if not self.root.exists():
            return []
        base = self.root if self.root.is_dir() else self.root.parent
        return [(p.relative_to(base).as_posix(), p) for p in _report().cassette_files(self.root)]

    def listing(self) -> list[dict[str, Any]]:
        """Every cassette with its interactions as entries (no bytes)."""
        out: list[dict[str, Any]] = []
        for name, path in self.names():
            try:
                entries = [self._entry(name, path, e) for e in self._read(path)]
                out.append({"name": name, "path": str(path), "interactions": entries, "error": None})
            except Exception as exc:  # a cassette that does not parse is listed with why
                out.append({"name": name, "path": str(path), "interactions": [], "error": str(exc)[:500]})
        return out

    def blob(self, name: str, index: int, kind: str, k: int) -> tuple[bytes, str] | None:
        """Upload (`inputs`) or recorded image (`images`) `k` of interaction `index`."""
        path = dict(self.names()).get(name)
        if path is None:
            return None
        entries = self._read(path)
        if not 0 <= index < len(entries):
            return None
        inputs, images = self._blobs(path, entries[index])
        blobs = inputs if kind == "inputs" else images
        if not 0 <= k < len(blobs):
            return None
        data = blobs[k].data()
        if data is None:
            return None
        return data, str(blobs[k].describe().get("mime_type") or "application/octet-stream")

    def _read(self, path: Path) -> list[Entry]:
        stat = os.stat(path)
        state = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == state:
                return cached[1]
        entries: list[Entry] = _report().read(path)
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = (state, entries, {})
        return entries

    def _blobs(self, path: Path, entry: Entry) -> tuple[list[Blob], list[Blob]]:
        with self._lock:
            described = self._cache[path][2] if path in self._cache else {}
            if entry.index not in described:
                files = summarize_request(entry.request).files
                inputs = [Blob(f.data, len(f.data), part=f.name, declared_mime=f.content_type) for f in files]
                images = [Blob(data, len(data)) for data in response_images(entry.response)]
                described[entry.index] = (inputs, images)
            return described[entry.index]

    def _entry(self, name: str, path: Path, entry: Entry) -> dict[str, Any]:
        summary = summarize_request(entry.request)
        inputs, images = self._blobs(path, entry)
        status = (entry.response.get("status") or {}).get("code")
        body = as_bytes((entry.response.get("body") or {}).get("string"))
        data = _json_or_none(body) if "json" in content_type_of(entry.response) else None
        error = data if isinstance(data, dict) and "error" in data else None
        usage = data.get("usage") if isinstance(data, dict) else None
        return {
            "id": f"{name}#{entry.index}",
            "cassette": name,
            "index": entry.index,
            "method": summary.method,
            "path": summary.path,
            "operation": _operation(summary.path),
            "model": summary.model,
            "provider": "gemini" if "generateContent" in summary.path else "openai",
            "status": status,
            "source": "cassette",
            "params": {**summary.fields, **({"prompt": summary.prompt} if summary.prompt is not None else {})},
            "inputs": [b.describe() for b in inputs],
            "images": [b.describe() for b in images],
            "usage": usage if isinstance(usage, dict) else None,
            "error": error,
            "upstream": [{"method": summary.method, "url": summary.uri, "status": status, "source": "cassette"}],
        }


def _operation(path: str) -> str | None:
    for marker, operation in (
        ("/images/generations", "generate"),
        ("/images/edits", "edit"),
        ("/images/variations", "variation"),
        (":generateContent", "generate"),
        (":streamGenerateContent", "generate"),
    ):
        if path.endswith(marker) or marker in path:
            return operation
    return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _report() -> ModuleType:
    from ..cassettes import report  # with vcrpy: see the module's docstring

    return report
