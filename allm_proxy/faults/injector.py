"""Deciding faults: one place, called by the engine before any adapter.

    injector = FaultInjector(parse_faults("server_error; p=0.3"), seed=7)
    decision = injector.decide("generate", stream=False, session="s1", header=None)

Faults come from the request (the `X-ALLM-Fault` header, for its session)
and from the server-wide list (`serve --fault`, `[[faults]]`, `POST
/allm/faults`, the pytest marker). They are tried in that order; the first
that fires answers the request, so at most one fault applies to a request.

With a seed, whether a fault fires is a hash of (seed, session, k-th
request of that session, which fault): the same seed and the same requests
per session give the same faults, whatever other sessions do in between.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .counters import Counters, MemoryCounters
from .grammar import Fault, FaultSpecError, parse_faults
from .kinds import REPLACING, STREAM_KINDS

if TYPE_CHECKING:
    from ..adapters.fake import FakeImages

HEADER = "X-ALLM-Fault"
_OPERATION_NAMES = {"generate": "generations", "edit": "edits", "variation": "variations"}
_PARSED_HEADERS = 256  # distinct header values kept parsed


@dataclass(frozen=True)
class FaultDecision:
    """The fault that fired for one request, and where it came from (`header` or `server`)."""

    fault: Fault
    origin: str

    @property
    def kind(self) -> str:
        return self.fault.kind

    @property
    def replaces_answer(self) -> bool:
        """True when the provider is never asked (and nothing is recorded)."""
        return self.kind in REPLACING

    @property
    def origin_text(self) -> str:
        return f"the {HEADER} header" if self.origin == "header" else "the proxy's fault list"


class FaultInjector:
    """The server-wide fault list, the seed, and the per-session counts that `times` and the seed use."""

    def __init__(
        self, faults: Iterable[str | Fault] = (), *, seed: int | None = None, counters: Counters | None = None
    ) -> None:
        self._faults = parse_faults(list(faults))
        self.seed = seed
        self._counters: Counters = counters or MemoryCounters()
        self._generation = 0
        self._random = random.Random()
        self._lock = threading.Lock()
        self._headers: OrderedDict[str, tuple[Fault, ...]] = OrderedDict()
        self._fake: FakeImages | None = None

    @property
    def fake(self) -> FakeImages:
        """The plain fake provider (never a user's script) that renders answers a fault cuts."""
        if self._fake is None:
            from ..adapters.fake import FakeImages

            self._fake = FakeImages()
        return self._fake

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The server-wide list."""
        return self._faults

    def set(self, faults: Iterable[str | Fault]) -> tuple[Fault, ...]:
        """Replace the server-wide list; every count starts afresh. Raises FaultSpecError."""
        parsed = parse_faults(list(faults))
        with self._lock:
            self._faults = parsed
            self._generation += 1
        return parsed

    def clear(self) -> None:
        self.set(())

    def parse_header(self, value: str) -> tuple[Fault, ...]:
        """The faults an `X-ALLM-Fault` value names; FaultSpecError when it does not parse."""
        with self._lock:
            cached = self._headers.get(value)
            if cached is not None:
                self._headers.move_to_end(value)
                return cached
        parsed = parse_faults(value, where=HEADER)
        with self._lock:
            self._headers[value] = parsed
            while len(self._headers) > _PARSED_HEADERS:
                self._headers.popitem(last=False)
        return parsed

    def decide(self, operation: str, *, stream: bool, session: str, header: str | None) -> FaultDecision | None:
        """The fault that answers this request, or None. Raises FaultSpecError for a bad header."""
        from_header = self.parse_header(header) if header else ()
        with self._lock:
            server, generation = self._faults, self._generation
        if not from_header and not server:
            return None
        scope = f"fault:{generation}:{session}"
        k = self._counters.incr(f"{scope}:requests")
        candidates = [("header", f) for f in from_header] + [("server", f) for f in server]
        for index, (origin, fault) in enumerate(candidates):
            if not _applies(fault, operation, stream):
                continue
            if fault.p < 1.0 and self._roll(session, k, index, fault) >= fault.p:
                continue
            if fault.times is not None:
                who = f"h:{fault}" if origin == "header" else f"s:{index - len(from_header)}"
                if self._counters.incr(f"{scope}:{who}:times") > fault.times:
                    continue
            return FaultDecision(fault, origin)
        return None

    def _roll(self, session: str, k: int, index: int, fault: Fault) -> float:
        if self.seed is None:
            return self._random.random()
        digest = hashlib.sha256(f"{self.seed}\x00{session}\x00{k}\x00{index}\x00{fault}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _applies(fault: Fault, operation: str, stream: bool) -> bool:
    if fault.on is not None and fault.on != _OPERATION_NAMES.get(operation):
        return False
    if fault.kind in STREAM_KINDS:
        return stream
    if fault.kind == "truncate":
        return not stream
    return True


__all__ = ["HEADER", "FaultDecision", "FaultInjector", "FaultSpecError"]
