"""The one publish path, for `oasis run` and `oasis backfill` alike: a snapshot
whose manifest is written goes into the warehouse, then LATEST moves to it.

Local output roots serialise this step across processes (`publish_lock`), so
two runs never interleave their warehouse loads and pointer moves; on gs://
the warehouse transaction and LATEST's generation precondition keep it whole.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from jobs import layout
from jobs.manifest import Manifest, ManifestError
from jobs.snapshots import store
from jobs.warehouse.backends import open_warehouse
from jobs.warehouse.base import Warehouse, registry_row
from pipelines import faults, storage

PUBLISH_LOCK = ".publish.lock"
PUBLISH_LOCK_WAIT_S = 600.0


def publish_lock(output_root: str):
    """Cross-process lock of a local output root's publish step (crash-safe:
    released by the kernel if the holder dies)."""
    if storage.is_gcs(output_root):
        return contextlib.nullcontext()
    return storage.local_lock(storage.join(layout.snapshots_root(output_root), PUBLISH_LOCK),
                              timeout_s=PUBLISH_LOCK_WAIT_S)


@dataclass
class Published:
    manifest: Manifest
    folder: str
    latest_moved: bool
    superseded_by: tuple[str, Manifest] | None = None  # an identical snapshot another run published meanwhile


def publish(output_root: str, warehouse: Warehouse, folder: str, manifest: Manifest,
            tables: dict[str, pa.Table] | None = None, *, move_latest: bool = True,
            recheck: bool = False, progress=lambda message: None) -> Published:
    """Warehouse, then LATEST (forward only unless told), under the publish lock.

    recheck: if LATEST already serves a snapshot of this date made from the same
        run fingerprint (another run published it meanwhile), leave the
        warehouse and LATEST on that one."""
    tables = tables if tables is not None else store.read_snapshot_tables(folder, manifest)
    manifest_uri = storage.join(folder, layout.MANIFEST)
    with publish_lock(output_root):
        if recheck and move_latest:
            other = latest_same_run(output_root, manifest.score_date, manifest.run_fingerprint)
            if other and other[1].snapshot_id != manifest.snapshot_id:
                progress(f"{other[1].snapshot_id} with the same inputs, config and code was published "
                         f"meanwhile by another run; LATEST and the warehouse stay on it "
                         f"({manifest.snapshot_id} is complete but not published)")
                return Published(manifest, folder, False, superseded_by=other)
        warehouse.publish(manifest.score_date, tables, registry_row(manifest, manifest_uri))
        progress(f"warehouse loaded: {warehouse.uri}")
        faults.checkpoint("after_warehouse")
        moved = (store.move_latest(output_root, manifest.score_date, manifest.snapshot_id)
                 if move_latest else False)
        faults.checkpoint("after_pointer")
    return Published(manifest, folder, moved)


def publish_written(output_root: str, warehouse_uri: str | None, manifest: Manifest) -> bool:
    """Publish a snapshot another process wrote (a backfill worker's); returns
    whether LATEST now points to it."""
    folder = store.snapshot_dir_of(output_root, manifest)
    return publish(output_root, open_warehouse(warehouse_uri, output_root), folder, manifest).latest_moved


def latest_same_run(output_root: str, score_date: dt.date, fingerprint: str) -> tuple[str, Manifest] | None:
    """(folder, manifest) of LATEST's snapshot if it is of `score_date` with the
    same run fingerprint, else None."""
    target = store.latest_target(output_root)
    if target is None or target[0] != score_date:
        return None
    folder = layout.snapshot_dir(output_root, *target)
    try:
        m = store.read_manifest(folder)
    except (FileNotFoundError, ManifestError):
        return None
    return (folder, m) if m.run_fingerprint == fingerprint else None


def latest_covers(output_root: str, score_date: dt.date, fingerprint: str) -> bool:
    """LATEST already serves this run's result: it points to a newer score date
    (a backfill never moves it back) or to a snapshot of this date with the same
    run fingerprint."""
    target = store.latest_target(output_root)
    if target is not None and target[0] > score_date:
        return True
    return latest_same_run(output_root, score_date, fingerprint) is not None
