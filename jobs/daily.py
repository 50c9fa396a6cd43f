"""Run the daily job for one date and publish its snapshot.

plan -> Beam pipeline (aggregates, scores, tables) -> data-quality checks ->
aggregate markers -> validation -> manifest -> warehouse -> LATEST.
Any failure before the manifest leaves nothing visible; a failure after it
leaves LATEST where it was.
"""
from __future__ import annotations

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

from jobs import faults, publish, validation
from jobs.plan import aggregates_root, make_plan
from jobs.warehouse import open_warehouse, registry_row
from pipelines import daily, storage
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
    method: str = "exact"
    rebuild_days: set = field(default_factory=set)
    move_latest: bool = True


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
    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def run(req: RunRequest, progress=print) -> RunResult:
    started = time.monotonic()
    cfg = Config.load(req.config_path)
    score_date = req.as_of + dt.timedelta(days=1)
    warehouse = open_warehouse(req.warehouse, req.output_root)  # validates the URI before any work
    plan, inputs = make_plan(req.as_of, req.input_root, req.output_root, cfg, method=req.method,
                             rebuild=req.rebuild_days)
    version = code_version()
    sources = _source_fingerprints(plan, inputs, req.output_root)
    fingerprint = run_fingerprint(score_date, cfg, version, sources)
    if not req.force:
        existing = publish.find_published(req.output_root, score_date, fingerprint)
        if existing:
            folder = publish.snapshot_dir_of(req.output_root, existing)
            progress(f"already published: {existing['snapshot_id']} has the same inputs, config and code "
                     f"(use --force to publish again)")
            return RunResult("already_published", existing, folder, seconds=time.monotonic() - started)

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
    checks = validation.check_snapshot(tables)
    failed = validation.failed(checks)
    if failed:
        _discard(plan, keep_dead_letters=True)
        raise RunFailed(f"validation failed ({', '.join(failed)}): nothing published")

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
        "beam_options": [a for a in req.beam_args if "key" not in a.lower() and "token" not in a.lower()],
    }
    # REPORT HOOK: the run report is written here, before the manifest, so the
    # manifest can list it with its sha256.
    manifest_uri = publish.write_manifest(plan.snapshot_dir, manifest)
    progress(f"manifest written: {manifest_uri}")
    faults.checkpoint("after_manifest")
    faults.checkpoint("before_warehouse")
    warehouse.publish(score_date, tables, registry_row(manifest, manifest_uri))
    progress(f"warehouse loaded: {warehouse.uri}")
    faults.checkpoint("after_warehouse")
    faults.checkpoint("before_pointer")
    moved = publish.move_latest(req.output_root, score_date, plan.snapshot_id) if req.move_latest else False
    faults.checkpoint("after_pointer")
    return RunResult("published", manifest, plan.snapshot_dir, moved, time.monotonic() - started, tables)


def _discard(plan: daily.RunPlan, keep_dead_letters: bool = True) -> None:
    """Remove what a failed run wrote, best effort (gc cleans what is left)."""
    for uri in [plan.snapshot_dir] + [bd.aggregate_dir for bd in plan.build_days]:
        try:
            storage.delete_tree(uri)
        except Exception as e:  # pragma: no cover - best effort
            log.warning("could not remove %s: %s", uri, e)
