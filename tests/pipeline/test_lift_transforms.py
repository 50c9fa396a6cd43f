"""The lift composites (pipelines/beam/lift.py) alone, in a TestPipeline:
BuildLiftFacts gives the same facts as the pure functions over the whole day
(whatever the batches and shards) and counts the holdout checks;
MeasureCampaignLift gives the same table whether a listener's facts sit in one
shard or sixteen."""
from __future__ import annotations

import datetime as dt
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import holdout
from pipelines.beam.lift import BuildLiftFacts, MeasureCampaignLift, part_name
from pipelines.config import Config
from pipelines.lift import facts, measure
from pipelines.metrics import counters
from schemas import ENGAGEMENT, ENROLLMENTS, EXPOSURE_DAYS, EXPOSURES, LISTENER_DAYS, MARKET_LISTENERS

UTC = dt.timezone.utc
DAY = dt.date(2024, 5, 10)
SALT, SHARE = 99, 0.3
USERS = [f"user-{i:03d}" for i in range(40)]
HELD = dict(zip(USERS, holdout.in_holdout(pa.array(USERS), pa.array(["US"] * len(USERS)),
                                          np.full(len(USERS), holdout.month_number(DAY)), SALT, SHARE)))


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, 10, hour, minute, tzinfo=UTC)


def play(i, user, track="t1", hour=12, ms=100_000, saved=False, promoted=False, flag="assigned"):
    return dict(event_id=f"e{i}", event_ts=at(hour), user_id=user, track_id=track, market="US", surface="radio",
                ms_played=ms, duration_ms=200_000, skipped=ms < 30_000, saved=saved, promoted=promoted,
                campaign_id="c1" if promoted else None, holdout=HELD[user] if flag == "assigned" else flag)


def plays(rows):
    return pa.Table.from_pylist(rows, schema=ENGAGEMENT.arrow())


def exposure(i, user, hour, arm=None, track="t1"):
    return dict(exposure_id=f"x{i}", event_ts=at(hour), user_id=user, track_id=track, campaign_id="c1",
                market="US", surface="radio", arm=arm or ("ghost" if HELD[user] else "treated"))


def day_rows():
    treated = [u for u in USERS if not HELD[u]]
    held = [u for u in USERS if HELD[u]]
    batch0 = [play(k, u, hour=8 + k % 10, saved=k % 7 == 0) for k, u in enumerate(USERS)]
    batch0 += [play(100, treated[0], hour=9), play(101, treated[0], hour=15, ms=10_000),   # a short play
               play(102, treated[1], track="tail")]                                       # not enrolled
    batch1 = [play(0, USERS[0], hour=8),                                                   # resent event e0
              play(103, held[0], promoted=True),                                           # a promoted holdout play
              play(104, treated[2], flag=True)]                                            # a flag that disagrees
    xs = [exposure(k, u, hour=10) for k, u in enumerate(USERS[:30])] + [exposure(0, USERS[0], 10)]  # x0 resent
    return plays(batch0), plays(batch1), pa.Table.from_pylist(xs, schema=EXPOSURES.arrow())


def _rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def test_build_lift_facts_equals_the_pure_functions_over_the_whole_day(tmp_path):
    b0, b1, xs = day_rows()
    enrolled = ["t1"]
    # the expected facts: the whole day at once, no batches, no shards
    both = pa.concat_tables([b0, b1])
    keys = holdout.listener_keys(both.column("user_id"))
    all_plays, _ = facts.dedupe(facts.play_rows(both, keys, pa.array(enrolled)), "event_id")
    all_x, _ = facts.dedupe(facts.exposure_rows(xs, holdout.listener_keys(xs.column("user_id"))), "exposure_id")
    want_listeners = facts.listener_days(all_plays, DAY)
    want_exposures = facts.exposure_days(all_x, all_plays, DAY)
    assert want_exposures.num_rows == 30 and want_listeners.num_rows == 40

    p = test_pipeline.TestPipeline()
    built = ({"plays": p | "Plays" >> beam.Create([((0, 0), b0), ((1, 0), b1)]),
              "exposures": p | "Exposures" >> beam.Create([((0, 0), xs)])}
             | BuildLiftFacts(DAY, 16, enrolled, str(tmp_path / "scratch"), SALT, SHARE))
    for kind, want in (("listeners", want_listeners), ("exposures", want_exposures)):
        got = built[kind] | f"{kind}Rows" >> beam.FlatMap(lambda kv: _rows(kv[1]))
        assert_that(got, equal_to(_rows(want)), label=kind)
    # every shard's file is named after its shard, and holds only that shard's listeners
    shard_ok = built["listeners"] | "Shards" >> beam.Map(
        lambda kv: kv[0] == part_name(int(np.unique(kv[1].column("listener_key").to_numpy().view(np.uint64)
                                                    % np.uint64(16))[0])))
    shards = len(np.unique(want_listeners.column("listener_key").to_numpy().view(np.uint64) % np.uint64(16)))
    assert_that(shard_ok, equal_to([True] * shards), label="named")
    active = built["market_listeners"] | "Active" >> beam.FlatMap(
        lambda t: [(r["market"], r["holdout"], r["listeners"]) for r in t.to_pylist()])
    n_held = sum(HELD.values())
    # flags as logged: the one listener logged in the holdout against the assignment counts there
    assert_that(active, equal_to([("US", False, len(USERS) - n_held), ("US", True, n_held + 1)]), label="active")
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c[f"holdout_promoted/{DAY}"] == 1
    assert c[f"holdout_flag_mismatch/{DAY}"] == 1
    assert c[f"holdout_arm_mismatch/{DAY}"] == 0
    assert c[f"lift_duplicates_removed/{DAY}"] == 2


def test_a_ghost_exposure_of_a_listener_outside_the_holdout_is_counted(tmp_path):
    treated = [u for u in USERS if not HELD[u]]
    xs = pa.Table.from_pylist([exposure(1, treated[0], 10, arm="ghost"), exposure(2, treated[1], 10)],
                              schema=EXPOSURES.arrow())
    p = test_pipeline.TestPipeline()
    _ = ({"plays": p | "Plays" >> beam.Create([((0, 0), plays([play(1, treated[0])]))]),
          "exposures": p | "Exposures" >> beam.Create([((0, 0), xs)])}
         | BuildLiftFacts(DAY, 4, ["t1"], str(tmp_path / "scratch"), SALT, SHARE))
    result = p.run()
    result.wait_until_finish()
    assert counters(result)[f"holdout_arm_mismatch/{DAY}"] == 1


def _facts_world(rng):
    """Facts of 3 days for two campaign rows: 600 treated and 200 holdout listeners."""
    listener_rows, exposure_rows = [], []
    for k in range(800):
        arm = "ghost" if k < 200 else "treated"
        d0 = DAY + dt.timedelta(days=int(rng.integers(0, 2)))
        surface = "radio" if k % 2 else "mixes"
        exposure_rows.append(dict(dt=d0, campaign_id="c1", market="US", surface=surface, track_id="t1",
                                  listener_key=k * 7919, arm=arm, first_ts=dt.datetime.combine(d0, dt.time(6), UTC),
                                  exposures=1, streams_after=int(rng.poisson(1.0)), saves_after=0))
        for day in range(-3, 3):
            n = int(rng.poisson(0.8 if arm == "treated" else 0.6))
            if n:
                listener_rows.append(dict(dt=DAY + dt.timedelta(days=day), track_id="t1", market="US",
                                          listener_key=k * 7919, streams=n, saves=int(rng.random() < 0.1),
                                          holdout=arm == "ghost"))
    return (pa.Table.from_pylist(listener_rows, schema=LISTENER_DAYS.arrow()),
            pa.Table.from_pylist(exposure_rows, schema=EXPOSURE_DAYS.arrow()))


def _write_sharded(table: pa.Table, folder: str, shards: int) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    keys = table.column("listener_key").to_numpy().view(np.uint64) % np.uint64(shards)
    uris = []
    for s in np.unique(keys):
        uri = os.path.join(folder, f"{part_name(int(s))}.parquet")
        pq.write_table(table.filter(pa.array(keys == s)), uri)
        uris.append(uri)
    return uris


def test_measure_campaign_lift_does_not_depend_on_the_sharding(tmp_path):
    listeners, exposures = _facts_world(np.random.default_rng(3))
    as_of = DAY + dt.timedelta(days=2)
    cfg = Config(lift_min_flight_days=3, lift_window_days=3, lift_pre_days=3)
    enrolled = pa.Table.from_pylist([dict(
        campaign_id="c1", track_id="t1", artist_id="a", licensor_id="l", market="US", surfaces=["radio", "mixes"],
        start_date=DAY - dt.timedelta(days=0), end_date=DAY + dt.timedelta(days=20), commission_rate=0.3,
        release_date=dt.date(2020, 1, 1), status="active", updated_at=dt.datetime(2024, 5, 1, tzinfo=UTC))],
        schema=ENROLLMENTS.arrow())
    observed = [DAY + dt.timedelta(days=k) for k in range(-3, 3)]
    campaigns = measure.lift_campaigns(enrolled, as_of, cfg.lift_window_days, observed)
    one = measure.measure_shard(listeners, exposures, campaigns, as_of, 3, 3)
    want = measure.lift_table(measure.combine([one["arms"]], [one["days"]], [one["tracks"]]), campaigns,
                              MARKET_LISTENERS.empty(), observed, as_of, as_of + dt.timedelta(days=1), "s", cfg)
    assert want.num_rows == 2
    p = test_pipeline.TestPipeline()
    lift = ({"listeners": p | "L" >> beam.Create(_write_sharded(listeners, str(tmp_path / "l"), 16)),
             "exposures": p | "X" >> beam.Create(_write_sharded(exposures, str(tmp_path / "x"), 16)),
             "market_listeners": p | "M" >> beam.Create([MARKET_LISTENERS.empty()]),
             "enrollments": p | "E" >> beam.Create([enrolled])}
            | MeasureCampaignLift(as_of, cfg, observed, observed, "s"))
    assert_that(lift | beam.FlatMap(lambda kv: _rows(kv[1])), equal_to(_rows(want)))
    p.run().wait_until_finish()
