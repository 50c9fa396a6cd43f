"""The feature repository on disk (paths from `jobs.layout`): one complete Feast
store per snapshot, and an atomic pointer to the one serving reads.

    REPO/current -> stores/<snapshot_id>-<nonce>
    REPO/stores/<snapshot_id>-<nonce>/{feature_store.yaml, registry.db, online.db, SNAPSHOT.json}
    REPO/.sync.lock

Why one store per snapshot: Feast's SQLite online store upserts whatever it is
given (one transaction per feature view) and never deletes a key. Written in
place, a rollback to an older snapshot would leave the keys only the newer one
had, and a sync killed between two views would leave one view new and one old:
a mix of two snapshots. So a sync builds a fresh store folder, writes
`SNAPSHOT.json` last (after fsyncing the data: the folder is whole), and only
then moves `current` with a rename of a new symlink over it (rename(2) is
atomic). A SIGKILL at any moment leaves `current` on a whole store, old or new;
a folder without `SNAPSHOT.json` is never referenced and the next sync removes
it. The previous complete store is kept, so a rollback re-points in
milliseconds; older ones are removed. The repository must be a local folder
(SQLite); `.sync.lock` is an flock the kernel releases when its holder dies.
"""
from __future__ import annotations

import json
import os
import sqlite3
import uuid

from jobs import layout
from jobs.feature_store.definitions import PROJECT, VIEWS
from pipelines import storage
from pipelines.errors import OasisError

KEEP_STORES = 2  # the current store and the previous complete one (an instant rollback)


class RepositoryError(OasisError):
    """The feature repository cannot be used as asked; the message says why."""


def check_local(repo: str) -> str:
    if storage.is_gcs(repo):
        raise RepositoryError(f"the feature repository must be a local folder (Feast's SQLite online store), "
                              f"not {repo}: pass --repo DIR")
    return os.path.abspath(repo)


def lock(repo: str, timeout_s: float):
    return storage.local_lock(layout.repo_lock(repo), timeout_s=timeout_s)


# ------------------------------------------------------------------ state ---
def read_state(store_dir: str) -> dict | None:
    """The state of a complete store (what it holds), None for an incomplete one."""
    try:
        with open(layout.store_file(store_dir, layout.STORE_STATE)) as f:
            state = json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def current_store(repo: str) -> str | None:
    """The store folder `current` points to (resolved once), None before the first sync."""
    pointer = layout.repo_current(repo)
    return os.path.realpath(pointer) if os.path.islink(pointer) else None


def current_state(repo: str) -> dict | None:
    store = current_store(repo)
    return read_state(store) if store else None


def online_rows(store_dir: str) -> dict[str, int]:
    """Entity keys per feature view in a store's online.db, counted by SQLite."""
    con = sqlite3.connect(f"file:{layout.store_file(store_dir, layout.STORE_ONLINE)}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {view: con.execute(f'SELECT count(DISTINCT entity_key) FROM "{PROJECT}_{view}"').fetchone()[0]
                if f"{PROJECT}_{view}" in tables else 0 for view in VIEWS}
    finally:
        con.close()


def holds(store_dir: str, want: dict) -> bool:
    """The store is complete, holds the snapshot, rows and definitions `want`
    describes, and its online.db has those rows."""
    state = read_state(store_dir)
    if state is None or any(state.get(k) != v for k, v in want.items()):
        return False
    try:
        return online_rows(store_dir) == want["rows"]
    except sqlite3.Error:
        return False


def stores(repo: str) -> list[str]:
    root = layout.repo_stores(repo)
    return [storage.join(root, name) for name in sorted(os.listdir(root))] if os.path.isdir(root) else []


# ---------------------------------------------------------------- changes ---
def new_store(repo: str, snapshot_id: str) -> str:
    store = storage.join(layout.repo_stores(repo), layout.store_dirname(snapshot_id))
    os.makedirs(store)
    return store


def mark_complete(store_dir: str, state: dict) -> None:
    """fsync the store's files, then write its state: from here on it is whole."""
    for name in os.listdir(store_dir):
        _fsync(storage.join(store_dir, name))
    storage.write_bytes(layout.store_file(store_dir, layout.STORE_STATE),
                        json.dumps(state, indent=2, sort_keys=True).encode())
    _fsync(store_dir)


def switch(repo: str, store_dir: str) -> None:
    """Point `current` at `store_dir`: a new relative symlink renamed over the old one."""
    tmp = storage.join(repo, f".{layout.REPO_CURRENT}.{uuid.uuid4().hex}")
    os.symlink(os.path.relpath(store_dir, repo), tmp)
    os.replace(tmp, layout.repo_current(repo))
    _fsync(repo)


def collect_garbage(repo: str) -> list[str]:
    """Remove incomplete stores (killed syncs: call under the lock) and complete
    ones beyond KEEP_STORES, never the current one. Returns the names removed."""
    current = current_store(repo)
    complete, removed = [], []
    for store in stores(repo):
        if store == current:
            continue
        state = read_state(store)
        if state is None:
            removed.append(store)
        else:
            complete.append((str(state.get("synced_at", "")), store))
    removed += [store for _, store in sorted(complete, reverse=True)[KEEP_STORES - 1:]]
    for store in removed:
        storage.delete_tree(store)
    for name in os.listdir(repo):
        if name.startswith(f".{layout.REPO_CURRENT}."):  # a symlink a killed switch left
            os.unlink(storage.join(repo, name))
    return [os.path.basename(s) for s in removed]


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading ---
def open_online_store(repo: str):
    """(Feast FeatureStore, state) of the store `current` points to. The pointer
    is resolved once: a sync that switches it later does not change what this
    FeatureStore reads. Re-open to follow the newest sync."""
    from feast import FeatureStore

    store = current_store(check_local(repo))
    state = read_state(store) if store else None
    if state is None:
        raise RepositoryError(f"no online store in {repo} yet: run `oasis serving sync`")
    return FeatureStore(repo_path=store), state
