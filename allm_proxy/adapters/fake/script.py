"""Scripted replies for the fake provider: answers served in order, with one cursor per session.

    from allm_proxy import Engine, generate_image
    from allm_proxy.adapters.fake import FakeScript

    script = FakeScript().enqueue(
        {"image": "tests/data/kestrel.png", "revised_prompt": "A kestrel at dawn"},
        {"error": {"status": 429, "message": "Slow down", "headers": {"retry-after": "1"}}},
    )
    engine = Engine(image_adapter_opts={"script": script})
    generate_image(engine, "a kestrel")          # the kestrel
    generate_image(engine, "a kestrel")          # raises the 429
    script.history[0].request.prompt             # "a kestrel"

Every session (the `X-ALLM-Session` header, "default" without one) walks the
whole list from the start, so parallel tests never take each other's
replies. A script file (YAML or JSON, `--fake-script PATH`) holds the same
entries, as a list or as `{"replies": [...]}`; relative image paths are
relative to the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import errors
from ...types import Image, ImageRequest, sniff_mime

IMAGE_KEYS = ("image", "b64_json", "bytes", "url")
_ERROR_KEYS = ("status", "message", "type", "code", "param", "headers")
_SUFFIX_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


@dataclass(frozen=True)
class ScriptedImage:
    """One image of a scripted reply: bytes, or a URL handed to the client as is."""

    data: bytes | None = None
    url: str | None = None
    mime_type: str | None = None
    revised_prompt: str | None = None

    def to_image(self, revised_prompt: str | None = None) -> Image:
        source: bytes | str | None = self.data if self.data is not None else self.url
        return Image(source, mime_type=self.mime_type, revised_prompt=self.revised_prompt or revised_prompt)


@dataclass(frozen=True)
class ScriptedError:
    """An error reply; raised as a fresh `ProxyError` every time it is served."""

    status: int
    message: str
    error_type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # An explicit `code: null` must stay null even where the error class has a default code.
    code_given: bool = False
    # The class to raise; else the one for the status and type.
    kind: type[errors.ProxyError] | None = None

    def to_exception(self) -> errors.ProxyError:
        kind = self.kind or errors.error_class(self.status, self.error_type)
        code = self.code if self.code is not None or self.code_given else kind.default_code
        return kind(self.message, code=code, param=self.param, headers=dict(self.headers))

    @classmethod
    def from_exception(cls, exc: errors.ProxyError) -> ScriptedError:
        # A relayed provider error is re-raised as its plain class: the relayed body belongs to that answer.
        kind = None if isinstance(exc, errors.UpstreamStatusError) else type(exc)
        return cls(
            status=exc.status,
            message=exc.message,
            error_type=exc.type,
            code=exc.code,
            param=exc.param,
            headers=tuple(exc.headers.items()),
            code_given=True,
            kind=kind,
        )


@dataclass(frozen=True)
class Reply:
    """One scripted answer: images, an error, or `generate` (a deterministic generated answer)."""

    images: tuple[ScriptedImage, ...] = ()
    # True for a one-image entry: it answers every image of `n`. A listed `images` entry is sent as listed.
    repeat: bool = True
    revised_prompt: str | None = None
    error: ScriptedError | None = None
    generate: bool = False

    def images_for(self, n: int) -> list[Image]:
        chosen = list(self.images) * n if self.repeat and len(self.images) == 1 else list(self.images)
        return [image.to_image(self.revised_prompt) for image in chosen]


@dataclass(frozen=True)
class FakeCall:
    """A request the fake received while scripted, in arrival order."""

    request: ImageRequest
    session: str
    model: str

    @property
    def prompt(self) -> str | None:
        return self.request.prompt


class FakeScript:
    """Replies served in order, one cursor per session; `history` records every request.

    Entries: ``{"image": path}``, ``{"b64_json": text}``, ``{"bytes": data}``, ``{"url": url}``
    (each with an optional ``revised_prompt``); ``{"images": [entry, ...]}`` for several images
    in one reply; ``{"error": {"status", "message", "type", "code", "param", "headers"}}``;
    ``{"generate": true}`` for a generated image as if unscripted. `enqueue` also takes raw
    image bytes, a `pathlib.Path`, or a `ProxyError` to raise.
    """

    def __init__(
        self,
        replies: Iterable[Any] = (),
        *,
        base_dir: str | os.PathLike[str] | None = None,
        source: str = "the fake script",
    ) -> None:
        self.source = source
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.history: list[FakeCall] = []
        self._replies: list[Reply] = []
        self._cursors: dict[str, int] = {}
        self._lock = threading.Lock()
        self.enqueue(*replies)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> FakeScript:
        """Read a YAML or JSON script; image paths in it are relative to its folder."""
        file = Path(path)
        return cls(_read_entries(file), base_dir=file.parent, source=str(file))

    def enqueue(self, *replies: Any) -> FakeScript:
        """Append replies (validated now, so a bad entry fails here and not mid-test)."""
        with self._lock:
            start = len(self._replies)
            parsed = [parse_entry(r, start + i, self.base_dir, self.source) for i, r in enumerate(replies)]
            self._replies.extend(parsed)
        return self

    @property
    def replies(self) -> tuple[Reply, ...]:
        return tuple(self._replies)

    def remaining(self, session: str = "default") -> int:
        with self._lock:
            return len(self._replies) - self._cursors.get(session, 0)

    def reset(self) -> None:
        """Rewind every session to the first reply and forget the history."""
        with self._lock:
            self._cursors.clear()
            self.history.clear()

    def take(
        self, request: ImageRequest, *, session: str = "default", model: str = "", position: int | None = None
    ) -> Reply:
        """Record `request` and return the session's next reply; `FakeScriptExhausted` when none is left.

        `position` is the reply to serve when a shared state store keeps the cursor (workers on Redis).
        """
        with self._lock:
            self.history.append(FakeCall(request=request, session=session, model=model))
            used = self._cursors.get(session, 0) if position is None else position
            if used >= len(self._replies):
                raise errors.FakeScriptExhausted(self._exhausted_message(session))
            self._cursors[session] = used + 1
            return self._replies[used]

    def _exhausted_message(self, session: str) -> str:
        count = len(self._replies)
        noun = "reply" if count == 1 else "replies"
        return (
            f"The fake provider's script ({self.source}) had {count} {noun} and session '{session}' "
            f"has used them all. Add more replies to the script (or FakeScript.enqueue(...) in Python), "
            f"or send a new X-ALLM-Session header to start a session from the first reply."
        )

    def __len__(self) -> int:
        return len(self._replies)

    def __repr__(self) -> str:
        return f"FakeScript({len(self._replies)} replies, source={self.source!r})"


def _read_entries(file: Path) -> list[Any]:
    if not file.is_file():
        raise ValueError(f"fake script {file} does not exist")
    import yaml  # only script files need it; engines without one never pay for the import

    text = file.read_text(encoding="utf-8")
    is_json = file.suffix.lower() == ".json"
    try:
        raw = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"fake script {file} is not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
    if isinstance(raw, Mapping):
        extra = set(raw) - {"replies"}
        if extra:
            raise ValueError(f"fake script {file}: unknown top-level keys {sorted(extra)}; only 'replies' is allowed")
        raw = raw.get("replies")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(
            f"fake script {file} must hold a list of replies, or {{replies: [...]}}; got {type(raw).__name__}"
        )
    return raw


def parse_entry(entry: Any, index: int, base_dir: Path, source: str) -> Reply:
    """One script entry as a `Reply`; a `ValueError` saying what is wrong and what is allowed."""
    where = f"{source}, reply {index + 1}"
    if isinstance(entry, Reply):
        return entry
    if isinstance(entry, errors.ProxyError):
        return Reply(error=ScriptedError.from_exception(entry))
    if isinstance(entry, bytes | bytearray):
        return Reply(images=(_image_from_bytes(bytes(entry), where, None),))
    if isinstance(entry, Path):
        return Reply(images=(_image_from_file(str(entry), base_dir, where),))
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping such as {{image: path}}, got {type(entry).__name__}")
    keys = set(entry)
    if "error" in keys:
        _only(keys, {"error"}, where)
        return Reply(error=_parse_error(entry["error"], where))
    if "generate" in keys:
        _only(keys, {"generate"}, where)
        if entry["generate"] is not True:
            raise ValueError(f"{where}: 'generate' must be true")
        return Reply(generate=True)
    if "images" in keys:
        _only(keys, {"images", "revised_prompt"}, where)
        items = entry["images"]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: 'images' must be a non-empty list of image entries")
        images = tuple(_parse_image(item, base_dir, f"{where}, image {i + 1}") for i, item in enumerate(items))
        return Reply(images=images, repeat=False, revised_prompt=_optional_str(entry, "revised_prompt", where))
    return Reply(images=(_parse_image(entry, base_dir, where),))


def _only(keys: set[str], allowed: set[str], where: str) -> None:
    extra = keys - allowed
    if extra:
        raise ValueError(
            f"{where}: {sorted(extra)} cannot go with {sorted(allowed)[0]!r}; allowed keys here: {sorted(allowed)}"
        )


def _parse_image(item: Any, base_dir: Path, where: str) -> ScriptedImage:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a mapping such as {{image: path}}, got {type(item).__name__}")
    unknown = set(item) - {*IMAGE_KEYS, "revised_prompt"}
    present = [k for k in IMAGE_KEYS if k in item]
    if unknown or len(present) != 1:
        problem = f"unknown keys {sorted(unknown)}" if unknown else f"got {present or 'none of them'}"
        raise ValueError(
            f"{where}: an image entry needs exactly one of {', '.join(IMAGE_KEYS)} (plus an optional "
            f"revised_prompt); {problem}. Other entry kinds: images, error, generate."
        )
    key = present[0]
    value = item[key]
    revised = _optional_str(item, "revised_prompt", where)
    if key == "image":
        if not isinstance(value, str | os.PathLike):
            raise ValueError(f"{where}: 'image' must be a file path")
        image = _image_from_file(os.fspath(value), base_dir, where)
    elif key == "b64_json":
        if not isinstance(value, str):
            raise ValueError(f"{where}: 'b64_json' must be base64 text")
        image = _image_from_bytes(_strict_b64(value, where), where, None)
    elif key == "bytes":
        if not isinstance(value, bytes | bytearray):
            raise ValueError(f"{where}: 'bytes' must be bytes (Python scripts only; files use image or b64_json)")
        image = _image_from_bytes(bytes(value), where, None)
    else:
        if not isinstance(value, str) or not value.startswith(("http://", "https://", "data:")):
            raise ValueError(f"{where}: 'url' must be an http(s):// or data: URL, got {value!r}")
        image = ScriptedImage(url=value)
    return ScriptedImage(data=image.data, url=image.url, mime_type=image.mime_type, revised_prompt=revised)


def _image_from_file(path: str, base_dir: Path, where: str) -> ScriptedImage:
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = base_dir / file
    if not file.is_file():
        raise ValueError(f"{where}: image file {file} does not exist (relative paths are relative to {base_dir})")
    return _image_from_bytes(file.read_bytes(), where, _SUFFIX_MIME.get(file.suffix.lower()))


def _image_from_bytes(data: bytes, where: str, fallback_mime: str | None) -> ScriptedImage:
    if not data:
        raise ValueError(f"{where}: the image is empty")
    return ScriptedImage(data=data, mime_type=sniff_mime(data) or fallback_mime)


def _strict_b64(text: str, where: str) -> bytes:
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: 'b64_json' is not valid base64") from None


def _optional_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: '{key}' must be a string")
    return value


def _parse_error(raw: Any, where: str) -> ScriptedError:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'error' must be a mapping with status and message")
    unknown = set(raw) - set(_ERROR_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown error keys {sorted(unknown)}; allowed: {', '.join(_ERROR_KEYS)}")
    status = raw.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"{where}: error 'status' must be an HTTP error status (400-599), got {status!r}")
    for key in ("message", "type", "code", "param"):
        _optional_str(raw, key, where)
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ValueError(f"{where}: error 'headers' must be a mapping of header names to values")
    return ScriptedError(
        status=status,
        message=raw.get("message") or f"Scripted error (HTTP {status}) from the fake provider.",
        error_type=raw.get("type"),
        code=raw.get("code"),
        param=raw.get("param"),
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        code_given="code" in raw,
    )
