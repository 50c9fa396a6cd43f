"""A rollback racing the scheduled run that would finish the publish of the
very snapshot it pulls. Start: the state a run killed between its warehouse
load and its LATEST move leaves (S2 in the warehouse as current, LATEST on
S1), so a plain `oasis run` of S2's date would finish S2's publish. An
operator runs `oasis snapshots rollback --to S1` at about the same time: a
little before the run, with it, and a little after (the run repairs and
finishes S2 within seconds of starting). Whatever the interleaving, S2 must end withdrawn: LATEST, the
registry, the views and the serving reader on S1, and one more scheduled run
publishes nothing. (On the previous main the run re-served S2 and the
warehouse never followed the rollback.)"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from jobs.warehouse.duckdb import DuckDBWarehouse
from tests.support import invariants as inv
from tests.support.lifecycle import LOGS2, agreement_problems, two_snapshots

STAGGERS = (-1.5, 0.0, 2.0)  # seconds from the run's start to the rollback's (negative: the rollback first)
ROUNDS = len(STAGGERS)


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    two = two_snapshots(tmp_path_factory)
    root = tmp_path_factory.mktemp("rollback-race")
    rounds = []
    for i, stagger in enumerate(STAGGERS):
        out = two.copy(str(root / f"round-{i}"))
        with open(os.path.join(out, "snapshots", "LATEST"), "w") as f:  # the split a kill after the warehouse leaves
            f.write(inv.target(two.s1["score_date"], two.s1["snapshot_id"]) + "\n")
        DuckDBWarehouse(os.path.join(out, "warehouse.duckdb")).set_current(two.s2["snapshot_id"], [])
        rollback_args = inv.cli_args("snapshots", "rollback", "--to", two.s1["snapshot_id"], "--output", out)
        run_args = inv.cli_args("run", "--date", LOGS2, "--input", two.world, "--output", out)
        first, second = (rollback_args, run_args) if stagger < 0 else (run_args, rollback_args)
        procs = [subprocess.Popen(first, cwd=inv.ROOT, env=inv.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)]
        time.sleep(abs(stagger))
        procs.append(subprocess.Popen(second, cwd=inv.ROOT, env=inv.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=900) for p in procs]
        results = [(p.returncode, o, e) for p, (o, e) in zip(procs, outputs)]
        rollback, run = (results[0], results[1]) if stagger < 0 else (results[1], results[0])
        after = inv.run_cli("run", "--date", LOGS2, "--input", two.world, "--output", out)
        rounds.append(dict(out=out, run=(run[0], run[2]), rollback=rollback, after=after,
                           problems=agreement_problems(out), latest=inv.latest(out)))
    return two, rounds


@pytest.mark.parametrize("i", range(ROUNDS))
def test_a_rollback_racing_a_run_ends_withdrawn(raced, i):
    two, rounds = raced
    r = rounds[i]
    s1 = inv.target(two.s1["score_date"], two.s1["snapshot_id"])
    assert r["rollback"][0] == 0, r["rollback"][2][-2000:]
    code, err = r["run"]
    # the racing run either finished S2 before the rollback (exit 0) or was refused after it (exit 1)
    assert code == 0 or (code == 1 and "was pulled" in err), err[-2000:]
    print(f"round {i}: the racing run {'published first' if code == 0 else 'was refused'}")
    assert r["latest"] == s1 and not r["problems"], r["problems"]
    assert r["after"].returncode == 1 and "was pulled" in r["after"].stderr, r["after"].stderr[-2000:]
