"""`oasis serving sync` end to end: two published days, the real CLI, a real
Feast SQLite online store read back with Feast's own `get_online_features`.

What it shows: the store serves exactly LATEST's published values for every
(track, market, surface) (rows past their flight end: nothing), and every
price; after a rollback and a sync it serves the rolled-back snapshot, with no
key left over from the newer one; a second sync writes nothing; a stale LATEST
is refused; a sync SIGKILLed at any point leaves one whole snapshot served, and
the next sync completes. Also: the published prices reproduce each published
plan.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs import layout
from jobs.cli import main as cli
from jobs.feature_store import definitions as defs
from jobs.feature_store import repository
from jobs.serving import servable_scores
from pipelines import faults
from pipelines.allocation.prices import lookup_prices, reduced_costs
from tests.support import worlds

ROOT = Path(__file__).resolve().parents[2]
DAYS = [worlds.END - dt.timedelta(days=1), worlds.END]
TODAY = worlds.END + dt.timedelta(days=1)  # the newer snapshot's score date


def oasis(*args: str) -> int:
    return cli.main(list(args))


def sync(out: str, *extra: str) -> int:
    return oasis("serving", "sync", "--output", out, "--today", TODAY.isoformat(), *extra)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """An output root with two daily snapshots; LATEST on the second."""
    w = worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                          markets=2)
    out = str(tmp_path_factory.mktemp("out"))
    for d in DAYS:
        assert oasis("run", "--date", d.isoformat(), "--input", w, "--output", out) == 0
    older, newer = worlds.snapshot_dirs(out)
    return {"out": out, "older": older, "newer": newer}


@pytest.fixture
def out(published, tmp_path):
    """A private copy of the output root (snapshots only; no online store yet)."""
    dst = str(tmp_path / "out")
    shutil.copytree(os.path.join(published["out"], "snapshots"), os.path.join(dst, "snapshots"))
    return dst


def snapshot(folder: str) -> dict:
    m = worlds.manifest(folder)
    return {"id": m["snapshot_id"], "valid_until": m["valid_until"], "folder": folder,
            "scores": worlds.table(folder, "promotion_scores"), "prices": worlds.table(folder, "prices")}


def read_online(repo: str, score_keys: list[tuple], price_keys: list[tuple]) -> tuple[pd.DataFrame, ...]:
    """Every requested key through Feast's own get_online_features."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs, state = repository.open_online_store(repo)
        frames = []
        for view, keys, names in (("promotion_scores", score_keys, defs.SCORE_KEYS),
                                  ("prices", price_keys, defs.PRICE_KEYS)):
            features = [f"{view}:{f}" for f in defs.VIEWS[view][2]]
            rows = [dict(zip(names, k)) for k in keys]
            frames.append(pd.DataFrame(fs.get_online_features(features=features, entity_rows=rows).to_dict())
                          .set_index(list(names)))
    return frames[0], frames[1], state


def expected_value(v):
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    return v


def assert_serves(repo: str, snap: dict, other: dict) -> None:
    """The online store holds exactly `snap`: every servable key of it with its
    published values, every price; any other key (the other snapshot's, rows
    past their flight end) absent."""
    servable = servable_scores(pq.read_table(os.path.join(snap["folder"], "promotion_scores")), TODAY).to_pandas()
    keys = sorted(set(map(tuple, snap["scores"][list(defs.SCORE_KEYS)].to_numpy()))
                  | set(map(tuple, other["scores"][list(defs.SCORE_KEYS)].to_numpy())))
    price_keys = sorted(set(map(tuple, snap["prices"][list(defs.PRICE_KEYS)].to_numpy()))
                        | set(map(tuple, other["prices"][list(defs.PRICE_KEYS)].to_numpy())))
    got_scores, got_prices, state = read_online(repo, keys, price_keys)
    assert state["snapshot_id"] == snap["id"]

    want = servable.set_index(list(defs.SCORE_KEYS))
    present = got_scores["snapshot_id"].notna()
    assert set(got_scores.index[present]) == set(want.index), "served keys differ from LATEST's servable rows"
    assert len(want) < len(snap["scores"])  # some rows are past their flight end, and not served
    for key, row in want.iterrows():
        got = got_scores.loc[key]
        for f in defs.SCORE_FEATURES:
            assert got[f] == expected_value(row[f]) or (got[f] is None and expected_value(row[f]) is None), (key, f)
        assert got[defs.VALID_UNTIL] == snap["valid_until"]
    assert got_scores.loc[~present].isna().all().all()

    want = snap["prices"].set_index(list(defs.PRICE_KEYS))
    present = got_prices["snapshot_id"].notna()
    assert set(got_prices.index[present]) == set(want.index)
    for f in defs.PRICE_FEATURES:
        assert [expected_value(v) for v in want[f]] == list(got_prices.loc[want.index, f]), f


def tree(repo: str) -> dict:
    """Every path under the repository with its size, mtime and link target."""
    out = {}
    for p in sorted(Path(repo).rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(repo))] = (st.st_size, st.st_mtime_ns, os.readlink(p) if p.is_symlink() else None)
    return out


def test_sync_serves_latest_exactly_follows_a_rollback_and_writes_nothing_twice(published, out, capsys):
    older, newer = snapshot(published["older"]), snapshot(published["newer"])
    repo = os.path.join(out, "feature_repo")

    assert sync(out) == 0
    assert "built a new store" in capsys.readouterr().out
    assert_serves(repo, newer, older)

    before = tree(repo)
    assert sync(out) == 0
    assert "nothing written" in capsys.readouterr().out
    assert {k: v for k, v in tree(repo).items() if k != layout.REPO_LOCK} == {
        k: v for k, v in before.items() if k != layout.REPO_LOCK}

    assert oasis("snapshots", "rollback", "--to", older["id"], "--output", out) == 0
    assert sync(out) == 0
    assert "built a new store" in capsys.readouterr().out
    assert_serves(repo, older, newer)  # no key of the newer snapshot is left over

    # forward again: the newer snapshot's store was kept, so the sync only re-points
    assert oasis("snapshots", "rollback", "--to", newer["id"], "--output", out) == 0
    assert sync(out) == 0
    assert "re-pointed" in capsys.readouterr().out
    assert_serves(repo, newer, older)
    assert len(repository.stores(repo)) == repository.KEEP_STORES


def test_a_stale_latest_is_refused_naming_its_age(published, out, capsys):
    newer = snapshot(published["newer"])
    three_days = (TODAY + dt.timedelta(days=3)).isoformat()
    assert oasis("serving", "sync", "--output", out, "--today", three_days) == 1
    err = capsys.readouterr().err
    assert err.startswith("oasis serving sync: error: ") and "3 days before" in err and newer["id"] in err
    assert not os.path.exists(os.path.join(out, "feature_repo", "current"))
    assert oasis("serving", "sync", "--output", out, "--today", three_days, "--allow-stale") == 0
    assert repository.current_state(os.path.join(out, "feature_repo"))["snapshot_id"] == newer["id"]


def sync_process(out: str, kill_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("OASIS_KILL_AT", None)
    if kill_at:
        env["OASIS_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-m", "jobs.cli.main", "serving", "sync", "--output", out,
                             "--today", TODAY.isoformat()], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_sync_killed_midway_leaves_one_whole_snapshot(published, out):
    older, newer = snapshot(published["older"]), snapshot(published["newer"])
    repo = os.path.join(out, "feature_repo")
    assert oasis("snapshots", "rollback", "--to", older["id"], "--output", out) == 0
    assert sync(out) == 0
    assert oasis("snapshots", "rollback", "--to", newer["id"], "--output", out) == 0

    # killed with one feature view of the new store written, then with the store complete but not switched to
    stages = (("serving_between_views", "incomplete"), ("serving_before_switch", "complete"))
    assert {stage for stage, _ in stages} <= set(faults.SERVING_STAGES)
    for stage, left in stages:
        proc = sync_process(out, stage)
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, output
        assert_serves(repo, older, newer)
        built = [s for s in repository.stores(repo) if s != repository.current_store(repo)
                 and (repository.read_state(s) or {}).get("snapshot_id", newer["id"]) == newer["id"]]
        assert len(built) == 1 and (repository.read_state(built[0]) is None) == (left == "incomplete")
    for store in repository.stores(repo):  # the complete, unswitched one would be re-pointed: build for real
        state = repository.read_state(store)
        if state and state["snapshot_id"] == newer["id"]:
            shutil.rmtree(store)

    # killed from outside while SQLite writes the new store (its journal exists), or as soon after as we see
    before = set(repository.stores(repo))
    proc = sync_process(out)
    deadline, writing = time.monotonic() + 300, False
    while proc.poll() is None and time.monotonic() < deadline and not writing:
        new = set(repository.stores(repo)) - before
        writing = any(os.path.exists(os.path.join(s, "online.db-journal")) for s in new)
        time.sleep(0.002)
    proc.kill()
    proc.communicate(timeout=60)
    served = repository.current_state(repo)["snapshot_id"]
    assert served == older["id"] or not writing  # killed while writing: the switch never happened
    assert_serves(repo, *((older, newer) if served == older["id"] else (newer, older)))

    # the next sync completes, and removes what the killed ones left
    assert sync(out) == 0
    assert_serves(repo, newer, older)
    assert all(repository.read_state(s) is not None for s in repository.stores(repo))


def test_published_prices_reproduce_each_published_plan(published):
    """From the prices table and promotion_scores alone: x = rho*E where value
    minus prices > 0, 0 where < 0, within 1e-6 of capacity; ties are left open."""
    newer = snapshot(published["newer"])
    scores, prices = newer["scores"], newer["prices"]
    capacity = worlds.table(published["newer"], "capacity").set_index(["market", "surface"])
    checked = 0
    for (market, surface), rows in prices.groupby(["market", "surface"]):
        tracks = scores[(scores["market"] == market) & (scores["surface"] == surface)]
        r = reduced_costs(tracks["value"].to_numpy(), lookup_prices(rows, tracks))
        cap = tracks["max_promoted_plays"].to_numpy()
        ties = (np.abs(r) <= 1e-9) & (cap > 0)
        planned = np.where(r > 1e-9, cap, 0.0)
        off = np.abs(planned - tracks["planned_promoted_plays"].to_numpy())[~ties]
        assert off.max(initial=0.0) <= 1e-6 * capacity.loc[(market, surface), "capacity"], (market, surface)
        checked += int((~ties & (cap > 0)).sum())
    assert checked >= 40  # enough rows whose x the prices determine to mean something (49 on this world)
