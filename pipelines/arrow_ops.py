"""Small vectorised Arrow helpers shared by the transforms (no per-row Python)."""
from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def concat(tables: list[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if not tables:
        if schema is None:
            raise ValueError("concat of nothing needs a schema")
        return schema.empty_table()
    if schema is not None:  # nullability may differ between producers; the contract decides
        tables = [t.select(schema.names).cast(schema) if t.schema != schema else t for t in tables]
    return pa.concat_tables(tables, promote_options="none").combine_chunks()


def codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode a column: (int codes per row, unique values)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    enc = pc.dictionary_encode(column)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def stable_shard(column, shards: int) -> np.ndarray:
    """A shard number per row from a string column, stable across processes and
    machines (crc32, not Python's salted hash). Python runs once per distinct value."""
    idx, uniques = codes(column)
    per_unique = np.fromiter((zlib.crc32(v.encode()) % shards for v in uniques.to_pylist()),
                             dtype=np.int64, count=len(uniques))
    return per_unique[idx] if len(idx) else idx


def split_by(table: pa.Table, columns: list[str]) -> Iterator[tuple[tuple, pa.Table]]:
    """Split `table` into one sub-table per distinct value of `columns`, in key
    order. One sort, then slices: O(n log n), not O(n * keys)."""
    if table.num_rows == 0:
        return
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in columns])
    t = table.take(order)
    key_codes = np.zeros(t.num_rows, dtype=np.int64)
    for c in columns:
        idx, uniques = codes(t.column(c))
        key_codes = key_codes * (len(uniques) + 1) + idx
    bounds = np.flatnonzero(np.diff(key_codes)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [t.num_rows]])
    key_cols = [t.column(c) for c in columns]
    for s, e in zip(starts, ends):
        key = tuple(col[int(s)].as_py() for col in key_cols)
        yield key, t.slice(int(s), int(e - s))


def split_by_array(table: pa.Table, keys: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """Split rows by an integer key array (e.g. shard numbers)."""
    if table.num_rows == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    t = table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(keys)]])
    for s, e in zip(starts, ends):
        yield int(sorted_keys[s]), t.slice(int(s), int(e - s))


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row (in table order) of each distinct `key`."""
    if table.num_rows == 0:
        return table
    idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
    firsts = (pa.table({key: table.column(key), "_i": idx})
              .group_by(key, use_threads=False).aggregate([("_i", "min")]))
    keep = np.sort(firsts.column("_i_min").to_numpy())
    return table.take(pa.array(keep))
