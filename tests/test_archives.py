"""Zip members are inflated no further than they declare, nor past what a sample can be."""

from __future__ import annotations

import random
import zlib

import pytest

from pipelines.common.archives import MAX_RATIO, inflate, member_bytes
from pipelines.common.errors import BadInput


def deflate(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def test_a_member_inflates_to_what_it_declares():
    data = bytes(range(256)) * 100
    assert inflate(deflate(data), len(data)) == data == member_bytes(deflate(data), {"inflate": len(data)})
    assert member_bytes(b"stored", {}) == b"stored" and member_bytes(deflate(b"x"), {"inflate": True}) == b"x"


def test_a_declared_size_past_the_ratio_is_refused_before_inflating():
    packed = deflate(bytes(1 << 20))  # ~1 KB of deflate stream
    with pytest.raises(BadInput, match=f"declares {1 << 20} bytes from {len(packed)} .{MAX_RATIO}x"):
        inflate(packed, 1 << 20)


def test_a_member_that_lies_about_its_size_stops_at_the_declared_size():
    packed = deflate(b"a" * 5000)
    with pytest.raises(BadInput, match="inflates to more than its declared 1000 bytes"):
        inflate(packed, 1000)
    noisy = random.Random(0).randbytes(5000)
    with pytest.raises(BadInput, match="ends early"):
        inflate(deflate(noisy)[:2500], 5000)
    with pytest.raises(BadInput, match="ends early"):
        inflate(deflate(noisy), 6000)  # declares more than it holds
