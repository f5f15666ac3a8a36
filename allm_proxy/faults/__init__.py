"""Fault injection: break answers on purpose, in every provider and mode.

    engine = Engine(faults=FaultInjector(["rate_limit; times=1"], seed=7))

A fault is `KIND[; key=value]...` (grammar.py, kinds.py). The engine asks
`effects.intercept` once per image request, before any adapter; the server
shapes the HTTP answer for `slow`, `truncate` and `reset` (http.py) and
serves `/allm/faults` (control.py).
"""

from .grammar import Fault, FaultSpecError, parse_fault, parse_faults
from .injector import HEADER, FaultDecision, FaultInjector
from .kinds import KINDS

__all__ = [
    "HEADER",
    "KINDS",
    "Fault",
    "FaultDecision",
    "FaultInjector",
    "FaultSpecError",
    "parse_fault",
    "parse_faults",
]
