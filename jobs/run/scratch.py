"""A run's scratch folder: the aggregation's spilled shards (raw rows, user ids
included). The run removes its own when it ends; a killed run's folder is
removed by a later run once it is older than STALE_SCRATCH."""
from __future__ import annotations

import datetime as dt
import logging

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
