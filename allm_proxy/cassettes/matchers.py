"""Request matching that understands image requests, as keys (for lookup) and as vcrpy matchers (to explain).

Each matcher has two faces that agree: `key(request)`, a hashable normal form,
so replay finds a request in a dict in O(1) however big the cassette; and a
vcrpy-style function that raises AssertionError with the difference, used only
after a miss to say which matchers failed against the nearest recording.

- ``body``: JSON compared as data (key order and whitespace never matter);
  multipart compared by fields and each file's sha256 (the random boundary,
  file names and part order across names never matter); form bodies as
  sorted pairs; anything else by its bytes.
- ``headers``: the request headers minus volatile and transport ones.
- ``method``, ``scheme``, ``host``, ``port``, ``path``, ``query``, ``uri``,
  ``raw_body``: vcrpy's meanings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from vcr import matchers as vcr_matchers
from vcr.request import Request

from ..wire.multipart import is_multipart, parse_multipart
from .bodies import as_bytes, json_data

VOLATILE_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "user-agent",
        "accept-encoding",
        "connection",
        "host",
        "date",
        "x-request-id",
        "idempotency-key",
        "traceparent",
        "tracestate",
    }
)
MAX_DIFFS = 5
EXCERPT = 80

BodyForm = tuple[str, Any]


@dataclass(frozen=True)
class Matcher:
    name: str
    key: Callable[[Request], Hashable]
    check: Callable[[Request, Request], None]


def body_form(request: Request) -> BodyForm:
    """The body as comparable data: ("json", data), ("multipart", parts), ("form", pairs), ("bytes", b)."""
    body = as_bytes(request.body)
    if not body:
        return ("empty", None)
    content_type = request.headers.get("content-type")
    if is_multipart(content_type):
        try:
            parts = parse_multipart(content_type, body, recorded=True)
        except ValueError:
            return ("bytes", body)
        fields = [
            (p.name, "file", hashlib.sha256(p.data).hexdigest())
            if p.is_file
            else (p.name, "field", p.data.decode("utf-8", "replace"))
            for p in parts
        ]
        # Order across names is the client's business; order within a name
        # (image[] of an edit) is meaning. sorted() is stable.
        return ("multipart", tuple(sorted(fields, key=lambda f: f[0])))
    if "x-www-form-urlencoded" in (content_type or "").lower():
        return ("form", tuple(sorted(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))))
    try:
        return ("json", json_data(content_type, body))
    except ValueError:
        return ("bytes", body)


def _body_key(request: Request) -> Hashable:
    kind, value = body_form(request)
    if kind == "json":
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return ("json", hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    if kind == "bytes":
        return ("bytes", hashlib.sha256(value).hexdigest())
    return (kind, value)


def body(r1: Request, r2: Request) -> None:
    """vcrpy matcher: bodies equal as data (r1 the request made, r2 the recorded one)."""
    if _body_key(r1) != _body_key(r2):
        raise AssertionError(describe_body_difference(body_form(r1), body_form(r2)))


def raw_body(r1: Request, r2: Request) -> None:
    b1, b2 = as_bytes(r1.body), as_bytes(r2.body)
    if b1 != b2:
        raise AssertionError(f"the bodies differ ({len(b1)} bytes, {len(b2)} recorded)")


def _stable_headers(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            (k.lower(), v)
            for k, v in request.headers.items()
            if k.lower() not in VOLATILE_HEADERS and not k.lower().startswith("x-stainless")
        )
    )


def headers(r1: Request, r2: Request) -> None:
    h1, h2 = dict(_stable_headers(r1)), dict(_stable_headers(r2))
    if h1 != h2:
        diffs = [
            f"{k}: {h1.get(k)!r} != recorded {h2.get(k)!r}" for k in sorted(set(h1) | set(h2)) if h1.get(k) != h2.get(k)
        ]
        raise AssertionError("; ".join(diffs[:MAX_DIFFS]))


def _path(request: Request) -> str:
    return request.path or "/"


def _uri(request: Request) -> str:
    # As vcrpy's uri matcher: a bare-host URL and the same URL with "/" are one.
    if request.parsed_uri.path:
        return str(request.uri)
    return str(request.parsed_uri._replace(path="/").geturl())


MATCHERS: dict[str, Matcher] = {
    m.name: m
    for m in (
        Matcher("method", lambda r: r.method, vcr_matchers.method),  # case-sensitive (RFC 9110), as vcrpy
        Matcher("scheme", lambda r: r.scheme, vcr_matchers.scheme),
        Matcher("host", lambda r: r.host, vcr_matchers.host),
        Matcher("port", lambda r: r.port, vcr_matchers.port),
        Matcher("path", _path, vcr_matchers.path),
        Matcher("query", lambda r: tuple(r.query), vcr_matchers.query),
        Matcher("uri", _uri, vcr_matchers.uri),
        Matcher("body", _body_key, body),
        Matcher("raw_body", lambda r: hashlib.sha256(as_bytes(r.body)).hexdigest(), raw_body),
        Matcher("headers", _stable_headers, headers),
    )
}


def build(match_on: Sequence[str]) -> tuple[Matcher, ...]:
    """The matchers named in `match_on`; ValueError naming the valid ones for anything else."""
    unknown = [name for name in match_on if name not in MATCHERS]
    if unknown:
        raise ValueError(f"unknown cassette matcher(s) {unknown}; valid: {', '.join(MATCHERS)}")
    if not match_on:
        raise ValueError(f"match_on is empty; name at least one of {', '.join(MATCHERS)}")
    return tuple(MATCHERS[name] for name in match_on)


def request_key(request: Request, matchers: Sequence[Matcher]) -> tuple[Hashable, ...]:
    """The request's normal form under `matchers`: equal keys iff every matcher matches."""
    return tuple(m.key(request) for m in matchers)


def nearest(
    request: Request, recorded: Sequence[Request], matchers: Sequence[Matcher]
) -> tuple[int, list[str], list[tuple[str, str]]] | None:
    """The recorded request matching on the most matchers: (index, passed, [(failed, why)]).

    A linear scan with vcrpy's own evaluation; only ever run to explain a miss.
    """
    functions = [_named(m) for m in matchers]
    best: tuple[int, list[str], list[tuple[str, str]]] | None = None
    for index, candidate in enumerate(recorded):
        passed, failed = vcr_matchers.get_matchers_results(request, candidate, functions)
        if best is None or len(passed) > len(best[1]):
            best = (index, passed, [(name, str(why or "")) for name, why in failed])
    return best


def _named(matcher: Matcher) -> Callable[[Request, Request], None]:
    def check(r1: Request, r2: Request) -> None:
        matcher.check(r1, r2)

    check.__name__ = matcher.name  # vcrpy reports matchers by __name__
    return check


def describe_body_difference(new: BodyForm, recorded: BodyForm) -> str:
    """How two bodies differ, in a few lines a person can act on."""
    if new[0] != recorded[0]:
        return f"this request's body is {new[0]}, the recorded one is {recorded[0]}"
    kind = new[0]
    if kind == "json":
        diffs = _json_diffs(new[1], recorded[1], "")
    elif kind == "multipart":
        diffs = _field_diffs(new[1], recorded[1])
    elif kind == "form":
        diffs = _field_diffs(tuple((k, "field", v) for k, v in new[1]), tuple((k, "field", v) for k, v in recorded[1]))
    else:
        diffs = [f"{len(new[1] or b'')} bytes, {len(recorded[1] or b'')} recorded"]
    shown = diffs[:MAX_DIFFS] + ([f"... and {len(diffs) - MAX_DIFFS} more"] if len(diffs) > MAX_DIFFS else [])
    return "; ".join(shown) or "the bodies differ"


def _json_diffs(new: Any, recorded: Any, where: str) -> list[str]:
    if isinstance(new, dict) and isinstance(recorded, dict):
        out: list[str] = []
        for key in sorted(set(new) | set(recorded), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in recorded:
                out.append(f"{path}: {_excerpt(new[key])} not in the recorded request")
            elif key not in new:
                out.append(f"{path}: missing (recorded {_excerpt(recorded[key])})")
            else:
                out += _json_diffs(new[key], recorded[key], path)
        return out
    if isinstance(new, list) and isinstance(recorded, list) and len(new) == len(recorded):
        pairs = enumerate(zip(new, recorded, strict=True))
        return [d for i, (a, b) in pairs for d in _json_diffs(a, b, f"{where}[{i}]")]
    if new != recorded:
        return [f"{where or 'body'}: {_excerpt(new)} != recorded {_excerpt(recorded)}"]
    return []


def _field_diffs(new: tuple[Any, ...], recorded: tuple[Any, ...]) -> list[str]:
    def grouped(fields: tuple[Any, ...]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, kind, value in fields:
            shown = f"file sha256:{value[:12]}" if kind == "file" else _excerpt(value)
            out.setdefault(name, []).append(shown)
        return out

    a, b = grouped(new), grouped(recorded)
    return [
        f"{name}: {', '.join(a.get(name, ['missing']))} != recorded {', '.join(b.get(name, ['missing']))}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


def _excerpt(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    if len(text) > EXCERPT:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        return f"{text[:EXCERPT]}... ({len(text)} chars, sha256:{digest})"
    return text
