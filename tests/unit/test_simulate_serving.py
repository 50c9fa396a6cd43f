"""The simulator's serving model (`jobs.simulate.serving`, `jobs.simulate.truth`)
on a tiny world, without Beam: what it plants is what the day's events hold."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.sample.world import build_enrollments, build_world
from jobs.simulate.serving import Boosts, plan_boosts, serve_day, warm_up_boosts
from jobs.simulate.truth import TruthParams, plant, saturating
from pipelines import contract
from schemas import ENGAGEMENT, PROMOTION_SURFACES

DAY = dt.date(2026, 11, 20)
LOOP = [DAY + dt.timedelta(days=i) for i in range(12)]


@pytest.fixture(scope="module")
def world():
    w = build_world(seed=4, tracks=40, events_per_day=80_000, markets=2, end_date=DAY)
    e = build_enrollments(w, DAY - dt.timedelta(days=30), LOOP[-1])
    truth = plant(w, e, TruthParams(step_day=5), 4, LOOP)
    return w, e, truth


def boosted(w, e, truth, boost: float):
    """Every active enrolled (track, market, surface) at one boost probability."""
    warm = warm_up_boosts(w, e, truth, DAY)
    return Boosts.build(truth, DAY, warm.track, warm.market, warm.surface, warm.campaign,
                        np.full(len(warm.track), boost), markets=len(w.codes))


def serve(w, e, truth, boosts):
    return serve_day(w, e, truth, boosts, DAY, events_per_day=80_000, bad_row_share=0.002, slack_hours=6.0)


def test_the_planted_gains_are_spread_and_the_step_stays_in_range(world):
    w, e, truth = world
    g = np.sort(truth.gain.ravel())
    assert np.allclose(np.diff(g), 1.0 / len(g)) and g[0] > 0.5 and g[-1] < 1.5
    before, after = truth.gain_on(LOOP[3]), truth.gain_on(LOOP[4])
    changed = np.argwhere(before != after)
    assert changed.tolist() == [[truth.step_market, truth.step_surface]]
    assert after[truth.step_market, truth.step_surface] == pytest.approx(0.6 * before[truth.step_market,
                                                                                        truth.step_surface])
    assert after.min() >= 0.5
    assert set(np.unique(truth.lift)) <= {0.0, 0.1, 0.3, 0.6}


def test_the_response_saturates_above_the_planted_level():
    b = np.linspace(0, 1, 101)
    h = saturating(b, 0.9)
    assert np.array_equal(h[b <= 0.9], b[b <= 0.9])
    assert np.all(h[b > 0.9] < b[b > 0.9]) and np.all(np.diff(h) > 0)
    assert h[-1] == pytest.approx(0.9 + 0.1 * (1 - np.exp(-1)))


def test_serving_delivers_its_response_split_by_the_lift(world):
    """Per boosted cell, promoted over remaining organic plays is the planted
    response a = g h(b), and the incremental share of promoted plays is the
    campaign's lift: both within sampling error over the day's cells."""
    w, e, truth = world
    boosts = boosted(w, e, truth, 0.4)
    day = serve(w, e, truth, boosts)
    c = day.cells.to_pandas()
    assert len(c) > 50 and c["organic"].sum() > 5_000
    promoted = c["displaced"] + c["incremental"]
    left = c["organic"] - c["displaced"]
    expected = (c["response"] * left).sum()
    assert promoted.sum() == pytest.approx(expected, rel=0.05)
    assert c["response"].to_numpy() == pytest.approx(c["gain"] * 0.4)
    for lift, part in c.groupby("lift"):
        p = part["displaced"].sum() + part["incremental"].sum()
        if p > 300:
            assert part["incremental"].sum() / p == pytest.approx(lift, abs=0.05), lift


def test_the_events_hold_exactly_what_the_truth_says(world):
    w, e, truth = world
    boosts = boosted(w, e, truth, 0.3)
    day = serve(w, e, truth, boosts)
    t = day.events
    assert t.schema == pa.schema([f for f in ENGAGEMENT.arrow() if f.name not in ENGAGEMENT.optional_names])
    reasons = contract.check_engagement(t, DAY, 6.0)
    assert pc.sum(pc.equal(reasons, "promoted_without_campaign")).as_py() in (None, 0)
    # the promoted plays of each cell, counted as the pipeline does (valid rows, one per event id) ...
    good = t.filter(pc.is_null(reasons))
    first = good.group_by("event_id").aggregate([("promoted", "max"), ("track_id", "min"), ("market", "min"),
                                                 ("surface", "min"), ("campaign_id", "min")])
    promo = first.filter(first.column("promoted_max"))
    got = promo.group_by(["track_id_min", "market_min", "surface_min"]).aggregate([([], "count_all")]).to_pylist()
    got = {(r["track_id_min"], r["market_min"], r["surface_min"]): r["count_all"] for r in got}
    cells = day.cells.to_pandas()
    want = {(r.track_id, r.market, r.surface): r.displaced + r.incremental for r in cells.itertuples()
            if r.displaced + r.incremental}
    assert got == want
    # ... each with its cell's campaign, and a resent copy labelled as its original
    assert promo.column("campaign_id_min").null_count == 0
    dupes = t.group_by("event_id").aggregate([("promoted", "min"), ("promoted", "max"), ([], "count_all")])
    dupes = dupes.filter(pc.greater(dupes.column("count_all"), 1))
    assert dupes.num_rows > 0
    assert pc.all(pc.equal(dupes.column("promoted_min"), dupes.column("promoted_max"))).as_py()
    # an unboosted cell gets no promoted play
    unboosted = Boosts.build(truth, DAY, boosts.track[:0], boosts.market[:0], boosts.surface[:0],
                             boosts.campaign[:0], np.zeros(0), markets=len(w.codes))
    assert pc.sum(serve(w, e, truth, unboosted).events.column("promoted")).as_py() == 0


def test_a_day_is_the_same_when_generated_again(world):
    w, e, truth = world
    boosts = boosted(w, e, truth, 0.5)
    a, b = serve(w, e, truth, boosts), serve(w, e, truth, boosts)
    assert a.events.equals(b.events) and a.cells.equals(b.cells)
    other = serve(w, e, truth, boosted(w, e, truth, 0.2))
    assert not other.events.equals(a.events)


def test_plan_cells_map_back_to_the_world(world):
    """plan_boosts reads a plan's rows (ids as the pipeline publishes them)."""
    w, e, truth = world
    warm = warm_up_boosts(w, e, truth, DAY)
    k = 5
    scores = pa.table({
        "track_id": w.track_dict.take(pa.array(warm.track[:k])),
        "market": pa.array(w.codes).take(pa.array(warm.market[:k])),
        "surface": pa.array(PROMOTION_SURFACES).take(pa.array(warm.surface[:k])),
        "campaign_id": e.campaign_ids.take(pa.array(warm.campaign[:k])),
        "boost_probability": pa.array([0.0, 0.1, 0.2, 0.95, 1.0]),
    })
    b = plan_boosts(w, e, truth, scores, DAY)
    assert len(b.track) == 4                                   # the row at 0 is not boosted
    assert sorted(b.boost.tolist()) == [0.1, 0.2, 0.95, 1.0]
    g = b.gain
    assert b.response == pytest.approx(g * saturating(b.boost, truth.saturation))
