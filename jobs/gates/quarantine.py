"""Quarantine: a would-be snapshot that failed a gate is moved out of the
snapshot tree to its quarantine folder (`jobs.layout.quarantine_dir`,
under `OUT/quarantine/`, dated by its score date), so nothing can serve
it, and kept there so it can be examined.

The folder holds the tables and the run report (`report.html`) as a published
snapshot would, and `_QUARANTINE.json`: the manifest the snapshot would have
had (readable with `jobs.manifest.Manifest.from_dict`, so `oasis snapshots
show`, `snapshots list` and `oasis explain --snapshot` read it, marked as
quarantined) plus `quarantined_at`, `failed_gates` and `files`.

An identical retry (same inputs, config, code and method: the same run
fingerprint) that fails again replaces the earlier quarantined copy instead of
piling up a copy per attempt. `oasis snapshots gc` removes quarantined
snapshots older than its `--quarantine-days`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from jobs import layout
from jobs.manifest import Manifest, ManifestError
from pipelines import storage
from pipelines.beam.pipeline import RunPlan

QUARANTINE_FIELDS = ("quarantined_at", "failed_gates", "files", "quarantined")


def _relative(uri: str, folder: str) -> str:
    if storage.is_gcs(folder):
        return uri[len(folder.rstrip("/")) + 1:]
    return os.path.relpath(uri, os.path.abspath(folder)).replace(os.sep, "/")


def quarantine(output_root: str, plan: RunPlan, manifest: Manifest) -> tuple[str, list[str]]:
    """Move the would-be snapshot's files (tables and report) from its
    unpublished, manifest-less folder to its quarantine folder, write
    `_QUARANTINE.json`, then remove earlier quarantined copies of the same run
    fingerprint. Returns (the folder, the copies it replaced). If the copy
    fails, the files stay where they were (no manifest: invisible to readers)
    and the error is raised."""
    target = layout.quarantine_dir(output_root, plan.score_date, plan.snapshot_id)
    files = storage.list_files(plan.snapshot_dir)
    for f in files:
        storage.write_bytes(storage.join(target, *_relative(f, plan.snapshot_dir).split("/")),
                            storage.read_bytes(f))
    doc = manifest.to_dict()
    doc.update({
        "quarantined": True,
        "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "failed_gates": [{k: r.to_dict()[k] for k in ("name", "measured", "threshold", "detail")}
                         for r in manifest.validation if r.blocking],
        "files": [_relative(f, plan.snapshot_dir) for f in files],
    })
    storage.write_bytes(storage.join(target, layout.QUARANTINE_RECORD),
                        json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    storage.delete_tree(plan.snapshot_dir)
    replaced = []
    for q in list_quarantined(output_root, plan.score_date):
        if q.manifest.run_fingerprint == manifest.run_fingerprint and q.manifest.snapshot_id != plan.snapshot_id:
            storage.delete_tree(q.folder)
            replaced.append(q.folder)
    return target, replaced


# ----------------------------------------------------------------- reading ---
@dataclass
class Quarantined:
    folder: str
    manifest: Manifest           # the manifest the snapshot would have had
    quarantined_at: dt.datetime | None
    failed_gates: list[str]

    @property
    def name(self) -> str:
        return layout.snapshot_rel(self.manifest.score_date, self.manifest.snapshot_id)


def read_quarantined(folder: str) -> Quarantined:
    """One quarantine folder's record; ManifestError when it cannot be read as one.
    (A record written before records were manifest-shaped reads too, with an
    empty run fingerprint and config.)"""
    uri = storage.join(folder, layout.QUARANTINE_RECORD)
    try:
        doc = json.loads(storage.read_bytes(uri).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{uri}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{uri}: must be a JSON object")
    fields = {k: v for k, v in doc.items() if k not in QUARANTINE_FIELDS}
    # a record written before records were manifest-shaped: what it lacks, from what it has
    fields.setdefault("created_at", doc.get("quarantined_at"))
    fields.setdefault("run_fingerprint", "")
    fields.setdefault("config", {})
    m = Manifest.from_dict(fields, uri)
    try:
        at = dt.datetime.fromisoformat(str(doc.get("quarantined_at")))
    except ValueError:
        at = None
    failed = [g.get("name", "?") for g in doc.get("failed_gates", []) if isinstance(g, dict)]
    return Quarantined(folder, m, at, failed)


def quarantine_folders(output_root: str, score_date: dt.date | None = None) -> list[tuple[dt.date, str]]:
    """(score date, folder) of every quarantine folder, oldest score date first."""
    root = layout.quarantine_root(output_root)
    out = []
    for name in sorted(storage.list_dirs(root)):
        day = layout.parse_score_date_dirname(name)
        if day is None or (score_date is not None and day != score_date):
            continue
        for sid in sorted(storage.list_dirs(storage.join(root, name))):
            out.append((day, layout.quarantine_dir(output_root, day, sid)))
    return out


def list_quarantined(output_root: str, score_date: dt.date | None = None,
                     problems: list[str] | None = None) -> list[Quarantined]:
    """Every readable quarantined would-be snapshot, by score date then creation
    time; unreadable records are described in `problems` when given."""
    found = []
    for _, folder in quarantine_folders(output_root, score_date):
        try:
            found.append(read_quarantined(folder))
        except (FileNotFoundError, ManifestError, OSError) as e:
            if problems is not None:
                problems.append(f"{folder}: {e}")
    return sorted(found, key=lambda q: q.manifest.order_key)


def find_quarantined(output_root: str, snapshot_id: str) -> Quarantined | None:
    for q in list_quarantined(output_root):
        if q.manifest.snapshot_id == snapshot_id:
            return q
    return None
