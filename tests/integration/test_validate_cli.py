"""`oasis validate --date D --input IN`: the input partitions checked against
the contract without running the job."""
from __future__ import annotations

import datetime as dt
import glob
import os
import re
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from schemas import ALL_SURFACES
from tests.support import worlds

DAY = worlds.END.isoformat()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A world with the default ~0.2% bad engagement rows, its day-D events split
    over two files so the report has more than one file per partition."""
    w = worlds.make_world(str(tmp_path_factory.mktemp("world")), days=2, tracks=60, events_per_day=3000,
                          markets=2)
    (f,) = glob.glob(f"{w}/engagement/dt={DAY}/*.parquet")
    t = pq.read_table(f)
    os.remove(f)
    half = t.num_rows // 2
    pq.write_table(t.slice(0, half), f"{w}/engagement/dt={DAY}/part-a.parquet")
    pq.write_table(t.slice(half), f"{w}/engagement/dt={DAY}/part-b.parquet")
    return w


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("clean")), days=2, tracks=60, events_per_day=3000,
                             markets=2, bad_row_share=0.0)


def validate(*args) -> int:
    return cli.main(["validate", *args])


def _expected_breaks(path: str) -> int:
    """Rows of one engagement file that break docs/design.md §3, counted here with pandas."""
    e = pq.read_table(path).to_pandas()
    day = pd.Timestamp(DAY, tz="UTC")
    lo, hi = day - pd.Timedelta(hours=6), day + pd.Timedelta(hours=30)
    required = ["event_id", "event_ts", "user_id", "track_id", "market", "surface", "ms_played",
                "duration_ms", "skipped", "saved", "promoted"]
    bad = e[required].isna().any(axis=1)
    for c in ("event_id", "user_id", "track_id"):
        bad |= e[c].astype("string").fillna("").str.len() == 0
    bad |= ~e["market"].astype("string").fillna("").str.fullmatch(r"[A-Z]{2}")
    bad |= ~e["surface"].astype("string").isin(ALL_SURFACES)
    bad |= e["ms_played"] < 0
    bad |= e["duration_ms"] <= 0
    bad |= (e["event_ts"] < lo) | (e["event_ts"] >= hi)
    bad |= e["promoted"].fillna(False).astype(bool) & e["campaign_id"].isna()
    return int(bad.sum())


def _file_line(out: str, path: str) -> tuple[int, int]:
    m = re.search(rf"^  {re.escape(path)}: ([\d,]+) rows, ([\d,]+) breaks$", out, re.M)
    assert m, out
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def test_breaks_within_the_ceiling_are_printed_per_file_and_reason_and_a_run_would_proceed(world, capsys):
    """The sample world's own ~0.2% bad rows: listed, and exit 0, because a run
    would dead-letter them and go on (it used to say INVALID and exit 1)."""
    assert validate("--date", DAY, "--input", world) == 0
    cap = capsys.readouterr()
    out = cap.out
    files = sorted(glob.glob(f"{world}/engagement/dt={DAY}/*.parquet"))
    total = 0
    for f in files:
        rows, breaks = _file_line(out, f)
        assert rows == pq.read_metadata(f).num_rows
        assert breaks == _expected_breaks(f)
        total += breaks
    assert total > 0
    # reasons under each file, then for the whole partition
    block = out.split(files[0], 1)[1].split(files[1], 1)[0]
    reasons = dict((r, int(n.replace(",", ""))) for r, n in re.findall(r"^      (\w+)\s+([\d,]+)$", block, re.M))
    assert reasons and sum(reasons.values()) == _file_line(out, files[0])[1]
    assert set(reasons) <= {"unknown_surface", "negative_ms_played", "malformed_market", "empty_track_id",
                            "event_ts_outside_partition", "null_track_id", "nonpositive_duration_ms",
                            "empty_event_id", "empty_user_id", "promoted_without_campaign", "null_event_id",
                            "null_market", "null_surface", "null_user_id"}
    assert "all files, by reason:" in out
    assert "within the max_bad_row_share ceiling" in out
    (enr,) = glob.glob(f"{world}/enrollments/dt={DAY}/*.parquet")
    assert _file_line(out, enr)[1] == 0
    assert out.rstrip().endswith(f"A RUN WOULD PROCEED: {total:,} row(s) break the contract and would be "
                                 "dead-lettered (within the max_bad_row_share ceiling of 1.00%)")
    # progress: one line per file on stderr
    for f in files + [enr]:
        assert f in cap.err
    assert "[2/2]" in cap.err


def test_breaks_above_the_ceiling_mean_a_run_would_fail_and_exit_1(world, tmp_path, capsys):
    cfg = tmp_path / "strict.toml"
    cfg.write_text("max_bad_row_share = 0.0001\n")
    assert validate("--date", DAY, "--input", world, "--config", str(cfg)) == 1
    cap = capsys.readouterr()
    assert "(the run would fail)" in cap.out
    assert "A RUN WOULD FAIL: rows breaking the contract above the max_bad_row_share ceiling of 0.01% in " \
           "engagement" in cap.out
    assert f"oasis validate: error: a run of logs date {DAY} on {world} would fail" in cap.err


def test_an_engagement_partition_without_rows_is_a_missing_day(clean_world, tmp_path, capsys):
    """Files that hold 0 rows: the run would fail (a day without plays is a
    missing day), and validate says so."""
    w = worlds.copy_world(clean_world, str(tmp_path / "w"))
    for f in glob.glob(f"{w}/engagement/dt={DAY}/*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.slice(0, 0), f)
    assert validate("--date", DAY, "--input", w) == 1
    out = capsys.readouterr().out
    assert "NO ROWS: a day without rows is a missing day" in out
    assert "A RUN WOULD FAIL: no rows in the engagement partition" in out
    # and the run agrees: it fails before any work, saying why
    assert cli.main(["run", "--date", DAY, "--input", w, "--output", str(tmp_path / "out")]) == 1
    assert f"the engagement partition for {DAY} holds no rows" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "snapshots")


def test_a_date_after_the_last_logs_day_is_named_as_a_likely_score_date(clean_world, capsys):
    after = (worlds.END + dt.timedelta(days=1)).isoformat()
    assert validate("--date", after, "--input", clean_world) == 1
    err = capsys.readouterr().err
    assert f"{after} looks like a score date: the newest logs date under {clean_world} is {DAY}" in err


def test_a_clean_partition_is_valid_and_exits_0(clean_world, capsys):
    assert validate("--date", DAY, "--input", clean_world) == 0
    out = capsys.readouterr().out
    assert "0 break the contract" in out
    assert out.rstrip().endswith("VALID: every file reads and every row keeps the contract; a run would proceed")


def test_unreadable_and_wrong_schema_files_are_named_and_exit_1(clean_world, tmp_path, capsys):
    w = worlds.copy_world(clean_world, str(tmp_path / "w"))
    junk = f"{w}/engagement/dt={DAY}/part-junk.parquet"
    with open(junk, "wb") as fh:
        fh.write(b"not parquet at all")
    (enr,) = glob.glob(f"{w}/enrollments/dt={DAY}/*.parquet")
    t = pq.read_table(enr)
    i = t.schema.get_field_index("commission_rate")
    pq.write_table(t.set_column(i, "commission_rate", t.column(i).cast(pa.string())), enr)
    assert validate("--date", DAY, "--input", w) == 1
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(junk)}: UNREADABLE: cannot be read as Parquet", out)
    assert re.search(rf"{re.escape(enr)}: UNREADABLE: schema does not match.*commission_rate", out)
    # the readable file was still checked
    (good,) = [f for f in glob.glob(f"{w}/engagement/dt={DAY}/*.parquet") if f != junk]
    assert _file_line(out, good)[1] == 0
    assert "A RUN WOULD FAIL: 2 unreadable file(s) or wrong schema" in out


def test_a_missing_partition_exits_1(clean_world, tmp_path, capsys):
    w = worlds.copy_world(clean_world, str(tmp_path / "w"))
    shutil.rmtree(f"{w}/engagement/dt={DAY}")
    assert validate("--date", DAY, "--input", w) == 1
    out = capsys.readouterr().out
    assert "engagement: MISSING partition" in out and "A RUN WOULD FAIL: missing partition(s): engagement" in out


@pytest.mark.emulator
def test_validate_reads_gcs_inputs(world, gcs_env, capsys):
    from pipelines import storage

    for f in glob.glob(f"{world}/*/dt={DAY}/*.parquet"):
        rel = os.path.relpath(f, world).split(os.sep)
        storage.write_bytes(storage.join(gcs_env.root, "in", *rel), open(f, "rb").read())
    assert validate("--date", DAY, "--input", storage.join(gcs_env.root, "in")) == 0
    out = capsys.readouterr().out
    for f in sorted(glob.glob(f"{world}/engagement/dt={DAY}/*.parquet")):
        uri = storage.join(gcs_env.root, "in", "engagement", f"dt={DAY}", os.path.basename(f))
        assert _file_line(out, uri) == (pq.read_metadata(f).num_rows, _expected_breaks(f))
