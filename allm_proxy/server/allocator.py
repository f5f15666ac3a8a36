"""The C allocator's settings for a process that serves (glibc only).

The proxy's answers are big blocks: a 226 KB small answer, 64-256 KB chunks
of a relayed one. glibc hands blocks above its mmap threshold (128 KB at
first, raised as such blocks are freed) a mapping of their own, and gives
the top of its heap back to the kernel once more than the trim threshold is
free there. Either way the next answer's block is fresh memory, faulted in a
page at a time: about 30 page faults per small pass-through and 80-130 per
large one, a tenth of a large answer's CPU. Blocks up to 1 MB kept in the heap,
and up to 8 MB of free heap kept for the next answers, end most of that
(12-58 k faults in a whole bench cell instead of 0.06-0.35 M: small C=1 +4-9%
req/s, large C=1 +8-12%; docs/benchmarks.md, issue 15 part 7), and the peak
RSS lines stay where they were (16 MB kept would add 2-3 MB at 64 large
answers in flight). Blocks above 1 MB (a whole 3 MB answer, where one is
joined) are still mapped and given back each time, as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024


# An operator who set any of these (glibc's tunables, or the older variables glibc still reads)
# keeps them; other malloc tunables (arena_max, tcache_count) leave these two ours to set.
_OPERATOR_TUNABLES = ("mmap_threshold", "trim_threshold", "top_pad", "mmap_max")
_OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_answer_blocks() -> bool:
    """Set glibc's mmap and trim thresholds for serving, for the whole process (`run_server` calls
    it: a program that embeds the server gets them too). False, and nothing changed, on another C
    library, or where the environment already sets these thresholds (the operator's choice wins)."""
    import ctypes  # here, not at import: only a serving process needs it (the pytest plugin's proxy does not)
    import platform

    if platform.libc_ver()[0] != "glibc" or _operator_set_thresholds(os.environ):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # Setting either one also stops glibc moving the mmap threshold by itself.
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    trim_set = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return mmap_set and trim_set


def _operator_set_thresholds(environ: Mapping[str, str]) -> bool:
    tunables = environ.get("GLIBC_TUNABLES", "")
    named = {item.split("=", 1)[0].strip() for item in tunables.split(":")}
    return any(f"glibc.malloc.{name}" in named for name in _OPERATOR_TUNABLES) or any(
        variable in environ for variable in _OPERATOR_VARIABLES
    )
