"""Signals of docs/design.md §4 over the trailing window: decay weights (exponential
decay), day numbers, and per (surface, track) sums of the daily aggregates, raw
and decay-weighted, plus the surface totals behind the baselines."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.arrays import group_sum, int_group_sum, lookup
from schemas import PROMOTION_SURFACES


def decay_weights(day_numbers: np.ndarray, as_of_num: int, half_life_days: float) -> np.ndarray:
    """Exponential decay weight of each day's signals (days as `daynum`s), 1 on
    `as_of_num`, halving every `half_life_days`."""
    return np.power(0.5, (as_of_num - np.asarray(day_numbers)) / half_life_days)


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
    decay-weighted sums with weighted organic plays (not promoted); w2_plays
    (sum w^2 plays) for the rates' effective sample size (`n_eff`); and the
    promoted and organic sums of the promoted-vs-organic guardrail, over the
    rows that know their promoted skips (`known`: aggregates of format 2)."""
    rows = cell >= 0
    codes, w, size = cell[rows], weight[rows], shape[0] * shape[1]
    column = {c: aggregates[c].to_numpy()[rows] for c in ("plays", "skips", "saves", "promoted_plays")}
    column["organic"] = column["plays"] - column["promoted_plays"]
    promoted_skips = (aggregates["promoted_skips"].to_numpy(dtype=float, na_value=np.nan)[rows]
                      if "promoted_skips" in aggregates else np.full(len(codes), np.nan))
    known = np.isfinite(promoted_skips)
    column["promoted_skips"] = np.where(known, promoted_skips, 0.0)
    sig = {c: int_group_sum(codes, column[c], size).reshape(shape) for c in ("plays", "skips", "saves")}
    sig["promoted_plays"] = int_group_sum(codes, column["promoted_plays"], size).reshape(shape)
    sig["promoted_skips"] = int_group_sum(codes, column["promoted_skips"].astype(np.int64), size).reshape(shape)
    # the published rates' sums add as a pandas group-by does (bit for bit: group_sum); the guardrail's
    # other sums need no such care, and a bincount costs a fraction of it
    weighted = ("plays", "skips", "saves", "organic")
    sums = group_sum(codes, np.stack([w * column[c] for c in weighted]), size)
    sig.update({f"w_{c}": total.reshape(shape) for c, total in zip(weighted, sums)})
    more = {
        "w2_plays": w * w * column["plays"],
        "w_promoted_plays": np.where(known, w * column["promoted_plays"], 0.0),
        "w_promoted_skips": w * column["promoted_skips"],
        "w2_promoted_plays": np.where(known, w * w * column["promoted_plays"], 0.0),
        "w_known_plays": np.where(known, w * column["plays"], 0.0),
        "w_known_skips": np.where(known, w * column["skips"], 0.0),
        "w2_known_plays": np.where(known, w * w * column["plays"], 0.0),
    }
    sig.update({name: np.bincount(codes, weights=v, minlength=size).reshape(shape) for name, v in more.items()})
    sig["n_eff"] = effective_trials(sig["w_plays"], sig["w2_plays"])
    return sig


def effective_trials(w_trials, w2_trials) -> np.ndarray:
    """n_eff = (sum w n)^2 / sum w^2 n: the binomial sample size of a rate of
    decay-weighted counts (0 where there is none)."""
    w_trials, w2_trials = np.asarray(w_trials, float), np.asarray(w2_trials, float)
    return np.divide(w_trials ** 2, w2_trials, out=np.zeros(np.broadcast(w_trials, w2_trials).shape),
                     where=w2_trials > 0)


def daily_matrix(track_ids: np.ndarray, aggregates: pd.DataFrame, window_nums: np.ndarray) -> dict:
    """Dense (surface, track, day) plays and organic plays of the window days
    (`window_nums`, oldest first): the forecast's input. One bincount over
    flat indexes; a (track, surface, day) without a row is 0."""
    n, T = len(track_ids), len(window_nums)
    shape = (len(PROMOTION_SURFACES), n, T)
    if n == 0 or T == 0 or len(aggregates) == 0:
        return {"plays": np.zeros(shape), "organic": np.zeros(shape)}
    agg_dt = daynums(aggregates["dt"])
    track = lookup(track_ids, aggregates["track_id"].to_numpy())
    surface = lookup(PROMOTION_SURFACES, aggregates["surface"].to_numpy())
    day = np.searchsorted(window_nums, agg_dt)
    day_c = np.minimum(day, T - 1)
    rows = (track >= 0) & (surface >= 0) & (day < T) & (window_nums[day_c] == agg_dt)
    flat = (surface[rows] * n + track[rows]) * T + day_c[rows]
    plays = aggregates["plays"].to_numpy()[rows].astype(float)
    promoted = aggregates["promoted_plays"].to_numpy()[rows].astype(float)
    size = shape[0] * n * T
    return {"plays": np.bincount(flat, weights=plays, minlength=size).reshape(shape),
            "organic": np.bincount(flat, weights=plays - promoted, minlength=size).reshape(shape)}


def surface_daily(totals: pd.DataFrame, window_nums: np.ndarray) -> np.ndarray:
    """(surface, day) total plays of all tracks over the window days."""
    T = len(window_nums)
    out = np.zeros((len(PROMOTION_SURFACES), T))
    if T == 0 or len(totals) == 0:
        return out
    day_num = daynums(totals["dt"])
    surface = lookup(PROMOTION_SURFACES, totals["surface"].to_numpy())
    day = np.minimum(np.searchsorted(window_nums, day_num), T - 1)
    rows = (surface >= 0) & (window_nums[day] == day_num)
    np.add.at(out, (surface[rows], day[rows]), totals["plays"].to_numpy()[rows].astype(float))
    return out


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
