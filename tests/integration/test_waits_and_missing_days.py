"""Two things a data engineer meets in the first hour:

* Waiting is visible: a run that has to wait for the output root's publish
  lock (another run publishing) or for the DuckDB warehouse (an analyst's open
  session) says who it waits for, and the manifest's `seconds` records how
  long (`wait_publish_lock`, `wait_warehouse`). It used to wait 17 s in silence.
* A day whose engagement files hold 0 rows is a missing day: recorded in the
  manifest (`inputs.empty_days`, `inputs.missing_window_days`), and more than
  `max_missing_days` of them after the window's first day with logs fail the
  run (the logs day itself with 0 rows always does).
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from jobs.layout import snapshots_root
from jobs.run import daily, summary
from jobs.run.options import RunOptions
from jobs.run.publish import PUBLISH_LOCK
from tests.support import worlds

DAY = worlds.END


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                             markets=2)


@pytest.fixture(scope="module")
def lenient(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "lenient.toml"
    p.write_text("gate_min_eligible_share = 0.0\n")
    return str(p)


HOLDER = """
import os, sys, time
kind, path, release = sys.argv[1:4]
if kind == "duckdb":
    import duckdb
    held = duckdb.connect(path)
else:
    from pipelines.storage import local_lock
    held = local_lock(path, holder="held by the test").__enter__()
print("holding", flush=True)
while not os.path.exists(release):
    time.sleep(0.05)
"""


def hold(kind: str, path: str, release: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, kind, path, release], stdout=subprocess.PIPE, text=True,
                         cwd=str(worlds.__file__).rsplit("/tests/", 1)[0])
    assert p.stdout.readline().strip() == "holding"
    return p


def test_a_run_says_who_it_waits_for_and_records_how_long(world, lenient, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(snapshots_root(out))
    releases = {k: str(tmp_path / f"release-{k}") for k in ("lock", "duckdb")}
    lock_holder = hold("lock", os.path.join(snapshots_root(out), PUBLISH_LOCK), releases["lock"])
    db_holder = hold("duckdb", os.path.join(out, "warehouse.duckdb"), releases["duckdb"])
    said = []

    def progress(message: str) -> None:
        said.append(message)
        for kind, marker in (("lock", "waiting for the publish lock"), ("duckdb", "waiting for the warehouse")):
            if message.startswith(marker):
                time.sleep(1.0)  # a measurable wait, then the holder lets go
                open(releases[kind], "w").close()

    try:
        req = daily.RunRequest(as_of=DAY, input_root=world, output_root=out, config_path=lenient,
                               options=RunOptions())
        result = daily.run(req, progress=progress)
    finally:
        for r in releases.values():
            open(r, "w").close()
        lock_holder.wait(timeout=30)
        db_holder.wait(timeout=30)
    assert result.status == "published"
    text = "\n".join(said)
    assert f"held by pid {lock_holder.pid} on " in text and "(held by the test)" in text
    assert f"PID {db_holder.pid} (" in text and "has it open (an analyst's DuckDB session? close it)" in text
    assert "waited" in text and "for the publish lock" in text and "for the warehouse duckdb://" in text
    seconds = result.manifest.seconds
    assert seconds["wait_publish_lock"] >= 1.0 and seconds["wait_warehouse"] >= 1.0
    assert seconds["publish_wait"] >= seconds["wait_publish_lock"] + seconds["wait_warehouse"] - 0.1
    on_disk = worlds.manifest(result.snapshot_dir)["seconds"]
    assert on_disk["wait_warehouse"] == seconds["wait_warehouse"]
    printed = summary.render(result, "duckdb")
    assert f"waited:           {seconds['wait_publish_lock']:.1f} s for the publish lock, " in printed


def _empty(world: str, dst: str, days: list[dt.date]) -> str:
    w = worlds.copy_world(world, dst)
    for d in days:
        for f in glob.glob(f"{w}/engagement/dt={d.isoformat()}/*.parquet"):
            pq.write_table(pq.read_table(f).slice(0, 0), f)
    return w


def test_empty_engagement_days_are_missing_days_recorded_and_limited(world, lenient, tmp_path, capsys):
    two = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=3)]
    w = _empty(world, str(tmp_path / "w2"), two)
    out = str(tmp_path / "out2")
    assert cli.main(["run", "--date", DAY.isoformat(), "--input", w, "--output", out, "--config", lenient]) == 0
    (snap,) = worlds.snapshot_dirs(out)
    inputs = worlds.manifest(snap)["inputs"]
    assert inputs["empty_days"] == sorted(d.isoformat() for d in two)
    assert set(inputs["empty_days"]) <= set(inputs["missing_window_days"])
    assert not set(inputs["empty_days"]) & set(inputs["built_days"])
    capsys.readouterr()
    # a third empty day is more than max_missing_days (2): the run fails before any work, saying which days
    three = two + [DAY - dt.timedelta(days=1)]
    w3 = _empty(world, str(tmp_path / "w3"), three)
    out3 = str(tmp_path / "out3")
    assert cli.main(["run", "--date", DAY.isoformat(), "--input", w3, "--output", out3, "--config", lenient]) == 1
    err = capsys.readouterr().err
    assert "3 day(s) of the 28-day window" in err and "at most 2 may (config max_missing_days)" in err
    assert all(d.isoformat() in err for d in three) and "partitions with 0 rows" in err
    assert not os.path.exists(os.path.join(out3, "snapshots"))
    # ... unless the limit is raised knowingly
    more = tmp_path / "more.toml"
    more.write_text("gate_min_eligible_share = 0.0\nmax_missing_days = 3\n")
    assert cli.main(["run", "--date", DAY.isoformat(), "--input", w3, "--output", out3, "--config", str(more)]) == 0
