"""Each Beam composite of pipelines/transforms.py alone, in a TestPipeline.

Elements are Arrow tables, which do not compare by value, so every output is
turned into plain tuples inside the pipeline before `assert_that`.
"""
import datetime as dt
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from pipelines import arrays as arrow_ops
from pipelines.beam.io import ReadInputBatches, WriteParquetParts
from pipelines.beam.transforms import (AggregateDailySignals, CheckContract, LatestEnrollments, ScoreMarkets,
                                      SpillShardsFn, read_spilled)
from pipelines.config import Config
from schemas import (CAMPAIGN_DELIVERY, CAPACITY, DAILY_AGGREGATES, ENGAGEMENT, ENROLLMENTS, PRICES,
                     PROMOTION_SCORES, PROMOTION_SURFACES, SURFACE_TOTALS)

UTC = dt.timezone.utc
DAY = dt.date(2024, 5, 10)


def event(event_id, track="t1", surface="radio", user="u1", market="US", skipped=False, saved=False,
          promoted=False, ms_played=100_000, **over):
    row = dict(event_id=event_id, event_ts=dt.datetime(2024, 5, 10, 12, 0, tzinfo=UTC), user_id=user,
               track_id=track, market=market, surface=surface, ms_played=ms_played, duration_ms=200_000,
               skipped=skipped, saved=saved, promoted=promoted, campaign_id="c1" if promoted else None)
    row.update(over)
    return row


def events(rows):
    return pa.Table.from_pylist(rows, schema=ENGAGEMENT.arrow())


def enrollment(track, campaign="c1", market="US", hours=0, **over):
    row = dict(campaign_id=campaign, track_id=track, artist_id=f"a-{track}", licensor_id="l1", market=market,
               surfaces=list(PROMOTION_SURFACES), start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 5, 31),
               commission_rate=0.3, release_date=dt.date(2020, 1, 1), status="active",
               updated_at=dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(hours=hours))
    row.update(over)
    return row


def enrollments(rows):
    return pa.Table.from_pylist(rows, schema=ENROLLMENTS.arrow())


# ----------------------------------------------------------- CheckContract ---
def test_check_contract_splits_good_and_dead_with_reasons():
    batch0 = events([event("a"), event("b", market="usa"), event("c", surface="search")])
    # A nullable schema lets the batch carry a null user_id, as a conformed file could.
    nullable = pa.schema([pa.field(f.name, f.type, nullable=True) for f in ENGAGEMENT.arrow()])
    batch1 = pa.Table.from_pylist([event("d", ms_played=-5), event("e", user=None), event("f")], schema=nullable)
    enroll = enrollments([enrollment("t1"), enrollment("t2", status="ended"), enrollment("t3", surfaces=[])])
    with test_pipeline.TestPipeline() as p:
        checked = (p
                   | "Events" >> beam.Create([((0, 0, "in/f0.parquet"), batch0), ((1, 0, "in/f1.parquet"), batch1)])
                   | "CheckEvents" >> CheckContract("engagement", DAY, 6.0))
        good = checked.good | "GoodIds" >> beam.FlatMap(
            lambda kv: [(kv[0], r["event_id"]) for r in kv[1].to_pylist()])
        dead = checked.dead | "DeadRows" >> beam.FlatMap(
            lambda t: [(r["source"], r["source_file"], r["reason"], json.loads(r["row_json"])["event_id"], r["dt"])
                       for r in t.to_pylist()])
        assert_that(good, equal_to([((0, 0), "a"), ((0, 0), "c"), ((1, 0), "f")]), label="good")
        assert_that(dead, equal_to([
            ("engagement", "in/f0.parquet", "malformed_market", "b", DAY),
            ("engagement", "in/f1.parquet", "negative_ms_played", "d", DAY),
            ("engagement", "in/f1.parquet", "null_user_id", "e", DAY),
        ]), label="dead")

        checked_e = (p
                     | "Enrollments" >> beam.Create([((0, 0, "e.parquet"), enroll)])
                     | "CheckEnrollments" >> CheckContract("enrollments", DAY, 6.0))
        good_e = checked_e.good | "GoodE" >> beam.FlatMap(lambda kv: [r["track_id"] for r in kv[1].to_pylist()])
        dead_e = checked_e.dead | "DeadE" >> beam.FlatMap(
            lambda t: [(r["source"], r["reason"], json.loads(r["row_json"])["track_id"]) for r in t.to_pylist()])
        assert_that(good_e, equal_to(["t1"]), label="good_enrollments")
        assert_that(dead_e, equal_to([("enrollments", "unknown_status", "t2"),
                                      ("enrollments", "no_surfaces", "t3")]), label="dead_enrollments")


# ------------------------------------------------------- LatestEnrollments ---
def test_latest_enrollments_keeps_the_latest_row_per_key_across_batches():
    # The newest version of (c1, t1, US) sits in the first batch, older ones later.
    b0 = enrollments([enrollment("t1", hours=30, status="paused"), enrollment("t2", hours=1)])
    b1 = enrollments([enrollment("t1", hours=10, status="cancelled"), enrollment("t2", hours=5, commission_rate=0.25),
                      enrollment("t1", market="GB", hours=2)])
    b2 = enrollments([enrollment("t1", hours=20), enrollment("t1", campaign="c2", hours=0)])
    with test_pipeline.TestPipeline() as p:
        latest = (p
                  | beam.Create([((0, 0), b0), ((0, 1), b1), ((1, 0), b2)])
                  | LatestEnrollments())
        rows = latest | "Rows" >> beam.FlatMap(lambda t: [
            (r["campaign_id"], r["track_id"], r["market"], r["status"], r["commission_rate"],
             r["updated_at"].hour + 24 * (r["updated_at"].day - 1), t.schema == ENROLLMENTS.arrow())
            for r in t.to_pylist()])
        assert_that(rows, equal_to([
            ("c1", "t1", "US", "paused", 0.3, 30, True),
            ("c1", "t2", "US", "active", 0.25, 5, True),
            ("c1", "t1", "GB", "active", 0.3, 2, True),
            ("c2", "t1", "US", "active", 0.3, 0, True),
        ]), label="rows")
        # the whole export comes out as one table
        assert_that(latest | "Tables" >> beam.Map(lambda t: t.num_rows), equal_to([4]), label="one_table")


# --------------------------------------------------- AggregateDailySignals ---
def _ms(*rows):
    return sum(r["ms_played"] for r in rows)


def test_aggregate_daily_signals(tmp_path):
    """Every track with promotion-surface plays is aggregated, enrolled or not
    (t2 is in no export), with the skips and saves of its promoted plays; the
    result does not depend on the shard count."""
    e1 = event("e1", user="u1", saved=True, ms_played=10_000)
    e2 = event("e2", user="u2", skipped=True, promoted=True, ms_played=2_000)
    e3 = event("e3", user="u1", ms_played=50_000)
    e4 = event("e4", surface="mixes", user="u3", skipped=True, ms_played=1_000)
    e5 = event("e5", track="t2", user="u4", skipped=True, saved=True)
    e6 = event("e6", surface="search", user="u5")                                # not a promotion surface
    e7 = event("e7", track="t3", market="GB", surface="autoplay", user="u6", promoted=True, ms_played=7_000)
    e8 = event("e8", track="t3", market="GB", surface="autoplay", user="u7", promoted=True, saved=True)
    batches = [
        ((0, 0), events([e1, e2, e3, e1])),         # e1 repeated within a batch
        ((0, 1), events([e4, e5, e6, e1])),         # ... and in another batch
        ((1, 0), events([e7, e2, e8])),             # ... and e2 in another file
    ]
    d = DAY
    # dt, track, market, surface, plays, listeners, skips, saves, promoted, ms, promoted skips, promoted saves
    expected_tracks = [
        (d, "t1", "US", "radio", 3, 2, 1, 1, 1, _ms(e1, e2, e3), 1, 0),
        (d, "t1", "US", "mixes", 1, 1, 1, 0, 0, _ms(e4), 0, 0),
        (d, "t3", "GB", "autoplay", 2, 2, 0, 1, 2, _ms(e7, e8), 0, 1),
        (d, "t2", "US", "radio", 1, 1, 1, 1, 0, _ms(e5), 0, 0),
    ]
    # totals: promotion surfaces only, each event once
    expected_totals = [
        (d, "GB", "autoplay", 2, 0, 1, 2),
        (d, "US", "mixes", 1, 1, 0, 0),
        (d, "US", "radio", 4, 2, 2, 1),
    ]

    def track_rows(kv):
        name, table = kv
        assert table.schema == DAILY_AGGREGATES.arrow()
        return [tuple(r[c] for c in DAILY_AGGREGATES.names) for r in table.to_pylist()]

    def totals_rows(table):
        assert table.schema == SURFACE_TOTALS.arrow()
        return [tuple(r[c] for c in SURFACE_TOTALS.names) for r in table.to_pylist()]

    def distinct_part_names(names):
        if len(names) != len(set(names)) or not names:
            raise BeamAssertException(f"part names must be distinct (one file each): {names}")

    with test_pipeline.TestPipeline() as p:
        good = p | beam.Create(batches)
        four = good | "FourShards" >> AggregateDailySignals(DAY, 4, str(tmp_path / "a"))
        three = good | "ThreeShards" >> AggregateDailySignals(DAY, 3, str(tmp_path / "b"))
        assert_that(four["tracks"] | "TrackRows" >> beam.FlatMap(track_rows),
                    equal_to(expected_tracks), label="tracks")
        assert_that(four["totals"] | "TotalRows" >> beam.FlatMap(totals_rows),
                    equal_to(expected_totals), label="totals")
        assert_that(four["totals"] | "OneTotalsTable" >> beam.Map(lambda t: "one"),
                    equal_to(["one"]), label="one_totals_table")
        assert_that(four["tracks"] | "PartNames" >> beam.Keys(), distinct_part_names, label="part_names")
        assert_that(three["tracks"] | "ThreeTrackRows" >> beam.FlatMap(track_rows),
                    equal_to(expected_tracks), label="three_tracks")
        assert_that(three["totals"] | "ThreeTotalRows" >> beam.FlatMap(totals_rows),
                    equal_to(expected_totals), label="three_totals")


def test_only_references_to_spilled_shards_cross_the_shuffle(tmp_path):
    """The rows go to scratch files; the shuffle carries (shard, (order, uri,
    index)) and reading a shard back gives exactly its promotion-surface rows."""
    rows = [event(f"e{i}", track=f"t{i % 7}", surface=["radio", "search", "mixes"][i % 3]) for i in range(60)]
    batches = [((0, 0), events(rows[:30])), ((0, 1), events(rows[30:]))]
    scratch = str(tmp_path / "scratch")

    def check_refs(refs):
        by_shard = {}
        for shard, ref in refs:
            order, uri, index = ref
            if not (isinstance(shard, int) and 0 <= shard < 5 and isinstance(uri, str)
                    and uri.startswith(scratch) and isinstance(index, int)):
                raise BeamAssertException(f"not a reference to a spilled shard: {(shard, ref)!r}")
            by_shard.setdefault(shard, []).append(ref)
        seen = []
        for shard, shard_refs in by_shard.items():
            table = read_spilled(shard_refs)
            tracks = set(table.column("track_id").to_pylist())
            if set(arrow_ops.stable_shard(pa.array(sorted(tracks)), 5).tolist()) != {shard}:
                raise BeamAssertException(f"shard {shard} holds tracks of other shards: {tracks}")
            seen += table.column("event_id").to_pylist()
        expected = [r["event_id"] for r in rows if r["surface"] in PROMOTION_SURFACES]
        if sorted(seen) != sorted(expected):
            raise BeamAssertException(f"spilled rows {sorted(seen)} != {sorted(expected)}")

    with test_pipeline.TestPipeline() as p:
        refs = p | beam.Create(batches) | beam.ParDo(SpillShardsFn(scratch, 5))
        assert_that(refs, check_refs)


# ------------------------------------------------------------ ScoreMarkets ---
AS_OF = dt.date(2024, 5, 20)
OBSERVED = [AS_OF - dt.timedelta(days=i) for i in range(7)]


def _score_inputs():
    enrolled = [
        enrollment("t1", campaign="c1", market="US"),
        enrollment("t2", campaign="c1", market="US", surfaces=["radio"]),
        enrollment("t3", campaign="c2", market="US", status="paused"),
        enrollment("t4", campaign="c3", market="US", artist_id="a-t1"),
        enrollment("t1", campaign="c4", market="GB", licensor_id="l2"),
        enrollment("t5", campaign="c4", market="GB", licensor_id="l2", release_date=AS_OF),
    ]
    aggs, totals = [], []
    counts = {"t1": (30, 6, 3), "t2": (25, 5, 2), "t3": (20, 4, 1), "t4": (40, 8, 4), "t5": (12, 2, 1)}
    for day in OBSERVED:
        for market, tracks in (("US", ["t1", "t2", "t3", "t4"]), ("GB", ["t1", "t5"])):
            for s in PROMOTION_SURFACES:
                for t in tracks:
                    plays, skips, saves = counts[t]
                    aggs.append(dict(dt=day, track_id=t, market=market, surface=s, plays=plays, listeners=plays,
                                     skips=skips, saves=saves, promoted_plays=1, ms_played=plays * 1000))
                totals.append(dict(dt=day, market=market, surface=s, plays=800, skips=200, saves=40,
                                   promoted_plays=len(tracks)))
            # a track in no export: aggregated, but it never reaches scoring
            aggs.append(dict(dt=day, track_id="t9", market="US", surface="radio", plays=50, listeners=50, skips=10,
                             saves=1, promoted_plays=0, ms_played=50_000))
        # a market with plays but no enrollment: nothing to score
        totals.append(dict(dt=day, market="FR", surface="radio", plays=500, skips=100, saves=10, promoted_plays=0))
    agg_table = pa.Table.from_pylist(aggs, schema=DAILY_AGGREGATES.arrow())
    # aggregates arrive as several parts (one per day), totals as one table per day
    agg_parts = [agg_table.filter(pc.equal(agg_table.column("dt"), pa.scalar(d, pa.date32())))
                 for d in OBSERVED]
    tot_table = pa.Table.from_pylist(totals, schema=SURFACE_TOTALS.arrow())
    tot_parts = [tot_table.filter(pc.equal(tot_table.column("dt"), pa.scalar(d, pa.date32())))
                 for d in OBSERVED]
    return enrollments(enrolled), agg_parts, tot_parts


def test_score_markets():
    enrolled, agg_parts, tot_parts = _score_inputs()
    score_date = AS_OF + dt.timedelta(days=1)
    expected_keys = {(t, m, s) for t, m in [("t1", "US"), ("t2", "US"), ("t3", "US"), ("t4", "US"),
                                            ("t1", "GB"), ("t5", "GB")] for s in PROMOTION_SURFACES}

    def rows(kv, table):
        name, t = kv
        assert t.schema == table.arrow(), name
        return [dict(r, _part=name) for r in t.to_pylist()]

    def check_scores(rs):
        keys = [(r["track_id"], r["market"], r["surface"]) for r in rs]
        if len(keys) != len(set(keys)) or set(keys) != expected_keys:
            raise BeamAssertException(f"scores keys {sorted(keys)}")
        for r in rs:
            assert r["_part"] == f"part-{r['market']}"
            assert r["score_date"] == score_date and r["snapshot_id"] == "snap-1"
            assert r["flight_end"] == dt.date(2024, 5, 31)
            assert 0.0 <= r["score"] <= 1.0
            assert 0.0 <= r["planned_promoted_plays"] <= r["max_promoted_plays"] + 1e-9
            if not r["eligible"]:
                assert r["planned_promoted_plays"] == 0 and r["score"] == 0 and r["reason"]
        reason = {(r["track_id"], r["market"], r["surface"]): r["reason"] for r in rs}
        assert reason[("t3", "US", "radio")] == "campaign_paused"
        assert reason[("t2", "US", "mixes")] == "surface_not_enrolled"
        assert reason[("t5", "GB", "radio")] == "too_new"
        assert reason[("t1", "US", "radio")] is None
        assert any(r["planned_promoted_plays"] > 0 for r in rs)
        # the guardrail looked again at the rows the previous snapshot pulled back, paused or not (and
        # reinstated them: their skip rates are below the baseline), and at no other ineligible row
        prob = {(r["track_id"], r["market"], r["surface"]): r["dislike_probability"] for r in rs}
        assert prob[("t3", "US", "radio")] is not None and prob[("t3", "US", "mixes")] is None
        assert not any(r["pulled_back"] for r in rs)
        for r in rs:
            assert r["supply_forecast_low"] <= r["supply_forecast"] <= r["supply_forecast_high"] + 1e-9

    def check_delivery_and_capacity(elements):
        scores = [r for kind, r in elements if kind == "scores"]
        delivery = [r for kind, r in elements if kind == "delivery"]
        capacity = [r for kind, r in elements if kind == "capacity"]
        planned = {}
        for r in scores:
            k = (r["campaign_id"], r["market"], r["surface"])
            planned[k] = planned.get(k, 0.0) + r["planned_promoted_plays"]
        # Every active campaign in its flight, on each surface it has tracks on; the
        # paused campaign c2 may be listed, but then with nothing to deliver.
        d_keys = [(r["campaign_id"], r["market"], r["surface"]) for r in delivery]
        active = ({(c, "US", s) for c in ("c1", "c3") for s in PROMOTION_SURFACES}
                  | {("c4", "GB", s) for s in PROMOTION_SURFACES})
        paused = {("c2", "US", s) for s in PROMOTION_SURFACES}
        if len(d_keys) != len(set(d_keys)) or not active <= set(d_keys) <= active | paused:
            raise BeamAssertException(f"delivery keys {sorted(d_keys)}")
        for r in delivery:
            if r["campaign_id"] == "c2":
                assert r["floor"] == 0 and r["planned"] == 0
            k = (r["campaign_id"], r["market"], r["surface"])
            assert r["planned"] == pytest.approx(planned[k], abs=1e-9)
            assert r["shortfall"] == pytest.approx(max(0.0, r["floor"] - r["planned"]), abs=1e-9)
            assert r["flight_start"] == dt.date(2024, 5, 1) and r["flight_end"] == dt.date(2024, 5, 31)
            assert r["floor"] >= 0 and r["delivered_to_date"] >= 0
        # one promoted play per enrolled track, surface and day since the flight started
        delivered = {k: r["delivered_to_date"] for k, r in zip(d_keys, delivery)}
        assert delivered[("c1", "US", "radio")] == 14      # t1 and t2, 7 days
        assert delivered[("c1", "US", "mixes")] == 7       # t2 is not enrolled on mixes
        assert delivered[("c4", "GB", "autoplay")] == 14   # t1 and t5
        c_keys = sorted((r["market"], r["surface"]) for r in capacity)
        if c_keys != sorted((m, s) for m in ("GB", "US") for s in PROMOTION_SURFACES):
            raise BeamAssertException(f"capacity keys {c_keys}")
        for r in capacity:
            total = sum(x["planned_promoted_plays"] for x in scores
                        if (x["market"], x["surface"]) == (r["market"], r["surface"]))
            assert r["planned_total"] == pytest.approx(total, abs=1e-9)
            assert r["planned_total"] <= r["capacity"] + 1e-9
            assert r["capacity"] == pytest.approx(r["promoted_share_cap"] * r["total_forecast"])
            assert r["total_forecast"] == pytest.approx(800.0)
        # prices: the capacity row is the capacity table's, one floor row per delivery row,
        # one track_cap row per eligible row with a cap
        prices = {(r["market"], r["surface"], r["constraint"], r["key"]): r for kind, r in elements
                  if kind == "prices"}
        for r in capacity:
            row = prices[(r["market"], r["surface"], "capacity", "")]
            assert (row["bound"], row["price"]) == (r["capacity"], r["shadow_price"])
            assert row["slack"] == pytest.approx(r["capacity"] - r["planned_total"], abs=1e-9)
        assert ({(m, s, k) for m, s, c, k in prices if c == "campaign_floor"}
                == {(r["market"], r["surface"], r["campaign_id"]) for r in delivery})
        for r in delivery:
            assert prices[(r["market"], r["surface"], "campaign_floor", r["campaign_id"])]["bound"] == r["floor"]
        capped = {(r["market"], r["surface"], r["track_id"]): r for r in scores if r["max_promoted_plays"] > 0}
        assert {(m, s, k) for m, s, c, k in prices if c == "track_cap"} == set(capped)
        for (m, s, t), r in capped.items():
            row = prices[(m, s, "track_cap", t)]
            assert row["bound"] == r["max_promoted_plays"]
            assert row["slack"] == pytest.approx(r["max_promoted_plays"] - r["planned_promoted_plays"], abs=1e-12)
        assert all(r["price"] >= 0 and r["slack"] >= 0 and r["score_date"] == score_date for r in prices.values())

    with test_pipeline.TestPipeline() as p:
        inputs = {
            "enrollments": p | "Enrollments" >> beam.Create([enrolled]),
            "aggregates": p | "Aggregates" >> beam.Create(agg_parts),
            "totals": p | "Totals" >> beam.Create(tot_parts),
            "previous": p | "Previous" >> beam.Create([pa.table(
                {"track_id": ["t3", "t1"], "market": ["US", "US"], "surface": ["radio", "autoplay"]})]),
        }
        out = inputs | ScoreMarkets(AS_OF, Config(), OBSERVED, "snap-1", method="exact")
        scores = out["scores"] | "ScoreRows" >> beam.FlatMap(rows, PROMOTION_SCORES)
        delivery = out["delivery"] | "DeliveryRows" >> beam.FlatMap(rows, CAMPAIGN_DELIVERY)
        capacity = out["capacity"] | "CapacityRows" >> beam.FlatMap(rows, CAPACITY)
        prices = out["prices"] | "PriceRows" >> beam.FlatMap(rows, PRICES)
        assert_that(scores | "AllScores" >> beam.combiners.ToList(), lambda x: check_scores(x[0]), label="scores")
        tagged = ((scores | "TagS" >> beam.Map(lambda r: ("scores", r)),
                   delivery | "TagD" >> beam.Map(lambda r: ("delivery", r)),
                   capacity | "TagC" >> beam.Map(lambda r: ("capacity", r)),
                   prices | "TagP" >> beam.Map(lambda r: ("prices", r)))
                  | beam.Flatten())
        assert_that(tagged | "All" >> beam.combiners.ToList(), lambda x: check_delivery_and_capacity(x[0]),
                    label="delivery_capacity")
        assert_that(out["capacity"] | "CapParts" >> beam.Keys(), equal_to(["part-GB", "part-US"]),
                    label="capacity_parts")


# -------------------------------------------------------- WriteParquetParts ---
def test_write_parquet_parts_writes_readable_files(tmp_path):
    a = events([event("a"), event("b", surface="mixes")])
    b = pa.Table.from_pylist([dict(dt=DAY, market="US", surface="radio", plays=3, skips=1, saves=0,
                                   promoted_plays=0)], schema=SURFACE_TOTALS.arrow())
    folder = tmp_path / "out" / "tables"
    with test_pipeline.TestPipeline() as p:
        written = p | beam.Create([("part-00000", a), ("part-00001", b)]) | WriteParquetParts(str(folder))
        assert_that(written, equal_to([(str(folder / "part-00000.parquet"), 2),
                                       (str(folder / "part-00001.parquet"), 1)]))
    assert sorted(x.name for x in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(folder / "part-00000.parquet").equals(a)
    assert pq.read_table(folder / "part-00001.parquet").equals(b)


# --------------------------------------------------------- ReadInputBatches ---
CONTRACT_TYPES = [(f.name, f.type) for f in ENGAGEMENT.arrow()]


def test_read_input_batches_conforms_and_keys_by_file_and_batch(tmp_path):
    f0, f1 = str(tmp_path / "f0.parquet"), str(tmp_path / "f1.parquet")
    pq.write_table(events([event(x) for x in "abcde"]), f0)
    # a producer's variant: extra column, other column order, ns timestamps, large strings
    t = events([event("z", campaign_id="c7", promoted=True)])
    t = t.set_column(1, "event_ts", t.column("event_ts").cast(pa.timestamp("ns", tz="UTC")))
    t = t.set_column(0, "event_id", t.column("event_id").cast(pa.large_string()))
    t = t.append_column("client", pa.array(["ios"]))
    pq.write_table(t.select(list(reversed(t.column_names))), f1)
    with test_pipeline.TestPipeline() as p:
        batches = p | ReadInputBatches([f0, f1], ENGAGEMENT, "engagement", batch_rows=2)
        # Nullability is left to CheckContract (null keys become dead letters), so
        # compare names and types.
        rows = batches | beam.Map(lambda kv: (kv[0], [(f.name, f.type) for f in kv[1].schema] == CONTRACT_TYPES,
                                              kv[1].column("event_id").to_pylist()))
        assert_that(rows, equal_to([
            ((0, 0, f0), True, ["a", "b"]), ((0, 1, f0), True, ["c", "d"]), ((0, 2, f0), True, ["e"]),
            ((1, 0, f1), True, ["z"]),
        ]))


def test_read_input_batches_names_the_file_with_a_wrong_column_type(tmp_path):
    good = str(tmp_path / "good.parquet")
    bad = str(tmp_path / "dt=2024-05-10" / "bad.parquet")
    (tmp_path / "dt=2024-05-10").mkdir()
    pq.write_table(events([event("a")]), good)
    t = events([event("b")])
    t = t.set_column(t.schema.get_field_index("ms_played"), "ms_played", pa.array(["100000"]))
    pq.write_table(t, bad)
    with pytest.raises(Exception) as e:
        with test_pipeline.TestPipeline() as p:
            _ = p | ReadInputBatches([good, bad], ENGAGEMENT, "engagement", batch_rows=1024)
    assert bad in str(e.value)
    assert "ms_played" in str(e.value)
    assert good not in str(e.value)


def test_read_input_batches_names_a_file_that_is_not_parquet(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(Exception) as e:
        with test_pipeline.TestPipeline() as p:
            _ = p | ReadInputBatches([str(bad)], ENGAGEMENT, "engagement", batch_rows=1024)
    assert str(bad) in str(e.value)
    assert "cannot be read as Parquet" in str(e.value)
