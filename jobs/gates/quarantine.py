"""Quarantine: a would-be snapshot that failed a gate is moved out of the
snapshot tree to its quarantine folder (`jobs.layout.quarantine_dir`) with a
`_QUARANTINE.json` that records the failed gates, so it can be examined and
nothing can serve it."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os

from jobs import layout
from jobs.manifest import GateResult, TableEntry
from pipelines import storage
from pipelines.beam.pipeline import RunPlan


def _relative(uri: str, folder: str) -> str:
    if storage.is_gcs(folder):
        return uri[len(folder.rstrip("/")) + 1:]
    return os.path.relpath(uri, os.path.abspath(folder)).replace(os.sep, "/")


def quarantine(output_root: str, plan: RunPlan, results: list[GateResult], tables: dict[str, TableEntry]) -> str:
    """Move the would-be snapshot's files from its (unpublished, manifest-less)
    folder to its quarantine folder (`jobs.layout.quarantine_dir`), then write
    `_QUARANTINE.json` (the failed gates and every result). Returns the folder.
    If the copy fails, the files stay where they were (no manifest: invisible to
    readers) and the error is raised."""
    target = layout.quarantine_dir(output_root, plan.score_date, plan.snapshot_id)
    files = storage.list_files(plan.snapshot_dir)
    for f in files:
        storage.write_bytes(storage.join(target, *_relative(f, plan.snapshot_dir).split("/")),
                            storage.read_bytes(f))
    doc = {
        "snapshot_id": plan.snapshot_id,
        "score_date": plan.score_date.isoformat(),
        "as_of": plan.as_of.isoformat(),
        "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "failed_gates": [{k: r.to_dict()[k] for k in ("name", "measured", "threshold", "detail")}
                         for r in results if r.blocking],
        "validation": [r.to_dict() for r in results],
        "tables": {name: dataclasses.asdict(t) for name, t in tables.items()},
        "dead_letters": plan.dead_letter_dir,
        "files": [_relative(f, plan.snapshot_dir) for f in files],
    }
    storage.write_bytes(storage.join(target, layout.QUARANTINE_RECORD),
                        json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    storage.delete_tree(plan.snapshot_dir)
    return target
