"""`arrays.stable_hash` computes the same documented hash by three paths
(all values of one length: the bytes as one matrix; a few lengths: a matrix
per length; many lengths: values sorted by length). Each path against the
byte-at-a-time reference, including sliced and chunked columns, since the
cross-day dedupe stores these hashes across runs and a path that differed
would silently stop matching."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import arrays
from tests.unit.test_arrow_ops import reference_hash


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 24), st.lists(st.text(min_size=0, max_size=3), max_size=60), st.integers(0, 3))
def test_one_length_few_lengths_and_many_lengths_agree_with_the_reference(length, pads, cut):
    same = [("x" * length + str(i))[-length:] if length else "" for i in range(40)]           # one length
    few = [f"evt-{i:0{1 + i % 5}d}" for i in range(40)]                                        # five lengths
    many = ["a" * (i % 37) + "".join(p) for i, p in enumerate(pads)]                          # up to 37 lengths
    for values in (same, few, many):
        arr = pa.array(values, pa.string())
        for column in (arr, arr.slice(cut), pa.chunked_array([arr.slice(cut), arr], pa.string())):
            assert arrays.stable_hash(column).tolist() == [reference_hash(v) for v in column.to_pylist()]
