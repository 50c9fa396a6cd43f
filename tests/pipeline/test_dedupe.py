"""The cross-day dedupe (`pipelines.dedupe`) in a TestPipeline: two days
aggregated in ONE pipeline (a backfill builds many), the second waiting for
the first's seen ids; and a day reading a stored day's ids with another shard
count. Counts are checked against hand-computed planted truth."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import dedupe
from pipelines.beam.transforms import AggregateDailySignals
from schemas import DAILY_AGGREGATES, ENGAGEMENT

UTC = dt.timezone.utc
D1, D2, D3 = dt.date(2024, 5, 9), dt.date(2024, 5, 10), dt.date(2024, 5, 11)


def event(event_id, day, track="t1", user="u1", surface="radio"):
    return dict(event_id=event_id, event_ts=dt.datetime.combine(day, dt.time(12), tzinfo=UTC), user_id=user,
                track_id=track, market="US", surface=surface, ms_played=1000, duration_ms=2000, skipped=False,
                saved=False, promoted=False, campaign_id=None)


def batches(rows):
    return [((0, 0), pa.Table.from_pylist(rows, schema=ENGAGEMENT.arrow()))]


def plays(kv):
    _, table = kv
    return [(r["dt"], r["track_id"], r["plays"]) for r in table.select(DAILY_AGGREGATES.names).to_pylist()]


def test_a_day_drops_what_the_day_before_saw_in_the_same_pipeline(tmp_path):
    """Day 2 re-sends e1..e3 of day 1 (and repeats e9 within itself); with a
    one-day look-back it counts only its own e7, e8, e9 -- once each -- and the
    third day, re-sending e1 and e8, counts neither: e1 was seen on day 2 too
    (as a repeat), which keeps a third copy out with a one-day look-back."""
    day1 = [event(f"e{i}", D1, track=f"t{i % 2}") for i in range(1, 7)]
    day2 = [event(f"e{i}", D2, track=f"t{i % 2}") for i in (1, 2, 3, 7, 8, 9, 9)]
    day3 = [event("e1", D3, track="t1"), event("e8", D3, track="t0"), event("e10", D3, track="t0")]
    ids = {d: str(tmp_path / f"ids-{d}") for d in (D1, D2, D3)}
    with test_pipeline.TestPipeline() as p:
        out = {}
        for day, rows, shards, back in ((D1, day1, 4, ()), (D2, day2, 3, (D1,)), (D3, day3, 4, (D2,))):
            look = dedupe.LookBack(ids[day], shards, tuple(ids[b] for b in back))
            out[day] = (p | f"Create{day}" >> beam.Create(batches(rows))
                        | f"Aggregate{day}" >> AggregateDailySignals(day, shards, str(tmp_path / f"s{day}"), look,
                                                                     after=[out[b]["totals"] for b in back]))
        everything = (out[D1]["tracks"], out[D2]["tracks"], out[D3]["tracks"]) | beam.Flatten()
        assert_that(everything | beam.FlatMap(plays), equal_to([
            (D1, "t0", 3), (D1, "t1", 3),          # e2 e4 e6 | e1 e3 e5
            (D2, "t0", 1), (D2, "t1", 2),          # e8 | e7 e9 (e9 once, e1 e2 e3 seen on D1)
            (D3, "t0", 1),                          # e10 (e8 seen on D2; e1 seen on D2 as a repeat)
        ]))


def test_another_shard_count_reads_only_the_files_that_can_hold_its_tracks(tmp_path, monkeypatch):
    """Bounded reads: with 4 shards against a stored day of 2, shard 1 opens only
    the stored file 1 (t = s mod gcd(4, 2)); with 3 against 2 (gcd 1) it needs
    both. Either way it finds exactly the ids of its own tracks."""
    tracks = np.arange(40, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    events = np.arange(40, dtype=np.uint64) + np.uint64(1000)
    stored = str(tmp_path / "stored")
    for t in range(2):
        mine = tracks % np.uint64(2) == np.uint64(t)
        dedupe.write_seen(dedupe.seen_file(stored, t, 2), events[mine], tracks[mine])
    opened = []
    real_open = dedupe.storage.open_input
    monkeypatch.setattr(dedupe.storage, "open_input", lambda uri: opened.append(uri) or real_open(uri))
    for shards, shard, files in ((4, 1, 1), (3, 1, 2)):
        opened.clear()
        got = dedupe.LookBack(str(tmp_path / "w"), shards, (stored,)).seen_before(shard)
        want = np.sort(events[tracks % np.uint64(shards) == np.uint64(shard)])
        assert np.array_equal(got, want) and len(opened) == files, (shards, opened)
