"""Crash safety of `oasis run`, by killing the real CLI process.

Starting from an output root that already serves a valid snapshot for the
previous day, the next day's run is SIGKILLed at every named stage of
`pipelines.faults.STAGES` (`OASIS_KILL_AT`: among them part-way through the
snapshot's data files and inside the warehouse transaction) and at a few seeded
random moments. Every kill is asserted to have landed (SIGKILL, at its stage
with exactly that stage's effects; a timed one after its anchor line, before
the run exited: a run that finished first is retried with half the delay).
After each kill:

* LATEST points to the previous snapshot or to a complete new one, nothing else;
* readers (`jobs.snapshots.store.list_manifests`) list only complete snapshots;
* the warehouse holds, for each score date, the old content or the new one,
  exactly (content fingerprints), never a mix or duplicates;
* each aggregate marker names a complete build;
* the next run of the same date exits 0 and publishes: LATEST, the warehouse and
  the snapshot agree. A run killed after its manifest is finished by that next
  run (same snapshot, warehouse loaded, LATEST moved), not reported as
  "already published" with LATEST behind.
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from pipelines import faults
from tests.support import invariants as inv
from tests.support import worlds

pytestmark = pytest.mark.timeout(900)  # the module's fixture runs 21 real CLI processes

PREV_DAY = worlds.END - dt.timedelta(days=1)
DAY = worlds.END
PREV_SCORE = DAY.isoformat()  # scores of the run for PREV_DAY
SCORE = (DAY + dt.timedelta(days=1)).isoformat()
TIMED_KILLS = 3
SEED = 3

# What a kill at each stage must leave (so the test knows the kill landed there):
# (a new manifest exists, the warehouse holds the new date, LATEST moved)
STAGE_EFFECTS = {
    "aggregating": (False, False, False),
    "between_data_files": (False, False, False),  # and some, not all, data files (checked below)
    "after_data": (False, False, False),
    "after_manifest": (True, False, False),
    "in_warehouse_transaction": (True, False, False),  # the uncommitted replacement must not show
    "after_warehouse": (True, True, False),
    "after_pointer": (True, True, True),
}
assert set(STAGE_EFFECTS) == set(faults.STAGES)


@dataclass
class Base:
    world: str
    out: str
    prev_id: str
    work_seconds: float  # from the run's "run <id>: ..." line (plan done) to its exit


@dataclass
class Outcome:
    name: str
    kill_rc: int
    after_kill: str  # a frozen copy of the output root right after the kill
    out: str  # the output root after the next run
    rerun: subprocess.CompletedProcess
    again: subprocess.CompletedProcess | None = None
    out_again: str | None = None
    extra: dict = field(default_factory=dict)


def run_args(day: dt.date, world: str, out: str) -> list[str]:
    return ["run", "--date", day.isoformat(), "--input", world, "--output", out]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("crash")
    world = worlds.make_world(str(root / "world"), days=4, tracks=60, events_per_day=3000, markets=2)
    out = str(root / "base")
    proc, log = _start(run_args(PREV_DAY, world, out), str(root / "base.log"))
    started = _wait_for_work(proc, log)
    rc = proc.wait(timeout=600)
    assert started is not None, open(log).read()[-3000:]
    work_seconds = time.monotonic() - started
    assert rc == 0, open(log).read()[-3000:]
    (folder,) = worlds.snapshot_dirs(out)
    prev_id = worlds.manifest(folder)["snapshot_id"]
    assert inv.latest(out) == inv.target(PREV_SCORE, prev_id)
    return Base(world, out, prev_id, work_seconds)


def _start(args: list[str], log: str) -> tuple[subprocess.Popen, str]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(inv.cli_args(*args), cwd=inv.ROOT, env=inv.env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=fh)
    return proc, log


def _wait_for_work(proc: subprocess.Popen, log: str, line: bytes = b"run ") -> float | None:
    """Wait until the run prints a progress line starting with `line` ("run <id>:"
    once planned, as its pipeline starts; "manifest written" before the
    warehouse and LATEST) or exits; returns that moment (time.monotonic()), or
    None if the process exited without printing it."""
    while proc.poll() is None:
        with open(log, "rb") as fh:
            if any(x.startswith(line) for x in fh):
                return time.monotonic()
        time.sleep(0.01)
    return None


def _scenarios(base: Base) -> list[tuple[str, str | None, tuple[bytes, float] | None]]:
    """Every named stage, then kills at seeded random moments: some over the
    work of a run (pipeline, data files, manifest), the last one within the
    publish (warehouse transaction, pointer swap), counted from the manifest line."""
    rng = random.Random(SEED)
    timed = [(f"timed-{i}", None, (b"run ", round(base.work_seconds * rng.uniform(0.05, 0.95), 2)))
             for i in range(TIMED_KILLS - 1)]
    timed.append((f"timed-{TIMED_KILLS - 1}", None, (b"manifest written", round(rng.uniform(0.15, 1.2), 2))))
    return [(stage, stage, None) for stage in faults.STAGES] + timed


TIMED_ATTEMPTS = 4  # a timed kill that finds the run already finished is retried with half the delay


def _play(base: Base, root: str, name: str, stage: str | None, when: tuple[bytes, float] | None) -> Outcome:
    out = os.path.join(root, name)
    args = run_args(DAY, base.world, out)
    extra = {"when": when}
    if stage:
        shutil.copytree(base.out, out)
        kill_rc = inv.run_cli(*args, OASIS_KILL_AT=stage).returncode
    else:
        anchor, delay = when
        for attempt in range(TIMED_ATTEMPTS):
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(base.out, out)
            log = os.path.join(root, f"{name}-{attempt}.log")
            proc, _ = _start(args, log)
            seen = _wait_for_work(proc, log, anchor) is not None
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            kill_rc = proc.wait()
            with open(log, "rb") as fh:
                lines = [x.strip() for x in fh if x.strip()]
            if kill_rc != 0:  # killed (or failed: the test says which)
                break
            delay = round(delay / 2, 3)  # the run finished first: kill sooner
        extra.update(anchor_seen=seen, attempts=attempt + 1, delay=delay,
                     last_line=lines[-1].decode(errors="replace") if lines else "")
    after = os.path.join(root, name + "-after-kill")
    shutil.copytree(out, after)
    rerun = inv.run_cli(*args)
    again, out_again = None, None
    if name == "after_manifest":  # once more, on a copy, so `out` stays as the rerun left it
        out_again = os.path.join(root, name + "-again")
        shutil.copytree(out, out_again)
        again = inv.run_cli(*run_args(DAY, base.world, out_again))
    return Outcome(name, kill_rc, after, out, rerun, again, out_again, extra)


@pytest.fixture(scope="module")
def outcomes(base, tmp_path_factory) -> dict[str, Outcome]:
    root = str(tmp_path_factory.mktemp("kills"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(_play, base, root, *sc) for sc in _scenarios(base)]
        results = [f.result() for f in futures]
    return {o.name: o for o in results}


NAMES = list(faults.STAGES) + [f"timed-{i}" for i in range(TIMED_KILLS)]


def _new_snapshots(out: str) -> dict[str, tuple[str, dict]]:
    return {sid: fm for sid, fm in inv.published(out).items() if fm[1]["score_date"] == SCORE}


@pytest.mark.parametrize("name", NAMES)
def test_a_kill_leaves_readers_a_consistent_output(outcomes, base, name):
    o = outcomes[name]
    out = o.after_kill
    prev = inv.target(PREV_SCORE, base.prev_id)
    new = _new_snapshots(out)

    problems = inv.reader_view_problems(out)
    problems += inv.latest_problems(out, {prev} | {inv.target(SCORE, sid) for sid in new})
    held_prev, p = inv.warehouse_state(out, PREV_SCORE)
    problems += p
    if held_prev != base.prev_id:
        problems.append(f"warehouse {PREV_SCORE} holds {held_prev}, expected the previous {base.prev_id}")
    held_new, p = inv.warehouse_state(out, SCORE)
    problems += p
    if held_new is not None and held_new not in new:
        problems.append(f"warehouse {SCORE} holds {held_new}, not a complete new snapshot")
    problems += inv.aggregate_marker_problems(out)
    problems += inv.serving_problems(out)
    assert not problems, "\n".join(problems)

    # the process really died (SIGKILL), not a normal exit or a failure
    assert o.kill_rc == -signal.SIGKILL, (o.kill_rc, o.extra)
    folders = glob.glob(os.path.join(out, "snapshots", f"score_date={SCORE}", "*"))
    data_files = glob.glob(os.path.join(out, "snapshots", f"score_date={SCORE}", "*", "*", "*.parquet"))
    if name in STAGE_EFFECTS:
        # ... at that stage, with exactly that much done
        has_manifest, has_warehouse, moved = STAGE_EFFECTS[name]
        assert len(new) == int(has_manifest), sorted(new)
        assert (held_new is not None) == has_warehouse
        assert (inv.latest(out) != prev) == moved
        if name == "between_data_files":
            # part-way through the data files: one written, the snapshot's others not
            assert len(folders) == 1 and len(data_files) == 1, data_files
        if name == "after_data":
            assert len(folders) == 1 and len(data_files) >= 3, data_files
    else:
        # a timed kill landed inside the run: after its anchor line, before it exited
        assert o.extra["anchor_seen"], o.extra
        print(f"{name}: killed {o.extra['delay']} s after {o.extra['when'][0].decode()!r} "
              f"(attempt {o.extra['attempts']}), last line {o.extra['last_line'][:60]!r}: {len(folders)} new "
              f"folder(s), {len(data_files)} data file(s), {len(new)} manifest(s), "
              f"warehouse {'new' if held_new else 'old'}, LATEST {'moved' if inv.latest(out) != prev else 'old'}")


@pytest.mark.parametrize("name", NAMES)
def test_the_next_run_publishes(outcomes, base, name):
    o = outcomes[name]
    assert o.rerun.returncode == 0, o.rerun.stderr[-3000:]
    out = o.out
    new = _new_snapshots(out)
    problems = inv.reader_view_problems(out)
    problems += inv.latest_problems(out, {inv.target(SCORE, sid) for sid in new})
    held_prev, p = inv.warehouse_state(out, PREV_SCORE)
    problems += p + ([] if held_prev == base.prev_id else [f"warehouse {PREV_SCORE} lost the previous snapshot"])
    held_new, p = inv.warehouse_state(out, SCORE)
    problems += p + inv.serving_problems(out)
    assert not problems, "\n".join(problems)
    serving = inv.latest(out).rsplit("/", 1)[-1]
    # the warehouse and LATEST agree on what is published for the date
    assert held_new == serving

    # A snapshot completed (manifest written) by the killed run is finished by
    # the next run, not published a second time. The code cannot change between
    # the two runs (the same worktree, one test session), so the fingerprints
    # must agree: a difference is a failure, not a reason to skip the check.
    killed = _new_snapshots(o.after_kill)
    if killed:
        (kid, (_, km)), = killed.items()
        assert new[serving][1]["run_fingerprint"] == km["run_fingerprint"], "the rerun's fingerprint changed"
        assert serving == kid, f"republished {serving} instead of finishing {kid}"
        assert sorted(new) == [kid]
        if inv.latest(o.after_kill) != inv.target(SCORE, kid):
            assert "finishing the publish" in o.rerun.stderr, o.rerun.stderr[-2000:]
    if o.again is not None:
        # and once finished, a further run has nothing left to do
        assert o.again.returncode == 0, o.again.stderr[-2000:]
        final = _new_snapshots(o.out_again)
        assert set(final) == set(new), "same code, inputs and config, yet published again"
        assert "already published" in o.again.stderr, o.again.stderr[-2000:]
        assert inv.latest(o.out_again) == inv.latest(out)


def test_a_killed_lock_holder_does_not_block_the_next_pointer_swap(tmp_path):
    """A process SIGKILLed while it holds LATEST's lock (the tiny window of a
    swap) must not block the next run's swap (the lock dies with its holder)."""
    from pipelines import storage

    uri = str(tmp_path / "snapshots" / "LATEST")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys; from pipelines import storage\n"
         f"lock = storage.local_lock({uri + '.lock'!r}); lock.__enter__()\n"
         "print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)"],
        cwd=inv.ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert holder.wait() == -signal.SIGKILL
    t0 = time.monotonic()
    storage.replace_pointer(uri, "score_date=2026-11-25/x", storage.read_pointer(uri), lock_timeout_s=5)
    assert time.monotonic() - t0 < 5
    assert storage.read_pointer(uri).content == "score_date=2026-11-25/x"
