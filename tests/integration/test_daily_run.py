"""The daily job end to end on small sample worlds, through the real CLI."""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import os
import subprocess
import sys
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from tests.support import worlds

DAY = worlds.END.isoformat()
SCORE_DATE = (worlds.END + dt.timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")))


@pytest.fixture(scope="module")
def published(world, tmp_path_factory):
    """One real `oasis run` in a subprocess, as a user would run it."""
    out = str(tmp_path_factory.mktemp("out"))
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--date", DAY, "--input", world,
                           "--output", out], capture_output=True, text=True, timeout=600)
    return out, proc


def run(*args) -> int:
    return cli.main(["run", *args])


def test_run_publishes_snapshot_latest_and_warehouse(published):
    out, proc = published
    assert proc.returncode == 0, proc.stderr[-3000:]
    (snap,) = worlds.snapshot_dirs(out)
    m = worlds.manifest(snap)
    assert worlds.latest(out) == f"score_date={SCORE_DATE}/{m['snapshot_id']}"
    assert m["score_date"] == SCORE_DATE and all(c["passed"] for c in m["validation"])
    # the summary names where things went and what was dropped
    assert snap in proc.stdout and "dead-lettered" in proc.stdout and "eligible" in proc.stdout
    # every file listed in the manifest exists with its size, rows and sha256
    for name, t in m["tables"].items():
        assert t["rows"] == sum(f["rows"] for f in t["files"])
        for f in t["files"]:
            data = open(os.path.join(snap, f["path"]), "rb").read()
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
            assert pq.read_metadata(os.path.join(snap, f["path"])).num_rows == f["rows"]
    # the config and every input partition read are recorded
    assert m["config"]["window_days"] == 28 and m["inputs"]["engagement"] and m["inputs"]["enrollments"]
    assert all(v.startswith("sha256:") for v in m["inputs"]["engagement"].values())
    # the aggregation's spilled shards were read back and removed; every phase is timed
    assert m["metrics"]["rows_spilled"] > 0
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"oasis-scratch-{m['snapshot_id']}*"))
    assert set(m["seconds"]) == {"plan", "pipeline", "describe_and_gates", "report", "publish_wait",
                                 "wait_publish_lock", "wait_warehouse"}
    assert m["seconds"]["wait_warehouse"] < 1.0  # nobody held the warehouse
    # warehouse: same rows for the score date, registry and latest views
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    for name in ("promotion_scores", "campaign_delivery", "capacity"):
        n = con.execute(f"SELECT count(*) FROM {name} WHERE score_date = DATE '{SCORE_DATE}'").fetchone()[0]
        assert n == m["tables"][name]["rows"] > 0
        v = con.execute(f"SELECT count(*), min(snapshot_id), max(snapshot_id) FROM {name}_latest").fetchone()
        assert v == (n, m["snapshot_id"], m["snapshot_id"])
    assert con.execute("SELECT snapshot_id FROM snapshots").fetchall() == [(m["snapshot_id"],)]


def test_one_row_per_enrolled_track_market_surface(published, world):
    out, _ = published
    (snap,) = worlds.snapshot_dirs(out)
    scores = worlds.table(snap, "promotion_scores")
    export = pq.read_table(glob.glob(f"{world}/enrollments/dt={DAY}/*.parquet")[0]).to_pandas()
    export = export[export["market"].str.fullmatch(r"[A-Z]{2}")]
    expected = {(t, mk, s) for t, mk in zip(export["track_id"], export["market"])
                for s in ("radio", "autoplay", "mixes")}
    got = set(zip(scores["track_id"], scores["market"], scores["surface"]))
    assert got == expected and len(scores) == len(expected)
    inel = scores[~scores["eligible"]]
    assert (inel["planned_promoted_plays"] == 0).all() and (inel["score"] == 0).all()
    assert inel["reason"].notna().all() and scores[scores["eligible"]]["reason"].isna().all()


def test_dead_letters_carry_reasons_and_match_the_manifest(published):
    out, _ = published
    (snap,) = worlds.snapshot_dirs(out)
    m = worlds.manifest(snap)
    dead = pq.read_table(m["dead_letters"]).to_pandas()
    assert len(dead) == m["dead_letter_count"] > 0
    assert dead["reason"].notna().all() and dead["row_json"].str.startswith("{").all()
    assert {"unknown_surface", "negative_ms_played", "malformed_market"} <= set(dead["reason"])


def test_rerun_is_idempotent_and_force_gives_identical_content(published, world, capsys):
    out, _ = published
    (first,) = worlds.snapshot_dirs(out)
    assert run("--date", DAY, "--input", world, "--output", out) == 0
    assert "already published" in capsys.readouterr().out
    assert worlds.snapshot_dirs(out) == [first]

    assert run("--date", DAY, "--input", world, "--output", out, "--force") == 0
    dirs = worlds.snapshot_dirs(out)
    assert len(dirs) == 2
    a, b = (worlds.manifest(d) for d in dirs)
    assert a["run_fingerprint"] == b["run_fingerprint"]
    # the second run reused stored aggregates instead of raw days, and still agrees
    assert len(b["inputs"]["built_days"]) == 1 and len(a["inputs"]["built_days"]) > 1
    for name in a["tables"]:
        assert a["tables"][name]["content_sha256"] == b["tables"][name]["content_sha256"], name
    assert worlds.latest(out).endswith(b["snapshot_id"])
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM promotion_scores").fetchone()[0]
    assert n == b["tables"]["promotion_scores"]["rows"]  # replaced, not duplicated


def test_same_inputs_into_another_output_give_identical_files_except_the_id(published, world, tmp_path):
    out, _ = published
    assert run("--date", DAY, "--input", world, "--output", str(tmp_path)) == 0
    (other,) = worlds.snapshot_dirs(str(tmp_path))
    first = worlds.snapshot_dirs(out)[0]
    for name in ("promotion_scores", "campaign_delivery", "capacity"):
        x = worlds.table(first, name).drop(columns="snapshot_id")
        y = worlds.table(other, name).drop(columns="snapshot_id")
        assert x.equals(y), name


def _no_snapshot(out):
    return not worlds.snapshot_dirs(out) and worlds.latest(out) is None


def test_wrong_column_type_fails_naming_the_file(world, tmp_path, capsys):
    w = worlds.copy_world(world, str(tmp_path / "w"))
    (f,) = glob.glob(f"{w}/engagement/dt={DAY}/*.parquet")[:1]
    t = pq.read_table(f)
    t = t.set_column(t.schema.get_field_index("ms_played"), "ms_played", t.column("ms_played").cast(pa.string()))
    pq.write_table(t, f)
    out = str(tmp_path / "out")
    assert run("--date", DAY, "--input", w, "--output", out) == 1
    err = capsys.readouterr().err
    assert f in err and "ms_played" in err
    assert _no_snapshot(out)


def test_unreadable_file_fails_naming_the_file(world, tmp_path, capsys):
    w = worlds.copy_world(world, str(tmp_path / "w"))
    bad = f"{w}/engagement/dt={DAY}/part-99999.parquet"
    with open(bad, "wb") as fh:
        fh.write(b"this is not parquet")
    out = str(tmp_path / "out")
    assert run("--date", DAY, "--input", w, "--output", out) == 1
    assert bad in capsys.readouterr().err
    assert _no_snapshot(out)


def test_missing_engagement_partition_is_a_clear_error(world, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run("--date", "2027-01-01", "--input", world, "--output", out) == 1
    err = capsys.readouterr().err
    assert "no enrollments partition" in err or "no engagement partition" in err
    assert _no_snapshot(out)


def test_bad_rows_above_the_ceiling_publish_nothing(tmp_path, capsys):
    w = worlds.make_world(str(tmp_path / "w"), days=3, bad_row_share=0.03, seed=5)
    out = str(tmp_path / "out")
    assert run("--date", DAY, "--input", w, "--output", out) == 1
    err = capsys.readouterr().err
    assert "bad rows above the ceiling" in err and "engagement" in err
    assert _no_snapshot(out)
    # an engineer can raise the ceiling in the config, and then it publishes
    cfg = tmp_path / "oasis.toml"
    cfg.write_text("max_bad_row_share = 0.05\n")
    assert run("--date", DAY, "--input", w, "--output", out, "--config", str(cfg)) == 0
    assert len(worlds.snapshot_dirs(out)) == 1


def test_bad_config_is_an_error_naming_the_key(world, tmp_path, capsys):
    cfg = tmp_path / "oasis.toml"
    cfg.write_text("promoted_share_cap = 1.5\nnot_a_key = 1\n")
    assert run("--date", DAY, "--input", world, "--output", str(tmp_path / "o"), "--config", str(cfg)) == 1
    assert "not_a_key" in capsys.readouterr().err
