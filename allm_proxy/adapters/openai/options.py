"""The openai adapter's options (`[providers.openai]`, `image_adapter_opts`), checked at build time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..options import AdapterOptions

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_RETRIES_LIMIT = 10


@dataclass(frozen=True)
class OpenAIOptions(AdapterOptions):
    """How the adapter reaches OpenAI.

    - `base_url`: the API root the `/images/...` paths go under
      (default https://api.openai.com/v1; any OpenAI-compatible server works).
    - `max_retries`: retries of connection failures, 408/409/429 and 5xx
      answers, honouring `retry-after-ms` / `retry-after`. Default 0: the
      SDKs already retry, and retrying here too would multiply their attempts.
    """

    provider: ClassVar[str] = "openai"

    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 0

    @classmethod
    def _values(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if raw.get("base_url"):
            base_url = str(raw["base_url"]).rstrip("/")
            if not base_url.startswith(("http://", "https://")):
                raise ValueError(f"openai option base_url = {base_url!r} must start with http:// or https://")
            values["base_url"] = base_url
        if raw.get("max_retries") is not None:
            retries = raw["max_retries"]
            valid = isinstance(retries, int) and not isinstance(retries, bool)
            if not valid or not 0 <= retries <= MAX_RETRIES_LIMIT:
                raise ValueError(
                    f"openai option max_retries = {retries!r} must be an integer, 0 to {MAX_RETRIES_LIMIT}"
                )
            values["max_retries"] = retries
        return values
