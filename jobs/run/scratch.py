"""A run's scratch folder: the aggregation's spilled shards (raw rows, user ids
included). Locally it lives in a folder of this user's own in the temporary
folder (`prepare` makes it 0700 and refuses one owned by someone else or that
is a symlink), never in the shared, world-readable temporary folder itself;
its files are created 0600. The run removes its own when it ends; a killed
run's folder is removed by a later run once it is older than STALE_SCRATCH."""
from __future__ import annotations

import datetime as dt
import logging
import os
import stat

from jobs import layout
from pipelines import storage

log = logging.getLogger(__name__)

STALE_SCRATCH = dt.timedelta(hours=6)  # far longer than any run: an older folder's run is gone


def stale_scratch(output_root: str, now: dt.datetime | None = None) -> list[str]:
    """Scratch folders left by runs that were killed (a finished or failed run
    removes its own), dated by the snapshot id in their name."""
    now = now or dt.datetime.now(dt.timezone.utc)
    parent = layout.scratch_parent(output_root)
    stale = []
    for name in storage.list_dirs(parent):
        snapshot_id = layout.scratch_snapshot_id(output_root, name)
        started = layout.snapshot_id_time(snapshot_id) if snapshot_id else None
        if started is not None and now - started > STALE_SCRATCH:
            stale.append(storage.join(parent, name))
    return sorted(stale)


def prepare(output_root: str) -> str:
    """Create (or check) the private scratch parent of a local output; returns it.
    StorageError when it cannot be made private."""
    parent = layout.scratch_parent(output_root)
    if storage.is_gcs(output_root):
        return parent
    with storage.translated(parent):
        try:
            os.mkdir(parent, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(parent)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise storage.StorageError(
                f"the scratch folder {parent} is not this user's own private folder (a symlink, a file, or "
                "owned by another user); remove it or point TMPDIR at a folder of your own")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(parent, 0o700)
    return parent


def remove(uri: str) -> None:
    """Best effort: a folder that cannot be removed now is removed by a later run."""
    try:
        storage.delete_tree(uri)
    except Exception as e:  # noqa: BLE001 - cleanup must not mask the run's own outcome
        log.warning("could not remove the scratch folder %s: %s", uri, e)


def remove_stale(output_root: str) -> None:
    try:
        stale = stale_scratch(output_root)
    except Exception as e:  # noqa: BLE001 - best effort
        log.warning("could not list scratch folders: %s", e)
        return
    for uri in stale:
        remove(uri)
        log.info("removed the scratch folder of a killed run: %s", uri)
