"""Cassette file formats, chosen by file extension: `.json` (fast) or `.yaml` / `.yml` (vcrpy's own).

Both are vcrpy's cassette format version 1; they differ in how fast a big
cassette loads and what plain vcrpy needs to read it:

- ``.json``: `jsonformat`, one interaction per line, loads at memory speed
  (50 interactions of 3.2 MB in about 0.1 s). Plain vcrpy reads it with
  ``serializer="json"``. Binary bodies are stored as base64 text.
- ``.yaml``: vcrpy's YAML serializer over libyaml (CSafeLoader / CDumper), the
  default of vcrpy and pytest-recording; binary bodies are ``!!binary``.
  Loading is libyaml-bound: the same 160 MB cassette takes about 2 s.

Writes are per interaction: each interaction is serialized once and cached,
so saving after every recording costs a file write, not a re-serialization.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from vcr.request import Request
from vcr.serialize import CASSETTE_FORMAT_VERSION, deserialize
from vcr.serializers import compat, yamlserializer

from . import jsonformat
from .jsonformat import CassetteFormatError, Loaded


@dataclass(frozen=True)
class CassetteFormat:
    name: str
    dump_interaction: Callable[[Request, dict[str, Any]], str]
    document: Callable[[list[str], dict[str, Any] | None], Iterator[str]]
    load: Callable[[Path], Loaded]


def _yaml_interaction(request: Request, response: dict[str, Any]) -> str:
    # vcrpy's own conversion (bytes -> str where UTF-8, else !!binary) on copies:
    # compat converts in place and the in-memory response keeps its bytes.
    item = {
        "request": compat.convert_to_unicode(request._to_dict()),
        "response": compat.convert_to_unicode({**response, "body": dict(response.get("body") or {})}),
    }
    text: str = yamlserializer.serialize([item])
    return text


def _yaml_document(chunks: list[str], metadata: dict[str, Any] | None = None) -> Iterator[str]:
    # The layout PyYAML gives vcrpy's dict (keys sorted, an indentless sequence).
    if not chunks:
        yield "interactions: []\n"
    else:
        yield "interactions:\n"
        yield from chunks
    if metadata:
        yield yamlserializer.serialize({"metadata": metadata})
    yield f"version: {CASSETTE_FORMAT_VERSION}\n"


def _yaml_load(path: Path) -> Loaded:
    text = path.read_text(encoding="utf-8")
    try:
        loaded = deserialize(text, yamlserializer)
    except yaml.YAMLError as exc:
        raise CassetteFormatError(f"not valid YAML: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise CassetteFormatError(f"not a vcrpy cassette ({exc!r})") from None
    requests, responses, *rest = loaded
    metadata = dict(rest[0]) if rest else {}
    return list(requests), [jsonformat.response_from_dict(r) for r in responses], metadata


JSON = CassetteFormat("json", jsonformat.dump_interaction, jsonformat.document, jsonformat.load)
YAML = CassetteFormat("yaml", _yaml_interaction, _yaml_document, _yaml_load)
FORMATS: dict[str, CassetteFormat] = {".json": JSON, ".yaml": YAML, ".yml": YAML}


def format_for(path: str | Path) -> CassetteFormat:
    """The format of a cassette path, by extension; ValueError for any other."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise ValueError(f"cassette {str(path)!r} has no known extension; use one of {', '.join(FORMATS)}") from None
