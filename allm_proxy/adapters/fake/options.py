"""The fake adapter's options (`[providers.fake]`, `image_adapter_opts`), checked at build time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..options import AdapterOptions

SCRIPT_KEYS = ("script", "scripts", "script_path")


@dataclass(frozen=True)
class FakeOptions(AdapterOptions):
    """What the fake provider takes.

    - `script` / `scripts` (a `FakeScript` or a list of replies) or `script_path`
      (a YAML/JSON file of replies): at most one; see `script.FakeScript`.
    - `cache_entries`, `cache_bytes`: how many drawn images the fake keeps for
      repeated prompts, and how many bytes they may take together.
    """

    provider: ClassVar[str] = "fake"

    script: Any = None
    scripts: Any = None
    script_path: str | None = None
    cache_entries: int = 64
    cache_bytes: int = 256 * 1024 * 1024

    @classmethod
    def _values(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        values = super()._values(raw)
        for key in ("cache_entries", "cache_bytes"):
            if key in values:
                values[key] = int(values[key])
        return values
