"""The snapshot lifecycle as an operator lives it: a rollback that holds, a
warehouse that follows it, a split left by a failure that the next run or
`oasis snapshots repair` mends (saying what it did), a warehouse rebuilt from
the snapshot files. Each test is the failure a user met on the previous main
(its docstring names the class and what happened there).

World: S1 (logs 2026-11-23, score date 11-24) and S2 (logs 11-24, score date
11-25), published once per session (`tests.support.lifecycle`); each test
works on its own copy.
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import shutil

import luigi
import pyarrow.parquet as pq
import pytest

from jobs.luigi_tasks import DailyScores
from jobs.warehouse.duckdb import DuckDBWarehouse
from tests.support import invariants as inv
from tests.support import worlds
from tests.support.lifecycle import (
    LOGS1,
    LOGS2,
    agreement_problems,
    current,
    oasis,
    two_snapshots,
    warehouse,
)


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    two = two_snapshots(tmp_path_factory)
    return two.world, two.out, two.s1, two.s2


@pytest.fixture
def out(base, tmp_path):
    dst = str(tmp_path / "out")
    shutil.copytree(base[1], dst)
    return dst


def rel(m) -> str:
    return inv.target(m["score_date"], m["snapshot_id"])


# ------------------------------------------------------------ the rollback ---
def test_a_rerun_after_a_rollback_does_not_serve_the_pulled_snapshot(base, out):
    """Lost decision: on main, `oasis run` of the same date with the same inputs
    after `rollback --to S1` said "finishing the publish of S2", moved LATEST
    back to S2 and exited 0. Now the rollback's record holds against a rerun
    and --force; only --republish serves S2 again (the same snapshot)."""
    world, _, s1, s2 = base
    code, text, err = oasis("snapshots", "rollback", "--to", s1["snapshot_id"], "--output", out)
    assert code == 0, err
    assert f"pulled 1 newer snapshot(s): {s2['snapshot_id']}" in text
    for extra in ([], ["--force"]):
        code, _, err = oasis("run", "--date", LOGS2, "--input", world, "--output", out, *extra)
        line = one_error_line(err, "oasis run")
        assert code == 1 and f"{s2['snapshot_id']} was pulled" in line and "--republish" in line, err
        assert inv.latest(out) == rel(s1)
        assert not agreement_problems(out)
    assert len(worlds.snapshot_dirs(out)) == 2  # nothing new was written

    code, text, err = oasis("run", "--date", LOGS2, "--input", world, "--output", out, "--republish")
    assert code == 0, err
    assert inv.latest(out) == rel(s2) and len(worlds.snapshot_dirs(out)) == 2  # S2 itself, served again
    assert not agreement_problems(out)


def test_the_warehouse_follows_a_rollback_both_ways(base, out):
    """Lost decision: on main the *_latest views kept showing the rolled-back
    snapshot while LATEST and the serving reader showed S1. Now the registry
    marks the current snapshot, a rollback moves it in one transaction, and a
    pulled snapshot's rows leave the tables (and come back on a roll forward)."""
    _, _, s1, s2 = base
    assert current(out) == [s2["snapshot_id"]]
    assert oasis("snapshots", "rollback", "--to", s1["snapshot_id"], "--output", out)[0] == 0
    assert not agreement_problems(out)
    assert current(out) == [s1["snapshot_id"]]
    assert warehouse(out, "SELECT count(*) FROM promotion_scores WHERE snapshot_id = ?", [s2["snapshot_id"]]) == [(0,)]
    (pulled_at,), = warehouse(out, "SELECT pulled_at FROM snapshots WHERE snapshot_id = ?", [s2["snapshot_id"]])
    assert pulled_at is not None
    code, text, _ = oasis("snapshots", "list", "--output", out)
    assert code == 0 and [line for line in text.splitlines() if s2["snapshot_id"] in line][0].rstrip().endswith(")")
    assert "PULLED" in text

    t = pq.read_table(glob.glob(os.path.join(out, "snapshots", f"score_date={s2['score_date']}", s2["snapshot_id"],
                                             "promotion_scores", "*.parquet"))[0]).to_pylist()[0]
    code, text, err = oasis("explain", "--date", s2["score_date"], "--track", t["track_id"], "--market", t["market"],
                            "--output", out)
    assert code == 0 and "PULLED by a rollback" in text, err

    code, text, err = oasis("snapshots", "rollback", "--to", s2["snapshot_id"], "--output", out)
    assert code == 0, err
    assert f"served again (its rollback record lifted): {s2['snapshot_id']}" in text
    assert not agreement_problems(out) and current(out) == [s2["snapshot_id"]]
    assert warehouse(out, "SELECT count(*) FROM promotion_scores WHERE snapshot_id = ?", [s2["snapshot_id"]]) \
        == [(s2["tables"]["promotion_scores"]["rows"],)]


def test_backfill_and_the_luigi_task_respect_a_rollback(base, out):
    """Lost decision: a scheduled retry (Luigi) or a backfill over the date must
    not re-serve a pulled snapshot either; on main Luigi called the date done
    and a backfill republished it. Now the task is not complete, its run fails
    naming the rollback, and LATEST stays on S1."""
    world, _, s1, s2 = base
    assert oasis("snapshots", "rollback", "--to", s1["snapshot_id"], "--output", out)[0] == 0
    code, text, err = oasis("backfill", "--start", LOGS2, "--end", LOGS2, "--input", world, "--output", out)
    assert code == 1 and "was pulled" in text, text + err
    assert inv.latest(out) == rel(s1)

    task = DailyScores(date=dt.date.fromisoformat(LOGS2), input_root=world, output_root=out)
    assert not task.complete()
    assert DailyScores(date=dt.date.fromisoformat(LOGS1), input_root=world, output_root=out).complete()
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.LuigiStatusCode.FAILED, result.summary_text
    assert inv.latest(out) == rel(s1) and not agreement_problems(out)


# ------------------------------------------------------------------ repair ---
def test_a_split_between_the_warehouse_and_latest_is_repaired(base, out):
    """Split: a failure between the warehouse load and the LATEST move (a full
    disk on main) left the warehouse serving S2 and LATEST on S1, plus a stray
    LATEST.tmp-*; main had no tool that mended it. `oasis snapshots repair`
    finishes the publish (the warehouse already holds S2) and says so."""
    _, _, s1, s2 = base
    with open(os.path.join(out, "snapshots", "LATEST"), "w") as f:  # the state such a failure leaves
        f.write(rel(s1) + "\n")
    stray = os.path.join(out, "snapshots", "LATEST.tmp-0123456789abcdef")
    with open(stray, "w") as f:
        f.write(rel(s2))
    assert agreement_problems(out)
    code, text, err = oasis("snapshots", "repair", "--output", out)
    assert code == 0, err
    assert f"LATEST: {rel(s1)} -> {rel(s2)} (finishing the publish of {s2['snapshot_id']}" in text
    assert f"removed the stray temporary file {stray}" in text and not os.path.exists(stray)
    assert inv.latest(out) == rel(s2) and not agreement_problems(out)
    code, text, _ = oasis("snapshots", "repair", "--output", out)
    assert code == 0 and text.startswith("nothing to repair")


def test_the_next_run_mends_a_split_before_it_publishes(base, out):
    """Split the other way (LATEST on S2, the warehouse still on S1, as a
    rollback forward killed after its pointer leaves it): the next run of any
    date, here an older one that does not move LATEST, repairs first and says
    what it did. On main the split stayed."""
    world, _, s1, s2 = base
    DuckDBWarehouse(os.path.join(out, "warehouse.duckdb")).set_current(s1["snapshot_id"], [])
    assert current(out) == [s1["snapshot_id"]]
    code, text, err = oasis("run", "--date", "2026-11-22", "--input", world, "--output", out)
    assert code == 0, err
    assert "LATEST and the warehouse disagree" in err and "repairing first" in err
    assert f"repair: warehouse duckdb://{out}/warehouse.duckdb: current snapshot {s1['snapshot_id']} -> " \
           f"{s2['snapshot_id']}" in err
    assert inv.latest(out) == rel(s2) and not agreement_problems(out)
    assert len(worlds.snapshot_dirs(out)) == 3


# ----------------------------------------------------------------- rebuild ---
def test_a_deleted_warehouse_is_reported_loudly_and_rebuilt(base, out):
    """Lost history: on main a deleted warehouse file was silently recreated
    with only the new date. Now the run says so in its summary, and
    `oasis warehouse rebuild` reloads every published snapshot from its files."""
    world, _, s1, s2 = base
    os.remove(os.path.join(out, "warehouse.duckdb"))
    code, text, err = oasis("run", "--date", "2026-11-22", "--input", world, "--output", out)
    assert code == 0, err
    warning = [line for line in text.splitlines() if line.startswith("WARNING: ")]
    assert len(warning) == 1 and "lacks 2 published score date(s) (2026-11-24, 2026-11-25)" in warning[0]
    assert "oasis warehouse rebuild" in warning[0]
    assert [d for (d,) in warehouse(out, "SELECT DISTINCT score_date FROM promotion_scores")] == [dt.date(2026, 11, 23)]

    code, text, err = oasis("warehouse", "rebuild", "--output", out)
    assert code == 0, err
    assert text.startswith("reloaded 3 snapshot(s)") and f"current snapshot: {rel(s2)}" in text
    for m in [worlds.manifest(d) for d in worlds.snapshot_dirs(out)]:
        held, problems = inv.warehouse_state(out, m["score_date"])
        assert held == m["snapshot_id"] and not problems, problems
    assert not agreement_problems(out)


def test_a_warehouse_file_that_is_not_a_database_fails_before_the_work_and_is_rebuilt(base, out):
    """Hostile state: on main a warehouse file that is not a database crashed
    the run with a traceback after its whole pipeline. Now the run fails at
    once with one line naming the file and the rebuild; the rebuild keeps the
    damaged file aside and restores every date."""
    world, _, s1, s2 = base
    path = os.path.join(out, "warehouse.duckdb")
    with open(path, "wb") as f:
        f.write(b"this is not a database" * 100)
    code, _, err = oasis("run", "--date", LOGS2, "--input", world, "--output", out, "--force")
    line = one_error_line(err, "oasis run")
    assert code == 1 and path in line and "is not a DuckDB database" in line and "warehouse rebuild" in line
    assert "run 2026" not in err  # the pipeline never started
    code, text, err = oasis("snapshots", "repair", "--output", out)
    assert code == 1 and "warehouse rebuild" in text, text + err

    code, text, err = oasis("warehouse", "rebuild", "--output", out)
    assert code == 0, err
    aside = [line for line in text.splitlines() if line.startswith("the previous file was kept as ")]
    assert aside and open(aside[0].rsplit(" ", 1)[1], "rb").read().startswith(b"this is not a database")
    assert not agreement_problems(out)
    assert sorted(r[0] for r in warehouse(out, "SELECT snapshot_id FROM snapshots")) == \
        sorted([s1["snapshot_id"], s2["snapshot_id"]])


def test_a_killed_rebuild_leaves_the_warehouse_as_it_was(base, out):
    """A rebuild SIGKILLed part-way (`OASIS_KILL_AT=rebuild_loading`) leaves the
    warehouse in place untouched (the fresh file is built beside it); the next
    rebuild removes the half-built file and completes."""
    _, _, s1, s2 = base
    killed = inv.run_cli("warehouse", "rebuild", "--output", out, OASIS_KILL_AT="rebuild_loading")
    assert killed.returncode == -9
    assert glob.glob(os.path.join(out, "warehouse.duckdb.rebuild-*"))
    assert not agreement_problems(out)
    code, text, err = oasis("warehouse", "rebuild", "--output", out)
    assert code == 0 and text.startswith("reloaded 2 snapshot(s)"), err
    assert not glob.glob(os.path.join(out, "warehouse.duckdb.rebuild-*")) and not agreement_problems(out)
