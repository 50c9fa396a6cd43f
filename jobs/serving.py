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

Two limits protect serving from acting on a plan that no longer holds:

* **freshness**: a snapshot is served until its manifest's `valid_until` (score
  date + `serving_max_age_days`, 2 by default). Past it, `load_latest` raises
  `StaleSnapshot` naming the snapshot's age, unless `allow_stale=True`;
  `max_age_days=N` sets another limit for this reader. "Today" is the UTC date
  unless `today` says otherwise.
* **flights**: a `promotion_scores` row whose campaign flight ended before
  today (`flight_end`; unknown in a snapshot older than the column) is never
  returned; `withheld_rows` counts them.

`load_latest` starts at the snapshot `snapshots/LATEST` points to. A snapshot
is used only when its `_MANIFEST.json` reads, every file the manifest lists is
there with its size and sha256 (the bytes hashed are the bytes parsed, so what
is served is what was verified), every table parses with its listed row count,
its validation has no failed gate that was not skipped, and no rollback pulled
it (`jobs.snapshots.pulls`: a rollback killed half-way may leave LATEST on a
snapshot it withdrew). (The run report,
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import layout
from jobs.manifest import Manifest, ManifestError
from jobs.snapshots import pulls, store
from pipelines import storage
from pipelines.errors import OasisError
from pipelines.holdout import is_in_holdout  # noqa: F401 - serving's holdout assignment, the batch's own
from schemas import OUTPUTS

log = logging.getLogger(__name__)


class NoValidSnapshot(OasisError):
    """No snapshot under the output root can be served; the message says why."""


class StaleSnapshot(OasisError):
    """The snapshot serving would use is past its valid_until; the message
    names its age."""


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
    withheld_rows: int = 0       # promotion_scores rows past their flight end, not returned

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
    for name in OUTPUTS:
        meta = manifest.tables.get(name)
        if meta is None and not manifest.lists_table(name):  # an older snapshot, from before the table existed
            if name in store.ADDED_LATER:  # read as an empty table
                tables[name] = OUTPUTS[name].empty()
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
                parts.append(store.as_contract(pq.read_table(io.BytesIO(data)), name))
            except Exception as e:  # checksum right but unusable: written damaged
                raise DamagedSnapshot(f"{entry.path} cannot be read as {name}: {e}") from None
        table = pa.concat_tables(parts, promote_options="permissive")
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


def utc_today() -> dt.date:
    """The day serving uses scores on, unless told: today in UTC."""
    return dt.datetime.now(dt.timezone.utc).date()


def check_fresh(manifest: Manifest, today: dt.date, max_age_days: int | None = None) -> None:
    """StaleSnapshot unless `today` is within the snapshot's valid_until (or
    within `max_age_days` of its score date, when given)."""
    limit = manifest.valid_until if max_age_days is None else manifest.score_date + dt.timedelta(days=max_age_days)
    if today > limit:
        age = (today - manifest.score_date).days
        raise StaleSnapshot(
            f"snapshot {manifest.snapshot_id} scores {manifest.score_date}, {age} days before {today}: older than "
            f"the {(limit - manifest.score_date).days} days it may be served (valid until {limit}); publish a newer "
            f"one, or accept it explicitly (allow_stale, `--allow-stale`)")


def servable_scores(scores: pa.Table, today: dt.date) -> pa.Table:
    """The promotion_scores rows whose campaign flight has not ended before
    `today` (a row with no known flight end is not servable)."""
    live = pc.greater_equal(scores.column("flight_end"), pa.scalar(today, pa.date32()))
    return scores.filter(pc.fill_null(live, False))


def load_latest(output_root: str, *, today: dt.date | None = None, max_age_days: int | None = None,
                allow_stale: bool = False) -> LoadedSnapshot:
    """The snapshot LATEST points to, verified; else the newest earlier valid one
    (with `fell_back_from` saying what was wrong with each newer one). Refuses
    a stale one (see the module docstring) and leaves out rows past their
    flight end."""
    today = today or utc_today()
    try:
        pointer = store.read_latest(output_root).content
    except storage.StorageError as e:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: {e}") from None
    if not pointer:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: "
                              f"{layout.latest_uri(output_root)} does not exist (nothing published yet)")
    try:
        latest = layout.parse_snapshot_rel(pointer)
    except ValueError as e:
        raise NoValidSnapshot(f"no valid snapshot under {output_root}: LATEST holds {e}") from None
    order = [latest] + [c for c in _candidates(output_root) if c < latest]
    pulled = pulls.read_pulls(output_root)
    fell_back: list[tuple[str, str]] = []
    for score_date, sid in order:
        folder = layout.snapshot_dir(output_root, score_date, sid)
        try:
            if sid in pulled:
                raise DamagedSnapshot(f"pulled: {pulls.describe(pulled[sid])}")
            manifest, tables = verify_and_read(folder, score_date, sid)
        except DamagedSnapshot as e:
            reason = str(e)
            log.warning("snapshot %s/%s is not usable (%s); trying the previous one", score_date, sid, reason)
            fell_back.append((sid, reason))
            continue
        if fell_back:
            log.warning("serving snapshot %s/%s instead of LATEST %s: %s", score_date, sid, pointer,
                        "; ".join(f"{s}: {r}" for s, r in fell_back))
        if not allow_stale:
            check_fresh(manifest, today, max_age_days)
        scores = tables["promotion_scores"]
        tables["promotion_scores"] = servable_scores(scores, today)
        withheld = scores.num_rows - tables["promotion_scores"].num_rows
        return LoadedSnapshot(sid, score_date, tables, fell_back, folder, manifest, withheld)
    detail = "; ".join(f"{s}: {r}" for s, r in fell_back)
    raise NoValidSnapshot(f"no valid snapshot under {output_root} (LATEST -> {pointer}): {detail}")
