"""Core types: what an image request and its answer are, independent of any wire.

These know nothing of HTTP servers or providers. The OpenAI wire codec turns
requests into `ImageRequest` and `ImageResponse` back into JSON or SSE; the
adapters turn `ImageRequest` into their provider's calls.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, get_type_hints

Operation = Literal["generate", "edit", "variation"]


def sniff_mime(data: bytes) -> str | None:
    """The image type from magic bytes; clients and providers both mislabel files."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def b64decode_lenient(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not (Gemini SDKs send URL-safe)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from None


@dataclass(frozen=True)
class StreamedFile:
    """What is known of an upload whose bytes went on to the provider as they arrived.

    `InputFile.data` then holds only its first bytes (enough for the magic bytes and the image
    header); `size` and `sha256` cover every byte; `intact` says the file's own structure was
    checked whole while it went by (a PNG's chunk CRCs up to IEND).
    """

    size: int
    sha256: str
    intact: bool


@dataclass
class InputFile:
    """A file the client uploaded: the bytes, and how it was labelled on the wire."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None
    field: str = "image"
    # Set when the upload streamed through: `data` is then only its head.
    streamed: StreamedFile | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def mime_type(self) -> str:
        """The real type from the bytes, falling back to the label."""
        return sniff_mime(self.data) or self.content_type or "application/octet-stream"

    @property
    def size(self) -> int:
        """The byte count of the whole file, streamed or not."""
        return self.streamed.size if self.streamed is not None else len(self.data)


class UploadBody(Protocol):
    """A client's multipart body on its way to the provider while it still arrives.

    `chunks()` yields it from the start each time it is called (an upstream retry sends it
    again) and ends only once every check of the request passed; it raises when the request
    is refused or the client left, so the provider never sees a complete body then.
    """

    content_type: str
    length: int | None  # the client's Content-Length, when it sent one

    def chunks(self) -> AsyncIterator[bytes]: ...


class Image:
    """One image of an answer: bytes, base64 text, or a URL.

    A provider's base64 text is kept as given and decoded only when somebody
    asks for bytes, so a pass-through never decodes and re-encodes big images.
    `b64_json` may be that text's ASCII bytes (a view into the answer), so that
    an answer relayed unchanged never even copies them into a `str`.
    """

    __slots__ = ("_b64", "_data", "extra", "mime_type", "revised_prompt", "url")

    def __init__(
        self,
        source: bytes | str | None = None,
        *,
        b64_json: str | memoryview | None = None,
        mime_type: str | None = None,
        revised_prompt: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._data: bytes | None = None
        # The provider's base64: text, or (from `wire.jsonbytes.loads_sparing_base64`) its ASCII
        # bytes as a view into the answer, made text only when somebody asks for text.
        self._b64: str | memoryview | None = b64_json
        self.url: str | None = None
        if isinstance(source, bytes | bytearray | memoryview):
            self._data = bytes(source)
        elif isinstance(source, str):
            self.url = source
        self.mime_type = mime_type
        self.revised_prompt = revised_prompt
        self.extra: dict[str, Any] = extra or {}
        if self.mime_type is None and self._data is not None:
            self.mime_type = sniff_mime(self._data)

    @property
    def source(self) -> bytes | str:
        """The bytes, or the URL when the image lives elsewhere."""
        if self.url is not None and self._data is None and self._b64 is None:
            return self.url
        return self.data

    @property
    def has_bytes(self) -> bool:
        return self._data is not None or self._b64 is not None

    @property
    def data(self) -> bytes:
        """The image bytes; raises if this image is only a URL (use `to_binary`)."""
        if self._data is None:
            if self._b64 is None:
                if self.url is not None and self.url.startswith("data:"):
                    self._data = _decode_data_url(self.url)
                    return self._data
                raise ValueError("this image is a URL; call to_binary() to fetch it")
            self._data = b64decode_lenient(self.b64_json())
        return self._data

    def b64_json(self) -> str:
        """Standard base64 of the bytes (the provider's own text when it gave one)."""
        if self._b64 is None:
            self._b64 = base64.b64encode(self.data).decode("ascii")
        elif isinstance(self._b64, memoryview):
            self._b64 = str(self._b64, "ascii", "replace")
        return self._b64

    def b64_bytes(self) -> bytes:
        """`b64_json()` as ASCII bytes, without making the text when it does not exist yet."""
        if isinstance(self._b64, memoryview):
            return bytes(self._b64)
        if self._b64 is not None:
            return self._b64.encode("ascii")
        return base64.b64encode(self.data)

    def b64_held(self) -> bytes | memoryview:
        """`b64_bytes()` without the copy when the base64 is a view of the provider's answer (a store
        writes it out as it is)."""
        return self._b64 if isinstance(self._b64, memoryview) else self.b64_bytes()

    def b64_length(self) -> int:
        """How many characters of base64 the provider sent (0 when it sent none); nothing is copied."""
        return len(self._b64) if self._b64 is not None else 0

    def b64_prefix(self, chars: int) -> str:
        """The first `chars` characters of the provider's base64 ("" when it sent none)."""
        if self._b64 is None:
            return ""
        head = self._b64[:chars]
        return head if isinstance(head, str) else str(head, "ascii", "replace")

    def to_binary(self, *, timeout: float = 60.0) -> bytes:
        """The image bytes, fetching a URL source with httpx when needed."""
        if self.has_bytes or (self.url or "").startswith("data:"):
            return self.data
        import httpx

        assert self.url is not None
        response = httpx.get(self.url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        self._data = response.content
        self.mime_type = self.mime_type or sniff_mime(self._data)
        return self._data

    async def ato_binary(self, *, timeout: float = 60.0) -> bytes:
        """Async twin of `to_binary`."""
        if self.has_bytes or (self.url or "").startswith("data:"):
            return self.data
        import httpx

        assert self.url is not None
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            response = await client.get(self.url)
        response.raise_for_status()
        self._data = response.content
        self.mime_type = self.mime_type or sniff_mime(self._data)
        return self._data

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url and not self.has_bytes else f"mime_type={self.mime_type!r}"
        return f"Image({where})"


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if header.endswith(";base64"):
        return b64decode_lenient(payload)
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


@dataclass
class Usage:
    """Token usage in the GPT-image shape (OpenAI `ImagesUsage`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int | None = None
    output_text_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        def add_opt(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            input_text_tokens=self.input_text_tokens + other.input_text_tokens,
            input_image_tokens=self.input_image_tokens + other.input_image_tokens,
            output_image_tokens=add_opt(self.output_image_tokens, other.output_image_tokens),
            output_text_tokens=add_opt(self.output_text_tokens, other.output_text_tokens),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {
                "image_tokens": self.input_image_tokens,
                "text_tokens": self.input_text_tokens,
            },
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.output_image_tokens is not None or self.output_text_tokens is not None:
            out["output_tokens_details"] = {
                "image_tokens": self.output_image_tokens or 0,
                "text_tokens": self.output_text_tokens or 0,
            }
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Usage:
        inp = raw.get("input_tokens_details") or {}
        out = raw.get("output_tokens_details") or {}
        return cls(
            input_tokens=int(raw.get("input_tokens") or 0),
            output_tokens=int(raw.get("output_tokens") or 0),
            total_tokens=int(raw.get("total_tokens") or 0),
            input_text_tokens=int(inp.get("text_tokens") or 0),
            input_image_tokens=int(inp.get("image_tokens") or 0),
            output_image_tokens=out.get("image_tokens") if out else None,
            output_text_tokens=out.get("text_tokens") if out else None,
        )


# How a field of `ImageRequest` travels on the OpenAI wire (the `metadata` of its dataclass
# field): a core field every model takes, or a provider option a model family may refuse.
_WIRE = "allm_wire"
_CORE = {_WIRE: "core"}
_OPTION = {_WIRE: "option"}


@dataclass
class ImageRequest:
    """One OpenAI Images call, parsed: generate, edit or variation.

    `None` means "not given" (the wire's null and absence alike). `extra`
    keeps, in order, every field the codec does not type, with its value as
    sent (JSON values for generations, strings for multipart), so adapters
    that pass requests through never drop a field a newer model needs.
    """

    operation: Operation
    prompt: str | None = field(default=None, metadata=_CORE)
    model: str | None = field(default=None, metadata=_CORE)
    images: list[InputFile] = field(default_factory=list)
    mask: InputFile | None = None
    n: int | None = field(default=None, metadata=_CORE)
    size: str | None = field(default=None, metadata=_CORE)
    response_format: str | None = field(default=None, metadata=_CORE)
    quality: str | None = field(default=None, metadata=_OPTION)
    style: str | None = field(default=None, metadata=_OPTION)
    background: str | None = field(default=None, metadata=_OPTION)
    output_format: str | None = field(default=None, metadata=_OPTION)
    output_compression: int | None = field(default=None, metadata=_OPTION)
    moderation: str | None = field(default=None, metadata=_OPTION)
    input_fidelity: str | None = field(default=None, metadata=_OPTION)
    stream: bool | None = field(default=None, metadata=_OPTION)
    partial_images: int | None = field(default=None, metadata=_OPTION)
    user: str | None = field(default=None, metadata=_CORE)
    extra: list[tuple[str, Any]] = field(default_factory=list)
    # Files beyond image/mask (e.g. `markup`), kept for pass-through.
    extra_files: list[InputFile] = field(default_factory=list)
    # "json" or "multipart": how the client sent it, so pass-through keeps the form.
    encoding: Literal["json", "multipart"] = "json"
    # The client's JSON body as it came, kept only when sending it on is the same as rendering the
    # request again (`wire.requests.render_body` forwards it; whoever changes a field drops it).
    verbatim: bytes | None = field(default=None, repr=False, compare=False)
    # The client's multipart body, streaming through, kept only when it says exactly this request
    # (the server decides; `wire.requests.render_body` forwards it; whoever changes a field drops it).
    upload: UploadBody | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        return self.n if self.n is not None else 1

    @property
    def wants_stream(self) -> bool:
        return bool(self.stream)

    def size_tuple(self) -> tuple[int, int] | None:
        """(width, height) for a `WxH` size, None for absent or `auto`."""
        return parse_size(self.size)


@dataclass(frozen=True)
class RequestField:
    """One typed field of the OpenAI Images wire, as `ImageRequest` declares it."""

    name: str
    type: type  # str, int or bool: what a JSON value must be, what a multipart string becomes
    option: bool  # a provider option (quality, style, ...) that a model family may not accept


def _request_fields() -> tuple[RequestField, ...]:
    """The table, read once from the dataclass, so a new field is declared in one place."""
    hints = get_type_hints(ImageRequest)
    table = []
    for spec in dataclasses.fields(ImageRequest):
        role = spec.metadata.get(_WIRE)
        if role is None:
            continue  # files, extras and bookkeeping: not one typed wire value
        scalar = [t for t in get_args(hints[spec.name]) if t is not type(None)]
        if len(scalar) != 1 or scalar[0] not in (str, int, bool):
            raise TypeError(
                f"ImageRequest.{spec.name}: a wire field must be `str | None`, `int | None` or `bool | None`"
            )
        table.append(RequestField(spec.name, scalar[0], option=role == "option"))
    return tuple(table)


# The typed fields of the OpenAI Images wire, in declaration order (error messages
# name the first offender). Anything else a client sends is kept, in order, in
# `ImageRequest.extra` and passed on.
REQUEST_FIELDS: tuple[RequestField, ...] = _request_fields()
KNOWN_FIELDS: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS)
TEXT_FIELDS: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS if f.type is str)
INT_FIELDS: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS if f.type is int)
BOOL_FIELDS: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS if f.type is bool)
# Provider options: a model family accepts some of them (capabilities), the rest are refused.
OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS if f.option)


def parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None or size == "auto":
        return None
    w, sep, h = size.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"size {size!r} is not WIDTHxHEIGHT")
    return int(w), int(h)


@dataclass
class RawBody:
    """A provider's answer relayed to the client as it arrives: never parsed, never held whole.

    Used for big pass-through answers the proxy has nothing to change in, so
    memory per request stays at one chunk. `length` is the Content-Length
    the provider declared; a provider that sends less ends the client's
    connection early, exactly as it would without the proxy.
    """

    chunks: AsyncIterator[bytes]
    length: int | None
    content_type: str
    close: Callable[[], Awaitable[None]]
    # Response headers worth relaying (the upstream's x-request-id).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageResponse:
    """What a provider answered, in the OpenAI `ImagesResponse` shape.

    `model` is the provider model that made the images; `requested_model` the
    name the client asked for (an alias), which is what responses echo.
    The GPT-image echo fields (`background`, `output_format`, `quality`,
    `size`) and `usage` are None where the model family has none.
    """

    images: list[Image]
    created: int = field(default_factory=lambda: int(time.time()))
    model: str | None = None
    usage: Usage | None = None
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    # Top-level fields a provider sent that we do not type (`safety_identifier`, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    # Response headers worth relaying (x-request-id of the upstream, ...).
    headers: dict[str, str] = field(default_factory=dict)
    # The provider's body when it already is this OpenAI answer (openai pass-through):
    # the server sends it unchanged, so big base64 bodies are never re-encoded.
    # Whoever changes `images` after the adapter must set it to None.
    raw_json: bytes | None = None


EventKind = Literal["partial_image", "completed", "error"]


@dataclass
class ImageEvent:
    """One event of a streamed answer (docs/spec/openai-images.md §7), provider-neutral.

    `prefix` is `image_generation` or `image_edit`; the wire type is
    `f"{prefix}.{kind}"`. `fields` holds the echo fields (`size`, `quality`,
    `background`, `output_format`, `created_at`) and anything else the
    provider sent, in order.
    """

    kind: EventKind
    prefix: str = "image_generation"
    image: Image | None = None
    partial_image_index: int | None = None
    usage: Usage | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    @property
    def type(self) -> str:
        return "error" if self.kind == "error" else f"{self.prefix}.{self.kind}"


class ImageStream(Protocol):
    """A streamed answer: async iteration over events, and a way to stop early."""

    headers: dict[str, str]

    def __aiter__(self) -> AsyncIterator[ImageEvent]: ...

    async def aclose(self) -> None: ...


@dataclass
class EventStream:
    """An `ImageStream` over an async generator of events."""

    events: AsyncIterator[ImageEvent]
    headers: dict[str, str] = field(default_factory=dict)

    def __aiter__(self) -> AsyncIterator[ImageEvent]:
        return self.events

    async def aclose(self) -> None:
        closer = getattr(self.events, "aclose", None)
        if closer is not None:
            await closer()


# What an adapter answers: a whole answer, a stream of events, or (only when the call's
# delivery allows it) a big provider answer relayed as it arrives.
ImageResult = ImageResponse | ImageStream | RawBody
