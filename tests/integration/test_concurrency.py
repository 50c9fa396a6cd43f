"""Concurrent writers: two real `oasis run` processes on the same date at once,
two processes racing compare-and-swaps of LATEST, two processes racing
`create_only`, and a warehouse publish while another process holds the DuckDB
file. Nothing may end corrupt, duplicated or pointing at a half snapshot.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import duckdb
import pytest

from pipelines import storage
from tests.support import invariants as inv
from tests.support import worlds

DAY = worlds.END
SCORE = (DAY + dt.timedelta(days=1)).isoformat()
ROUNDS = 150


# ------------------------------------------------------- two daily runs ---
@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    root = tmp_path_factory.mktemp("race")
    world = worlds.make_world(str(root / "world"), days=4, tracks=60, events_per_day=3000, markets=2)
    out = str(root / "out")
    args = inv.cli_args("run", "--date", DAY.isoformat(), "--input", world, "--output", out)
    procs = [subprocess.Popen(args, cwd=inv.ROOT, env=inv.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    results = [(p.returncode, o, e) for p, (o, e) in zip(procs, outs)]
    frozen = str(root / "after-race")  # the race's result, kept as it was for the checks
    shutil.copytree(out, frozen) if os.path.isdir(out) else os.makedirs(frozen)
    third = inv.run_cli("run", "--date", DAY.isoformat(), "--input", world, "--output", out)
    return dict(out=out, frozen=frozen, results=results, third=third)


def test_two_runs_of_the_same_date_at_once_leave_one_valid_publish(raced):
    out = raced["frozen"]
    for rc, stdout, stderr in raced["results"]:
        assert rc == 0, stderr[-3000:]
    new = {sid: fm for sid, fm in inv.published(out).items() if fm[1]["score_date"] == SCORE}
    assert 1 <= len(new) <= 2  # both may have completed a snapshot; each is then complete
    problems = inv.reader_view_problems(out)
    problems += inv.latest_problems(out, {inv.target(SCORE, sid) for sid in new})
    held, p = inv.warehouse_state(out, SCORE)  # one snapshot's exact content: no mix, no duplicates
    problems += p
    problems += inv.aggregate_marker_problems(out) + inv.serving_problems(out)
    assert not problems, "\n".join(problems)
    serving = inv.latest(out).rsplit("/", 1)[-1]
    # the warehouse, its registry, its *_latest views and LATEST all agree
    assert held == serving
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    try:
        for name in inv.TABLES:
            n, ids = con.execute(f"SELECT count(*), list(DISTINCT snapshot_id) FROM {name}_latest").fetchone()
            rows = new[serving][1]["tables"][name]["rows"]
            assert n == rows and (ids or []) == ([serving] if rows else []), name  # campaign_lift may be empty
        total = con.execute("SELECT count(*) FROM promotion_scores").fetchone()[0]
        assert total == new[serving][1]["tables"]["promotion_scores"]["rows"]  # no duplicates
        reg = con.execute("SELECT snapshot_id FROM snapshots ORDER BY score_date DESC, created_at DESC").fetchall()
        assert reg[0][0] == serving
    finally:
        con.close()


def test_the_run_after_the_race_has_nothing_to_do(raced):
    """The race left coherent aggregate markers and manifests: the next run finds
    the same fingerprint and has nothing to do (unless the code changed meanwhile:
    the fingerprint includes the code version, and then it publishes anew)."""
    third = raced["third"]
    assert third.returncode == 0, third.stderr[-3000:]
    before = inv.published(raced["frozen"])
    after = inv.published(raced["out"])
    serving = inv.latest(raced["frozen"]).rsplit("/", 1)[-1]
    new = set(after) - set(before)
    if not new:
        assert "already published" in third.stderr, third.stderr[-2000:]
        assert inv.latest(raced["out"]) == inv.latest(raced["frozen"])
    else:
        (sid,) = new
        assert after[sid][1]["code_version"] != before[serving][1]["code_version"], \
            "same code, inputs and config, yet published again"
        assert not inv.latest_problems(raced["out"], {inv.target(SCORE, sid)})


# ------------------------------------------------ LATEST compare-and-swap ---
def _swapper(uri: str, me: str, rounds: int, barrier, results, no_lock: bool) -> None:
    """Each round: read LATEST, wait for the other process to have read it too,
    then try to swap it from what was read; report the outcome."""
    from pipelines import storage as st

    if no_lock:  # the control: the same swap without its lock
        import contextlib

        st.local_lock = lambda *a, **k: contextlib.nullcontext()
    wins = []
    for r in range(rounds):
        seen = st.read_pointer(uri)
        barrier.wait()
        try:
            st.replace_pointer(uri, f"round={r + 1}/{me}", seen)
            wins.append(r)
        except st.PointerMoved:
            pass
        barrier.wait()
    results.put((me, wins))


def _race_swaps(tmp_path, no_lock: bool) -> tuple[list, dict]:
    uri = str(tmp_path / "snapshots" / "LATEST")
    storage.write_bytes(uri, b"round=0/start\n")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2, timeout=120), ctx.Queue()
    procs = [ctx.Process(target=_swapper, args=(uri, me, ROUNDS, barrier, results, no_lock)) for me in "AB"]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [[me for me in "AB" if r in got[me]] for r in range(ROUNDS)]
    return winners, got


def test_latest_swap_is_exclusive_between_processes(tmp_path):
    winners, got = _race_swaps(tmp_path, no_lock=False)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1][:10]
    last = winners[-1][0]
    assert storage.read_pointer(str(tmp_path / "snapshots" / "LATEST")).content == f"round={ROUNDS}/{last}"


def test_the_swap_race_is_real_without_the_lock(tmp_path):
    """Control: the same race with the lock removed lets both processes win some
    rounds, so the test above would fail if the lock were gone."""
    winners, _ = _race_swaps(tmp_path, no_lock=True)
    assert any(len(w) == 2 for w in winners)


# ------------------------------------------------------------ create_only ---
def _creator(folder: str, me: str, rounds: int, barrier, results) -> None:
    from pipelines import storage as st

    payload = (me * 200_000).encode()  # big enough that a non-atomic write would show
    wins = []
    for r in range(rounds):
        barrier.wait()
        try:
            st.create_only(os.path.join(folder, f"round-{r}", "_MANIFEST.json"), payload)
            wins.append(r)
        except st.AlreadyExists:
            pass
    results.put((me, wins))


def test_create_only_refuses_a_second_writer(tmp_path):
    uri = str(tmp_path / "snap" / "_MANIFEST.json")
    storage.create_only(uri, b'{"v": 1}')
    with pytest.raises(storage.AlreadyExists):
        storage.create_only(uri, b'{"v": 2}')
    assert open(uri, "rb").read() == b'{"v": 1}'

    rounds = 60
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2, timeout=120), ctx.Queue()
    procs = [ctx.Process(target=_creator, args=(str(tmp_path), me, rounds, barrier, results)) for me in "AB"]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for r in range(rounds):
        won = [me for me in "AB" if r in got[me]]
        assert len(won) == 1, (r, won)
        data = open(tmp_path / f"round-{r}" / "_MANIFEST.json", "rb").read()
        assert data == (won[0] * 200_000).encode()  # whole, and the winner's
        assert os.listdir(tmp_path / f"round-{r}") == ["_MANIFEST.json"]  # no temporary left behind


# -------------------------------------------------------------- warehouse ---
def test_warehouse_publish_waits_for_another_process_holding_the_file(tmp_path):
    from jobs.warehouse.duckdb import DuckDBWarehouse
    from schemas import OUTPUTS

    path = str(tmp_path / "warehouse.duckdb")
    wh = DuckDBWarehouse(path)
    tables = {name: OUTPUTS[name].empty() for name in inv.TABLES}
    registry = {"snapshot_id": "s1", "score_date": dt.date.fromisoformat(SCORE),
                "created_at": dt.datetime(2026, 11, 25, 1, tzinfo=dt.timezone.utc), "code_version": "x",
                "run_fingerprint": "f", "manifest_uri": "m", **{f"{name}_rows": 0 for name in inv.TABLES}}
    wh.publish(dt.date.fromisoformat(SCORE), tables, registry)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"con = duckdb.connect({path!r}, read_only=True)\n"
         "print('holding', flush=True); time.sleep(3); con.close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(duckdb.IOException):  # DuckDB itself does not wait
            duckdb.connect(path).close()
        t0 = time.monotonic()
        registry2 = dict(registry, snapshot_id="s2", created_at=dt.datetime(2026, 11, 25, 2, tzinfo=dt.timezone.utc),
                         manifest_uri="m2")
        wh.publish(dt.date.fromisoformat(SCORE), tables, registry2)
        assert time.monotonic() - t0 > 0.5  # it did wait for the other process
    finally:
        holder.wait(timeout=60)
    ids = {r["snapshot_id"] for r in wh.query("SELECT snapshot_id FROM snapshots").to_pylist()}
    assert ids == {"s1", "s2"}
