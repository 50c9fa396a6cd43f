"""Publish gates (jobs/gates) end to end: a normal day passes every
gate; inputs or configs built to trip a gate make the run fail, publish
nothing, quarantine the would-be snapshot and name the gate; `--skip-gate`
publishes and is recorded. Gates no input can trip through a correct pipeline
(finite values, capacity, enrolled keys) are checked on a real run's tables
with one defect put in."""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from jobs.gates import checks as validation
from jobs.gates import drift, quarantine, suite
from jobs.layout import QUARANTINE_RECORD
from jobs.manifest import GateResult, Manifest, blocking_gates
from jobs.run.options import OptionError, RunOptions
from jobs.snapshots import store as publish
from pipelines.config import Config
from tests.support import worlds

DAY = worlds.END
PREV_DAY = worlds.END - dt.timedelta(days=1)
SCORE_DATE = DAY + dt.timedelta(days=1)


def run(*args) -> int:
    return cli.main(["run", *args])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                             markets=2)


@pytest.fixture(scope="module")
def base(world, tmp_path_factory):
    """An output root with the previous day's snapshot published."""
    out = str(tmp_path_factory.mktemp("base"))
    assert run("--date", PREV_DAY.isoformat(), "--input", world, "--output", out) == 0
    return out


@pytest.fixture(scope="module")
def normal(world, base, tmp_path_factory):
    """The normal next day published on top of `base`."""
    out = str(tmp_path_factory.mktemp("normal") / "out")
    shutil.copytree(base, out)
    assert run("--date", DAY.isoformat(), "--input", world, "--output", out) == 0
    return out


def _copy_output(base: str, tmp_path) -> str:
    return shutil.copytree(base, str(tmp_path / "out"))


def _rewrite_enrollments(world: str, dst: str, day: dt.date, change) -> str:
    w = worlds.copy_world(world, dst)
    for f in glob.glob(f"{w}/enrollments/dt={day.isoformat()}/*.parquet"):
        pq.write_table(change(pq.read_table(f)), f)
    return w


def _config(tmp_path, text: str) -> str:
    p = tmp_path / "oasis.toml"
    p.write_text(text)
    return str(p)


def _by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in checks}


def _quarantine(out: str) -> tuple[str, dict]:
    (q,) = glob.glob(f"{out}/quarantine/score_date={SCORE_DATE.isoformat()}/*/_QUARANTINE.json")
    with open(q) as f:
        return os.path.dirname(q), json.load(f)


def _assert_failed_only(out: str, base: str, err: str, gates: set[str]) -> dict:
    """The run published nothing new, LATEST stayed, the would-be snapshot is in
    quarantine with exactly `gates` failed, and the error names them."""
    assert worlds.snapshot_dirs(out) == [d.replace(base, out) for d in worlds.snapshot_dirs(base)]
    assert worlds.latest(out) == worlds.latest(base)
    folder, doc = _quarantine(out)
    assert {g["name"] for g in doc["failed_gates"]} == gates
    assert (blocking_gates([GateResult.from_dict(r) for r in doc["validation"]])
            == [g for g in validation.GATES if g in gates])
    assert f"validation failed ({', '.join(g for g in validation.GATES if g in gates)})" in err
    assert folder in err and "--skip-gate" in err
    # the would-be snapshot is gone from snapshots/ and its files are in quarantine, intact
    assert not glob.glob(f"{out}/snapshots/score_date={SCORE_DATE.isoformat()}/{doc['snapshot_id']}")
    for name, meta in doc["tables"].items():
        for f in meta["files"]:
            data = open(os.path.join(folder, f["path"]), "rb").read()
            assert hashlib.sha256(data).hexdigest() == f["sha256"]
    # the run's record says quarantined, with the gates and the folder (jobs.observe)
    (record,) = [json.load(open(p)) for p in glob.glob(f"{out}/runs/{doc['snapshot_id']}.json")]
    assert record["status"] == "quarantined" and set(record["failed_gates"]) == gates
    assert record["outputs"]["quarantine"] == folder and "validation failed" in record["reason"]
    return doc


# ------------------------------------------------------------ normal day ---
def test_a_normal_day_passes_every_gate_and_records_them(normal, base):
    first = worlds.manifest(worlds.snapshot_dirs(base)[0])
    (snap,) = [d for d in worlds.snapshot_dirs(normal) if f"score_date={SCORE_DATE}" in d]
    m = worlds.manifest(snap)
    checks = _by_name(m["validation"])
    assert list(checks) == list(validation.GATES)
    for c in checks.values():
        assert c["passed"] is True and c["skipped"] is False, c
        assert set(c) >= {"name", "passed", "skipped", "measured", "threshold", "detail"}
    cfg = Config()
    # compared with the previous day's snapshot, with the documented defaults
    assert checks["row_count"]["threshold"] == cfg.gate_max_row_drop == 0.5
    assert 0.0 <= checks["row_count"]["measured"] <= 0.5
    assert first["snapshot_id"] in checks["row_count"]["detail"]
    assert checks["score_drift"]["threshold"] == cfg.gate_max_score_psi
    assert 0.0 <= checks["score_drift"]["measured"] < cfg.gate_max_score_psi
    assert checks["eligible_share"]["threshold"] == {"min": 0.05, "max": 0.99}
    assert 0.05 < checks["eligible_share"]["measured"] < 0.99
    assert checks["capacity_use"]["threshold"] == 0.0 and 0 < checks["capacity_use"]["measured"] <= 1
    assert checks["enrolled_keys"]["measured"] == 0 and checks["finite_values"]["measured"] == 0
    # the first snapshot had nothing to compare with, and says so
    first_checks = _by_name(first["validation"])
    assert first_checks["row_count"]["measured"] is None and "no previous snapshot" in first_checks["row_count"]["detail"]
    assert first_checks["score_drift"]["passed"] and first_checks["score_drift"]["measured"] is None
    assert not glob.glob(f"{normal}/quarantine/*")


# ----------------------------------------------------- gates from inputs ---
def test_row_count_gate_quarantines_then_skip_gate_publishes(world, base, tmp_path, capsys):
    # the campaign system's export loses 55% of its tracks on the second day. With
    # fewer tracks sharing the same capacity the remaining scores really shift, and
    # score_drift rightly fails too on this world: this test is about row_count, so
    # the drift threshold is raised out of the way (drift has tests of its own)
    def lose_most(t: pa.Table) -> pa.Table:
        tracks = sorted(set(t.column("track_id").to_pylist()))
        keep = pa.array(tracks[: int(len(tracks) * 0.45)])
        return t.filter(pc.is_in(t.column("track_id"), keep))

    w = _rewrite_enrollments(world, str(tmp_path / "w"), DAY, lose_most)
    out = _copy_output(base, tmp_path)
    cfg = _config(tmp_path, "gate_max_score_psi = 100.0\n")
    capsys.readouterr()
    assert run("--date", DAY.isoformat(), "--input", w, "--output", out, "--config", cfg) == 1
    err = capsys.readouterr().err
    doc = _assert_failed_only(out, base, err, {"row_count"})
    rc = _by_name(doc["validation"])["row_count"]
    assert rc["measured"] > 0.5 and rc["threshold"] == 0.5 and "promotion_scores" in rc["detail"]
    assert os.path.isdir(doc["dead_letters"])  # dead letters are kept where they were

    # an engineer checked it by hand: --skip-gate publishes, and the manifest says so
    assert run("--date", DAY.isoformat(), "--input", w, "--output", out, "--config", cfg,
               "--skip-gate", "row_count") == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "gate row_count skipped" in err
    # ... and so do the summary, `snapshots list` and the report's headline: never "all passed"
    skipped = "1 gate(s) failed, skipped by hand (row_count)"
    assert f"validation:       {skipped}" in captured.out and "all passed" not in captured.out
    assert cli.main(["snapshots", "list", "--output", out]) == 0
    published = capsys.readouterr().out.split("quarantined (")[0]  # the quarantined copy is listed after
    listed = [line for line in published.splitlines() if f" {SCORE_DATE} " in line]
    assert len(listed) == 1 and listed[0].startswith("*") and skipped in listed[0]
    (snap,) = [d for d in worlds.snapshot_dirs(out) if f"score_date={SCORE_DATE}" in d]
    m = worlds.manifest(snap)
    checks = _by_name(m["validation"])
    assert checks["row_count"]["skipped"] is True and checks["row_count"]["passed"] is False
    assert checks["row_count"]["measured"] == pytest.approx(rc["measured"])
    assert all(c["passed"] and not c["skipped"] for n, c in checks.items() if n != "row_count")
    assert worlds.latest(out) == f"score_date={SCORE_DATE}/{m['snapshot_id']}"
    report = open(os.path.join(snap, "report.html")).read()
    assert skipped in report


def test_eligible_share_gate_trips_when_every_campaign_is_cancelled(world, base, tmp_path, capsys):
    def cancel_all(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("status")
        return t.set_column(i, "status", pa.array(["cancelled"] * t.num_rows, t.schema.field(i).type))

    w = _rewrite_enrollments(world, str(tmp_path / "w"), DAY, cancel_all)
    out = _copy_output(base, tmp_path)
    capsys.readouterr()
    assert run("--date", DAY.isoformat(), "--input", w, "--output", out) == 1
    doc = _assert_failed_only(out, base, capsys.readouterr().err, {"eligible_share"})
    share = _by_name(doc["validation"])["eligible_share"]
    assert share["measured"] == 0.0 and share["threshold"]["min"] == 0.05
    # no eligible rows: drift is not compared, and says why
    drift = _by_name(doc["validation"])["score_drift"]
    assert drift["passed"] and drift["measured"] is None and "eligible_share" in drift["detail"]


# ------------------------------------------------ a real shift of scores ---
def test_a_planted_real_shift_trips_score_drift_and_its_quarantine_can_be_worked_with(world, base, tmp_path,
                                                                                       capsys):
    """A tenth of the capacity (a config change) moves the scores of rows whose
    enrollment did not change: score_drift fails on those rows, even though it
    leaves monthly flight changes out. The quarantined would-be snapshot has its
    report, is listed, shown and explained (marked), an identical retry replaces
    it rather than adding a copy, `backfill --skip-gate` publishes it, and gc
    collects quarantine past retention."""
    out = _copy_output(base, tmp_path)
    cfg = _config(tmp_path, "promoted_share_cap = 0.005\n")
    args = ["--date", DAY.isoformat(), "--input", world, "--output", out, "--config", cfg]
    capsys.readouterr()
    assert run(*args) == 1
    doc = _assert_failed_only(out, base, capsys.readouterr().err, {"score_drift"})
    drift_gate = _by_name(doc["validation"])["score_drift"]
    assert drift_gate["measured"] > 0.25 and drift_gate["threshold"] == 0.25
    basis = drift_gate["basis"]
    assert basis["compared"] >= drift.PSI_MIN_ROWS and basis["campaign_changed"] == 0 and basis["days_apart"] == 1
    assert basis["previous_score_date"] == DAY.isoformat() and "same track, market, surface and campaign" in \
        basis["rows"]
    folder, _ = _quarantine(out)
    assert os.path.isfile(os.path.join(folder, "report.html"))
    sid = doc["snapshot_id"]

    # an identical retry fails the same way and replaces the copy instead of adding one
    assert run(*args) == 1
    err = capsys.readouterr().err
    assert "replaces 1 earlier quarantined copy" in err
    folder, doc = _quarantine(out)  # exactly one
    assert doc["snapshot_id"] != sid
    sid = doc["snapshot_id"]

    # listed after the published snapshots, shown and explained, each time marked as not published
    assert cli.main(["snapshots", "list", "--output", out]) == 0
    listed = capsys.readouterr().out
    assert "quarantined (failed a gate, NOT published" in listed
    assert re.search(rf"{SCORE_DATE}\s+{DAY}\s+{sid}\s.*score_drift", listed)
    assert cli.main(["snapshots", "show", sid, "--output", out]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("QUARANTINED  failed score_drift: NOT published") and "score_drift compared:" in shown
    scores = pq.read_table(os.path.join(folder, "promotion_scores")).to_pandas()
    row = scores[scores["eligible"]].iloc[0]
    assert cli.main(["explain", "--date", SCORE_DATE.isoformat(), "--snapshot", sid, "--track", row["track_id"],
                     "--market", row["market"], "--output", out]) == 0
    assert "QUARANTINED: failed gate(s) score_drift, NOT published" in capsys.readouterr().out
    assert cli.main(["explain", "--date", SCORE_DATE.isoformat(), "--track", row["track_id"],
                     "--market", row["market"], "--output", out]) == 1
    assert f"quarantined (not published) for {SCORE_DATE}: {sid}" in capsys.readouterr().err

    # the advice names the entry point in use: backfill takes --skip-gate, and it publishes
    bf = ["backfill", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--input", world, "--output", out,
          "--config", cfg]
    assert cli.main(bf) == 1
    assert (f"rerun the backfill of that logs date (--start {DAY} --end {DAY}) with --skip-gate score_drift"
            in capsys.readouterr().out)
    _quarantine(out)  # still one copy
    assert cli.main(bf + ["--skip-gate", "score_drift"]) == 0
    capsys.readouterr()
    (snap,) = [d for d in worlds.snapshot_dirs(out) if f"score_date={SCORE_DATE}" in d]
    checks = _by_name(worlds.manifest(snap)["validation"])
    assert checks["score_drift"]["skipped"] and not checks["score_drift"]["passed"]

    # gc removes quarantine once it is older than --quarantine-days, and not before
    assert cli.main(["snapshots", "gc", "--keep", "5", "--output", out]) == 0
    assert "quarantined" not in capsys.readouterr().out.split("gc:")[0]
    assert glob.glob(f"{out}/quarantine/score_date={SCORE_DATE}/*/_QUARANTINE.json")
    assert cli.main(["snapshots", "gc", "--keep", "5", "--quarantine-days", "0", "--output", out]) == 0
    assert "deleted quarantined would-be snapshot" in capsys.readouterr().out
    assert not glob.glob(f"{out}/quarantine/score_date={SCORE_DATE}/*")


def test_a_monthly_flight_change_does_not_trip_score_drift(tmp_path_factory):
    """At a month change every campaign is replaced (new floors, new pacing): on
    the default sample world that measured PSI 0.385 over all eligible rows and
    failed the gate, and the next day failed too against a snapshot two days
    old. Comparing like with like, the rows of a new flight are left out and
    the basis says so; the backfill across the change exits 0."""
    w = worlds.make_world(str(tmp_path_factory.mktemp("month") / "w"), days=6, tracks=60, events_per_day=3000,
                          markets=2, end_date=dt.date(2026, 10, 31))
    out = str(tmp_path_factory.mktemp("month") / "out")
    assert cli.main(["backfill", "--start", "2026-10-30", "--end", "2026-10-31", "--input", w, "--output", out,
                     "--config", _config(tmp_path_factory.mktemp("cfg"), "gate_min_eligible_share = 0.0\n")]) == 0
    by_date = {worlds.manifest(d)["score_date"]: worlds.manifest(d) for d in worlds.snapshot_dirs(out)}
    assert sorted(by_date) == ["2026-10-31", "2026-11-01"]
    first_of_month = _by_name(by_date["2026-11-01"]["validation"])["score_drift"]
    assert first_of_month["passed"] and not first_of_month["skipped"]
    assert first_of_month["basis"]["campaign_changed"] > 0 and first_of_month["basis"]["compared"] == 0
    assert first_of_month["basis"]["previous_score_date"] == "2026-10-31"
    assert "another campaign (a new flight)" in first_of_month["detail"]


# ----------------------------------------------------- gates from config ---
@pytest.fixture(scope="module")
def strict(world, base, tmp_path_factory):
    """The normal day run under a config with a tiny drift threshold and a high
    minimum capacity use (one run shared by the two gate tests below)."""
    tmp = tmp_path_factory.mktemp("strict")
    out = _copy_output(base, tmp)
    cfg = _config(tmp, "gate_max_score_psi = 0.0001\ngate_min_capacity_use = 0.95\n")
    code, err = _run_capturing("--date", DAY.isoformat(), "--input", world, "--output", out, "--config", cfg)
    assert code == 1
    doc = _assert_failed_only(out, base, err, {"score_drift", "capacity_use"})
    return _by_name(doc["validation"])


def _run_capturing(*args) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = run(*args)
    return code, buf.getvalue()


def test_score_drift_gate_trips_with_a_tiny_threshold(strict):
    drift = strict["score_drift"]
    assert not drift["passed"] and drift["threshold"] == 0.0001
    assert drift["measured"] > 0.0001 and "PSI" in drift["detail"]


def test_capacity_use_gate_trips_when_a_minimum_is_configured(strict):
    use = strict["capacity_use"]
    assert not use["passed"] and use["threshold"] == 0.95 and 0 < use["measured"] < 0.95


def test_unknown_gate_name_is_refused_before_any_work(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run("--date", DAY.isoformat(), "--input", world, "--output", str(tmp_path / "o"), "--skip-gate", "nope")
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(OptionError, match="unknown gate"):
        RunOptions(skip_gates=("nope",))
    assert not os.path.exists(tmp_path / "o")


# --------------------------- the same gate functions on a real run's tables ---
@pytest.fixture(scope="module")
def real(normal, world):
    """(tables, previous (folder, manifest), expected keys) of the normal day's run."""
    folders = worlds.snapshot_dirs(normal)
    cur = [d for d in folders if f"score_date={SCORE_DATE}" in d][0]
    prev = [d for d in folders if f"score_date={SCORE_DATE}" not in d][0]
    m = worlds.manifest(cur)
    tables = {name: publish.read_table_files([os.path.join(cur, f["path"]) for f in meta["files"]], name)
              for name, meta in m["tables"].items()}
    expected = validation.expected_enrollment_keys(
        sorted(glob.glob(f"{world}/enrollments/dt={DAY.isoformat()}/*.parquet")), RunOptions().batch_rows)
    return tables, (prev, Manifest.from_dict(worlds.manifest(prev))), expected


def _check(real, cfg=None, **changes):
    tables, previous, expected = real
    tables = {**tables, **changes}
    return {r.name: r for r in suite.check_snapshot(tables, cfg or Config(), previous=previous, expected_keys=expected)}


def test_real_tables_pass_and_the_eligible_share_maximum_is_enforced(real):
    assert all(c.passed for c in _check(real).values())
    c = _check(real, Config(gate_max_eligible_share=0.1))
    assert blocking_gates(list(c.values())) == ["eligible_share"]
    assert c["eligible_share"].measured > 0.1


def test_finite_values_gate_finds_a_nan(real):
    scores = real[0]["promotion_scores"]
    i = scores.schema.get_field_index("value")
    vals = scores.column("value").to_numpy(zero_copy_only=False).copy()
    vals[3] = np.nan
    c = _check(real, promotion_scores=scores.set_column(i, "value", pa.array(vals)))
    assert not c["finite_values"].passed and c["finite_values"].measured == 1
    assert "promotion_scores.value: 1" in c["finite_values"].detail


def test_capacity_gate_finds_planned_total_above_capacity(real):
    cap = real[0]["capacity"]
    i = cap.schema.get_field_index("planned_total")
    planned = cap.column("planned_total").to_numpy(zero_copy_only=False).copy()
    planned[0] = cap.column("capacity")[0].as_py() * 1.5 + 1
    c = _check(real, capacity=cap.set_column(i, "planned_total", pa.array(planned)))
    assert blocking_gates(list(c.values())) == ["capacity"] and c["capacity"].measured == 1


def test_enrolled_keys_gate_finds_missing_repeated_and_unexpected_rows(real):
    scores = real[0]["promotion_scores"]
    # a row lost
    c = _check(real, promotion_scores=scores.slice(1))
    assert "enrolled_keys" in blocking_gates(list(c.values())) and "1 missing" in c["enrolled_keys"].detail
    # a row twice
    c = _check(real, promotion_scores=pa.concat_tables([scores, scores.slice(0, 1)]))
    assert {"enrolled_keys", "unique_rows"} <= set(blocking_gates(list(c.values())))
    assert "1 extra rows" in c["enrolled_keys"].detail
    # a row for a track the export does not enroll
    other = scores.slice(0, 1)
    i = other.schema.get_field_index("track_id")
    other = other.set_column(i, other.schema.field(i), pa.array(["trk-not-enrolled"]))
    c = _check(real, promotion_scores=pa.concat_tables([scores, other]))
    assert "1 not in the enrollment export" in c["enrolled_keys"].detail
    assert c["enrolled_keys"].measured == 1


def test_expected_keys_leave_out_rows_the_run_dead_letters(world, tmp_path):
    (f,) = glob.glob(f"{world}/enrollments/dt={DAY.isoformat()}/*.parquet")
    t = pq.read_table(f)
    pairs = {(a, b) for a, b in zip(t.column("track_id").to_pylist(), t.column("market").to_pylist())}
    bad = t.slice(0, 1).set_column(t.schema.get_field_index("market"), "market", pa.array(["gb"]))
    bad = bad.set_column(bad.schema.get_field_index("track_id"), "track_id", pa.array(["trk-bad-row"]))
    p = tmp_path / "e.parquet"
    pq.write_table(pa.concat_tables([t, bad.cast(t.schema)]), p)
    keys = validation.expected_enrollment_keys([str(p)], RunOptions().batch_rows)
    assert keys.num_rows == 3 * len(pairs)
    assert set(zip(*(keys.column(k).to_pylist() for k in ("track_id", "market")))) == pairs
    assert set(keys.column("surface").to_pylist()) == {"radio", "autoplay", "mixes"}


def test_psi_is_zero_for_equal_distributions_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.random(5000)
    assert drift.population_stability_index(a, a) == 0.0
    small = drift.population_stability_index(a, rng.random(5000))
    big = drift.population_stability_index(a, rng.random(5000) ** 4)
    assert small < 0.01 < 0.25 < big


@pytest.mark.emulator
def test_quarantine_moves_a_would_be_snapshot_on_gcs(normal, gcs_env):
    """The quarantine step only goes through pipelines.storage: the same on gs://."""
    from types import SimpleNamespace

    from pipelines import storage

    (local,) = [d for d in worlds.snapshot_dirs(normal) if f"score_date={SCORE_DATE}" in d]
    m = worlds.manifest(local)
    sid = "20261125T000000Z-abcdef"
    snap = storage.join(gcs_env.root, "out", "snapshots", f"score_date={SCORE_DATE}", sid)
    rels = [f["path"] for meta in m["tables"].values() for f in meta["files"]]
    for rel in rels:
        storage.write_bytes(storage.join(snap, *rel.split("/")), open(os.path.join(local, rel), "rb").read())
    plan = SimpleNamespace(score_date=SCORE_DATE, as_of=DAY, snapshot_id=sid, snapshot_dir=snap,
                           dead_letter_dir=storage.join(gcs_env.root, "out", "dead_letters", f"run={sid}"))
    checks = [GateResult.from_dict(r) for r in m["validation"] if r["name"] != "row_count"] + [
        GateResult("row_count", passed=False, measured=0.9, threshold=0.5, detail="made up for this test")]
    would_be = Manifest.from_dict({**m, "snapshot_id": sid})
    would_be.validation = checks
    out = storage.join(gcs_env.root, "out")
    where, replaced = quarantine.quarantine(out, plan, would_be)
    assert where == storage.join(gcs_env.root, "out", "quarantine", f"score_date={SCORE_DATE}", sid)
    assert replaced == [] and not storage.list_files(snap)
    doc = json.loads(storage.read_bytes(storage.join(where, QUARANTINE_RECORD)))
    assert [g["name"] for g in doc["failed_gates"]] == ["row_count"] and sorted(doc["files"]) == sorted(rels)
    (q,) = quarantine.list_quarantined(out)  # read back as a manifest, on gs:// too
    assert q.manifest.snapshot_id == sid and q.failed_gates == ["row_count"] and q.folder == where
    for rel in rels:
        data = storage.read_bytes(storage.join(where, *rel.split("/")))
        assert data == open(os.path.join(local, rel), "rb").read()
