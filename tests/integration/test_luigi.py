"""The Luigi tasks end to end with the local scheduler: in-process with
`luigi.build`, and through the `luigi` command line with `RangeDaily` exactly
as the README shows it."""
from __future__ import annotations

import datetime as dt
import glob
import os
import subprocess
import sys
from pathlib import Path

import luigi
import pytest

from jobs.feature_store import repository
from jobs.luigi_tasks import DailyScores, InputPartition, ServingSync
from tests.support import worlds

ROOT = Path(__file__).resolve().parents[2]
LUIGI = str(Path(sys.executable).with_name("luigi"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                             markets=2)


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """DailyScores for logs up to 2026-11-24, run by luigi.build with the local scheduler."""
    out = str(tmp_path_factory.mktemp("out"))
    task = DailyScores(date=dt.date(2026, 11, 24), input_root=world, output_root=out)
    before = task.complete()
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    return out, task, before, result


def manifests(out):
    return {worlds.manifest(d)["score_date"]: worlds.manifest(d) for d in worlds.snapshot_dirs(out)}


def test_daily_task_runs_and_is_complete_afterwards(built):
    out, task, before, result = built
    assert before is False
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert result.scheduling_succeeded
    assert task.complete()
    (m,) = manifests(out).values()
    assert m["score_date"] == "2026-11-25" and m["as_of"] == "2026-11-24"
    assert worlds.latest(out) == f"score_date=2026-11-25/{m['snapshot_id']}"
    # its requirements are the day's two input partitions
    req = task.requires()
    assert {t.table for t in req.values()} == {"enrollments", "engagement"}
    assert all(isinstance(t, InputPartition) and t.date == task.date and t.complete() for t in req.values())
    # a new instance (a later scheduler run) sees the published snapshot and does nothing
    again = luigi.build([DailyScores(date=dt.date(2026, 11, 24), input_root=task.input_root, output_root=out)],
                        local_scheduler=True, detailed_summary=True)
    assert again.status == luigi.LuigiStatusCode.SUCCESS and "complete ones were encountered" in again.summary_text
    assert len(worlds.snapshot_dirs(out)) == 1


def test_serving_sync_runs_after_daily_scores(built, world):
    """ServingSync requires DailyScores (already complete here) and puts the
    snapshot LATEST points to into the online store; then it is complete."""
    out, task, _, _ = built
    sync = ServingSync(date=task.date, input_root=world, output_root=out, today="2026-11-25")
    assert sync.requires() == task and not sync.complete()
    result = luigi.build([sync], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    state = repository.current_state(os.path.join(out, "feature_repo"))
    assert f"score_date=2026-11-25/{state['snapshot_id']}" == worlds.latest(out)
    assert state["rows"]["promotion_scores"] > 0 and sync.complete()


def test_missing_input_partition_is_a_missing_dependency_and_nothing_runs(world, tmp_path):
    out = str(tmp_path / "out")
    task = DailyScores(date=dt.date(2026, 11, 25), input_root=world, output_root=out)  # no such partitions
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.LuigiStatusCode.MISSING_EXT, result.summary_text
    assert not task.complete() and not os.path.exists(os.path.join(out, "snapshots"))
    # from the command line, with the exit code a scheduler needs (luigi's default would be 0)
    cmd = [LUIGI, "--module", "jobs.luigi_tasks", "DailyScores", "--date", "2026-11-25", "--input-root", world,
           "--output-root", out, "--local-scheduler", "--retcode-missing-data", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "InputPartition(root=" in proc.stderr and "table=engagement, date=2026-11-25" in proc.stderr
    assert not os.path.exists(os.path.join(out, "snapshots"))


def test_range_daily_from_the_luigi_command_line(built, world):
    out, _, _, _ = built
    first = manifests(out)["2026-11-25"]
    # 11-24 is already complete (one bulk listing says so); 11-23 runs; --stop is exclusive
    cmd = [LUIGI, "--module", "jobs.luigi_tasks", "RangeDaily", "--of", "DailyScores",
           "--start", "2026-11-23", "--stop", "2026-11-25", "--days-back", "400", "--local-scheduler",
           "--DailyScores-input-root", world, "--DailyScores-output-root", out,
           "--retcode-task-failed", "1", "--retcode-missing-data", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "This progress looks :)" in proc.stderr
    ms = manifests(out)
    assert sorted(ms) == ["2026-11-24", "2026-11-25"]
    assert ms["2026-11-25"]["snapshot_id"] == first["snapshot_id"]  # not run again
    assert ms["2026-11-24"]["as_of"] == "2026-11-23"
    # an older date never moves LATEST back
    assert worlds.latest(out) == f"score_date=2026-11-25/{first['snapshot_id']}"
    # bulk_complete as RangeDaily calls it (with a callable that carries the other parameters)
    done = DailyScores.bulk_complete.__func__(
        lambda d: DailyScores(date=d, input_root=world, output_root=out),
        [dt.date(2026, 11, 22), dt.date(2026, 11, 23), dt.date(2026, 11, 24)])
    assert done == [dt.date(2026, 11, 23), dt.date(2026, 11, 24)]


def test_skip_gate_is_a_task_parameter_and_luigi_prints_each_line_once(world, tmp_path):
    """The gate-failure advice names the Luigi parameter, which works; and
    Luigi's own lines are no longer printed twice (Beam's logging.basicConfig()
    used to give the root logger a second handler)."""
    out = str(tmp_path / "out")
    strict = tmp_path / "strict.toml"
    strict.write_text("gate_min_capacity_use = 0.99\n")  # no day of this world uses 99% of its capacity
    base = [LUIGI, "--module", "jobs.luigi_tasks", "DailyScores", "--date", "2026-11-23", "--input-root", world,
            "--output-root", out, "--config", str(strict), "--local-scheduler", "--retcode-task-failed", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(base, capture_output=True, text=True, timeout=600, cwd=str(ROOT), env=env)
    assert proc.returncode == 1
    assert ("after checking by hand, rerun the task with the same parameters and --skip-gate capacity_use"
            in proc.stderr)
    assert "INFO:luigi-interface:" not in proc.stderr and "DEBUG:luigi-interface:" not in proc.stderr
    assert proc.stderr.count("Traceback (most recent call last)") == 1
    assert not manifests(out)  # nothing published; the would-be snapshot is in quarantine
    assert glob.glob(os.path.join(out, "quarantine", "score_date=2026-11-24", "*", "_QUARANTINE.json"))
    proc = subprocess.run(base + ["--skip-gate", "capacity_use"], capture_output=True, text=True, timeout=600,
                          cwd=str(ROOT), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = manifests(out).values()
    gate = {g["name"]: g for g in m["validation"]}["capacity_use"]
    assert gate["skipped"] and not gate["passed"] and m["options"]["skip_gates"] == ["capacity_use"]
