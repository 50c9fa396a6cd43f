"""Run the daily job for one date and publish its snapshot.

The run reads as its phases (`DailyRun.run`):

    prepare            config, warehouse (checked before any work), plan
    reuse              the same inputs, config, code and method already published?
    run_pipeline       the Beam pipeline: aggregates, scores, tables
    check_bad_rows     dead letters above the ceiling fail the run
    keep_aggregates    the days built become reusable (their markers)
    validate           describe the tables, run the gates; a failure quarantines
    write_manifest     the run report, then the manifest (the snapshot exists)
    publish            warehouse, then LATEST (`jobs.run.publish`)

Any failure before the manifest leaves nothing visible; a failure after it
leaves LATEST where it was, and the next run of the same date finishes that
publish (warehouse, then LATEST) instead of answering "already published".
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from jobs import logs
from jobs.gates import checks, quarantine, suite
from jobs.manifest import GateResult, Inputs, Manifest, TableEntry
from jobs.report import html as report
from jobs.run import aggregates, fingerprint, scratch
from jobs.run.options import RunOptions
from jobs.run.plan import make_plan
from jobs.run.publish import latest_covers, publish
from jobs.snapshots import store
from jobs.warehouse.backends import open_warehouse
from pipelines import faults, storage
from pipelines.beam.pipeline import RunPlan, build
from pipelines.config import Config
from pipelines.errors import OasisError
from pipelines.metrics import counters

log = logging.getLogger(__name__)


class RunFailed(OasisError):
    """The run did not publish; the message says why."""


@dataclass
class RunRequest:
    as_of: dt.date                 # the last day of logs; the snapshot is for the day after
    input_root: str
    output_root: str
    config_path: str | None = None
    warehouse: str | None = None
    beam_args: list[str] = field(default_factory=list)
    options: RunOptions = field(default_factory=RunOptions)
    rebuild_days: set = field(default_factory=set)  # days whose stored aggregates are rebuilt from raw
    move_latest: bool = True
    retry_hint: str = "rerun with"  # how the gate-failure advice names the command in use

    @property
    def score_date(self) -> dt.date:
        return self.as_of + dt.timedelta(days=1)


@dataclass
class RunResult:
    status: str  # published | already_published
    manifest: Manifest
    snapshot_dir: str
    latest_moved: bool = False
    seconds: float = 0.0
    tables: dict = field(default_factory=dict)


def run(req: RunRequest, progress=print) -> RunResult:
    # Against the GCS emulator, Beam's own GCS client would first spend ~25 s
    # probing for credentials; anonymous at once instead. No-op otherwise.
    storage.use_emulator_for_beam()
    # every log record of this run carries its date (and snapshot id); secrets
    # given as Beam options are redacted from every log line
    with logs.bind(date=req.as_of), logs.redacted(req.beam_args):
        return DailyRun(req, progress).run()


class DailyRun:
    """One run's state as it moves through its phases."""

    def __init__(self, req: RunRequest, progress):
        self.req, self.progress = req, progress
        self.started = time.monotonic()
        self.laps = Laps(self.started)

    def run(self) -> RunResult:
        self.prepare()
        done = self.reuse()
        if done is not None:
            return done
        metrics = self.metrics = self.run_pipeline()
        shares = self.check_bad_rows(metrics)
        self.keep_aggregates()
        entries, tables, gates = self.validate()
        manifest = self.write_manifest(entries, tables, gates, metrics, shares)
        return self.publish(manifest, tables, recheck=not self.req.options.force)

    # --- phases ------------------------------------------------------------
    def prepare(self) -> None:
        req = self.req
        self.cfg = Config.load(req.config_path)
        self.warehouse = open_warehouse(req.warehouse, req.output_root)  # checks the URI before any work
        self.plan, self.inputs = make_plan(req.as_of, req.input_root, req.output_root, self.cfg, req.options,
                                           rebuild=req.rebuild_days)
        logs.bind(snapshot_id=self.plan.snapshot_id)
        scratch.remove_stale(req.output_root)
        self.laps.mark("plan")
        self.version = fingerprint.code_version()
        self.sources = fingerprint.source_fingerprints(self.plan, self.inputs, req.output_root)
        self.fingerprint = fingerprint.run_fingerprint(req.score_date, self.cfg, req.options, self.version,
                                                       self.sources)

    def reuse(self) -> RunResult | None:
        """A snapshot with this run fingerprint is already published: say so, or
        finish its publish if an earlier run stopped between manifest and LATEST."""
        req = self.req
        if req.options.force:
            return None
        found = store.find_published(req.output_root, req.score_date, self.fingerprint)
        if found is None:
            return None
        folder, existing = found
        logs.bind(snapshot_id=existing.snapshot_id)
        if not req.move_latest or latest_covers(req.output_root, req.score_date, self.fingerprint):
            self.progress(f"already published: {existing.snapshot_id} has the same inputs, config and code "
                          f"(use --force to publish again)")
            return RunResult("already_published", existing, folder, seconds=self.elapsed())
        damaged = [p.split(": ", 1)[0] for p in store.file_problems(folder, existing)]
        if damaged:
            self.progress(f"{existing.snapshot_id} has the same inputs but damaged files "
                          f"({', '.join(damaged[:3])}); publishing a new snapshot")
            return None
        self.progress(f"finishing the publish of {existing.snapshot_id}: its snapshot is complete but "
                      f"LATEST does not point to it (an earlier run stopped after its manifest)")
        return self.publish(existing, store.read_snapshot_tables(folder, existing), recheck=False, folder=folder)

    def run_pipeline(self) -> dict[str, int]:
        plan = self.plan
        self.progress(f"run {plan.snapshot_id}: logs up to {plan.as_of}, scores for {plan.score_date}; "
                      f"building {len(plan.build_days)} day(s) of aggregates, reusing {len(plan.stored_days)}")
        self.created_at = dt.datetime.now(dt.timezone.utc)
        try:
            p = beam.Pipeline(options=PipelineOptions(self.req.beam_args))
            build(p, plan)
            result = p.run()
            result.wait_until_finish()
            metrics = counters(result)
        except BaseException:
            discard(plan)
            raise
        finally:
            scratch.remove(plan.scratch_dir)
        self.laps.mark("pipeline")
        return metrics

    def check_bad_rows(self, metrics: dict[str, int]) -> dict[str, dict]:
        shares = bad_row_shares(metrics)
        ceiling = self.cfg.max_bad_row_share
        over = {k: v for k, v in shares.items() if v["share"] > ceiling}
        if over:
            discard(self.plan)
            detail = "; ".join(f"{k}: {v['dead_lettered']}/{v['rows']} = {v['share']:.2%}" for k, v in over.items())
            raise RunFailed(f"bad rows above the ceiling of {ceiling:.2%}: {detail}; "
                            f"nothing published (dead letters kept under {self.plan.dead_letter_dir})")
        return shares

    def keep_aggregates(self) -> None:
        """The aggregates are complete and right whatever the gates say: later
        runs may reuse them even if this snapshot is never published."""
        for bd in self.plan.build_days:
            aggregates.mark_complete(self.req.output_root, bd.day, bd.aggregate_dir,
                                     {f: self.inputs["engagement"][f] for f in bd.engagement_files},
                                     {f: self.inputs["exposures"][f] for f in bd.exposure_files},
                                     self.plan.listener_shards)

    def validate(self) -> tuple[dict[str, TableEntry], dict[str, pa.Table], list[GateResult]]:
        plan, req = self.plan, self.req
        entries, tables = store.describe_tables(plan.snapshot_dir)
        faults.checkpoint("after_data")
        self.previous = store.previous_snapshot(req.output_root, plan.score_date)
        expected = checks.expected_enrollment_keys(plan.enrollment_files, req.options.batch_rows)
        gates = suite.check_snapshot(tables, self.cfg, previous=self.previous, expected_keys=expected,
                                     skip=req.options.skip_gates, metrics=self.metrics)
        for r in gates:
            if r.skipped:
                self.progress(f"gate {r.name} skipped (--skip-gate): {'passed' if r.passed else 'FAILED'}, "
                              f"{r.detail}")
        self.laps.mark("describe_and_gates")
        if any(r.blocking for r in gates):
            where, problem = None, None
            try:
                where = quarantine.quarantine(req.output_root, plan, gates, entries)
            except Exception as e:  # noqa: BLE001 - the unpublished folder has no manifest: invisible to readers
                problem = f"could not quarantine ({e}); the unpublished files stay in {plan.snapshot_dir}"
            raise RunFailed(suite.failure_message(gates, where, problem, req.retry_hint))
        return entries, tables, gates

    def write_manifest(self, entries, tables, gates, metrics, shares) -> Manifest:
        plan, req = self.plan, self.req
        manifest = Manifest(
            plan.snapshot_id, plan.score_date, as_of=plan.as_of, created_at=self.created_at,
            code_version=self.version, run_fingerprint=self.fingerprint, config=self.cfg.to_dict(),
            config_sha256=self.cfg.sha256(), options=req.options.to_dict(),
            inputs=Inputs(
                enrollments=self.inputs["enrollments"], engagement=self.inputs["engagement"],
                exposures=self.inputs["exposures"],
                aggregates=self.inputs["aggregates"], sources_by_day=self.sources,
                built_days=[bd.day.isoformat() for bd in plan.build_days],
                stored_days=[sd.day.isoformat() for sd in plan.stored_days],
                missing_window_days=[d.isoformat() for d in plan.missing_days],
                exposure_days=[d.isoformat() for d in plan.exposure_input_days],
                lift_days=[d.isoformat() for d in plan.lift_days]),
            holdout={"salt": self.cfg.holdout_salt, "share": self.cfg.holdout_share,
                     "function": "pipelines.holdout.is_in_holdout (jobs.serving re-exports it)"},
            tables=entries, validation=gates, metrics=metrics, bad_rows=shares,
            dead_letter_count=sum(v for k, v in metrics.items() if k.startswith("dead_lettered/")),
            dead_letters=plan.dead_letter_dir, beam_options=logs.redact_beam_args(req.beam_args)[0])
        # the report is written before the manifest, so the manifest lists it with its sha256
        manifest.report = report.write_report_or_error(plan.snapshot_dir, manifest, tables, self.previous)
        self.laps.mark("report")
        manifest.seconds = self.laps.seconds  # where a run's time goes, for whoever tunes it
        uri = store.write_manifest(plan.snapshot_dir, manifest)
        self.progress(f"manifest written: {uri}")
        faults.checkpoint("after_manifest")
        return manifest

    def publish(self, manifest: Manifest, tables: dict[str, pa.Table], *, recheck: bool,
                folder: str | None = None) -> RunResult:
        req = self.req
        folder = folder or self.plan.snapshot_dir
        done = publish(req.output_root, self.warehouse, folder, manifest, tables, move_latest=req.move_latest,
                       recheck=recheck, progress=self.progress)
        if done.superseded_by is not None:
            other_folder, other = done.superseded_by
            return RunResult("already_published", other, other_folder, seconds=self.elapsed())
        return RunResult("published", manifest, folder, done.latest_moved, self.elapsed(), tables)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# ------------------------------------------------------------------ helpers ---
def bad_row_shares(metrics: dict[str, int]) -> dict[str, dict]:
    """Per checked source and day: rows, dead-lettered rows and their share."""
    shares = {}
    for name, n in metrics.items():
        if name.startswith("checked/"):
            part = name[len("checked/"):]
            dead = metrics.get(f"dead_lettered/{part}", 0)
            shares[part] = {"rows": n, "dead_lettered": dead, "share": dead / n if n else 0.0}
    return shares


class Laps:
    """Seconds spent per phase of a run, in order."""

    def __init__(self, started: float):
        self.last, self.seconds = started, {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 3)
        self.last = now
        log.info("%s took %.2f s", phase, self.seconds[phase])


def discard(plan: RunPlan) -> None:
    """Remove what a failed run wrote, best effort (gc cleans what is left);
    its dead letters stay, for the engineer who looks into the failure."""
    for uri in [plan.snapshot_dir] + [bd.aggregate_dir for bd in plan.build_days]:
        try:
            storage.delete_tree(uri)
        except Exception as e:  # noqa: BLE001 - best effort
            log.warning("could not remove %s: %s", uri, e)
