"""`file_bytes`: a kept answer's bytes with a memory file of their own, which the connection layer
sends with `sendfile`; plain bytes wherever that is not worth it or not possible."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import sys

import pytest

from allm_proxy.server import file_bytes
from allm_proxy.server.file_bytes import MAX_BYTES, MIN_BYTES, FileBytes, file_backed, live_files

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory files (memfd) are Linux's")


def test_big_bytes_get_a_file_holding_the_same_bytes_closed_when_they_go() -> None:
    data = os.urandom(MIN_BYTES + 7)
    before = live_files()
    backed = file_backed(data)
    assert isinstance(backed, FileBytes) and backed == data and bytes(backed) == data
    fd = backed.fd
    assert os.pread(fd, len(data) + 1, 0) == data  # the whole of it, nothing more
    assert live_files() == before + 1
    del backed
    gc.collect()
    assert live_files() == before
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (no other file was opened in between to take its number)


def test_small_and_big_bytes_and_file_backed_ones_come_back_as_they_are() -> None:
    small, big = b"x" * (MIN_BYTES - 1), b"x" * (MAX_BYTES + 1)
    assert file_backed(small) is small and file_backed(big) is big
    backed = file_backed(os.urandom(MIN_BYTES))
    assert file_backed(backed) is backed


def test_past_the_file_limit_answers_stay_plain_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_bytes, "MAX_FILES", live_files() + 1)
    first = file_backed(os.urandom(MIN_BYTES))
    second = file_backed(os.urandom(MIN_BYTES))
    assert isinstance(first, FileBytes) and type(second) is bytes


def test_without_memory_files_the_bytes_stay_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_bytes, "_memfd_create", None)  # another system
    data = os.urandom(MIN_BYTES)
    assert file_backed(data) is data

    def refused(name: str) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(file_bytes, "_memfd_create", refused)
    before = live_files()
    assert file_backed(data) is data and live_files() == before


def test_a_copy_is_plain_bytes_so_that_one_object_owns_the_file() -> None:
    backed = file_backed(os.urandom(MIN_BYTES))
    assert isinstance(backed, FileBytes)
    for other in (copy.copy(backed), copy.deepcopy(backed), pickle.loads(pickle.dumps(backed))):
        assert type(other) is bytes and other == backed
    assert os.fstat(backed.fd)  # still open
