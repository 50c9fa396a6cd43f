"""The one place that sees a run begin and end, for `oasis run`, the Luigi
task, each date of `oasis backfill`, and (through `observed_step`) commands
without a logs date such as `oasis serving sync`.

At the beginning: the run gets its id (the snapshot id it will publish
under) and a START lineage event goes out. At the end, whatever happened
(published, already published, quarantined, failed with its reason): the run
record is written (`jobs.observe.records`), then the metrics
(`jobs.observe.metrics`), then COMPLETE or FAIL (`jobs.observe.lineage`).
None of these can fail the run or change what it published: each is written
outside the snapshot tree and any error is logged and swallowed. Lineage and
the Pushgateway wait at most their timeouts, once per process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

from jobs import layout, logs
from jobs.manifest import Manifest, ManifestError
from jobs.observe import lineage, metrics, records
from jobs.observe.records import ALREADY_PUBLISHED, FAILED, PUBLISHED, QUARANTINED, RunRecord
from jobs.run import daily
from jobs.snapshots import store
from pipelines import storage
from pipelines.errors import user_error

log = logging.getLogger(__name__)

# the seconds after the run's last named phase (`jobs.run.daily.Laps`) are recorded as one of these
PUBLISH, REST, UNTIL_FAILURE = "publish", "rest", "until_failure"


@dataclass
class Attempt:
    """A run that has begun."""
    run_id: str
    started_at: dt.datetime
    logs_date: dt.date | None
    laps: daily.Laps
    started: float = field(default_factory=time.monotonic)

    @property
    def score_date(self) -> dt.date | None:
        return self.logs_date + dt.timedelta(days=1) if self.logs_date else None


@dataclass
class Ending:
    """How a run ended. `manifest`/`snapshot_folder`: the snapshot it
    published or found already published."""
    status: str
    reason: str = ""
    manifest: Manifest | None = None
    snapshot_folder: str | None = None
    latest_moved: bool = False
    failed_gates: list[str] = field(default_factory=list)
    quarantine: str | None = None
    dead_letters: str | None = None


def warehouse_uri(warehouse: str | None, output_root: str) -> str:
    """The URI of the warehouse a run loads (the default DuckDB file when none is given)."""
    if warehouse and warehouse.startswith(("bq://", "duckdb://")):
        return warehouse
    return f"duckdb://{warehouse or layout.default_warehouse_path(output_root)}"


def reason_of(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    known = user_error(error)
    return known[0] if known else f"{type(error).__name__}: {error}"


class Observer:
    """Records the runs of one command in one output root."""

    def __init__(self, command: str, output_root: str, warehouse: str | None = None, beam_args=(),
                 parent: str | None = None, export_metrics: bool = True):
        self.command, self.output_root, self.parent = command, output_root, parent
        self.warehouse = warehouse_uri(warehouse, output_root)
        self.secrets = logs.redact_beam_args(list(beam_args))[1]
        self.emitter = lineage.Emitter()
        self.exporter = metrics.Exporter() if export_metrics else None
        self.any_failed = False

    # --- begin / end -------------------------------------------------------
    def begin(self, logs_date: dt.date | None = None, run_id: str | None = None) -> Attempt:
        now = dt.datetime.now(dt.timezone.utc)
        attempt = Attempt(run_id or layout.new_snapshot_id(now), now, logs_date, daily.Laps(time.monotonic()))
        self._guard("lineage START", lambda: self.emitter.emit(lineage.start_event(self._record(attempt, None))))
        return attempt

    def end(self, attempt: Attempt, ending: Ending) -> RunRecord:
        record = self._record(attempt, ending)
        self.any_failed |= not record.succeeded
        self._guard("run record", lambda: records.write_record(self.output_root, record))
        if self.exporter is not None:
            self._guard("metrics", lambda: self._export(record, ending))
        self._guard("lineage end", lambda: self.emitter.emit(
            lineage.end_event(record, ending.manifest, ending.snapshot_folder)))
        return record

    def close(self) -> None:
        self._guard("lineage close", self.emitter.close)

    # --- endings -------------------------------------------------------------
    def failure(self, attempt: Attempt, error: BaseException | str) -> Ending:
        """A run that raised (or, in a backfill, returned an error): quarantined
        when its would-be snapshot was set aside, else failed."""
        reason = error if isinstance(error, str) else reason_of(error)
        ending = Ending(FAILED, reason)
        dead = layout.dead_letters_dir(self.output_root, attempt.run_id)
        with contextlib.suppress(OSError):
            if storage.exists(dead):  # a run that got as far as the pipeline keeps its dead letters
                ending.dead_letters = dead
        if attempt.score_date is None:
            return ending
        folder = layout.quarantine_dir(self.output_root, attempt.score_date, attempt.run_id)
        try:
            doc = storage.read_bytes(storage.join(folder, layout.QUARANTINE_RECORD))
        except (FileNotFoundError, OSError):
            return ending
        gates = []
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            gates = [g["name"] for g in json.loads(doc)["failed_gates"]]
        return dataclasses.replace(ending, status=QUARANTINED, quarantine=folder, failed_gates=gates)

    def success(self, status: str, manifest: Manifest, folder: str, latest_moved: bool) -> Ending:
        return Ending(status, manifest=manifest, snapshot_folder=folder, latest_moved=latest_moved,
                      dead_letters=manifest.dead_letters or None)

    # --- internals -----------------------------------------------------------
    def _record(self, attempt: Attempt, ending: Ending | None) -> RunRecord:
        now = dt.datetime.now(dt.timezone.utc)
        ending = ending or Ending(FAILED)  # START events only read the run's identity
        outputs = {"warehouse": self.warehouse, "latest_moved": ending.latest_moved}
        for key, value in (("snapshot", ending.snapshot_folder), ("quarantine", ending.quarantine),
                           ("dead_letters", ending.dead_letters)):
            if value:
                outputs[key] = value
        if ending.manifest is not None and ending.manifest.report and "path" in ending.manifest.report:
            outputs["report"] = layout.listed_file(ending.snapshot_folder, str(ending.manifest.report["path"]))
        return RunRecord(
            run_id=attempt.run_id, command=self.command, status=ending.status, started_at=attempt.started_at,
            finished_at=now, logs_date=attempt.logs_date.isoformat() if attempt.logs_date else None,
            score_date=attempt.score_date.isoformat() if attempt.score_date else None,
            reason=records.short_reason(ending.reason, self.secrets),
            snapshot_id=ending.manifest.snapshot_id if ending.manifest else None,
            seconds=round(time.monotonic() - attempt.started, 3), phase_seconds=dict(attempt.laps.seconds),
            outputs=outputs, failed_gates=list(ending.failed_gates), parent=self.parent,
            lineage_run_id=lineage.run_uuid(attempt.run_id) if self.emitter.enabled else None)

    def _export(self, record: RunRecord, ending: Ending) -> None:
        target = store.latest_target(self.output_root)
        last = record if record.succeeded else records.last_success(self.output_root)
        registry = metrics.build(
            record, manifest=ending.manifest, capacity=capacity_used(ending.manifest, ending.snapshot_folder),
            published_score_date=target[0] if target else None,
            last_success=last.finished_at if last else None,
            failed=self.any_failed if self.command == "backfill" else None)
        self.exporter.export(self.output_root, registry)

    def _guard(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - observability never changes a run's outcome
            log.warning("%s not written: %s: %s", what, type(e).__name__, e)


def capacity_used(manifest: Manifest | None, folder: str | None) -> list[tuple[str, str, float]]:
    """(market, surface, planned / capacity) from the snapshot's capacity table."""
    if manifest is None or folder is None or not manifest.table_files("capacity"):
        return []
    files = [layout.listed_file(folder, f.path) for f in manifest.table_files("capacity")]
    t = store.read_table_files(files, "capacity", ["market", "surface", "planned_total", "capacity"]).to_pydict()
    return [(m, s, (p / c) if c else 0.0)
            for m, s, p, c in zip(t["market"], t["surface"], t["planned_total"], t["capacity"])]


# ------------------------------------------------------------ entry points ---
def run_daily(req: daily.RunRequest, progress=print, command: str = "run") -> daily.RunResult:
    """`jobs.run.daily.run`, recorded: what `oasis run` and the Luigi task call."""
    observer = Observer(command, req.output_root, req.warehouse, req.beam_args)
    with logs.bind(date=req.as_of), contextlib.ExitStack() as undo:  # what is logged here carries the run's context
        attempt = observer.begin(req.as_of, req.snapshot_id)
        undo.enter_context(logs.bind(snapshot_id=attempt.run_id))
        undo.callback(observer.close)
        req = dataclasses.replace(req, snapshot_id=attempt.run_id)
        try:
            result = daily.run(req, progress, laps=attempt.laps)
        except BaseException as e:
            attempt.laps.mark(UNTIL_FAILURE)
            observer.end(attempt, observer.failure(attempt, e))
            raise
        attempt.laps.mark(PUBLISH if result.status == PUBLISHED else REST)
        observer.end(attempt, observer.success(result.status, result.manifest, result.snapshot_dir,
                                               result.latest_moved))
        return result


class BackfillWatch:
    """What `jobs.run.backfill.backfill` calls as each date begins and ends
    (in this process, also for dates that ran in worker processes)."""

    def __init__(self, output_root: str, warehouse: str | None, beam_args=()):
        self.observer = Observer("backfill", output_root, warehouse, beam_args,
                                 parent=layout.new_snapshot_id())
        self.attempts: dict[dt.date, Attempt] = {}

    def date_started(self, day: dt.date) -> str:
        """Returns the run id the date's run must publish under."""
        self.attempts[day] = self.observer.begin(day)
        return self.attempts[day].run_id

    def date_finished(self, day: dt.date, res: dict) -> None:
        attempt = self.attempts.pop(day)
        attempt.laps.seconds.update(res.get("phase_seconds") or {})
        o = self.observer
        if res["status"] == "failed":
            ending = o.failure(attempt, res.get("error", ""))
        else:
            found = self._snapshot(res)
            status = PUBLISHED if res["status"] == "published" else ALREADY_PUBLISHED
            ending = (o.success(status, found[1], found[0], bool(res.get("latest_moved"))) if found
                      else Ending(status))
        o.end(attempt, ending)

    def _snapshot(self, res: dict) -> tuple[str, Manifest] | None:
        try:
            if res.get("manifest"):
                m = Manifest.from_dict(res["manifest"])
                return store.snapshot_dir_of(self.observer.output_root, m), m
            return store.find_snapshot(self.observer.output_root, res["snapshot_id"]) if res.get("snapshot_id") \
                else None
        except (ManifestError, OSError) as e:
            log.warning("cannot read the snapshot of a backfill date: %s", e)
            return None

    def close(self) -> None:
        self.observer.close()


@contextlib.contextmanager
def observed_step(command: str, output_root: str, export_metrics: bool = False) -> Iterator[dict]:
    """Records a command that has no logs date, such as `oasis serving sync`
    (`jobs.feature_store.sync.observed_sync`): a run record, START and COMPLETE/FAIL lineage events
    (job `serving_sync`). The body may fill the yielded dict with `status`
    (published or already_published) and `snapshot_id` (what it synced). Metrics
    stay the daily run's unless `export_metrics`."""
    observer = Observer(command, output_root, export_metrics=export_metrics)
    attempt = observer.begin()
    outcome: dict = {}
    try:
        yield outcome
    except BaseException as e:
        observer.end(attempt, observer.failure(attempt, e))
        raise
    else:
        found = store.find_snapshot(output_root, outcome["snapshot_id"]) if outcome.get("snapshot_id") else None
        ending = (observer.success(outcome.get("status", PUBLISHED), found[1], found[0], False) if found
                  else Ending(outcome.get("status", PUBLISHED)))
        observer.end(attempt, ending)
    finally:
        observer.close()

