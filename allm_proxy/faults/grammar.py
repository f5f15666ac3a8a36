"""The fault grammar: ``KIND[; key=value]...``, several faults separated by ``,``.

    parse_faults("rate_limit; times=1, latency; ms=300; p=0.5")
    # (Fault(kind='rate_limit', times=1), Fault(kind='latency', ms=300, p=0.5))

Keys: `p` (probability 0-1, default 1), `times` (at most N times per session,
default unlimited), `ms` (latency, slow, timeout; for rate_limit the
retry-after it announces), `after` (events before a stream cut, default 1),
`on` (`generations`, `edits` or `variations`; default all). An unknown kind
or key, or a bad value, is a `FaultSpecError` naming what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .kinds import KINDS, MS_KINDS, STREAM_KINDS

ON_VALUES = ("generations", "edits", "variations")
KEYS = ("p", "times", "ms", "after", "on")


class FaultSpecError(ValueError):
    """A fault spec that does not parse; the message names what is allowed."""


@dataclass(frozen=True)
class Fault:
    """One parsed fault. `str(fault)` gives it back in the grammar, canonically."""

    kind: str
    p: float = 1.0
    times: int | None = None
    ms: int | None = None
    after: int = 1
    on: str | None = None

    def __str__(self) -> str:
        parts = [self.kind]
        for name in KEYS:
            value = getattr(self, name)
            if value != _DEFAULTS[name]:
                parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        return "; ".join(parts)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, where: str = "fault") -> Fault:
        """A fault from a table (a config file's ``[[faults]]``): ``{"kind": "rate_limit", "times": 1}``."""
        raw = dict(raw)
        kind = raw.pop("kind", None)
        if not isinstance(kind, str):
            raise FaultSpecError(f"{where}: needs kind = one of {', '.join(KINDS)}")
        return _build(kind, {str(k): v for k, v in raw.items()}, where)


_DEFAULTS = {f.name: f.default for f in fields(Fault)}


def parse_fault(text: str, *, where: str = "fault") -> Fault:
    """One fault, ``KIND[; key=value]...``."""
    kind, *pairs = [piece.strip() for piece in text.split(";")]
    values: dict[str, Any] = {}
    for pair in pairs:
        if not pair:
            continue
        key, sep, value = (s.strip() for s in pair.partition("="))
        if not sep or not key:
            raise FaultSpecError(f"{where} {text.strip()!r}: {pair!r} is not key=value (keys: {', '.join(KEYS)})")
        if key in values:
            raise FaultSpecError(f"{where} {text.strip()!r}: {key} is given twice")
        values[key] = value
    return _build(kind, values, where)


def parse_faults(text: str | Iterable[str | Fault] | None, *, where: str = "fault") -> tuple[Fault, ...]:
    """Faults from ``"a; k=v, b"`` or a list of specs (each may hold several, ``,``-separated)."""
    if text is None:
        return ()
    items = [text] if isinstance(text, str) else list(text)
    out: list[Fault] = []
    for item in items:
        if isinstance(item, Fault):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise FaultSpecError(f"{where}: {item!r} is not a fault spec string like 'rate_limit; times=1'")
        out += [parse_fault(piece, where=where) for piece in item.split(",") if piece.strip()]
    return tuple(out)


def _build(kind: str, values: Mapping[str, Any], where: str) -> Fault:
    label = f"{where} {kind!r}"
    if kind not in KINDS:
        raise FaultSpecError(f"{label}: unknown fault kind; allowed kinds: {', '.join(KINDS)}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise FaultSpecError(f"{label}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    if "ms" in values and kind not in MS_KINDS:
        raise FaultSpecError(f"{label}: ms applies to {', '.join(MS_KINDS)} only")
    if "after" in values and kind not in STREAM_KINDS:
        raise FaultSpecError(f"{label}: after applies to {', '.join(STREAM_KINDS)} only")
    parsed: dict[str, Any] = {}
    if "p" in values:
        p = _number(values["p"], "p", label, float)
        if not 0.0 <= p <= 1.0:
            raise FaultSpecError(f"{label}: p must be between 0 and 1, got {values['p']}")
        parsed["p"] = p
    for key, least in (("times", 1), ("ms", 0), ("after", 0)):
        if key in values:
            number = _number(values[key], key, label, int)
            if number < least:
                raise FaultSpecError(f"{label}: {key} must be an integer of at least {least}, got {values[key]}")
            parsed[key] = number
    if "on" in values:
        if values["on"] not in ON_VALUES:
            raise FaultSpecError(f"{label}: on must be one of {', '.join(ON_VALUES)}, got {values['on']!r}")
        parsed["on"] = values["on"]
    return Fault(kind=kind, **parsed)


def _number(raw: Any, key: str, label: str, kind: type[int] | type[float]) -> Any:
    """An int or float from a spec's text or a config table's value; bools and NaN are refused."""
    if isinstance(raw, bool):
        raise FaultSpecError(f"{label}: {key} must be a number, got {raw}")
    try:
        number = kind(raw) if kind is float or not isinstance(raw, float) else raw
    except (TypeError, ValueError):
        raise FaultSpecError(
            f"{label}: {key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    if kind is int and (not isinstance(number, int) or isinstance(raw, float)):
        raise FaultSpecError(f"{label}: {key} must be an integer, got {raw!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise FaultSpecError(f"{label}: {key} must be a finite number, got {raw!r}")
    return number
