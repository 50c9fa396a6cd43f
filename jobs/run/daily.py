"""Run the daily job for one date and publish its snapshot.

plan -> Beam pipeline (aggregates, scores, tables) -> data-quality checks ->
aggregate markers -> validation -> manifest -> warehouse -> LATEST.
Any failure before the manifest leaves nothing visible; a failure after it
leaves LATEST where it was, and the next run of the same date finishes that
publish (warehouse, then LATEST) instead of answering "already published".
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from jobs import logs
from pipelines import faults
from jobs.snapshots import store as publish
from jobs.gates import checks as validation
from jobs.run.plan import aggregates_root, make_plan, stale_scratch
from jobs.warehouse.base import open_warehouse, registry_row
from pipelines import storage
from pipelines.beam import pipeline as daily
from pipelines.config import Config

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """The run did not publish; the message says why."""


@dataclass
class RunRequest:
    as_of: dt.date
    input_root: str
    output_root: str
    config_path: str | None = None
    warehouse: str | None = None
    beam_args: list[str] = field(default_factory=list)
    force: bool = False
    method: str = "auto"
    rebuild_days: set = field(default_factory=set)
    move_latest: bool = True
    skip_gates: list[str] = field(default_factory=list)  # validation gates checked by hand (--skip-gate)

    def __post_init__(self):
        try:
            self.skip_gates = validation.check_gate_names(self.skip_gates)
        except validation.UnknownGate as e:
            raise RunFailed(str(e)) from None


@dataclass
class RunResult:
    status: str  # published | already_published
    manifest: dict
    snapshot_dir: str
    latest_moved: bool = False
    seconds: float = 0.0
    tables: dict = field(default_factory=dict)


def code_version() -> str:
    """Package version plus a hash of the package sources (works without git,
    e.g. on Dataflow workers)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("oasis-scores")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    h = hashlib.sha256()
    base = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for pkg in ("schemas", "pipelines", "jobs"):
        for root, _, files in sorted(os.walk(os.path.join(base, pkg))):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(root, f), "rb") as fh:
                        h.update(f.encode() + fh.read())
    return f"{version}+src.{h.hexdigest()[:12]}"


def run_fingerprint(score_date: dt.date, cfg: Config, version: str, sources: dict) -> str:
    doc = {"score_date": score_date.isoformat(), "config": cfg.to_dict(), "code_version": version,
           "sources": {k: sorted(v) for k, v in sources.items()}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _source_fingerprints(plan: daily.RunPlan, inputs: dict, output_root: str) -> dict:
    """Raw-input fingerprints per day, for built and stored days alike (a stored
    day's marker records the raw files it was built from), so a rerun that
    reuses aggregates has the same fingerprint as the run that built them."""
    by_day = {f"enrollments/{plan.as_of}": sorted(inputs["enrollments"].values())}
    for bd in plan.build_days:
        by_day[f"engagement/{bd.day}"] = sorted(inputs["engagement"][f] for f in bd.engagement_files)
    for sd in plan.stored_days:
        marker = _read_marker(output_root, sd.day)
        by_day[f"engagement/{sd.day}"] = sorted(marker.get("sources", {}).values())
    return by_day


def _read_marker(output_root: str, day: dt.date) -> dict:
    try:
        return json.loads(storage.read_bytes(storage.join(aggregates_root(output_root, day), "_SUCCESS.json")))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_marker(output_root: str, bd: daily.BuildDay, inputs: dict) -> None:
    root = aggregates_root(output_root, bd.day)
    build = bd.aggregate_dir.rstrip("/").rsplit("/", 1)[-1]
    detail = {"build": build, "sources": {f: inputs["engagement"][f] for f in bd.engagement_files},
              "built_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    # details first, then the marker that makes the build visible
    storage.write_bytes(storage.join(root, "_SUCCESS.json"), json.dumps(detail, indent=2).encode())
    storage.write_bytes(storage.join(root, "_SUCCESS"), build.encode())


def counters(result) -> dict[str, int]:
    out = {}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(out.items()))


def _bad_row_shares(metrics: dict[str, int]) -> dict[str, dict]:
    shares = {}
    for name, n in metrics.items():
        if name.startswith("checked/"):
            part = name[len("checked/"):]
            dead = metrics.get(f"dead_lettered/{part}", 0)
            shares[part] = {"rows": n, "dead_lettered": dead, "share": dead / n if n else 0.0}
    return shares


_SENSITIVE_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "auth")


def _sensitive(text: str) -> bool:
    return any(w in text.lower() for w in _SENSITIVE_WORDS)


def redact_beam_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(Beam arguments with the value of every sensitive option replaced by
    "<redacted>", the secret values). Both forms count: `--name=value` and
    `--name value` (a separate argument, which a filter on single arguments
    would let through)."""
    out, secrets, redact_next = [], [], False
    for a in args:
        if redact_next and not a.startswith("-"):
            out.append("<redacted>")
            secrets.append(a)
            redact_next = False
            continue
        redact_next = False
        name, eq, value = a.partition("=")
        if a.startswith("-") and eq:
            if _sensitive(a):
                out.append(f"{name}=<redacted>")
                secrets.append(value)
            else:
                out.append(a)
        elif a.startswith("-"):
            out.append(a)
            redact_next = _sensitive(name)
        elif _sensitive(a):
            out.append("<redacted>")
            secrets.append(a)
        else:
            out.append(a)
    return out, [x for x in secrets if x]


class _RedactSecrets(logging.Filter):
    """Replaces secret option values in every log record (Beam itself logs
    arguments it cannot parse, values included)."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if any(x in message for x in self.secrets):
            for x in self.secrets:
                message = message.replace(x, "<redacted>")
            record.msg, record.args = message, None
        return True


@contextlib.contextmanager
def _redacted_logs(beam_args: list[str]):
    secrets = redact_beam_args(beam_args)[1]
    if not secrets:
        yield
        return
    f = _RedactSecrets(secrets)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(f)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(f)


def run(req: RunRequest, progress=print) -> RunResult:
    # Against the GCS emulator, Beam's own GCS client would first spend ~25 s
    # probing for credentials; anonymous at once instead. No-op otherwise.
    storage.use_emulator_for_beam()
    # every log record of this run carries its date (and snapshot id); secrets
    # given as Beam options are redacted from every log line
    with logs.bind(date=req.as_of), _redacted_logs(req.beam_args):
        return _run(req, progress)


def _run(req: RunRequest, progress) -> RunResult:
    started = time.monotonic()
    laps = Laps(started)
    cfg = Config.load(req.config_path)
    score_date = req.as_of + dt.timedelta(days=1)
    warehouse = open_warehouse(req.warehouse, req.output_root)  # validates the URI before any work
    plan, inputs = make_plan(req.as_of, req.input_root, req.output_root, cfg, method=req.method,
                             rebuild=req.rebuild_days)
    logs.bind(snapshot_id=plan.snapshot_id)
    _remove_stale_scratch(req.output_root)
    laps.mark("plan")
    version = code_version()
    sources = _source_fingerprints(plan, inputs, req.output_root)
    fingerprint = run_fingerprint(score_date, cfg, version, sources)
    if not req.force:
        existing = publish.find_published(req.output_root, score_date, fingerprint)
        if existing:
            logs.bind(snapshot_id=existing["snapshot_id"])
            folder = publish.snapshot_dir_of(req.output_root, existing)
            if not req.move_latest or _latest_covers(req.output_root, score_date, fingerprint):
                progress(f"already published: {existing['snapshot_id']} has the same inputs, config and code "
                         f"(use --force to publish again)")
                return RunResult("already_published", existing, folder, seconds=time.monotonic() - started)
            # Its manifest is written but LATEST never reached it: an earlier run
            # stopped (was killed) between the manifest and the pointer. Finish
            # that publish rather than report "already published" with LATEST behind.
            damaged = _damaged_files(folder, existing)
            if not damaged:
                progress(f"finishing the publish of {existing['snapshot_id']}: its snapshot is complete but "
                         f"LATEST does not point to it (an earlier run stopped after its manifest)")
                tables = publish.read_snapshot_tables(folder, existing)
                return _publish_tail(req, warehouse, existing, folder, tables, started, progress, recheck=False)
            progress(f"{existing['snapshot_id']} has the same inputs but damaged files "
                     f"({', '.join(damaged[:3])}); publishing a new snapshot")

    progress(f"run {plan.snapshot_id}: logs up to {req.as_of}, scores for {score_date}; "
             f"building {len(plan.build_days)} day(s) of aggregates, reusing {len(plan.stored_days)}")
    created_at = dt.datetime.now(dt.timezone.utc)
    try:
        options = PipelineOptions(req.beam_args)
        p = beam.Pipeline(options=options)
        daily.build(p, plan)
        result = p.run()
        result.wait_until_finish()
        metrics = counters(result)
    except BaseException:
        _discard(plan)
        raise
    finally:
        _remove_scratch(plan)

    laps.mark("pipeline")
    shares = _bad_row_shares(metrics)
    over = {k: v for k, v in shares.items() if v["share"] > cfg.max_bad_row_share}
    if over:
        _discard(plan)
        detail = "; ".join(f"{k}: {v['dead_lettered']}/{v['rows']} = {v['share']:.2%}" for k, v in over.items())
        raise RunFailed(f"bad rows above the ceiling of {cfg.max_bad_row_share:.2%}: {detail}; "
                        f"nothing published (dead letters kept under {plan.dead_letter_dir})")

    for bd in plan.build_days:
        _write_marker(req.output_root, bd, inputs)

    tables_meta, tables = publish.describe_tables(plan.snapshot_dir)
    faults.checkpoint("after_data")
    previous = publish.previous_snapshot(req.output_root, score_date)  # (folder, manifest) or None
    checks = validation.check_snapshot(tables, cfg, previous=previous,
                                       expected_keys=validation.expected_enrollment_keys(plan.enrollment_files),
                                       skip=req.skip_gates)
    for r in validation.skipped(checks):
        progress(f"gate {r['name']} skipped (--skip-gate): {'passed' if r['passed'] else 'FAILED'}, {r['detail']}")
    laps.mark("describe_and_gates")
    failed = validation.failed(checks)
    if failed:
        # The aggregates stay: they are complete (their markers are written) and
        # right whatever the gates say; only the would-be snapshot is set aside.
        where, problem = None, None
        try:
            where = validation.quarantine(req.output_root, plan, checks, tables_meta)
        except Exception as e:  # the unpublished folder has no manifest: invisible to readers
            problem = f"could not quarantine ({e}); the unpublished files stay in {plan.snapshot_dir}"
        raise RunFailed(validation.failure_message(checks, where, problem))

    manifest = {
        "snapshot_id": plan.snapshot_id,
        "score_date": score_date.isoformat(),
        "as_of": req.as_of.isoformat(),
        "created_at": created_at.isoformat(),
        "code_version": version,
        "run_fingerprint": fingerprint,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "inputs": {
            "enrollments": inputs["enrollments"],
            "engagement": inputs["engagement"],
            "aggregates": inputs["aggregates"],
            "sources_by_day": sources,
            "built_days": [bd.day.isoformat() for bd in plan.build_days],
            "stored_days": [sd.day.isoformat() for sd in plan.stored_days],
            "missing_window_days": [d.isoformat() for d in plan.missing_days],
        },
        "tables": tables_meta,
        "validation": checks,
        "metrics": metrics,
        "bad_rows": shares,
        "dead_letter_count": sum(v for k, v in metrics.items() if k.startswith("dead_lettered/")),
        "dead_letters": plan.dead_letter_dir,
        "beam_options": redact_beam_args(req.beam_args)[0],
    }
    # REPORT HOOK: the run report is written here, before the manifest, so the
    # manifest can list it with its sha256.
    from jobs.report import html as report

    manifest["report"] = report.write_report_or_error(plan.snapshot_dir, manifest, tables, previous)
    laps.mark("report")
    manifest["seconds"] = laps.seconds  # where a run's time goes, for whoever tunes it
    manifest_uri = publish.write_manifest(plan.snapshot_dir, manifest)
    progress(f"manifest written: {manifest_uri}")
    faults.checkpoint("after_manifest")
    return _publish_tail(req, warehouse, manifest, plan.snapshot_dir, tables, started, progress,
                         recheck=not req.force)


def _publish_tail(req: RunRequest, warehouse, manifest: dict, folder: str, tables: dict, started: float,
                  progress, *, recheck: bool) -> RunResult:
    """Warehouse, then LATEST, for a snapshot whose manifest is written. Local
    output roots serialise this step across processes (`publish_lock`), so two
    runs of the same date never interleave their warehouse loads and pointer
    moves; with `recheck`, a run that finds an identical snapshot (same run
    fingerprint) already published meanwhile leaves the warehouse and LATEST on it."""
    score_date = dt.date.fromisoformat(manifest["score_date"])
    manifest_uri = storage.join(folder, publish.MANIFEST)
    with publish_lock(req.output_root):
        if recheck and req.move_latest:
            other = _latest_same_run(req.output_root, score_date, manifest["run_fingerprint"])
            if other and other[1]["snapshot_id"] != manifest["snapshot_id"]:
                progress(f"{other[1]['snapshot_id']} with the same inputs, config and code was published "
                         f"meanwhile by another run; LATEST and the warehouse stay on it "
                         f"({manifest['snapshot_id']} is complete but not published)")
                return RunResult("already_published", other[1], other[0],
                                 seconds=time.monotonic() - started)
        faults.checkpoint("before_warehouse")
        warehouse.publish(score_date, tables, registry_row(manifest, manifest_uri))
        progress(f"warehouse loaded: {warehouse.uri}")
        faults.checkpoint("after_warehouse")
        faults.checkpoint("before_pointer")
        moved = (publish.move_latest(req.output_root, score_date, manifest["snapshot_id"])
                 if req.move_latest else False)
        faults.checkpoint("after_pointer")
    return RunResult("published", manifest, folder, moved, time.monotonic() - started, tables)


def publish_lock(output_root: str):
    """Cross-process lock of a local output root's publish step (crash-safe:
    released by the kernel if the holder dies). On gs:// the warehouse
    transaction and LATEST's generation precondition are what keep it whole."""
    if storage.is_gcs(output_root):
        return contextlib.nullcontext()
    return storage.local_lock(storage.join(publish.snapshots_root(output_root), ".publish.lock"), timeout_s=600.0)


def _latest_same_run(output_root: str, score_date: dt.date, fingerprint: str) -> tuple[str, dict] | None:
    """(folder, manifest) of LATEST's snapshot if it is of `score_date` with the
    same run fingerprint, else None."""
    current = publish.read_latest(output_root).content
    if not current or current.split("/", 1)[0] != f"score_date={score_date.isoformat()}":
        return None
    folder = storage.join(publish.snapshots_root(output_root), *current.split("/"))
    try:
        m = publish.read_manifest(folder)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return (folder, m) if m.get("run_fingerprint") == fingerprint else None


def _latest_covers(output_root: str, score_date: dt.date, fingerprint: str) -> bool:
    """LATEST already serves this run's result: it points to a newer score date
    (a backfill never moves it back) or to a snapshot of this date with the same
    run fingerprint."""
    current = publish.read_latest(output_root).content
    if current:
        current_date = current.split("/", 1)[0].removeprefix("score_date=")
        if current_date > score_date.isoformat():
            return True
    return _latest_same_run(output_root, score_date, fingerprint) is not None


def _damaged_files(folder: str, manifest: dict) -> list[str]:
    """Files listed in the manifest that are missing or whose size or sha256 differ."""
    return [p.split(": ", 1)[0] for p in publish.file_problems(folder, manifest)]


class Laps:
    """Seconds spent per phase of a run, in order."""

    def __init__(self, started: float):
        self.last, self.seconds = started, {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 3)
        self.last = now
        log.info("%s took %.2f s", phase, self.seconds[phase])


def _remove_scratch(plan: daily.RunPlan) -> None:
    """The pipeline's working files are needed only while it runs."""
    try:
        storage.delete_tree(plan.scratch_dir)
    except Exception as e:  # pragma: no cover - best effort
        log.warning("could not remove the scratch folder %s: %s", plan.scratch_dir, e)


def _remove_stale_scratch(output_root: str) -> None:
    """What killed runs left in their scratch folders (see plan.stale_scratch)."""
    try:
        stale = stale_scratch(output_root)
    except Exception as e:  # pragma: no cover - best effort
        log.warning("could not list scratch folders: %s", e)
        return
    for uri in stale:
        try:
            storage.delete_tree(uri)
            log.info("removed the scratch folder of a killed run: %s", uri)
        except Exception as e:  # pragma: no cover - best effort
            log.warning("could not remove the stale scratch folder %s: %s", uri, e)


def _discard(plan: daily.RunPlan, keep_dead_letters: bool = True) -> None:
    """Remove what a failed run wrote, best effort (gc cleans what is left)."""
    for uri in [plan.snapshot_dir] + [bd.aggregate_dir for bd in plan.build_days]:
        try:
            storage.delete_tree(uri)
        except Exception as e:  # pragma: no cover - best effort
            log.warning("could not remove %s: %s", uri, e)
