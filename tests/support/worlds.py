"""Small sample worlds for the end-to-end tests, generated once per session."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil

import pyarrow.parquet as pq

from jobs.cli import main as cli
from jobs.sample.generate import generate_world

END = dt.date(2026, 11, 24)


def make_world(root: str, **kw) -> str:
    args = dict(days=8, tracks=100, events_per_day=6000, seed=11, end_date=END, markets=3)
    args.update(kw)
    generate_world(root, progress=False, **args)
    return root


def copy_world(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def snapshot_dirs(out: str) -> list[str]:
    return sorted(os.path.dirname(m) for m in glob.glob(f"{out}/snapshots/score_date=*/*/_MANIFEST.json"))


def manifest(snapshot_dir: str) -> dict:
    with open(os.path.join(snapshot_dir, "_MANIFEST.json")) as f:
        return json.load(f)


def latest(out: str) -> str | None:
    try:
        with open(os.path.join(out, "snapshots", "LATEST")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def table(snapshot_dir: str, name: str):
    return pq.read_table(os.path.join(snapshot_dir, name)).to_pandas()


# A world longer than the signal window (28 days) and the pacing look-back (31 days):
# logs from LONG_END - 35 to LONG_END, monthly flights starting on the 1st. For the
# logs date LONG_END (score date Dec 31) the window is Dec 3..Dec 30, the look-back
# Nov 30..Dec 30 and the live flight started Dec 1: days inside the look-back but
# outside the window (Nov 30, Dec 1, Dec 2), one of them before the flight, and
# days outside both (Nov 25..29). No bad rows, so every raw row keeps the contract.
# Built once per session (tests/conftest.py, `long_world`).
LONG_END = dt.date(2026, 12, 30)
LONG_DAYS = 36


def make_long_world(root: str) -> tuple[str, str, str]:
    """(world, output root, snapshot folder): the world, published for LONG_END
    (every day of the look-back aggregated from raw)."""
    world = os.path.join(root, "world")
    generate_world(world, progress=False, days=LONG_DAYS, tracks=100, events_per_day=8000, seed=5,
                   end_date=LONG_END, markets=2, bad_row_share=0.0)
    out = os.path.join(root, "out")
    rc = cli.main(["run", "--date", LONG_END.isoformat(), "--input", world, "--output", out])
    assert rc == 0, f"the long world's run for {LONG_END} failed"
    (folder,) = snapshot_dirs(out)
    return world, out, folder
