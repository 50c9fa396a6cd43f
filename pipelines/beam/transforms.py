"""Beam composites of the daily job. Elements are Arrow tables (record batches
of up to `batch_rows` rows), never single events: per-element Python is ~30x
slower than working on batches (NOTES.md).

  CheckContract         batches -> good batches + dead letters (tagged outputs)
  LatestEnrollments     enrollment batches -> one table, latest row per key
  AggregateDailySignals one day's events -> per (track, market, surface) aggregates + surface totals
                        (rows spilled to scratch files by track shard; only references are shuffled)
  ScoreMarkets          aggregates + totals + enrollments + previous pulled-back rows (+ the previous
                        snapshot's plan and capacity) -> scores, delivery, capacity, prices, reconciliation
                        per market
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
from pipelines.dedupe import LookBack
from pipelines.beam.io import PULLED_BACK_SCHEMA, published_schema
from pipelines.config import Config
from pipelines.metrics import counter
from pipelines.scoring.delivery import PLAN_COLUMNS, STATE_COLUMNS
from pipelines.scoring.market import score_market
from schemas import (CAMPAIGN_DELIVERY, CAPACITY, DAILY_AGGREGATES, DEAD_LETTERS, DELIVERY_RECONCILIATION,
                     ENROLLMENTS, PRICES, PROMOTION_SCORES, PROMOTION_SURFACES, SURFACE_TOTALS)


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
        with storage.open_output(uri, private=True) as sink, pa.ipc.new_file(sink, table.schema,
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
    """One shard of one day's events -> (track aggregates, surface totals).

    Every track with promotion-surface plays is aggregated, enrolled or not
    (aggregate format 2): a track that enters the enrollment export later keeps
    its history, and the rows are per track, not per event (6M-event day: about
    0.6M rows against 30k for the enrolled tracks alone).
    lookback: also drop events whose id a look-back day saw (`pipelines.dedupe`)."""
    TOTALS = "totals"

    def __init__(self, day: dt.date, lookback: LookBack | None = None):
        self.day = day
        self.lookback = lookback

    def setup(self):
        self.dupes = counter(f"duplicates_removed/{self.day.isoformat()}")
        self.repeats = counter(f"repeats_from_earlier_days/{self.day.isoformat()}")

    def process(self, element):
        faults.checkpoint("aggregating")
        shard, refs = element
        table = read_spilled(list(refs))
        deduped = arrays.first_per_key(table, "event_id")
        if self.lookback is not None:  # the same id on an earlier day: counted there
            deduped, repeats = self.lookback.drop_seen(shard, deduped)
            self.repeats.inc(repeats)
        self.dupes.inc(table.num_rows - deduped.num_rows)
        flags = {
            "skips": pc.cast(deduped.column("skipped"), pa.int64()),
            "saves": pc.cast(deduped.column("saved"), pa.int64()),
            "promoted_plays": pc.cast(deduped.column("promoted"), pa.int64()),
        }
        # how listeners react to promoted plays (the guardrail's promoted-vs-organic test)
        promoted = deduped.column("promoted")
        flags["promoted_skips"] = pc.cast(pc.and_(deduped.column("skipped"), promoted), pa.int64())
        flags["promoted_saves"] = pc.cast(pc.and_(deduped.column("saved"), promoted), pa.int64())
        t = deduped
        for name, column in flags.items():
            t = t.append_column(name, column)
        totals = t.group_by(["market", "surface"], use_threads=False).aggregate(
            [("event_id", "count"), ("skips", "sum"), ("saves", "sum"), ("promoted_plays", "sum")])
        yield beam.pvalue.TaggedOutput(self.TOTALS, totals.rename_columns(
            ["market", "surface", "plays", "skips", "saves", "promoted_plays"]))
        if t.num_rows == 0:
            return
        agg = t.group_by(["track_id", "market", "surface"], use_threads=False).aggregate([
            ("event_id", "count"), ("user_id", "count_distinct"), ("skips", "sum"), ("saves", "sum"),
            ("promoted_plays", "sum"), ("ms_played", "sum"), ("promoted_skips", "sum"), ("promoted_saves", "sum")])
        agg = agg.rename_columns(["track_id", "market", "surface", "plays", "listeners", "skips", "saves",
                                  "promoted_plays", "ms_played", "promoted_skips", "promoted_saves"])
        agg = agg.append_column("dt", pa.repeat(pa.scalar(self.day, pa.date32()), agg.num_rows))
        # in the group-by's order (first appearance in the shard, itself in input order): the same inputs give
        # the same file, and nothing reads it in key order (sorting the 0.6M rows of a 6M-event day cost 0.25 s)
        yield f"part-{shard:05d}", DAILY_AGGREGATES.conform(agg)


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
    `totals` (one surface_totals table).

    lookback: the cross-day dedupe (`pipelines.dedupe.LookBack`); `after`: the
    totals of look-back days built in the same pipeline, which this day waits
    for (as side inputs), so their seen ids are written before it reads them."""

    def __init__(self, day: dt.date, shards: int, scratch_dir: str, lookback: LookBack | None = None,
                 after: tuple = ()):
        super().__init__()
        self.day, self.shards = day, shards
        self.scratch_dir, self.lookback, self.after = scratch_dir, lookback, tuple(after)

    def expand(self, good):
        if self.after:
            good = good | "AfterLookBackDays" >> beam.Map(
                lambda batch, *_: batch, *[beam.pvalue.AsSingleton(t) for t in self.after]).with_output_types(
                    Tuple[Tuple[int, int], pa.Table])
        out = (good
               | "SpillShards" >> beam.ParDo(SpillShardsFn(self.scratch_dir, self.shards))
               | "GroupShards" >> beam.GroupByKey()
               | "AggregateShards" >> beam.ParDo(AggregateShardFn(self.day, self.lookback))
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
    DELIVERY, CAPACITY, PRICES, RECONCILIATION = "delivery", "capacity", "prices", "reconciliation"

    def __init__(self, as_of: dt.date, cfg: Config, observed_days: list[dt.date], snapshot_id: str,
                 method: str, plan_snapshot_id: str | None = None):
        self.as_of, self.cfg, self.observed_days = as_of, cfg, observed_days
        self.snapshot_id, self.method, self.plan_snapshot_id = snapshot_id, method, plan_snapshot_id

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
        before = arrays.concat(list(groups.get("previous", [])), PULLED_BACK_SCHEMA).to_pandas()
        # the previous snapshot's plan (None: none was published for as_of) and capacity
        plan = _previous(groups.get("plan", []), PROMOTION_SCORES, PLAN_COLUMNS) if self.plan_snapshot_id else None
        state = _previous(groups.get("state", []), CAPACITY, STATE_COLUMNS)
        result = score_market(market, enrolled.to_pandas(), aggs, totals, self.observed_days,
                              self.as_of, self.cfg, method=self.method, pulled_back_before=before, plan=plan,
                              state=state, plan_snapshot_id=self.plan_snapshot_id)
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
        yield beam.pvalue.TaggedOutput(self.PRICES, (name, _finish(result.prices, PRICES,
                                                                   score_date, self.snapshot_id)))
        # the reconciliation is of the logs day: its score_date is as_of
        yield beam.pvalue.TaggedOutput(self.RECONCILIATION, (name, _finish(
            result.reconciliation, DELIVERY_RECONCILIATION, self.as_of, self.snapshot_id)))


def _previous(tables, contract_table, columns):
    """A market's rows of a previous snapshot's table as a frame sorted by key, or None when there are none."""
    t = arrays.concat(list(tables), published_schema(contract_table, columns))
    if t.num_rows == 0:
        return None if contract_table is CAPACITY else t.to_pandas()
    keys = [k for k in contract_table.key if k in columns]
    return t.sort_by([(k, "ascending") for k in keys]).to_pandas()


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


class KeepTracksFn(beam.DoFn):
    """Aggregate tables -> their rows of the given tracks (the enrolled ones).

    Aggregates cover every track with plays (a 6M-event day: 0.6M rows, 32k
    of them enrolled); scoring needs the enrolled ones. Applied on each branch
    where aggregates are made or read, before they are flattened: a Flatten
    of stages is materialised by the in-process runner, and the whole day's
    rows there cost 260 MB of peak memory (measured on the 6M-event day)."""

    def __init__(self, tracks: list[str]):
        self.tracks = tracks

    def setup(self):
        self.value_set = pa.array(sorted(self.tracks), pa.string())

    def process(self, table):
        yield table.filter(pc.is_in(table.column("track_id"), value_set=self.value_set))


class ScoreMarkets(beam.PTransform):
    """Join aggregates, totals, enrollments, the previous snapshot's pulled-back
    rows (`previous`) and, when given, `plan` and `state` (the previous
    snapshot's promotion_scores and capacity tables) by market, then score and
    allocate each market. Outputs tagged `scores`, `delivery`, `capacity`,
    `prices`, `reconciliation`, each of (part name, table). plan_snapshot_id
    names the snapshot `plan` comes from; None: no plan was published for the
    logs day. Aggregate rows of tracks no market enrolls are ignored; the daily
    graph leaves them out before (`KeepTracksFn`)."""

    def __init__(self, as_of, cfg, observed_days, snapshot_id, method: str, plan_snapshot_id: str | None = None):
        super().__init__()
        self.args = (as_of, cfg, observed_days, snapshot_id, method, plan_snapshot_id)

    def expand(self, inputs):
        keyed = {
            name: inputs[name] | f"Key{name.title()}" >> beam.FlatMap(_by_market).with_output_types(Named)
            for name in ("enrollments", "aggregates", "totals", "previous", "plan", "state") if name in inputs
        }
        tags = (ScoreMarketFn.DELIVERY, ScoreMarketFn.CAPACITY, ScoreMarketFn.PRICES, ScoreMarketFn.RECONCILIATION)
        out = (keyed
               | "JoinByMarket" >> beam.CoGroupByKey()
               | "ScoreAndAllocate" >> beam.ParDo(ScoreMarketFn(*self.args))
               .with_output_types(Named, **{tag: Named for tag in tags})
               .with_outputs(*tags, main="scores"))
        return {"scores": out.scores, "delivery": out.delivery, "capacity": out.capacity, "prices": out.prices,
                "reconciliation": out.reconciliation}


def concat_dead_letters(tables):
    t = arrays.concat(list(tables), DEAD_LETTERS.arrow())
    return t.sort_by([("source_file", "ascending"), ("reason", "ascending"), ("row_json", "ascending")])
