"""Small vectorised helpers over Arrow and numpy arrays (no per-row Python):
Arrow table plumbing for the transforms, stable hashing and sharding, and the
integer-coded group-bys the scoring math runs on."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import OasisError


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


_P = np.uint64(1_099_511_628_211)  # the FNV-1 64-bit prime


def stable_hash(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash per value of a string column, the same in every process and
    on every machine (unlike Python's salted hash): a polynomial hash of the
    UTF-8 bytes, sum(b_j * P**(len-1-j)) mod 2**64, then a murmur3 finaliser.

    Computed by Horner's rule, one byte position at a time over many values at
    once: values of one length (ids of a fixed format, the usual case) as the
    columns of one byte matrix, and, when there are many lengths, all values
    sorted by length (step k touching only those longer than k). The work is
    the column's bytes with a few arrays of one number per value: 200,000
    event ids of 20 bytes took 43 ms and 11 MB on a loaded 2-core machine,
    where the earlier gather over every byte took 1.4 s and 350 MB."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.large_string())
    n = len(column)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[column.offset:column.offset + n + 1]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8))
    lengths = np.diff(offsets)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        distinct = np.unique(lengths)
        if len(distinct) <= _FEW_LENGTHS:
            for length in distinct[distinct > 0].tolist():
                if len(distinct) == 1:  # one length: the bytes are already the matrix, no copy
                    rows = slice(None)
                    matrix = data[offsets[0]:offsets[-1]].reshape(n, length)
                else:
                    rows = np.flatnonzero(lengths == length)
                    matrix = data[offsets[rows][:, None] + np.arange(length)]
                part = np.zeros(matrix.shape[0], dtype=np.uint64)
                for k in range(length):
                    part = part * _P + matrix[:, k]
                h[rows] = part
        else:
            order = np.argsort(-lengths, kind="stable")
            starts, longest_first = offsets[:-1][order], -lengths[order]  # ascending: -len
            part = np.zeros(n, dtype=np.uint64)
            for k in range(int(lengths.max())):
                active = int(np.searchsorted(longest_first, -k, side="left"))  # values longer than k
                part[:active] = part[:active] * _P + data[starts[:active] + k]
            h[order] = part
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return h


_FEW_LENGTHS = 16  # up to this many distinct lengths, one byte matrix per length


def stable_shard(column, shards: int) -> np.ndarray:
    """A shard number per row from a string column, stable across processes and
    machines (see `stable_hash`). Hashes each distinct value once."""
    idx, uniques = codes(column)
    per_unique = (stable_hash(uniques) % np.uint64(shards)).astype(np.int64)
    return per_unique[idx] if len(idx) else idx


# The parts are built with `take`, not `slice`: a pickled slice carries its
# parent's whole buffers (measured: a 1,000-row slice of a 1M-row table pickles
# to 17.9 MB), and parts cross the shuffle pickled.
def split_by(table: pa.Table, columns: list[str]) -> Iterator[tuple[tuple, pa.Table]]:
    """Split `table` into one compact sub-table per distinct value of `columns`,
    in key order: one sort, then one `take` per part (O(n log n) overall)."""
    if table.num_rows == 0:
        return
    key_codes = np.zeros(table.num_rows, dtype=np.int64)
    uniques_per_col = []
    for c in columns:
        idx, uniques = codes(table.column(c))
        # codes sorted by value so that parts come out in key order
        rank = np.argsort(np.argsort(uniques.to_numpy(zero_copy_only=False), kind="stable"), kind="stable")
        key_codes = key_codes * (len(uniques) + 1) + rank[idx]
        uniques_per_col.append(uniques)
    order = np.argsort(key_codes, kind="stable")
    sorted_codes = key_codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    for s, e in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(order)]])):
        part = table.take(pa.array(order[s:e]))
        yield tuple(part.column(c)[0].as_py() for c in columns), part


def key_runs(keys: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(stable order that groups equal keys, [(key, start, end) per run in that
    order]) for an integer key array."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(keys)]])
    return order, [(int(sorted_keys[s]), int(s), int(e)) for s, e in zip(starts, ends)] if len(keys) else []


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row (in table order) of each distinct `key`."""
    if table.num_rows == 0:
        return table
    idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
    firsts = (pa.table({key: table.column(key), "_i": idx})
              .group_by(key, use_threads=False).aggregate([("_i", "min")]))
    keep = np.sort(firsts.column("_i_min").to_numpy())
    return table.take(pa.array(keep))


# ------------------------------------------------------------ group-bys ---
def lookup(keys, values) -> np.ndarray:
    """Position of each value in `keys` (unique), -1 when absent: a left merge
    on one key column as one hash lookup, with no frames built."""
    return pd.Index(keys).get_indexer(values)


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize(values, sort=True)` for strings: codes numbered in the
    sorted order of the distinct values (-1 for nulls), and those values sorted.
    pandas sorts the distinct values with Python comparisons; Arrow sorts them
    in C in the same order (UTF-8 bytes sort as code points), several times
    faster."""
    codes, uniques = pd.factorize(values)
    order = pc.array_sort_indices(pa.array(uniques, type=pa.string())).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    out = np.full(len(codes), -1, dtype=np.int64)
    out[codes >= 0] = rank[codes[codes >= 0]]
    return out, np.asarray(uniques, dtype=object)[order]


INT64_SAFE = 2**62  # below the int64 limit by a factor of 2: a sum that reaches it is refused, not wrapped


class SumOverflow(OasisError, OverflowError):
    """An integer sum that would leave int64 (damaged stored aggregates: the
    input contract bounds every summed value)."""


def int_group_sum(codes: np.ndarray, values, n_groups: int) -> np.ndarray:
    """Exact int64 sum of `values` per group code in 0..n_groups-1. numpy wraps
    an int64 sum silently, so the sums are bounded first (in float64: exact
    enough to compare with 2**62); past the bound it raises OverflowError."""
    codes, values = np.asarray(codes, dtype=np.int64), np.asarray(values, dtype=np.int64)
    bound = np.zeros(n_groups)
    np.add.at(bound, codes, np.abs(values.astype(float)))
    if len(bound) and bound.max() >= INT64_SAFE:
        raise SumOverflow(f"an int64 group sum would reach {bound.max():.3g} (over 2**62): refusing to wrap")
    out = np.zeros(n_groups, dtype=np.int64)
    np.add.at(out, codes, values)
    return out


def group_sum(codes: np.ndarray, values, n_groups: int) -> np.ndarray:
    """Float sum of `values` per group code in 0..n_groups-1 (rows coded -1 are
    left out), adding each group's values in row order with Kahan compensation.
    `values` is one column (rows,) or several (columns, rows), summed alike.

    That is how a pandas group-by `sum` adds, so the totals are bit for bit
    those of a pandas group-by over the same rows in the same order: outputs
    must not move when the implementation changes, and a plain `np.bincount`
    rounds differently from a group's third value on. Values must be finite.
    Vectorised over groups: step k adds the k-th row of every group, so the loop
    runs as often as the largest group has rows (days of a window, surfaces of a
    track, tracks of a campaign), not once per row."""
    codes = np.asarray(codes, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    columns = values if values.ndim == 2 else values[None, :]
    total, compensation = np.zeros((len(columns), n_groups)), np.zeros((len(columns), n_groups))
    rows = np.flatnonzero(codes >= 0)
    if len(rows):
        rows = rows[_stable_argsort(codes[rows], n_groups)]   # by group, row order within a group
        counts = np.bincount(codes[rows], minlength=n_groups)
        rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[codes[rows]]
        rows = rows[_stable_argsort(rank, int(counts.max()))]  # all groups' first rows, then second rows...
        group, step_values = codes[rows], np.take(columns, rows, axis=1)
        lo = 0
        for hi in np.cumsum(np.bincount(rank)):
            _kahan_add(total, compensation, (slice(None), group[lo:hi]), step_values[:, lo:hi])
            lo = hi
    return total if values.ndim == 2 else total[0]


def compensated_sum(terms: np.ndarray) -> np.ndarray:
    """terms[0] + terms[1] + ... in that order, elementwise, with Kahan
    compensation: `group_sum` for groups whose rows are these terms in order
    (a track's promotion surfaces, say), without sorting anything."""
    terms = np.asarray(terms, dtype=float)
    total, compensation = np.zeros(terms.shape[1:]), np.zeros(terms.shape[1:])
    for term in terms:
        _kahan_add(total, compensation, ..., term)
    return total


def _kahan_add(total: np.ndarray, compensation: np.ndarray, index, values: np.ndarray) -> None:
    """Add `values` to total[index] in place, one Kahan step, as pandas' group
    sum does it: y = v - c; t = s + y; c = (t - s) - y; s = t."""
    before = total[index]
    y = values - compensation[index]
    t = before + y
    compensation[index] = (t - before) - y
    total[index] = t


def _stable_argsort(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of integers in [0, bound). Below 2**16 the keys are cast to
    uint16, for which numpy's stable sort is a radix sort: linear, and ten
    times faster than the timsort it uses on int64."""
    return np.argsort(keys.astype(np.uint16) if bound <= 1 << 16 else keys, kind="stable")
