"""Record-then-replay of upstream traffic as vcrpy cassettes.

`CassetteLibrary` is the engine-level entry point: `transport(inner)` wraps
the real upstream transport, `activate(name)` switches cassettes in-process,
`control_routes()` does it over HTTP, `flush()` writes what is pending.
Files are ordinary vcrpy cassettes (format version 1): `.json` (fast, one
interaction per line) or `.yaml` (vcrpy's default serializer).
"""

from __future__ import annotations

from .filters import SecretFilter
from .library import CassetteLibrary
from .persister import AtomicPersister, write_atomic
from .tape import Tape
from .transport import CassetteTransport

__all__ = ["AtomicPersister", "CassetteLibrary", "CassetteTransport", "SecretFilter", "Tape", "write_atomic"]
