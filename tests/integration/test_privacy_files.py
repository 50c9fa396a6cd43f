"""Privacy of the files that hold raw rows with user ids: dead letters and the
aggregation's spilled shards are readable by their owner only, the scratch
folder is not in the shared temporary folder's world-readable space, and gc
removes the dead letters of runs that published nothing once past retention.
On the previous main they were created with the umask (0644 files, 0755
folders, here), the scratch folders sat directly in /tmp, and gc kept a
failed run's dead letters forever."""
from __future__ import annotations

import datetime as dt
import glob
import io
import os
import stat
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

from jobs.cli import main as cli
from tests.support import invariants as inv
from tests.support.lifecycle import LOGS2, two_snapshots


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def oasis(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return two_snapshots(tmp_path_factory)


def test_dead_letters_of_a_real_run_are_owner_only(two):
    dead = glob.glob(os.path.join(two.out, "dead_letters", "run=*", "*.parquet"))
    assert dead  # the sample world has contract-breaking rows
    assert {mode(f) for f in dead} == {0o600}
    folders = {os.path.dirname(f) for f in dead} | {os.path.join(two.out, "dead_letters")}
    assert {mode(d) for d in folders} == {0o700}


def test_a_killed_runs_spilled_rows_are_private_and_out_of_the_shared_temporary_folder(two, tmp_path):
    """A run killed while it aggregates leaves its spill behind: it is in a 0700
    folder of this user's own inside the temporary folder, its files 0600."""
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir(mode=0o1777)
    out = two.copy(str(tmp_path / "out"))
    killed = inv.run_cli("run", "--date", LOGS2, "--input", two.world, "--output", out, "--force",
                         OASIS_KILL_AT="aggregating", TMPDIR=str(shared_tmp))
    assert killed.returncode == -9
    assert not [p for p in os.listdir(shared_tmp) if p.startswith("oasis-scratch-")]  # nothing loose in /tmp
    (private,) = [p for p in shared_tmp.iterdir() if p.name == f"oasis-{os.getuid()}"]
    assert mode(private) == 0o700
    spilled = glob.glob(str(private / "oasis-scratch-*" / "**" / "*.arrow"), recursive=True)
    assert spilled and {mode(f) for f in spilled} == {0o600}


def test_gc_removes_dead_letters_of_runs_that_published_nothing_past_retention(two, tmp_path):
    out = two.copy(str(tmp_path / "out"))
    root = os.path.join(out, "dead_letters")
    old = os.path.join(root, "run=20261001T000000Z-dead01")        # a failed run, two months ago
    fresh_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-f0f0f1"
    fresh = os.path.join(root, f"run={fresh_id}")                    # a failed run, just now
    for folder, age_days in ((old, 60), (fresh, 0)):
        os.makedirs(folder)
        path = os.path.join(folder, "part-00000.parquet")
        with open(path, "wb") as f:
            f.write(b"rows with user ids")
        t = time.time() - age_days * 86400
        for p in (path, folder):
            os.utime(p, (t, t))
    published = {os.path.join(root, f"run={m['snapshot_id']}") for m in (two.s1, two.s2)}

    code, text, _ = oasis("snapshots", "gc", "--keep", "5", "--dry-run", "--output", out)
    assert code == 0 and "would delete dead letters of run 20261001T000000Z-dead01" in text and os.path.exists(old)
    code, text, _ = oasis("snapshots", "gc", "--keep", "5", "--output", out)
    assert code == 0 and "1 unpublished run(s)' dead letters" in text
    assert not os.path.exists(old) and os.path.exists(fresh) and all(os.path.exists(p) for p in published)
    code, text, _ = oasis("snapshots", "gc", "--keep", "5", "--dead-letter-days", "0", "--output", out)
    assert not os.path.exists(fresh) and all(os.path.exists(p) for p in published)
