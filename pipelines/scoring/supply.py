"""Supply forecasts of one market (docs/design.md §4): each enrolled track's organic
plays E per promotion surface and each surface's total plays S for the score
date, from the window's daily aggregates. `score_market` and `oasis backtest`
both call `forecast_supply`, so the backtest measures exactly what is
published.

A track's history counts from its first play in the market (on any promotion
surface) inside the window, on the days whose raw data was observed: a track
that joined the enrollment export a week before its flight, or was released
last week, is averaged over the days it could have been seen, not over the
whole window (which once cut a new enrollee's cap by 61%).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.config import Config
from pipelines.scoring import forecast
from pipelines.scoring.signals import daily_matrix, surface_daily
from schemas import PROMOTION_SURFACES


@dataclass
class Supply:
    point: np.ndarray          # (surface, track) E
    low: np.ndarray            # (surface, track) low end of E's 80% interval (NaN: no interval)
    high: np.ndarray
    total: np.ndarray          # (surface,) S
    total_low: np.ndarray
    total_high: np.ndarray
    history_days: np.ndarray   # (track,) observed window days since the track's first play
    baselines: dict | None = None   # method -> (point (surface, track), total (surface,)) when asked


def window_numbers(as_of_num: int, window: int) -> np.ndarray:
    """Day numbers of the window, oldest first, ending on the as-of day."""
    return np.arange(as_of_num - window + 1, as_of_num + 1, dtype=np.int64)


def forecast_supply(track_ids: np.ndarray, released: np.ndarray, aggregates: pd.DataFrame, totals: pd.DataFrame,
                    observed_nums: np.ndarray, as_of_num: int, cfg: Config, baselines: bool = False) -> Supply:
    """E and S for the day after `as_of_num` (a day number), with
    `cfg.forecast_method`. released: (track,) release day numbers (the trend
    prior's age buckets). observed_nums: the window days with raw data.
    baselines: also return the decayed mean and the seasonal-naive forecast
    (`Supply.baselines`), for the backtest."""
    n_s, n = len(PROMOTION_SURFACES), len(track_ids)
    days = window_numbers(as_of_num, cfg.window_days)
    T = len(days)
    present = np.isin(days, observed_nums)
    mats = daily_matrix(track_ids, aggregates, days)
    mask = forecast.observed_from_first_play(mats["plays"].sum(axis=0), present)     # (track, day)
    rows_mask = np.broadcast_to(mask[None], (n_s, n, T)).reshape(n_s * n, T)
    organic = mats["organic"].reshape(n_s * n, T)
    totals_m = surface_daily(totals, days)
    hl, damping = cfg.half_life_days, cfg.forecast_damping
    dow, target = forecast.weekdays(days), int(forecast.weekdays(as_of_num + 1))
    out = Supply(np.zeros((n_s, n)), np.full((n_s, n), np.nan), np.full((n_s, n), np.nan), np.zeros(n_s),
                 np.full(n_s, np.nan), np.full(n_s, np.nan), mask.sum(axis=1))

    def decayed():
        # the baseline method: decay-weighted mean of every observed window day (a track's days before its
        # first play count as zeros, as they did before the model)
        return (forecast.decayed_mean(organic, hl, np.broadcast_to(present, organic.shape)).reshape(n_s, n),
                forecast.decayed_mean(totals_m, hl, np.broadcast_to(present, totals_m.shape)))

    if cfg.forecast_method == "decayed_mean":
        out.point, out.total = decayed()
    else:
        fit = forecast.fit_surface(totals_m, dow, hl, present)
        out.total, out.total_low, out.total_high = forecast.forecast_surface(fit, target, damping)
        group = np.repeat(np.arange(n_s), n)
        age = np.tile(as_of_num + 1 - np.asarray(released, dtype=float), n_s)
        point, low, high = forecast.forecast_tracks(
            organic, rows_mask, dow, target, fit.log_weekday, group, hl, damping, day_factor=fit.day_factor,
            age=age, selection=np.tile(np.arange(n), n_s))
        out.point, out.low, out.high = (v.reshape(n_s, n) for v in (point, low, high))
    if baselines:
        naive = forecast.seasonal_naive(organic, hl, rows_mask).reshape(n_s, n)
        naive_total = forecast.seasonal_naive(totals_m, hl, np.broadcast_to(present, totals_m.shape))
        out.baselines = {"decayed_mean": decayed(), "seasonal_naive": (naive, naive_total)}
    return out
