"""Beam composites of the daily job. Elements are Arrow tables (record batches
of up to `batch_rows` rows), never single events: per-element Python is ~30x
slower than working on batches (NOTES.md).

  CheckContract         batches -> good batches + dead letters (tagged outputs)
  LatestEnrollments     enrollment batches -> one table, latest row per key
  AggregateDailySignals one day's events -> per (track, market, surface) aggregates + surface totals
                        (rows spilled to scratch files by track shard; only references are shuffled)
  ScoreMarkets          aggregates + totals + enrollments -> scores, delivery, capacity per market
"""
from __future__ import annotations

import datetime as dt
from typing import Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import arrays, contract, faults, storage
from pipelines.beam.coders import Named
from pipelines.config import Config
from pipelines.metrics import counter
from pipelines.scoring.market import score_market
from schemas import (CAMPAIGN_DELIVERY, CAPACITY, DAILY_AGGREGATES, DEAD_LETTERS, ENROLLMENTS, PROMOTION_SCORES,
                     PROMOTION_SURFACES, SURFACE_TOTALS)


# ----------------------------------------------------------------- check ---
class CheckContractFn(beam.DoFn):
    DEAD = "dead"

    def __init__(self, source: str, day: dt.date, slack_hours: float, keep: list[str] | None = None):
        self.source, self.day, self.slack_hours, self.keep = source, day, slack_hours, keep

    def setup(self):
        self.dead_count = counter(f"dead_lettered/{self.source}/{self.day.isoformat()}")
        self.read_count = counter(f"checked/{self.source}/{self.day.isoformat()}")

    def process(self, element):
        (file_index, batch_index, uri), table = element
        reasons = contract.check_batch(self.source, table, self.day, self.slack_hours)
        good, dead = contract.split_good_bad(table, reasons, day=self.day, source=self.source,
                                             source_file=uri, good_columns=self.keep)
        self.read_count.inc(table.num_rows)
        if dead.num_rows:
            self.dead_count.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput(self.DEAD, dead)
        yield (file_index, batch_index), good


class CheckContract(beam.PTransform):
    """Tagged outputs: `good` ((order key), table) and `dead` (dead-letter tables).
    `keep`: the columns the good rows carry on (all by default); dead letters
    always hold the whole row."""

    def __init__(self, source: str, day: dt.date, slack_hours: float, keep: list[str] | None = None):
        super().__init__()
        self.source, self.day, self.slack_hours, self.keep = source, day, slack_hours, keep

    def expand(self, batches):
        return batches | "CheckRows" >> (
            beam.ParDo(CheckContractFn(self.source, self.day, self.slack_hours, self.keep))
            .with_output_types(Tuple[Tuple[int, int], pa.Table], **{CheckContractFn.DEAD: pa.Table})
            .with_outputs(CheckContractFn.DEAD, main="good"))


def _concat_latest(tables):
    return contract.latest_enrollments(arrays.concat(list(tables), ENROLLMENTS.arrow()))


class LatestEnrollments(beam.PTransform):
    """Good enrollment batches -> a single table with the latest row per key."""

    def expand(self, good):
        return (good
                | "DropOrder" >> beam.Values()
                | "CollectExport" >> beam.combiners.ToList()
                | "KeepLatestPerKey" >> beam.Map(_concat_latest).with_output_types(pa.Table))


# ------------------------------------------------------------- aggregate ---
AGGREGATE_COLUMNS = ["event_id", "user_id", "track_id", "market", "surface", "ms_played", "skipped", "saved",
                     "promoted"]


def spill_options(uri: str) -> pa.ipc.IpcWriteOptions:
    """lz4 on GCS, where bytes cost time; none on a local disk, where they cost
    less than compressing them (measured on a 262k-row batch: 18 ms vs 8 ms to
    write, for 6.7 MB vs 8.6 MB)."""
    return pa.ipc.IpcWriteOptions(compression="lz4" if storage.is_gcs(uri) else None)


class SpillShardsFn(beam.DoFn):
    """One checked batch -> its promotion-surface rows, projected to the columns
    the aggregates need, split by a stable hash of track_id (duplicates of an
    event share its track, so each shard can drop repeated event_ids on its own)
    and written to one Arrow IPC file in the scratch folder, one record batch
    per shard. Yields (shard, (order, uri, index in file)).

    Only these references cross the shuffle. An in-process runner keeps a
    shuffle's elements in memory, so shuffling the rows themselves made a run's
    memory grow with the day (about 170 MB per 1M events); through files it is
    bounded by the batch and shard sizes. On Dataflow the scratch folder is a
    gs:// folder. A retried bundle rewrites the same file with the same rows.
    """

    def __init__(self, scratch_dir: str, shards: int):
        self.scratch_dir, self.shards = scratch_dir, shards

    def setup(self):
        self.spilled = counter("rows_spilled")

    def process(self, element):
        order, table = element
        promo = pc.is_in(table.column("surface"), pa.array(PROMOTION_SURFACES)).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(promo)
        if len(rows) == 0:
            return
        shards = arrays.stable_shard(table.column("track_id").take(pa.array(rows)), self.shards)
        by_shard, runs = arrays.key_runs(shards)
        # one copy: the promotion rows, projected, in shard order; each shard is
        # then a zero-copy slice, which the IPC writer writes compactly
        table = table.select(AGGREGATE_COLUMNS).take(pa.array(rows[by_shard])).combine_chunks()
        uri = storage.join(self.scratch_dir, "part-" + "-".join(f"{i:05d}" for i in order) + ".arrow")
        with storage.open_output(uri) as sink, pa.ipc.new_file(sink, table.schema,
                                                                   options=spill_options(uri)) as w:
            for _, start, end in runs:  # one record batch per shard, in `runs` order
                (batch,) = table.slice(start, end - start).to_batches()
                w.write_batch(batch)
        self.spilled.inc(table.num_rows)
        for index, (shard, _, _) in enumerate(runs):
            yield shard, (order, uri, index)


def read_spilled(refs) -> pa.Table:
    """The rows of one shard, in input order (so "first seen" is deterministic)."""
    batches = []
    for _, uri, index in sorted(refs):
        with storage.open_input(uri) as f:
            batches.append(pa.ipc.open_file(f).get_batch(index))
    return pa.Table.from_batches(batches).combine_chunks()


class AggregateShardFn(beam.DoFn):
    """One shard of one day's events -> (track aggregates, surface totals)."""
    TOTALS = "totals"

    def __init__(self, day: dt.date, enrolled_tracks: list[str] | None):
        self.day = day
        self.enrolled_tracks = enrolled_tracks

    def setup(self):
        self.dupes = counter(f"duplicates_removed/{self.day.isoformat()}")
        self.tracks = pa.array(sorted(self.enrolled_tracks)) if self.enrolled_tracks is not None else None

    def process(self, element):
        faults.checkpoint("aggregating")
        shard, refs = element
        table = read_spilled(list(refs))
        deduped = arrays.first_per_key(table, "event_id")
        self.dupes.inc(table.num_rows - deduped.num_rows)
        flags = {
            "skips": pc.cast(deduped.column("skipped"), pa.int64()),
            "saves": pc.cast(deduped.column("saved"), pa.int64()),
            "promoted_plays": pc.cast(deduped.column("promoted"), pa.int64()),
        }
        t = deduped.append_column("skips", flags["skips"]).append_column("saves", flags["saves"]) \
            .append_column("promoted_plays", flags["promoted_plays"])
        totals = t.group_by(["market", "surface"], use_threads=False).aggregate(
            [("event_id", "count"), ("skips", "sum"), ("saves", "sum"), ("promoted_plays", "sum")])
        yield beam.pvalue.TaggedOutput(self.TOTALS, totals.rename_columns(
            ["market", "surface", "plays", "skips", "saves", "promoted_plays"]))
        if self.tracks is not None:
            t = t.filter(pc.is_in(t.column("track_id"), self.tracks))
        if t.num_rows == 0:
            return
        agg = t.group_by(["track_id", "market", "surface"], use_threads=False).aggregate([
            ("event_id", "count"), ("user_id", "count_distinct"), ("skips", "sum"), ("saves", "sum"),
            ("promoted_plays", "sum"), ("ms_played", "sum")])
        agg = agg.rename_columns(["track_id", "market", "surface", "plays", "listeners", "skips", "saves",
                                  "promoted_plays", "ms_played"])
        agg = agg.append_column("dt", pa.array([self.day] * agg.num_rows, pa.date32()))
        agg = DAILY_AGGREGATES.conform(agg)
        yield f"part-{shard:05d}", agg.sort_by([("track_id", "ascending"), ("market", "ascending"),
                                                 ("surface", "ascending")])


def _sum_totals(tables, day):
    t = arrays.concat(list(tables), pa.schema([
        ("market", pa.string()), ("surface", pa.string()), ("plays", pa.int64()), ("skips", pa.int64()),
        ("saves", pa.int64()), ("promoted_plays", pa.int64())]))
    t = t.group_by(["market", "surface"], use_threads=False).aggregate(
        [("plays", "sum"), ("skips", "sum"), ("saves", "sum"), ("promoted_plays", "sum")])
    t = t.rename_columns(["market", "surface", "plays", "skips", "saves", "promoted_plays"])
    t = t.append_column("dt", pa.array([day] * t.num_rows, pa.date32()))
    return SURFACE_TOTALS.conform(t).sort_by([("market", "ascending"), ("surface", "ascending")])


class AggregateDailySignals(beam.PTransform):
    """One day's good events -> tagged `tracks` ((part name, aggregate table)) and
    `totals` (one surface_totals table)."""

    def __init__(self, day: dt.date, shards: int, enrolled_tracks: list[str] | None, scratch_dir: str):
        super().__init__()
        self.day, self.shards, self.enrolled_tracks = day, shards, enrolled_tracks
        self.scratch_dir = scratch_dir

    def expand(self, good):
        out = (good
               | "SpillShards" >> beam.ParDo(SpillShardsFn(self.scratch_dir, self.shards))
               | "GroupShards" >> beam.GroupByKey()
               | "AggregateShards" >> beam.ParDo(AggregateShardFn(self.day, self.enrolled_tracks))
               .with_output_types(Named, **{AggregateShardFn.TOTALS: pa.Table})
               .with_outputs(AggregateShardFn.TOTALS, main="tracks"))
        totals = (out.totals
                  | "CollectTotals" >> beam.combiners.ToList()
                  | "SumTotals" >> beam.Map(_sum_totals, self.day).with_output_types(pa.Table))
        return {"tracks": out.tracks, "totals": totals}


# ----------------------------------------------------------------- score ---
def _by_market(table: pa.Table):
    for (market,), part in arrays.split_by(table, ["market"]):
        yield market, part


class ScoreMarketFn(beam.DoFn):
    DELIVERY, CAPACITY = "delivery", "capacity"

    def __init__(self, as_of: dt.date, cfg: Config, observed_days: list[dt.date], snapshot_id: str,
                 method: str):
        self.as_of, self.cfg, self.observed_days = as_of, cfg, observed_days
        self.snapshot_id, self.method = snapshot_id, method

    def setup(self):
        self.eligible = counter("rows_eligible")
        self.ineligible = counter("rows_ineligible")

    def process(self, element):
        market, groups = element
        # Sorted by key: the shuffle delivers parts in any order, and float sums
        # must not depend on it (same inputs -> identical tables).
        enrolled = _sorted(arrays.concat(list(groups["enrollments"]), ENROLLMENTS.arrow()), ENROLLMENTS)
        if enrolled.num_rows:  # engagement for a market with no enrollment: nothing to score
            yield from self._score(market, enrolled, groups)

    def _score(self, market, enrolled, groups):
        aggs = _sorted(arrays.concat(list(groups["aggregates"]), DAILY_AGGREGATES.arrow()),
                       DAILY_AGGREGATES).to_pandas()
        totals = _sorted(arrays.concat(list(groups["totals"]), SURFACE_TOTALS.arrow()),
                         SURFACE_TOTALS).to_pandas()
        result = score_market(market, enrolled.to_pandas(), aggs, totals, self.observed_days,
                                      self.as_of, self.cfg, method=self.method)
        n_elig = int(result.scores["eligible"].sum())
        self.eligible.inc(n_elig)
        self.ineligible.inc(len(result.scores) - n_elig)
        for reason, n in result.scores["reason"].value_counts().items():
            counter(f"ineligible/{reason}").inc(int(n))
        score_date = self.as_of + dt.timedelta(days=1)
        name = f"part-{market}"
        yield name, _finish(result.scores, PROMOTION_SCORES, score_date, self.snapshot_id)
        yield beam.pvalue.TaggedOutput(self.DELIVERY, (name, _finish(result.delivery, CAMPAIGN_DELIVERY,
                                                                     score_date, self.snapshot_id)))
        yield beam.pvalue.TaggedOutput(self.CAPACITY, (name, _finish(result.capacity, CAPACITY,
                                                                     score_date, self.snapshot_id)))


def _sorted(t: pa.Table, contract_table) -> pa.Table:
    return t.sort_by([(k, "ascending") for k in contract_table.key])


def _finish(df, table, score_date: dt.date, snapshot_id: str) -> pa.Table:
    """One market's output frame -> its contract table, sorted by key.

    Built column by column with the conversion `pa.Table.from_pandas` applies
    to each column (so the same values, nulls and types): from_pandas spent
    twice as long again on frame copies and pandas metadata, and was most of
    the time of scoring a market after the scoring itself."""
    constants = {"score_date": score_date, "snapshot_id": snapshot_id}
    schema = table.arrow()
    columns = [pa.repeat(pa.scalar(constants[f.name], type=f.type), len(df)) if f.name in constants
               else pa.array(df[f.name], type=f.type, from_pandas=True) for f in schema]
    arrow = pa.Table.from_arrays(columns, schema=schema).replace_schema_metadata(None)
    return arrow.sort_by([(k, "ascending") for k in table.key])


class ScoreMarkets(beam.PTransform):
    """Join aggregates, totals and enrollments by market, then score and
    allocate each market. Outputs tagged `scores`, `delivery`, `capacity`, each
    of (part name, table)."""

    def __init__(self, as_of, cfg, observed_days, snapshot_id, method: str):
        super().__init__()
        self.args = (as_of, cfg, observed_days, snapshot_id, method)

    def expand(self, inputs):
        keyed = {
            name: pcoll | f"Key{name.title()}" >> beam.FlatMap(_by_market).with_output_types(Named)
            for name, pcoll in (("enrollments", inputs["enrollments"]), ("aggregates", inputs["aggregates"]),
                                ("totals", inputs["totals"]))
        }
        out = (keyed
               | "JoinByMarket" >> beam.CoGroupByKey()
               | "ScoreAndAllocate" >> beam.ParDo(ScoreMarketFn(*self.args))
               .with_output_types(Named, **{ScoreMarketFn.DELIVERY: Named, ScoreMarketFn.CAPACITY: Named})
               .with_outputs(
                   ScoreMarketFn.DELIVERY, ScoreMarketFn.CAPACITY, main="scores"))
        return {"scores": out.scores, "delivery": out.delivery, "capacity": out.capacity}


def concat_dead_letters(tables):
    t = arrays.concat(list(tables), DEAD_LETTERS.arrow())
    return t.sort_by([("source_file", "ascending"), ("reason", "ascending"), ("row_json", "ascending")])
