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
from jobs.snapshots import store
from pipelines import storage
from pipelines.beam.pipeline import BuildDay, PreviousSnapshot, RunPlan, StoredDay
from pipelines.config import Config
from pipelines.contract import InputFileError
from pipelines.scoring.signals import window_days
from schemas import ENGAGEMENT, ENROLLMENTS, schema_mismatches

PACING_LOOKBACK_DAYS = 31  # monthly flights: delivery to date needs up to a month
MIN_SHARDS = 16
SHARD_INPUT_ROWS = 1_000_000  # raw events per aggregation shard, at most: a shard's memory stays bounded


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
    problems = schema_mismatches(contract.arrow(), schema)
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

    needed = window_days(as_of, max(cfg.window_days, PACING_LOOKBACK_DAYS))
    in_window = set(window_days(as_of, cfg.window_days))
    build_days, stored_days, observed, missing = [], [], [], []
    inputs = {"enrollments": {}, "engagement": {}, "aggregates": {}}
    for f in enroll_files:
        check_file_schema(f, ENROLLMENTS)
        inputs["enrollments"][f] = storage.fingerprint(f)

    for day in needed:
        build = aggregates.stored_build(output_root, day) if (day != as_of and day not in rebuild) else None
        if build:
            base = storage.join(layout.aggregates_day(output_root, day), build)
            tracks = storage.list_files(storage.join(base, "tracks"), ".parquet")
            totals = storage.list_files(storage.join(base, "totals"), ".parquet")
            stored_days.append(StoredDay(day, tracks, totals))
            for f in tracks + totals:
                inputs["aggregates"][f] = storage.fingerprint(f)
            observed.append(day)
            continue
        files = (day_files if day == as_of
                 else storage.list_files(layout.input_partition(input_root, "engagement", day), ".parquet"))
        if not files:
            if day in in_window:
                missing.append(day)
            continue
        rows = 0
        for f in files:
            rows += check_file_schema(f, ENGAGEMENT)
            inputs["engagement"][f] = storage.fingerprint(f)
        build_days.append(BuildDay(day, files, _enrolled_tracks(input_root, day),
                                   layout.aggregate_build(output_root, day, snapshot_id),
                                   scratch_dir=storage.join(scratch, layout.day_dirname(day)),
                                   shards=shards_for(rows)))
        observed.append(day)

    plan = RunPlan(
        as_of=as_of, cfg=cfg, snapshot_id=snapshot_id, enrollment_files=enroll_files,
        build_days=build_days, stored_days=stored_days, observed_days=sorted(observed),
        snapshot_dir=layout.snapshot_dir(output_root, as_of + dt.timedelta(days=1), snapshot_id),
        dead_letter_dir=layout.dead_letters_dir(output_root, snapshot_id),
        scratch_dir=scratch, method=options.method, batch_rows=options.batch_rows, missing_days=sorted(missing),
        previous=previous_snapshot(output_root, as_of),
    )
    return plan, inputs


def previous_snapshot(output_root: str, as_of: dt.date) -> PreviousSnapshot | None:
    """The newest snapshot published before the score date as_of + 1: its
    capacity carries the serving gain's running sums, and when it is of as_of
    its plan is what the day's logs are reconciled with (DESIGN §5)."""
    found = store.previous_snapshot(output_root, as_of + dt.timedelta(days=1))
    if found is None:
        return None
    folder, m = found
    names = ["capacity"] + (["promotion_scores"] if m.score_date == as_of else [])
    files = {name: [layout.listed_file(folder, f.path) for f in m.table_files(name)] for name in names}
    return PreviousSnapshot(m.snapshot_id, m.score_date, plan_files=files.get("promotion_scores", []),
                            capacity_files=files["capacity"],
                            content={name: m.tables[name].content_sha256 for name in names if name in m.tables})


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
