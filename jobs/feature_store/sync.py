"""`oasis serving sync`: the snapshot LATEST points to, into the online store.

A sync reads the snapshot through the serving reader (`jobs.serving.load_latest`:
every file checked against the manifest, a damaged LATEST falls back to the
previous valid snapshot, a stale one is refused, rows past their flight end are
left out), then, under the repository's lock:

* nothing new (the current store holds this snapshot with these rows and these
  definitions): writes nothing;
* a retained complete store holds it (a rollback to the previous snapshot):
  re-points `current` to it;
* else builds a new store (`jobs.feature_store.repository`), writes each view
  with Feast's `write_to_online_store`, checks the row counts SQLite holds,
  marks it complete and switches `current` to it.

The rows a store holds for a snapshot depend on the day (rows whose flight ended
are left out), so a sync on a later day with the same LATEST rebuilds when
rows have to go. Run it after every publish (the Luigi task `ServingSync` does)
and once a day.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from dataclasses import dataclass, field

from jobs import layout, serving
from jobs.feature_store import definitions as defs
from jobs.feature_store import repository
from jobs.observe import hook
from pipelines import faults
from pipelines.errors import OasisError

log = logging.getLogger(__name__)

SYNC_LOCK_WAIT_S = 600.0  # another sync of the same repository: wait for it, then usually nothing is left to do


class SyncBusy(OasisError):
    """Another sync held the repository's lock for too long."""


class FeastMissing(OasisError):
    """The `serving` extra (Feast) is not installed."""


@dataclass
class SyncResult:
    action: str                 # "unchanged", "repointed" or "built"
    snapshot_id: str
    score_date: dt.date
    repo: str
    store: str                  # the store folder `current` points to
    rows: dict[str, int]        # per feature view
    withheld_rows: int          # promotion_scores rows past their flight end, not served
    fell_back_from: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)   # stores garbage-collected
    seconds: float = 0.0


def require_feast() -> None:
    try:
        import feast  # noqa: F401
    except ImportError:
        raise FeastMissing("the online store needs Feast: pip install -e '.[serving]' (the serving extra)") from None


def sync(output_root: str, repo: str, *, today: dt.date | None = None, max_age_days: int | None = None,
         allow_stale: bool = False, progress=lambda message: None) -> SyncResult:
    """Make the online store in `repo` serve the snapshot LATEST points to (see
    the module docstring); idempotent."""
    started = time.monotonic()
    require_feast()
    repo = repository.check_local(repo)
    today = today or serving.utc_today()
    snap = serving.load_latest(output_root, today=today, max_age_days=max_age_days, allow_stale=allow_stale)
    want = {"snapshot_id": snap.snapshot_id, "definitions": defs.DEFINITIONS_VERSION,
            "rows": {view: snap.tables[table.name].num_rows for view, (table, _, _) in defs.VIEWS.items()}}
    try:
        with repository.lock(repo, SYNC_LOCK_WAIT_S):
            action, store, removed = _sync_locked(repo, snap, want, today, progress)
    except TimeoutError as e:
        raise SyncBusy(f"another `oasis serving sync` of {repo} is still running: {e}") from None
    result = SyncResult(action, snap.snapshot_id, snap.score_date, repo, store, want["rows"], snap.withheld_rows,
                        snap.fell_back_from, removed, round(time.monotonic() - started, 3))
    log.info("serving sync %s: %s (%s) rows %s, %d withheld past their flight end", result.action,
             result.snapshot_id, result.score_date, result.rows, result.withheld_rows)
    return result


def observed_sync(output_root: str, repo: str, **kwargs) -> SyncResult:
    """`sync`, leaving a run record and lineage events like every run does
    (`jobs.observe.hook.observed_step`): `oasis serving sync` and the Luigi task."""
    with hook.observed_step("serving sync", output_root) as outcome:
        result = sync(output_root, repo, **kwargs)
        outcome["status"] = hook.ALREADY_PUBLISHED if result.action == "unchanged" else hook.PUBLISHED
        outcome["snapshot_id"] = result.snapshot_id
    return result


def _sync_locked(repo: str, snap: serving.LoadedSnapshot, want: dict, today: dt.date, progress):
    current = repository.current_store(repo)
    if current and repository.holds(current, want):
        return "unchanged", current, []
    for store in repository.stores(repo):
        if store != current and repository.holds(store, want):
            repository.switch(repo, store)
            progress(f"re-pointed the online store to {store} (it already holds {snap.snapshot_id})")
            return "repointed", store, repository.collect_garbage(repo)
    removed = repository.collect_garbage(repo)  # half-built stores of killed syncs first
    store = repository.new_store(repo, snap.snapshot_id)
    progress(f"building the online store for {snap.snapshot_id} ({snap.score_date}) in {store}")
    _build(store, snap)
    faults.checkpoint("serving_store_built")
    repository.mark_complete(store, {
        **want, "score_date": snap.score_date.isoformat(), "valid_until": snap.manifest.valid_until.isoformat(),
        "rows_for_day": today.isoformat(), "withheld_rows": snap.withheld_rows, "source": snap.folder,
        "fell_back_from": snap.fell_back_from, "synced_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    faults.checkpoint("serving_before_switch")
    repository.switch(repo, store)
    return "built", store, removed + repository.collect_garbage(repo)


def _build(store: str, snap: serving.LoadedSnapshot) -> None:
    """A fresh Feast store with every view of the snapshot written, checked
    against what SQLite holds."""
    from feast import FeatureStore

    with open(layout.store_file(store, layout.STORE_CONFIG), "w") as f:
        f.write(defs.FEATURE_STORE_YAML)
    with warnings.catch_warnings():  # Feast warns about its own preview features on apply
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = FeatureStore(config=defs.repo_config(store))
        fs.apply(defs.feast_objects(snap.folder))
        for i, (view, (table, _, _)) in enumerate(defs.VIEWS.items()):
            if i:
                faults.checkpoint("serving_between_views")
            rows = snap.tables[table.name]
            if rows.num_rows:  # one call is one SQLite transaction (INSERT ... ON CONFLICT DO UPDATE)
                fs.write_to_online_store(view, defs.feature_frame(view, rows, snap.score_date,
                                                                 snap.manifest.valid_until))
    held = repository.online_rows(store)
    expected = {view: snap.tables[table.name].num_rows for view, (table, _, _) in defs.VIEWS.items()}
    if held != expected:
        raise repository.RepositoryError(f"the online store built in {store} holds {held} keys, expected "
                                         f"{expected}; `current` was not moved")
