"""The lift issue's statistical criteria, on a seeded planted world
(`jobs.simulate.lift_world`, 240 campaigns: planted lifts 0, 0.10, 0.30, 0.60,
a 10% holdout by the real assignment function, +20% organic growth over the
month on half the campaigns), through the estimators the pipeline publishes.

Figures are printed (`pytest -s`); `python -m tests.support.lift_eval --seeds
0 1 2 3 4 5` prints them for more seeds. The world is reduced to the
estimator's sufficient statistics in numpy (~6 s), so it runs in `make test`;
tests/integration/test_campaign_lift.py checks that the pipeline computes the
same statistics from input files.
"""
from __future__ import annotations

import functools

import pytest

from jobs.simulate.lift_world import LIFTS
from tests.support.lift_eval import BIG, figures, world


@functools.lru_cache(maxsize=None)
def planted(profile: str = "base"):
    return world(0, profile)


def test_the_world_is_what_the_issue_asks_for():
    w = planted()
    assert len(w) >= 200
    assert set(w.planted_lift) == set(LIFTS)
    assert w.trended.mean() == 0.5 and w.groupby("planted_lift").trended.mean().eq(0.5).all()
    share = w.pop_n_g.sum() / (w.pop_n_g.sum() + w.pop_n_t.sum())
    assert abs(share - 0.10) < 0.005, share
    assert (w.n_g < 200).sum() >= 10, "small holdout arms, where intervals are hardest"
    assert ((w.n_t >= BIG) & (w.n_g >= BIG)).sum() >= 40
    assert (w.new_g / w.n_g).mean() > 0.2


def test_published_lift_meets_every_criterion():
    """`campaign_lift.lift` (the pre-period-adjusted estimator): coverage of the
    planted lift within 90-98%; at most 7% of zero-lift campaigns exclude 0;
    at least 90% of campaigns with 2,000+ exposed listeners per arm within
    0.05; on the trended half, historical_lift overstates by 0.10 or more on
    average while the holdout lift is within 0.02."""
    f = figures(planted(), adjusted=True)
    print("\npublished (adjusted):", {k: round(v, 4) for k, v in f.items()})
    assert f["valid"] >= 0.95 * f["campaigns"]
    assert 0.90 <= f["coverage"] <= 0.98
    assert f["zero"] >= 50 and f["zero_excluding_0"] <= 0.07
    assert f["big"] >= 40 and f["big_within_005"] >= 0.90
    assert f["trended_historical_bias"] >= 0.10
    assert abs(f["trended_holdout_bias"]) <= 0.02
    assert abs(f["untrended_historical_bias"]) <= 0.03, "no trend, no before/after bias: the world is fair"


def test_plain_estimator_is_honest_too():
    """The unadjusted ratio (published as lift_unadjusted) has honest intervals
    as well; the adjusted one is published because it is as honest and
    narrower (docs/analysts.md)."""
    f = figures(planted(), adjusted=False)
    print("\nplain:", {k: round(v, 4) for k, v in f.items()})
    assert 0.90 <= f["coverage"] <= 0.98 and f["zero_excluding_0"] <= 0.07
    w = planted()
    v = w[w.valid]
    narrower = ((v.high_adj - v.low_adj) / (v.high - v.low)).mean()
    print(f"mean interval width, adjusted / plain: {narrower:.3f}")
    assert narrower < 0.97


def test_intent_to_treat_is_diluted_but_honest_for_its_own_estimand():
    f = figures(planted(), adjusted=True)
    assert f["mean_itt"] < f["mean_planted_lift"] - 0.05, "without exposures the effect is diluted"
    assert abs(f["mean_itt"] - f["mean_planted_itt"]) < 0.03
    assert f["itt_coverage"] >= 0.90


def test_heavy_tailed_world_keeps_intervals_honest():
    """Heavier tails and more zeros (CV^2 2-6, ~55% new listeners): coverage
    holds; precision is not promised there. With ~60 zero-lift campaigns a
    calibrated 5% test excludes 0 for more than 7% of them about a quarter of
    the time (binomial), so the bound here is the 99th percentile of that
    count, 7 of 59 (seed 0 measures 5 of 59 = 8.5%; six seeds pooled: see
    docs/analysts.md)."""
    f = figures(planted("heavy"), adjusted=True)
    print("\nheavy:", {k: round(v, 4) for k, v in f.items()})
    assert 0.90 <= f["coverage"] <= 0.98 and f["zero_excluding_0"] <= 0.12


@pytest.mark.parametrize("adjusted", [True, False])
def test_zero_lift_campaigns_are_not_biased(adjusted):
    """Zero planted lift: the mean estimate is within 0.03 of 0 (the ratio of
    two noisy means is biased upward by ~CV^2/n for tiny holdout arms; the
    minimum-data rule keeps that small)."""
    w = planted()
    v = w[w.valid & (w.planted_lift == 0)]
    col = "lift_adj" if adjusted else "lift"
    assert abs(v[col].mean()) < 0.03, v[col].mean()
