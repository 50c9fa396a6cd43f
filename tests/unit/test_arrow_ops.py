"""The vectorised Arrow helpers against plain-Python oracles."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import arrays as arrow_ops

M = 2**64


def reference_hash(value: str) -> int:
    """The documented hash, one byte at a time."""
    h = 0
    for b in value.encode("utf-8"):
        h = (h * 1_099_511_628_211 + b) % M
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) % M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) % M
    h ^= h >> 33
    return h


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=30), st.integers(0, 5), st.integers(0, 5))
def test_stable_hash_matches_the_reference_on_any_strings_and_slices(values, lo, hi):
    arr = pa.array(values, pa.string())
    sliced = arr.slice(min(lo, len(values)), max(0, len(values) - lo - hi))
    for column in (arr, sliced, pa.chunked_array([arr, sliced], pa.string())):
        expected = [reference_hash(v) for v in column.to_pylist()]
        assert arrow_ops.stable_hash(column).tolist() == expected


def test_stable_shard_is_in_range_spread_and_the_same_for_equal_values():
    values = [f"trk-{i % 997:06d}" for i in range(20_000)]
    shards = arrow_ops.stable_shard(pa.array(values), 16)
    assert shards.dtype == np.int64 and shards.min() >= 0 and shards.max() < 16
    by_value = {}
    for v, s in zip(values, shards.tolist()):
        assert by_value.setdefault(v, s) == s
    counts = np.bincount(list(by_value.values()), minlength=16)
    assert counts.min() > 997 / 16 / 2  # no shard starves


def test_key_runs_group_equal_keys_in_key_order_keeping_row_order():
    t = pa.table({"k": [3, 1, 3, 2, 1], "v": ["a", "b", "c", "d", "e"]})
    order, runs = arrow_ops.key_runs(np.array([3, 1, 3, 2, 1]))
    assert [k for k, _, _ in runs] == [1, 2, 3]
    grouped = t.take(pa.array(order))
    assert [grouped.column("v").slice(s, e - s).to_pylist() for _, s, e in runs] == [["b", "e"], ["d"], ["a", "c"]]
    assert arrow_ops.key_runs(np.array([], dtype=np.int64))[1] == []
