"""jobs.serving.load_latest: the latest snapshot, verified against its
manifest, with a fallback to the previous one when a file is damaged or gone;
never a stale one (unless told), never a row past its campaign's flight end."""
from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import os
import shutil

import pyarrow.parquet as pq
import pytest

from jobs import serving
from jobs.cli import main as cli
from pipelines import storage
from tests.support import worlds

DAYS = [worlds.END - dt.timedelta(days=1), worlds.END]
TODAY = worlds.END + dt.timedelta(days=1)  # the newer snapshot's score date


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """An output root with two daily snapshots; LATEST on the second."""
    w = worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000,
                          markets=2)
    out = str(tmp_path_factory.mktemp("out"))
    for d in DAYS:
        assert cli.main(["run", "--date", d.isoformat(), "--input", w, "--output", out]) == 0
    older, newer = worlds.snapshot_dirs(out)
    assert worlds.latest(out).endswith(os.path.basename(newer))
    return out


@pytest.fixture
def out(published, tmp_path):
    """A private copy of the published snapshots to damage."""
    dst = str(tmp_path / "out")
    shutil.copytree(os.path.join(published, "snapshots"), os.path.join(dst, "snapshots"))
    return dst


def _ids(out):
    older, newer = worlds.snapshot_dirs(out)
    return worlds.manifest(older), worlds.manifest(newer), older, newer


def _a_file(snapshot_dir: str, table: str = "promotion_scores") -> tuple[str, str]:
    m = worlds.manifest(snapshot_dir)
    rel = m["tables"][table]["files"][0]["path"]
    return rel, os.path.join(snapshot_dir, rel)


def _flip_byte(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as fh:
        fh.write(bytes(data))


def test_intact_latest_is_loaded_with_its_tables(out):
    old, new, _, newer = _ids(out)
    snap = serving.load_latest(out, today=TODAY)
    assert snap.snapshot_id == new["snapshot_id"] and snap.fell_back_from == []
    assert snap.score_date == dt.date.fromisoformat(new["score_date"])
    for name, meta in new["tables"].items():
        withheld = snap.withheld_rows if name == "promotion_scores" else 0  # flights that ended
        assert snap.tables[name].num_rows + withheld == meta["rows"]
        assert meta["rows"] > 0 or name == "campaign_lift"  # no flight has 10 days in the logs of this world
    expected = serving.servable_scores(pq.read_table(os.path.join(newer, "promotion_scores")), TODAY)
    keys = [("track_id", "ascending"), ("market", "ascending"), ("surface", "ascending")]
    got = snap.tables["promotion_scores"].sort_by(keys)
    assert got.column("score").to_pylist() == expected.sort_by(keys).column("score").to_pylist()


def test_one_corrupt_byte_falls_back_to_the_previous_snapshot(out, caplog):
    old, new, _, newer = _ids(out)
    rel, path = _a_file(newer)
    _flip_byte(path)
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out, today=TODAY)
    assert snap.snapshot_id == old["snapshot_id"]
    assert snap.score_date == dt.date.fromisoformat(old["score_date"])
    ((sid, reason),) = snap.fell_back_from
    assert sid == new["snapshot_id"] and rel in reason and "sha256" in reason
    assert snap.tables["promotion_scores"].num_rows + snap.withheld_rows == old["tables"]["promotion_scores"]["rows"]
    assert any(new["snapshot_id"] in r.getMessage() and rel in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_a_missing_file_falls_back_to_the_previous_snapshot(out, caplog):
    old, new, _, newer = _ids(out)
    rel, path = _a_file(newer, "capacity")
    os.remove(path)
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out, today=TODAY)
    assert snap.snapshot_id == old["snapshot_id"]
    assert snap.fell_back_from == [(new["snapshot_id"], f"{rel} is listed in the manifest but missing")]
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_a_damaged_run_report_is_logged_but_the_data_is_served(out, caplog):
    old, new, _, newer = _ids(out)
    report = new["report"]["path"]  # report.html, listed with its sha256
    _flip_byte(os.path.join(newer, report))
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out, today=TODAY)
    assert snap.snapshot_id == new["snapshot_id"] and snap.fell_back_from == []
    assert any(report in r.getMessage() and "still served" in r.getMessage() for r in caplog.records)


def test_no_valid_snapshot_is_a_clear_error(out, tmp_path):
    old, new, older, newer = _ids(out)
    _flip_byte(_a_file(newer)[1])
    os.remove(os.path.join(older, "_MANIFEST.json"))
    with pytest.raises(serving.NoValidSnapshot) as e:
        serving.load_latest(out, today=TODAY)
    msg = str(e.value)
    assert "no valid snapshot" in msg and new["snapshot_id"] in msg and old["snapshot_id"] in msg
    assert "sha256" in msg and "_MANIFEST.json is missing" in msg
    with pytest.raises(serving.NoValidSnapshot, match="nothing published"):
        serving.load_latest(str(tmp_path / "empty"), today=TODAY)


def test_a_snapshot_newer_than_latest_is_never_served(out):
    old, new, _, _ = _ids(out)
    with open(os.path.join(out, "snapshots", "LATEST"), "w") as fh:  # e.g. after a rollback
        fh.write(f"score_date={old['score_date']}/{old['snapshot_id']}\n")
    snap = serving.load_latest(out, today=TODAY)
    assert snap.snapshot_id == old["snapshot_id"] and snap.fell_back_from == []


@pytest.mark.emulator
def test_gcs_corrupt_file_falls_back(published, gcs_env):
    root = storage.join(gcs_env.root, "oasis")
    local = os.path.join(published, "snapshots")
    for f in glob.glob(f"{local}/**/*", recursive=True):
        if os.path.isfile(f):
            rel = os.path.relpath(f, published).split(os.sep)
            storage.write_bytes(storage.join(root, *rel), open(f, "rb").read())
    old, new, _, newer = _ids(published)
    assert serving.load_latest(root, today=TODAY).snapshot_id == new["snapshot_id"]

    rel, _ = _a_file(newer)
    uri = storage.join(root, "snapshots", f"score_date={new['score_date']}", new["snapshot_id"], *rel.split("/"))
    data = bytearray(storage.read_bytes(uri))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(uri, bytes(data))
    snap = serving.load_latest(root, today=TODAY)
    assert snap.snapshot_id == old["snapshot_id"]
    ((sid, reason),) = snap.fell_back_from
    assert sid == new["snapshot_id"] and rel in reason and "sha256" in reason


def test_a_three_day_old_latest_is_refused_naming_its_age(out):
    _, new, _, _ = _ids(out)
    score_date = dt.date.fromisoformat(new["score_date"])
    assert new["valid_until"] == (score_date + dt.timedelta(days=2)).isoformat()  # the default 2 days
    with pytest.raises(serving.StaleSnapshot) as e:
        serving.load_latest(out, today=score_date + dt.timedelta(days=3))
    msg = str(e.value)
    assert new["snapshot_id"] in msg and "3 days before" in msg and f"valid until {new['valid_until']}" in msg
    # two days old is still fresh; told otherwise, a stale one is served
    assert serving.load_latest(out, today=score_date + dt.timedelta(days=2)).snapshot_id == new["snapshot_id"]
    snap = serving.load_latest(out, today=score_date + dt.timedelta(days=3), allow_stale=True)
    assert snap.snapshot_id == new["snapshot_id"]
    assert serving.load_latest(out, today=score_date + dt.timedelta(days=3), max_age_days=3).snapshot_id
    with pytest.raises(serving.StaleSnapshot, match="1 days before"):
        serving.load_latest(out, today=score_date + dt.timedelta(days=1), max_age_days=0)


def test_rows_past_their_flight_end_are_never_returned(out):
    _, new, _, newer = _ids(out)
    published = pq.read_table(os.path.join(newer, "promotion_scores")).to_pandas()
    ends = sorted(published["flight_end"].unique())
    assert len(ends) >= 3, ends  # flights that ended, that run, that have not started (the sample world)
    for today in (TODAY, ends[1] + dt.timedelta(days=1)):
        snap = serving.load_latest(out, today=today, allow_stale=True)
        got = snap.tables["promotion_scores"].to_pandas()
        past = published[published["flight_end"] < today]
        assert len(past) > 0 and snap.withheld_rows == len(past)
        assert (got["flight_end"] >= today).all() and len(got) == len(published) - len(past)
        keys = ["track_id", "market", "surface"]
        assert set(map(tuple, got[keys].to_numpy())) == set(map(tuple, published.loc[
            published["flight_end"] >= today, keys].to_numpy()))


def test_a_snapshot_from_before_campaign_lift_is_served_with_it_empty(out):
    """A manifest written before the campaign_lift table existed (format 2, no
    entry, no folder) is not damaged: the snapshot is served, the table reads
    empty. A newer manifest that lists the table still needs its files."""
    _, _, _, newer = _ids(out)
    path = os.path.join(newer, "_MANIFEST.json")
    doc = json.load(open(path))
    doc["format_version"] = 2
    listed = doc["tables"].pop("campaign_lift")
    doc.pop("holdout", None)
    shutil.rmtree(os.path.join(newer, "campaign_lift"))
    with open(path, "w") as f:
        json.dump(doc, f)
    snap = serving.load_latest(out, today=TODAY)
    assert snap.fell_back_from == [] and snap.tables["campaign_lift"].num_rows == 0
    assert snap.tables["promotion_scores"].num_rows + snap.withheld_rows == doc["tables"]["promotion_scores"]["rows"]
    with pytest.raises(serving.NoValidSnapshot, match="no holdout salt"):
        snap.in_holdout("u1", "US", dt.date(2026, 11, 25))
    # listed but gone: damaged, as any table
    doc["tables"]["campaign_lift"] = listed
    with open(path, "w") as f:
        json.dump(doc, f)
    assert serving.load_latest(out, today=TODAY).snapshot_id != snap.snapshot_id
