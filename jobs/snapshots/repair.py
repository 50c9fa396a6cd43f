"""Bringing LATEST, the warehouse and its registry back into agreement, and
rebuilding the warehouse from the snapshot files.

A publish writes data, manifest, warehouse, then LATEST; a rollback writes its
records, then LATEST, then the warehouse. A failure between two steps (a kill,
a full disk, an unreachable warehouse) leaves them split. `repair` decides from
what it finds which snapshot should be current, and makes LATEST and the
warehouse say so:

1. the warehouse marks a snapshot current that is newer than LATEST's, sound
   and not pulled: a publish stopped after its warehouse step, so LATEST moves
   forward to it (the publish is finished, not undone);
2. otherwise LATEST's snapshot, when it is sound and not pulled;
3. LATEST names a pulled snapshot (a rollback stopped after its record): the
   snapshot the rollback named, else the newest sound one before it;
4. LATEST is damaged (unreadable bytes, a folder, a missing or invalid
   snapshot): the newest sound snapshot not newer than what it names (any, when
   it names nothing).

Then the warehouse follows: that snapshot's rows are (re)loaded and marked
current, and pulled snapshots' rows leave the tables, each in one transaction.
Stray temporary files of an interrupted pointer write are removed. Everything
done is returned as one line each, so the caller can say what it did.

`rebuild` reloads every score date's newest sound snapshot from its files into
a fresh warehouse (a DuckDB file that is missing, deleted or not a database;
a BigQuery dataset pruned to exactly those snapshots), LATEST's one current.

Both run under the publish lock, so they never interleave with a publish.
"""
from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from dataclasses import dataclass, field

from jobs import layout
from jobs.manifest import Manifest
from jobs.snapshots import pulls, store
from jobs.warehouse.base import RegistryRow, Warehouse, current_of, registry_row
from pipelines import faults, storage
from pipelines.errors import OasisError, StorageError

log = logging.getLogger(__name__)
REBUILD_HINT = "`oasis warehouse rebuild` reloads them from the snapshot files"


class RepairError(OasisError):
    """A repair that could not be completed; the message says what is left."""


@dataclass
class State:
    """What a repair sees: snapshots, rollback records, LATEST, the registry."""
    manifests: dict[str, tuple[str, Manifest]]      # snapshot id -> (folder, manifest)
    pulled: dict[str, pulls.Pull]
    latest: str | None                               # LATEST's text; None when absent
    latest_error: str = ""                           # why LATEST cannot be read at all (a folder, ...)
    registry: list[RegistryRow] | None = None        # None: the warehouse could not be read
    warehouse_error: str = ""
    _sound: dict = field(default_factory=dict)

    def sound(self, sid: str) -> bool:
        """Fit to be current: published, gates passed, not pulled, files intact."""
        if sid not in self._sound:
            found = self.manifests.get(sid)
            self._sound[sid] = bool(found) and sid not in self.pulled and found[1].gates_passed \
                and not store.file_problems(*found)
        return self._sound[sid]

    def latest_id(self) -> str | None:
        try:
            return layout.parse_snapshot_rel(self.latest)[1] if self.latest else None
        except ValueError:
            return None

    def newest_sound(self, not_after=None) -> Manifest | None:
        for _, m in sorted(self.manifests.values(), key=lambda fm: fm[1].order_key, reverse=True):
            if (not_after is None or m.order_key <= not_after) and self.sound(m.snapshot_id):
                return m
        return None


def read_state(output_root: str, warehouse: Warehouse | None) -> State:
    manifests = {m.snapshot_id: (f, m) for f, m in store.list_manifests(output_root)}
    state = State(manifests, pulls.read_pulls(output_root), None)
    try:
        state.latest = store.read_latest(output_root).content
    except StorageError as e:
        state.latest_error = str(e)
    if warehouse is not None:
        try:
            state.registry, _ = warehouse.registry()
        except OasisError as e:
            state.warehouse_error = str(e)
    return state


def choose(state: State) -> tuple[Manifest | None, str]:
    """(the snapshot that should be current, why), by the rules of the module docstring."""
    lid = state.latest_id()
    latest = state.manifests.get(lid, (None, None))[1] if lid else None
    explicit = [r for r in state.registry or [] if r.is_current and r.pulled_at is None]
    if explicit and explicit[0].snapshot_id != lid and state.sound(explicit[0].snapshot_id):
        w = state.manifests[explicit[0].snapshot_id][1]
        if latest is None or w.order_key > latest.order_key:
            return w, f"finishing the publish of {w.snapshot_id}: the warehouse holds it as current, LATEST did not move"
    if latest is not None and state.sound(lid):
        return latest, "LATEST's snapshot is sound"
    if lid in state.pulled:
        to = state.pulled[lid].rolled_back_to
        try:
            to_id = layout.parse_snapshot_rel(to)[1] if to else None
        except ValueError:
            to_id = None
        if to_id and state.sound(to_id):
            return state.manifests[to_id][1], f"finishing the rollback of {lid} to {to_id}"
        m = state.newest_sound(latest.order_key if latest else None)
        return m, f"LATEST names {lid}, which a rollback pulled"
    if state.latest_error or state.latest:
        what = state.latest_error or f"LATEST holds {state.latest[:80]!r}, which is not a sound published snapshot"
        bound = latest.order_key if latest else None
        if latest is None and lid:
            day = layout.parse_snapshot_rel(state.latest)[0]
            bound = (day, dt.datetime.max.replace(tzinfo=dt.timezone.utc), "~")
        return state.newest_sound(bound), what
    m = state.newest_sound()
    return m, "there is no LATEST pointer" if m else "nothing is published"


@dataclass
class Repaired:
    actions: list[str] = field(default_factory=list)    # what was done, one line each
    warnings: list[str] = field(default_factory=list)   # what is left for a person (e.g. a rebuild)
    current: str | None = None                          # LATEST's value after the repair


def survey(output_root: str, warehouse: Warehouse | None) -> tuple[list[str], list[dt.date]]:
    """The cheap check a run makes before its work: (why LATEST, the rollback
    records and the warehouse's current snapshot disagree -- empty when they
    agree; score dates with a sound published snapshot that the warehouse does
    not hold -- a deleted or replaced warehouse)."""
    state = read_state(output_root, warehouse)
    return _disagreement(state), _missing(state)


def _disagreement(state: State) -> list[str]:
    problems = []
    lid = state.latest_id()
    if state.latest_error:
        problems.append(state.latest_error)
    elif state.latest and lid is None:
        problems.append(f"LATEST holds {state.latest[:80]!r}")
    if lid in state.pulled:
        problems.append(f"LATEST names {lid}, which a rollback pulled")
    if state.registry:
        current = current_of(state.registry)
        if lid and current is not None and current.snapshot_id != lid:
            problems.append(f"the warehouse's current snapshot is {current.snapshot_id}, LATEST's is {lid}")
        stale = [r.snapshot_id for r in state.registry if r.snapshot_id in state.pulled and r.pulled_at is None]
        if stale:
            problems.append(f"the warehouse still serves pulled snapshot(s) {', '.join(stale)}")
    return problems


def _missing(state: State) -> list[dt.date]:
    if state.registry is None:
        return []
    held = {r.score_date for r in state.registry}
    return sorted({m.score_date for _, m in state.manifests.values()
                   if m.snapshot_id not in state.pulled and m.gates_passed} - held)


def repair(output_root: str, warehouse: Warehouse | None, on_wait=None) -> Repaired:
    """Make LATEST and the warehouse agree (module docstring); returns what was done."""
    storage.require_folder(output_root, "output root")
    out = Repaired()
    with store.publish_lock(output_root, on_wait=on_wait):
        _remove_stray_temporaries(output_root, out)
        state = read_state(output_root, warehouse)
        target, why = choose(state)
        if target is None:
            if state.latest_error or (state.latest and not state.sound(state.latest_id() or "")):
                out.warnings.append(f"{why}; no sound published snapshot to point LATEST at, so it stays")
            out.current = state.latest
            return out
        rel = layout.snapshot_rel(target.score_date, target.snapshot_id)
        if rel != state.latest:
            if state.latest_error:
                aside = storage.set_aside(layout.latest_uri(output_root), "damaged")
                out.actions.append(f"set the damaged LATEST aside as {aside}")
            store.move_latest(output_root, target.score_date, target.snapshot_id, allow_older=True)
            out.actions.append(f"LATEST: {state.latest or '(none)'} -> {rel} ({why})")
        out.current = rel
        if warehouse is None:
            return out
        if state.registry is None:
            out.warnings.append(f"the warehouse cannot be read ({state.warehouse_error}); {REBUILD_HINT}")
            return out
        out.actions += follow(output_root, warehouse, target, state)
        missing = _missing(read_state(output_root, warehouse))
        if missing:
            out.warnings.append(f"the warehouse {warehouse.uri} lacks {len(missing)} published score date(s) "
                                f"({_days(missing)}); {REBUILD_HINT}")
    return out


def follow(output_root: str, warehouse: Warehouse, target: Manifest, state: State) -> list[str]:
    """Make `target` the warehouse's current snapshot (reloading its date's rows
    unless it already is current) and take pulled snapshots out; the lines say
    what changed."""
    actions = []
    current = current_of(state.registry or [])
    registered = {r.snapshot_id: r for r in state.registry or []}
    stale = sorted(sid for sid, r in registered.items() if sid in state.pulled and r.pulled_at is None)
    if current is None or current.snapshot_id != target.snapshot_id or not registered[target.snapshot_id].is_current:
        folder = store.snapshot_dir_of(output_root, target)
        warehouse.publish(target.score_date, store.read_snapshot_tables(folder, target),
                          registry_row(target, storage.join(folder, layout.MANIFEST)), current=True)
        actions.append(f"warehouse {warehouse.uri}: current snapshot "
                       f"{current.snapshot_id if current else '(none)'} -> {target.snapshot_id} "
                       f"(its {target.score_date} rows reloaded from its files)")
    if stale:
        warehouse.set_current(target.snapshot_id, stale)
        actions.append(f"warehouse {warehouse.uri}: pulled snapshot(s) {', '.join(stale)} marked pulled, "
                       "their rows removed")
    return actions


def follow_latest(output_root: str, warehouse: Warehouse) -> list[str]:
    """Make the warehouse's current snapshot LATEST's (when LATEST names a sound
    snapshot); the lines say what changed. Called under the publish lock."""
    state = read_state(output_root, warehouse)
    lid = state.latest_id()
    if state.registry is None or lid is None or not state.sound(lid):
        return []
    return follow(output_root, warehouse, state.manifests[lid][1], state)


def _remove_stray_temporaries(output_root: str, out: Repaired) -> None:
    """`LATEST.tmp-*` files an interrupted pointer write left (local roots; a
    whole-file write removes its own on failure since this version)."""
    if storage.is_gcs(output_root):
        return
    for path in sorted(glob.glob(glob.escape(layout.latest_uri(output_root)) + ".tmp-*")):
        try:
            os.unlink(path)
            out.actions.append(f"removed the stray temporary file {path}")
        except OSError as e:
            out.warnings.append(f"could not remove the stray temporary file {path}: {e}")


def _days(days: list[dt.date]) -> str:
    return ", ".join(d.isoformat() for d in days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")


# ------------------------------------------------------------------ rebuild ---
@dataclass
class Rebuilt:
    loaded: list[str] = field(default_factory=list)     # "score_date/snapshot_id (rows)" per snapshot reloaded
    skipped: list[str] = field(default_factory=list)    # snapshots left out, and why
    current: str | None = None
    set_aside: str | None = None                        # where the replaced DuckDB file went


def rebuild(output_root: str, warehouse: Warehouse, progress=lambda s: None, on_wait=None) -> Rebuilt:
    """Reload every score date's newest sound snapshot into a fresh warehouse
    (module docstring); LATEST's snapshot (after the same choice `repair` makes)
    is current."""
    storage.require_folder(output_root, "output root")
    out = Rebuilt()
    with store.publish_lock(output_root, on_wait=on_wait):
        state = read_state(output_root, None)
        target, _ = choose(state)
        by_date: dict[dt.date, Manifest] = {}
        for _, m in sorted(state.manifests.values(), key=lambda fm: fm[1].order_key, reverse=True):
            if m.score_date in by_date:
                continue
            if m.snapshot_id in state.pulled:
                out.skipped.append(f"{m.snapshot_id}: pulled by a rollback")
            elif not state.sound(m.snapshot_id):
                out.skipped.append(f"{m.snapshot_id}: not sound ({m.validation_text}; "
                                   f"{'; '.join(store.file_problems(*state.manifests[m.snapshot_id])) or 'files ok'})")
            else:
                by_date[m.score_date] = m
        if target is not None and target.score_date in by_date:
            by_date[target.score_date] = target  # LATEST's choice of its date wins (an older rerun, say)
        fresh, commit = warehouse.rebuild_target()
        try:
            for day in sorted(by_date):
                m = by_date[day]
                folder = store.snapshot_dir_of(output_root, m)
                tables = store.read_snapshot_tables(folder, m)
                is_current = target is not None and m.snapshot_id == target.snapshot_id
                fresh.publish(day, tables, registry_row(m, storage.join(folder, layout.MANIFEST)), current=is_current)
                out.loaded.append(f"{day}/{m.snapshot_id} ({tables['promotion_scores'].num_rows} rows)")
                progress(f"loaded {day} from {m.snapshot_id}")
                faults.checkpoint("rebuild_loading")
            out.set_aside = commit([m.snapshot_id for m in by_date.values()])
        except BaseException:
            if fresh is not warehouse and getattr(fresh, "path", None) and os.path.exists(fresh.path):
                os.unlink(fresh.path)  # the half-built fresh file; the warehouse in place is untouched
            raise
        out.current = layout.snapshot_rel(target.score_date, target.snapshot_id) if target else None
    return out

