"""`oasis warehouse rebuild --output OUT [--warehouse URI]`: reload every
published snapshot's tables into the warehouse from the snapshot files (the
work is in `jobs.snapshots.repair.rebuild`; this prints it)."""
from __future__ import annotations

from jobs import logs
from jobs.cli import args as a
from jobs.snapshots import repair
from jobs.warehouse.backends import open_warehouse


def register(sub) -> None:
    p = sub.add_parser("warehouse", help="rebuild the warehouse from the published snapshots",
                       description="Look after the warehouse of an output root.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "rebuild", help="reload every published snapshot's tables from the snapshot files",
        description="Reload, for every score date, its newest sound published snapshot (gates passed, files "
                    "matching the manifest, not pulled by a rollback) from the snapshot files, and make LATEST's "
                    "snapshot current. For a DuckDB file (missing, deleted, or not a database) a fresh file is "
                    "built beside it and swapped in, the old one kept aside; a BigQuery dataset is reloaded date "
                    "by date and pruned of any other snapshot.")
    a.add_output(q)
    a.add_warehouse(q)
    q.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    done = repair.rebuild(args.output, open_warehouse(args.warehouse, args.output), progress=logs.progress)
    lines = [f"reloaded {len(done.loaded)} snapshot(s) into {args.warehouse or 'the default warehouse'}:"]
    lines += [f"    {x}" for x in done.loaded]
    lines += [f"left out {x}" for x in done.skipped]
    if done.set_aside:
        lines.append(f"the previous file was kept as {done.set_aside}")
    lines.append(f"current snapshot: {done.current or '(none)'}")
    print("\n".join(lines))
    return 0
