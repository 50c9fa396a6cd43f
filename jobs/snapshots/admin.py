"""`oasis snapshots list|show|rollback|gc --output OUT`: look after the
published snapshots of an output root (a local folder or gs://).

* `list`: every published snapshot (a folder with a `_MANIFEST.json`), oldest
  first, with its rows per table and validation; `*` marks the one LATEST
  points to.
* `show ID`: one manifest, summarised.
* `rollback --to ID`: point LATEST at another snapshot, after checking that
  its validation passed and that every file listed in its manifest is there
  with its size and sha256. The pointer moves by compare-and-swap against the
  value read before the check, so a concurrent publish is never overwritten.
* `gc --keep N [--dry-run] [--grace-minutes M]`: keeps the N newest valid
  snapshots (by score date, then creation time), the one LATEST points to and
  every snapshot newer than it (a publish may be between its manifest and the
  pointer), and deletes the other snapshots with their dead letters. It also
  deletes, once older than the grace period (default 60 min, so a running job
  is left alone), snapshot folders without a manifest (left by killed runs) and
  aggregate builds (`aggregates/dt=*/build=*`) that the day's `_SUCCESS` marker
  does not name. Without a LATEST pointer it deletes no snapshot. A folder's
  age is counted from the newest of its files' modification times and the time
  in its run id.

Every file operation goes through `pipelines.storage`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

import pyarrow.fs as pafs

from jobs.snapshots import store as publish
from jobs.run.plan import stored_build
from pipelines import storage

DEFAULT_GRACE_MINUTES = 60.0
_ID_TIME = re.compile(r"(\d{8}T\d{6}Z)")


class SnapshotError(RuntimeError):
    """A request the snapshots command refuses; the message says why."""


# ------------------------------------------------------------------ model ---
def key(manifest: dict) -> tuple[str, str]:
    """Order of snapshots: score date, then creation time."""
    return manifest["score_date"], manifest["created_at"]


def relative(manifest: dict) -> str:
    return publish.relative_snapshot(dt.date.fromisoformat(manifest["score_date"]), manifest["snapshot_id"])


def failed_checks(manifest: dict) -> list[str]:
    """Validation checks that failed and were not skipped by hand (`--skip-gate`)."""
    return [str(c.get("name")) for c in manifest.get("validation") or []
            if not c.get("passed") and not c.get("skipped")]


def validation_passed(manifest: dict) -> bool:
    return bool(manifest.get("validation")) and not failed_checks(manifest)


def validation_text(manifest: dict) -> str:
    if not manifest.get("validation"):
        return "none recorded"
    if failed_checks(manifest):
        return "FAILED " + ",".join(failed_checks(manifest))
    overridden = [str(c.get("name")) for c in manifest["validation"] if not c.get("passed") and c.get("skipped")]
    return "passed" + (f" (skipped by hand: {','.join(overridden)})" if overridden else "")


def find(output_root: str, snapshot_id: str) -> tuple[str, dict]:
    for folder, m in publish.list_manifests(output_root):
        if m["snapshot_id"] == snapshot_id:
            return folder, m
    raise SnapshotError(f"no published snapshot {snapshot_id!r} under {output_root} "
                        "(see `oasis snapshots list`)")


def verify(folder: str, manifest: dict) -> list[str]:
    """Problems that make the snapshot unfit to serve: failed validation, a
    listed file missing or with another size or sha256. Empty when sound."""
    problems = []
    if not validation_passed(manifest):
        problems.append(f"validation: {validation_text(manifest)}")
    problems += publish.file_problems(folder, manifest)
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
    m = _ID_TIME.search(uri.rstrip("/").rsplit("/", 1)[-1])
    if m:
        times.append(dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc))
    if not times:
        return 0.0
    newest = max(t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for t in times)
    return (now - newest).total_seconds()


# --------------------------------------------------------------- commands ---
def list_snapshots(output_root: str, out=None) -> int:
    out = out or sys.stdout
    found = publish.list_manifests(output_root)
    latest = publish.read_latest(output_root).content
    if not found:
        print(f"no published snapshots under {output_root}", file=out)
        if latest:
            print(f"warning: LATEST points to {latest}, which has no manifest", file=out)
        return 0
    header = ("", "score_date", "snapshot_id", "created_at (UTC)", "promotion_scores", "campaign_delivery",
              "capacity", "validation")
    rows = [header]
    for _, m in found:
        tables = m.get("tables", {})
        created = m["created_at"].replace("T", " ")[:19]
        rows.append(("*" if relative(m) == latest else "", m["score_date"], m["snapshot_id"], created,
                     *(str(tables.get(t, {}).get("rows", "-")) for t in header[4:7]),
                     validation_text(m)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {4, 5, 6}
    for r in rows:
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip(),
              file=out)
    if latest and not any(relative(m) == latest for _, m in found):
        print(f"warning: LATEST points to {latest}, which has no manifest", file=out)
    else:
        print(f"* = LATEST ({latest})" if latest else "no LATEST pointer", file=out)
    return 0


def show(output_root: str, snapshot_id: str, out=None) -> int:
    out = out or sys.stdout
    from pipelines.config import Config

    folder, m = find(output_root, snapshot_id)
    latest = publish.read_latest(output_root).content
    p = lambda s="": print(s, file=out)  # noqa: E731
    p(f"snapshot     {m['snapshot_id']}{'   (LATEST)' if relative(m) == latest else ''}")
    p(f"score date   {m['score_date']}   (logs up to {m.get('as_of', '?')})")
    p(f"created at   {m['created_at']}")
    p(f"code         {m.get('code_version', '?')}")
    p(f"fingerprint  {m.get('run_fingerprint', '?')}")
    p(f"folder       {folder}")

    defaults = Config().to_dict()
    cfg = m.get("config", {})
    diffs = [(k, v, defaults.get(k, "(not a current key)")) for k, v in sorted(cfg.items()) if defaults.get(k) != v]
    diffs += [(k, "(not recorded)", v) for k, v in sorted(defaults.items()) if k not in cfg]
    p("config       " + ("defaults" if not diffs else f"{len(diffs)} value(s) differ from the defaults:"))
    for k, v, d in diffs:
        p(f"    {k} = {v}   (default {d})")

    inputs = m.get("inputs", {})
    p("inputs")
    p(f"    enrollments files   {len(inputs.get('enrollments', {}))}")
    p(f"    engagement files    {len(inputs.get('engagement', {}))}   "
      f"(aggregates built for {len(inputs.get('built_days', []))} day(s))")
    p(f"    stored aggregates   {len(inputs.get('aggregates', {}))} file(s) for "
      f"{len(inputs.get('stored_days', []))} day(s)")
    missing = inputs.get("missing_window_days", [])
    if missing:
        p(f"    window days without events  {len(missing)} ({missing[0]} .. {missing[-1]})")

    p("tables")
    for name, t in m.get("tables", {}).items():
        files = t.get("files", [])
        size = sum(f.get("bytes", 0) for f in files)
        p(f"    {name:<18} {t.get('rows', 0):>10,} rows  {len(files):>3} file(s)  {size:>12,} bytes")
    p("validation   " + ("all passed" if validation_text(m) == "passed" else validation_text(m)))
    for c in m.get("validation", []):
        mark = "ok  " if c.get("passed") else "skip" if c.get("skipped") else "FAIL"
        p(f"    {mark} {c.get('name')}: {c.get('detail', '')}")
    p(f"dead letters {m.get('dead_letter_count', 0):,} row(s)  {m.get('dead_letters', '')}")
    report = m.get("report")
    if isinstance(report, dict) and report.get("path"):
        p(f"report       {storage.join(folder, *report['path'].split('/'))}")
    elif isinstance(report, dict) and report.get("error"):
        p(f"report       not written: {report['error']}")
    return 0


def rollback(output_root: str, snapshot_id: str, out=None) -> int:
    out = out or sys.stdout
    uri = publish.latest_uri(output_root)
    current = storage.read_pointer(uri)  # the value the swap below must still find
    folder, m = find(output_root, snapshot_id)
    target = relative(m)
    problems = verify(folder, m)
    if problems:
        raise SnapshotError(f"refusing to point LATEST at {target}: it is damaged or invalid:\n  "
                            + "\n  ".join(problems))
    if current.content == target:
        print(f"LATEST already points to {target}; nothing to do", file=out)
        return 0
    try:
        storage.replace_pointer(uri, target, current)
    except storage.PointerMoved:
        now = storage.read_pointer(uri).content
        raise SnapshotError(f"LATEST moved while the snapshot was being checked (now {now}); "
                            "nothing changed, run the rollback again") from None
    direction = ""
    if current.content:
        old_date = current.content.split("/", 1)[0].removeprefix("score_date=")
        if old_date > m["score_date"]:
            direction = " (back to an earlier score date)"
        elif old_date < m["score_date"]:
            direction = " (forward to a newer score date)"
    print(f"LATEST: {current.content or '(none)'} -> {target}{direction}", file=out)
    print(f"verified {sum(len(t.get('files', [])) for t in m['tables'].values())} file(s) against the manifest",
          file=out)
    print("note: the next daily run that publishes a newer score date moves LATEST forward again; "
          "the warehouse *_latest views follow the newest registered snapshot, not LATEST.", file=out)
    return 0


def gc(output_root: str, keep: int, *, dry_run: bool = False, grace_minutes: float = DEFAULT_GRACE_MINUTES,
       now: dt.datetime | None = None, out=None) -> dict:
    """Delete what the policy in the module docstring allows; returns what was
    (or, with dry_run, would be) deleted and kept."""
    out = out or sys.stdout
    now = now or dt.datetime.now(dt.timezone.utc)
    grace_s = grace_minutes * 60.0
    verb = "would delete" if dry_run else "deleted"
    report = {"snapshots": [], "orphans": [], "builds": [], "kept": [], "fresh": []}

    def delete(uri: str, what: str, kind: str, first_file: str | None = None) -> None:
        if not dry_run:
            if first_file:  # the manifest first: a half-deleted folder is an orphan, never a damaged snapshot
                storage.delete_file(first_file)
            storage.delete_tree(uri)
        report[kind].append(uri)
        print(f"{verb} {what}: {uri}", file=out)

    # --- published snapshots
    found = publish.list_manifests(output_root)
    latest = publish.read_latest(output_root).content
    by_rel = {relative(m): (f, m) for f, m in found}
    if latest not in by_rel:
        print("no LATEST pointer to a published snapshot: keeping every snapshot" if not latest else
              f"LATEST points to {latest}, which has no manifest: keeping every snapshot", file=out)
        protected = {relative(m): "no LATEST" for _, m in found}
    else:
        latest_key = key(by_rel[latest][1])
        newest_valid = sorted((m for _, m in found if validation_passed(m)), key=key)[-keep:] if keep > 0 else []
        protected = {relative(m): "newest valid" for m in newest_valid}
        for _, m in found:
            if key(m) > latest_key:
                protected[relative(m)] = "newer than LATEST"
        protected[latest] = "LATEST"
    for folder, m in found:
        rel = relative(m)
        if rel in protected:
            report["kept"].append(folder)
            continue
        delete(folder, f"snapshot {rel}", "snapshots", first_file=storage.join(folder, publish.MANIFEST))
        dead = storage.join(output_root, "dead_letters", f"run={m['snapshot_id']}")
        if storage.exists(dead):
            if not dry_run:
                storage.delete_tree(dead)
            print(f"{verb} its dead letters: {dead}", file=out)

    # --- snapshot folders without a manifest
    root = publish.snapshots_root(output_root)
    published = {f.rstrip("/") for f, _ in found}
    for date_dir in storage.list_dirs(root):
        if not date_dir.startswith("score_date="):
            continue
        for sid in storage.list_dirs(storage.join(root, date_dir)):
            folder = storage.join(root, date_dir, sid)
            if folder.rstrip("/") in published or f"{date_dir}/{sid}" == latest:
                continue
            if storage.exists(storage.join(folder, publish.MANIFEST)):
                print(f"left alone (its manifest cannot be read): {folder}", file=out)
                continue
            _orphan(folder, f"orphaned snapshot folder {date_dir}/{sid}", "orphans", now, grace_s, delete, report, out)
        here = storage.join(root, date_dir)
        if not dry_run and not storage.list_files(here) and not storage.list_dirs(here) \
                and (age_seconds(here, now) or 0.0) >= grace_s:
            storage.delete_tree(here)  # an empty date folder (local only), once nothing wrote to it for a while

    # --- aggregate builds the day's marker does not name
    agg_root = storage.join(output_root, "aggregates")
    for day_dir in storage.list_dirs(agg_root):
        if not day_dir.startswith("dt="):
            continue
        try:
            day = dt.date.fromisoformat(day_dir[3:])
        except ValueError:
            continue
        named = stored_build(output_root, day)
        builds = [b for b in storage.list_dirs(storage.join(agg_root, day_dir)) if b.startswith("build=")]
        if named and named not in builds:
            print(f"warning: aggregates/{day_dir}/_SUCCESS names {named}, which does not exist", file=out)
        for b in builds:
            if b != named:
                _orphan(storage.join(agg_root, day_dir, b), f"orphaned aggregate build {day_dir}/{b}", "builds",
                        now, grace_s, delete, report, out)

    print(f"gc: {verb} {len(report['snapshots'])} snapshot(s), {len(report['orphans'])} orphaned snapshot "
          f"folder(s), {len(report['builds'])} orphaned aggregate build(s); kept {len(report['kept'])} "
          f"snapshot(s)" + (f" and {len(report['fresh'])} folder(s) younger than {grace_minutes:g} min"
                            if report["fresh"] else ""), file=out)
    return report


def _orphan(uri, what, kind, now, grace_s, delete, report, out) -> None:
    age = age_seconds(uri, now)
    if age is None:
        return
    if age < grace_s:
        report["fresh"].append(uri)
        print(f"kept {what} ({age / 60:.0f} min old, inside the grace period: a job may still be writing it)",
              file=out)
        return
    delete(uri, what, kind)


# -------------------------------------------------------------------- CLI ---
def register(sub) -> None:
    p = sub.add_parser("snapshots", help="list, show, roll back and garbage-collect published snapshots",
                       description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q):
        q.add_argument("--output", required=True, help="output root: local folder or gs://bucket/prefix")
        q.set_defaults(func=_dispatch, beam=False)
        return q

    common(actions.add_parser("list", help="every published snapshot; * marks LATEST"))
    q = common(actions.add_parser("show", help="summarise one snapshot's manifest"))
    q.add_argument("snapshot_id")
    q = common(actions.add_parser("rollback", help="point LATEST at another verified snapshot"))
    q.add_argument("--to", required=True, dest="to", metavar="SNAPSHOT_ID")
    q = common(actions.add_parser(
        "gc", help="delete old snapshots, orphaned folders and aggregate builds",
        description="Keeps the N newest valid snapshots, the one LATEST points to and any newer one; deletes "
                    "the rest, and folders without a manifest / unreferenced aggregate builds older than the "
                    "grace period."))
    q.add_argument("--keep", type=_non_negative_int, required=True, help="how many newest valid snapshots to keep")
    q.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    q.add_argument("--grace-minutes", type=float, default=DEFAULT_GRACE_MINUTES,
                   help="orphaned folders younger than this are kept: a job may still be writing them "
                        f"(default {DEFAULT_GRACE_MINUTES:g})")


def _non_negative_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {s!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def _dispatch(args, _) -> int:
    try:
        if args.action == "list":
            return list_snapshots(args.output)
        if args.action == "show":
            return show(args.output, args.snapshot_id)
        if args.action == "rollback":
            return rollback(args.output, args.to)
        if args.grace_minutes < 0:
            raise SnapshotError("--grace-minutes must be >= 0")
        gc(args.output, args.keep, dry_run=args.dry_run, grace_minutes=args.grace_minutes)
        return 0
    except SnapshotError as e:
        print(f"oasis snapshots {args.action}: error: {e}", file=sys.stderr)
        return 1
