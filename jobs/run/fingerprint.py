"""What makes two runs the same: the code version and the run fingerprint
(score date, config, the run options that change content, the raw input
files of every day, built or reused, and the rows the previous score date's
snapshot pulled back, whose guardrail state the run carries on)."""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os

from jobs.run import aggregates
from jobs.run.options import RunOptions
from pipelines.beam.pipeline import RunPlan
from pipelines.config import Config

PACKAGES = ("schemas", "pipelines", "jobs")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_version() -> str:
    """Package version plus a hash of the package sources (works without git,
    e.g. on Dataflow workers)."""
    try:
        version = importlib.metadata.version("oasis-scores")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    h = hashlib.sha256()
    for pkg in PACKAGES:
        for root, _, files in sorted(os.walk(os.path.join(_ROOT, pkg))):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(root, f), "rb") as fh:
                        h.update(f.encode() + fh.read())
    return f"{version}+src.{h.hexdigest()[:12]}"


def source_fingerprints(plan: RunPlan, inputs: dict, output_root: str) -> dict[str, list[str]]:
    """Raw-input fingerprints per day, for built and stored days alike (a stored
    day's marker records the raw files it was built from), so a rerun that
    reuses aggregates has the same fingerprint as the run that built them."""
    by_day = {f"enrollments/{plan.as_of}": sorted(inputs["enrollments"].values())}
    for bd in plan.build_days:
        by_day[f"engagement/{bd.day}"] = sorted(inputs["engagement"][f] for f in bd.engagement_files)
        if bd.exposure_files:
            by_day[f"exposures/{bd.day}"] = sorted(inputs["exposures"][f] for f in bd.exposure_files)
    for sd in plan.stored_days:
        by_day[f"engagement/{sd.day}"] = sorted(aggregates.built_from(output_root, sd.day).values())
        exposures = aggregates.exposures_built_from(output_root, sd.day)
        if exposures:
            by_day[f"exposures/{sd.day}"] = sorted(exposures.values())
    previous = inputs.get("previous_snapshot")
    if previous and previous["pulled_back_rows"]:   # the guardrail's hysteresis state is an input
        by_day[f"pulled_back/{previous['score_date']}"] = [previous["pulled_back_sha256"]]
    if plan.previous is not None:  # its plan and serving gain shape this run's tables (by content, not by id)
        by_day[f"previous/{plan.previous.score_date}"] = sorted(f"{k}:{v}" for k, v in plan.previous.content.items())
    return by_day


def run_fingerprint(score_date: dt.date, cfg: Config, options: RunOptions, version: str, sources: dict) -> str:
    doc = {"score_date": score_date.isoformat(), "config": cfg.to_dict(), "options": options.fingerprint_part(),
           "code_version": version, "sources": {k: sorted(v) for k, v in sources.items()}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
