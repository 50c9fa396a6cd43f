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
from pipelines.beam.coders import Named
from pipelines.beam.io import ReadInputBatches, ReadStoredAggregates, WriteParquetParts
from pipelines.beam.lift import BuildLiftFacts, MeasureCampaignLift
from pipelines.beam.transforms import (AGGREGATE_COLUMNS, AggregateDailySignals, CheckContract, LatestEnrollments,
                                      ScoreMarkets, concat_dead_letters)
from schemas import DAILY_AGGREGATES, ENGAGEMENT, ENROLLMENTS, EXPOSURES, MARKET_LISTENERS, SURFACE_TOTALS

LIFT_COLUMNS = ["event_ts", "holdout"]  # what the lift facts read beside the aggregation's columns


@dataclass
class BuildDay:
    """A day whose aggregates this run builds from raw events."""
    day: dt.date
    engagement_files: list[str]
    enrolled_tracks: list[str] | None  # that day's export's tracks; None: keep all
    aggregate_dir: str  # OUT/aggregates/dt=D/build=<id>
    scratch_dir: str  # this run's working files for the day, deleted when the run ends
    shards: int  # aggregation shards: grows with the day (jobs.plan.shards_for)
    exposure_files: list[str] = field(default_factory=list)  # the day's exposure log, if any
    for_scores: bool = True  # its aggregates feed the scores (False: built for the lift lookback only)


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
    missing_days: list[dt.date] = field(default_factory=list)
    listener_shards: int = 16  # lift facts: a listener's shard is key % listener_shards on every day
    exposure_input_days: list[dt.date] = field(default_factory=list)  # days with an exposure log
    lift_days: list[dt.date] = field(default_factory=list)  # days with lift facts (built or stored)

    @property
    def score_date(self) -> dt.date:
        return self.as_of + dt.timedelta(days=1)


def build(p: beam.Pipeline, plan: RunPlan) -> dict:
    """Wire the daily job into `p`; returns the output PCollections by name."""
    cfg = plan.cfg
    enroll = (p
              | "ReadEnrollments" >> ReadInputBatches(plan.enrollment_files, ENROLLMENTS, "enrollments",
                                                      plan.batch_rows)
              | "CheckEnrollments" >> CheckContract("enrollments", plan.as_of, cfg.event_ts_slack_hours))
    latest = enroll.good | "LatestEnrollments" >> LatestEnrollments()
    dead = [enroll.dead]

    track_parts, totals = [], []
    lift = {"listeners": [], "exposures": [], "market_listeners": []}
    for bd in plan.build_days:
        tag = bd.day.isoformat()
        checked = (p
                   | f"ReadEngagement[{tag}]" >> ReadInputBatches(bd.engagement_files, ENGAGEMENT,
                                                                   "engagement", plan.batch_rows)
                   | f"CheckEngagement[{tag}]" >> CheckContract("engagement", bd.day, cfg.event_ts_slack_hours,
                                                               keep=AGGREGATE_COLUMNS + LIFT_COLUMNS))
        dead.append(checked.dead)
        daily = checked.good | f"AggregateDailySignals[{tag}]" >> AggregateDailySignals(
            bd.day, bd.shards, bd.enrolled_tracks, bd.scratch_dir)
        _ = daily["tracks"] | f"WriteAggregates[{tag}]" >> WriteParquetParts(storage.join(bd.aggregate_dir, "tracks"))
        _ = (daily["totals"]
             | f"NameTotals[{tag}]" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)
             | f"WriteTotals[{tag}]" >> WriteParquetParts(storage.join(bd.aggregate_dir, "totals")))
        if bd.for_scores:
            track_parts.append(daily["tracks"] | f"DropPartName[{tag}]" >> beam.Values())
            totals.append(daily["totals"])
        lift_inputs = {"plays": checked.good}
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
                              | f"Write{kind.title()}[{tag}]" >> WriteParquetParts(folder)
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

    aggregates = tuple(track_parts) | "FlattenAggregates" >> beam.Flatten()
    all_totals = tuple(totals) | "FlattenTotals" >> beam.Flatten()

    scored = {"enrollments": latest, "aggregates": aggregates, "totals": all_totals} | "ScoreMarkets" >> ScoreMarkets(
        plan.as_of, cfg, plan.observed_days, plan.snapshot_id, plan.method)

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
                        ("capacity", scored["capacity"]), ("campaign_lift", measured)):
        written[name] = pcoll | f"Write[{name}]" >> WriteParquetParts(storage.join(plan.snapshot_dir, name))

    _ = (tuple(dead)
         | "FlattenDeadLetters" >> beam.Flatten()
         | "CollectDeadLetters" >> beam.combiners.ToList()
         | "SortDeadLetters" >> beam.Map(concat_dead_letters).with_output_types(pa.Table)
         | "SkipEmpty" >> beam.Filter(lambda t: t.num_rows > 0)
         | "NameDeadLetters" >> beam.Map(lambda t: ("part-00000", t)).with_output_types(Named)
         | "WriteDeadLetters" >> WriteParquetParts(plan.dead_letter_dir))
    return {"scores": scored["scores"], "delivery": scored["delivery"], "capacity": scored["capacity"],
            "lift": measured, "written": written, "latest_enrollments": latest}
