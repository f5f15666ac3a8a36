"""No secrets on disk: what is removed from requests and responses before they are kept.

Removed by name: credential and identity headers (`Authorization`,
`x-goog-api-key`, `api-key`, `OpenAI-Organization`, `OpenAI-Project`,
cookies), `key=` query parameters, and whatever the settings add. Then every
value so removed, and the key the call used, is replaced by ``<redacted>``
wherever else it appears (URLs, bodies, other headers): providers echo keys in
error messages. The same filter runs on incoming requests before matching, so
a recorded request and a replayed one are compared without their secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..config import CassetteSettings
from .bodies import as_bytes

if TYPE_CHECKING:
    from vcr.request import Request

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-goog-api-key",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "set-cookie",
        "x-allm-api-key",
        "x-allm-access-token",
    }
)
SECRET_QUERY = frozenset({"key", "api_key", "api-key"})
REDACTED = "<redacted>"
# Shorter values are too likely to occur by chance in a body (and too short to be a key).
MIN_SECRET_LENGTH = 8


@dataclass(frozen=True)
class SecretFilter:
    """Removes secrets from vcrpy requests and response dicts."""

    headers: frozenset[str] = SECRET_HEADERS
    query: frozenset[str] = SECRET_QUERY
    body_fields: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: CassetteSettings) -> SecretFilter:
        return cls(
            headers=SECRET_HEADERS | {h.lower() for h in settings.filter_headers},
            query=SECRET_QUERY | set(settings.filter_query),
            body_fields=frozenset(settings.filter_body_fields),
        )

    def request(self, request: Request, known_secrets: Iterable[str | None] = ()) -> tuple[Request, list[str]]:
        """A filtered copy of `request`, and the secret values it carried (for `response`)."""
        # vcrpy where a request or a response is filtered, not at import (see cassettes/__init__).
        from vcr.filters import replace_query_parameters
        from vcr.request import Request

        secrets = [s for s in known_secrets if s]
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if name.lower() in self.headers:
                secrets += _header_secrets(value)
            else:
                headers[name] = value
        clean = Request(request.method, request.uri, as_bytes(request.body), headers)
        pairs = parse_qsl(clean.parsed_uri.query, keep_blank_values=True)
        query = [(k, v) for k, v in pairs if k in self.query]
        if query:
            secrets += [v for _, v in query]
            clean = replace_query_parameters(clean, [(k, None) for k, _ in query])
        if self.body_fields:
            clean.body = _without_fields(clean.headers.get("content-type"), clean.body, self.body_fields)
        secrets = _usable(secrets)
        if secrets:
            clean.uri = _redact_text(clean.uri, secrets)
            clean.headers = {k: _redact_text(v, secrets) for k, v in clean.headers.items()}
            clean.body = _redact_bytes(clean.body, secrets)
        return clean, secrets

    def url(self, url: str, known_secrets: Iterable[str | None] = ()) -> str:
        """`url` as `request` would leave it: without secret query parameters, known secrets redacted."""
        if "?" in url:
            from vcr.request import Request

            clean, _ = self.request(Request("GET", url, b"", {}), known_secrets)
            return str(clean.uri)
        # No query: only the redaction applies, and it needs no vcrpy request (this runs for every upstream call).
        return _redact_text(url, _usable([s for s in known_secrets if s]))

    def response(self, response: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
        """The response dict to keep: decompressed, without secret headers, secrets redacted."""
        from vcr.filters import decode_response

        response = decode_response(response)
        headers = {
            name: [_redact_text(v, secrets) for v in values]
            for name, values in response["headers"].items()
            if name.lower() not in self.headers
        }
        body = dict(response["body"])
        if isinstance(body.get("string"), bytes):
            body["string"] = _redact_bytes(body["string"], secrets)
        return {**response, "headers": headers, "body": body}


def _header_secrets(value: str) -> list[str]:
    scheme, _, token = value.partition(" ")
    return [value, token.strip()] if scheme.lower() in ("bearer", "basic", "token") and token else [value]


def _usable(secrets: list[str]) -> list[str]:
    # Longest first, so a token is redacted before a value that contains it is looked for.
    return sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def _redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_bytes(body: bytes | None, secrets: list[str]) -> bytes | None:
    if not body:
        return body
    for secret in secrets:
        raw = secret.encode("utf-8")
        if raw in body:
            body = body.replace(raw, REDACTED.encode())
    return body


def _without_fields(content_type: str | None, body: bytes | None, fields: frozenset[str]) -> bytes | None:
    """A JSON body without the named fields (at any depth); other bodies unchanged."""
    if not body or "json" not in (content_type or "").lower():
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    cleaned, changed = _drop(data, fields)
    return json.dumps(cleaned, ensure_ascii=False).encode("utf-8") if changed else body


def _drop(data: Any, fields: frozenset[str]) -> tuple[Any, bool]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        changed = False
        for key, value in data.items():
            if key in fields:
                changed = True
                continue
            out[key], sub = _drop(value, fields)
            changed = changed or sub
        return out, changed
    if isinstance(data, list):
        items = [_drop(v, fields) for v in data]
        return [v for v, _ in items], any(c for _, c in items)
    return data, False
