"""The reader serving uses: load the latest valid snapshot, verified.

    from jobs.serving import load_latest
    snap = load_latest("gs://bucket/oasis")      # or a local folder
    snap.tables["promotion_scores"]              # pyarrow.Table
    snap.fell_back_from                          # [(snapshot_id, why)] when LATEST was unusable
    snap.in_holdout("user-1", "US", now)         # the holdout assignment, with the snapshot's salt and share

`is_in_holdout(user_id, market, when, salt, share)` is the batch's own
assignment function (`pipelines.holdout`): serving calls it with the salt and
share of the manifest it serves (`LoadedSnapshot.in_holdout` does), so a
holdout listener is never boosted and the batch's holdout gate agrees.

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
import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import layout
from jobs.manifest import Manifest, ManifestError
from jobs.snapshots import store
from pipelines import storage
from pipelines.errors import OasisError
from pipelines.holdout import is_in_holdout  # noqa: F401 - serving's holdout assignment, the batch's own
from schemas import OUTPUTS

log = logging.getLogger(__name__)


class NoValidSnapshot(OasisError):
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
    manifest: Manifest | None = None

    def in_holdout(self, user_id: str, market: str, when: dt.date | dt.datetime) -> bool:
        """Whether serving must hold this listener out (no boost; log a ghost
        exposure instead), with the salt and share recorded in the manifest."""
        h = (self.manifest.holdout if self.manifest else {}) or {}
        if "salt" not in h or "share" not in h:
            raise NoValidSnapshot(f"snapshot {self.snapshot_id} records no holdout salt and share")
        return is_in_holdout(user_id, market, when, int(h["salt"]), float(h["share"]))


def _candidates(output_root: str) -> list[tuple[dt.date, str]]:
    """(score date, snapshot id) of every snapshot folder, newest first. Folder
    names only: manifests are read when a candidate is tried."""
    return sorted(((day, sid) for day, sid, _ in store.snapshot_folders(output_root)), reverse=True)


def verify_and_read(folder: str, score_date: dt.date, snapshot_id: str) -> tuple[Manifest, dict[str, pa.Table]]:
    """(manifest, tables) of one snapshot folder, or DamagedSnapshot with the reason."""
    try:
        manifest = store.read_manifest(folder)
    except FileNotFoundError:
        raise DamagedSnapshot(f"{layout.MANIFEST} is missing") from None
    except ManifestError as e:
        raise DamagedSnapshot(f"{layout.MANIFEST} cannot be read: {e}") from None
    if manifest.snapshot_id != snapshot_id or manifest.score_date != score_date:
        raise DamagedSnapshot(f"{layout.MANIFEST} names {manifest.score_date}/{manifest.snapshot_id}, "
                              f"not the folder's {score_date}/{snapshot_id}")
    if manifest.blocking_gates:
        raise DamagedSnapshot(f"its validation failed: {', '.join(manifest.blocking_gates)}")
    tables = {}
    for name, contract in OUTPUTS.items():
        meta = manifest.tables.get(name)
        if meta is None and name in store.ADDED_LATER:  # a snapshot from before the table existed
            tables[name] = contract.empty()
            continue
        if not meta or not meta.files:
            raise DamagedSnapshot(f"the manifest lists no files for table {name}")
        parts = []
        for entry in meta.files:
            try:
                data = storage.read_bytes(layout.listed_file(folder, entry.path))
            except FileNotFoundError:
                raise DamagedSnapshot(f"{entry.path} is listed in the manifest but missing") from None
            if len(data) != entry.bytes:
                raise DamagedSnapshot(f"{entry.path} has {len(data)} bytes, the manifest says {entry.bytes}")
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.sha256:
                raise DamagedSnapshot(f"{entry.path} sha256 {digest[:12]}... does not match the manifest's "
                                      f"{entry.sha256[:12]}...")
            try:
                parts.append(pq.read_table(io.BytesIO(data)).cast(contract.arrow()))
            except Exception as e:  # checksum right but unusable: written damaged
                raise DamagedSnapshot(f"{entry.path} cannot be read as {name}: {e}") from None
        table = pa.concat_tables(parts)
        if table.num_rows != meta.rows:
            raise DamagedSnapshot(f"{name} has {table.num_rows} rows, the manifest says {meta.rows}")
        tables[name] = table
    _check_report(folder, manifest)
    return manifest, tables


def _check_report(folder: str, manifest: Manifest) -> None:
    """The run report (report.html) is listed with its sha256 but is not data:
    a damaged one is logged, and the snapshot is still served."""
    entry = manifest.report or {}
    if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("path"), str):
        return
    try:
        data = storage.read_bytes(layout.listed_file(folder, entry["path"]))
    except FileNotFoundError:
        log.warning("snapshot %s: %s is listed in the manifest but missing (not data; still served)",
                    manifest.snapshot_id, entry["path"])
        return
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        log.warning("snapshot %s: %s does not match its sha256 (not data; still served)",
                    manifest.snapshot_id, entry["path"])


def load_latest(output_root: str) -> LoadedSnapshot:
    """The snapshot LATEST points to, verified; else the newest earlier valid one
    (with `fell_back_from` saying what was wrong with each newer one)."""
    pointer = store.read_latest(output_root).content
    if not pointer:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: "
                              f"{layout.latest_uri(output_root)} does not exist (nothing published yet)")
    try:
        latest = layout.parse_snapshot_rel(pointer)
    except ValueError as e:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: LATEST holds {e}") from None
    order = [latest] + [c for c in _candidates(output_root) if c < latest]
    fell_back: list[tuple[str, str]] = []
    for score_date, sid in order:
        folder = layout.snapshot_dir(output_root, score_date, sid)
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
        return LoadedSnapshot(sid, score_date, tables, fell_back, folder, manifest)
    detail = "; ".join(f"{s}: {r}" for s, r in fell_back)
    raise NoValidSnapshot(f"no valid snapshot under {output_root} (LATEST -> {pointer}): {detail}")
