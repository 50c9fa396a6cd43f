"""Snapshots on disk: describing the tables, the manifest, the LATEST pointer.

Order of a publish: data files, then `_MANIFEST.json` (create-only: a
snapshot's manifest is never overwritten), then the warehouse, then LATEST (a
compare-and-swap). A snapshot folder without a readable manifest is not a
snapshot. Paths come from `jobs.layout`; every file operation goes through
`pipelines.storage`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from jobs import layout
from jobs.manifest import FileEntry, Manifest, ManifestError, TableEntry
from jobs.snapshots import pulls
from pipelines import storage
from schemas import OUTPUTS

log = logging.getLogger(__name__)

# Output tables added after the first snapshots were published: a manifest that
# does not list one is from before it existed, and reads as an empty table.
ADDED_LATER = ("campaign_lift",)


# ----------------------------------------------------------------- tables ---
def content_sha256(table: pa.Table, key: list[str]) -> str:
    """Fingerprint of a table's content, independent of file layout and of the
    snapshot id: rows sorted by key, snapshot_id dropped, Arrow IPC bytes hashed."""
    if "snapshot_id" in table.column_names:
        table = table.drop_columns(["snapshot_id"])
    table = table.sort_by([(k, "ascending") for k in key]).combine_chunks().replace_schema_metadata(None)
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def as_contract(table: pa.Table, name: str, columns: list[str] | None = None) -> pa.Table:
    """A published file's rows cast to table `name`'s contract (only `columns`,
    when given). A column the contract gained after an older snapshot was
    written reads as nulls (its field then nullable)."""
    schema = OUTPUTS[name].arrow()
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    for i, f in enumerate(schema):
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
            schema = schema.set(i, f.with_nullable(True))
    return table.select(schema.names).cast(schema)


def read_table_files(files: list[str], name: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of a published table's files, cast to its contract (only
    `columns`, when given; see `as_contract`)."""
    wanted = columns if columns is not None else OUTPUTS[name].names
    tables = []
    for f in files:
        with pq.ParquetFile(storage.open_input(f)) as pf:
            present = [c for c in wanted if c in pf.schema_arrow.names]
            tables.append(as_contract(pf.read(columns=present), name, columns))
    if not tables:
        return as_contract(OUTPUTS[name].empty(), name, columns)
    return pa.concat_tables(tables, promote_options="permissive")


def describe_tables(snapshot_dir: str) -> tuple[dict[str, TableEntry], dict[str, pa.Table]]:
    """Per output table: files (relative path, rows, bytes, sha256), row count
    and content fingerprint; plus the tables themselves (they are small)."""
    out, tables = {}, {}
    for name, contract in OUTPUTS.items():
        folder = layout.table_dir(snapshot_dir, name)
        files = storage.list_files(folder, ".parquet")
        if not files:  # an empty table still gets a file, so readers see its schema
            uri = storage.join(folder, "part-empty.parquet")
            with storage.open_output(uri) as f:
                pq.write_table(contract.empty(), f)
            files = [uri]
        entries, parts = [], []
        for f in files:  # one read per file: the bytes hashed are the bytes parsed
            data = storage.read_bytes(f)
            parts.append(pq.read_table(io.BytesIO(data)).cast(contract.arrow()))
            entries.append(FileEntry(path=f"{name}/{f.replace(chr(92), '/').rsplit('/', 1)[-1]}",
                                     rows=parts[-1].num_rows, bytes=len(data),
                                     sha256=hashlib.sha256(data).hexdigest()))
        table = pa.concat_tables(parts)
        out[name] = TableEntry(rows=table.num_rows, files=entries,
                               content_sha256=content_sha256(table, list(contract.key)))
        tables[name] = table
    return out, tables


def file_problems(folder: str, manifest: Manifest) -> list[str]:
    """Every table file the manifest lists that is missing or whose size or
    sha256 differs, as "path: what is wrong". Empty when all are intact."""
    problems = []
    for _, table in sorted(manifest.tables.items()):
        for f in table.files:
            try:
                data = storage.read_bytes(layout.listed_file(folder, f.path))
            except FileNotFoundError:
                problems.append(f"{f.path}: missing")
                continue
            if len(data) != f.bytes:
                problems.append(f"{f.path}: {len(data)} bytes, manifest says {f.bytes}")
            elif hashlib.sha256(data).hexdigest() != f.sha256:
                problems.append(f"{f.path}: sha256 differs from the manifest")
    return problems


def read_snapshot_tables(folder: str, manifest: Manifest) -> dict[str, pa.Table]:
    """The output tables of a published snapshot, from the files its manifest
    lists (a table ADDED_LATER that an older manifest lacks reads empty)."""
    tables = {name: read_table_files([layout.listed_file(folder, f.path) for f in t.files], name)
              for name, t in manifest.tables.items() if name in OUTPUTS}
    for name in ADDED_LATER:
        if name not in manifest.tables:
            tables[name] = OUTPUTS[name].empty()
    return tables


# --------------------------------------------------------------- manifest ---
def write_manifest(snapshot_dir: str, manifest: Manifest) -> str:
    uri = storage.join(snapshot_dir, layout.MANIFEST)
    storage.create_only(uri, manifest.to_json())
    return uri


def read_manifest(snapshot_dir: str) -> Manifest:
    """The manifest of a snapshot folder. FileNotFoundError when there is none;
    ManifestError when it is not one (damaged, foreign, or naming another folder)."""
    uri = storage.join(snapshot_dir, layout.MANIFEST)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise
    except OSError as e:  # permission, I/O error: a manifest that cannot be read is not one
        raise ManifestError(f"{uri}: cannot be read: {e}") from None
    manifest = Manifest.from_json(data, where=uri)
    folder_id = snapshot_dir.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    if manifest.snapshot_id != folder_id:
        raise ManifestError(f"{uri}: names snapshot {manifest.snapshot_id}, not its folder's {folder_id}")
    return manifest


def snapshot_dir_of(output_root: str, manifest: Manifest) -> str:
    return layout.snapshot_dir(output_root, manifest.score_date, manifest.snapshot_id)


def snapshot_folders(output_root: str, score_date: dt.date | None = None) -> list[tuple[dt.date, str, str]]:
    """(score date, snapshot id, folder) of every folder under OUT/snapshots that
    may hold a snapshot, whether or not it has a manifest."""
    root = layout.snapshots_root(output_root)
    names = ([layout.score_date_dirname(score_date)] if score_date
             else storage.list_dirs(root))
    found = []
    for name in names:
        day = layout.parse_score_date_dirname(name)
        if day is None:
            continue
        for sid in storage.list_dirs(storage.join(root, name)):
            found.append((day, sid, layout.snapshot_dir(output_root, day, sid)))
    return sorted(found)


def list_manifests(output_root: str, score_date: dt.date | None = None, *,
                   problems: list[str] | None = None) -> list[tuple[str, Manifest]]:
    """(snapshot folder, manifest) of every published snapshot, oldest first.
    A folder without a manifest (an unfinished or killed run) is left out; one
    whose manifest cannot be read is left out with a warning (and its reason
    appended to `problems` when given)."""
    found = []
    for _, _, folder in snapshot_folders(output_root, score_date):
        try:
            found.append((folder, read_manifest(folder)))
        except FileNotFoundError:
            continue
        except ManifestError as e:
            log.warning("skipping %s: %s", folder, e)
            if problems is not None:
                problems.append(str(e))
    return sorted(found, key=lambda fm: fm[1].order_key)


def find_published(output_root: str, score_date: dt.date, run_fingerprint: str) -> tuple[str, Manifest] | None:
    """The newest published snapshot of `score_date` with this run fingerprint."""
    for folder, m in reversed(list_manifests(output_root, score_date)):
        if m.run_fingerprint == run_fingerprint:
            return folder, m
    return None


def find_snapshot(output_root: str, snapshot_id: str) -> tuple[str, Manifest] | None:
    for folder, m in list_manifests(output_root):
        if m.snapshot_id == snapshot_id:
            return folder, m
    return None


def previous_snapshot(output_root: str, before: dt.date) -> tuple[str, Manifest] | None:
    """The newest published snapshot with a score date before `before` that a
    rollback did not pull (what gates and the report compare against), or None."""
    pulled = pulls.read_pulls(output_root)
    earlier = [fm for fm in list_manifests(output_root)
               if fm[1].score_date < before and fm[1].snapshot_id not in pulled]
    return earlier[-1] if earlier else None


def pulled_same_run(output_root: str, score_date: dt.date, run_fingerprint: str) -> list[pulls.Pull]:
    """Pulled snapshots of `score_date` with this run fingerprint: by their
    rollback records, and by the manifests of pulled snapshots whose record is
    too damaged to say."""
    pulled = pulls.read_pulls(output_root)
    found = {p.snapshot_id: p for p in pulls.same_content(pulled, score_date, run_fingerprint)}
    unknown = {sid for sid, p in pulled.items() if not p.run_fingerprint}
    if unknown:
        for _, m in list_manifests(output_root, score_date):
            if m.snapshot_id in unknown and m.run_fingerprint == run_fingerprint:
                found[m.snapshot_id] = pulled[m.snapshot_id]
    return sorted(found.values(), key=lambda p: p.snapshot_id)


# ------------------------------------------------------------ publish lock ---
PUBLISH_LOCK = ".publish.lock"
PUBLISH_LOCK_WAIT_S = 600.0


def publish_lock_path(output_root: str) -> str:
    return storage.join(layout.snapshots_root(output_root), PUBLISH_LOCK)


def publish_lock(output_root: str, on_wait=None, holder: str = ""):
    """Cross-process lock of a local output root's publish step, rollback and
    repair (crash-safe: released by the kernel if the holder dies).
    on_wait(holder, timeout_s) is told when another process holds it; `holder`
    says what this one does. On gs://
    the warehouse transaction and LATEST's generation precondition keep each
    step whole instead."""
    if storage.is_gcs(output_root):
        return contextlib.nullcontext()
    return storage.local_lock(publish_lock_path(output_root), timeout_s=PUBLISH_LOCK_WAIT_S, on_wait=on_wait,
                              holder=holder)


# ------------------------------------------------------------------ LATEST ---
def read_latest(output_root: str) -> storage.Pointer:
    return storage.read_pointer(layout.latest_uri(output_root))


def latest_target(output_root: str) -> tuple[dt.date, str] | None:
    """(score date, snapshot id) LATEST points to; None when there is no
    pointer or it does not hold a snapshot path (the caller decides whether
    that is an error)."""
    content = read_latest(output_root).content
    if not content:
        return None
    try:
        return layout.parse_snapshot_rel(content)
    except ValueError:
        return None


def latest_would_move(output_root: str, score_date: dt.date, snapshot_id: str) -> bool:
    """Whether `move_latest` (forward only) would point LATEST at this snapshot
    as things stand: no pointer, a damaged one, or one at this score date or
    an older one."""
    current = read_latest(output_root).content
    if not current or current == layout.snapshot_rel(score_date, snapshot_id):
        return True
    try:
        return layout.parse_snapshot_rel(current)[0] <= score_date
    except ValueError:
        return True


def move_latest(output_root: str, score_date: dt.date, snapshot_id: str, *, allow_older: bool = False,
                attempts: int = 5) -> bool:
    """Point LATEST at the snapshot unless it already points to a newer score date
    (a backfill never moves it back; `allow_older` is for rollback). A
    compare-and-swap: if another writer moved it meanwhile, re-read and decide
    again. Returns whether LATEST now points to this snapshot."""
    target = layout.snapshot_rel(score_date, snapshot_id)
    uri = layout.latest_uri(output_root)
    for _ in range(attempts):
        current = storage.read_pointer(uri)
        if current.content == target:
            return True
        if current.content and not allow_older:
            try:
                current_date, _ = layout.parse_snapshot_rel(current.content)
            except ValueError:
                current_date = None  # a damaged pointer: replace it
            if current_date is not None and current_date > score_date:
                log.info("LATEST stays on %s (newer than %s)", current.content, target)
                return False
        try:
            storage.replace_pointer(uri, target, current)
            return True
        except storage.PointerMoved:
            continue
    raise storage.PointerMoved(f"{uri} kept moving; gave up after {attempts} attempts")
