"""The promotion holdout: which listeners are held out, and the hashed listener
key the lift facts carry instead of a user id (docs/design.md §3).

A listener is in the holdout of (market, month) when a hash of (salt, user_id,
market, month) falls below the configured share (`holdout_salt` and
`holdout_share` in `pipelines.config`). The hash is computed in two steps, so
the batch hashes each distinct user id once:

    key(user)                 = fmix64(stable_hash(user_id) ^ KEY_DOMAIN)         (the listener key)
    cell(salt, market, month) = fmix64(salt * C1 ^ stable_hash(market) ^ month * C2)
    in_holdout                = fmix64(key ^ cell) / 2**64 < share

`month` is year * 12 + month - 1 of the UTC time of the play or exposure, so a
listener's assignment changes each month (and differs between markets) while
staying fixed within one. Serving calls `is_in_holdout` (re-exported by
`jobs.serving`) with the salt and share of the manifest it serves; the batch
calls the vectorised `in_holdout`: the same arithmetic, so they agree without a
lookup service (tests/unit/test_holdout.py checks one against the other).

The listener key is what the per-listener lift facts store: a 64-bit hash,
never the user id (nor an md5/sha digest of it).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import arrays

KEY_DOMAIN = np.uint64(0x6F61736973_4C4B31 & 0xFFFFFFFFFFFFFFFF)  # "oasisLK1": keys differ from a bare hash
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xD6E8FEB86659FD93)
_TWO_53 = float(1 << 53)


def fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: a bijection that mixes every input bit into every output bit."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
    return x


def listener_keys(user_ids) -> np.ndarray:
    """The listener key (uint64) per user id; each distinct id is hashed once."""
    codes, uniques = arrays.codes(user_ids)
    per_unique = fmix64(arrays.stable_hash(uniques) ^ KEY_DOMAIN)
    return per_unique[codes] if len(codes) else np.zeros(0, dtype=np.uint64)


def as_int64(keys: np.ndarray) -> np.ndarray:
    """uint64 keys as the int64 the tables store (the same 64 bits)."""
    return np.asarray(keys, dtype=np.uint64).view(np.int64)


def month_numbers(ts) -> np.ndarray:
    """year * 12 + month - 1 of each UTC timestamp."""
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    years = pc.year(ts).to_numpy(zero_copy_only=False).astype(np.int64)
    months = pc.month(ts).to_numpy(zero_copy_only=False).astype(np.int64)
    return years * 12 + months - 1


def month_number(when: dt.date | dt.datetime) -> int:
    if isinstance(when, dt.datetime) and when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return when.year * 12 + when.month - 1


def _cells(salt: int, market_hashes: np.ndarray, months: np.ndarray) -> np.ndarray:
    salt_term = np.uint64(int(salt) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return fmix64((salt_term * _C1) ^ market_hashes ^ (np.asarray(months).astype(np.uint64) * _C2))


def assignment_values(keys: np.ndarray, markets, months: np.ndarray, salt: int) -> np.ndarray:
    """The uniform draw in [0, 1) per (listener key, market, month) under `salt`."""
    codes, uniques = arrays.codes(markets)
    market_hash = arrays.stable_hash(uniques)[codes] if len(codes) else np.zeros(0, dtype=np.uint64)
    mixed = fmix64(np.asarray(keys, dtype=np.uint64) ^ _cells(salt, market_hash, months))
    return (mixed >> np.uint64(11)).astype(np.float64) / _TWO_53


def in_holdout_keys(keys: np.ndarray, markets, months: np.ndarray, salt: int, share: float) -> np.ndarray:
    """Vectorised assignment from listener keys (the batch computes the keys once)."""
    return assignment_values(keys, markets, months, salt) < share


def in_holdout(user_ids, markets, months: np.ndarray, salt: int, share: float) -> np.ndarray:
    """Vectorised assignment: True where the listener is held out."""
    return in_holdout_keys(listener_keys(user_ids), markets, months, salt, share)


def is_in_holdout(user_id: str, market: str, when: dt.date | dt.datetime, salt: int, share: float) -> bool:
    """One listener's assignment in `market` at time `when` (serving's call)."""
    return bool(in_holdout(pa.array([user_id], pa.string()), pa.array([market], pa.string()),
                           np.array([month_number(when)]), salt, share)[0])
