"""Named stages of a run (and of a serving sync), where a fault-injection test
can kill the process.

`OASIS_KILL_AT=<stage>` makes the process SIGKILL itself when it reaches that
stage (the real CLI, no mock): the tests then check what a reader sees. Unset,
a checkpoint costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

# Each stage leaves a different state behind (a stage right before the next
# one's checkpoint would only repeat it, so there is none).
STAGES = (
    "aggregating",               # inside the Beam pipeline, while a day's events are aggregated
    "between_data_files",        # the first snapshot data file written, the others not yet
    "after_data",                # snapshot data files written, no manifest yet
    "after_manifest",            # manifest written, warehouse not loaded
    "in_warehouse_transaction",  # the warehouse transaction has replaced a table, not committed
    "after_warehouse",           # warehouse loaded, LATEST not moved
    "after_pointer",             # LATEST moved
)

# Stages of `oasis serving sync` (jobs.feature_store.sync), killed by its own tests.
SERVING_STAGES = (
    "serving_between_views",  # a new store with one feature view written of two
    "serving_store_built",    # every view written, the store not yet marked complete
    "serving_before_switch",  # the store complete, `current` not yet moved to it
)

# Stages of the snapshot lifecycle commands (jobs.snapshots.admin, .repair),
# for the crash tests of a rollback and a rebuild.
LIFECYCLE_STAGES = (
    "rollback_after_record",     # rollback records written, LATEST not moved
    "rollback_after_pointer",    # LATEST moved back, the warehouse not yet
    "rollback_after_warehouse",  # all done
    "rebuild_loading",           # a rebuild part-way through reloading snapshots
)


def checkpoint(stage: str | None) -> None:
    if stage is not None and os.environ.get("OASIS_KILL_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)
