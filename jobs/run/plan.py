"""Planning a run: which input files to read, which daily aggregates to build
or reuse, and where this run writes. All discovery (listing, footers) happens
here, before the pipeline starts, so bad inputs fail fast with the file named.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math

import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import layout
from jobs.run import aggregates
from jobs.run.options import RunOptions
from jobs.snapshots import store
from pipelines import storage
from pipelines.beam.io import read_pulled_back
from pipelines.beam.pipeline import BuildDay, PreviousSnapshot, RunPlan, StoredDay
from pipelines.config import Config
from pipelines.contract import InputFileError
from pipelines.scoring.signals import window_days
from schemas import AGGREGATE_FORMAT_VERSION, ENGAGEMENT, ENROLLMENTS, EXPOSURES, schema_mismatches

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
        raise MissingInput(f"no enrollments partition for logs date {as_of}: {enroll_dir}/*.parquet not found"
                           + _hint(input_root, as_of))
    day_dir = layout.input_partition(input_root, "engagement", as_of)
    day_files = storage.list_files(day_dir, ".parquet")
    if not day_files:
        raise MissingInput(f"no engagement partition for logs date {as_of}: {day_dir}/*.parquet not found"
                           + _hint(input_root, as_of))

    scoring = set(window_days(as_of, max(cfg.window_days, PACING_LOOKBACK_DAYS)))
    needed = window_days(as_of, max(len(scoring), lift_lookback_days(cfg)))
    in_window = set(window_days(as_of, cfg.window_days))
    build_days, stored_days, observed, missing, empty, exposure_days, lift_days = [], [], [], [], [], [], []
    inputs = {"enrollments": {}, "engagement": {}, "aggregates": {}, "exposures": {}}
    enrolled_rows = 0
    scored_tracks = set()
    for f in enroll_files:
        enrolled_rows += check_file_schema(f, ENROLLMENTS)
        inputs["enrollments"][f] = storage.fingerprint(f)
        col = pq.read_table(storage.open_input(f), columns=["track_id"]).column("track_id")
        scored_tracks.update(v for v in pc.unique(col).to_pylist() if v)
    if not enrolled_rows:  # an export with no enrollment at all is a broken export, not a day without campaigns
        raise MissingInput(f"the enrollments partition for {as_of} has no rows ({len(enroll_files)} file(s), "
                           f"0 rows in {enroll_dir}): an empty export; nothing published")

    legacy = []
    for day in needed:
        files = (day_files if day == as_of
                 else storage.list_files(layout.input_partition(input_root, "engagement", day), ".parquet"))
        stored = (_stored_day(output_root, day, day in scoring, bool(files))
                  if (day != as_of and day not in rebuild) else None)
        if stored and aggregates.stored_format(output_root, day) < AGGREGATE_FORMAT_VERSION:
            # written by older code: rebuilt from the raw day when it is still there, else read as it is
            if files:
                stored = None
            else:
                legacy.append(day)
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
        rows = sum(check_file_schema(f, ENGAGEMENT) for f in files)
        if rows == 0:  # an empty partition is a missing day, not a day nobody listened
            if day == as_of:
                raise MissingInput(f"the engagement partition for {as_of} holds no rows ({len(files)} file(s) "
                                   f"under {day_dir}): a day without plays is a missing day; nothing to score "
                                   f"from (`oasis validate --date {as_of}` checks a partition)")
            empty.append(day)
            if day in in_window:
                missing.append(day)
            continue
        for f in files:
            inputs["engagement"][f] = storage.fingerprint(f)
        x_files = storage.list_files(layout.input_partition(input_root, "exposures", day), ".parquet")
        for f in x_files:
            check_file_schema(f, EXPOSURES)
            inputs["exposures"][f] = storage.fingerprint(f)
        if x_files:
            exposure_days.append(day)
        build_dir = layout.aggregate_build(output_root, day, snapshot_id)
        build_days.append(BuildDay(day, files, build_dir,
                                   scratch_dir=storage.join(scratch, layout.day_dirname(day)),
                                   shards=shards_for(rows), rows=rows, event_ids_dir=layout.event_ids_dir(build_dir),
                                   exposure_files=x_files, for_scores=day in scoring,
                                   enrolled_tracks=(sorted(scored_tracks) if day == as_of
                                                    else _enrolled_tracks(input_root, day))))
        lift_days.append(day)
        if day in scoring:
            observed.append(day)
    add_lookback(build_days, output_root, cfg.dedupe_lookback_days)

    plan = RunPlan(
        as_of=as_of, cfg=cfg, snapshot_id=snapshot_id, enrollment_files=enroll_files,
        build_days=build_days, stored_days=stored_days, observed_days=sorted(observed),
        snapshot_dir=layout.snapshot_dir(output_root, as_of + dt.timedelta(days=1), snapshot_id),
        dead_letter_dir=layout.dead_letters_dir(output_root, snapshot_id),
        scratch_dir=scratch, method=options.method, batch_rows=options.batch_rows, missing_days=sorted(missing),
        empty_days=sorted(empty), scored_tracks=sorted(scored_tracks),
        previous=previous_snapshot(output_root, as_of),
        listener_shards=LISTENER_SHARDS, exposure_input_days=sorted(exposure_days), lift_days=sorted(lift_days),
    )
    check_missing_days(plan, cfg)
    guarded = guardrail_snapshot(output_root, as_of)
    if guarded is not None:
        folder, manifest = guarded
        plan.previous_scores_files = [layout.listed_file(folder, f.path)
                                      for f in manifest.table_files("promotion_scores")]
        held = [read_pulled_back(f) for f in plan.previous_scores_files]
        keys = sorted("\x1f".join(k) for t in held for k in zip(*(t.column(c).to_pylist() for c in t.column_names)))
        inputs["previous_snapshot"] = {"snapshot_id": manifest.snapshot_id,
                                       "score_date": manifest.score_date.isoformat(),
                                       "pulled_back_rows": len(keys),
                                       "pulled_back_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}
    inputs["legacy_aggregate_days"] = [d.isoformat() for d in sorted(legacy)]
    return plan, inputs


def guardrail_snapshot(output_root: str, score_date: dt.date):
    """(folder, manifest) of the newest published snapshot of `score_date` (the
    day before the run's score date): the listener guardrail's state comes from
    it. Only that date counts, so a rerun of a date sees the same state however
    many later dates were published since; None when it has none."""
    published = store.list_manifests(output_root, score_date)
    published = [(f, m) for f, m in published if m.gates_passed and "promotion_scores" in m.tables]
    return published[-1] if published else None


def previous_snapshot(output_root: str, as_of: dt.date) -> PreviousSnapshot | None:
    """The newest snapshot published before the score date as_of + 1: its
    capacity carries the serving gain's running sums, and when it is of as_of
    its plan is what the day's logs are reconciled with (docs/design.md §5)."""
    found = store.previous_snapshot(output_root, as_of + dt.timedelta(days=1))
    if found is None:
        return None
    folder, m = found
    names = ["capacity"] + (["promotion_scores"] if m.score_date == as_of else [])
    files = {name: [layout.listed_file(folder, f.path) for f in m.table_files(name)] for name in names}
    return PreviousSnapshot(m.snapshot_id, m.score_date, plan_files=files.get("promotion_scores", []),
                            capacity_files=files["capacity"],
                            content={name: m.tables[name].content_sha256 for name in names if name in m.tables})


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
    """Tracks in that day's enrollment export: the day's lift facts keep only
    these (its aggregates keep every track)."""
    files = storage.list_files(layout.input_partition(input_root, "enrollments", day), ".parquet")
    if not files:
        return None
    tracks = set()
    for f in files:
        check_file_schema(f, ENROLLMENTS)
        col = pq.read_table(storage.open_input(f), columns=["track_id"]).column("track_id")
        tracks.update(v for v in pc.unique(col).to_pylist() if v)
    return sorted(tracks)


def gap_days(missing: list[dt.date], observed: list[dt.date]) -> list[dt.date]:
    """The missing days that count against `max_missing_days`: those after the
    first observed day (days before the logs begin, as in a new deployment or a
    short sample world, are recorded but are not gaps)."""
    first = min(observed) if observed else None
    return [d for d in missing if first is not None and d > first]


def check_missing_days(plan: RunPlan, cfg: Config) -> None:
    gaps = gap_days(plan.missing_days, plan.observed_days)
    if len(gaps) > cfg.max_missing_days:
        empty = [d for d in gaps if d in set(plan.empty_days)]
        raise MissingInput(
            f"{len(gaps)} day(s) of the {cfg.window_days}-day window before {plan.as_of} have no engagement rows "
            f"({_days(gaps)}{f'; partitions with 0 rows: {_days(empty)}' if empty else ''}); at most "
            f"{cfg.max_missing_days} may (config max_missing_days): restore those partitions, or raise the limit "
            f"knowingly")


def _days(days: list[dt.date]) -> str:
    text = ", ".join(d.isoformat() for d in days[:5])
    return text + (f" and {len(days) - 5} more" if len(days) > 5 else "")


def add_lookback(build_days: list[BuildDay], output_root: str, lookback_days: int) -> None:
    """Each built day's look-back folders of seen event ids (`pipelines.dedupe`):
    the build of this run for a day it builds too, else the day's stored build."""
    built = {bd.day: bd for bd in build_days}
    for bd in build_days:
        for k in range(1, lookback_days + 1):
            day = bd.day - dt.timedelta(days=k)
            if day in built:
                bd.lookback.append(built[day].event_ids_dir)
                continue
            name = aggregates.stored_build(output_root, day)
            if name:
                bd.lookback.append(layout.event_ids_dir(storage.join(layout.aggregates_day(output_root, day), name)))


def input_days(input_root: str, table: str = "engagement") -> list[dt.date]:
    """The days that have a partition folder of `table` under the input root."""
    try:
        names = storage.list_dirs(storage.join(input_root, table))
    except (FileNotFoundError, OSError):
        return []
    return sorted(d for d in (layout.parse_day_dirname(n) for n in names) if d is not None)


def newest_partition_hint(input_root: str, day: dt.date) -> str:
    """Words for a user whose date finds no partition: the date given is a logs
    date; which logs dates there are. Empty when `day` is within them."""
    days = input_days(input_root)
    if not days:
        return f"no engagement partitions under {input_root}"
    if days[0] <= day <= days[-1]:
        return ""
    if day == days[-1] + dt.timedelta(days=1):
        return (f"{day} looks like a score date: the newest logs date under {input_root} is {days[-1]}, "
                f"whose scores are for {day}")
    return f"logs dates under {input_root}: {days[0]} .. {days[-1]}"


def _hint(input_root: str, day: dt.date) -> str:
    hint = newest_partition_hint(input_root, day)
    return f" ({hint})" if hint else ""
