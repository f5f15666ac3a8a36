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
answers in flight).
"""

from __future__ import annotations

import os

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024


def keep_answer_blocks() -> bool:
    """Set glibc's mmap and trim thresholds for serving; False (nothing changed) on another C library,
    or where GLIBC_TUNABLES already sets malloc's own (the operator's choice wins)."""
    import ctypes  # here, not at import: only a serving process needs it (the pytest plugin's proxy does not)
    import platform

    if platform.libc_ver()[0] != "glibc" or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # Setting either one also stops glibc moving the mmap threshold by itself.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
