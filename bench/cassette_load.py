"""Load one cassette in a fresh process: wall time and peak memory above the baseline.

    python -m bench.cassette_load PATH     # prints {"load_s": ..., "peak_mb": ..., "api": ...}

Imports happen before the baseline is taken, so only the load itself counts.
Peak memory is VmHWM (reset with /proc/self/clear_refs) minus the RSS before
the load.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import reset_peak


def loader() -> tuple[str, Callable[[Path], Any]]:
    """What the proxy runs when a request first needs a cassette: `CassetteLibrary.tape(path)`."""
    from allm_proxy import cassettes
    from allm_proxy.config import CassetteSettings

    library_cls = getattr(cassettes, "CassetteLibrary", None)
    if library_cls is not None and callable(getattr(library_cls, "tape", None)):

        def load(path: Path) -> Any:
            settings = CassetteSettings(path=str(path), record_mode="none", allow_playback_repeats=True)
            return library_cls(settings).tape(path.resolve())

        return "allm_proxy.cassettes.CassetteLibrary.tape", load
    # Before the cassette layer has a loader: what vcrpy does with the same file.
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer

    return "vcr FilesystemPersister (allm_proxy.cassettes has no loader)", (
        lambda path: FilesystemPersister.load_cassette(str(path), yamlserializer)
    )


def main() -> None:
    path = Path(sys.argv[1])
    name, load = loader()
    gc.collect()
    baseline = _status("VmRSS")
    peak_reset = reset_peak(os.getpid())
    started = time.perf_counter()
    loaded = load(path)
    elapsed = time.perf_counter() - started
    peak = _status("VmHWM")
    try:
        count: int | None = len(loaded)
    except TypeError:
        count = None
    print(
        json.dumps(
            {
                "api": name,
                "load_s": elapsed,
                "peak_mb": (peak - baseline) / 1024,
                "baseline_mb": baseline / 1024,
                "peak_reset": peak_reset,
                "loaded_len": count,
            }
        )
    )


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
