"""Two published snapshots, built once per test session and shared by the
lifecycle, hostile-state, disk and rollback crash/concurrency tests (each test
works on its own copy of the output root).

S1: logs 2026-11-23, score date 2026-11-24; S2: logs 2026-11-24, score date
2026-11-25; LATEST on S2; the DuckDB warehouse at OUT/warehouse.duckdb.
"""
from __future__ import annotations

import io
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import duckdb

from jobs.cli import main as cli
from tests.support import invariants as inv
from tests.support import worlds

LOGS1, LOGS2 = "2026-11-23", "2026-11-24"


@dataclass(frozen=True)
class TwoSnapshots:
    world: str
    out: str
    s1: dict   # manifests, as JSON
    s2: dict

    def copy(self, dst: str) -> str:
        shutil.copytree(self.out, dst)
        return dst


_built: dict[str, TwoSnapshots] = {}


def two_snapshots(tmp_path_factory) -> TwoSnapshots:
    """Published by the real CLI in subprocesses (no state left in this process)."""
    if "it" not in _built:
        root = tmp_path_factory.mktemp("two-snapshots")
        world = worlds.make_world(str(root / "world"), days=4, tracks=60, events_per_day=3000, markets=2)
        out = str(root / "out")
        for day in (LOGS1, LOGS2):
            proc = inv.run_cli("run", "--date", day, "--input", world, "--output", out)
            assert proc.returncode == 0, proc.stderr[-3000:]
        s1, s2 = sorted((worlds.manifest(d) for d in worlds.snapshot_dirs(out)), key=lambda m: m["score_date"])
        _built["it"] = TwoSnapshots(world, out, s1, s2)
    return _built["it"]


def warehouse(out: str, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def current(out: str) -> list[str]:
    """What the warehouse serves: the *_latest views' snapshot ids."""
    return sorted({r[0] for name in inv.TABLES for r in warehouse(out, f"SELECT snapshot_id FROM {name}_latest")})


def agreement_problems(out: str) -> list[str]:
    """LATEST, the warehouse registry, its views and the serving reader name the
    same snapshot, whose content the warehouse holds exactly."""
    sid = inv.latest(out).rsplit("/", 1)[-1]
    problems = inv.serving_problems(out)
    score_date = inv.latest(out).split("/")[0].split("=")[1]
    held, p = inv.warehouse_state(out, score_date)
    problems += p + ([] if held == sid else [f"warehouse holds {held} for {score_date}, LATEST is {sid}"])
    flagged = [r[0] for r in warehouse(out, "SELECT snapshot_id FROM snapshots WHERE is_current")]
    problems += [] if flagged == [sid] else [f"registry marks {flagged} current, LATEST is {sid}"]
    problems += [] if current(out) == [sid] else [f"*_latest views show {current(out)}, LATEST is {sid}"]
    return problems


def oasis(*args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()
