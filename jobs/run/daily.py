"""Run the daily job for one date and publish its snapshot.

The run reads as its phases (`DailyRun.run`):

    prepare            config, warehouse, preflight (output writable, room, warehouse usable, who
                       holds a lock), LATEST and the warehouse brought into agreement, plan
    reuse              the same inputs, config, code and method already published? pulled by a rollback?
    run_pipeline       the Beam pipeline: aggregates, scores, tables
    check_bad_rows     dead letters above the ceiling fail the run
    keep_aggregates    the days built become reusable (their markers)
    validate           describe the tables, run the gates
    build_manifest     the run report, then the manifest's content; a failed gate
                       quarantines here (`jobs.gates.quarantine`)
    reserve            wait for the publish lock and the warehouse (said, and
                       recorded in the manifest's `seconds`)
    write_manifest     the manifest (the snapshot exists)
    publish            warehouse, then LATEST (`jobs.run.publish`)

Any failure before the manifest leaves nothing visible; a failure after it
leaves LATEST where it was, and the next run of the same date finishes that
publish (warehouse, then LATEST) instead of answering "already published" --
unless a rollback pulled that snapshot: then the run publishes nothing with the
same inputs, config, code and method (`--force` included) and says so, until
`--republish` asks for it on purpose (`jobs.snapshots.pulls`).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from jobs import layout, logs
from jobs.gates import checks, quarantine, suite
from jobs.manifest import GateResult, Inputs, Manifest, TableEntry
from jobs.report import html as report
from jobs.report.delivery import delivery_history
from jobs.run import aggregates, fingerprint, preflight, scratch
from jobs.run.options import RunOptions
from jobs.run.plan import make_plan
from jobs.run.publish import latest_covers, latest_same_run, reserved
from jobs.run.publish import publish as publish_snapshot
from jobs.snapshots import pulls, repair, store
from jobs.warehouse.backends import open_warehouse
from pipelines import faults, storage
from pipelines.beam.pipeline import RunPlan, build
from pipelines.config import Config
from pipelines.errors import OasisError
from pipelines.metrics import counters
from schemas import AGGREGATE_FORMAT_VERSION

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
    snapshot_id: str | None = None  # the id this run publishes under, given by whoever records the run

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
    warnings: list[str] = field(default_factory=list)  # what a person should look at (e.g. a warehouse to rebuild)


def run(req: RunRequest, progress=print, laps: Laps | None = None) -> RunResult:
    """Run the daily job. `laps`, when given, collects the phase seconds even
    if the run fails (`jobs.observe` records them)."""
    # Against the GCS emulator, Beam's own GCS client would first spend ~25 s
    # probing for credentials; anonymous at once instead. No-op otherwise.
    storage.use_emulator_for_beam()
    # every log record of this run carries its date (and snapshot id); secrets
    # given as Beam options are redacted from every log line
    with logs.bind(date=req.as_of), logs.redacted(req.beam_args):
        return DailyRun(req, progress, laps).run()


class DailyRun:
    """One run's state as it moves through its phases."""

    def __init__(self, req: RunRequest, progress, laps: Laps | None = None):
        self.req, self.progress = req, progress
        self.started = time.monotonic()
        self.laps = laps if laps is not None else Laps(self.started)
        self.warnings: list[str] = []

    def run(self) -> RunResult:
        self.prepare()
        done = self.reuse()
        if done is None:
            metrics = self.metrics = self.run_pipeline()
            shares = self.check_bad_rows(metrics)
            self.keep_aggregates()
            entries, tables, gates = self.validate()
            manifest = self.build_manifest(entries, tables, gates, metrics, shares)
            if any(r.blocking for r in gates):
                self.quarantine(manifest)
            holder = f"oasis run of logs date {self.req.as_of} ({self.plan.snapshot_id})"
            with reserved(self.req.output_root, self.warehouse, self.progress, holder) as waits:
                # waiting for the publish lock or the warehouse (an analyst's open DuckDB session) is
                # part of where the run's time went: measured before the manifest, so it records it
                self.laps.mark("publish_wait")
                manifest.seconds = dict(self.laps.seconds, **waits)
                self.write_manifest(manifest)
                done = self.publish(manifest, tables, recheck=not self.req.options.force, locked=True)
        done.warnings = self.warnings + done.warnings
        return done

    # --- phases ------------------------------------------------------------
    def prepare(self) -> None:
        req = self.req
        self.cfg = Config.load(req.config_path)
        self.warehouse = open_warehouse(req.warehouse, req.output_root)  # checks the URI before any work
        preflight.check_output(req.output_root)
        preflight.check_warehouse(self.warehouse, self.progress)
        if req.move_latest:  # (a backfill worker's warehouse is a scratch one: nothing to agree with)
            self.agree()
        self.plan, self.inputs = make_plan(req.as_of, req.input_root, req.output_root, self.cfg, req.options,
                                           snapshot_id=req.snapshot_id, rebuild=req.rebuild_days)
        logs.bind(snapshot_id=self.plan.snapshot_id)
        preflight.check_space(req.output_root, scratch.prepare(req.output_root),
                              sum(bd.rows for bd in self.plan.build_days))
        if not storage.is_gcs(req.output_root):
            storage.make_private_dirs(layout.dead_letters_root(req.output_root))
        preflight.check_publish_lock(req.output_root, self.progress)
        scratch.remove_stale(req.output_root)
        self.laps.mark("plan")
        self.version = fingerprint.code_version()
        self.sources = fingerprint.source_fingerprints(self.plan, self.inputs, req.output_root)
        self.fingerprint = fingerprint.run_fingerprint(req.score_date, self.cfg, req.options, self.version,
                                                       self.sources)

    def agree(self) -> None:
        """LATEST, the rollback records and the warehouse agree before this run
        adds to them: an earlier failure between two steps is finished here
        (`jobs.snapshots.repair`), and a warehouse that lacks published dates is
        reported loudly."""
        req = self.req
        problems, missing = repair.survey(req.output_root, self.warehouse)
        if problems:
            self.progress(f"LATEST and the warehouse disagree ({'; '.join(problems)}); repairing first")
            done = repair.repair(req.output_root, self.warehouse)
            for line in done.actions:
                self.progress(f"repair: {line}")
            self.warn(*done.warnings)
        elif missing:
            self.warn(f"the warehouse {self.warehouse.uri} lacks {len(missing)} published score date(s) "
                      f"({', '.join(d.isoformat() for d in missing[:5])}{' ...' if len(missing) > 5 else ''}): "
                      "was it deleted or replaced? This run loads only its own date; "
                      f"`oasis warehouse rebuild --output {req.output_root}"
                      f"{' --warehouse ' + req.warehouse if req.warehouse else ''}` reloads every published "
                      "snapshot")

    def warn(self, *lines: str) -> None:
        for line in lines:
            log.warning("%s", line)
            self.progress(f"WARNING: {line}")
            self.warnings.append(line)

    def reuse(self) -> RunResult | None:
        """A snapshot with this run fingerprint is already published: say so, or
        finish its publish if an earlier run stopped between manifest and LATEST.
        Refuse (even with --force) when a rollback pulled that content, unless
        --republish."""
        req = self.req
        pulled = store.pulled_same_run(req.output_root, req.score_date, self.fingerprint)
        if pulled and not req.options.republish:
            latest = store.read_latest(req.output_root).content or "(none)"
            raise pulls.SnapshotPulled(
                f"not published: {pulls.describe(pulled[-1])}, and this run has the same inputs, config, code and "
                f"method, so it would serve the same content again; LATEST stays on {latest}. To serve it again "
                "on purpose, rerun with --republish")
        if pulled:
            lifted = pulls.lift(req.output_root, [p.snapshot_id for p in pulled])
            self.progress(f"--republish: lifted the rollback record of {', '.join(lifted)}")
        if req.options.force:
            return None
        found = store.find_published(req.output_root, req.score_date, self.fingerprint)
        if found is None:
            return None
        folder, existing = found
        serving_it = latest_same_run(req.output_root, req.score_date, self.fingerprint)
        if serving_it is not None:  # the one LATEST serves, not a race's loser with the same content
            folder, existing = serving_it
        logs.bind(snapshot_id=existing.snapshot_id)
        covered = latest_covers(req.output_root, req.score_date, self.fingerprint)
        if not req.move_latest or (covered and self.in_warehouse(existing)):
            self.progress(f"already published: {existing.snapshot_id} has the same inputs, config and code "
                          f"(use --force to publish again)")
            return RunResult("already_published", existing, folder, seconds=self.elapsed())
        damaged = [p.split(": ", 1)[0] for p in store.file_problems(folder, existing)]
        if damaged:
            self.progress(f"{existing.snapshot_id} has the same inputs but damaged files "
                          f"({', '.join(damaged[:3])}); publishing a new snapshot")
            return None
        missing = "the warehouse does not hold it" if covered else "LATEST does not point to it"
        self.progress(f"finishing the publish of {existing.snapshot_id}: its snapshot is complete but "
                      f"{missing} (an earlier run stopped after its manifest)")
        return self.publish(existing, store.read_snapshot_tables(folder, existing), recheck=False, folder=folder)

    def in_warehouse(self, m: Manifest) -> bool:
        """The warehouse registry holds this snapshot (a publish that failed at
        the warehouse, say on a full disk, did not get there). A registry that
        cannot be read counts as holding it: the run then says "already
        published", and the survey before it has said what is wrong."""
        try:
            rows, _ = self.warehouse.registry()
        except OasisError:
            return True
        return any(r.snapshot_id == m.snapshot_id and r.pulled_at is None for r in rows)

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
                                     skip=req.options.skip_gates, for_date=plan.score_date, metrics=self.metrics)
        for r in gates:
            if r.skipped:
                self.progress(f"gate {r.name} skipped (--skip-gate): {'passed' if r.passed else 'FAILED'}, "
                              f"{r.detail}")
        self.laps.mark("describe_and_gates")
        return entries, tables, gates

    def quarantine(self, manifest: Manifest) -> None:
        """A gate failed: set the would-be snapshot (its report and a manifest-shaped
        record included) aside in quarantine, and fail the run saying what to do."""
        req, plan = self.req, self.plan
        where, problem, replaced = None, None, []
        try:
            where, replaced = quarantine.quarantine(req.output_root, plan, manifest)
        except Exception as e:  # noqa: BLE001 - the unpublished folder has no manifest: invisible to readers
            problem = f"could not quarantine ({e}); the unpublished files stay in {plan.snapshot_dir}"
        if replaced:
            problem = (f"it replaces {len(replaced)} earlier quarantined cop{'y' if len(replaced) == 1 else 'ies'} "
                       "of the same inputs, config and code")
        raise RunFailed(suite.failure_message(manifest.validation, where, problem, req.retry_hint))

    def build_manifest(self, entries, tables, gates, metrics, shares) -> Manifest:
        """The snapshot's manifest, with its run report written beside the data
        (a quarantined would-be snapshot gets both too)."""
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
                empty_days=[d.isoformat() for d in plan.empty_days],
                legacy_aggregate_days=self.inputs.get("legacy_aggregate_days", []),
                previous=previous_record(plan),
                exposure_days=[d.isoformat() for d in plan.exposure_input_days],
                lift_days=[d.isoformat() for d in plan.lift_days]),
            holdout={"salt": self.cfg.holdout_salt, "share": self.cfg.holdout_share,
                     "function": "pipelines.holdout.is_in_holdout (jobs.serving re-exports it)"},
            tables=entries, validation=gates, metrics=metrics, bad_rows=shares,
            dead_letter_count=sum(v for k, v in metrics.items() if k.startswith("dead_lettered/")),
            dead_letters=plan.dead_letter_dir, beam_options=logs.redact_beam_args(req.beam_args)[0],
            valid_until=plan.score_date + dt.timedelta(days=self.cfg.serving_max_age_days),
            aggregate_format_version=AGGREGATE_FORMAT_VERSION,
            previous_snapshot=self.inputs.get("previous_snapshot", {}).get("snapshot_id", ""))
        # the report is written before the manifest, so the manifest lists it with its sha256
        manifest.report = report.write_report_or_error(
            plan.snapshot_dir, manifest, tables, self.previous,
            lambda: delivery_history(req.output_root, plan.score_date, tables["capacity"]))
        self.laps.mark("report")
        manifest.seconds = dict(self.laps.seconds)  # where a run's time goes, for whoever tunes it
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        uri = store.write_manifest(self.plan.snapshot_dir, manifest)
        self.progress(f"manifest written: {uri}")
        faults.checkpoint("after_manifest")

    def publish(self, manifest: Manifest, tables: dict[str, pa.Table], *, recheck: bool,
                folder: str | None = None, locked: bool = False) -> RunResult:
        req = self.req
        folder = folder or self.plan.snapshot_dir
        done = publish_snapshot(req.output_root, self.warehouse, folder, manifest, tables,
                                move_latest=req.move_latest, recheck=recheck, progress=self.progress,
                                locked=locked)
        if done.superseded_by is not None:
            other_folder, other = done.superseded_by
            return RunResult("already_published", other, other_folder, seconds=self.elapsed())
        return RunResult("published", manifest, folder, done.latest_moved, self.elapsed(), tables)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# ------------------------------------------------------------------ helpers ---
def previous_record(plan: RunPlan) -> dict:
    """What the manifest says of the snapshot before (its plan and serving gain were read)."""
    prev = plan.previous
    if prev is None:
        return {}
    return {"snapshot_id": prev.snapshot_id, "score_date": prev.score_date.isoformat(),
            "plan_reconciled": plan.plan_snapshot_id is not None}


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
