"""Backfill (`oasis backfill`): run the daily job for every logs-up-to date from D1 to D2 (both inclusive),
oldest first, and publish each date's snapshot.

* A date already published with the same inputs, config and code is skipped
  (`jobs.run.daily.run` says "already_published"), unless forced.
* Aggregates: a backfill rebuilds the daily aggregates of the days it covers
  (D1..D2) from raw events, each day once: a run rebuilds the covered days of
  its window that no earlier run of this backfill has built. A day whose own
  run was skipped is rebuilt by the next run that does work; a day whose own run
  failed is left to the normal plan (stored aggregates if any, else raw).
  Window days before D1 are reused as stored (their raw logs may be gone).
* LATEST only moves forward (`jobs.snapshots.store.move_latest`): backfilling old dates
  never moves it back.
* A date that fails is reported and the others still run; the exit code is 1
  when any date failed. A table of every date is printed at the end. A date
  whose snapshot a rollback pulled fails with the reason unless `--republish`
  (`jobs.snapshots.pulls`).
* `--workers N` runs up to N dates at once in separate processes. The workers
  run the pipeline and write the snapshot (data files and manifest) with a
  scratch warehouse of their own; this process then loads each snapshot into
  the real warehouse and moves LATEST, one at a time and in date order. So the
  single-writer DuckDB file is never opened twice, and BigQuery never sees two
  transactions on the same tables at once. With N workers, a covered day may be
  built by up to N runs at once (each run needs it fresh and cannot wait for the
  others); the last marker wins and gc removes the other builds.

Progress goes to stderr: one line per date event (queued dates are counted in
the bar) with counts and an ETA; on a terminal the bar is redrawn in place; with
`--log-format json` each event is a log record.
"""
from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from jobs import logs
from jobs.manifest import Manifest
from jobs.run import daily, preflight
from jobs.run.options import RunOptions
from jobs.run.publish import publish_written
from jobs.snapshots import store
from jobs.warehouse.backends import open_warehouse
from pipelines.config import Config
from pipelines.errors import UsageError, user_error

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "published", "skipped", "failed")
FINISHED = ("published", "skipped", "failed")


@dataclass
class DateOutcome:
    date: dt.date
    status: str = "queued"
    snapshot_id: str = ""
    seconds: float = 0.0
    error: str = ""
    latest_moved: bool = False
    built_days: list[dt.date] = field(default_factory=list)


@dataclass
class BackfillRequest:
    start: dt.date
    end: dt.date
    input_root: str
    output_root: str
    workers: int = 1
    config_path: str | None = None
    warehouse: str | None = None
    beam_args: list[str] = field(default_factory=list)
    options: RunOptions = field(default_factory=RunOptions)

    @property
    def dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]


# ------------------------------------------------------------- one date ----
def rebuild_days(day: dt.date, covered: list[dt.date], rebuilt: set, failed: set) -> set[dt.date]:
    """The covered days before `day` that this run must rebuild from raw.
    (`day` itself is always built from raw by its own run; days outside its
    window are ignored by the plan.)"""
    return {d for d in covered if d < day and d not in rebuilt and d not in failed}


def run_one(spec: dict) -> dict:
    """Run one date (in this process or a worker process). Never raises for a
    failed run: returns {"status": "failed", "error": ...}."""
    day = spec["date"]
    started = time.monotonic()
    laps = daily.Laps(started)
    with logs.bind(date=day):
        req = daily.RunRequest(
            as_of=day, input_root=spec["input_root"], output_root=spec["output_root"],
            config_path=spec["config_path"], warehouse=spec["warehouse"], beam_args=list(spec["beam_args"]),
            options=RunOptions(**spec["options"]), rebuild_days=set(spec["rebuild"]),
            move_latest=spec["move_latest"], retry_hint=RETRY_HINT.format(day=day),
            snapshot_id=spec.get("snapshot_id"))
        try:
            result = daily.run(req, progress=lambda s: log.info("%s: %s", day, s), laps=laps)
            laps.mark("publish" if result.status == "published" else "rest")
        except Exception as e:  # noqa: BLE001 - one failed date must not stop the others
            laps.mark("until_failure")
            known = user_error(e)
            if known is None:  # a bug: logged with its traceback
                log.error("backfill date %s failed", day, exc_info=True)
            else:
                log.info("backfill date %s failed: %s", day, known[0])
            message = known[0] if known else f"{type(e).__name__}: {e}"
            return {"status": "failed", "error": message, "seconds": time.monotonic() - started,
                    "phase_seconds": laps.seconds}
    m = result.manifest
    published = result.status == "published"
    return {
        "status": "published" if published else "skipped",
        "snapshot_id": m.snapshot_id,
        "manifest": m.to_dict() if published else None,
        "built_days": m.inputs.built_days if published else [],
        "latest_moved": result.latest_moved,
        "seconds": time.monotonic() - started,
        "phase_seconds": laps.seconds,
    }


RETRY_HINT = "rerun the backfill of that logs date (--start {day} --end {day}) with"


def _init_worker(log_format: str, log_level: int) -> None:
    logs.configure(log_format, log_level)


# -------------------------------------------------------------- progress ---
class Progress:
    """Per-date status lines with counts and an ETA on stderr."""

    WIDTH = 24

    def __init__(self, outcomes: list[DateOutcome], workers: int, stream=None):
        self.outcomes, self.workers = outcomes, workers
        self.stream = stream if stream is not None else sys.stderr
        self.json = logs.log_format() == "json"
        self.tty = not self.json and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self._drawn = False

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in STATUSES}
        for o in self.outcomes:
            c[o.status] += 1
        return c

    def eta(self) -> str:
        c = self.counts()
        done = sum(c[s] for s in FINISHED)
        if done == 0:
            return "ETA --:--"
        if done == len(self.outcomes):
            return "done"
        left = (time.monotonic() - self.started) / done * (len(self.outcomes) - done)
        return f"ETA {_hms(left)}"

    def bar(self) -> str:
        c = self.counts()
        n = len(self.outcomes)
        done = sum(c[s] for s in FINISHED)
        filled = round(self.WIDTH * done / n) if n else self.WIDTH
        return (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{n}  "
                + "  ".join(f"{s} {c[s]}" for s in STATUSES)
                + f"  elapsed {_hms(time.monotonic() - self.started)}  {self.eta()}")

    def update(self, o: DateOutcome) -> None:
        parts = [f"logs {o.date.isoformat()} (score {o.date + dt.timedelta(days=1)})", f"{o.status:<9}"]
        if o.snapshot_id:
            parts.append(o.snapshot_id)
        if o.status in FINISHED:
            parts.append(f"{o.seconds:.1f} s")
        if o.error:
            parts.append(o.error.splitlines()[0])
        line = "  ".join(parts)
        if self.json:
            with logs.bind(date=o.date, snapshot_id=o.snapshot_id or None):
                logs.progress(f"backfill {line} | {self.bar()}")
        elif self.tty:
            self.stream.write(f"\r\x1b[K{line}\n{self.bar()}")
            self._drawn = True
        else:
            self.stream.write(f"{line}   {self.bar()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -------------------------------------------------------------- backfill ---
class NoWatch:
    """What `backfill` tells as each date begins and ends (`jobs.observe.hook.BackfillWatch`
    records them); this one records nothing and lets each run draw its own id."""

    def date_started(self, day: dt.date) -> str | None:
        return None

    def date_finished(self, day: dt.date, res: dict) -> None:
        pass


def backfill(req: BackfillRequest, progress_stream=None, watch=None) -> list[DateOutcome]:
    if req.end < req.start:
        raise UsageError(f"--end {req.end} is before --start {req.start}")
    if req.workers < 1:
        raise UsageError("--workers must be at least 1")
    Config.load(req.config_path)  # a bad config, output root or warehouse fails once, before any work
    preflight.check_output(req.output_root)
    preflight.check_warehouse(open_warehouse(req.warehouse, req.output_root), lambda s: log.warning("%s", s))

    covered = req.dates
    outcomes = [DateOutcome(d) for d in covered]
    progress = Progress(outcomes, req.workers, progress_stream)
    watch = watch or NoWatch()
    base = {"input_root": req.input_root, "output_root": req.output_root, "config_path": req.config_path,
            "beam_args": list(req.beam_args), "options": req.options.to_dict()}
    try:
        if req.workers == 1:
            _sequential(req, outcomes, covered, base, progress, watch)
        else:
            _parallel(req, outcomes, covered, base, progress, watch)
    finally:
        progress.close()
    return outcomes


def _apply(o: DateOutcome, res: dict) -> None:
    o.status = res["status"]
    o.snapshot_id = res.get("snapshot_id", "")
    o.seconds = res.get("seconds", 0.0)
    o.error = res.get("error", "")
    o.latest_moved = res.get("latest_moved", False)
    o.built_days = [dt.date.fromisoformat(d) for d in res.get("built_days", [])]


def _sequential(req, outcomes, covered, base, progress, watch) -> None:
    rebuilt, failed = set(), set()
    for o in outcomes:
        spec = dict(base, date=o.date, rebuild=rebuild_days(o.date, covered, rebuilt, failed),
                    warehouse=req.warehouse, move_latest=True, snapshot_id=watch.date_started(o.date))
        o.status = "running"
        progress.update(o)
        res = run_one(spec)
        watch.date_finished(o.date, res)
        _apply(o, res)
        rebuilt.update(o.built_days)
        if o.status == "failed":
            failed.add(o.date)
        progress.update(o)


def _parallel(req, outcomes, covered, base, progress, watch) -> None:
    scratch = tempfile.mkdtemp(prefix="oasis-backfill-")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold Beam/gRPC threads

    def new_pool():
        return ProcessPoolExecutor(max_workers=req.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(logs.log_format(), logging.getLogger().getEffectiveLevel()))

    pool = new_pool()
    queue = deque(outcomes)
    running: dict = {}  # future -> outcome
    results: dict[dt.date, dict] = {}  # finished in a worker, waiting for their turn
    next_index = 0
    rebuilt, failed = set(), set()
    try:
        while queue or running:
            while queue and len(running) < req.workers:
                o = queue.popleft()
                spec = dict(base, date=o.date, rebuild=rebuild_days(o.date, covered, rebuilt, failed),
                            warehouse=f"{scratch}/{o.date}.duckdb", move_latest=False,
                            snapshot_id=watch.date_started(o.date))
                running[pool.submit(run_one, spec)] = o
                o.status = "running"
                progress.update(o)
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                o = running.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool as e:
                    broken = True
                    res = {"status": "failed", "error": f"worker process died: {e}"}
                except Exception as e:  # noqa: BLE001
                    res = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                results[o.date] = res
                rebuilt.update(dt.date.fromisoformat(d) for d in res.get("built_days", []))
                if res["status"] == "failed":
                    failed.add(o.date)
            if broken:
                for fut, o in list(running.items()):  # the pool is unusable: its other dates failed too
                    results[o.date] = {"status": "failed", "error": "worker process died (pool broken)"}
                    failed.add(o.date)
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
            # publish in date order: the warehouse and LATEST see one writer
            while next_index < len(outcomes) and outcomes[next_index].date in results:
                o = outcomes[next_index]
                res = results.pop(o.date)
                if res["status"] == "published":
                    t0 = time.monotonic()
                    try:
                        res["latest_moved"] = publish_written(req.output_root, req.warehouse,
                                                              Manifest.from_dict(res["manifest"]))
                    except Exception as e:  # noqa: BLE001
                        log.error("publishing %s failed", res["snapshot_id"], exc_info=True)
                        res = dict(res, status="failed",
                                   error=f"snapshot {res['snapshot_id']} written but not published "
                                         f"(warehouse or LATEST): {type(e).__name__}: {e}")
                    res["seconds"] = res.get("seconds", 0.0) + time.monotonic() - t0
                watch.date_finished(o.date, res)
                _apply(o, res)
                progress.update(o)
                next_index += 1
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a local temporary folder, never the output root


def summary_table(req: BackfillRequest, outcomes: list[DateOutcome], seconds: float) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in FINISHED}
    lines = [f"backfill of logs dates {req.start} .. {req.end} (score dates {req.start + dt.timedelta(days=1)} .. "
             f"{req.end + dt.timedelta(days=1)}): {len(outcomes)} date(s), {counts['published']} published, "
             f"{counts['skipped']} skipped (already published), {counts['failed']} failed, in {seconds:.1f} s"]
    rows = [("logs_date", "score_date", "status", "snapshot_id", "seconds", "error")]
    for o in outcomes:
        rows.append((o.date.isoformat(), (o.date + dt.timedelta(days=1)).isoformat(), o.status,
                     o.snapshot_id or "-", f"{o.seconds:.1f}", o.error.splitlines()[0] if o.error else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                                r[3].ljust(widths[3]), r[4].rjust(widths[4]), r[5]]).rstrip())
    for o in outcomes:  # the whole message where one line of the table does not hold it
        if o.error and "\n" in o.error.strip():
            lines.append(f"logs date {o.date} {o.status}: {o.error.strip()}")
    latest = store.read_latest(req.output_root).content
    lines.append(f"LATEST: {latest or '(none)'}")
    return "\n".join(lines)
