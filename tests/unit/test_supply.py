"""`pipelines/scoring/supply.py`: the window of day numbers, and `forecast_supply`'s
contract on small planted markets: the model recovers a planted weekly pattern
for the day after as-of, de-holidays a surface-wide outlier day, takes each
track's trend prior from its release age on D+1; the decayed-mean method and
the backtest's baselines (decayed mean, same weekday last week) equal sums
written out by hand over the observed days."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Config
from pipelines.scoring import forecast as fc
from pipelines.scoring import supply
from schemas import PROMOTION_SURFACES

AS_OF = 19_863            # 2024-05-20, a Monday: D+1 is a Tuesday
N_S = len(PROMOTION_SURFACES)
# planted log weekday effects, Monday first, summing to 0; every |s_k| >= 0.05 and any two
# weekdays 1 or 2 apart differ by >= 0.05, so the wrong weekday is >= 5% off
LOG_WEEK = np.array([0.2, -0.15, -0.05, 0.1, 0.25, -0.3, -0.05])
WEEK = np.exp(LOG_WEEK)


def _frames(track_ids, plays, promoted, totals, days, observed):
    """Daily aggregates and surface totals frames of dense (surface, track, day)
    plays / promoted plays and (surface, day) totals over `days`; a day not in
    `observed` has no rows (no raw data), nor does a zero."""
    rows, trows = [], []
    for s, surface in enumerate(PROMOTION_SURFACES):
        for k, d in enumerate(days):
            if d not in observed:
                continue
            trows.append((d, surface, totals[s, k]))
            for j, t in enumerate(track_ids):
                if plays[s, j, k] > 0:
                    rows.append((d, t, surface, plays[s, j, k], promoted[s, j, k]))
    aggs = pd.DataFrame(rows, columns=["dt", "track_id", "surface", "plays", "promoted_plays"])
    tots = pd.DataFrame(trows, columns=["dt", "surface", "plays"])
    for f in (aggs, tots):
        f["dt"] = f["dt"].to_numpy(dtype=np.int64).astype("datetime64[D]")
        f["market"] = "SE"
    return aggs, tots


def _ids(n):
    return np.array([f"t{i}" for i in range(n)], dtype=object)


# ------------------------------------------------------------------- window ---
def test_window_numbers_are_the_window_days_ending_on_as_of():
    """`window` consecutive day numbers, oldest first, the last the as-of day
    (catches a window starting at 0, one day too long, or reaching D+1)."""
    np.testing.assert_array_equal(supply.window_numbers(19_000, 3), [18_998, 18_999, 19_000])
    np.testing.assert_array_equal(supply.window_numbers(19_000, 1), [19_000])
    w = supply.window_numbers(AS_OF, 28)
    assert len(w) == 28 and w[0] == AS_OF - 27 and w[-1] == AS_OF and np.all(np.diff(w) == 1)


# ------------------------------------------------------------- model: truth ---
@pytest.mark.parametrize("as_of", [AS_OF + k for k in range(7)])
def test_model_recovers_the_planted_weekday_of_the_next_day(as_of):
    """Totals 1e5 * WEEK[dow] and two tracks at 1000 * WEEK[dow] organic plays
    (plus promoted plays, left out) on every surface, no trend, no noise: S and
    E for D+1 are the planted values of D+1's weekday within 1% (the data are
    exactly the log-linear model; rounding the plays to integers moves them by
    <= 0.5/740 < 0.1%). Every as-of weekday is tried: a target of D or D+2, or
    no weekday at all (factor 1), is >= 5% off (LOG_WEEK's spacing)."""
    T = 28
    days = supply.window_numbers(as_of, T)
    f = WEEK[fc.weekdays(days)]
    ids = _ids(2)
    organic = np.round(np.tile(1000 * f, (N_S, 2, 1)))
    promoted = np.full_like(organic, 50.0)
    aggs, tots = _frames(ids, organic + promoted, promoted, np.tile(1e5 * f, (N_S, 1)), days, set(days))
    sup = supply.forecast_supply(ids, np.full(2, as_of - 400), aggs, tots, days, as_of, Config())
    target = (as_of + 1 + 3) % 7                          # 1970-01-01 (day 0) was a Thursday (weekday 3)
    np.testing.assert_allclose(sup.total, 1e5 * WEEK[target], rtol=0.01)
    np.testing.assert_allclose(sup.point, 1000 * WEEK[target], rtol=0.01)
    assert np.all((sup.low <= sup.point) & (sup.point <= sup.high))
    assert np.all((sup.total_low < sup.total) & (sup.total < sup.total_high))
    assert sup.baselines is None                          # baselines only when asked
    np.testing.assert_array_equal(sup.history_days, [T, T])


def test_model_counts_a_holiday_at_its_deholidayed_value():
    """A surface-wide +40% day three days before as-of (totals and the track's
    plays alike): the surface fit rejects it, and the track's forecast uses the
    surface's day factor, so E is the planted 1000 * WEEK[Tuesday] within 1%
    (noise-free data, as above). Counted at face value, the holiday, that near
    the as-of day, would raise the level and the trend by several percent."""
    T = 28
    days = supply.window_numbers(AS_OF, T)
    f = WEEK[fc.weekdays(days)]
    ids = _ids(1)
    organic = np.tile(1000 * f, (N_S, 1, 1))
    totals = np.tile(1e5 * f, (N_S, 1))
    organic[..., T - 4] *= 1.4
    totals[:, T - 4] *= 1.4
    aggs, tots = _frames(ids, np.round(organic), np.zeros_like(organic), totals, days, set(days))
    sup = supply.forecast_supply(ids, np.array([AS_OF - 400]), aggs, tots, days, AS_OF, Config())
    tuesday = 1
    np.testing.assert_allclose(sup.total, 1e5 * WEEK[tuesday], rtol=0.01)
    np.testing.assert_allclose(sup.point, 1000 * WEEK[tuesday], rtol=0.01)


def test_release_age_on_the_next_day_picks_the_trend_prior():
    """The trend prior is fitted per release-age bucket of age on D+1
    (forecast.AGE_EDGES: [0, 7), [7, 30), ...). Twelve young tracks (age 3..5
    on D+1, 3..5 days of history since release) grow 15% a day; sixteen
    tracks aged 10..25 are flat. Two probe tracks with the same five days of
    flat plays (~41), one aged 6 on D+1 (released D-5: the young bucket), one
    aged 7 (released D-6: the next bucket). Five days barely identify a trend,
    so each probe takes its bucket's: the age-6 one is forecast above its twin
    by at least e^(0.9 * 0.15) - 1 ~ 14% less the shrinkage's slack (> 10%);
    the age-7 one stays at its level. Ages off by one day, unknown, or
    measured from another day put both probes in one bucket: equal forecasts."""
    T = 28
    days = supply.window_numbers(AS_OF, T)
    rng = np.random.default_rng(0)
    ages, rows = [], []
    for a in (3, 4, 5) * 4:
        y = np.zeros(T)
        y[T - a:] = rng.poisson(40 * np.exp(0.15 * np.arange(a)))
        y[T - a] = max(y[T - a], 1)                       # the first day of its history has a play
        ages.append(a)
        rows.append(y)
    for a in range(10, 26):
        y = np.zeros(T)
        y[T - a:] = np.maximum(rng.poisson(40, a), 1)
        ages.append(a)
        rows.append(y)
    probe = np.zeros(T)
    probe[-5:] = [40, 44, 38, 42, 41]
    ages += [6, 7]
    rows += [probe, probe]
    y = np.array(rows)
    ids = _ids(len(y))
    plays = np.stack([y] * N_S)
    aggs, tots = _frames(ids, plays, np.zeros_like(plays), np.full((N_S, T), 1e5), days, set(days))
    released = AS_OF + 1 - np.array(ages)                 # age = days since release on D+1
    sup = supply.forecast_supply(ids, released, aggs, tots, days, AS_OF, Config())
    young, old = sup.point[:, -2], sup.point[:, -1]
    assert np.all(young > 1.10 * old)
    level = np.average(probe[-5:], weights=fc.decay_weights(5, 14.0))
    np.testing.assert_allclose(old, level, rtol=0.05)


# ------------------------------------------------- decayed mean, baselines ---
HL, WIN = 5.0, 14


def _baseline_world(missing):
    """A 14-day window ending on AS_OF with one day without raw data
    (`missing` days before as-of); plays one day before the window and on D+1
    (to be ignored). Track t0 plays every day (radio: 10 + k with 2 promoted;
    autoplay: 3 on even k); t1 first plays 3 days before as-of (mixes: 7, 9,
    11, 13). Totals 1000 (s + 1) + 5 k."""
    days = supply.window_numbers(AS_OF, WIN)
    span = np.arange(AS_OF - WIN, AS_OF + 2)              # the window, one day before, D+1
    k = np.arange(len(span)) - 1                          # k = 0 on the window's first day
    plays, promoted = np.zeros((N_S, 2, len(span))), np.zeros((N_S, 2, len(span)))
    plays[0, 0] = 10 + k
    promoted[0, 0] = 2
    plays[1, 0] = np.where(k % 2 == 0, 3, 0)
    plays[2, 1, -5:-1] = [7, 9, 11, 13]                   # days AS_OF-3 .. AS_OF
    plays[:, :, [0, -1]] = 1000                           # outside the window
    totals = 1000.0 * (np.arange(N_S)[:, None] + 1) + 5 * k[None, :]
    totals[:, [0, -1]] = 1e6
    observed = set(span) - {AS_OF - missing}
    aggs, tots = _frames(_ids(2), plays, promoted, totals, span, observed)
    inside = slice(1, -1)
    organic = np.where(np.isin(span, list(observed)), plays - promoted, 0.0)[..., inside]
    return days, aggs, tots, np.array(sorted(observed & set(days))), organic, totals[:, inside]


def _oracle(series, days, observed_days):
    """Decay-weighted mean, written out: sum_d 0.5^((AS_OF - d) / HL) y_d / sum_d
    0.5^(...) over `observed_days`; 0 when there are none."""
    num = den = 0.0
    for d, v in zip(days, series):
        if d in observed_days:
            w = 0.5 ** ((AS_OF - d) / HL)
            num, den = num + w * v, den + w
    return num / den if den else 0.0


def _naive(series, days, observed_days):
    """Same weekday last week: the value of D+1 - 7 = AS_OF - 6 where that day is
    observed for the series; else the decayed mean over its observed days."""
    last_week = AS_OF - 6
    return series[list(days).index(last_week)] if last_week in observed_days else _oracle(series, days, observed_days)


@pytest.mark.parametrize("missing", [10, 6], ids=["last-week-seen", "last-week-missing"])
@pytest.mark.parametrize("method", ["model", "decayed_mean"])
def test_baselines_are_the_hand_decayed_mean_and_last_weeks_value(missing, method):
    """baselines=True: 'decayed_mean' is each (surface, track) organic row's and
    each surface total's decay-weighted mean over the observed window days (a
    track's days before its first play count as zeros); 'seasonal_naive' is the
    value 7 days before D+1, and where that day is unobserved for the row (a
    missing day, or before the track's first play) the decayed mean over the
    row's observed days from its first play. Both whatever forecast_method."""
    days, aggs, tots, observed, organic, totals = _baseline_world(missing)
    cfg = Config(window_days=WIN, half_life_days=HL, forecast_method=method)
    sup = supply.forecast_supply(_ids(2), np.array([AS_OF - 400, AS_OF - 2]), aggs, tots, observed, AS_OF, cfg,
                                 baselines=True)
    assert set(sup.baselines) == {"decayed_mean", "seasonal_naive"}
    obs = set(observed.tolist())
    first = {0: days[0], 1: AS_OF - 3}                    # each track's first play in the window
    dm = np.array([[_oracle(organic[s, j], days, obs) for j in range(2)] for s in range(N_S)])
    naive = np.array([[_naive(organic[s, j], days, {d for d in obs if d >= first[j]}) for j in range(2)]
                      for s in range(N_S)])
    point, total = sup.baselines["decayed_mean"]
    assert point.shape == (N_S, 2) and total.shape == (N_S,)
    np.testing.assert_allclose(point, dm, rtol=1e-12)
    np.testing.assert_allclose(total, [_oracle(totals[s], days, obs) for s in range(N_S)], rtol=1e-12)
    point, total = sup.baselines["seasonal_naive"]
    assert point.shape == (N_S, 2) and total.shape == (N_S,)
    np.testing.assert_allclose(point, naive, rtol=1e-12)
    np.testing.assert_allclose(total, [_naive(totals[s], days, obs) for s in range(N_S)], rtol=1e-12)
    # t1's history: its observed days from the first play (AS_OF - 3 on; missing is 6 or 10 days back)
    np.testing.assert_array_equal(sup.history_days, [WIN - 1, 4])


def test_decayed_mean_method_is_the_hand_mean_without_intervals():
    """forecast_method = decayed_mean: E and S are the decayed means over the
    observed days (the day without data is left out, not counted as 0), and
    there is no interval: low, high and the totals' bounds are NaN floats."""
    days, aggs, tots, observed, organic, totals = _baseline_world(10)
    cfg = Config(window_days=WIN, half_life_days=HL, forecast_method="decayed_mean")
    sup = supply.forecast_supply(_ids(2), np.array([AS_OF - 400, AS_OF - 2]), aggs, tots, observed, AS_OF, cfg)
    obs = set(observed.tolist())
    np.testing.assert_allclose(sup.point, [[_oracle(organic[s, j], days, obs) for j in range(2)]
                                           for s in range(N_S)], rtol=1e-12)
    np.testing.assert_allclose(sup.total, [_oracle(totals[s], days, obs) for s in range(N_S)], rtol=1e-12)
    for a in (sup.low, sup.high, sup.total_low, sup.total_high):
        assert a.dtype == float and np.isnan(a).all()
    assert sup.low.shape == sup.high.shape == (N_S, 2) and sup.total_low.shape == sup.total_high.shape == (N_S,)
    assert sup.baselines is None
