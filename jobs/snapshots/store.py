"""Snapshots: manifest, content fingerprints and the LATEST pointer.

Order of a publish: data files, then `_MANIFEST.json` (create-only: a
snapshot's manifest is never overwritten), then the warehouse, then LATEST (a
compare-and-swap). A snapshot folder without a manifest is not a snapshot.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipelines import storage
from schemas import OUTPUTS

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
LATEST = "LATEST"


def snapshots_root(output_root: str) -> str:
    return storage.join(output_root, "snapshots")


def latest_uri(output_root: str) -> str:
    return storage.join(snapshots_root(output_root), LATEST)


def relative_snapshot(score_date: dt.date, snapshot_id: str) -> str:
    return f"score_date={score_date.isoformat()}/{snapshot_id}"


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


def read_table_files(files: list[str], name: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of a published table's files, cast to its contract (only
    `columns`, when given)."""
    schema = OUTPUTS[name].arrow()
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables = [pq.read_table(storage.open_input(f), columns=columns).cast(schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def describe_tables(snapshot_dir: str) -> tuple[dict, dict[str, pa.Table]]:
    """Per output table: files (relative path, rows, bytes, sha256), row count
    and content fingerprint; plus the tables themselves (they are small)."""
    out, tables = {}, {}
    for name, contract in OUTPUTS.items():
        folder = storage.join(snapshot_dir, name)
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
            entries.append({
                "path": f"{name}/{f.replace(chr(92), '/').rsplit('/', 1)[-1]}",
                "rows": parts[-1].num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            })
        table = pa.concat_tables(parts)
        out[name] = {"rows": table.num_rows, "files": entries,
                     "content_sha256": content_sha256(table, list(contract.key))}
        tables[name] = table
    return out, tables


def write_manifest(snapshot_dir: str, manifest: dict) -> str:
    uri = storage.join(snapshot_dir, MANIFEST)
    storage.create_only(uri, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    return uri


def read_manifest(snapshot_dir: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(snapshot_dir, MANIFEST)))


def list_manifests(output_root: str, score_date: dt.date | None = None) -> list[tuple[str, dict]]:
    """(snapshot folder, manifest) of every published snapshot, oldest first."""
    root = snapshots_root(output_root)
    dates = [f"score_date={score_date.isoformat()}"] if score_date else [
        d for d in storage.list_dirs(root) if d.startswith("score_date=")]
    found = []
    for d in dates:
        for sid in storage.list_dirs(storage.join(root, d)):
            folder = storage.join(root, d, sid)
            try:
                found.append((folder, read_manifest(folder)))
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # no manifest: an unfinished or killed run, not a snapshot
    return sorted(found, key=lambda fm: (fm[1]["score_date"], fm[1]["created_at"]))


def find_published(output_root: str, score_date: dt.date, run_fingerprint: str) -> dict | None:
    for _, m in reversed(list_manifests(output_root, score_date)):
        if m.get("run_fingerprint") == run_fingerprint:
            return m
    return None


def read_latest(output_root: str) -> storage.Pointer:
    return storage.read_pointer(latest_uri(output_root))


def move_latest(output_root: str, score_date: dt.date, snapshot_id: str, *, allow_older: bool = False,
                attempts: int = 5) -> bool:
    """Point LATEST at the snapshot unless it already points to a newer score date
    (a backfill never moves it back; `allow_older` is for rollback). A
    compare-and-swap: if another writer moved it meanwhile, re-read and decide
    again. Returns whether LATEST now points to this snapshot."""
    target = relative_snapshot(score_date, snapshot_id)
    uri = latest_uri(output_root)
    for _ in range(attempts):
        current = storage.read_pointer(uri)
        if current.content == target:
            return True
        if current.content and not allow_older:
            current_date = current.content.split("/", 1)[0].removeprefix("score_date=")
            if current_date > score_date.isoformat():
                log.info("LATEST stays on %s (newer than %s)", current.content, target)
                return False
        try:
            storage.replace_pointer(uri, target, current)
            return True
        except storage.PointerMoved:
            continue
    raise storage.PointerMoved(f"{uri} kept moving; gave up after {attempts} attempts")


def snapshot_dir_of(output_root: str, manifest: dict) -> str:
    return storage.join(snapshots_root(output_root), f"score_date={manifest['score_date']}",
                        manifest["snapshot_id"])


def previous_snapshot(output_root: str, before: dt.date) -> tuple[str, dict] | None:
    """The newest published snapshot with a score date before `before` (what
    gates and the report compare against), or None."""
    earlier = [fm for fm in list_manifests(output_root) if fm[1]["score_date"] < before.isoformat()]
    return earlier[-1] if earlier else None


def file_problems(folder: str, manifest: dict) -> list[str]:
    """Every table file the manifest lists that is missing or whose size or
    sha256 differs, as "path: what is wrong". Empty when all are intact."""
    problems = []
    for _, table in sorted(manifest.get("tables", {}).items()):
        for f in table.get("files", []):
            try:
                data = storage.read_bytes(storage.join(folder, *f["path"].split("/")))
            except FileNotFoundError:
                problems.append(f"{f['path']}: missing")
                continue
            if len(data) != f["bytes"]:
                problems.append(f"{f['path']}: {len(data)} bytes, manifest says {f['bytes']}")
            elif hashlib.sha256(data).hexdigest() != f["sha256"]:
                problems.append(f"{f['path']}: sha256 differs from the manifest")
    return problems


def read_snapshot_tables(folder: str, manifest: dict) -> dict[str, pa.Table]:
    """The output tables of a published snapshot, from the files its manifest lists."""
    return {name: read_table_files([storage.join(folder, *f["path"].split("/")) for f in t["files"]], name)
            for name, t in manifest["tables"].items() if name in OUTPUTS}
