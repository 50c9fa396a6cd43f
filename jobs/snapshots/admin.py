"""Looking after the published snapshots of an output root (local or gs://):
list, show, roll back, garbage-collect. Each returns a result; `jobs.cli`
prints it.

* `list_snapshots`: every published snapshot (a folder with a readable
  `_MANIFEST.json`), oldest first, and which one LATEST points to.
* `show`: one snapshot's manifest and folder.
* `rollback`: point LATEST at another snapshot, after checking that its
  validation passed and that every file listed in its manifest is there with
  its size and sha256. The pointer moves by compare-and-swap against the value
  read before the check, so a concurrent publish is never overwritten.
* `gc`: keeps the N newest valid snapshots (by score date, then creation time),
  the one LATEST points to and every snapshot newer than it (a publish may be
  between its manifest and the pointer), and deletes the other snapshots with
  their dead letters. It also deletes, once older than the grace period
  (default 60 min, so a running job is left alone), snapshot folders without a
  manifest (left by killed runs) and aggregate builds that the day's marker does
  not name. Without a LATEST pointer it deletes no snapshot. A folder's age is
  counted from the newest of its files' modification times and the time in its
  run id.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from jobs import layout
from jobs.gates.quarantine import (Quarantined, find_quarantined, list_quarantined, quarantine_folders,
                                  read_quarantined)
from jobs.manifest import Manifest
from jobs.run.aggregates import stored_build
from jobs.snapshots import store
from pipelines import storage
from pipelines.errors import OasisError

DEFAULT_GRACE_MINUTES = 60.0


class SnapshotError(OasisError):
    """A request the snapshots command refuses; the message says why."""


def relative(manifest: Manifest) -> str:
    return layout.snapshot_rel(manifest.score_date, manifest.snapshot_id)


def find(output_root: str, snapshot_id: str) -> tuple[str, Manifest]:
    found = store.find_snapshot(output_root, snapshot_id)
    if found is None:
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

    @property
    def latest_listed(self) -> bool:
        return any(relative(m) == self.latest for _, m in self.snapshots)


def list_snapshots(output_root: str) -> Listing:
    unreadable: list[str] = []
    found = store.list_manifests(output_root, problems=unreadable)
    return Listing(found, store.read_latest(output_root).content, unreadable)


# --------------------------------------------------------------------- show ---
@dataclass
class Shown:
    folder: str
    manifest: Manifest
    is_latest: bool
    problems: list[str]   # what `verify` finds


def show(output_root: str, snapshot_id: str) -> Shown:
    folder, m = find(output_root, snapshot_id)
    latest = store.read_latest(output_root).content
    return Shown(folder, m, relative(m) == latest, verify(folder, m))


# ----------------------------------------------------------------- rollback ---
@dataclass
class RolledBack:
    previous: str | None   # what LATEST held
    target: str            # what it holds now
    direction: str         # "", "back to an earlier score date", "forward to a newer score date"
    files_verified: int
    changed: bool


def rollback(output_root: str, snapshot_id: str) -> RolledBack:
    uri = layout.latest_uri(output_root)
    current = storage.read_pointer(uri)  # the value the swap below must still find
    folder, m = find(output_root, snapshot_id)
    target = relative(m)
    problems = verify(folder, m)
    if problems:
        raise SnapshotError(f"refusing to point LATEST at {target}: it is damaged or invalid:\n  "
                            + "\n  ".join(problems))
    files = sum(len(t.files) for t in m.tables.values())
    if current.content == target:
        return RolledBack(current.content, target, "", files, changed=False)
    try:
        storage.replace_pointer(uri, target, current)
    except storage.PointerMoved:
        now = storage.read_pointer(uri).content
        raise SnapshotError(f"LATEST moved while the snapshot was being checked (now {now}); "
                            "nothing changed, run the rollback again") from None
    direction = ""
    try:
        old_date = layout.parse_snapshot_rel(current.content)[0] if current.content else None
    except ValueError:
        old_date = None
    if old_date is not None and old_date > m.score_date:
        direction = "back to an earlier score date"
    elif old_date is not None and old_date < m.score_date:
        direction = "forward to a newer score date"
    return RolledBack(current.content, target, direction, files, changed=True)


# ----------------------------------------------------------------------- gc ---
@dataclass
class Collected:
    dry_run: bool
    grace_minutes: float
    actions: list[str] = field(default_factory=list)   # one line per deletion or notable decision, in order
    snapshots: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)


def gc(output_root: str, keep: int, *, dry_run: bool = False, grace_minutes: float = DEFAULT_GRACE_MINUTES,
       now: dt.datetime | None = None) -> Collected:
    """Delete what the policy in the module docstring allows; returns what was
    (or, with dry_run, would be) deleted and kept."""
    if keep < 0:
        raise SnapshotError("--keep must be >= 0")
    if grace_minutes < 0:
        raise SnapshotError("--grace-minutes must be >= 0")
    now = now or dt.datetime.now(dt.timezone.utc)
    out = Collected(dry_run, grace_minutes)
    _Collector(output_root, out, now).run(keep)
    return out


class _Collector:
    def __init__(self, output_root: str, out: Collected, now: dt.datetime):
        self.root, self.out, self.now = output_root, out, now
        self.grace_s = out.grace_minutes * 60.0
        self.verb = "would delete" if out.dry_run else "deleted"

    def run(self, keep: int) -> None:
        found = store.list_manifests(self.root)
        latest = store.read_latest(self.root).content
        self.snapshots(found, latest, keep)
        self.orphan_snapshot_folders(found, latest)
        self.orphan_builds()

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
