"""Registering a test's own adapter for that test only (`register_adapter` is process-wide, and
a name left behind shows in every later test's list of known adapters)."""

from __future__ import annotations

import pytest

from allm_proxy import AdapterInfo
from allm_proxy.adapters import _REGISTRY


def register_for_test(monkeypatch: pytest.MonkeyPatch, info: AdapterInfo) -> None:
    """`register_adapter(info)`, undone when the test ends."""
    monkeypatch.setitem(_REGISTRY._loaded, info.name, info)
