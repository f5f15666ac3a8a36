"""A spy on `os.sendfile`: what the connection layer sent from memory files (`server/file_bytes`)."""

from __future__ import annotations

import os

import pytest


class Sendfiles:
    """Counts `os.sendfile` calls: for each, how much it was asked to send and how much it sent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []
        real = os.sendfile

        def counted(out_fd: int, in_fd: int, offset: int, count: int) -> int:
            sent = real(out_fd, in_fd, offset, count)
            self.calls.append((count, sent))
            return sent

        monkeypatch.setattr(os, "sendfile", counted)
