"""Where the proxy writes bytes it keeps for a while (the journal's image files): a memory file system
when there is one with room, never a disk it would have to write back.

On a disk file system every byte kept is written back to the disk a few seconds later, and that
write-back (70 MB/s for 300 small answers a second) cost more CPU than the rest of a small
pass-through (docs/benchmarks.md). `/dev/shm` files are memory the process does not map. (Uploads
being read stay in the temp directory: they are deleted within the request, before any write-back,
and measured the same in either place.)

    tempfile.mkdtemp(dir=scratch_dir(256 * 2**20))   # /dev/shm, or None: the system temp directory
"""

from __future__ import annotations

import functools
import os

# Where the directory goes when TMPDIR does not say, if it is a memory file system with room.
MEMORY_ROOT = "/dev/shm"


def scratch_dir(budget: int, *, root: str = MEMORY_ROOT) -> str | None:
    """Where to write `budget` bytes for a while: `root` when it is a tmpfs with that much free (and
    TMPDIR chooses no other place), else None (the system temp directory)."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        stats = os.statvfs(root)
        on_tmpfs = _is_tmpfs(root)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    return root if on_tmpfs and free >= budget and os.access(root, os.W_OK | os.X_OK) else None


@functools.cache
def _is_tmpfs(path: str) -> bool:
    """Whether `path` is the mount point of a tmpfs (from /proc/self/mounts; False when unknown)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1:3] == [path, "tmpfs"] for line in mounts)
    except OSError:
        return False
