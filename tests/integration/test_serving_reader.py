"""jobs.serving.load_latest: the latest snapshot, verified against its
manifest, with a fallback to the previous one when a file is damaged or gone."""
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
    snap = serving.load_latest(out)
    assert snap.snapshot_id == new["snapshot_id"] and snap.fell_back_from == []
    assert snap.score_date == dt.date.fromisoformat(new["score_date"])
    for name, meta in new["tables"].items():
        assert snap.tables[name].num_rows == meta["rows"]
        assert meta["rows"] > 0 or name == "campaign_lift"  # no flight has 10 days in the logs of this world
    expected = pq.read_table(os.path.join(newer, "promotion_scores")).sort_by("track_id")
    got = snap.tables["promotion_scores"].sort_by("track_id")
    assert got.column("score").to_pylist() == expected.column("score").to_pylist()


def test_one_corrupt_byte_falls_back_to_the_previous_snapshot(out, caplog):
    old, new, _, newer = _ids(out)
    rel, path = _a_file(newer)
    _flip_byte(path)
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out)
    assert snap.snapshot_id == old["snapshot_id"]
    assert snap.score_date == dt.date.fromisoformat(old["score_date"])
    ((sid, reason),) = snap.fell_back_from
    assert sid == new["snapshot_id"] and rel in reason and "sha256" in reason
    assert snap.tables["promotion_scores"].num_rows == old["tables"]["promotion_scores"]["rows"]
    assert any(new["snapshot_id"] in r.getMessage() and rel in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_a_missing_file_falls_back_to_the_previous_snapshot(out, caplog):
    old, new, _, newer = _ids(out)
    rel, path = _a_file(newer, "capacity")
    os.remove(path)
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out)
    assert snap.snapshot_id == old["snapshot_id"]
    assert snap.fell_back_from == [(new["snapshot_id"], f"{rel} is listed in the manifest but missing")]
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_a_damaged_run_report_is_logged_but_the_data_is_served(out, caplog):
    old, new, _, newer = _ids(out)
    report = new["report"]["path"]  # report.html, listed with its sha256
    _flip_byte(os.path.join(newer, report))
    with caplog.at_level(logging.WARNING, logger="jobs.serving"):
        snap = serving.load_latest(out)
    assert snap.snapshot_id == new["snapshot_id"] and snap.fell_back_from == []
    assert any(report in r.getMessage() and "still served" in r.getMessage() for r in caplog.records)


def test_no_valid_snapshot_is_a_clear_error(out, tmp_path):
    old, new, older, newer = _ids(out)
    _flip_byte(_a_file(newer)[1])
    os.remove(os.path.join(older, "_MANIFEST.json"))
    with pytest.raises(serving.NoValidSnapshot) as e:
        serving.load_latest(out)
    msg = str(e.value)
    assert "no valid snapshot" in msg and new["snapshot_id"] in msg and old["snapshot_id"] in msg
    assert "sha256" in msg and "_MANIFEST.json is missing" in msg
    with pytest.raises(serving.NoValidSnapshot, match="nothing published"):
        serving.load_latest(str(tmp_path / "empty"))


def test_a_snapshot_newer_than_latest_is_never_served(out):
    old, new, _, _ = _ids(out)
    with open(os.path.join(out, "snapshots", "LATEST"), "w") as fh:  # e.g. after a rollback
        fh.write(f"score_date={old['score_date']}/{old['snapshot_id']}\n")
    snap = serving.load_latest(out)
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
    assert serving.load_latest(root).snapshot_id == new["snapshot_id"]

    rel, _ = _a_file(newer)
    uri = storage.join(root, "snapshots", f"score_date={new['score_date']}", new["snapshot_id"], *rel.split("/"))
    data = bytearray(storage.read_bytes(uri))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(uri, bytes(data))
    snap = serving.load_latest(root)
    assert snap.snapshot_id == old["snapshot_id"]
    ((sid, reason),) = snap.fell_back_from
    assert sid == new["snapshot_id"] and rel in reason and "sha256" in reason


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
    snap = serving.load_latest(out)
    assert snap.fell_back_from == [] and snap.tables["campaign_lift"].num_rows == 0
    assert snap.tables["promotion_scores"].num_rows == doc["tables"]["promotion_scores"]["rows"]
    with pytest.raises(serving.NoValidSnapshot, match="no holdout salt"):
        snap.in_holdout("u1", "US", dt.date(2026, 11, 25))
    # listed but gone: damaged, as any table
    doc["tables"]["campaign_lift"] = listed
    with open(path, "w") as f:
        json.dump(doc, f)
    assert serving.load_latest(out).snapshot_id != snap.snapshot_id
