"""System parts some tests need (Debian's `redis-server` and `chromium`): find them, or skip saying how.

On a laptop without the part the test skips with the command that installs it. Under CI
(`ALLM_REQUIRE_SYSTEM_PARTS=1`, set by `.ci/run`, which installs both) a missing part fails the
test instead, so a clean machine can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_VARIABLE = "ALLM_REQUIRE_SYSTEM_PARTS"

# The Debian package that brings each part, and the names its binary goes by.
PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "redis-server": ("redis-server", ("redis-server",)),
    "chromium": ("chromium", ("chromium", "chromium-browser")),
}


def require(part: str) -> str:
    """The path of `part`'s binary; skips (or, under CI, fails) the calling test when it is missing."""
    package, binaries = PARTS[part]
    for name in binaries:
        found = shutil.which(name)
        if found:
            return found
    message = (
        f"{part} is not installed; install it with `sudo apt-get install {package}` (Debian/Ubuntu) to run this test"
    )
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{message}. {REQUIRE_VARIABLE}=1 makes a missing system part a failure.")
    pytest.skip(message)
