"""Named stages of a run, where a fault-injection test can kill the process.

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


def checkpoint(stage: str | None) -> None:
    if stage is not None and os.environ.get("OASIS_KILL_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)
