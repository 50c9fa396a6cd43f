"""Planning a run: which input files to read, which daily aggregates to build
or reuse, and where this run writes. All discovery (listing, footers) happens
here, before the pipeline starts, so bad inputs fail fast with the file named.
"""
from __future__ import annotations

import datetime as dt
import math

import pyarrow.parquet as pq

from jobs import layout
from jobs.run import aggregates
from jobs.run.options import RunOptions
from pipelines import storage
from pipelines.beam.pipeline import BuildDay, RunPlan, StoredDay
from pipelines.config import Config
from pipelines.contract import InputFileError
from pipelines.scoring.signals import window_days
from schemas import ENGAGEMENT, ENROLLMENTS, EXPOSURES, schema_mismatches

PACING_LOOKBACK_DAYS = 31  # monthly flights: delivery to date needs up to a month
MAX_FLIGHT_DAYS = 31  # monthly flights: the lift of a campaign looks back over its whole flight
MIN_SHARDS = 16
SHARD_INPUT_ROWS = 1_000_000  # raw events per aggregation shard, at most: a shard's memory stays bounded
# Lift facts: a listener's shard is its key modulo this, the same on every day,
# so the lift stage reads one shard's files of every day together. Changing it
# makes the stored days' facts unusable (they are rebuilt from raw partitions).
LISTENER_SHARDS = 16


def lift_lookback_days(cfg: Config) -> int:
    """Days of lift facts a run reads: the pre-period before a flight's first
    selection, the flight, and the attribution windows after it."""
    return cfg.lift_pre_days + MAX_FLIGHT_DAYS + cfg.lift_window_days


class MissingInput(InputFileError):
    pass


def shards_for(rows: int) -> int:
    return max(MIN_SHARDS, math.ceil(rows / SHARD_INPUT_ROWS))


def check_file_schema(uri: str, contract) -> int:
    """Read a Parquet footer and compare it with the contract; raise naming the
    file. Returns the file's row count."""
    try:
        footer = pq.ParquetFile(storage.open_input(uri))
        schema, rows = footer.schema_arrow, footer.metadata.num_rows
    except Exception as e:
        raise InputFileError(f"{uri}: cannot be read as Parquet: {e}") from None
    problems = schema_mismatches(contract.arrow(), schema, contract.optional_names)
    if problems:
        raise InputFileError(f"{uri}: schema does not match the {contract.name} contract: "
                             + "; ".join(problems))
    return rows


def make_plan(as_of: dt.date, input_root: str, output_root: str, cfg: Config, options: RunOptions, *,
              snapshot_id: str | None = None, rebuild: set[dt.date] = frozenset()) -> tuple[RunPlan, dict]:
    """(plan, inputs record for the manifest). Raises MissingInput / InputFileError."""
    snapshot_id = snapshot_id or layout.new_snapshot_id()
    scratch = layout.scratch_dir(output_root, snapshot_id)
    enroll_dir = layout.input_partition(input_root, "enrollments", as_of)
    enroll_files = storage.list_files(enroll_dir, ".parquet")
    if not enroll_files:
        raise MissingInput(f"no enrollments partition for {as_of}: {enroll_dir}/*.parquet not found")
    day_dir = layout.input_partition(input_root, "engagement", as_of)
    day_files = storage.list_files(day_dir, ".parquet")
    if not day_files:
        raise MissingInput(f"no engagement partition for {as_of}: {day_dir}/*.parquet not found")

    scoring = set(window_days(as_of, max(cfg.window_days, PACING_LOOKBACK_DAYS)))
    needed = window_days(as_of, max(len(scoring), lift_lookback_days(cfg)))
    in_window = set(window_days(as_of, cfg.window_days))
    build_days, stored_days, observed, missing, exposure_days, lift_days = [], [], [], [], [], []
    inputs = {"enrollments": {}, "engagement": {}, "aggregates": {}, "exposures": {}}
    for f in enroll_files:
        check_file_schema(f, ENROLLMENTS)
        inputs["enrollments"][f] = storage.fingerprint(f)

    for day in needed:
        files = (day_files if day == as_of
                 else storage.list_files(layout.input_partition(input_root, "engagement", day), ".parquet"))
        stored = _stored_day(output_root, day, day in scoring, bool(files)) \
            if (day != as_of and day not in rebuild) else None
        if stored:
            stored_days.append(stored)
            for f in (stored.track_files + stored.totals_files if stored.for_scores else []):
                inputs["aggregates"][f] = storage.fingerprint(f)
            if stored.listener_files or stored.market_files:
                lift_days.append(day)
            if aggregates.exposures_built_from(output_root, day):
                exposure_days.append(day)
            if stored.for_scores:
                observed.append(day)
            continue
        if not files:
            if day in in_window:
                missing.append(day)
            continue
        rows = 0
        for f in files:
            rows += check_file_schema(f, ENGAGEMENT)
            inputs["engagement"][f] = storage.fingerprint(f)
        x_files = storage.list_files(layout.input_partition(input_root, "exposures", day), ".parquet")
        for f in x_files:
            check_file_schema(f, EXPOSURES)
            inputs["exposures"][f] = storage.fingerprint(f)
        if x_files:
            exposure_days.append(day)
        build_days.append(BuildDay(day, files, _enrolled_tracks(input_root, day),
                                   layout.aggregate_build(output_root, day, snapshot_id),
                                   scratch_dir=storage.join(scratch, layout.day_dirname(day)),
                                   shards=shards_for(rows), exposure_files=x_files, for_scores=day in scoring))
        lift_days.append(day)
        if day in scoring:
            observed.append(day)

    plan = RunPlan(
        as_of=as_of, cfg=cfg, snapshot_id=snapshot_id, enrollment_files=enroll_files,
        build_days=build_days, stored_days=stored_days, observed_days=sorted(observed),
        snapshot_dir=layout.snapshot_dir(output_root, as_of + dt.timedelta(days=1), snapshot_id),
        dead_letter_dir=layout.dead_letters_dir(output_root, snapshot_id),
        scratch_dir=scratch, method=options.method, batch_rows=options.batch_rows, missing_days=sorted(missing),
        listener_shards=LISTENER_SHARDS, exposure_input_days=sorted(exposure_days), lift_days=sorted(lift_days),
    )
    return plan, inputs


def _stored_day(output_root: str, day: dt.date, for_scores: bool, raw_exists: bool) -> StoredDay | None:
    """The stored aggregates of `day`, or None when it must be built from its raw
    partition: no complete build, or (raw events at hand) a build whose lift
    facts are missing or sharded otherwise than LISTENER_SHARDS."""
    build = aggregates.stored_build(output_root, day)
    if not build:
        return None
    if raw_exists and aggregates.listener_shards(output_root, day) != LISTENER_SHARDS:
        return None
    base = storage.join(layout.aggregates_day(output_root, day), build)
    files = {part: storage.list_files(storage.join(base, part), ".parquet") for part in layout.AGGREGATE_PARTS}
    lift_ok = aggregates.listener_shards(output_root, day) == LISTENER_SHARDS
    return StoredDay(day, files["tracks"], files["totals"],
                     listener_files=files["listeners"] if lift_ok else [],
                     exposure_fact_files=files["exposures"] if lift_ok else [],
                     market_files=files["market_listeners"] if lift_ok else [], for_scores=for_scores)


def _enrolled_tracks(input_root: str, day: dt.date) -> list[str] | None:
    """Tracks in that day's enrollment export: the daily aggregates keep only
    these (and the surface totals keep every track)."""
    files = storage.list_files(layout.input_partition(input_root, "enrollments", day), ".parquet")
    if not files:
        return None
    tracks = set()
    for f in files:
        check_file_schema(f, ENROLLMENTS)
        col = pq.read_table(storage.open_input(f), columns=["track_id"]).column("track_id")
        tracks.update(v for v in col.unique().to_pylist() if v)
    return sorted(tracks)
