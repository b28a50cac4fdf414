"""The JSON nesting bound: it agrees with the real depth of any document, read in any chunk size."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.common.jsondepth import DepthChecked, NestingError

tricky = st.text(alphabet='ab[]{}"\\ ', max_size=8)
documents = st.recursive(
    st.none() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=20,
)


def depth(o) -> int:
    if isinstance(o, list):
        return 1 + max(map(depth, o), default=0)
    if isinstance(o, dict):
        return 1 + max(map(depth, o.values()), default=0)
    return 0


def read_all(data: bytes, chunk: int, limit: int) -> DepthChecked:
    f = DepthChecked(io.BytesIO(data), "doc.json", limit)
    while f.read(chunk):
        pass
    return f


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([1, 2, 3, 7, 4096]))
def test_the_bound_is_the_documents_real_depth_in_any_chunk_size(doc, chunk):
    """Brackets and escaped quotes inside strings (split across reads) never count; the real depth does."""
    data = json.dumps(doc).encode()
    n = depth(doc)
    f = read_all(data, chunk, n)
    assert f.depth == 0 and not f.in_string
    if n:
        try:
            read_all(data, chunk, n - 1)
        except NestingError as e:
            assert "doc.json: JSON nested deeper than" in str(e)
        else:
            raise AssertionError(f"depth {n} passed a bound of {n - 1}")
