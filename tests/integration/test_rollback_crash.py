"""Crash safety of a rollback, by killing the real CLI process
(`OASIS_KILL_AT`, `pipelines.faults.LIFECYCLE_STAGES`) and at seeded random
moments: after any kill, what a scheduler or an operator does next never
serves the pulled snapshot again.

Start: S1 and S2 published, LATEST on S2. `oasis snapshots rollback --to S1`
is killed; then, as in production:

1. the serving reader never serves S2 once its rollback record exists;
2. the scheduled retry (`oasis run` of S2's date, same inputs) publishes
   nothing once the record exists, and leaves LATEST, the registry and the
   warehouse agreeing on S1 (it finishes the rollback first);
3. the operator runs the rollback again: S1 everywhere.

On the previous main the retry in step 2 moved LATEST back to S2 ("finishing
the publish") and exited 0, and the warehouse never followed.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from jobs import serving
from pipelines import faults
from tests.support import invariants as inv
from tests.support.lifecycle import LOGS2, agreement_problems, two_snapshots

STAGES = [s for s in faults.LIFECYCLE_STAGES if s.startswith("rollback_")]
TIMED = 2
SEED = 5
ANCHOR = "rollback to "  # the INFO line a rollback logs just before it writes its records


@dataclass
class Outcome:
    name: str
    out: str
    kill_rc: int
    pulled_after_kill: bool
    served_after_kill: str
    retry: subprocess.CompletedProcess
    latest_after_retry: str
    problems_after_retry: list[str]
    again: subprocess.CompletedProcess
    problems_at_end: list[str]


def _play(two, root: str, name: str, stage: str | None, delay: float | None) -> Outcome:
    out = two.copy(os.path.join(root, name))
    rollback = ["snapshots", "rollback", "--to", two.s1["snapshot_id"], "--output", out]
    if stage:
        kill_rc = inv.run_cli(*rollback, OASIS_KILL_AT=stage).returncode
    else:  # a kill at a random moment of the rollback's own work, counted from its INFO line
        log = os.path.join(root, name + ".log")
        with open(log, "w") as fh:
            proc = subprocess.Popen(inv.cli_args("--log-level", "INFO", *rollback), cwd=inv.ROOT, env=inv.env(),
                                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=fh)
        while proc.poll() is None and ANCHOR not in _read(log):
            time.sleep(0.005)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_rc = proc.wait()
    pulled = bool(os.listdir(os.path.join(out, "snapshots", "_pulled"))) \
        if os.path.isdir(os.path.join(out, "snapshots", "_pulled")) else False
    served = serving.load_latest(out, allow_stale=True).snapshot_id  # a world of past dates
    run = ["run", "--date", LOGS2, "--input", two.world, "--output", out]
    retry = inv.run_cli(*run)
    latest_after_retry = inv.latest(out)
    problems_after_retry = agreement_problems(out)
    again = inv.run_cli(*rollback)
    return Outcome(name, out, kill_rc, pulled, served, retry, latest_after_retry, problems_after_retry, again,
                   agreement_problems(out))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    two = two_snapshots(tmp_path_factory)
    root = str(tmp_path_factory.mktemp("rollback-kills"))
    rng = random.Random(SEED)
    scenarios = [(stage, stage, None) for stage in STAGES]
    scenarios += [(f"timed-{i}", None, round(rng.uniform(0.0, 0.3), 3)) for i in range(TIMED)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = [f.result() for f in [pool.submit(_play, two, root, *sc) for sc in scenarios]]
    return two, {o.name: o for o in done}


NAMES = STAGES + [f"timed-{i}" for i in range(TIMED)]


@pytest.mark.parametrize("name", NAMES)
def test_a_killed_rollback_is_never_undone(outcomes, name):
    two, by_name = outcomes
    o = by_name[name]
    s1, s2 = (inv.target(m["score_date"], m["snapshot_id"]) for m in (two.s1, two.s2))
    if name in STAGES:
        assert o.kill_rc == -signal.SIGKILL and o.pulled_after_kill  # it died where asked, record written
    else:
        print(f"{name}: rc {o.kill_rc}, record written: {o.pulled_after_kill}")
    if o.pulled_after_kill:
        # 1. the reader never serves the pulled snapshot
        assert o.served_after_kill == two.s1["snapshot_id"]
        # 2. the scheduled retry publishes nothing and finishes the rollback
        assert o.retry.returncode == 1 and "was pulled" in o.retry.stderr, o.retry.stderr[-2000:]
        assert o.latest_after_retry == s1 and not o.problems_after_retry, o.problems_after_retry
    else:  # killed before the record: nothing was rolled back, S2 is legitimately served
        assert o.served_after_kill == two.s2["snapshot_id"] and o.latest_after_retry == s2
        assert o.retry.returncode == 0 and "already published" in o.retry.stderr, o.retry.stderr[-2000:]
    # 3. the operator's retry completes it
    assert o.again.returncode == 0, o.again.stderr[-2000:]
    assert not o.problems_at_end and inv.latest(o.out) == s1


def test_a_killed_rollback_leaves_no_lock_behind(outcomes):
    """The retry after a killed rollback waits for nothing: the kernel released
    the dead process's publish lock."""
    _, by_name = outcomes
    assert all("waiting for the publish lock" not in o.retry.stderr for o in by_name.values())
