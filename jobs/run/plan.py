"""Planning a run: which input files to read, which daily aggregates to build
or reuse, and where this run writes. All discovery (listing, footers) happens
here, before the pipeline starts, so bad inputs fail fast with the file named.
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
import tempfile

import pyarrow.parquet as pq

from pipelines import storage
from pipelines.config import Config
from pipelines.contract import InputFileError
from pipelines.beam.pipeline import BuildDay, RunPlan, StoredDay
from pipelines.scoring.signals import window_days
from schemas import ENGAGEMENT, ENROLLMENTS, schema_mismatches

PACING_LOOKBACK_DAYS = 31  # monthly flights: delivery to date needs up to a month
MIN_SHARDS = 16
SHARD_INPUT_ROWS = 1_000_000  # raw events per aggregation shard, at most: a shard's memory stays bounded


class MissingInput(InputFileError):
    pass


def partition(root: str, table: str, day: dt.date) -> str:
    return storage.join(root, table, f"dt={day.isoformat()}")


def aggregates_root(output_root: str, day: dt.date) -> str:
    return storage.join(output_root, "aggregates", f"dt={day.isoformat()}")


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def snapshot_dir(output_root: str, score_date: dt.date, snapshot_id: str) -> str:
    return storage.join(output_root, "snapshots", f"score_date={score_date.isoformat()}", snapshot_id)


def scratch_root(output_root: str, snapshot_id: str) -> str:
    """Where a run keeps its working files (the aggregation's spilled shards).
    A local output gets a local temporary folder; a gs:// output a folder under
    it, which Dataflow workers can all reach. Deleted when the run ends."""
    if storage.is_gcs(output_root):
        return storage.join(output_root, "_scratch", snapshot_id)
    return storage.join(tempfile.gettempdir(), f"{SCRATCH_PREFIX}{snapshot_id}")


SCRATCH_PREFIX = "oasis-scratch-"
STALE_SCRATCH = dt.timedelta(hours=6)  # far longer than any run: an older folder's run is gone


def stale_scratch(output_root: str, now: dt.datetime | None = None) -> list[str]:
    """Scratch folders left by runs that were killed (a finished or failed run
    removes its own). The snapshot id in a folder's name says when its run
    started; folders older than STALE_SCRATCH are stale. They hold raw rows,
    user ids included, so they must not linger."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if storage.is_gcs(output_root):
        parent = storage.join(output_root, "_scratch")
        ids = {n: n for n in storage.list_dirs(parent)}
    else:
        parent = tempfile.gettempdir()
        ids = {n: n[len(SCRATCH_PREFIX):] for n in storage.list_dirs(parent) if n.startswith(SCRATCH_PREFIX)}
    stale = []
    for name, snapshot_id in ids.items():
        try:
            started = dt.datetime.strptime(snapshot_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=dt.timezone.utc)
        except ValueError:
            continue  # not ours
        if now - started > STALE_SCRATCH:
            stale.append(storage.join(parent, name))
    return sorted(stale)


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


def stored_build(output_root: str, day: dt.date) -> str | None:
    """The complete aggregate build of `day`, if any (its _SUCCESS marker names it)."""
    marker = storage.join(aggregates_root(output_root, day), "_SUCCESS")
    try:
        return storage.read_bytes(marker).decode().strip() or None
    except FileNotFoundError:
        return None


def make_plan(as_of: dt.date, input_root: str, output_root: str, cfg: Config, *,
              snapshot_id: str | None = None, rebuild: set[dt.date] = frozenset(),
              method: str = "exact") -> tuple[RunPlan, dict]:
    """(plan, inputs record for the manifest). Raises MissingInput / InputFileError."""
    snapshot_id = snapshot_id or new_snapshot_id()
    scratch = scratch_root(output_root, snapshot_id)
    enroll_files = storage.list_files(partition(input_root, "enrollments", as_of), ".parquet")
    if not enroll_files:
        raise MissingInput(f"no enrollments partition for {as_of}: "
                           f"{partition(input_root, 'enrollments', as_of)}/*.parquet not found")
    day_files = storage.list_files(partition(input_root, "engagement", as_of), ".parquet")
    if not day_files:
        raise MissingInput(f"no engagement partition for {as_of}: "
                           f"{partition(input_root, 'engagement', as_of)}/*.parquet not found")

    needed = window_days(as_of, max(cfg.window_days, PACING_LOOKBACK_DAYS))
    in_window = set(window_days(as_of, cfg.window_days))
    build_days, stored_days, observed, missing = [], [], [], []
    inputs = {"enrollments": {}, "engagement": {}, "aggregates": {}}
    for f in enroll_files:
        check_file_schema(f, ENROLLMENTS)
        inputs["enrollments"][f] = storage.fingerprint(f)

    for day in needed:
        build = stored_build(output_root, day) if (day != as_of and day not in rebuild) else None
        if build:
            base = storage.join(aggregates_root(output_root, day), build)
            tracks = storage.list_files(storage.join(base, "tracks"), ".parquet")
            totals = storage.list_files(storage.join(base, "totals"), ".parquet")
            stored_days.append(StoredDay(day, tracks, totals))
            for f in tracks + totals:
                inputs["aggregates"][f] = storage.fingerprint(f)
            observed.append(day)
            continue
        files = day_files if day == as_of else storage.list_files(partition(input_root, "engagement", day), ".parquet")
        if not files:
            if day in in_window:
                missing.append(day)
            continue
        rows = 0
        for f in files:
            rows += check_file_schema(f, ENGAGEMENT)
            inputs["engagement"][f] = storage.fingerprint(f)
        build_days.append(BuildDay(day, files, _enrolled_tracks(input_root, day),
                                   storage.join(aggregates_root(output_root, day), f"build={snapshot_id}"),
                                   scratch_dir=storage.join(scratch, f"dt={day.isoformat()}"),
                                   shards=shards_for(rows)))
        observed.append(day)

    plan = RunPlan(
        as_of=as_of, cfg=cfg, snapshot_id=snapshot_id, enrollment_files=enroll_files,
        build_days=build_days, stored_days=stored_days, observed_days=sorted(observed),
        snapshot_dir=snapshot_dir(output_root, as_of + dt.timedelta(days=1), snapshot_id),
        dead_letter_dir=storage.join(output_root, "dead_letters", f"run={snapshot_id}"),
        scratch_dir=scratch, method=method, missing_days=sorted(missing),
    )
    return plan, inputs


def _enrolled_tracks(input_root: str, day: dt.date) -> list[str] | None:
    """Tracks in that day's enrollment export: the daily aggregates keep only
    these (and the surface totals keep every track)."""
    files = storage.list_files(partition(input_root, "enrollments", day), ".parquet")
    if not files:
        return None
    tracks = set()
    for f in files:
        check_file_schema(f, ENROLLMENTS)
        col = pq.read_table(storage.open_input(f), columns=["track_id"]).column("track_id")
        tracks.update(v for v in col.unique().to_pylist() if v)
    return sorted(tracks)
