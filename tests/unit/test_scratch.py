"""Scratch folders: a run's own is removed when it ends; a killed run's is
removed by a later run once it is surely stale."""
from __future__ import annotations

import datetime as dt
import os
import tempfile

import pytest

from jobs import layout
from jobs.run import scratch
from pipelines import storage

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def _folder(root, name):
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, "dt=2026-11-25"))
    with open(os.path.join(path, "dt=2026-11-25", "part-00000-00000.arrow"), "wb") as f:
        f.write(b"rows with user ids")
    return path


def test_only_folders_of_runs_started_long_ago_are_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = scratch.prepare("out")
    old = _folder(parent, "oasis-scratch-20261126T045959Z-aaaaaa")      # 7 h before NOW
    recent = _folder(parent, "oasis-scratch-20261126T060100Z-bbbbbb")   # 5 h 59 min: may still run
    _folder(parent, "oasis-scratch-not-a-snapshot-id")
    _folder(parent, "something-else-20200101T000000Z-cccccc")
    assert layout.scratch_dir("out", "20261126T120000Z-dddddd") == os.path.join(
        parent, "oasis-scratch-20261126T120000Z-dddddd")
    assert scratch.stale_scratch("out", NOW) == [old]
    assert scratch.stale_scratch("out", NOW + dt.timedelta(minutes=2)) == [old, recent]


def test_a_run_removes_what_killed_runs_left(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = scratch.prepare(str(tmp_path / "out"))
    old = _folder(parent, "oasis-scratch-20200101T000000Z-aaaaaa")
    fresh_id = layout.new_snapshot_id()
    fresh = _folder(parent, f"oasis-scratch-{fresh_id}")
    scratch.remove_stale(str(tmp_path / "out"))
    assert not os.path.exists(old) and os.path.exists(fresh)


def test_the_scratch_folder_is_private_and_not_the_shared_temporary_folder(tmp_path, monkeypatch):
    """Privacy: spilled rows hold user ids. On main the scratch folders sat in the
    shared temporary folder itself, created with the umask (0755 here): any
    local user could read them. Now they live in an owner-only (0700) folder of
    this user's, a world-readable one is narrowed, and one that is a symlink
    (another user's trap) is refused."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = scratch.prepare("out")
    assert os.path.dirname(parent) == str(tmp_path) and parent != str(tmp_path)
    assert os.stat(parent).st_mode & 0o777 == 0o700
    assert os.path.dirname(layout.scratch_dir("out", "20261126T120000Z-dddddd")) == parent
    os.chmod(parent, 0o755)
    scratch.prepare("out")
    assert os.stat(parent).st_mode & 0o777 == 0o700
    os.rmdir(parent)
    os.symlink(str(tmp_path / "elsewhere"), parent)
    with pytest.raises(storage.StorageError, match="not this user's own private folder"):
        scratch.prepare("out")


def test_spilled_and_dead_letter_files_are_owner_only(tmp_path):
    """`open_output(..., private=True)`, which the spill and the dead letters
    use, creates the file 0600 in a 0700 folder whatever the umask."""
    old = os.umask(0o022)
    try:
        uri = str(tmp_path / "dead_letters" / "run=x" / "part-00000.parquet")
        with storage.open_output(uri, private=True) as f:
            f.write(b"raw row with a user id")
    finally:
        os.umask(old)
    assert os.stat(uri).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(uri)).st_mode & 0o777 == 0o700
