"""Delivery against the plan and the serving gain (`pipelines.scoring.delivery`),
as pure functions: the reconciliation rows, the gain estimator (its start at
1, its recovery of a planted gain, its clamp and smoothing, calibration off),
the delivery gate's count of missed days, and the gate itself."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.gates.delivery import delivery
from jobs.manifest import GateResult, Manifest, validation_text
from pipelines.config import Config
from pipelines.scoring.delivery import TINY, boost_probability, reconcile, serving_gain
from pipelines.scoring.signals import daynum
from schemas import CAPACITY

DAY = dt.date(2026, 11, 20)
SURFACES = ("radio", "autoplay", "mixes")


def aggregates(rows):
    """daily_aggregates rows (track, surface, plays, promoted) of DAY, plus one
    of the day before that must be ignored."""
    df = pd.DataFrame(rows, columns=["track_id", "surface", "plays", "promoted_plays"])
    df["dt"] = DAY
    other = pd.DataFrame([["t1", "radio", 50, 40]], columns=df.columns[:4]).assign(dt=DAY - dt.timedelta(days=1))
    return pd.concat([df, other], ignore_index=True)


def plan(rows):
    return pd.DataFrame(rows, columns=["track_id", "market", "surface", "campaign_id", "planned_promoted_plays",
                                       "boost_probability", "supply_forecast"])


def test_reconcile_joins_plan_and_logs_row_by_row():
    p = plan([["t1", "US", "radio", "c1", 10.0, 0.5, 20.0],      # planned, delivered
              ["t2", "US", "radio", "c1", 4.0, 0.2, 20.0],       # planned, nothing delivered
              ["t3", "US", "mixes", "c2", 0.0, 0.0, 30.0]])      # not planned, nothing delivered: no row
    aggs = aggregates([["t1", "radio", 30, 12],
                       ["t4", "autoplay", 9, 3],                 # delivered without a plan row
                       ["t5", "mixes", 40, 0]])                  # neither: no row
    rows, sums = reconcile("US", p, aggs, daynum(DAY), "snap-1")
    assert rows[["track_id", "surface"]].values.tolist() == [["t1", "radio"], ["t2", "radio"], ["t4", "autoplay"]]
    assert rows["realised_promoted_plays"].tolist() == [12, 0, 3]
    assert rows["planned_promoted_plays"].tolist() == [10.0, 4.0, 0.0]
    assert rows["organic_plays"].tolist() == [18, 0, 6]
    assert rows["ratio"].tolist()[:2] == [1.2, 0.0] and np.isnan(rows["ratio"].iloc[2])
    assert rows["campaign_id"].tolist()[:2] == ["c1", "c1"] and rows["campaign_id"].iloc[2] is np.nan
    assert set(rows["plan_snapshot_id"]) == {"snap-1"}
    r = dict(zip(SURFACES, range(3)))
    assert sums["planned"][r["radio"]] == 14.0 and sums["realised"][r["radio"]] == 12
    assert sums["realised"][r["autoplay"]] == 3      # every promoted play counts in the delivery ratio ...
    assert sums["gain_realised"][r["autoplay"]] == 0  # ... but only boosted rows in the gain
    assert sums["gain_requested"][r["radio"]] == pytest.approx(0.5 * 20 + 0.2 * 20)
    assert sums["measured"].all()


def test_reconcile_without_a_plan_keeps_every_promoted_play():
    rows, sums = reconcile("US", None, aggregates([["t1", "radio", 30, 12], ["t2", "mixes", 5, 0]]),
                           daynum(DAY), None)
    assert rows["realised_promoted_plays"].tolist() == [12]
    assert rows["plan_snapshot_id"].isna().all() and not sums["measured"].any()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(SURFACES),
                          st.integers(0, 50), st.integers(0, 50)), max_size=12, unique_by=lambda r: r[:2]),
       st.lists(st.tuples(st.sampled_from(["a", "b", "c", "e"]), st.sampled_from(SURFACES),
                          st.floats(0, 100), st.floats(0, 1)), max_size=12, unique_by=lambda r: r[:2]))
def test_reconciled_realised_plays_are_the_aggregates_promoted_plays(logged, planned):
    """Every promoted play of the day's aggregates is in exactly one row, with
    its count, whatever was planned; every planned row is there."""
    aggs = aggregates([[t, s, max(p, q), q] for t, s, p, q in logged])
    p = plan([[t, "US", s, "c", x, b, 10.0] for t, s, x, b in planned])
    rows, sums = reconcile("US", p, aggs, daynum(DAY), "s")
    got = {(r.track_id, r.surface): r.realised_promoted_plays for r in rows.itertuples()
           if r.realised_promoted_plays}
    assert got == {(t, s): q for t, s, _, q in logged if q}
    assert {(t, s) for t, s, x, _ in planned if x > TINY} <= set(zip(rows["track_id"], rows["surface"]))
    assert sums["realised"].sum() == sum(q for *_, q in logged)
    assert sums["planned"].sum() == pytest.approx(sum(x for _, _, x, _ in planned if x > TINY))


def state(realised, requested, miss=(0, 0, 0), requested_organic=None):
    return pd.DataFrame({"market": "US", "surface": SURFACES, "gain_realised": realised,
                         "gain_requested": requested,
                         "gain_requested_organic": requested if requested_organic is None else requested_organic,
                         "delivery_miss_days": miss})


def state_of(out):
    return state(out["gain_realised"], out["gain_requested"], out["delivery_miss_days"],
                 out["gain_requested_organic"])


def sums(planned, realised, gain_realised, gain_requested, measured=True, requested_organic=None):
    return {"planned": np.array(planned, float), "realised": np.array(realised, float),
            "gain_realised": np.array(gain_realised, float), "gain_requested": np.array(gain_requested, float),
            "gain_requested_organic": np.array(gain_requested if requested_organic is None else requested_organic,
                                               float),
            "measured": np.full(3, measured)}


def test_a_new_market_starts_at_gain_one():
    g = serving_gain(None, sums([0] * 3, [0] * 3, [0] * 3, [0] * 3, measured=False), Config())
    assert g["serving_gain"].tolist() == [1.0, 1.0, 1.0]
    assert g["delivery_miss_days"].tolist() == [0, 0, 0] and np.isnan(g["delivery_ratio"]).all()


@settings(max_examples=50, deadline=None)
@given(st.floats(0.5, 1.5), st.integers(200, 5000))
def test_the_gain_estimate_recovers_a_planted_gain(g, requested):
    """Fed days on which serving delivers g times what it was asked, the
    estimate reaches g within the prior's pull (k / (k + sum of requests))."""
    cfg = Config()
    st_ = None
    for _ in range(6):
        out = serving_gain(st_, sums([requested] * 3, [g * requested] * 3, [g * requested] * 3, [requested] * 3),
                           cfg)
        st_ = state_of(out)
    pull = cfg.gain_prior_plays / (cfg.gain_prior_plays + requested)
    assert out["serving_gain"] == pytest.approx([g] * 3, abs=abs(1 - g) * pull + 1e-9)
    assert out["serving_response"] == pytest.approx(out["serving_gain"])


def test_the_applied_gain_takes_in_the_forecasts_bias_and_the_response_does_not():
    """Organic plays 10% below the forecast on the boosted rows: serving,
    answering g per organic play, delivers 0.9 g of what b * E asked for. The
    applied gain learns 0.9 g (so delivery meets the plan); serving_response
    recovers g."""
    cfg, g, st_ = Config(gain_prior_plays=0.0), 0.8, None
    for _ in range(4):
        out = serving_gain(st_, sums([800] * 3, [720] * 3, [g * 900] * 3, [1000] * 3, requested_organic=[900] * 3),
                           cfg)
        st_ = state_of(out)
    assert out["serving_gain"] == pytest.approx([0.9 * g] * 3)
    assert out["serving_response"] == pytest.approx([g] * 3)


def test_the_gain_follows_a_step_with_the_half_life():
    """Decay-weighted sums: after a step from 1 to 0.6, one day moves the
    estimate by 1 / (1 + sum of older weights), and it keeps moving."""
    cfg = Config(gain_prior_plays=0.0, gain_half_life_days=2.0)
    decay = 0.5 ** 0.5
    st_ = state([1000.0 / (1 - decay)] * 3, [1000.0 / (1 - decay)] * 3)   # steady at gain 1
    out = serving_gain(st_, sums([1000] * 3, [600] * 3, [600] * 3, [1000] * 3), cfg)
    w_old = decay / (1 - decay)
    assert out["serving_gain"][0] == pytest.approx((w_old + 0.6) / (w_old + 1))
    again = serving_gain(state_of(out), sums([1000] * 3, [600] * 3, [600] * 3, [1000] * 3), cfg)
    assert 0.6 < again["serving_gain"][0] < out["serving_gain"][0]


def test_the_gain_is_clamped_and_calibration_off_applies_one():
    cfg = Config(gain_min=0.5, gain_max=2.0)
    low = serving_gain(None, sums([1000] * 3, [10] * 3, [10] * 3, [1000] * 3), cfg)
    assert low["serving_gain"].tolist() == [0.5] * 3
    high = serving_gain(None, sums([100] * 3, [900] * 3, [900] * 3, [100] * 3), cfg)
    assert high["serving_gain"].tolist() == [2.0] * 3
    off = serving_gain(None, sums([1000] * 3, [700] * 3, [700] * 3, [1000] * 3), Config(calibrate_serving_gain=0))
    assert off["serving_gain"].tolist() == [1.0] * 3
    assert off["serving_gain_estimate"] == pytest.approx([(700 + 10) / (1000 + 10)] * 3)


def test_a_day_without_a_plan_keeps_the_gain_and_ends_a_streak():
    st_ = state([500.0] * 3, [1000.0] * 3, miss=(3, 0, 1))
    out = serving_gain(st_, sums([0] * 3, [40] * 3, [0] * 3, [0] * 3, measured=False), Config())
    assert out["gain_realised"].tolist() == [500.0] * 3 and out["gain_requested"].tolist() == [1000.0] * 3
    assert out["delivery_miss_days"].tolist() == [0, 0, 0]


def test_missed_days_count_consecutive_misses_above_the_bound():
    cfg = Config(gate_delivery_max_miss=0.15, gate_delivery_min_planned=200)
    st_ = state([0.0] * 3, [0.0] * 3, miss=(1, 4, 2))
    #            radio: 30% short   autoplay: 10% short   mixes: 50% short but too few planned to judge
    out = serving_gain(st_, sums([1000, 1000, 100], [700, 900, 50], [0] * 3, [0] * 3), cfg)
    assert out["delivery_miss_days"].tolist() == [2, 0, 0]
    assert out["delivery_ratio"] == pytest.approx([0.7, 0.9, 0.5])


def test_boost_probability_divides_by_the_gain_and_caps_at_one():
    x = np.array([[5.0, 10.0, 0.0], [5.0, 10.0, 3.0]])
    supply = np.array([[20.0, 20.0, 0.0], [20.0, 20.0, 10.0]])
    b = boost_probability(x, supply, np.array([0.5, 2.0]))
    assert b.tolist() == [[0.5, 1.0, 0.0], [0.125, 0.25, 0.15]]


def test_boost_probability_of_a_track_forecast_below_one_play():
    """Only E * g = 0 gives 0: a sparse track (E = 0.8 plays, or 0.25 with g = 2) gets x / (E g)
    like any other. Catches a guard on E * g > 1 (or >= 1) in place of > 0."""
    x = np.array([[0.4, 0.2, 0.3, 0.0]])
    supply = np.array([[0.8, 0.25, 1.0, 0.5]])
    assert boost_probability(x, supply, np.array([1.0])).tolist() == [[0.5, 0.8, 0.3, 0.0]]
    assert boost_probability(x, supply, np.array([2.0])).tolist() == [[0.25, 0.4, 0.15, 0.0]]


# ------------------------------------------------------------ the gate ---
def capacity(miss_days, ratios, planned=1000.0):
    n = len(miss_days)
    data = {f.name: pa.nulls(n, f.type) if f.nullable else pa.array([0] * n).cast(f.type)
            for f in CAPACITY.arrow() if f.type != pa.string() and f.type != pa.date32()}
    data.update(market=pa.array(["US"] * n), surface=pa.array(list(SURFACES[:n])),
                delivery_miss_days=pa.array(miss_days, pa.int64()), delivery_ratio=pa.array(ratios, pa.float64()),
                reconciled_planned=pa.array([planned] * n), reconciled_realised=pa.array(
                    [int(round(planned * (r if r is not None else 0))) for r in ratios], pa.int64()))
    return pa.table(data)


def test_the_delivery_gate_warns_by_default_and_blocks_when_configured():
    fired = capacity([2, 0, 1], [0.6, 1.02, 0.7])
    r = delivery(fired, Config())
    assert not r.passed and r.measured == 1 and r.warn_only and not r.blocking and r.warning
    assert "US radio" in r.detail and "2 days in a row" in r.detail
    blocking = delivery(fired, Config(gate_delivery_blocks=1))
    assert blocking.blocking and not blocking.warn_only
    blocking.skipped = True
    assert not blocking.blocking
    ok = delivery(capacity([1, 0, 0], [0.7, 1.0, 0.98]), Config())
    assert ok.passed and "largest |realised / planned - 1| 30.0%" in ok.detail
    assert delivery(capacity([0, 0, 0], [None, None, None], planned=0.0), Config()).passed


def test_a_warn_only_gate_is_recorded_and_read_back():
    results = [GateResult("unique_rows", True, "ok"), GateResult("delivery", False, "US radio off", 1,
                                                                  warn_only=True)]
    assert validation_text(results).startswith("passed, with a WARNING from delivery")
    doc = {"snapshot_id": "s", "score_date": "2026-11-21", "as_of": "2026-11-20",
           "created_at": "2026-11-21T00:00:00+00:00", "run_fingerprint": "f", "config": {}, "tables": {},
           "validation": [r.to_dict() for r in results]}
    m = Manifest.from_dict(doc)
    assert m.warning_gates == ["delivery"] and m.blocking_gates == [] and m.gates_passed
    old = dict(doc, validation=[{"name": "delivery", "passed": False, "detail": "x"}])  # before warn_only existed
    assert Manifest.from_dict(old).blocking_gates == ["delivery"]
