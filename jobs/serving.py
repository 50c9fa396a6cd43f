"""The reader serving uses: load the latest valid snapshot, verified.

    from jobs.serving import load_latest
    snap = load_latest("gs://bucket/oasis")      # or a local folder
    snap.tables["promotion_scores"]              # pyarrow.Table
    snap.fell_back_from                          # [(snapshot_id, why)] when LATEST was unusable

`load_latest` starts at the snapshot `snapshots/LATEST` points to. A snapshot
is used only when its `_MANIFEST.json` reads, every file the manifest lists is
there with its size and sha256 (the bytes hashed are the bytes parsed, so what
is served is what was verified), every table parses with its listed row count,
and its validation has no failed gate that was not skipped. (The run report,
`report.html`, is checked too, but it is not data: a damaged one is only
logged.) Otherwise the
reader logs a warning saying why and tries the next older snapshot (by score
date, then snapshot id, which starts with its creation time), never a newer one
than LATEST. When none is usable it raises `NoValidSnapshot` listing every
reason. All I/O goes through `pipelines.storage`, so local folders and gs://
behave the same.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.snapshots import store as publish
from pipelines import storage
from schemas import OUTPUTS

log = logging.getLogger(__name__)


class NoValidSnapshot(RuntimeError):
    """No snapshot under the output root can be served; the message says why."""


class DamagedSnapshot(Exception):
    """One snapshot failed verification; the message is the reason."""


@dataclass
class LoadedSnapshot:
    snapshot_id: str
    score_date: dt.date
    tables: dict[str, pa.Table]
    fell_back_from: list[tuple[str, str]] = field(default_factory=list)  # (snapshot_id, reason), newest first
    folder: str = ""
    manifest: dict = field(default_factory=dict)


def _candidates(output_root: str) -> list[tuple[str, str]]:
    """(score date, snapshot id) of every snapshot folder, newest first. Folder
    names only: manifests are read when a candidate is tried."""
    root = publish.snapshots_root(output_root)
    found = []
    for d in storage.list_dirs(root):
        if d.startswith("score_date="):
            found += [(d.removeprefix("score_date="), sid) for sid in storage.list_dirs(storage.join(root, d))]
    return sorted(found, reverse=True)


def verify_and_read(folder: str, score_date: str, snapshot_id: str) -> tuple[dict, dict[str, pa.Table]]:
    """(manifest, tables) of one snapshot folder, or DamagedSnapshot with the reason."""
    try:
        raw = storage.read_bytes(storage.join(folder, publish.MANIFEST))
    except FileNotFoundError:
        raise DamagedSnapshot(f"{publish.MANIFEST} is missing") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedSnapshot(f"{publish.MANIFEST} cannot be parsed: {e}") from None
    if manifest.get("snapshot_id") != snapshot_id or manifest.get("score_date") != score_date:
        raise DamagedSnapshot(f"{publish.MANIFEST} names {manifest.get('score_date')}/"
                              f"{manifest.get('snapshot_id')}, not the folder's {score_date}/{snapshot_id}")
    blocking = [c.get("name") for c in manifest.get("validation") or []
                if not c.get("passed") and not c.get("skipped")]
    if blocking:
        raise DamagedSnapshot(f"its validation failed: {', '.join(map(str, blocking))}")
    listed = manifest.get("tables") or {}
    tables = {}
    for name, contract in OUTPUTS.items():
        meta = listed.get(name)
        if not meta or not meta.get("files"):
            raise DamagedSnapshot(f"the manifest lists no files for table {name}")
        parts = []
        for entry in meta["files"]:
            path = entry["path"]
            try:
                data = storage.read_bytes(storage.join(folder, *path.split("/")))
            except FileNotFoundError:
                raise DamagedSnapshot(f"{path} is listed in the manifest but missing") from None
            if len(data) != entry.get("bytes", len(data)):
                raise DamagedSnapshot(f"{path} has {len(data)} bytes, the manifest says {entry['bytes']}")
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.get("sha256"):
                raise DamagedSnapshot(f"{path} sha256 {digest[:12]}... does not match the manifest's "
                                      f"{str(entry.get('sha256'))[:12]}...")
            try:
                parts.append(pq.read_table(io.BytesIO(data)).cast(contract.arrow()))
            except Exception as e:  # checksum right but unusable: written damaged
                raise DamagedSnapshot(f"{path} cannot be read as {name}: {e}") from None
        table = pa.concat_tables(parts)
        if table.num_rows != meta.get("rows", table.num_rows):
            raise DamagedSnapshot(f"{name} has {table.num_rows} rows, the manifest says {meta['rows']}")
        tables[name] = table
    _check_report(folder, manifest)
    return manifest, tables


def _check_report(folder: str, manifest: dict) -> None:
    """The run report (report.html) is listed with its sha256 but is not data:
    a damaged one is logged, and the snapshot is still served."""
    entry = manifest.get("report") or {}
    if not entry.get("sha256") or not entry.get("path"):
        return
    try:
        data = storage.read_bytes(storage.join(folder, *entry["path"].split("/")))
    except FileNotFoundError:
        log.warning("snapshot %s: %s is listed in the manifest but missing (not data; still served)",
                    manifest.get("snapshot_id"), entry["path"])
        return
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        log.warning("snapshot %s: %s does not match its sha256 (not data; still served)",
                    manifest.get("snapshot_id"), entry["path"])


def load_latest(output_root: str) -> LoadedSnapshot:
    """The snapshot LATEST points to, verified; else the newest earlier valid one
    (with `fell_back_from` saying what was wrong with each newer one)."""
    pointer = publish.read_latest(output_root).content
    if not pointer:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: "
                              f"{publish.latest_uri(output_root)} does not exist (nothing published yet)")
    try:
        date_part, latest_id = pointer.split("/", 1)
        latest = (date_part.removeprefix("score_date="), latest_id)
        dt.date.fromisoformat(latest[0])
    except ValueError:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: LATEST holds {pointer!r}, "
                              f"not score_date=YYYY-MM-DD/<snapshot_id>") from None
    order = [latest] + [c for c in _candidates(output_root) if c < latest]
    fell_back: list[tuple[str, str]] = []
    root = publish.snapshots_root(output_root)
    for score_date, sid in order:
        folder = storage.join(root, f"score_date={score_date}", sid)
        try:
            manifest, tables = verify_and_read(folder, score_date, sid)
        except DamagedSnapshot as e:
            reason = str(e)
            log.warning("snapshot %s/%s is not usable (%s); trying the previous one", score_date, sid, reason)
            fell_back.append((sid, reason))
            continue
        if fell_back:
            log.warning("serving snapshot %s/%s instead of LATEST %s: %s", score_date, sid, pointer,
                        "; ".join(f"{s}: {r}" for s, r in fell_back))
        return LoadedSnapshot(sid, dt.date.fromisoformat(score_date), tables, fell_back, folder, manifest)
    detail = "; ".join(f"{s}: {r}" for s, r in fell_back)
    raise NoValidSnapshot(f"no valid snapshot under {output_root} (LATEST -> {pointer}): {detail}")
