"""Faults in the TOML config file: ``[[faults]]`` tables and a top-level ``fault_seed``.

fault_seed = 7

[[faults]]
kind = "latency"
ms = 300
p = 0.5

[[faults]]
kind = "rate_limit"
times = 1
on = "edits"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .grammar import Fault, FaultSpecError


def faults_from_mapping(raw: Mapping[str, Any], *, source: str = "config") -> tuple[tuple[Fault, ...], int | None]:
    """The `[[faults]]` list and `fault_seed` of a parsed config file; FaultSpecError (a ValueError) if bad."""
    tables = raw.get("faults", [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise FaultSpecError(f'{source}: faults must be [[faults]] tables, e.g. [[faults]] kind = "rate_limit"')
    faults = tuple(Fault.from_mapping(table, where=f"{source} [[faults]] #{i + 1}") for i, table in enumerate(tables))
    seed = raw.get("fault_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FaultSpecError(f"{source}: fault_seed must be an integer, got {seed!r}")
    return faults, seed
