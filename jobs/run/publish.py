"""The one publish path, for `oasis run` and `oasis backfill` alike: a snapshot
whose manifest is written goes into the warehouse, then LATEST moves to it.

Local output roots serialise this step across processes (the publish lock,
`jobs.snapshots.store.publish_lock`, shared with rollback and repair), so two
writers never interleave their warehouse loads and pointer moves; on gs:// the
warehouse transaction and LATEST's generation precondition keep each step
whole. The warehouse load makes the snapshot current in its own transaction
when LATEST is going to move to it; if LATEST then does not (another writer
got there first), the warehouse follows LATEST before the lock is released.
A snapshot a rollback pulled is never published again from here.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass

import pyarrow as pa

from jobs import layout
from jobs.manifest import Manifest, ManifestError
from jobs.snapshots import pulls, repair, store
from jobs.warehouse.backends import open_warehouse
from jobs.warehouse.base import Warehouse, registry_row
from pipelines import faults, storage

PUBLISH_LOCK = store.PUBLISH_LOCK
PUBLISH_LOCK_WAIT_S = store.PUBLISH_LOCK_WAIT_S


def publish_lock(output_root: str, progress=lambda message: None, holder: str = ""):
    """The output root's publish lock (`jobs.snapshots.store.publish_lock`); a
    wait is announced through `progress`, naming the process that holds it."""
    return store.publish_lock(
        output_root, holder=holder,
        on_wait=lambda who, timeout_s: progress(f"waiting for the publish lock, held by {who} (the lock of "
                                                f"{output_root}; waiting up to {timeout_s:.0f} s)"))


@contextlib.contextmanager
def reserved(output_root: str, warehouse: Warehouse, progress=lambda message: None, holder: str = ""):
    """Wait for, then hold, what a publish needs: the publish lock, then the
    warehouse (a DuckDB file another process has open: an analyst's session,
    another run). Yields {"wait_publish_lock": s, "wait_warehouse": s}, the
    seconds waited, before the manifest is written, so the manifest can record
    them; `publish(..., locked=True)` then runs inside the block."""
    waits = {"wait_publish_lock": 0.0, "wait_warehouse": 0.0}
    with publish_lock(output_root, progress, holder) as lock:
        waits["wait_publish_lock"] = round(getattr(lock, "waited_s", 0.0), 3)
        announce(progress, "the publish lock", waits["wait_publish_lock"])
        hold = getattr(warehouse, "hold", None)
        with (hold(on_wait=lambda who: progress(
                f"waiting for the warehouse {warehouse.uri}: {who} has it open (an analyst's DuckDB session? "
                f"close it); waiting up to {getattr(warehouse, 'LOCK_WAIT_S', 0):.0f} s"))
              if hold else contextlib.nullcontext(0.0)) as waited:
            waits["wait_warehouse"] = round(waited, 3)
            announce(progress, f"the warehouse {warehouse.uri}", waited)
            yield waits


def announce(progress, what: str, seconds: float) -> None:
    if seconds >= WAIT_WORTH_SAYING_S:
        progress(f"waited {seconds:.1f} s for {what}")


WAIT_WORTH_SAYING_S = 0.5


@dataclass
class Published:
    manifest: Manifest
    folder: str
    latest_moved: bool
    superseded_by: tuple[str, Manifest] | None = None  # an identical snapshot another run published meanwhile


def publish(output_root: str, warehouse: Warehouse, folder: str, manifest: Manifest,
            tables: dict[str, pa.Table] | None = None, *, move_latest: bool = True,
            recheck: bool = False, progress=lambda message: None, locked: bool = False) -> Published:
    """Warehouse, then LATEST (forward only unless told), under the publish lock
    (already held by the caller when `locked`: inside `reserved`).

    recheck: if LATEST already serves a snapshot of this date made from the same
        run fingerprint (another run published it meanwhile), leave the
        warehouse and LATEST on that one."""
    tables = tables if tables is not None else store.read_snapshot_tables(folder, manifest)
    manifest_uri = storage.join(folder, layout.MANIFEST)
    holder = f"oasis publish of {layout.snapshot_rel(manifest.score_date, manifest.snapshot_id)}"
    with contextlib.nullcontext() if locked else reserved(output_root, warehouse, progress, holder):
        pulled = pulls.read_pulls(output_root).get(manifest.snapshot_id)
        if pulled is not None:  # a rollback withdrew it while this run was on its way here
            raise pulls.SnapshotPulled(f"not published: {pulls.describe(pulled)}")
        if recheck and move_latest:
            other = latest_same_run(output_root, manifest.score_date, manifest.run_fingerprint)
            if other and other[1].snapshot_id != manifest.snapshot_id:
                progress(f"{other[1].snapshot_id} with the same inputs, config and code was published "
                         f"meanwhile by another run; LATEST and the warehouse stay on it "
                         f"({manifest.snapshot_id} is complete but not published)")
                return Published(manifest, folder, False, superseded_by=other)
        will_move = move_latest and store.latest_would_move(output_root, manifest.score_date, manifest.snapshot_id)
        faults.checkpoint("before_warehouse")
        started = time.monotonic()
        warehouse.publish(manifest.score_date, tables, registry_row(manifest, manifest_uri), current=will_move)
        progress(f"warehouse loaded: {warehouse.uri} ({time.monotonic() - started:.1f} s)")
        faults.checkpoint("after_warehouse")
        moved = (store.move_latest(output_root, manifest.score_date, manifest.snapshot_id)
                 if move_latest else False)
        faults.checkpoint("after_pointer")
        if moved != will_move:  # LATEST went elsewhere meanwhile: the warehouse follows it
            for line in repair.follow_latest(output_root, warehouse):
                progress(line)
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
