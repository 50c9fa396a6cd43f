"""Scratch folders: a run's own is removed when it ends; a killed run's is
removed by a later run once it is surely stale."""
from __future__ import annotations

import datetime as dt
import os
import tempfile

from jobs import layout
from jobs.run import scratch

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def _folder(root, name):
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, "dt=2026-11-25"))
    with open(os.path.join(path, "dt=2026-11-25", "part-00000-00000.arrow"), "wb") as f:
        f.write(b"rows with user ids")
    return path


def test_only_folders_of_runs_started_long_ago_are_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = _folder(tmp_path, "oasis-scratch-20261126T045959Z-aaaaaa")      # 7 h before NOW
    recent = _folder(tmp_path, "oasis-scratch-20261126T060100Z-bbbbbb")   # 5 h 59 min: may still run
    _folder(tmp_path, "oasis-scratch-not-a-snapshot-id")
    _folder(tmp_path, "something-else-20200101T000000Z-cccccc")
    assert layout.scratch_dir("out", "20261126T120000Z-dddddd") == str(tmp_path / "oasis-scratch-20261126T120000Z-dddddd")
    assert scratch.stale_scratch("out", NOW) == [old]
    assert scratch.stale_scratch("out", NOW + dt.timedelta(minutes=2)) == [old, recent]


def test_a_run_removes_what_killed_runs_left(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = _folder(tmp_path, "oasis-scratch-20200101T000000Z-aaaaaa")
    fresh_id = layout.new_snapshot_id()
    fresh = _folder(tmp_path, f"oasis-scratch-{fresh_id}")
    scratch.remove_stale(str(tmp_path / "out"))
    assert not os.path.exists(old) and os.path.exists(fresh)
