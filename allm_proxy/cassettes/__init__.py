"""Record-then-replay of upstream traffic as vcrpy cassettes (being written)."""

from __future__ import annotations

from typing import Any

import httpx

from ..config import CassetteSettings


class CassetteLibrary:
    """Engine-level cassette state: loaded cassettes, replay cursors, the active cassette."""

    def __init__(self, settings: CassetteSettings) -> None:
        self.settings = settings

    def transport(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def control_routes(self) -> list[Any]:
        return []
