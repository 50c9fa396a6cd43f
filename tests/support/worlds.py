"""Small sample worlds for the end-to-end tests, generated once per session."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil

import pyarrow.parquet as pq

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
