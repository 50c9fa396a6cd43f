"""What a reader of an output root may rely on, as checks shared by the
crash-safety, concurrency and privacy tests. Each check returns a list of
problems (empty: the guarantee holds), so a test can say exactly what broke.

The guarantees (docs/design.md §5, README "Outputs"):

* LATEST points to a published snapshot whose files all match its manifest;
* `jobs.snapshots.store.list_manifests` lists only complete snapshots, and every
  `_MANIFEST.json` on disk is whole (parses);
* the warehouse holds, per score date, exactly one snapshot's content (the
  content fingerprints of its manifest), never a mix of two, never duplicates;
* every aggregate marker (`_SUCCESS`) names a complete build.
"""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq

from jobs.snapshots import store as publish
from jobs.warehouse.base import partition_date
from schemas import OUTPUTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLES = tuple(OUTPUTS)


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "OASIS_KILL_AT"}
    e.update({k: v for k, v in extra.items() if v is not None})
    return e


def run_cli(*args: str, timeout: float = 600, **env_extra) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env(**env_extra))


def target(score_date: str, snapshot_id: str) -> str:
    return f"score_date={score_date}/{snapshot_id}"


def latest(out: str) -> str | None:
    try:
        with open(os.path.join(out, "snapshots", "LATEST")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def snapshot_problems(folder: str, manifest: dict) -> list[str]:
    """A published snapshot is complete: every file of its manifest is there with
    its size and sha256, and its table folders hold no other Parquet file (a
    reader globbing a table folder sees exactly the manifest's files)."""
    problems = []
    for name in TABLES:
        meta = manifest["tables"][name]
        listed = set()
        for f in meta["files"]:
            path = os.path.join(folder, f["path"])
            listed.add(os.path.normpath(path))
            try:
                data = open(path, "rb").read()
            except FileNotFoundError:
                problems.append(f"{path}: listed in the manifest, missing")
                continue
            if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
                problems.append(f"{path}: size or sha256 differs from the manifest")
        extra = {os.path.normpath(p) for p in glob.glob(os.path.join(folder, name, "*.parquet"))} - listed
        if extra:
            problems.append(f"{folder}/{name}: files not in the manifest: {sorted(extra)}")
        if sum(f["rows"] for f in meta["files"]) != meta["rows"]:
            problems.append(f"{folder}/{name}: row counts do not add up")
    return problems


def published(out: str) -> dict[str, tuple[str, dict]]:
    """snapshot id -> (folder, manifest), as readers see them."""
    return {m.snapshot_id: (folder, m.to_dict()) for folder, m in publish.list_manifests(out)}


def reader_view_problems(out: str) -> list[str]:
    """Everything `list_manifests` shows is complete, and no manifest on disk is
    half written (list_manifests would silently skip one that does not parse)."""
    problems = []
    on_disk = glob.glob(os.path.join(out, "snapshots", "score_date=*", "*", "_MANIFEST.json"))
    for path in on_disk:
        try:
            json.load(open(path))
        except json.JSONDecodeError as e:
            problems.append(f"{path}: half-written manifest ({e})")
    listed = published(out)
    if len(listed) != len(on_disk):
        problems.append(f"{len(on_disk)} manifests on disk, {len(listed)} listed")
    for sid, (folder, m) in listed.items():
        problems += snapshot_problems(folder, m)
    return problems


def latest_problems(out: str, allowed: set[str]) -> list[str]:
    """LATEST is one of `allowed` and names a complete published snapshot."""
    cur = latest(out)
    if cur not in allowed:
        return [f"LATEST is {cur!r}, expected one of {sorted(map(str, allowed))}"]
    sid = cur.rsplit("/", 1)[-1]
    listed = published(out)
    if sid not in listed:
        return [f"LATEST {cur} is not a published snapshot"]
    folder, m = listed[sid]
    if target(m["score_date"], sid) != cur:
        return [f"LATEST {cur} does not match its manifest's score date"]
    return snapshot_problems(folder, m)


def _arrow(con, sql: str, params=()):
    res = con.execute(sql, list(params))
    return res.to_arrow_table() if hasattr(res, "to_arrow_table") else res.fetch_arrow_table()


def warehouse_state(out: str, score_date: str) -> tuple[str | None, list[str]]:
    """(snapshot id whose content the warehouse holds for `score_date`, or None
    when it holds nothing for it; problems). The content must be exactly one
    published snapshot's: the same rows (content fingerprint of its manifest,
    which also rules out duplicates) in every table."""
    path = os.path.join(out, "warehouse.duckdb")
    if not os.path.exists(path):
        return None, []
    problems = []
    try:
        con = duckdb.connect(path, read_only=True)
    except Exception as e:  # noqa: BLE001
        return None, [f"warehouse cannot be opened: {e}"]
    try:
        existing = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not set(TABLES) <= existing:
            return None, [] if not existing & set(TABLES) else [f"warehouse has only {sorted(existing)}"]
        ids = {}
        tables = {}
        for name in TABLES:
            # a lagging table holds a snapshot's rows under an earlier date (delivery_reconciliation: the day before)
            day = partition_date(OUTPUTS[name], dt.date.fromisoformat(score_date))
            t = _arrow(con, f'SELECT * FROM "{name}" WHERE score_date = ?', [day])
            tables[name] = t
            ids[name] = set(t.column("snapshot_id").to_pylist())
            key = ", ".join(f'"{k}"' for k in OUTPUTS[name].key)  # quoted: `constraint` is a keyword
            dupes = con.execute(f'SELECT count(*) FROM (SELECT {key} FROM "{name}" '
                                f'GROUP BY ALL HAVING count(*) > 1)').fetchone()[0]
            if dupes:
                problems.append(f"warehouse {name}: {dupes} duplicated keys")
        all_ids = set().union(*ids.values())
        if not all_ids:
            return None, problems
        # a table may hold no row of the date (campaign_lift before any flight has enough data); the
        # content check below still compares it with the snapshot's
        if len(all_ids) != 1 or any(len(v) > 1 for v in ids.values()):
            return None, problems + [f"warehouse {score_date}: a mix of snapshots {ids}"]
        (sid,) = all_ids
        listed = published(out)
        if sid not in listed:
            return sid, problems + [f"warehouse {score_date} holds {sid}, which is not a published snapshot"]
        m = listed[sid][1]
        for name in TABLES:
            contract = OUTPUTS[name]
            got = publish.content_sha256(contract.conform(tables[name]), list(contract.key))
            if got != m["tables"][name]["content_sha256"] or tables[name].num_rows != m["tables"][name]["rows"]:
                problems.append(f"warehouse {name} {score_date}: content differs from snapshot {sid}")
        reg = {r[0] for r in con.execute("SELECT snapshot_id FROM snapshots").fetchall()}
        if sid not in reg:
            problems.append(f"warehouse registry lacks {sid}")
        return sid, problems
    finally:
        con.close()


def aggregate_marker_problems(out: str) -> list[str]:
    """Each `_SUCCESS` names a build folder whose Parquet files all read."""
    problems = []
    for marker in glob.glob(os.path.join(out, "aggregates", "dt=*", "_SUCCESS")):
        build = open(marker).read().strip()
        folder = os.path.join(os.path.dirname(marker), build)
        if not os.path.isdir(os.path.join(folder, "totals")):
            problems.append(f"{marker} names {build}, which has no totals")
            continue
        for f in glob.glob(os.path.join(folder, "*", "*.parquet")):
            try:
                pq.read_table(f)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{f}: unreadable aggregate in a marked build ({e})")
    return problems


def serving_problems(out: str) -> list[str]:
    """The serving reader loads exactly LATEST's snapshot, without falling back."""
    from jobs import serving

    try:
        snap = serving.load_latest(out, allow_stale=True)  # which snapshot, whatever its age
    except Exception as e:  # noqa: BLE001
        return [f"serving reader failed: {e}"]
    problems = []
    if target(snap.score_date.isoformat(), snap.snapshot_id) != latest(out):
        problems.append(f"serving loaded {snap.snapshot_id}, LATEST is {latest(out)}")
    if snap.fell_back_from:
        problems.append(f"serving fell back from {snap.fell_back_from}")
    return problems

