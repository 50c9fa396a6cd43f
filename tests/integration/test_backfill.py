"""`oasis backfill` end to end on a small sample world, through the real CLI:
publishes each date once, skips identical reruns, republishes with --force
(in worker processes), never moves LATEST back, and reports a failing date
while the others publish."""
from __future__ import annotations

import datetime as dt
import glob
import io
import json
import os
import re
import shutil
import sys

import duckdb
import pytest

from jobs.cli import main as cli
from jobs.manifest import FORMAT_VERSION
from schemas import AGGREGATE_FORMAT_VERSION
from tests.support import worlds

START, END = "2026-11-22", "2026-11-24"  # logs-up-to dates; the world holds 2026-11-19 .. 2026-11-24


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                             markets=2)


def backfill(world, out, *extra, start=START, end=END) -> int:
    return cli.main(["backfill", "--start", start, "--end", end, "--input", world, "--output", out, *extra])


def manifests(out) -> list[dict]:
    return sorted((worlds.manifest(d) for d in worlds.snapshot_dirs(out)), key=lambda m: m["created_at"])


def rows_of(stdout: str) -> dict[str, list[str]]:
    """The summary table: logs date -> [status, snapshot id, seconds, error...]; it
    labels both dates (logs_date, score_date = logs date + 1)."""
    out = {}
    lines = stdout.splitlines()
    assert any(re.match(r"^logs_date\s+score_date\s+status", line) for line in lines), stdout
    for line in lines:
        if re.match(r"^\d{4}-\d{2}-\d{2}\s", line):
            date, score_date, *rest = line.split()
            assert dt.date.fromisoformat(score_date) == dt.date.fromisoformat(date) + dt.timedelta(days=1)
            out[date] = rest
    return out


@pytest.fixture(scope="module")
def first(world, tmp_path_factory):
    """A 3-date backfill into an empty output root (the state other tests copy)."""
    out = str(tmp_path_factory.mktemp("out"))
    capture = pytest.MonkeyPatch()  # capsys is per test; this fixture runs once per module
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    for k in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        capture.delenv(k)
    capture.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")  # lineage events to a file (test_lineage_...)
    capture.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", lineage_file(out))
    capture.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    try:
        code = backfill(world, out)
    finally:
        capture.undo()
    return out, code, stdout.getvalue(), stderr.getvalue()


def lineage_file(out: str) -> str:
    return f"{out}-lineage.ndjson"


def run_records(out) -> list[dict]:
    return [json.load(open(p)) for p in sorted(glob.glob(f"{out}/runs/*.json"))]


def copy_out(first, tmp_path) -> str:
    dst = str(tmp_path / "out")
    shutil.copytree(first[0], dst)
    return dst


def test_backfill_publishes_each_date_and_leaves_latest_on_the_newest(first):
    out, code, stdout, stderr = first
    assert code == 0, stdout + stderr[-3000:]
    ms = manifests(out)
    assert [m["as_of"] for m in ms] == [START, "2026-11-23", END]
    assert [m["score_date"] for m in ms] == ["2026-11-23", "2026-11-24", "2026-11-25"]
    assert worlds.latest(out) == f"score_date=2026-11-25/{ms[-1]['snapshot_id']}"
    # each date carries on the guardrail's state of the date before (hysteresis): its pulled-back rows are an
    # input of the run fingerprint
    assert [m["previous_snapshot"] for m in ms] == ["", ms[0]["snapshot_id"], ms[1]["snapshot_id"]]
    for prev, m in zip(ms, ms[1:]):
        held = worlds.table(worlds.snapshot_dirs(out)[ms.index(prev)], "promotion_scores")["pulled_back"].sum()
        assert (f"pulled_back/{prev['score_date']}" in m["inputs"]["sources_by_day"]) == bool(held)
    assert m["aggregate_format_version"] == AGGREGATE_FORMAT_VERSION and m["format_version"] == FORMAT_VERSION
    # aggregates: each day built from raw once in the whole backfill
    assert [m["inputs"]["built_days"] for m in ms] == [
        ["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"], ["2026-11-23"], ["2026-11-24"]]
    # the summary table: every date with its status and snapshot id
    table = rows_of(stdout)
    assert {d: r[:2] for d, r in table.items()} == {m["as_of"]: ["published", m["snapshot_id"]] for m in ms}
    assert "3 published, 0 skipped (already published), 0 failed" in stdout
    assert f"LATEST: score_date=2026-11-25/{ms[-1]['snapshot_id']}" in stdout
    # progress on stderr: per-date status and an ETA
    for date in (START, "2026-11-23", END):
        assert re.search(rf"^logs {date} \(score \S+\)\s+running", stderr, re.M)
        assert re.search(rf"^logs {date} \(score \S+\)\s+published", stderr, re.M)
    assert "ETA" in stderr and "queued 2" in stderr
    # the warehouse holds each score date once
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    got = dict(con.execute("SELECT CAST(score_date AS VARCHAR), count(*) FROM promotion_scores GROUP BY 1").fetchall())
    assert got == {m["score_date"]: m["tables"]["promotion_scores"]["rows"] for m in ms}


def test_a_backfill_emits_one_lineage_pair_and_writes_one_record_per_date(first):
    out = first[0]
    ms = {m["as_of"]: m for m in manifests(out)}
    recs = {r["logs_date"]: r for r in run_records(out)}
    assert sorted(recs) == sorted(ms) == [START, "2026-11-23", END]
    assert {r["command"] for r in recs.values()} == {"backfill"}
    assert len({r["parent"] for r in recs.values()}) == 1 and None not in {r["parent"] for r in recs.values()}
    for day, r in recs.items():
        assert r["status"] == "published" and r["run_id"] == r["snapshot_id"] == ms[day]["snapshot_id"]
    events = [json.loads(line) for line in open(lineage_file(out))]
    by_run: dict[str, list[str]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"], []).append(e["eventType"])
    assert sorted(by_run.values()) == [["START", "COMPLETE"]] * 3
    assert set(by_run) == {r["lineage_run_id"] for r in recs.values()}
    for e in events:
        if e["eventType"] == "COMPLETE":
            (r,) = [r for r in recs.values() if r["lineage_run_id"] == e["run"]["runId"]]
            rows = {o["name"].rsplit("/", 1)[-1]: o["outputFacets"]["outputStatistics"]["rowCount"]
                    for o in e["outputs"] if o["namespace"] == "file"}
            assert rows == {t: v["rows"] for t, v in ms[r["logs_date"]]["tables"].items()}


def test_identical_backfill_publishes_nothing(first, world, tmp_path, capsys):
    out = copy_out(first, tmp_path)
    before = manifests(out)
    assert backfill(world, out) == 0
    stdout = capsys.readouterr().out
    assert manifests(out) == before
    table = rows_of(stdout)
    assert {d: r[:2] for d, r in table.items()} == {m["as_of"]: ["skipped", m["snapshot_id"]] for m in before}
    assert "0 published, 3 skipped" in stdout
    assert worlds.latest(out) == f"score_date=2026-11-25/{before[-1]['snapshot_id']}"
    new = [r for r in run_records(out) if r["status"] != "published"]
    assert sorted((r["logs_date"], r["status"], r["snapshot_id"]) for r in new) == \
        [(m["as_of"], "already_published", m["snapshot_id"]) for m in before]


def test_force_republishes_every_date_in_worker_processes(first, world, tmp_path, capsys):
    out = copy_out(first, tmp_path)
    before = manifests(out)
    assert backfill(world, out, "--force", "--workers", "2") == 0
    stdout = capsys.readouterr().out
    ms = manifests(out)
    new = [m for m in ms if m["snapshot_id"] not in {b["snapshot_id"] for b in before}]
    assert sorted(m["as_of"] for m in new) == [START, "2026-11-23", END]
    # same inputs, config and code: same content as the first publish of each date. One race is
    # allowed: the workers run two dates at once, so END's delivery reconciliation names the plan of
    # the day before as it found it, the first pass's or this run's republish of it (the same plan,
    # another snapshot id); apart from that id its rows are the same.
    dirs = {worlds.manifest(d)["snapshot_id"]: d for d in worlds.snapshot_dirs(out)}
    for b in before:
        (n,) = [m for m in new if m["as_of"] == b["as_of"]]
        assert n["run_fingerprint"] == b["run_fingerprint"]
        differ = [t for t in b["tables"] if n["tables"][t]["content_sha256"] != b["tables"][t]["content_sha256"]]
        assert differ in ([], ["delivery_reconciliation"]) and (not differ or b["as_of"] == END), differ
        if differ:
            plans = {m["snapshot_id"] for m in before + new if m["as_of"] == "2026-11-23"}
            old_t, new_t = (worlds.table(dirs[m["snapshot_id"]], "delivery_reconciliation") for m in (b, n))
            assert set(new_t["plan_snapshot_id"]) <= plans and set(old_t["plan_snapshot_id"]) <= plans
            keep = [c for c in old_t.columns if c not in ("snapshot_id", "plan_snapshot_id")]
            assert old_t[keep].equals(new_t[keep])
    newest = [m for m in new if m["as_of"] == END][0]
    assert worlds.latest(out) == f"score_date=2026-11-25/{newest['snapshot_id']}"
    assert "3 published, 0 skipped (already published), 0 failed" in stdout
    # the dates that ran in worker processes are recorded under the ids they published
    recs = {r["run_id"]: r for r in run_records(out)}
    assert all(recs[m["snapshot_id"]]["status"] == "published" for m in new)
    # the main process loaded each worker's snapshot into the real warehouse: replaced, not duplicated
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    got = dict(con.execute("SELECT CAST(score_date AS VARCHAR), count(DISTINCT snapshot_id) || ':' || count(*) "
                           "FROM promotion_scores GROUP BY 1").fetchall())
    assert got == {m["score_date"]: f"1:{m['tables']['promotion_scores']['rows']}" for m in new}
    assert sorted(r[0] for r in con.execute("SELECT snapshot_id FROM snapshots").fetchall()) == \
        sorted(m["snapshot_id"] for m in ms)
    assert con.execute("SELECT DISTINCT snapshot_id FROM promotion_scores_latest").fetchall() == \
        [(newest["snapshot_id"],)]


def test_backfill_of_older_dates_leaves_latest_where_it_was(first, world, tmp_path, capsys):
    out = copy_out(first, tmp_path)
    latest = worlds.latest(out)
    assert backfill(world, out, start="2026-11-21", end="2026-11-21") == 0
    stdout = capsys.readouterr().out
    (older,) = [m for m in manifests(out) if m["as_of"] == "2026-11-21"]
    assert rows_of(stdout)["2026-11-21"][:2] == ["published", older["snapshot_id"]]
    assert worlds.latest(out) == latest
    assert f"LATEST: {latest}" in stdout


def test_a_failing_date_is_reported_and_the_others_publish(world, tmp_path, capsys):
    """The score_drift gate is left out (`--skip-gate score_drift`): across the 2-day gap the held-back
    partition leaves, 11-25's scores moved PSI 0.29 from 11-23's on the 48 rows both hold (0.13-0.19
    between consecutive days of this 6-day, 60-track world), and the gate would stop 11-25. What
    this test is about is a failing date reported while the others publish; the gate failing on
    real drift, and its advice, are tested in test_gates.py."""
    w = worlds.copy_world(world, str(tmp_path / "w"))
    shutil.move(f"{w}/engagement/dt=2026-11-23", str(tmp_path / "held-back"))
    out = str(tmp_path / "out")
    assert backfill(w, out, "--skip-gate", "score_drift") == 1
    captured = capsys.readouterr()
    table = rows_of(captured.out)
    assert [table[d][0] for d in (START, "2026-11-23", END)] == ["published", "failed", "published"]
    assert "no engagement partition for logs date 2026-11-23" in captured.out
    assert "2 published, 0 skipped (already published), 1 failed" in captured.out
    assert re.search(r"^logs 2026-11-23 \(score 2026-11-24\)\s+failed.*no engagement partition", captured.err,
                     re.M)
    recs = {r["logs_date"]: r for r in run_records(out)}
    assert recs["2026-11-23"]["status"] == "failed" and "no engagement partition" in recs["2026-11-23"]["reason"]
    # the last run is this backfill, and one of its dates failed: status says so, naming it
    assert cli.main(["status", "--output", out, "--max-age-hours", "100000"]) == 1
    status_err = capsys.readouterr().err
    assert "2026-11-23" in status_err and "no engagement partition" in status_err
    first_pass = {m["as_of"]: m for m in manifests(out)}
    assert sorted(first_pass) == [START, END]
    assert first_pass[END]["inputs"]["missing_window_days"][-1] == "2026-11-23"
    assert worlds.latest(out) == f"score_date=2026-11-25/{first_pass[END]['snapshot_id']}"

    # The partition arrives; the same backfill again: 11-22 is unchanged (skipped), 11-23 runs and
    # rebuilds 11-22's aggregates (the first run of this backfill that needs them), 11-24 runs again
    # because its window now has 11-23, and rebuilds nothing the earlier runs already built.
    shutil.move(str(tmp_path / "held-back"), f"{w}/engagement/dt=2026-11-23")
    assert backfill(w, out, "--skip-gate", "score_drift") == 0
    table = rows_of(capsys.readouterr().out)
    assert [table[d][0] for d in (START, "2026-11-23", END)] == ["skipped", "published", "published"]
    second = {m["as_of"]: m for m in manifests(out) if m["snapshot_id"] not in
              {x["snapshot_id"] for x in first_pass.values()}}
    assert second["2026-11-23"]["inputs"]["built_days"] == [START, "2026-11-23"]
    assert second[END]["inputs"]["built_days"] == [END]
    assert "2026-11-23" not in second[END]["inputs"]["missing_window_days"]
    assert worlds.latest(out) == f"score_date=2026-11-25/{second[END]['snapshot_id']}"


def test_end_before_start_is_an_error(world, tmp_path, capsys):
    assert backfill(world, str(tmp_path / "o"), start="2026-11-24", end="2026-11-22") == 2
    assert "before --start" in capsys.readouterr().err
