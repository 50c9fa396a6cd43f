"""`oasis snapshots list|show|rollback|repair|gc --output OUT`: look after the
published snapshots (the work is in `jobs.snapshots.admin` and
`jobs.snapshots.repair`; this prints it)."""
from __future__ import annotations

from jobs.cli import args as a
from jobs.snapshots import admin, pulls, repair
from jobs.warehouse.backends import open_warehouse
from pipelines import storage
from pipelines.config import Config

SCORE_DATE_HINT = "score dates are the day after the logs date a run was given"


def register(sub) -> None:
    p = sub.add_parser("snapshots", help="list, show, roll back and garbage-collect published snapshots",
                       description="Look after the published snapshots of an output root. Snapshots are listed "
                                   f"by score date ({SCORE_DATE_HINT}).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q):
        a.add_output(q)
        q.set_defaults(func=main, beam=False)
        return q

    common(actions.add_parser("list", help="every published snapshot (* marks LATEST), then the quarantined ones"))
    q = common(actions.add_parser("show", help="summarise one snapshot's manifest (a quarantined one's too)"))
    q.add_argument("snapshot_id")
    q = common(actions.add_parser(
        "rollback", help="point LATEST and the warehouse at another verified snapshot; newer ones are pulled",
        description="Point LATEST at SNAPSHOT_ID after verifying its files, and withdraw (pull) every newer "
                    "snapshot: a durable record that reruns, backfill and Luigi respect (a run with the same "
                    "inputs, config and code publishes nothing unless --republish). The warehouse follows: "
                    "the target becomes its current snapshot and pulled snapshots' rows leave its tables."))
    q.add_argument("--to", required=True, dest="to", metavar="SNAPSHOT_ID")
    a.add_warehouse(q)
    q = common(actions.add_parser(
        "repair", help="bring LATEST, the rollback records and the warehouse back into agreement",
        description="After a failure between the steps of a publish or a rollback (a kill, a full disk, an "
                    "unreachable warehouse): finish what was started, remove stray temporary files, and say "
                    "what was done."))
    a.add_warehouse(q)
    q = common(actions.add_parser(
        "gc", help="delete old snapshots, orphaned folders, aggregate builds and old quarantined snapshots",
        description="Keeps the N newest valid snapshots, the one LATEST points to and any newer one; deletes "
                    "the rest, and folders without a manifest / unreferenced aggregate builds older than the "
                    "grace period, and quarantined would-be snapshots older than --quarantine-days."))
    q.add_argument("--keep", type=a.non_negative_int, required=True, help="how many newest valid snapshots to keep")
    q.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    q.add_argument("--grace-minutes", type=a.non_negative_float, default=admin.DEFAULT_GRACE_MINUTES,
                   help="orphaned folders younger than this are kept: a job may still be writing them "
                        f"(default {admin.DEFAULT_GRACE_MINUTES:g})")
    q.add_argument("--quarantine-days", type=a.non_negative_float, default=admin.DEFAULT_QUARANTINE_DAYS,
                   help="quarantined would-be snapshots (OUT/quarantine/) are deleted this many days after they "
                        f"were quarantined (default {admin.DEFAULT_QUARANTINE_DAYS:g})")
    q.add_argument("--dead-letter-days", type=a.non_negative_float, default=admin.DEFAULT_DEAD_LETTER_DAYS,
                   help="dead letters (raw rows, user ids included) of runs that published nothing are deleted "
                        f"once older than this (default {admin.DEFAULT_DEAD_LETTER_DAYS:g})")


def main(args, _beam_args) -> int:
    if args.action == "list":
        problems: list[str] = []
        text = render_list(admin.list_snapshots(args.output), args.output)
        print(text + render_quarantined(admin.quarantined(args.output, problems), problems))
    elif args.action == "show":
        try:
            print(render_show(admin.show(args.output, args.snapshot_id)))
        except admin.SnapshotError:
            q = admin.show_quarantined(args.output, args.snapshot_id)
            if q is None:
                raise
            print(render_show_quarantined(q))
    elif args.action == "rollback":
        print(render_rollback(admin.rollback(args.output, args.to, open_warehouse(args.warehouse, args.output))))
    elif args.action == "repair":
        done = repair.repair(args.output, open_warehouse(args.warehouse, args.output))
        print(render_repair(done))
        if done.warnings:
            raise repair.RepairError("repair left something to do (see above)")
    else:
        collected = admin.gc(args.output, args.keep, dry_run=args.dry_run, grace_minutes=args.grace_minutes,
                             dead_letter_days=args.dead_letter_days)
        quarantine = admin.gc_quarantine(args.output, args.quarantine_days, dry_run=args.dry_run)
        print(render_gc(collected, quarantine))
    return 0


def render_list(listing: admin.Listing, output_root: str) -> str:
    lines = []
    latest = listing.latest
    if not listing.snapshots:
        lines.append(f"no published snapshots under {output_root}")
    else:
        header = ("", "score_date", "logs_date", "snapshot_id", "created_at (UTC)", "promotion_scores",
                  "campaign_delivery", "capacity", "validation")
        rows = [header]
        for _, m in listing.snapshots:
            status = "passed" if m.gates_passed and not m.skipped_gates else m.validation_text
            if m.snapshot_id in listing.pulled:
                status = f"PULLED ({pulls.describe(listing.pulled[m.snapshot_id]).split(' was pulled', 1)[1].strip()})"
            rows.append(("*" if admin.relative(m) == latest else "", m.score_date.isoformat(), m.as_of.isoformat(),
                         m.snapshot_id, m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                         *(str(m.tables[t].rows) if t in m.tables else "-" for t in header[5:8]), status))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        right = {5, 6, 7}
        for r in rows:
            lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    for problem in listing.unreadable:
        lines.append(f"warning: not listed, its manifest cannot be read: {problem}")
    if listing.latest_error:
        lines.append(f"warning: {listing.latest_error}")
    if latest and not listing.latest_listed:
        lines.append(f"warning: LATEST points to {latest}, which has no readable manifest")
    elif listing.snapshots:
        lines.append(f"* = LATEST ({latest})" if latest else "no LATEST pointer")
    return "\n".join(lines)


def render_quarantined(found: list, problems: list[str]) -> str:
    """The quarantined would-be snapshots, after the published ones: never
    served, kept to be examined (`snapshots show ID`, `explain --snapshot ID`)."""
    if not found and not problems:
        return ""
    lines = ["", "quarantined (failed a gate, NOT published; `oasis snapshots show ID` for details, "
                 "`snapshots gc` removes them after --quarantine-days):"]
    rows = [("score_date", "logs_date", "snapshot_id", "quarantined_at (UTC)", "failed gates")]
    for q in found:
        m = q.manifest
        rows.append((m.score_date.isoformat(), m.as_of.isoformat(), m.snapshot_id,
                     q.quarantined_at.strftime("%Y-%m-%d %H:%M:%S") if q.quarantined_at else "?",
                     ", ".join(q.failed_gates)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows] if found else []
    lines += [f"warning: quarantine record cannot be read: {p}" for p in problems]
    return "\n".join(lines)


def render_show_quarantined(shown: admin.ShownQuarantined) -> str:
    q = shown.quarantined
    at = q.quarantined_at.isoformat() if q.quarantined_at else "?"
    head = [f"QUARANTINED  failed {', '.join(q.failed_gates)}: NOT published, never served (quarantined at {at})"]
    body = render_show(admin.Shown(q.folder, q.manifest, False, shown.problems))
    return "\n".join(head + [body])


def render_show(shown: admin.Shown) -> str:
    m, folder = shown.manifest, shown.folder
    lines = [f"snapshot     {m.snapshot_id}{'   (LATEST)' if shown.is_latest else ''}"
             + (f"   PULLED: {pulls.describe(shown.pulled)}" if shown.pulled else ""),
             f"score date   {m.score_date}   (logs date {m.as_of}: logs up to that day)",
             f"created at   {m.created_at.isoformat()}",
             f"code         {m.code_version or '?'}",
             f"fingerprint  {m.run_fingerprint}",
             f"options      {', '.join(f'{k}={v}' for k, v in sorted(m.options.items())) or '(not recorded)'}",
             f"folder       {folder}"]
    defaults = Config().to_dict()
    diffs = [(k, v, defaults.get(k, "(not a current key)")) for k, v in sorted(m.config.items())
             if defaults.get(k) != v]
    diffs += [(k, "(not recorded)", v) for k, v in sorted(defaults.items()) if k not in m.config]
    lines.append("config       " + ("defaults" if not diffs else f"{len(diffs)} value(s) differ from the defaults:"))
    lines += [f"    {k} = {v}   (default {d})" for k, v, d in diffs]
    inputs = m.inputs
    lines += ["inputs",
              f"    enrollments files   {len(inputs.enrollments)}",
              f"    engagement files    {len(inputs.engagement)}   "
              f"(aggregates built for {len(inputs.built_days)} day(s))",
              f"    stored aggregates   {len(inputs.aggregates)} file(s) for {len(inputs.stored_days)} day(s)"]
    missing = inputs.missing_window_days
    if missing:
        lines.append(f"    window days without events  {len(missing)} ({missing[0]} .. {missing[-1]})")
    lines.append("tables")
    for name, t in m.tables.items():
        size = sum(f.bytes for f in t.files)
        lines.append(f"    {name:<18} {t.rows:>10,} rows  {len(t.files):>3} file(s)  {size:>12,} bytes")
    lines.append(f"validation   {m.validation_text}")
    for c in m.validation:
        mark = "ok  " if c.passed else "skip" if c.skipped else "FAIL"
        lines.append(f"    {mark} {c.name}: {c.detail}")
    lines.append(f"dead letters {m.dead_letter_count:,} row(s)  {m.dead_letters}")
    report = m.report or {}
    if isinstance(report.get("path"), str):
        lines.append(f"report       {storage.join(folder, *report['path'].split('/'))}")
    elif report.get("error"):
        lines.append(f"report       not written: {report['error']}")
    for g in (g for g in m.validation if g.basis):
        lines.append(f"    {g.name} compared: " + ", ".join(f"{k} {v}" for k, v in g.basis.items()))
    if m.seconds:
        lines.append("seconds      " + ", ".join(f"{k} {v:g}" for k, v in m.seconds.items()))
    if shown.problems:
        lines.append("DAMAGED      not fit to serve:")
        lines += [f"    {p}" for p in shown.problems]
    return "\n".join(lines)


def render_rollback(r: admin.RolledBack) -> str:
    lines = [f"LATEST: {r.previous or '(none)'} -> {r.target}" + (f" ({r.direction})" if r.direction else "")
             if r.changed else f"LATEST already points to {r.target}",
             f"verified {r.files_verified} file(s) against the manifest"]
    if r.pulled:
        lines.append(f"pulled {len(r.pulled)} newer snapshot(s): {', '.join(r.pulled)} (a rerun with the same "
                     "inputs, config and code publishes nothing unless --republish)")
    if r.lifted:
        lines.append(f"served again (its rollback record lifted): {', '.join(r.lifted)}")
    lines += r.warehouse or ["warehouse: already current"]
    lines.append("note: the next daily run that publishes a newer score date moves LATEST (and the warehouse's "
                 "*_latest views) forward again.")
    return "\n".join(lines)


def render_repair(done: repair.Repaired) -> str:
    lines = list(done.actions) or ["nothing to repair: LATEST, the rollback records and the warehouse agree"]
    lines += [f"warning: {w}" for w in done.warnings]
    lines.append(f"LATEST: {done.current or '(none)'}")
    return "\n".join(lines)


def render_gc(c: admin.Collected, quarantine: list[str] = ()) -> str:
    verb = "would delete" if c.dry_run else "deleted"
    lines = list(c.actions) + list(quarantine)
    lines.append(f"gc: {verb} {len(c.snapshots)} snapshot(s), {len(c.orphans)} orphaned snapshot folder(s), "
                 f"{len(c.builds)} orphaned aggregate build(s), {len(c.dead_letters)} unpublished run(s)' dead "
                 f"letters; kept {len(c.kept)} snapshot(s)"
                 + (f" and {len(c.fresh)} folder(s) younger than {c.grace_minutes:g} min" if c.fresh else "")
                 + f"; {verb} {len(quarantine)} quarantined would-be snapshot(s)")
    return "\n".join(lines)
