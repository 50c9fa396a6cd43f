"""Supply forecasts (pipelines/scoring/forecast.py, supply.py): the model on
planted series, its baselines, and the new-enrollee bias it fixes, down to
`score_market`. The backtest over a generated world is in
tests/integration/test_backtest.py."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import Config
from pipelines.scoring import forecast as fc
from pipelines.scoring import market as market_scoring
from pipelines.scoring import signals
from schemas import DAILY_AGGREGATES, ENROLLMENTS, PROMOTION_SURFACES, SURFACE_TOTALS

HL, PHI = 14.0, 0.9
WEEK = np.array([1.15, 0.9, 0.95, 1.0, 1.05, 0.85, 1.1])      # Monday first, +-15%


def _target(dow: np.ndarray) -> int:
    return int((dow[-1] + 1) % 7)


# ------------------------------------------------------- truncated history ---
@pytest.mark.parametrize("pattern", [None, WEEK], ids=["flat", "weekday"])
def test_truncated_history_gets_the_same_forecast(pattern):
    """Two tracks with identical plays (100 a day, times the surface's weekday
    factor), the second observed for the last 7 days only: the same forecast,
    and the right one."""
    T = 28
    dow = np.arange(T) % 7
    f = np.ones(7) if pattern is None else pattern / np.exp(np.log(pattern).mean())
    fit = fc.fit_surface((1e6 * f[dow])[None, :], dow, HL)
    y = np.round(np.tile(100.0 * f[dow], (2, 1)))
    y[1, :T - 7] = 0.0
    mask = fc.observed_from_first_play(y)
    p, lo, hi = fc.forecast_tracks(y, mask, dow, _target(dow), fit.log_weekday, np.zeros(2, int), HL, PHI,
                                   day_factor=fit.day_factor)
    legacy = fc.decayed_mean(y, HL)
    print(f"\n[{'weekday' if pattern is not None else 'flat'}] model {p.round(2)}, 80% interval {lo} .. {hi}; "
          f"decayed mean over the window {legacy.round(2)}")
    assert abs(p[1] / p[0] - 1) <= 0.01
    assert abs(p[0] / (100 * f[_target(dow)]) - 1) <= 0.01
    assert np.all((lo <= p) & (p <= hi))
    assert legacy[1] < 0.5 * legacy[0]                 # what the decayed mean of the window did


AS_OF = dt.date(2024, 5, 20)
UTC = dt.timezone.utc


def _frame(rows, table):
    return pa.Table.from_pylist(rows, schema=table.arrow()).to_pandas()


def test_score_market_gives_a_new_enrollee_the_supply_of_its_twin():
    """docs/design.md §4: a track's history counts from its first play. Two tracks with
    the same 100 radio plays a day; the aggregates of the second hold only its
    last 7 days (it entered the enrollment export a week before its flight, as
    format-1 aggregates kept it). Their supply forecasts are within 1%; the
    decayed mean (forecast_method = decayed_mean) gives 100 against 39."""
    window = signals.window_days(AS_OF, 28)
    enroll = [dict(campaign_id="c", track_id=t, artist_id=f"a-{t}", licensor_id="l", market="SE",
                   surfaces=list(PROMOTION_SURFACES), start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 5, 31),
                   commission_rate=0.3, release_date=dt.date(2020, 1, 1), status="active",
                   updated_at=dt.datetime(2024, 5, 1, tzinfo=UTC)) for t in ("old", "new")]
    aggs = [dict(dt=d, track_id=t, market="SE", surface="radio", plays=100, listeners=100, skips=25, saves=5,
                 promoted_plays=0, ms_played=0, promoted_skips=0, promoted_saves=0)
            for t, days in (("old", window), ("new", window[-7:])) for d in days]
    totals = [dict(dt=d, market="SE", surface=s, plays=10_000, skips=2_500, saves=500, promoted_plays=0)
              for d in window for s in PROMOTION_SURFACES]
    args = (_frame(enroll, ENROLLMENTS), _frame(aggs, DAILY_AGGREGATES), _frame(totals, SURFACE_TOTALS), window,
            AS_OF)
    out = {}
    for method in ("model", "decayed_mean"):
        res = market_scoring.score_market("SE", *args, Config(forecast_method=method), method="exact")
        radio = res.scores[res.scores["surface"] == "radio"].set_index("track_id")
        out[method] = (radio.loc["old", "supply_forecast"], radio.loc["new", "supply_forecast"])
    print(f"\nsupply_forecast old/new: model {out['model'][0]:.2f} / {out['model'][1]:.2f}; "
          f"decayed mean {out['decayed_mean'][0]:.2f} / {out['decayed_mean'][1]:.2f}")
    old, new = out["model"]
    assert abs(new / old - 1) <= 0.01
    assert old == pytest.approx(100, rel=0.01)
    assert out["decayed_mean"][0] == pytest.approx(100) and out["decayed_mean"][1] == pytest.approx(39.05, abs=0.01)


# ------------------------------------------------------------------ surface ---
def test_holiday_is_rejected_and_weekday_factors_recovered():
    """A +40% day gets robust weight 0 and its factor 1.4; the weekday factors
    and the next day's forecast are those planted, within 3%."""
    rng = np.random.default_rng(3)
    T = 28
    dow = (np.arange(T) + 2) % 7
    f = WEEK / np.exp(np.log(WEEK).mean())
    base = 1e6 * f[dow] * np.exp(rng.normal(0, 0.01, (4, T)))
    base[:, 20] *= 1.4
    fit = fc.fit_surface(base, dow, HL)
    assert np.all(fit.robust[:, 20] == 0.0)
    np.testing.assert_allclose(fit.day_factor[:, 20], 1.4, rtol=0.04)
    assert np.all(fit.robust[:, np.r_[0:20, 21:T]].mean(axis=1) > 0.9)
    np.testing.assert_allclose(np.exp(fit.log_weekday), np.tile(f, (4, 1)), atol=0.03)
    p, lo, hi = fc.forecast_surface(fit, _target(dow), PHI)
    assert np.all(np.abs(p / (1e6 * f[_target(dow)]) - 1) < 0.03)
    assert np.all((lo < p) & (p < hi))


def test_few_observed_days_fall_back_to_a_level():
    """Two observed days (a new world) identify neither weekday effects nor a
    trend: the forecast is their level, and no day is rejected."""
    dow = np.arange(28) % 7
    totals = np.zeros((1, 28))
    totals[0, -2:] = [1000.0, 1100.0]
    present = totals[0] > 0
    fit = fc.fit_surface(totals, dow, HL, present)
    p, lo, hi = fc.forecast_surface(fit, _target(dow), PHI)
    assert 1000 <= p[0] <= 1100 and lo[0] < p[0] < hi[0]
    assert np.all(fit.log_weekday == pytest.approx(0.0, abs=1e-6))
    empty = fc.fit_surface(np.zeros((1, 28)), dow, HL, np.zeros(28, bool))
    assert fc.forecast_surface(empty, 0, PHI)[0][0] == 0.0


# ------------------------------------------------------------------- tracks ---
def test_sparse_tracks_first_play_correction():
    """Sparse Poisson tracks observed from their first play: the first day was
    chosen for having a play, and the correction keeps the mean forecast at the
    rate (uncorrected, it is biased up)."""
    rng = np.random.default_rng(0)
    N, T, lam = 20000, 28, 1.0
    start = rng.integers(0, T, N)
    y = np.where(np.arange(T)[None, :] >= start[:, None], rng.poisson(lam, (N, T)), 0)
    mask = fc.observed_from_first_play(y)
    act = mask.any(1)
    dow = np.arange(T) % 7
    args = (y, mask, dow, 0, np.zeros((1, 7)), np.zeros(N, int), HL, PHI)
    p, *_ = fc.forecast_tracks(*args)
    p0, *_ = fc.forecast_tracks(*args, first_play_correction=False)
    known = fc.decayed_mean(y, HL, np.arange(T)[None, :] >= start[:, None])[act].mean()
    print(f"\nrate 1: corrected {p[act].mean():.3f}, uncorrected {p0[act].mean():.3f}, "
          f"decayed mean from the (unknown) start {known:.3f}")
    assert abs(p[act].mean() / known - 1) < 0.02
    assert p0[act].mean() > p[act].mean()


def test_a_decaying_track_is_forecast_below_its_decayed_mean():
    """The damped trend: plays falling 2% a day are forecast near the next
    day's value; the decayed mean lags by about a week of decay."""
    T = 28
    dow = np.arange(T) % 7
    lam = 200 * np.exp(-0.02 * np.arange(T + 1))
    rng = np.random.default_rng(1)
    y = rng.poisson(np.tile(lam[:T], (400, 1)))
    p, lo, hi = fc.forecast_tracks(y, np.ones_like(y, bool), dow, _target(dow), np.zeros((1, 7)),
                                   np.zeros(400, int), HL, PHI, age=np.full(400, 100.0))
    dm = fc.decayed_mean(y, HL)
    print(f"\ndecaying 2%/day: truth {lam[T]:.1f}, model {p.mean():.1f}, decayed mean {dm.mean():.1f}")
    assert abs(p.mean() / lam[T] - 1) < 0.03
    assert dm.mean() / lam[T] - 1 > 0.1
    cover = np.mean((lo <= rng.poisson(lam[T], 400)) & (rng.poisson(lam[T], 400) <= hi))
    assert 0.6 < cover <= 1.0


def test_baselines():
    y = np.arange(1.0, 29.0)[None, :].repeat(2, 0)
    mask = np.ones_like(y, bool)
    mask[1, :25] = False
    assert fc.seasonal_naive(y, HL)[0] == y[0, -7]
    assert fc.seasonal_naive(y, HL, mask)[1] == pytest.approx(fc.decayed_mean(y, HL, mask)[1])
    w = fc.decay_weights(28, HL)
    assert w[-1] == 1.0 and w[-15] == pytest.approx(0.5)
    assert fc.decayed_mean(y, HL, mask)[1] == pytest.approx(np.sum(w[-3:] * y[1, -3:]) / w[-3:].sum())
    assert list(fc.weekdays([0, 4])) == [3, 0]          # 1970-01-01 was a Thursday, 1970-01-05 a Monday


# --------------------------------------------------------------- properties ---
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), pad=st.integers(1, 10), n=st.integers(3, 12))
def test_prepending_unobserved_days_changes_nothing(seed, pad, n):
    """A track's forecast depends only on its observed days: days before its
    first play change neither the point nor the interval."""
    rng = np.random.default_rng(seed)
    T = 21
    y = rng.poisson(rng.gamma(2.0, 10.0, n)[:, None] * np.ones(T))
    y[:, :3] = 0
    y[:, 3] = np.maximum(y[:, 3], 1)
    lw = np.log(rng.uniform(0.85, 1.15, 7))[None, :]
    lw -= lw.mean()
    dow = (np.arange(T + pad) + seed) % 7
    g = np.zeros(n, int)
    yp = np.concatenate([np.zeros((n, pad)), y], axis=1)
    a = fc.forecast_tracks(y, fc.observed_from_first_play(y), dow[pad:], int((dow[-1] + 1) % 7), lw, g, HL, PHI)
    b = fc.forecast_tracks(yp, fc.observed_from_first_play(yp), dow, int((dow[-1] + 1) % 7), lw, g, HL, PHI)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30))
def test_rows_are_permutation_equivariant_and_intervals_ordered(seed, n):
    rng = np.random.default_rng(seed)
    T = 28
    y = rng.poisson(rng.gamma(1.0, 20.0, n)[:, None] * np.ones(T))
    y[rng.random(n) < 0.3, :rng.integers(1, T)] = 0
    mask = fc.observed_from_first_play(y)
    dow = np.arange(T) % 7
    age = rng.integers(0, 400, n)
    perm = rng.permutation(n)
    args = (dow, 3, np.zeros((1, 7)), np.zeros(n, int), HL, PHI)
    p, lo, hi = fc.forecast_tracks(y, mask, *args, age=age)
    q, qlo, qhi = fc.forecast_tracks(y[perm], mask[perm], *args, age=age[perm])
    np.testing.assert_allclose(q, p[perm], rtol=1e-6)
    np.testing.assert_array_equal(qlo, lo[perm])
    assert np.all((0 <= lo) & (lo <= hi)) and np.all(p >= 0)
    assert np.all(p[~mask.any(1)] == 0)


def test_daily_matrix_places_each_row_on_its_day():
    days = np.arange(19_000, 19_005)
    aggs = pd.DataFrame({"dt": (days[[0, 4, 4]]).astype("datetime64[D]"), "track_id": ["a", "b", "z"],
                         "market": "SE", "surface": ["radio", "mixes", "radio"], "plays": [5, 7, 9],
                         "promoted_plays": [1, 0, 0]})
    m = signals.daily_matrix(np.array(["a", "b"], dtype=object), aggs, days)
    assert m["plays"].shape == (3, 2, 5) and m["plays"].sum() == 12        # the unknown track z is left out
    assert m["plays"][0, 0, 0] == 5 and m["organic"][0, 0, 0] == 4 and m["plays"][2, 1, 4] == 7


def test_daily_matrix_edges():
    """One track, one day, one row; an empty window with rows; a day after the
    window; an unknown surface: each read or left out, never misplaced."""
    day = np.array([19_000])
    one = pd.DataFrame({"dt": day.astype("datetime64[D]"), "track_id": ["a"], "market": "SE", "surface": ["radio"],
                        "plays": [5], "promoted_plays": [2]})
    m = signals.daily_matrix(np.array(["a"], dtype=object), one, day)
    assert m["plays"].tolist() == [[[5.0]], [[0.0]], [[0.0]]] and m["organic"][0, 0, 0] == 3.0
    empty = signals.daily_matrix(np.array(["a"], dtype=object), one, np.array([], dtype=np.int64))
    assert empty["plays"].shape == empty["organic"].shape == (3, 1, 0)
    none = signals.daily_matrix(np.array(["a"], dtype=object), one.iloc[:0], day)
    assert none["plays"].tolist() == none["organic"].tolist() == [[[0.0]], [[0.0]], [[0.0]]]
    later = one.assign(dt=np.array([19_001]).astype("datetime64[D]"), surface=["tv"])
    assert signals.daily_matrix(np.array(["a"], dtype=object), pd.concat([one, later]), day)["plays"].sum() == 5


def test_surface_daily_edges():
    """Totals on their (surface, day); rows of an unknown surface, before or
    after the window are left out; one window day; no window day."""
    days = np.arange(19_000, 19_003)
    totals = pd.DataFrame({"dt": np.array([19_000, 19_002, 19_003, 18_999, 19_001]).astype("datetime64[D]"),
                           "market": "SE", "surface": ["radio", "mixes", "radio", "radio", "tv"],
                           "plays": [10, 20, 40, 80, 160]})
    out = signals.surface_daily(totals, days)
    assert out.tolist() == [[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 20.0]]
    assert signals.surface_daily(totals.iloc[:1], days[:1]).tolist() == [[10.0], [0.0], [0.0]]
    assert signals.surface_daily(totals, days[:0]).shape == (3, 0)
