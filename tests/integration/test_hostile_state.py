"""Damaged and hostile state, and the inputs and requests that used to end in a
traceback: every reader of state validates what it reads and either goes on
with a warning, falls back, or fails with one line naming the file; the repair
tools work on exactly these states. Each test is what a user met on the
previous main (its docstring says what happened there)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import duckdb
import pyarrow.parquet as pq
import pytest

from jobs import serving
from tests.support import invariants as inv
from tests.support import worlds
from tests.support.lifecycle import LOGS2, agreement_problems, oasis, two_snapshots


def no_traceback(*texts: str) -> bool:
    return not any("Traceback" in t for t in texts)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return two_snapshots(tmp_path_factory)


@pytest.fixture
def out(two, tmp_path):
    return two.copy(str(tmp_path / "out"))


def rel(m) -> str:
    return inv.target(m["score_date"], m["snapshot_id"])


def snap(out: str, m) -> str:
    return os.path.join(out, "snapshots", f"score_date={m['score_date']}", m["snapshot_id"])


# ------------------------------------------------------------------ LATEST ---
@pytest.mark.parametrize("damage", ["binary", "a folder"])
def test_a_damaged_latest_is_read_with_a_warning_and_repaired(two, out, damage):
    """Hostile LATEST: on main, bytes that are not text (or a folder) crashed
    `snapshots list`, `gc`, `oasis run` and the serving reader with a traceback.
    Now list and gc warn and keep everything, the reader says why it cannot
    serve, `repair` sets a folder aside and points LATEST at the newest sound
    snapshot, and a run mends it first and goes on."""
    latest = os.path.join(out, "snapshots", "LATEST")
    if damage == "binary":
        with open(latest, "wb") as f:
            f.write(b"\xff\xfe\x00\x9c garbage \x00" * 50)
    else:
        os.remove(latest)
        os.makedirs(os.path.join(latest, "inside"))
    code, text, err = oasis("snapshots", "list", "--output", out)
    assert code == 0 and no_traceback(err) and "warning: " in text
    code, text, err = oasis("snapshots", "gc", "--keep", "0", "--output", out)
    assert code == 0 and "deleted 0 snapshot(s)" in text and no_traceback(err)
    with pytest.raises(serving.NoValidSnapshot):
        serving.load_latest(out, allow_stale=True)  # a world of past dates: only the damage may refuse it
    keep = os.path.join(out, "keep-me")
    shutil.copytree(out, keep, ignore=shutil.ignore_patterns("keep-me"))

    code, text, err = oasis("snapshots", "repair", "--output", out)
    assert code == 0, err
    assert f"-> {rel(two.s2)}" in text and inv.latest(out) == rel(two.s2) and not agreement_problems(out)
    if damage == "a folder":
        assert "set the damaged LATEST aside as" in text

    code, _, err = oasis("run", "--date", LOGS2, "--input", two.world, "--output", keep)  # the run mends it too
    assert code == 0 and "repairing first" in err and "already published" in err, err
    assert inv.latest(keep) == rel(two.s2)


# ---------------------------------------------------------------- manifests ---
@pytest.mark.parametrize("doc", [[], {"tables": 3}, {"snapshot_id": 7}, "manifest"], ids=repr)
def test_a_manifest_of_the_wrong_shape_is_skipped_with_a_warning(two, out, doc):
    """Hostile manifest: valid JSON that is not a manifest. `list` leaves it out
    with a warning, `show` says the snapshot is damaged (main said it did not
    exist), gc deletes nothing, and the serving reader falls back to S1 saying
    why."""
    path = os.path.join(snap(out, two.s2), "_MANIFEST.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    code, text, err = oasis("snapshots", "list", "--output", out)
    assert code == 0 and "warning: not listed, its manifest cannot be read" in text and no_traceback(err)
    code, _, err = oasis("snapshots", "show", two.s2["snapshot_id"], "--output", out)
    assert code == 1 and "is DAMAGED, not fit to serve" in err and no_traceback(err)
    code, text, err = oasis("snapshots", "gc", "--keep", "0", "--grace-minutes", "0", "--output", out)
    assert code == 0 and "which has no manifest: keeping every snapshot" in text and os.path.exists(path)
    loaded = serving.load_latest(out, allow_stale=True)  # a world of past dates
    assert loaded.snapshot_id == two.s1["snapshot_id"] and "cannot be read" in loaded.fell_back_from[0][1]


def test_show_says_when_a_snapshots_files_are_damaged(two, out):
    """`snapshots show` of a snapshot whose table file was altered says it is
    DAMAGED and names the file (and rollback refuses it)."""
    f = os.path.join(snap(out, two.s1), two.s1["tables"]["capacity"]["files"][0]["path"])
    with open(f, "r+b") as fh:
        fh.seek(20)
        fh.write(b"\x00\x01\x02\x03")
    code, text, err = oasis("snapshots", "show", two.s1["snapshot_id"], "--output", out)
    assert code == 0 and "DAMAGED      not fit to serve:" in text
    assert f"{two.s1['tables']['capacity']['files'][0]['path']}: sha256 differs from the manifest" in text


# ------------------------------------------------ records and registry rows ---
def test_a_damaged_rollback_record_keeps_its_snapshot_pulled(two, out):
    """A rollback record whose bytes are garbage still pulls the snapshot its
    file name names: damage never puts a withdrawn snapshot back in service."""
    assert oasis("snapshots", "rollback", "--to", two.s1["snapshot_id"], "--output", out)[0] == 0
    (record,) = glob.glob(os.path.join(out, "snapshots", "_pulled", "*.json"))
    with open(record, "wb") as f:
        f.write(b"\x00not json{")
    code, _, err = oasis("run", "--date", LOGS2, "--input", two.world, "--output", out)
    assert code == 1 and f"{two.s2['snapshot_id']} was pulled" in err and no_traceback(err)
    assert inv.latest(out) == rel(two.s1)


def test_hostile_registry_rows_are_skipped_with_a_warning(two, out):
    """Registry rows that are not what the warehouse writes (an id that would
    break SQL, a missing date) are skipped with a warning; repair and the run
    still work from the rows that parse."""
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"))
    try:
        con.execute("INSERT INTO snapshots (snapshot_id, score_date, created_at, code_version, run_fingerprint, "
                    "promotion_scores_rows, campaign_delivery_rows, capacity_rows, manifest_uri, is_current) VALUES "
                    "('x''); DROP TABLE snapshots; --', DATE '2026-11-30', now(), 'c', 'f', 1, 1, 1, 'm', true)")
    finally:
        con.close()
    code, text, err = oasis("snapshots", "repair", "--output", out)
    assert code == 0 and no_traceback(err), err
    code, _, err = oasis("run", "--date", LOGS2, "--input", two.world, "--output", out)
    assert code == 0 and no_traceback(err), err
    assert inv.latest(out) == rel(two.s2)


# ------------------------------------------------------------ clear errors ---
def test_an_output_path_that_is_a_file_is_one_clear_line(tmp_path):
    """`snapshots list` (and every command) on a path that is a file: main
    ended in NotADirectoryError's traceback."""
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    for args in (["snapshots", "list"], ["snapshots", "gc", "--keep", "1"], ["snapshots", "repair"]):
        code, _, err = oasis(*args, "--output", str(f))
        assert code == 1 and f"output root {f} is a file, not a folder" in err and no_traceback(err), err


def test_a_zero_row_enrollments_export_is_one_clear_line(two, tmp_path):
    """A zero-row enrollments file: main crashed inside the Beam pipeline with an
    ArrowTypeError traceback. Now the plan refuses the empty export at once."""
    world = shutil.copytree(two.world, str(tmp_path / "world"))
    for f in glob.glob(f"{world}/enrollments/dt={LOGS2}/*.parquet"):
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    code, _, err = oasis("run", "--date", LOGS2, "--input", world, "--output", str(tmp_path / "out"))
    assert code == 1 and "has no rows" in err and "an empty export; nothing published" in err and no_traceback(err)


def test_explain_json_into_a_closed_pipe_exits_quietly(two):
    """`oasis explain --json | head -0`: main printed a BrokenPipeError traceback.
    Now the command stops quietly with exit 0: the reader went away and nothing
    is wrong (a `set -o pipefail` script piping to `head` keeps going)."""
    t = pq.read_table(glob.glob(os.path.join(snap(two.out, two.s2), "promotion_scores", "*.parquet"))[0]).to_pylist()[0]
    proc = subprocess.Popen(inv.cli_args("explain", "--date", two.s2["score_date"], "--track", t["track_id"],
                                         "--market", t["market"], "--output", two.out, "--json"),
                            cwd=inv.ROOT, env=inv.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_the_input_walker_does_not_follow_a_symlinked_folder(two, tmp_path):
    """A symlinked folder inside a partition (here a loop back to its parent):
    main's walker followed it and read the other days' files into this day
    (161 files for one partition of a 4-day world). Now it is skipped, with a
    warning, and the run reads exactly the partition's own rows."""
    world = shutil.copytree(two.world, str(tmp_path / "world"))
    os.symlink("..", os.path.join(world, "engagement", f"dt={LOGS2}", "loop"))
    out = two.copy(str(tmp_path / "out"))
    code, _, err = oasis("--log-level", "WARNING", "run", "--date", LOGS2, "--input", world, "--output", out,
                         "--force")
    assert code == 0, err
    assert "not following the symlinked folder" in err
    (m,) = [worlds.manifest(d) for d in worlds.snapshot_dirs(out) if worlds.manifest(d)["snapshot_id"] not in
            (two.s1["snapshot_id"], two.s2["snapshot_id"])]
    own = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{world}/engagement/dt={LOGS2}/*.parquet"))
    assert m["metrics"][f"checked/engagement/{LOGS2}"] == own
    assert all("/loop/" not in f for f in m["inputs"]["engagement"])
