"""`oasis snapshots list|show|rollback|gc` on real published snapshots, and
`oasis --log-format json` (the second snapshot is published by a JSON-logging
subprocess, whose stderr the first test checks)."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cli import main as cli
from tests.support import worlds

ROOT = Path(__file__).resolve().parents[2]
OLD = time.time() - 3 * 86400  # an mtime well past any grace period
OLD_ID = "20261101T000000Z"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """S1 (logs up to 11-23, a non-default config) published in-process, then
    S2 (logs up to 11-24, defaults) by `oasis --log-format json run` in a subprocess."""
    base = tmp_path_factory.mktemp("snapshots")
    world = worlds.make_world(str(base / "world"), days=6, tracks=60, events_per_day=3000, markets=2)
    out = str(base / "out")
    cfg = base / "oasis.toml"
    cfg.write_text("skip_penalty = 1.5\n")
    assert cli.main(["run", "--date", "2026-11-23", "--input", world, "--output", out, "--config", str(cfg)]) == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "--log-format", "json", "--log-level", "INFO",
                           "run", "--date", "2026-11-24", "--input", world, "--output", out],
                          capture_output=True, text=True, timeout=600, cwd=str(ROOT), env=env)
    s1, s2 = sorted((worlds.manifest(d) for d in worlds.snapshot_dirs(out)), key=lambda m: m["score_date"])
    return out, s1, s2, proc


@pytest.fixture
def out(published, tmp_path):
    dst = str(tmp_path / "out")
    shutil.copytree(published[0], dst)
    return dst


def rel(m) -> str:
    return f"score_date={m['score_date']}/{m['snapshot_id']}"


def snap(out, m) -> str:
    return os.path.join(out, "snapshots", f"score_date={m['score_date']}", m["snapshot_id"])


def oasis(*args) -> int:
    return cli.main(["snapshots", *args])


def test_json_logs_are_one_object_per_line_with_date_and_snapshot_id(published):
    _, _, s2, proc = published
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) > 5
    records = []
    for line in lines:
        rec = json.loads(line)  # every stderr line is a JSON log record
        assert {"timestamp", "level", "logger", "message"} <= set(rec), rec
        dt.datetime.fromisoformat(rec["timestamp"])
        assert rec["date"] == "2026-11-24" and rec["snapshot_id"] == s2["snapshot_id"], rec
        records.append(rec)
    # the run's progress lines are log records too, and Beam's own logs (from its threads) carry the context
    assert any(r["logger"] == "oasis.progress" and "manifest written" in r["message"] for r in records)
    assert any(r["logger"].startswith("apache_beam") for r in records)
    assert s2["snapshot_id"] in proc.stdout  # the summary still goes to stdout


def test_list_marks_latest_and_shows_rows_and_validation(published, capsys):
    out, s1, s2, _ = published
    assert oasis("list", "--output", out) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if not line.startswith("* = LATEST")]
    (l1,) = [line for line in rows if s1["snapshot_id"] in line]
    (l2,) = [line for line in rows if s2["snapshot_id"] in line]
    assert l2.startswith("*") and not l1.startswith("*")
    for line, m in ((l1, s1), (l2, s2)):
        cells = line.lstrip("* ").split()
        assert cells[0] == m["score_date"] and cells[-1] == "passed"
        assert [int(c) for c in cells[-4:-1]] == [m["tables"][t]["rows"] for t in
                                                  ("promotion_scores", "campaign_delivery", "capacity")]
    assert lines.index(l1) < lines.index(l2)  # oldest first
    assert f"* = LATEST ({rel(s2)})" in lines


def test_show_summarises_a_manifest(published, capsys):
    out, s1, _, _ = published
    assert oasis("show", s1["snapshot_id"], "--output", out) == 0
    text = capsys.readouterr().out
    assert "skip_penalty = 1.5   (default 1.0)" in text and "1 value(s) differ from the defaults" in text
    assert "enrollments files   1" in text and f"engagement files    {len(s1['inputs']['engagement'])}" in text
    for name, t in s1["tables"].items():
        assert f"{name:<18} {t['rows']:>10,} rows  {len(t['files']):>3} file(s)" in text
    assert "validation   all passed" in text
    assert f"dead letters {s1['dead_letter_count']:,} row(s)" in text and "(LATEST)" not in text
    assert oasis("show", "no-such-id", "--output", out) == 1
    assert "no published snapshot 'no-such-id'" in capsys.readouterr().err


def test_rollback_verifies_checksums_and_moves_latest(published, out, capsys):
    _, s1, s2, _ = published
    f = os.path.join(snap(out, s1), s1["tables"]["promotion_scores"]["files"][0]["path"])
    good = Path(f).read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, other content
    Path(f).write_bytes(bytes(bad))
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out) == 1
    err = capsys.readouterr().err
    assert "refusing" in err and "sha256 differs" in err and s1["tables"]["promotion_scores"]["files"][0]["path"] in err
    assert worlds.latest(out) == rel(s2)

    os.remove(f)
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out) == 1
    assert "missing" in capsys.readouterr().err and worlds.latest(out) == rel(s2)

    Path(f).write_bytes(good)
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out) == 0
    text = capsys.readouterr().out
    assert f"LATEST: {rel(s2)} -> {rel(s1)} (back to an earlier score date)" in text
    assert worlds.latest(out) == rel(s1)
    # and forward again
    assert oasis("rollback", "--to", s2["snapshot_id"], "--output", out) == 0
    assert worlds.latest(out) == rel(s2)


def test_gc_never_deletes_latest_or_newer_and_keeps_the_newest(published, out, capsys):
    _, s1, s2, _ = published
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out) == 0
    capsys.readouterr()
    # LATEST on S1: S1 is protected as LATEST, S2 as newer than LATEST, whatever --keep says
    assert oasis("gc", "--keep", "0", "--output", out) == 0
    assert "deleted 0 snapshot(s)" in capsys.readouterr().out
    assert len(worlds.snapshot_dirs(out)) == 2

    assert oasis("rollback", "--to", s2["snapshot_id"], "--output", out) == 0
    capsys.readouterr()
    assert oasis("gc", "--keep", "2", "--output", out) == 0  # both are among the 2 newest
    assert len(worlds.snapshot_dirs(out)) == 2
    capsys.readouterr()
    assert oasis("gc", "--keep", "1", "--dry-run", "--output", out) == 0
    assert f"would delete snapshot {rel(s1)}" in capsys.readouterr().out
    assert len(worlds.snapshot_dirs(out)) == 2
    assert oasis("gc", "--keep", "1", "--output", out) == 0
    text = capsys.readouterr().out
    assert f"deleted snapshot {rel(s1)}" in text and "deleted 1 snapshot(s)" in text
    assert f"deleted its dead letters: {os.path.join(out, 'dead_letters', 'run=' + s1['snapshot_id'])}" in text
    assert [os.path.basename(d) for d in worlds.snapshot_dirs(out)] == [s2["snapshot_id"]]
    assert not os.path.exists(snap(out, s1)) and not os.path.exists(s1["dead_letters"].replace(published[0], out))
    assert worlds.latest(out) == rel(s2)


def _make(path: str, age_s: float | None = None) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"PAR1 partial PAR1")
    if age_s is not None:
        t = time.time() - age_s
        for p in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            os.utime(p, (t, t))
    return path


def test_gc_deletes_orphans_past_the_grace_period_and_keeps_fresh_ones(published, out, capsys):
    _, s1, s2, _ = published
    now_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    snaps = os.path.join(out, "snapshots")
    old_orphan = os.path.dirname(os.path.dirname(_make(
        f"{snaps}/score_date=2026-11-20/{OLD_ID}-dead01/promotion_scores/part-00000.parquet", age_s=3 * 86400)))
    fresh_orphan = os.path.dirname(os.path.dirname(_make(
        f"{snaps}/score_date=2026-11-25/{now_id}-fresh1/promotion_scores/part-00000.parquet")))
    # an old run id whose files are still being written (a long job): kept
    busy = os.path.dirname(os.path.dirname(_make(
        f"{snaps}/score_date=2026-11-25/{OLD_ID}-busy01/capacity/part-00000.parquet")))
    agg = os.path.join(out, "aggregates", "dt=2026-11-22")
    named = Path(agg, "_SUCCESS").read_text().strip()
    for f in glob.glob(f"{agg}/{named}/**/*", recursive=True):  # the build the marker names is old too
        os.utime(f, (OLD, OLD))
    old_build = os.path.dirname(os.path.dirname(_make(f"{agg}/build={OLD_ID}-old001/tracks/part-00000.parquet",
                                                      age_s=3 * 86400)))
    fresh_build = os.path.dirname(os.path.dirname(_make(f"{agg}/build={now_id}-new001/tracks/part-00000.parquet")))

    assert oasis("gc", "--keep", "5", "--output", out) == 0
    text = capsys.readouterr().out
    assert f"deleted orphaned snapshot folder score_date=2026-11-20/{OLD_ID}-dead01: {old_orphan}" in text
    assert f"deleted orphaned aggregate build dt=2026-11-22/build={OLD_ID}-old001: {old_build}" in text
    assert "deleted 0 snapshot(s), 1 orphaned snapshot folder(s), 1 orphaned aggregate build(s)" in text
    assert not os.path.exists(old_orphan) and not os.path.exists(old_build)
    for kept in (fresh_orphan, busy, fresh_build, os.path.join(agg, named)):
        assert os.path.exists(kept), kept
        assert os.path.basename(kept) in text or kept.endswith(named)
    assert not os.path.exists(f"{snaps}/score_date=2026-11-20") or os.listdir(f"{snaps}/score_date=2026-11-20") == []
    assert len(worlds.snapshot_dirs(out)) == 2 and worlds.latest(out) == rel(s2)

    # with no grace period, the fresh orphans go too; published snapshots and the named build stay
    assert oasis("gc", "--keep", "5", "--grace-minutes", "0", "--output", out) == 0
    assert "2 orphaned snapshot folder(s), 1 orphaned aggregate build(s)" in capsys.readouterr().out
    assert not any(os.path.exists(p) for p in (fresh_orphan, busy, fresh_build))
    assert len(worlds.snapshot_dirs(out)) == 2
    for day in glob.glob(f"{out}/aggregates/dt=*"):  # every build a marker names is whole
        build = Path(day, "_SUCCESS").read_text().strip()
        assert glob.glob(f"{day}/{build}/**/*.parquet", recursive=True), day


@pytest.mark.emulator
def test_list_rollback_and_gc_on_gcs(published, gcs_env, bq_env, capsys):
    """The same commands against a gs:// output root on the GCS emulator, the
    warehouse on the BigQuery emulator following each rollback."""
    from pipelines import storage

    local, s1, s2, _ = published
    out = f"{gcs_env.root}/out"
    for f in glob.glob(f"{local}/**/*", recursive=True):
        if os.path.isfile(f) and not f.endswith((".duckdb", ".lock", ".wal")):
            storage.write_bytes(f"{out}/{os.path.relpath(f, local)}", Path(f).read_bytes())
    orphan = f"{out}/snapshots/score_date=2026-11-20/{OLD_ID}-dead01"
    storage.write_bytes(f"{orphan}/promotion_scores/part-00000.parquet", b"PAR1 partial PAR1")
    latest = lambda: storage.read_pointer(f"{out}/snapshots/LATEST").content  # noqa: E731

    assert oasis("list", "--output", out) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("*  ")]
    assert len(rows) == 1 and s2["snapshot_id"] in rows[0]

    victim = f"{out}/snapshots/{rel(s1)}/{s1['tables']['capacity']['files'][0]['path']}"
    good = storage.read_bytes(victim)
    storage.write_bytes(victim, good[:-1] + bytes([good[-1] ^ 0xFF]))
    wh = ["--warehouse", bq_env.uri]
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out) == 1  # a gs:// root names its warehouse
    assert "pass --warehouse" in capsys.readouterr().err and latest() == rel(s2)
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out, *wh) == 1
    assert "sha256 differs" in capsys.readouterr().err and latest() == rel(s2)
    storage.write_bytes(victim, good)
    assert oasis("rollback", "--to", s1["snapshot_id"], "--output", out, *wh) == 0
    assert latest() == rel(s1)
    registry = {r["snapshot_id"]: r for r in bq_env.client().query(
        f"SELECT snapshot_id, is_current, pulled_at FROM `{bq_env.project}.{bq_env.dataset}.snapshots`").result()}
    assert registry[s1["snapshot_id"]]["is_current"] is True
    view = bq_env.client().query(f"SELECT DISTINCT snapshot_id FROM "
                                 f"`{bq_env.project}.{bq_env.dataset}.promotion_scores_latest`").result()
    assert [r["snapshot_id"] for r in view] == [s1["snapshot_id"]]

    # LATEST on S1: S2 is newer and stays; the orphan was just written (fresh on GCS): kept
    assert oasis("gc", "--keep", "0", "--output", out) == 0
    text = capsys.readouterr().out
    assert "deleted 0 snapshot(s), 0 orphaned snapshot folder(s)" in text and "inside the grace period" in text
    assert oasis("rollback", "--to", s2["snapshot_id"], "--output", out, *wh) == 0
    assert oasis("gc", "--keep", "1", "--grace-minutes", "0", "--output", out) == 0
    text = capsys.readouterr().out
    assert f"deleted snapshot {rel(s1)}" in text and "deleted orphaned snapshot folder" in text
    assert storage.list_files(f"{out}/snapshots/{rel(s1)}") == [] and storage.list_files(orphan) == []
    assert storage.list_dirs(f"{out}/snapshots/score_date={s2['score_date']}") == [s2["snapshot_id"]]
    assert latest() == rel(s2)
