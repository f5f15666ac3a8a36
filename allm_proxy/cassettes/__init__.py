"""Record-then-replay of upstream traffic as vcrpy cassettes.

`CassetteLibrary` is the engine-level entry point: `transport(inner)` wraps
the real upstream transport, `activate(name)` switches cassettes in-process,
`flush()` writes what is pending (the server's `/allm/cassette` route switches
cassettes over HTTP: allm_proxy/server/control.py).
Files are ordinary vcrpy cassettes (format version 1): `.json` (fast, one
interaction per line) or `.yaml` (vcrpy's default serializer).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .filters import SecretFilter
    from .library import CassetteLibrary
    from .persister import AtomicPersister, write_atomic
    from .tape import Tape
    from .transport import CassetteTransport

# Imported when first asked for, not with the package: vcrpy imports every HTTP library it can
# patch (requests, urllib3, httpx2, ...: 230 modules, 10 MB), and a proxy that keeps no cassette
# needs none of it (the journal's secret filter and the inspector's summaries are its only users).
_EXPORTS = {
    "AtomicPersister": ".persister",
    "CassetteLibrary": ".library",
    "CassetteTransport": ".transport",
    "SecretFilter": ".filters",
    "Tape": ".tape",
    "write_atomic": ".persister",
}
__all__ = ["AtomicPersister", "CassetteLibrary", "CassetteTransport", "SecretFilter", "Tape", "write_atomic"]


if not TYPE_CHECKING:  # to mypy the names are the imports above: a misspelt one stays an error

    def __getattr__(name: str) -> Any:
        if name not in _EXPORTS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = globals()[name] = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        return value  # kept in the module: the next lookup is an ordinary one


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
