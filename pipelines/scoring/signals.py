"""Signals of DESIGN §4 over the trailing window: day weights (exponential
decay), day numbers, and per (surface, track) sums of the daily aggregates, raw
and decay-weighted, plus the surface totals behind the baselines."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.arrays import group_sum, int_group_sum, lookup
from schemas import PROMOTION_SURFACES


def day_weights(days: list[dt.date], as_of: dt.date, half_life_days: float) -> pd.Series:
    """Exponential decay weight of each day's signals, 1 for `as_of`."""
    age = np.array([(as_of - d).days for d in days], dtype=float)
    return pd.Series(np.power(0.5, age / half_life_days), index=pd.Index(days, name="dt"))


def window_days(as_of: dt.date, window: int) -> list[dt.date]:
    return [as_of - dt.timedelta(days=i) for i in range(window - 1, -1, -1)]


EPOCH = dt.date(1970, 1, 1)


def daynum(d: dt.date) -> int:
    return (d - EPOCH).days


def daynums(s) -> np.ndarray:
    """Days since 1970-01-01 of a column of dates: comparisons and group-bys on
    int64 stay in numpy, where object dates fall back to per-row Python.
    `datetime.date` objects (what Arrow's to_pandas gives) convert to Arrow's
    date32, days since the epoch, in C: several times faster than
    `pd.to_datetime`. Anything else (strings, or nulls, which become NaT)
    takes the pandas path."""
    values = s.to_numpy() if isinstance(s, pd.Series) else np.asarray(s)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if values.dtype == object:
        try:
            days = pa.array(values, type=pa.date32())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            days = None
        if days is not None and days.null_count == 0:
            return days.cast(pa.int32()).to_numpy().astype(np.int64)
    if not np.issubdtype(values.dtype, np.datetime64):
        values = pd.to_datetime(pd.Series(values)).to_numpy()
    return values.astype("datetime64[D]").astype(np.int64)


def dates(nums) -> list[dt.date]:
    return np.asarray(nums, dtype=np.int64).astype("datetime64[D]").astype(object).tolist()


def track_signals(track_ids: np.ndarray, flight_starts: np.ndarray, aggregates: pd.DataFrame,
                  observed_nums: np.ndarray, weight_of, as_of_num: int) -> tuple[dict, np.ndarray]:
    """(surface, track) signals over the observed window days (`_window_signals`),
    and promoted plays delivered from the track's flight start (a day number) to
    as_of, in one pass over the aggregates: each row's (surface, track) cell is
    found once."""
    n = len(track_ids)
    agg_dt = daynums(aggregates["dt"])
    track = lookup(track_ids, aggregates["track_id"].to_numpy())
    surface = lookup(PROMOTION_SURFACES, aggregates["surface"].to_numpy())
    known = (track >= 0) & (surface >= 0)
    cell = np.where(known, surface * n + track, -1)   # flat index into (surface, track) arrays
    shape = (len(PROMOTION_SURFACES), n)
    sig = _window_signals(np.where(np.isin(agg_dt, observed_nums), cell, -1), weight_of(agg_dt),
                          aggregates, shape)
    flight_start = np.zeros(len(cell), dtype=np.int64)
    flight_start[known] = flight_starts[track[known]]
    since_start = known & (agg_dt >= flight_start) & (agg_dt <= as_of_num)
    delivered = int_group_sum(cell[since_start], aggregates["promoted_plays"].to_numpy()[since_start],
                              shape[0] * n).reshape(shape).astype(float)
    return sig, delivered


def _window_signals(cell: np.ndarray, weight: np.ndarray, aggregates: pd.DataFrame, shape: tuple) -> dict:
    """(surface, track) sums over the aggregate rows whose `cell` (flat index
    into those arrays) is not -1: plays, skips and saves, and their
    decay-weighted sums with weighted organic plays (not promoted), the supply
    forecast's numerator."""
    rows = cell >= 0
    codes, w, size = cell[rows], weight[rows], shape[0] * shape[1]
    column = {c: aggregates[c].to_numpy()[rows] for c in ("plays", "skips", "saves", "promoted_plays")}
    column["organic"] = column["plays"] - column["promoted_plays"]
    sig = {c: int_group_sum(codes, column[c], size).reshape(shape) for c in ("plays", "skips", "saves")}
    weighted = ("plays", "skips", "saves", "organic")
    sums = group_sum(codes, np.stack([w * column[c] for c in weighted]), size)
    sig.update({f"w_{c}": total.reshape(shape) for c, total in zip(weighted, sums)})
    return sig


def surface_totals(totals: pd.DataFrame, observed_nums: np.ndarray, weight_of) -> dict:
    """Decay-weighted plays, skips and saves of all tracks per promotion surface
    over the observed window days: the baselines' numerators and denominator."""
    day = daynums(totals["dt"])
    rows = np.isin(day, observed_nums)
    codes = lookup(PROMOTION_SURFACES, totals["surface"].to_numpy()[rows])
    w = weight_of(day[rows])
    names = ("plays", "skips", "saves")
    sums = group_sum(codes, np.stack([w * totals[c].to_numpy()[rows] for c in names]),
                     len(PROMOTION_SURFACES))
    return {f"w_{c}": total for c, total in zip(names, sums)}
