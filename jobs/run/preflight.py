"""What a run checks before its pipeline starts, so a problem that can be
found in a second is not found after the whole pipeline has run (on Dataflow,
after a paid job):

* the output root is a folder (or a bucket prefix) this process can write:
  a probe file is written and removed (a file where the folder belongs, a
  read-only mount, missing permissions or credentials fail here);
* there is room: at least MIN_FREE_BYTES on the output's filesystem, and room
  for the aggregation's spill in the scratch folder (about SPILL_BYTES_PER_ROW
  per raw event to aggregate);
* the warehouse can be used (`Warehouse.check`): BigQuery credentials and an
  answer from the dataset; a DuckDB file that is a database. A DuckDB file
  another process holds, and a publish lock another run holds, are not errors:
  the run says who holds them and how long its publish will wait.
"""
from __future__ import annotations

import os
import uuid

from jobs import layout
from jobs.snapshots import store
from jobs.warehouse.base import Warehouse
from pipelines import storage
from pipelines.errors import OasisError

MIN_FREE_BYTES = 64 * 2**20
# Spilled promotion-surface rows, uncompressed Arrow IPC: measured 8.6 MB per
# 262,144-row batch (33 bytes a row); 40 leaves room for long ids.
SPILL_BYTES_PER_ROW = 40


class PreflightError(OasisError):
    """A run that cannot succeed, found before its pipeline started."""


def check_output(output_root: str) -> None:
    """The output root is a writable folder (or gs:// prefix); PreflightError naming it otherwise."""
    probe_name = f".oasis-preflight-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if storage.is_gcs(output_root):
        probe = storage.join(output_root, "_preflight", probe_name)
        try:
            storage.write_bytes(probe, b"probe")
            storage.delete_file(probe)
        except Exception as e:  # noqa: BLE001 - any refusal (credentials, permission, no bucket) is the answer
            raise PreflightError(f"cannot write to the output root {output_root}: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}") from None
        return
    try:
        storage.require_folder(output_root, "output root")
        for folder in (output_root, layout.snapshots_root(output_root)):
            if folder != output_root and not os.path.isdir(folder):
                continue
            storage.require_folder(folder, "folder")
            probe = os.path.join(folder, probe_name)
            with storage.translated(folder):
                os.makedirs(folder, exist_ok=True)
                with open(probe, "wb") as f:
                    f.write(b"probe")
                os.unlink(probe)
    except OasisError as e:
        raise PreflightError(f"the output root {output_root} cannot be written: {e}") from None


def check_space(output_root: str, scratch_parent: str, rows_to_aggregate: int) -> None:
    """Enough free space for the outputs and the spill, or PreflightError."""
    needs = {}
    for path, need in ((output_root, MIN_FREE_BYTES),
                       (scratch_parent, MIN_FREE_BYTES + SPILL_BYTES_PER_ROW * rows_to_aggregate)):
        free = storage.free_bytes(path)
        if free is None:
            continue
        device = _device(path)
        have, total = needs.get(device, (free, 0))
        needs[device] = (have, total + need)
        if total + need > have:
            raise PreflightError(
                f"only {have / 2**20:,.0f} MB free on the filesystem of {path}; this run needs about "
                f"{(total + need) / 2**20:,.0f} MB there (outputs, and the aggregation's spill of "
                f"{rows_to_aggregate:,} events in {scratch_parent}); free some space (or point TMPDIR "
                "elsewhere) and rerun")


def _device(path: str) -> int:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.stat(path).st_dev


def check_warehouse(warehouse: Warehouse, progress) -> None:
    """The warehouse can be used (raises WarehouseError otherwise); says who holds it."""
    for note in warehouse.check():
        progress(note)


def check_publish_lock(output_root: str, progress) -> None:
    if storage.is_gcs(output_root):
        return
    holder = storage.lock_holder(store.publish_lock_path(output_root))
    if holder:
        progress(f"the publish lock of {output_root} is held by {holder}; this run's publish will wait up to "
                 f"{store.PUBLISH_LOCK_WAIT_S:.0f} s for it")
