"""Beam composites of the campaign lift (docs/design.md §5 campaign_lift), on Arrow
batches like the aggregation:

  BuildLiftFacts       one day's checked plays and exposures -> that day's
                       per-listener facts (`pipelines.lift.facts`), written
                       one file per listener shard; also the holdout checks
  MeasureCampaignLift  the facts of the lookback days (built now or stored)
                       + the latest enrollments -> the campaign_lift table

BuildLiftFacts follows `AggregateDailySignals`: each batch's rows are reduced
to the columns the facts need (a listener key instead of the user id), split
by listener shard and spilled to one Arrow IPC file in the scratch folder;
only (shard, reference) pairs cross the shuffle, so memory is bounded by the
batch and shard sizes. A listener lives in one shard on every day (the shard
is key % shards with a fixed `shards`), so MeasureCampaignLift groups the
stored files of one shard across days, and again only file names cross its
shuffle; what leaves a shard is per-(campaign row, arm) sums.
"""
from __future__ import annotations

import datetime as dt
import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import arrays, holdout, storage
from pipelines.beam.coders import Named
from pipelines.beam.transforms import spill_options
from pipelines.lift import facts, measure
from pipelines.metrics import counter
from schemas import EXPOSURE_DAYS, LISTENER_DAYS, MARKET_LISTENERS

PLAYS, ACTIVE, EXPOSED = "plays", "active", "exposures"


def shard_of_keys(keys: np.ndarray, shards: int) -> np.ndarray:
    return (np.asarray(keys, dtype=np.uint64) % np.uint64(shards)).astype(np.int64)


def part_name(shard: int) -> str:
    return f"part-{shard:05d}"


def shard_of_file(uri: str) -> int:
    """The shard of a facts file, from its name (`part-NNNNN.parquet`)."""
    return int(uri.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0].split("-")[1])


def _spill(table: pa.Table, shards: np.ndarray, uri: str, kind: str, order) -> list:
    """Write `table`'s rows, one record batch per shard, to `uri`; the references."""
    by_shard, runs = arrays.key_runs(shards)
    table = table.take(pa.array(by_shard)).combine_chunks()
    with storage.open_output(uri, private=True) as sink, pa.ipc.new_file(sink, table.schema,
                                                                   options=spill_options(uri)) as w:
        for _, start, end in runs:
            (batch,) = table.slice(start, end - start).to_batches()
            w.write_batch(batch)
    return [(shard, (kind, order, uri, index)) for index, (shard, _, _) in enumerate(runs)]


class SpillPlaysFn(beam.DoFn):
    """A checked engagement batch -> its enrolled tracks' plays and its active
    listeners, spilled by listener shard. Also the holdout checks, counted per
    day: promoted plays of listeners logged in the holdout, and logged flags
    that disagree with the assignment function (a null flag is not checked:
    it predates the holdout)."""

    def __init__(self, day: dt.date, scratch_dir: str, shards: int, enrolled_tracks, salt: int, share: float):
        self.day, self.scratch_dir, self.shards = day, scratch_dir, shards
        self.enrolled_tracks, self.salt, self.share = enrolled_tracks, salt, share

    def setup(self):
        tag = self.day.isoformat()
        self.promoted_holdout = counter(f"holdout_promoted/{tag}")
        self.flag_mismatch = counter(f"holdout_flag_mismatch/{tag}")
        self.enrolled = pa.array(sorted(self.enrolled_tracks)) if self.enrolled_tracks is not None else None

    def process(self, element):
        order, table = element
        if table.num_rows == 0:
            return
        keys = holdout.listener_keys(table.column("user_id"))
        flag = table.column("holdout")
        logged = pc.is_valid(flag).to_numpy(zero_copy_only=False)
        flagged = pc.fill_null(flag, False).to_numpy(zero_copy_only=False)
        if logged.any():
            assigned = holdout.in_holdout_keys(keys, table.column("market"),
                                               holdout.month_numbers(table.column("event_ts")), self.salt, self.share)
            self.flag_mismatch.inc(int((logged & (flagged != assigned)).sum()))
        promoted = table.column("promoted").to_numpy(zero_copy_only=False)
        self.promoted_holdout.inc(int((promoted & flagged).sum()))
        stem = storage.join(self.scratch_dir, "-".join(f"{i:05d}" for i in order))
        active = facts.active_listeners(table, keys)
        cells = list(active)
        sizes = np.array([len(active[c]) for c in cells], dtype=np.int64)
        cell = np.repeat(np.arange(len(cells)), sizes)
        act = pa.table({
            "market": pa.array([m for m, _ in cells], pa.string()).take(pa.array(cell)),
            "holdout": pa.array(np.array([f for _, f in cells], dtype=bool)[cell]),
            "listener_key": pa.array(holdout.as_int64(np.concatenate([active[c] for c in cells])), pa.int64())})
        act_keys = act.column("listener_key").to_numpy().view(np.uint64)
        yield from _spill(act, shard_of_keys(act_keys, self.shards), stem + "-active.arrow", ACTIVE, order)
        plays = facts.play_rows(table, keys, self.enrolled)
        if plays.num_rows:
            play_keys = plays.column("listener_key").to_numpy().view(np.uint64)
            yield from _spill(plays, shard_of_keys(play_keys, self.shards), stem + "-plays.arrow", PLAYS, order)


class SpillExposuresFn(beam.DoFn):
    """A checked exposure batch -> its rows (listener key, not user id) spilled
    by listener shard; counts exposures whose arm disagrees with the
    assignment function (ghost exactly for holdout listeners)."""

    def __init__(self, day: dt.date, scratch_dir: str, shards: int, salt: int, share: float):
        self.day, self.scratch_dir, self.shards, self.salt, self.share = day, scratch_dir, shards, salt, share

    def setup(self):
        self.arm_mismatch = counter(f"holdout_arm_mismatch/{self.day.isoformat()}")

    def process(self, element):
        order, table = element
        if table.num_rows == 0:
            return
        keys = holdout.listener_keys(table.column("user_id"))
        assigned = holdout.in_holdout_keys(keys, table.column("market"),
                                           holdout.month_numbers(table.column("event_ts")), self.salt, self.share)
        ghost = pc.equal(table.column("arm"), "ghost").to_numpy(zero_copy_only=False)
        self.arm_mismatch.inc(int((ghost != assigned).sum()))
        rows = facts.exposure_rows(table, keys)
        stem = storage.join(self.scratch_dir, "x-" + "-".join(f"{i:05d}" for i in order))
        yield from _spill(rows, shard_of_keys(keys, self.shards), stem + ".arrow", EXPOSED, order)


def _read_refs(refs, kind: str, schema: pa.Schema) -> pa.Table:
    """The rows of one shard of one kind, in input order."""
    batches = []
    for _, order, uri, index in sorted(r for r in refs if r[0] == kind):
        with storage.open_input(uri) as f:
            batches.append(pa.ipc.open_file(f).get_batch(index))
    if not batches:
        return schema.empty_table()
    # nullability may differ between producers (a conformed input batch, a test's table): the types agree
    return pa.concat_tables([pa.Table.from_batches([b]).cast(schema) for b in batches])


PLAY_SCHEMA = pa.schema([("event_id", pa.string()), ("listener_key", pa.int64()), ("track_id", pa.string()),
                         ("market", pa.string()), ("event_ts", pa.timestamp("us", tz="UTC")), ("stream", pa.bool_()),
                         ("saved", pa.bool_()), ("holdout", pa.bool_())])
ACTIVE_SCHEMA = pa.schema([("market", pa.string()), ("holdout", pa.bool_()), ("listener_key", pa.int64())])
EXPOSURE_SCHEMA = pa.schema([("exposure_id", pa.string()), ("listener_key", pa.int64()),
                             ("campaign_id", pa.string()), ("track_id", pa.string()), ("market", pa.string()),
                             ("surface", pa.string()), ("arm", pa.string()),
                             ("event_ts", pa.timestamp("us", tz="UTC"))])


class BuildShardFactsFn(beam.DoFn):
    """One listener shard of one day -> listener_days (main), exposure_days and
    active-listener counts (tagged)."""
    EXPOSURES, ACTIVE = "exposure_days", "active"

    def __init__(self, day: dt.date):
        self.day = day

    def setup(self):
        self.dupes = counter(f"lift_duplicates_removed/{self.day.isoformat()}")

    def process(self, element):
        shard, refs = element
        refs = list(refs)
        plays, dropped = facts.dedupe(_read_refs(refs, PLAYS, PLAY_SCHEMA), "event_id")
        exposures, dropped_x = facts.dedupe(_read_refs(refs, EXPOSED, EXPOSURE_SCHEMA), "exposure_id")
        self.dupes.inc(dropped + dropped_x)
        name = part_name(shard)
        if plays.num_rows:
            yield name, facts.listener_days(plays, self.day)
        if exposures.num_rows:
            yield beam.pvalue.TaggedOutput(self.EXPOSURES, (name, facts.exposure_days(exposures, plays, self.day)))
        active = _read_refs(refs, ACTIVE, ACTIVE_SCHEMA)
        if active.num_rows:
            counts = active.group_by(["market", "holdout"], use_threads=False).aggregate(
                [("listener_key", "count_distinct")])
            yield beam.pvalue.TaggedOutput(self.ACTIVE, counts.rename_columns(["market", "holdout", "listeners"]))


def _sum_active(tables, day: dt.date) -> pa.Table:
    parts = [t for t in tables if t.num_rows]
    schema = pa.schema([("market", pa.string()), ("holdout", pa.bool_()), ("listeners", pa.int64())])
    t = pa.concat_tables(parts) if parts else schema.empty_table()
    t = t.group_by(["market", "holdout"], use_threads=False).aggregate([("listeners", "sum")])
    t = pa.table({"dt": pa.array([day] * t.num_rows, pa.date32()), "market": t.column("market"),
                  "holdout": t.column("holdout"), "listeners": t.column("listeners_sum")})
    return MARKET_LISTENERS.conform(t).sort_by([(k, "ascending") for k in MARKET_LISTENERS.key])


class BuildLiftFacts(beam.PTransform):
    """One day's checked plays (and exposures, when the day has a log) -> dict
    of `listeners`, `exposures` ((part name, table) per shard) and
    `market_listeners` (one table)."""

    def __init__(self, day: dt.date, shards: int, enrolled_tracks, scratch_dir: str, salt: int, share: float):
        super().__init__()
        self.day, self.shards, self.enrolled_tracks = day, shards, enrolled_tracks
        self.scratch_dir, self.salt, self.share = scratch_dir, salt, share

    def expand(self, inputs):
        refs = [inputs["plays"] | "SpillPlays" >> beam.ParDo(SpillPlaysFn(
            self.day, self.scratch_dir, self.shards, self.enrolled_tracks, self.salt, self.share))]
        if inputs.get("exposures") is not None:
            refs.append(inputs["exposures"] | "SpillExposures" >> beam.ParDo(SpillExposuresFn(
                self.day, self.scratch_dir, self.shards, self.salt, self.share)))
        out = (tuple(refs)
               | "FlattenRefs" >> beam.Flatten()
               | "GroupShards" >> beam.GroupByKey()
               | "BuildShardFacts" >> beam.ParDo(BuildShardFactsFn(self.day))
               .with_output_types(Named, **{BuildShardFactsFn.EXPOSURES: Named, BuildShardFactsFn.ACTIVE: pa.Table})
               .with_outputs(BuildShardFactsFn.EXPOSURES, BuildShardFactsFn.ACTIVE, main="listeners"))
        market = (out.active
                  | "CollectActive" >> beam.combiners.ToList()
                  | "SumActive" >> beam.Map(_sum_active, self.day).with_output_types(pa.Table))
        return {"listeners": out.listeners, "exposures": out.exposure_days, "market_listeners": market}


# ---------------------------------------------------------------- measure ---
class MeasureShardFn(beam.DoFn):
    """One listener shard's facts files over the lookback -> partial sums:
    `arms` (main), `days` and `tracks` (tagged)."""
    DAYS, TRACKS = "days", "tracks"

    def __init__(self, as_of: dt.date, window_days: int, pre_days: int):
        self.as_of, self.window_days, self.pre_days = as_of, window_days, pre_days

    def process(self, element, campaigns):
        shard, refs = element
        files = sorted(refs)
        listeners = storage_tables([u for k, u in files if k == "listeners"], LISTENER_DAYS)
        exposures = storage_tables([u for k, u in files if k == "exposures"], EXPOSURE_DAYS)
        part = measure.measure_shard(listeners, exposures, campaigns, self.as_of, self.window_days, self.pre_days)
        yield part["arms"]
        yield beam.pvalue.TaggedOutput(self.DAYS, part["days"])
        yield beam.pvalue.TaggedOutput(self.TRACKS, part["tracks"])


def storage_tables(uris: list[str], contract) -> pa.Table:
    parts = [contract.conform(pq.read_table(storage.open_input(u))) for u in uris]
    return pa.concat_tables(parts) if parts else contract.empty()


def _estimate(_, arms, days, tracks, campaigns, market_tables, observed_days, as_of, score_date, snapshot_id, cfg):
    combined = measure.combine(list(arms), list(days), list(tracks))
    market = arrays.concat(list(market_tables), MARKET_LISTENERS.arrow())
    return measure.lift_table(combined, campaigns, market, observed_days, as_of, score_date, snapshot_id, cfg)


class MeasureCampaignLift(beam.PTransform):
    """Facts file URIs (`listeners`, `exposures`: PCollections of URIs),
    `market_listeners` tables and the `enrollments` table -> one campaign_lift
    table, named ("part-00000", table)."""

    def __init__(self, as_of: dt.date, cfg, exposure_input_days, observed_days, snapshot_id: str):
        super().__init__()
        self.as_of, self.cfg, self.snapshot_id = as_of, cfg, snapshot_id
        self.exposure_input_days, self.observed_days = list(exposure_input_days), list(observed_days)

    def expand(self, inputs):
        cfg, p = self.cfg, inputs["enrollments"].pipeline
        campaigns = inputs["enrollments"] | "LiftCampaigns" >> beam.Map(
            measure.lift_campaigns, self.as_of, cfg.lift_window_days, self.exposure_input_days
        ).with_output_types(pa.Table)
        keyed = [inputs[kind] | f"Key{kind.title()}" >> beam.Map(lambda u, k=kind: (shard_of_file(u), (k, u)))
                 for kind in ("listeners", "exposures")]
        parts = (tuple(keyed)
                 | "FlattenFacts" >> beam.Flatten()
                 | "GroupShards" >> beam.GroupByKey()
                 | "MeasureShards" >> beam.ParDo(
                     MeasureShardFn(self.as_of, cfg.lift_window_days, cfg.lift_pre_days),
                     campaigns=beam.pvalue.AsSingleton(campaigns))
                 .with_output_types(pa.Table, **{MeasureShardFn.DAYS: pa.Table, MeasureShardFn.TRACKS: pa.Table})
                 .with_outputs(MeasureShardFn.DAYS, MeasureShardFn.TRACKS, main="arms"))
        score_date = self.as_of + dt.timedelta(days=1)
        table = (p
                 | "Once" >> beam.Create([None], reshuffle=False)
                 | "EstimateLift" >> beam.Map(
                     _estimate, beam.pvalue.AsList(parts.arms), beam.pvalue.AsList(parts.days),
                     beam.pvalue.AsList(parts.tracks), beam.pvalue.AsSingleton(campaigns),
                     beam.pvalue.AsList(inputs["market_listeners"]), self.observed_days, self.as_of, score_date,
                     self.snapshot_id, cfg).with_output_types(pa.Table))
        return table | "NameLift" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)

