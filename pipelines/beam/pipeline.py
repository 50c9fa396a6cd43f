"""The daily pipeline: `build(pipeline, plan)` wires the composites for one
run. It parses nothing and discovers nothing; `jobs.plan` decides which files
to read and where to write, and `jobs.daily` runs and publishes.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa

from pipelines import storage
from pipelines.config import Config
from pipelines.dedupe import LookBack
from pipelines.beam.coders import Named
from pipelines.beam.io import (ReadInputBatches, ReadPublishedColumns, ReadPulledBack, ReadStoredAggregates,
                               WriteParquetParts)
from pipelines.beam.lift import BuildLiftFacts, MeasureCampaignLift
from pipelines.beam.transforms import (AGGREGATE_COLUMNS, AggregateDailySignals, CheckContract, KeepTracksFn,
                                       LatestEnrollments, ScoreMarkets, concat_dead_letters)
from pipelines.scoring.delivery import PLAN_COLUMNS, STATE_COLUMNS
from schemas import (CAPACITY, DAILY_AGGREGATES, ENGAGEMENT, ENROLLMENTS, EXPOSURES, MARKET_LISTENERS,
                     PROMOTION_SCORES, SURFACE_TOTALS)

LIFT_COLUMNS = ["event_ts", "holdout"]  # what the lift facts read beside the aggregation's columns


@dataclass
class BuildDay:
    """A day whose aggregates this run builds from raw events."""
    day: dt.date
    engagement_files: list[str]
    aggregate_dir: str  # OUT/aggregates/dt=D/build=<id>
    scratch_dir: str  # this run's working files for the day, deleted when the run ends
    shards: int  # aggregation shards: grows with the day (jobs.plan.shards_for)
    rows: int = 0  # raw events in its files (the preflight's estimate of the spill)
    event_ids_dir: str = ""  # where its shards write the hashed ids they saw ("": no cross-day dedupe)
    lookback: list[str] = field(default_factory=list)  # the look-back days' folders of seen ids
    exposure_files: list[str] = field(default_factory=list)  # the day's exposure log, if any
    for_scores: bool = True  # its aggregates feed the scores (False: built for the lift lookback only)
    enrolled_tracks: list[str] | None = None  # the day's enrollment export's tracks: its lift facts keep these


@dataclass
class StoredDay:
    day: dt.date
    track_files: list[str]
    totals_files: list[str]
    listener_files: list[str] = field(default_factory=list)  # lift facts (empty: built before they existed)
    exposure_fact_files: list[str] = field(default_factory=list)
    market_files: list[str] = field(default_factory=list)
    for_scores: bool = True


@dataclass
class PreviousSnapshot:
    """What a run reads of the newest snapshot published before its score date:
    its plan (promotion_scores), reconciled with the logs day when the snapshot
    is of that day, and its capacity (the serving gain's running sums)."""
    snapshot_id: str
    score_date: dt.date
    plan_files: list[str]      # empty when the snapshot is not of the logs day: no plan to reconcile
    capacity_files: list[str]
    content: dict[str, str]    # table -> content fingerprint of what is read (part of the run fingerprint)


@dataclass
class RunPlan:
    as_of: dt.date
    cfg: Config
    snapshot_id: str
    enrollment_files: list[str]
    build_days: list[BuildDay]
    stored_days: list[StoredDay]
    observed_days: list[dt.date]
    snapshot_dir: str  # where this run's tables are written (not yet published)
    dead_letter_dir: str
    scratch_dir: str  # the run's working files (one folder per built day), deleted when it ends
    method: str  # allocation method (jobs.run.options.RunOptions)
    batch_rows: int  # rows per Arrow record batch
    missing_days: list[dt.date] = field(default_factory=list)  # window days without engagement rows
    empty_days: list[dt.date] = field(default_factory=list)  # of those, days whose partition holds 0 rows
    # the previous score date's snapshot: its promotion_scores files carry the guardrail's state (hysteresis)
    previous_scores_files: list[str] = field(default_factory=list)
    scored_tracks: list[str] | None = None  # the as-of export's tracks: the aggregates scoring needs (None: all)
    # the snapshot before: its plan (reconciled with as_of's logs) and its serving-gain state
    previous: PreviousSnapshot | None = None
    listener_shards: int = 16  # lift facts: a listener's shard is key % listener_shards on every day
    exposure_input_days: list[dt.date] = field(default_factory=list)  # days with an exposure log
    lift_days: list[dt.date] = field(default_factory=list)  # days with lift facts (built or stored)

    @property
    def score_date(self) -> dt.date:
        return self.as_of + dt.timedelta(days=1)

    @property
    def plan_snapshot_id(self) -> str | None:
        """The snapshot whose plan for the logs day is reconciled, if one was published."""
        prev = self.previous
        return prev.snapshot_id if prev is not None and prev.score_date == self.as_of else None


def build_aggregates(p: beam.Pipeline, build_days: list[BuildDay], cfg: Config, batch_rows: int, *,
                     keep: list[str] = AGGREGATE_COLUMNS, plays_out: dict | None = None):
    """Read, check and aggregate each day's raw events, and write its
    aggregates under the day's build folder. Returns the track aggregates
    (tables) and totals (tables) of the days that feed the scores, and every
    day's dead letters, as lists of PCollections; `plays_out`, when given,
    receives each day's checked plays (their `keep` columns) by day. Days are
    built oldest first: a day's cross-day dedupe waits for the seen ids of the
    look-back days built in the same pipeline."""
    track_parts, totals, dead = [], [], []
    seen_by = {}  # a built day's folder of seen ids -> its totals (written once its ids are)
    for bd in sorted(build_days, key=lambda b: b.day):
        tag = bd.day.isoformat()
        checked = (p
                   | f"ReadEngagement[{tag}]" >> ReadInputBatches(bd.engagement_files, ENGAGEMENT,
                                                                   "engagement", batch_rows)
                   | f"CheckEngagement[{tag}]" >> CheckContract("engagement", bd.day, cfg.event_ts_slack_hours,
                                                               keep=keep))
        dead.append(checked.dead)
        if plays_out is not None:
            plays_out[bd.day] = checked.good
        lookback = LookBack(bd.event_ids_dir, bd.shards, tuple(bd.lookback)) if bd.event_ids_dir else None
        daily = checked.good | f"AggregateDailySignals[{tag}]" >> AggregateDailySignals(
            bd.day, bd.shards, bd.scratch_dir, lookback, after=[seen_by[d] for d in bd.lookback if d in seen_by])
        seen_by[bd.event_ids_dir] = daily["totals"]
        _ = daily["tracks"] | f"WriteAggregates[{tag}]" >> WriteParquetParts(storage.join(bd.aggregate_dir, "tracks"))
        _ = (daily["totals"]
             | f"NameTotals[{tag}]" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)
             | f"WriteTotals[{tag}]" >> WriteParquetParts(storage.join(bd.aggregate_dir, "totals")))
        if bd.for_scores:
            track_parts.append(daily["tracks"] | f"DropPartName[{tag}]" >> beam.Values())
            totals.append(daily["totals"])
    return track_parts, totals, dead


def write_dead_letters(dead: list, folder: str) -> None:
    """Every dead-letter PCollection, sorted, into one file (none when empty)."""
    _ = (tuple(dead)
         | "FlattenDeadLetters" >> beam.Flatten()
         | "CollectDeadLetters" >> beam.combiners.ToList()
         | "SortDeadLetters" >> beam.Map(concat_dead_letters).with_output_types(pa.Table)
         | "SkipEmpty" >> beam.Filter(lambda t: t.num_rows > 0)
         | "NameDeadLetters" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)
         | "WriteDeadLetters" >> WriteParquetParts(folder, private=True))  # raw rows, user ids included


def build(p: beam.Pipeline, plan: RunPlan) -> dict:
    """Wire the daily job into `p`; returns the output PCollections by name."""
    cfg = plan.cfg
    enroll = (p
              | "ReadEnrollments" >> ReadInputBatches(plan.enrollment_files, ENROLLMENTS, "enrollments",
                                                      plan.batch_rows)
              | "CheckEnrollments" >> CheckContract("enrollments", plan.as_of, cfg.event_ts_slack_hours))
    latest = enroll.good | "LatestEnrollments" >> LatestEnrollments()
    plays = {}
    track_parts, totals, dead = build_aggregates(p, plan.build_days, cfg, plan.batch_rows,
                                                 keep=AGGREGATE_COLUMNS + LIFT_COLUMNS, plays_out=plays)
    dead = [enroll.dead] + dead
    lift = {"listeners": [], "exposures": [], "market_listeners": []}
    for bd in plan.build_days:  # the lift facts of each built day, from its checked plays
        tag = bd.day.isoformat()
        lift_inputs = {"plays": plays[bd.day]}
        if bd.exposure_files:
            checked_x = (p
                         | f"ReadExposures[{tag}]" >> ReadInputBatches(bd.exposure_files, EXPOSURES, "exposures",
                                                                        plan.batch_rows)
                         | f"CheckExposures[{tag}]" >> CheckContract("exposures", bd.day, cfg.event_ts_slack_hours))
            dead.append(checked_x.dead)
            lift_inputs["exposures"] = checked_x.good
        built = lift_inputs | f"BuildLiftFacts[{tag}]" >> BuildLiftFacts(
            bd.day, plan.listener_shards, bd.enrolled_tracks, storage.join(bd.scratch_dir, "lift"),
            cfg.holdout_salt, cfg.holdout_share)
        for kind in ("listeners", "exposures"):  # facts files, one per listener shard; their URIs go on
            folder = storage.join(bd.aggregate_dir, kind)
            lift[kind].append(built[kind]
                              | f"Write{kind.title()}[{tag}]" >> WriteParquetParts(folder, private=True)
                              | f"{kind.title()}Uris[{tag}]" >> beam.Keys())
        _ = (built["market_listeners"]
             | f"NameMarketListeners[{tag}]" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)
             | f"WriteMarketListeners[{tag}]" >> WriteParquetParts(
                 storage.join(bd.aggregate_dir, "market_listeners")))
        lift["market_listeners"].append(built["market_listeners"])

    scoring_days = [sd for sd in plan.stored_days if sd.for_scores]
    stored_tracks = [f for sd in scoring_days for f in sd.track_files]
    stored_totals = [f for sd in scoring_days for f in sd.totals_files]
    track_parts.append(p | "ReadStoredAggregates" >> ReadStoredAggregates(stored_tracks, DAILY_AGGREGATES))
    totals.append(p | "ReadStoredTotals" >> ReadStoredAggregates(stored_totals, SURFACE_TOTALS))
    if plan.scored_tracks is not None:   # only the enrolled tracks' rows go on, filtered before the Flatten
        track_parts = [part | f"KeepEnrolledTracks[{i}]" >> beam.ParDo(KeepTracksFn(plan.scored_tracks))
                       .with_output_types(pa.Table) for i, part in enumerate(track_parts)]

    aggregates = tuple(track_parts) | "FlattenAggregates" >> beam.Flatten()
    all_totals = tuple(totals) | "FlattenTotals" >> beam.Flatten()

    previous = plan.previous
    score_inputs = {"enrollments": latest, "aggregates": aggregates, "totals": all_totals,
                    "previous": p | "ReadPulledBack" >> ReadPulledBack(plan.previous_scores_files),
                    "plan": p | "ReadPreviousPlan" >> ReadPublishedColumns(
                        previous.plan_files if previous else [], PROMOTION_SCORES, PLAN_COLUMNS),
                    "state": p | "ReadPreviousCapacity" >> ReadPublishedColumns(
                        previous.capacity_files if previous else [], CAPACITY, STATE_COLUMNS)}
    scored = score_inputs | "ScoreMarkets" >> ScoreMarkets(
        plan.as_of, cfg, plan.observed_days, plan.snapshot_id, plan.method, plan.plan_snapshot_id)

    lift["listeners"].append(p | "StoredListenerFacts" >> beam.Create(
        [f for sd in plan.stored_days for f in sd.listener_files], reshuffle=False))
    lift["exposures"].append(p | "StoredExposureFacts" >> beam.Create(
        [f for sd in plan.stored_days for f in sd.exposure_fact_files], reshuffle=False))
    lift["market_listeners"].append(p | "ReadStoredMarketListeners" >> ReadStoredAggregates(
        [f for sd in plan.stored_days for f in sd.market_files], MARKET_LISTENERS))
    measured = {"listeners": tuple(lift["listeners"]) | "FlattenListenerFacts" >> beam.Flatten(),
                "exposures": tuple(lift["exposures"]) | "FlattenExposureFacts" >> beam.Flatten(),
                "market_listeners": tuple(lift["market_listeners"]) | "FlattenMarketListeners" >> beam.Flatten(),
                "enrollments": latest} | "MeasureCampaignLift" >> MeasureCampaignLift(
        plan.as_of, cfg, plan.exposure_input_days, plan.lift_days, plan.snapshot_id)

    written = {}
    for name, pcoll in (("promotion_scores", scored["scores"]), ("campaign_delivery", scored["delivery"]),
                        ("capacity", scored["capacity"]), ("prices", scored["prices"]),
                        ("delivery_reconciliation", scored["reconciliation"]), ("campaign_lift", measured)):
        written[name] = pcoll | f"Write[{name}]" >> WriteParquetParts(storage.join(plan.snapshot_dir, name),
                                                                      fault_stage="between_data_files")

    write_dead_letters(dead, plan.dead_letter_dir)
    return {"scores": scored["scores"], "delivery": scored["delivery"], "capacity": scored["capacity"],
            "prices": scored["prices"], "reconciliation": scored["reconciliation"], "lift": measured,
            "written": written, "latest_enrollments": latest}
