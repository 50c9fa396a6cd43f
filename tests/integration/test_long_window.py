"""Window and look-back boundaries on a world longer than both (the session's
`long_world`, tests/support/worlds.py): the published signals and deliveries
against a DuckDB computation over the raw engagement files that shares no code
with the pipeline.

* plays, skips, saves and weighted_plays count exactly the 28 window days
  (catches an off-by-one window, a day outside it counted, or decay weights
  with the wrong age or half-life);
* delivered_to_date counts the promoted plays from the flight start, which lies
  before the window, to the logs date, and nothing before the flight (catches a
  pacing that only sees the window, or that counts days before the flight);
* the run plans exactly its look-back: the days back from the logs date that
  the lift reads (`jobs.run.plan.lift_lookback_days`, longer than the 31-day
  pacing look-back), within the world, are aggregated.

The daily aggregates hold every track's plays (aggregate format 2), and the
scores read those of the tracks in the logs date's enrollment export, so a
track that joins the program mid-window has its whole window's signals: the
oracle applies the same rule.
"""
from __future__ import annotations

import datetime as dt
import os

import duckdb
import numpy as np
import pandas as pd
import pytest

from jobs.run.plan import lift_lookback_days
from pipelines.config import Config
from tests.support import worlds

pytestmark = pytest.mark.timeout(600)  # the first test builds and runs the session's long world

D = worlds.LONG_END
CFG = Config()
LIVE_REASONS = {None, "too_new", "too_few_plays", "listeners_dislike", "promoted_plays_disliked"}  # campaign live there


def _raw(world: str, first: dt.date, last: dt.date, as_of: dt.date = D) -> pd.DataFrame:
    """Per (track, market, surface): events of the dt partitions first..last of the
    tracks in the logs date's enrollment export, exact resent copies counted once per
    partition (what the pipeline dedupes)."""
    sql = f"""
        WITH ev AS (
            SELECT DISTINCT * FROM read_parquet('{world}/engagement/dt=*/*.parquet', hive_partitioning = true)
        ), enrolled AS (
            SELECT DISTINCT track_id FROM read_parquet('{world}/enrollments/dt={as_of}/*.parquet')
        )
        SELECT ev.track_id, market, surface, count(*) AS plays,
               sum(skipped::INT) AS skips, sum(saved::INT) AS saves,
               sum(power(0.5, date_diff('day', CAST(dt AS DATE), DATE '{as_of}') / {CFG.half_life_days}))
                   AS weighted,
               sum(promoted::INT) AS promoted
        FROM ev JOIN enrolled ON enrolled.track_id = ev.track_id
        WHERE CAST(dt AS DATE) BETWEEN DATE '{first}' AND DATE '{last}'
          AND surface IN ('radio', 'autoplay', 'mixes')
        GROUP BY ALL
    """
    return duckdb.sql(sql).df()


@pytest.fixture(scope="module")
def second(long_world):
    folder = long_world.snapshot
    return {"manifest": worlds.manifest(folder), "scores": worlds.table(folder, "promotion_scores"),
            "delivery": worlds.table(folder, "campaign_delivery")}


def test_the_world_is_longer_than_the_window_and_the_look_back(long_world, second):
    days = sorted(os.listdir(os.path.join(long_world.world, "engagement")))
    assert days[0] == f"dt={D - dt.timedelta(days=worlds.LONG_DAYS - 1)}" and days[-1] == f"dt={D}"
    assert worlds.LONG_DAYS > max(CFG.window_days, 31)
    m = second["manifest"]
    assert m["dead_letter_count"] == 0  # every raw row keeps the contract: the oracle below needs no filter
    # exactly the look-back was aggregated from raw: the lift's, within the world (the scores' 31 days inside it)
    back = min(lift_lookback_days(CFG), worlds.LONG_DAYS)
    assert lift_lookback_days(CFG) > 31
    want = [(D - dt.timedelta(days=i)).isoformat() for i in range(back - 1, -1, -1)]
    assert m["inputs"]["built_days"] == want
    assert m["inputs"]["stored_days"] == [] and m["inputs"]["missing_window_days"] == []
    read_days = {f.split("/dt=")[1].split("/")[0] for f in m["inputs"]["engagement"]}
    assert sorted(read_days) == want


def test_signals_count_exactly_the_window_days(long_world, second):
    first = D - dt.timedelta(days=CFG.window_days - 1)
    raw = _raw(long_world.world, first, D)
    s = second["scores"].merge(raw, on=["track_id", "market", "surface"], how="left", suffixes=("", "_raw"))
    s = s.fillna({"plays_raw": 0, "skips_raw": 0, "saves_raw": 0, "weighted": 0.0})
    assert len(s) == len(second["scores"]) and (s["plays_raw"] > 0).mean() >= 0.5
    for c in ("plays", "skips", "saves"):
        np.testing.assert_array_equal(s[c].to_numpy(), s[f"{c}_raw"].to_numpy().astype(np.int64), err_msg=c)
    np.testing.assert_allclose(s["weighted_plays"].to_numpy(), s["weighted"].to_numpy(), rtol=1e-9, atol=1e-9)
    # the days just outside the window, in the look-back, had plays that would have shown
    outside = _raw(long_world.world, D - dt.timedelta(days=30), first - dt.timedelta(days=1))
    assert outside["plays"].sum() > 200


def _enrolled_on(world: str) -> pd.DataFrame:
    """(campaign_id, track_id, market, surface) of the score date's export: the
    latest row per enrollment, one row per enrolled surface."""
    return duckdb.sql(f"""
        SELECT campaign_id, track_id, market, unnest(surfaces) AS surface FROM (
            SELECT campaign_id, track_id, market, arg_max(surfaces, updated_at) AS surfaces
            FROM read_parquet('{world}/enrollments/dt={D}/*.parquet') GROUP BY ALL)
    """).df()


def test_delivery_counts_from_the_flight_start_before_the_window(long_world, second):
    """A campaign's delivered_to_date: the promoted plays, from its flight start
    to the logs date, of its tracks enrolled on the surface, paused or cancelled
    ones included (their plays were delivered)."""
    scores, delivery = second["scores"], second["delivery"]
    window_start = D - dt.timedelta(days=CFG.window_days - 1)
    starts = set(pd.to_datetime(delivery["flight_start"]).dt.date)
    assert starts == {dt.date(2026, 12, 1)} and min(starts) < window_start
    in_flight = scores[scores["reason"].map(lambda r: (r if isinstance(r, str) else None) in LIVE_REASONS
                                            | {"campaign_paused", "campaign_cancelled"})]
    live = in_flight.merge(_enrolled_on(long_world.world), on=["campaign_id", "track_id", "market", "surface"])
    # a paused or cancelled row may speak for next month's campaign, whose flight is not live yet
    flying = set(zip(delivery["campaign_id"], delivery["market"]))
    live = live[[k in flying for k in zip(live["campaign_id"], live["market"])]]
    raw = _raw(long_world.world, dt.date(2026, 12, 1), D)
    per_row = live.merge(raw, on=["track_id", "market", "surface"], how="left", suffixes=("", "_raw"))
    want = per_row.fillna({"promoted": 0}).groupby(["campaign_id", "market", "surface"])["promoted"].sum()
    got = delivery.set_index(["campaign_id", "market", "surface"])["delivered_to_date"]
    assert len(got) >= 4 and sorted(got.index) == sorted(want.index)
    np.testing.assert_array_equal(got.sort_index().to_numpy(), want.sort_index().to_numpy().astype(float))
    # a pacing that saw only the window, or counted the day before the flight, would differ
    before_window = _raw(long_world.world, dt.date(2026, 12, 1), window_start - dt.timedelta(days=1))
    before_flight = _raw(long_world.world, dt.date(2026, 11, 30), dt.date(2026, 11, 30))
    keys = set(zip(live["track_id"], live["market"], live["surface"]))
    hit = lambda df: df[[k in keys for k in zip(df["track_id"], df["market"], df["surface"])]]["promoted"].sum()  # noqa: E731
    assert hit(before_window) > 0 and hit(before_flight) > 0
