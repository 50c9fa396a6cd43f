"""Stored daily aggregates written by older code (format 1: only that day's
enrolled tracks, no promoted skips or saves, no format version in _SUCCESS.json)
are rebuilt from their raw day when it still exists, and read as they are,
recorded in the manifest, when it does not."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from tests.support import worlds

DAY = worlds.END
PREV = DAY - dt.timedelta(days=1)
OLD_DAY = DAY - dt.timedelta(days=3)


def run(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli.main(["run", *args])


def _aggregates(out: str, day: dt.date) -> tuple[str, dict]:
    root = os.path.join(out, "aggregates", f"dt={day}")
    build = open(os.path.join(root, "_SUCCESS")).read().strip()
    return os.path.join(root, build), json.load(open(os.path.join(root, "_SUCCESS.json")))


def _downgrade(out: str, world: str, day: dt.date) -> int:
    """Rewrite a stored day as format-1 code wrote it; returns its rows."""
    folder, detail = _aggregates(out, day)
    export = pq.read_table(os.path.join(world, "enrollments", f"dt={day}")).column("track_id")
    rows = 0
    for f in sorted(os.listdir(os.path.join(folder, "tracks"))):
        path = os.path.join(folder, "tracks", f)
        t = pq.read_table(path).drop_columns(["promoted_skips", "promoted_saves"])
        t = t.filter(pc.is_in(t.column("track_id"), value_set=pc.unique(export)))
        pq.write_table(t, path)
        rows += t.num_rows
    detail.pop("format_version")
    with open(os.path.join(out, "aggregates", f"dt={day}", "_SUCCESS.json"), "w") as fh:
        json.dump(detail, fh)
    return rows


@pytest.fixture(scope="module")
def older(tmp_path_factory):
    """An output root whose aggregates of OLD_DAY are format 1, its next day published."""
    root = tmp_path_factory.mktemp("format")
    world = worlds.make_world(str(root / "world"), days=6, tracks=60, events_per_day=3000, markets=2)
    out = str(root / "out")
    assert run("--date", PREV.isoformat(), "--input", world, "--output", out) == 0
    old_rows = _downgrade(out, world, OLD_DAY)
    return world, out, old_rows


def test_a_format_1_day_is_rebuilt_from_its_raw_partition(older, tmp_path):
    world, base, old_rows = older
    out = str(tmp_path / "out")
    shutil.copytree(base, out)
    assert run("--date", DAY.isoformat(), "--input", world, "--output", out) == 0
    (snap,) = [d for d in worlds.snapshot_dirs(out) if f"score_date={DAY + dt.timedelta(days=1)}" in d]
    m = worlds.manifest(snap)
    assert OLD_DAY.isoformat() in m["inputs"]["built_days"] and not m["inputs"]["legacy_aggregate_days"]
    assert m["aggregate_format_version"] == 2
    folder, detail = _aggregates(out, OLD_DAY)
    assert detail["format_version"] == 2
    t = pq.read_table(os.path.join(folder, "tracks"))
    assert {"promoted_skips", "promoted_saves"} <= set(t.column_names)
    assert t.num_rows > old_rows                      # every track again, not only the enrolled ones


def test_a_format_1_day_without_its_raw_partition_is_read_as_it_is(older, tmp_path):
    world, base, _ = older
    out, w = str(tmp_path / "out"), str(tmp_path / "world")
    shutil.copytree(base, out)
    shutil.copytree(world, w)
    shutil.rmtree(os.path.join(w, "engagement", f"dt={OLD_DAY}"))
    assert run("--date", DAY.isoformat(), "--input", w, "--output", out) == 0
    (snap,) = [d for d in worlds.snapshot_dirs(out) if f"score_date={DAY + dt.timedelta(days=1)}" in d]
    m = worlds.manifest(snap)
    assert m["inputs"]["legacy_aggregate_days"] == [OLD_DAY.isoformat()]
    assert OLD_DAY.isoformat() in m["inputs"]["stored_days"]
    scores = worlds.table(snap, "promotion_scores")
    # its plays count; its promoted skips are unknown and do not (they read as nulls, not zeros)
    assert scores["plays"].sum() > 0 and scores["promoted_dislike_probability"].notna().any()
    assert _aggregates(out, OLD_DAY)[1].get("format_version") is None   # left as it was
