"""The warehouse `snapshots` registry in a real DuckDB file: it carries each
snapshot's validation verdict and skipped gates, which snapshot is current,
and a registry made by an older OASIS gains the new columns in place. On the
previous main the registry knew none of these (a skipped gate was invisible
in the warehouse, and the *_latest views followed the newest row)."""
from __future__ import annotations

import datetime as dt
import json
import os

import duckdb
import pyarrow as pa

from jobs.manifest import GateResult, Manifest
from jobs.warehouse.base import registry_row
from jobs.warehouse.duckdb import DuckDBWarehouse
from schemas import OUTPUTS, SNAPSHOTS

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "manifest.json")
DAY = dt.date(2026, 11, 25)


def manifest(snapshot_id: str, gates: list[GateResult]) -> Manifest:
    with open(GOLDEN) as f:
        doc = json.load(f)
    for t in doc["tables"].values():
        for entry in t["files"]:
            entry.update(bytes=1, sha256="0" * 64)
    doc.update(snapshot_id=snapshot_id, score_date=DAY.isoformat(), created_at="2026-11-25T01:00:00+00:00",
               validation=[g.to_dict() for g in gates])
    return Manifest.from_dict(doc)


def empty_tables() -> dict[str, pa.Table]:
    return {name: t.empty() for name, t in OUTPUTS.items()}


def test_the_registry_carries_the_verdict_and_the_skipped_gates(tmp_path):
    wh = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    gates = [GateResult("finite_values", True, "ok"),
             GateResult("score_drift", False, "PSI 0.31 > 0.25", 0.31, 0.25, skipped=True),
             GateResult("row_count", True, "ok", skipped=True)]
    m = manifest("20261125T010000Z-aaaaaa", gates)
    wh.publish(DAY, empty_tables(), registry_row(m, "m.json"), current=True)
    (row,), _ = wh.registry()
    assert row.skipped_gates == ("score_drift", "row_count") and row.is_current
    assert row.validation == "1 gate(s) failed, skipped by hand (score_drift); the others passed"
    got = wh.query("SELECT validation, skipped_gates FROM snapshots").to_pylist()
    assert got == [{"validation": row.validation, "skipped_gates": "score_drift,row_count"}]


def test_a_registry_from_an_older_oasis_gains_the_new_columns(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    old = pa.schema([SNAPSHOTS.arrow().field(n) for n in SNAPSHOTS.names[:9]])
    con = duckdb.connect(path)
    con.register("old", pa.Table.from_pylist([{
        "snapshot_id": "20261124T010000Z-bbbbbb", "score_date": dt.date(2026, 11, 24),
        "created_at": dt.datetime(2026, 11, 24, 1, tzinfo=dt.timezone.utc), "code_version": "v", "run_fingerprint": "f",
        "promotion_scores_rows": 0, "campaign_delivery_rows": 0, "capacity_rows": 0, "manifest_uri": "m"}], schema=old))
    con.execute("CREATE TABLE snapshots AS SELECT * FROM old")
    con.close()
    wh = DuckDBWarehouse(path)
    m = manifest("20261125T010000Z-aaaaaa", [GateResult("finite_values", True, "ok")])
    wh.publish(DAY, empty_tables(), registry_row(m, "m.json"), current=True)
    rows, problems = wh.registry()
    assert not problems
    assert {r.snapshot_id: (r.is_current, r.validation) for r in rows} == {
        "20261124T010000Z-bbbbbb": (False, ""), "20261125T010000Z-aaaaaa": (True, "all passed")}
