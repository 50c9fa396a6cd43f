"""Looking after the published snapshots of an output root (local or gs://):
list, show, roll back, garbage-collect. Each returns a result; `jobs.cli`
prints it.

* `list_snapshots`: every published snapshot (a folder with a readable
  `_MANIFEST.json`), oldest first, and which one LATEST points to.
* `show`: one snapshot's manifest and folder.
* `rollback`: point LATEST at another snapshot, after checking that its
  validation passed and that every file listed in its manifest is there with
  its size and sha256. Under the publish lock, in this order: the rollback
  records of every published snapshot newer than the target
  (`jobs.snapshots.pulls`; a rollback *to* a pulled snapshot lifts its record),
  then LATEST (compare-and-swap against the value read before the check, so a
  concurrent publish is never overwritten), then the warehouse (the target's
  rows reloaded and made current, pulled snapshots' rows removed). A kill or a
  failure part-way is finished by `oasis snapshots repair` or the next run,
  never undone.
* `gc`: keeps the N newest valid snapshots (by score date, then creation time),
  the one LATEST points to and every snapshot newer than it (a publish may be
  between its manifest and the pointer; a pulled one may be rolled forward to
  again), and deletes the other snapshots with their dead letters. It also
  deletes, once older than the grace period (default 60 min, so a running job
  is left alone), snapshot folders without a manifest (left by killed runs) and
  aggregate builds that the day's marker does not name, and, past the
  dead-letter retention (default 30 days), the dead letters of runs that
  published nothing (failed or quarantined runs). Without a LATEST pointer it
  deletes no snapshot. A folder's age is counted from the newest of its files'
  modification times and the time in its run id. Rollback records stay.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from jobs import layout
from jobs.gates.quarantine import (Quarantined, find_quarantined, list_quarantined, quarantine_folders,
                                  read_quarantined)
from jobs.manifest import Manifest
from jobs.run.aggregates import stored_build
from jobs.snapshots import pulls, repair, store
from jobs.warehouse.base import Warehouse
from pipelines import faults, storage
from pipelines.errors import OasisError

log = logging.getLogger(__name__)

DEFAULT_GRACE_MINUTES = 60.0
DEFAULT_DEAD_LETTER_DAYS = 30.0


class SnapshotError(OasisError):
    """A request the snapshots command refuses; the message says why."""


def relative(manifest: Manifest) -> str:
    return layout.snapshot_rel(manifest.score_date, manifest.snapshot_id)


def find(output_root: str, snapshot_id: str) -> tuple[str, Manifest]:
    storage.require_folder(output_root, "output root")
    found = store.find_snapshot(output_root, snapshot_id)
    if found is None:
        for _, sid, folder in store.snapshot_folders(output_root):
            if sid == snapshot_id:  # there, but not a published snapshot: say why
                try:
                    store.read_manifest(folder)
                except FileNotFoundError:
                    raise SnapshotError(f"{folder} has no manifest: an unfinished or killed run, never "
                                        "published") from None
                except OasisError as e:
                    raise SnapshotError(f"snapshot {snapshot_id} is DAMAGED, not fit to serve: {e}") from None
        raise SnapshotError(f"no published snapshot {snapshot_id!r} under {output_root} "
                            "(see `oasis snapshots list`)")
    return found


def verify(folder: str, manifest: Manifest) -> list[str]:
    """Problems that make the snapshot unfit to serve: failed validation, a
    listed file missing or with another size or sha256. Empty when sound."""
    problems = []
    if not manifest.gates_passed:
        problems.append(f"validation: {manifest.validation_text}")
    problems += store.file_problems(folder, manifest)
    return problems


def age_seconds(uri: str, now: dt.datetime) -> float | None:
    """Seconds since the newest of: the modification times of `uri` and of
    every file under it, and the time in its run id. None if it is gone."""
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return None
    times = [info.mtime] if info.mtime else []
    if info.type == pafs.FileType.Directory:
        times += [i.mtime for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.mtime]
    started = layout.snapshot_id_time(uri.rstrip("/").rsplit("/", 1)[-1])
    if started is not None:
        times.append(started)
    if not times:
        return 0.0
    newest = max(t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for t in times)
    return (now - newest).total_seconds()


# --------------------------------------------------------------------- list ---
@dataclass
class Listing:
    snapshots: list[tuple[str, Manifest]]
    latest: str | None                      # LATEST's content, as read
    unreadable: list[str] = field(default_factory=list)  # manifests that could not be read, and why
    pulled: dict[str, pulls.Pull] = field(default_factory=dict)
    latest_error: str = ""                  # why LATEST itself cannot be read

    @property
    def latest_listed(self) -> bool:
        return any(relative(m) == self.latest for _, m in self.snapshots)


def list_snapshots(output_root: str) -> Listing:
    storage.require_folder(output_root, "output root")
    unreadable: list[str] = []
    found = store.list_manifests(output_root, problems=unreadable)
    latest, error = None, ""
    try:
        latest = store.read_latest(output_root).content
    except storage.StorageError as e:
        error = str(e)
    return Listing(found, latest, unreadable, pulls.read_pulls(output_root), error)


# --------------------------------------------------------------------- show ---
@dataclass
class Shown:
    folder: str
    manifest: Manifest
    is_latest: bool
    problems: list[str]   # what `verify` finds
    pulled: pulls.Pull | None = None


def show(output_root: str, snapshot_id: str) -> Shown:
    folder, m = find(output_root, snapshot_id)
    try:
        latest = store.read_latest(output_root).content
    except storage.StorageError:
        latest = None
    return Shown(folder, m, relative(m) == latest, verify(folder, m), pulls.read_pulls(output_root).get(snapshot_id))


# ----------------------------------------------------------------- rollback ---
@dataclass
class RolledBack:
    previous: str | None   # what LATEST held
    target: str            # what it holds now
    direction: str         # "", "back to an earlier score date", "forward to a newer score date"
    files_verified: int
    changed: bool
    pulled: list[str] = field(default_factory=list)      # snapshots this rollback withdrew
    lifted: list[str] = field(default_factory=list)      # pulled snapshots it served again (the target)
    warehouse: list[str] = field(default_factory=list)   # what changed in the warehouse


def rollback(output_root: str, snapshot_id: str, warehouse: Warehouse | None) -> RolledBack:
    """Point LATEST (and the warehouse) at `snapshot_id`, withdrawing every newer
    snapshot (module docstring for the order and why)."""
    uri = layout.latest_uri(output_root)
    with store.publish_lock(output_root):
        try:
            current = storage.read_pointer(uri)  # the value the swap below must still find
        except storage.StorageError:  # LATEST is a folder or unreadable: the swap replaces it
            storage.set_aside(uri, "damaged")
            current = storage.read_pointer(uri)
        folder, m = find(output_root, snapshot_id)
        target = relative(m)
        problems = verify(folder, m)
        if problems:
            raise SnapshotError(f"refusing to point LATEST at {target}: it is damaged or invalid:\n  "
                                + "\n  ".join(problems))
        files = sum(len(t.files) for t in m.tables.values())
        newer = [x for _, x in store.list_manifests(output_root) if x.order_key > m.order_key]
        log.info("rollback to %s: withdrawing %s", target, ", ".join(x.snapshot_id for x in newer) or "nothing")
        pulled = pulls.record(output_root, newer, target)
        lifted = pulls.lift(output_root, [m.snapshot_id])
        faults.checkpoint("rollback_after_record")
        changed = current.content != target
        if changed:
            try:
                storage.replace_pointer(uri, target, current)
            except storage.PointerMoved:
                now = storage.read_pointer(uri).content
                raise SnapshotError(f"LATEST moved while the snapshot was being checked (now {now}); LATEST "
                                    "unchanged, run the rollback again") from None
        faults.checkpoint("rollback_after_pointer")
        done = []
        if warehouse is not None:
            try:
                state = repair.read_state(output_root, warehouse)
                if state.registry is None:
                    raise repair.RepairError(state.warehouse_error)
                done = repair.follow(output_root, warehouse, m, state)
            except OasisError as e:
                raise SnapshotError(f"LATEST now points to {target}, but the warehouse {warehouse.uri} was not "
                                    f"updated: {e}. `oasis snapshots repair` finishes the rollback once it can be "
                                    "written (the rollback records already keep the pulled snapshots out)") from e
        faults.checkpoint("rollback_after_warehouse")
    direction = ""
    try:
        old_date = layout.parse_snapshot_rel(current.content)[0] if current.content else None
    except ValueError:
        old_date = None
    if old_date is not None and old_date > m.score_date:
        direction = "back to an earlier score date"
    elif old_date is not None and old_date < m.score_date:
        direction = "forward to a newer score date"
    return RolledBack(current.content, target, direction, files, changed, pulled, lifted, done)


# ----------------------------------------------------------------------- gc ---
@dataclass
class Collected:
    dry_run: bool
    grace_minutes: float
    actions: list[str] = field(default_factory=list)   # one line per deletion or notable decision, in order
    snapshots: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)


def gc(output_root: str, keep: int, *, dry_run: bool = False, grace_minutes: float = DEFAULT_GRACE_MINUTES,
       dead_letter_days: float = DEFAULT_DEAD_LETTER_DAYS, now: dt.datetime | None = None) -> Collected:
    """Delete what the policy in the module docstring allows; returns what was
    (or, with dry_run, would be) deleted and kept."""
    if keep < 0:
        raise SnapshotError("--keep must be >= 0")
    if not 0 <= grace_minutes < float("inf"):
        raise SnapshotError("--grace-minutes must be a finite number >= 0")
    if not 0 <= dead_letter_days < float("inf"):
        raise SnapshotError("--dead-letter-days must be a finite number >= 0")
    storage.require_folder(output_root, "output root")
    now = now or dt.datetime.now(dt.timezone.utc)
    out = Collected(dry_run, grace_minutes)
    _Collector(output_root, out, now).run(keep, dead_letter_days * 86400.0)
    return out


class _Collector:
    def __init__(self, output_root: str, out: Collected, now: dt.datetime):
        self.root, self.out, self.now = output_root, out, now
        self.grace_s = out.grace_minutes * 60.0
        self.verb = "would delete" if out.dry_run else "deleted"

    def run(self, keep: int, dead_letter_s: float) -> None:
        found = store.list_manifests(self.root)
        try:
            latest = store.read_latest(self.root).content
        except storage.StorageError as e:
            latest = None
            self.out.actions.append(f"LATEST cannot be read ({e}): keeping every snapshot")
        self.snapshots(found, latest, keep)
        self.orphan_snapshot_folders(found, latest)
        self.orphan_builds()
        self.unpublished_dead_letters(found, dead_letter_s)

    def delete(self, uri: str, what: str, kind: str, first_file: str | None = None) -> None:
        if not self.out.dry_run:
            if first_file:  # the manifest first: a half-deleted folder is an orphan, never a damaged snapshot
                storage.delete_file(first_file)
            storage.delete_tree(uri)
        getattr(self.out, kind).append(uri)
        self.out.actions.append(f"{self.verb} {what}: {uri}")

    def snapshots(self, found: list[tuple[str, Manifest]], latest: str | None, keep: int) -> None:
        by_rel = {relative(m): (f, m) for f, m in found}
        if latest not in by_rel:
            self.out.actions.append("no LATEST pointer to a published snapshot: keeping every snapshot" if not latest
                                    else f"LATEST points to {latest}, which has no manifest: keeping every snapshot")
            protected = {relative(m) for _, m in found}
        else:
            latest_key = by_rel[latest][1].order_key
            valid = sorted((m for _, m in found if m.gates_passed), key=lambda m: m.order_key)
            protected = {relative(m) for m in (valid[-keep:] if keep > 0 else [])}
            protected |= {relative(m) for _, m in found if m.order_key > latest_key}
            protected.add(latest)
        for folder, m in found:
            rel = relative(m)
            if rel in protected:
                self.out.kept.append(folder)
                continue
            self.delete(folder, f"snapshot {rel}", "snapshots", first_file=storage.join(folder, layout.MANIFEST))
            dead = layout.dead_letters_dir(self.root, m.snapshot_id)
            if storage.exists(dead):
                if not self.out.dry_run:
                    storage.delete_tree(dead)
                self.out.actions.append(f"{self.verb} its dead letters: {dead}")

    def orphan_snapshot_folders(self, found: list[tuple[str, Manifest]], latest: str | None) -> None:
        published = {f.rstrip("/") for f, _ in found}
        for day, sid, folder in store.snapshot_folders(self.root):
            if folder.rstrip("/") in published or layout.snapshot_rel(day, sid) == latest:
                continue
            if storage.exists(storage.join(folder, layout.MANIFEST)):
                self.out.actions.append(f"left alone (its manifest cannot be read): {folder}")
                continue
            self.orphan(folder, f"orphaned snapshot folder {layout.snapshot_rel(day, sid)}", "orphans")
        for name in storage.list_dirs(layout.snapshots_root(self.root)):
            day = layout.parse_score_date_dirname(name)
            here = layout.score_date_dir(self.root, day) if day else None
            if here and not self.out.dry_run and not storage.list_files(here) and not storage.list_dirs(here) \
                    and (age_seconds(here, self.now) or 0.0) >= self.grace_s:
                storage.delete_tree(here)  # an empty date folder (local only), once nothing wrote to it for a while

    def orphan_builds(self) -> None:
        for name in storage.list_dirs(layout.aggregates_root(self.root)):
            day = layout.parse_day_dirname(name)
            if day is None:
                continue
            named = stored_build(self.root, day)
            folder = layout.aggregates_day(self.root, day)
            builds = [b for b in storage.list_dirs(folder) if layout.is_build_dirname(b)]
            if named and named not in builds:
                self.out.actions.append(f"warning: aggregates/{name}/{layout.AGGREGATE_MARKER} names {named}, "
                                        "which does not exist")
            for b in builds:
                if b != named:
                    self.orphan(storage.join(folder, b), f"orphaned aggregate build {name}/{b}", "builds")

    def unpublished_dead_letters(self, found: list[tuple[str, Manifest]], retention_s: float) -> None:
        """Dead letters of runs that published nothing (failed or quarantined),
        once older than the retention: they hold raw rows with user ids."""
        published = {m.snapshot_id for _, m in found}
        root = layout.dead_letters_root(self.root)
        for name in storage.list_dirs(root):
            sid = layout.dead_letters_run_id(name)
            if sid is None or sid in published:
                continue
            uri = storage.join(root, name)
            age = age_seconds(uri, self.now)
            if age is not None and age >= retention_s:
                self.delete(uri, f"dead letters of run {sid}, which published nothing "
                                 f"({age / 86400:.0f} days old)", "dead_letters")

    def orphan(self, uri: str, what: str, kind: str) -> None:
        age = age_seconds(uri, self.now)
        if age is None:
            return
        if age < self.grace_s:
            self.out.fresh.append(uri)
            self.out.actions.append(f"kept {what} ({age / 60:.0f} min old, inside the grace period: "
                                    "a job may still be writing it)")
            return
        self.delete(uri, what, kind)


# --------------------------------------------------------------- quarantine ---
DEFAULT_QUARANTINE_DAYS = 14.0


def quarantined(output_root: str, problems: list[str] | None = None) -> list[Quarantined]:
    """The would-be snapshots that failed a gate (`jobs.gates.quarantine`), oldest first."""
    return list_quarantined(output_root, problems=problems)


@dataclass
class ShownQuarantined:
    quarantined: Quarantined
    problems: list[str]   # files listed in its record that are missing or changed


def show_quarantined(output_root: str, snapshot_id: str) -> ShownQuarantined | None:
    q = find_quarantined(output_root, snapshot_id)
    if q is None:
        return None
    return ShownQuarantined(q, store.file_problems(q.folder, q.manifest))


def gc_quarantine(output_root: str, older_than_days: float, *, dry_run: bool = False,
                  now: dt.datetime | None = None) -> list[str]:
    """Delete quarantined would-be snapshots quarantined more than
    `older_than_days` ago (by the time in their record, else their folder's
    age). Returns one line per deletion."""
    if older_than_days < 0:
        raise SnapshotError("--quarantine-days must be >= 0")
    now = now or dt.datetime.now(dt.timezone.utc)
    verb = "would delete" if dry_run else "deleted"
    lines = []
    for day, folder in quarantine_folders(output_root):
        try:
            at = read_quarantined(folder).quarantined_at
        except (FileNotFoundError, OasisError, OSError):
            at = None
        age = (now - at).total_seconds() if at else age_seconds(folder, now)
        if age is None or age < older_than_days * 86400.0:
            continue
        if not dry_run:
            storage.delete_tree(folder)
        lines.append(f"{verb} quarantined would-be snapshot {layout.score_date_dirname(day)}/"
                     f"{folder.rstrip('/').rsplit('/', 1)[-1]} ({age / 86400.0:.1f} days in quarantine): {folder}")
    return lines
