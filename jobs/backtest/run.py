"""`oasis backtest`: rolling-origin, one-day-ahead accuracy of the supply
forecasts (docs/design.md §4) over a range of origins, against the decayed mean and
the same-weekday-last-week forecast.

For every origin D in [start, end] (a logs date), the enrolled tracks of D's
export are forecast for D+1 exactly as `oasis run --date D` forecasts them
(`pipelines.scoring.supply.forecast_supply`, with only the aggregates of the
window up to D), and compared with D+1's aggregates (`jobs.backtest.accuracy`).

Aggregates come from OUT/aggregates where a day's stored build has the
current format, and are built from IN's raw partitions otherwise, by the daily
job's own Beam aggregation; a build is kept (marked complete) for later runs
once its bad-row share is under the ceiling. An origin whose export or whose
next day's engagement is missing is skipped and reported.

Output, snapshot-style: OUT/backtests/<backtest_id>/forecast_accuracy/
part-00000.parquet and a `_MANIFEST.json` written after it; then the
warehouse's forecast_accuracy rows of the range's origin dates are replaced in
one transaction.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from jobs import layout
from jobs.backtest import accuracy
from jobs.manifest import FileEntry, TableEntry
from jobs.run import aggregates as stored
from jobs.run import fingerprint, scratch
from jobs.run.daily import RunFailed, bad_row_shares
from jobs.run.options import DEFAULT_BATCH_ROWS
from jobs.run.plan import check_file_schema, shards_for
from jobs.snapshots.store import content_sha256
from jobs.warehouse.backends import open_warehouse
from pipelines import contract, storage
from pipelines.beam.pipeline import BuildDay, build_aggregates, write_dead_letters
from pipelines.config import Config
from pipelines.errors import UsageError
from pipelines.metrics import counters
from pipelines.scoring.campaigns import candidates
from pipelines.scoring.signals import daily_matrix, daynum, surface_daily
from pipelines.scoring.supply import forecast_supply
from schemas import (AGGREGATE_FORMAT_VERSION, DAILY_AGGREGATES, ENGAGEMENT, ENROLLMENTS, FORECAST_ACCURACY,
                     SURFACE_TOTALS)

log = logging.getLogger(__name__)
NEW_ENROLLEE_DAYS = 7


@dataclass
class BacktestRequest:
    start: dt.date           # first origin (logs date), inclusive
    end: dt.date             # last origin, inclusive
    input_root: str
    output_root: str
    config_path: str | None = None
    warehouse: str | None = None
    beam_args: list[str] = field(default_factory=list)
    batch_rows: int = DEFAULT_BATCH_ROWS


@dataclass
class BacktestResult:
    backtest_id: str
    folder: str
    table: pd.DataFrame
    origins: list[dt.date]
    skipped: dict            # origin -> why
    built_days: list[dt.date]
    reused_days: list[dt.date]
    warehouse: str
    seconds: float


def backtest(req: BacktestRequest, progress=print) -> BacktestResult:
    started = time.monotonic()
    if req.end < req.start:
        raise UsageError(f"--end {req.end} is before --start {req.start}")
    storage.use_emulator_for_beam()
    cfg = Config.load(req.config_path)
    model_cfg = dataclasses.replace(cfg, forecast_method="model")
    warehouse = open_warehouse(req.warehouse, req.output_root)     # checked before any work
    backtest_id = layout.new_snapshot_id()
    origins = [req.start + dt.timedelta(days=i) for i in range((req.end - req.start).days + 1)]
    first = req.start - dt.timedelta(days=cfg.window_days - 1)
    days = [first + dt.timedelta(days=i) for i in range((req.end - first).days + 2)]
    reused, build = _plan_days(req, days, backtest_id)
    progress(f"backtest {backtest_id}: {len(origins)} origin(s) {req.start}..{req.end}, one day ahead; "
             f"aggregates of {len(days)} day(s): {len(reused)} stored, {len(build)} to build from raw")
    if build:
        _build(req, cfg, backtest_id, build, progress)
    have = {d: files for d, files in reused.items()}
    have.update({bd.day: _built_files(bd) for bd in build})

    exports = {}
    tracks = set()
    for d in origins:
        exports[d] = _export(req.input_root, d)
        if exports[d] is not None:
            tracks.update(exports[d].column("track_id").to_pylist())
    aggs, totals = _read_days(have, tracks)

    rows, skipped = [], {}
    for i, origin in enumerate(origins):
        target = origin + dt.timedelta(days=1)
        if exports[origin] is None:
            skipped[origin] = "no enrollments export"
        elif target not in have:
            skipped[origin] = f"no engagement for {target}"
        if origin in skipped:
            progress(f"backtest: origin {origin} ({i + 1}/{len(origins)}) skipped: {skipped[origin]}")
            continue
        before = _export(req.input_root, origin - dt.timedelta(days=NEW_ENROLLEE_DAYS), columns=["track_id", "market"])
        observed = np.array([daynum(d) for d in have if d <= origin], dtype=np.int64)
        new = _origin(origin, exports[origin], before, aggs, totals, observed, cfg, model_cfg)
        rows += new
        frame = pd.DataFrame(new)
        e = frame[(frame["cohort"] == "all") & (frame["method"] == "model")]
        progress(f"backtest: origin {origin} ({i + 1}/{len(origins)}): {int(e['rows'].sum()):,} track forecasts, "
                 f"E WAPE {e['abs_error'].sum() / max(e['actual'].sum(), 1e-9):.4f}")
    table = pd.DataFrame(rows, columns=[c for c in FORECAST_ACCURACY.names if c != "backtest_id"])
    table.insert(2, "backtest_id", backtest_id)
    folder = _write(req, cfg, backtest_id, table, origins, skipped, build, reused)
    arrow = FORECAST_ACCURACY.conform(pa.Table.from_pandas(table, preserve_index=False))
    warehouse.replace_range(FORECAST_ACCURACY, req.start, req.end, arrow)
    progress(f"warehouse loaded: {warehouse.uri} (forecast_accuracy, origins {req.start}..{req.end})")
    return BacktestResult(backtest_id, folder, table, [o for o in origins if o not in skipped], skipped,
                          [bd.day for bd in build], sorted(reused), warehouse.uri, time.monotonic() - started)


# ------------------------------------------------------------------- days ---
def _plan_days(req: BacktestRequest, days: list[dt.date], backtest_id: str):
    """(stored day -> (track files, totals files), days to build from raw)."""
    reused, build = {}, []
    scratch_root = layout.scratch_dir(req.output_root, backtest_id)
    for day in days:
        name = stored.stored_build(req.output_root, day)
        if name and stored.stored_format(req.output_root, day) >= AGGREGATE_FORMAT_VERSION:
            base = storage.join(layout.aggregates_day(req.output_root, day), name)
            reused[day] = (storage.list_files(storage.join(base, "tracks"), ".parquet"),
                           storage.list_files(storage.join(base, "totals"), ".parquet"))
            continue
        files = storage.list_files(layout.input_partition(req.input_root, "engagement", day), ".parquet")
        if files:
            rows = sum(check_file_schema(f, ENGAGEMENT) for f in files)
            build.append(BuildDay(day, files, layout.aggregate_build(req.output_root, day, backtest_id),
                                  scratch_dir=storage.join(scratch_root, layout.day_dirname(day)),
                                  shards=shards_for(rows)))
    return reused, build


def _build(req: BacktestRequest, cfg: Config, backtest_id: str, build: list[BuildDay], progress) -> None:
    progress(f"building the aggregates of {len(build)} day(s) from raw events ({build[0].day}..{build[-1].day})")
    try:
        p = beam.Pipeline(options=PipelineOptions(req.beam_args))
        _, _, dead = build_aggregates(p, build, cfg, req.batch_rows)
        write_dead_letters(dead, layout.dead_letters_dir(req.output_root, backtest_id))
        result = p.run()
        result.wait_until_finish()
        shares = bad_row_shares(counters(result))
    finally:
        scratch.remove(layout.scratch_dir(req.output_root, backtest_id))
    over = {k: v for k, v in shares.items() if v["share"] > cfg.max_bad_row_share}
    if over:
        raise RunFailed(f"bad rows above the ceiling of {cfg.max_bad_row_share:.2%}: "
                        + "; ".join(f"{k}: {v['share']:.2%}" for k, v in over.items())
                        + "; no aggregates kept, nothing written")
    for bd in build:
        stored.mark_complete(req.output_root, bd.day, bd.aggregate_dir,
                             {f: storage.fingerprint(f) for f in bd.engagement_files})


def _built_files(bd: BuildDay) -> tuple[list[str], list[str]]:
    return (storage.list_files(storage.join(bd.aggregate_dir, "tracks"), ".parquet"),
            storage.list_files(storage.join(bd.aggregate_dir, "totals"), ".parquet"))


def _read_days(have: dict, tracks: set) -> tuple[dict, dict]:
    """market -> aggregates of the given tracks (every day), market -> surface totals."""
    keep = pa.array(sorted(tracks), pa.string())
    parts, total_parts = [], []
    for day in sorted(have):
        track_files, totals_files = have[day]
        for f in track_files:
            t = DAILY_AGGREGATES.conform_stored(pq.read_table(storage.open_input(f)))
            parts.append(t.filter(pc.is_in(t.column("track_id"), value_set=keep)))
        total_parts += [SURFACE_TOTALS.conform(pq.read_table(storage.open_input(f))) for f in totals_files]
    aggs = (pa.concat_tables(parts) if parts else DAILY_AGGREGATES.empty()).to_pandas()
    totals = (pa.concat_tables(total_parts) if total_parts else SURFACE_TOTALS.empty()).to_pandas()
    return ({m: g.reset_index(drop=True) for m, g in aggs.groupby("market")},
            {m: g.reset_index(drop=True) for m, g in totals.groupby("market")})


def _export(input_root: str, day: dt.date, columns: list[str] | None = None) -> pa.Table | None:
    """The day's enrollment export, rows breaking the contract left out, the
    latest row per key; None when the day has none."""
    files = storage.list_files(layout.input_partition(input_root, "enrollments", day), ".parquet")
    if not files:
        return None
    parts = []
    for f in files:
        check_file_schema(f, ENROLLMENTS)
        t = contract.conform_batch(pq.read_table(storage.open_input(f)), ENROLLMENTS, f)
        good, _ = contract.split_good_bad(t, contract.check_enrollments(t), day=day, source="enrollments",
                                          source_file=f)
        parts.append(good)
    latest = contract.latest_enrollments(pa.concat_tables(parts))
    return latest.select(columns) if columns else latest


# ----------------------------------------------------------------- origins ---
def _origin(origin: dt.date, export: pa.Table, before: pa.Table | None, aggs: dict, totals: dict,
            observed: np.ndarray, cfg: Config, model_cfg: Config) -> list[dict]:
    rows = []
    target = origin + dt.timedelta(days=1)
    as_of_num, target_num = daynum(origin), daynum(target)
    enrolled = export.to_pandas()
    for market, enr in enrolled.groupby("market"):
        tracks = candidates(enr.reset_index(drop=True), target)
        m_aggs = aggs.get(market, DAILY_AGGREGATES.empty().to_pandas())
        m_totals = totals.get(market, SURFACE_TOTALS.empty().to_pandas())
        window = m_aggs[(m_aggs["dt"] <= origin)]
        sup = forecast_supply(tracks.track_id, tracks.released, window, m_totals[m_totals["dt"] <= origin],
                              observed, as_of_num, model_cfg, baselines=True)
        nxt = m_aggs[m_aggs["dt"] == target]
        actual = daily_matrix(tracks.track_id, nxt, np.array([target_num]))["organic"][:, :, 0]
        actual_totals = surface_daily(m_totals[m_totals["dt"] == target], np.array([target_num]))[:, 0]
        prev = (None if before is None else
                set(before.filter(pc.equal(before.column("market"), market)).column("track_id").to_pylist()))
        cohorts = accuracy.cohorts_of(tracks.track_id, tracks.released, target_num, cfg.min_track_age_days, prev)
        forecasts = {"model": (sup.point, sup.low, sup.high)}
        totals_f = {"model": (sup.total, sup.total_low, sup.total_high)}
        for name, (point, total) in sup.baselines.items():
            forecasts[name], totals_f[name] = (point, None, None), (total, None, None)
        rows += accuracy.origin_rows(origin, market, forecasts, actual, totals_f, actual_totals, cohorts)
    return rows


# ------------------------------------------------------------------- write ---
def _write(req, cfg, backtest_id, table, origins, skipped, build, reused) -> str:
    """The table, then the manifest (the backtest exists once it is there)."""
    folder = layout.backtest_dir(req.output_root, backtest_id)
    arrow = FORECAST_ACCURACY.conform(pa.Table.from_pandas(table, preserve_index=False))
    uri = storage.join(layout.table_dir(folder, FORECAST_ACCURACY.name), "part-00000.parquet")
    with storage.open_output(uri) as f:
        pq.write_table(arrow, f, compression="zstd")
    data = storage.read_bytes(uri)
    entry = TableEntry(rows=arrow.num_rows, files=[FileEntry(f"{FORECAST_ACCURACY.name}/part-00000.parquet",
                                                             arrow.num_rows, len(data),
                                                             hashlib.sha256(data).hexdigest())],
                       content_sha256=content_sha256(arrow, list(FORECAST_ACCURACY.key)))
    doc = {
        "kind": "backtest", "backtest_id": backtest_id, "start": req.start.isoformat(), "end": req.end.isoformat(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "code_version": fingerprint.code_version(),
        "config": cfg.to_dict(), "config_sha256": cfg.sha256(), "aggregate_format_version": AGGREGATE_FORMAT_VERSION,
        "origins": [o.isoformat() for o in origins if o not in skipped],
        "skipped_origins": {o.isoformat(): why for o, why in skipped.items()},
        "built_days": [bd.day.isoformat() for bd in build], "stored_days": [d.isoformat() for d in sorted(reused)],
        "tables": {FORECAST_ACCURACY.name: dataclasses.asdict(entry)},
        "summary": json.loads(accuracy.summary(table).to_json(orient="records")) if len(table) else [],
    }
    storage.create_only(storage.join(folder, layout.MANIFEST), json.dumps(doc, indent=2, sort_keys=True).encode())
    return folder
