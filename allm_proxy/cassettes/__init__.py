"""Record-then-replay of upstream traffic as vcrpy cassettes.

`CassetteLibrary` is the engine-level entry point: `transport(inner)` wraps
the real upstream transport, `activate(name)` switches cassettes in-process,
`flush()` writes what is pending (the server's `/allm/cassette` route switches
cassettes over HTTP: allm_proxy/server/control.py).
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
