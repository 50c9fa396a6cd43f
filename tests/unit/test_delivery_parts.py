"""The parts of `pipelines.scoring.delivery` one at a time, on small planted
inputs whose answers are derived by hand in the comments: the reconciliation
table's columns and types (against the `delivery_reconciliation` schema), its
unplanned and null rows, the per-surface sums behind the gain, the planned
threshold TINY, and the serving-gain update (what counts as an informative
day, the prior at 0, the delivery ratio and the gate's boundaries, the state
read from an older snapshot, the output types against the `capacity`
schema), and the cap of `boost_probability`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Config
from pipelines.scoring.delivery import (RECONCILIATION_COLUMNS, TINY, _state_column, boost_probability, reconcile,
                                        serving_gain)
from pipelines.scoring.signals import daynum
from schemas import CAPACITY, DELIVERY_RECONCILIATION, PROMOTION_SURFACES
from tests.unit.test_delivery import DAY, aggregates, plan, state, sums

R, A, M = (PROMOTION_SURFACES.index(s) for s in ("radio", "autoplay", "mixes"))
NUMPY_TYPE = {"string": np.dtype(object), "double": np.dtype(np.float64), "int64": np.dtype(np.int64)}


def planted():
    """One market's plan and logs day, every kind of row:
    t1 radio   planned 10 (b 0.5, E 20), delivered 12 of 30 plays (organic 18)
    t2 radio   planned 4  (b 0.2, E 20), nothing in the logs
    t3 mixes   planned 6  (b 1.0, E 5),  delivered 7 of 9 plays (organic 2)
    t4 autoplay not planned,             delivered 3 of 9 plays (organic 6)
    t5 mixes   planned 0 (no row),       nothing delivered (no row)
    t6 radio   not planned,              50 organic plays, none promoted (no row)"""
    p = plan([["t1", "US", "radio", "c1", 10.0, 0.5, 20.0],
              ["t2", "US", "radio", "c1", 4.0, 0.2, 20.0],
              ["t3", "US", "mixes", "c2", 6.0, 1.0, 5.0],
              ["t5", "US", "mixes", "c2", 0.0, 0.0, 30.0]])
    aggs = aggregates([["t1", "radio", 30, 12], ["t3", "mixes", 9, 7], ["t4", "autoplay", 9, 3],
                       ["t6", "radio", 50, 0]])
    return p, aggs


def assert_schema_types(out: pd.DataFrame):
    """The frame's columns are RECONCILIATION_COLUMNS, the schema's columns
    but the two constants `_finish` adds, each with the numpy type of its
    schema type."""
    assert tuple(out.columns) == RECONCILIATION_COLUMNS
    fields = {f.name: f for f in DELIVERY_RECONCILIATION.fields}
    assert set(fields) - set(out.columns) == {"score_date", "snapshot_id"}
    for c in out.columns:
        assert out[c].dtype == NUMPY_TYPE[fields[c].type], c


# ------------------------------------------------------------ reconcile ---
def test_reconciliation_columns_and_types_follow_the_schema():
    """Counts stay int64 (realised_promoted_plays, organic_plays) even when a
    planned row has nothing in the logs (the outer join leaves it null, so a
    missing cast to int64 leaves floats); doubles are float64, strings object.
    Catches dropping the int64 casts after the join."""
    p, aggs = planted()
    out, _ = reconcile("US", p, aggs, daynum(DAY), "snap-1")
    assert_schema_types(out)
    assert out["track_id"].tolist() == ["t1", "t2", "t3", "t4"]
    assert out["realised_promoted_plays"].tolist() == [12, 0, 7, 3]
    assert out["organic_plays"].tolist() == [18, 0, 2, 6]


@pytest.mark.parametrize("with_plan", [False, True])
def test_without_a_plan_or_without_logs_the_table_keeps_its_types(with_plan):
    """An empty logs day (no aggregates rows that day) with no plan: an empty
    table with the schema's columns and types, nothing measured, all sums 0.
    With a plan: one row per planned row, nothing realised, ratio 0."""
    p, aggs = planted()
    day_before = aggs[aggs["dt"] != DAY]   # only the day before's row: nothing on the logs day
    out, s = reconcile("US", p if with_plan else None, day_before, daynum(DAY), "snap-1" if with_plan else None)
    assert_schema_types(out)
    if with_plan:
        assert out["track_id"].tolist() == ["t1", "t2", "t3"]
        assert out["realised_promoted_plays"].tolist() == [0, 0, 0] and out["ratio"].tolist() == [0.0, 0.0, 0.0]
        # b * E on the boosted rows: radio 0.5*20 + 0.2*20 = 14, mixes 1*5 = 5; nothing organic
        assert s["gain_requested"].tolist() == [14.0, 0.0, 5.0]
        assert s["gain_requested_organic"].tolist() == [0.0] * 3 and s["measured"].all()
    else:
        assert len(out) == 0 and not s["measured"].any()
        for k in ("planned", "realised", "gain_realised", "gain_requested", "gain_requested_organic"):
            assert s[k].tolist() == [0.0] * 3, k


def test_an_empty_aggregates_table_reconciles_the_plan_alone():
    """No aggregates rows at all (an empty table with its columns): the
    planned rows t1, t2, t3 with nothing realised (ratio 0); planned sums
    radio 10 + 4, mixes 6; realised 0 everywhere."""
    p, aggs = planted()
    out, s = reconcile("US", p, aggs.iloc[:0], daynum(DAY), "snap-1")
    assert_schema_types(out)
    assert out["track_id"].tolist() == ["t1", "t2", "t3"] and out["ratio"].tolist() == [0.0] * 3
    assert s["planned"] == pytest.approx([14.0, 0.0, 6.0]) and s["realised"].tolist() == [0.0] * 3


def test_a_logs_day_without_a_plan_has_the_schema_types():
    """plan None (no snapshot for that day): the delivered rows, planned 0,
    boost 0, supply 0, campaign and ratio null, with the schema's types."""
    _, aggs = planted()
    out, s = reconcile("US", None, aggs, daynum(DAY), None)
    assert_schema_types(out)
    assert out["track_id"].tolist() == ["t1", "t3", "t4"]
    assert out["planned_promoted_plays"].tolist() == [0.0] * 3 and out["supply_forecast"].tolist() == [0.0] * 3
    assert out["ratio"].isna().all() and out["campaign_id"].isna().all()
    assert s["realised"].tolist() == [12.0, 3.0, 7.0] and s["gain_realised"].tolist() == [0.0] * 3


def test_an_unplanned_row_reads_zero_plan_values():
    """Schema: planned_promoted_plays, boost_probability and supply_forecast
    are 0 when not planned, ratio and campaign_id null. t4 was delivered
    without a plan row. Catches filling a missing supply with anything but 0."""
    p, aggs = planted()
    out, _ = reconcile("US", p, aggs, daynum(DAY), "snap-1")
    t4 = out[out["track_id"] == "t4"].iloc[0]
    assert (t4["planned_promoted_plays"], t4["boost_probability"], t4["supply_forecast"]) == (0.0, 0.0, 0.0)
    assert np.isnan(t4["ratio"]) and pd.isna(t4["campaign_id"])
    # a planned row keeps its plan's values and its ratio 12 / 10
    t1 = out[out["track_id"] == "t1"].iloc[0]
    assert (t1["supply_forecast"], t1["boost_probability"], t1["ratio"]) == (20.0, 0.5, pytest.approx(1.2))


def test_the_gain_sums_are_the_boosted_rows_by_surface():
    """By hand over planted() (surfaces radio, autoplay, mixes):
    gain_realised = realised on boosted rows:       radio 12 + 0, autoplay 0 (t4 unboosted), mixes 7
    gain_requested = b * E on boosted rows:         radio 0.5*20 + 0.2*20 = 14, autoplay 0, mixes 1*5 = 5
    gain_requested_organic = b * organic plays:     radio 0.5*18 + 0.2*0 = 9, autoplay 0, mixes 1*2 = 2
    planned (all rows): 14, 0, 6; realised (all rows): 12, 3, 7.
    Catches counting boosted rows instead of summing their plays, and b / organic."""
    p, aggs = planted()
    _, s = reconcile("US", p, aggs, daynum(DAY), "snap-1")
    assert s["gain_realised"].tolist() == [12.0, 0.0, 7.0]
    assert s["gain_requested"] == pytest.approx([14.0, 0.0, 5.0])
    assert s["gain_requested_organic"] == pytest.approx([9.0, 0.0, 2.0])
    assert s["planned"] == pytest.approx([14.0, 0.0, 6.0]) and s["realised"].tolist() == [12.0, 3.0, 7.0]


def test_a_null_planned_value_is_nothing_planned():
    """A plan row whose planned_promoted_plays is null (PLAN_COLUMNS: what an
    older snapshot lacks reads as missing) was not planned (x > 0 is planned):
    its delivered plays form an unplanned row (plan values 0, campaign and
    ratio null) and count in no gain sum. Catches reading null x as planned."""
    p = plan([["t1", "US", "radio", "c9", np.nan, 0.4, 20.0]])
    out, s = reconcile("US", p, aggregates([["t1", "radio", 30, 5]]), daynum(DAY), "snap-1")
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["planned_promoted_plays"], row["boost_probability"], row["supply_forecast"]) == (0.0, 0.0, 0.0)
    assert pd.isna(row["campaign_id"]) and np.isnan(row["ratio"]) and row["realised_promoted_plays"] == 5
    assert s["gain_requested"].tolist() == [0.0] * 3 and s["gain_realised"].tolist() == [0.0] * 3
    assert s["planned"].tolist() == [0.0] * 3 and s["realised"].tolist() == [5.0, 0.0, 0.0]


@pytest.mark.parametrize("x", [TINY / 2, TINY, 2 * TINY, 1.0])
def test_planned_or_not_is_one_decision_around_tiny(x):
    """Around the threshold TINY, every delivered row is either planned
    (x > 0 reported, ratio = realised / x, campaign and b set, x in the sums)
    or not (x, b reported 0, ratio and campaign null, 0 in the sums), never
    part of each (schema: 0 / null "when not planned"). Catches a plan-side
    threshold that keeps x = TINY while the ratio drops it."""
    p = plan([["t1", "US", "radio", "c1", x, 0.5, 20.0]])
    out, s = reconcile("US", p, aggregates([["t1", "radio", 30, 5]]), daynum(DAY), "snap-1")
    row = out.iloc[0]
    planned = row["planned_promoted_plays"] > 0
    assert planned == (not np.isnan(row["ratio"])) == (not pd.isna(row["campaign_id"]))
    assert planned == (row["boost_probability"] > 0) == (s["planned"][R] > 0) == (s["gain_requested"][R] > 0)
    if planned:
        assert row["planned_promoted_plays"] == x and row["ratio"] == pytest.approx(5 / x)
    assert planned == (x > TINY)   # TINY itself is rounding dust, as the code's `> TINY` everywhere says


# --------------------------------------------------------- serving_gain ---
def test_a_measured_day_that_boosted_nothing_carries_the_sums_over():
    """serving_gain: "a day adds to the sums only when a plan existed and
    boosted something there; otherwise they carry over unchanged". A plan
    existed (measured) but requested nothing: the sums stay (no decay) and
    the estimate is (500 + 10) / (1000 + 10) with the default prior 10.
    Catches `measured | requested > 0` and `requested >= 0`."""
    st_ = state([500.0] * 3, [1000.0] * 3, requested_organic=[800.0] * 3)
    out = serving_gain(st_, sums([0] * 3, [0] * 3, [0] * 3, [0] * 3, measured=True, requested_organic=[0] * 3),
                       Config())
    assert out["gain_realised"].tolist() == [500.0] * 3 and out["gain_requested"].tolist() == [1000.0] * 3
    assert out["gain_requested_organic"].tolist() == [800.0] * 3
    assert out["serving_gain"] == pytest.approx([510 / 1010] * 3)
    assert out["serving_response"] == pytest.approx([510 / 810] * 3)


def test_a_day_with_a_small_request_counts():
    """A day whose boosted rows asked for less than one play (b 0.05 on E 10:
    0.5) still boosted something: with no history the sums become the day's
    (realised 1, requested 0.5) and the estimate (1 + 10) / (0.5 + 10).
    Catches a threshold of 1 play on the request."""
    out = serving_gain(None, sums([0.5] * 3, [1] * 3, [1] * 3, [0.5] * 3), Config())
    assert out["gain_realised"].tolist() == [1.0] * 3 and out["gain_requested"].tolist() == [0.5] * 3
    assert out["serving_gain"] == pytest.approx([11 / 10.5] * 3)


def test_with_no_prior_the_estimate_is_the_plain_ratio_and_starts_at_one():
    """gain_prior_plays = 0 (allowed): a surface with nothing requested yet
    (0 / 0) starts at 1; one with sums is realised / requested even under one
    play: radio 0.4 / 0.8 = 0.5, response 0.4 / 0.5 = 0.8; autoplay 3 / 2 = 1.5.
    Catches dividing where the total is 0 (or not above 1), and an
    uninitialised result where it is 0."""
    cfg = Config(gain_prior_plays=0.0)
    out = serving_gain(None, sums([1, 2, 0], [0, 3, 0], [0.4, 3, 0], [0.8, 2, 0], requested_organic=[0.5, 2, 0]),
                       cfg)
    assert out["serving_gain"] == pytest.approx([0.5, 1.5, 1.0])
    assert out["serving_gain_estimate"] == pytest.approx([0.5, 1.5, 1.0])
    assert out["serving_response"] == pytest.approx([0.8, 1.5, 1.0])
    new = serving_gain(None, sums([0] * 3, [0] * 3, [0] * 3, [0] * 3, measured=False), cfg)
    assert new["serving_gain"].tolist() == [1.0] * 3 and new["serving_response"].tolist() == [1.0] * 3


def test_the_delivery_ratio_is_null_where_nothing_was_planned():
    """delivery_ratio = realised / planned, null when nothing was planned
    (capacity schema), even with promoted plays delivered: radio 40 / 0 ->
    null, autoplay 900 / 1000 = 0.9, mixes 0 / 0 -> null; no miss where null.
    Catches dividing by 0."""
    out = serving_gain(None, sums([0, 1000, 0], [40, 900, 0], [0] * 3, [0] * 3), Config())
    assert np.isnan(out["delivery_ratio"][R]) and np.isnan(out["delivery_ratio"][M])
    assert out["delivery_ratio"][A] == pytest.approx(0.9)
    assert out["delivery_miss_days"].tolist() == [0, 0, 0]


def test_the_gate_judges_a_day_at_the_minimum_planned():
    """gate_delivery_min_planned: a day with FEWER planned plays is not judged,
    so exactly 200 is: radio 100 / 200 misses by 50% > 15% (streak 1 -> 2);
    autoplay 199 planned with 50 realised is not judged (streak 3 -> 0).
    Catches `planned > min_planned`."""
    cfg = Config(gate_delivery_min_planned=200.0, gate_delivery_max_miss=0.15)
    out = serving_gain(state([0.0] * 3, [0.0] * 3, miss=(1, 3, 0)), sums([200, 199, 0], [100, 50, 0], [0] * 3,
                                                                         [0] * 3), cfg)
    assert out["delivery_miss_days"].tolist() == [2, 0, 0]


def test_a_miss_must_exceed_the_bound():
    """gate_delivery_max_miss: a day misses when |realised / planned - 1|
    EXCEEDS the bound. With bound 0.25: 750 / 1000 (|0.75 - 1| = 0.25
    exactly, in binary too) is not a miss; 740 / 1000 is; 1250 / 1000 is not.
    Catches `>=`."""
    cfg = Config(gate_delivery_max_miss=0.25, gate_delivery_min_planned=0.0)
    out = serving_gain(state([0.0] * 3, [0.0] * 3, miss=(4, 4, 4)),
                       sums([1000] * 3, [750, 740, 1250], [0] * 3, [0] * 3), cfg)
    assert out["delivery_miss_days"].tolist() == [0, 5, 0]


def test_serving_gain_outputs_have_the_capacity_types():
    """The per-surface outputs land in capacity columns: int64 for
    reconciled_realised and delivery_miss_days, float64 for the doubles.
    Catches losing the int64 casts."""
    out = serving_gain(state([5.0] * 3, [10.0] * 3, miss=(1, 0, 2)),
                       sums([1000] * 3, [100, 1000, 500], [1] * 3, [2] * 3), Config())
    fields = {f.name: f for f in CAPACITY.fields}
    assert set(out) <= set(fields)
    for k, v in out.items():
        assert isinstance(v, np.ndarray) and v.shape == (3,) and v.dtype == NUMPY_TYPE[fields[k].type], k
    assert out["reconciled_realised"].tolist() == [100, 1000, 500]
    assert out["delivery_miss_days"].tolist() == [2, 0, 3]   # radio and mixes miss by 90% and 50%


def test_an_older_state_with_a_column_missing_or_null_reads_zero():
    """_state_column: 0 where the column is absent or null. A state from a
    snapshot before gain_requested_organic existed, rows in any surface
    order, one null gain_realised: the organic sum restarts from the day
    (radio: 0 * decay + 900), the null realised is 0. Default prior 10,
    half-life 2 (decay 2**-0.5).
    Catches reading a missing column, and filling nulls with 1."""
    st_ = pd.DataFrame({"market": "US", "surface": ["mixes", "radio", "autoplay"],
                        "gain_realised": [300.0, np.nan, 100.0], "gain_requested": [400.0, 1000.0, 100.0],
                        "delivery_miss_days": [0, 0, 0]})
    assert _state_column(st_, "gain_requested_organic", 3).tolist() == [0.0] * 3
    assert _state_column(st_, "gain_realised", 3).tolist() == [0.0, 100.0, 300.0]   # radio, autoplay, mixes
    assert _state_column(st_, "gain_requested", 3).tolist() == [1000.0, 100.0, 400.0]
    assert _state_column(st_.iloc[:0], "gain_realised", 3).tolist() == [0.0] * 3
    assert _state_column(None, "gain_realised", 3).tolist() == [0.0] * 3
    decay = 0.5 ** 0.5
    out = serving_gain(st_, sums([1000, 0, 0], [720, 0, 0], [720, 0, 0], [1000, 0, 0],
                                 requested_organic=[900, 0, 0]), Config())
    assert out["gain_realised"][R] == pytest.approx(720.0)          # 0 * decay + 720
    assert out["gain_requested"][R] == pytest.approx(1000 * decay + 1000)
    assert out["gain_requested_organic"].tolist() == pytest.approx([900.0, 0.0, 0.0])
    assert out["serving_response"][R] == pytest.approx(730 / 910)
    # autoplay and mixes asked nothing: carried over, read by surface name
    assert out["serving_gain"][A] == pytest.approx(110 / 110) and out["serving_gain"][M] == pytest.approx(310 / 410)


# ---------------------------------------------------- boost_probability ---
def test_boost_probability_never_exceeds_one():
    """b = min(1, x / (E * g)): x = 30 on E 20 at gain 0.5 asks 3 times the
    opportunities, still b = 1; x = 5 on E 20 at gain 2 is 0.125."""
    b = boost_probability(np.array([[30.0, 5.0], [30.0, 5.0]]), np.array([[20.0, 20.0], [20.0, 20.0]]),
                          np.array([0.5, 2.0]))
    assert b.tolist() == [[1.0, 0.5], [0.75, 0.125]]
