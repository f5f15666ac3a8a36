"""FileProbe: what a streamed upload's checks need, worked out piece by piece (allm_proxy/probe.py)."""

from __future__ import annotations

import hashlib

import pytest

from allm_proxy.probe import HEAD_BYTES, FileProbe
from tests.support.images import noise_jpeg, padded_png


def probed(data: bytes, step: int, *, digest: bool = True) -> FileProbe:
    probe = FileProbe(digest=digest)
    for at in range(0, len(data), step):
        probe.feed(memoryview(data[at : at + step]))
    return probe


@pytest.mark.parametrize("step", [1, 5, 8, 9, 4096, 10**7])
def test_an_intact_png_is_intact_in_pieces_of_any_size(step: int) -> None:
    data = padded_png((16, 16), 200_000 if step > 1 else 3_000)
    probe = probed(data, step)
    result = probe.result()
    assert result.intact and result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert bytes(probe.head) == data[:HEAD_BYTES]


def test_a_flipped_byte_inside_a_chunk_breaks_the_png() -> None:
    data = bytearray(padded_png((16, 16), 100_000))
    data[50_000] ^= 1
    assert not probed(bytes(data), 4096).result().intact


def test_a_truncated_png_is_not_intact() -> None:
    data = padded_png((16, 16), 100_000)
    assert not probed(data[:-20], 4096).result().intact


def test_other_files_are_never_vouched_for_and_need_no_digest() -> None:
    result = probed(noise_jpeg((32, 32)), 1000, digest=False).result()
    assert not result.intact and result.sha256 == ""
