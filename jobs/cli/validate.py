"""`oasis validate`: check one day's input partitions against the contract, no
run (the checks are in `jobs.input_check`; this prints the report)."""
from __future__ import annotations

from jobs import layout, logs
from jobs.cli import args as a
from jobs.input_check import Report, validate
from jobs.run import plan
from jobs.run.options import BATCH_ROWS_RANGE, DEFAULT_BATCH_ROWS
from pipelines.config import Config
from pipelines.errors import OasisError


def register(sub) -> None:
    p = sub.add_parser("validate", help="check one day's input partitions against the contract (no run)",
                       description="Check IN/enrollments/dt=D, IN/engagement/dt=D and IN/exposures/dt=D "
                                   "(optional: serving's exposure log; D is the LOGS date a run would be given): "
                                   "every file's schema, then every row against the input contract, and say what a "
                                   "run would do. Prints the breaks per file and per reason. Exit 0 when a run "
                                   "would proceed (every row valid, or the breaking rows would be dead-lettered "
                                   "within the max_bad_row_share ceiling); exit 1 when a run would fail (a "
                                   "partition missing or without rows, a file unreadable or with the wrong schema, "
                                   "breaking rows above the ceiling).")
    p.add_argument("--date", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="partition day (YYYY-MM-DD), the logs date a run would be given")
    a.add_input(p)
    a.add_config(p)
    p.add_argument("--batch-rows", type=a.int_in(*BATCH_ROWS_RANGE), default=DEFAULT_BATCH_ROWS,
                   help=f"rows per Arrow record batch (default {DEFAULT_BATCH_ROWS})")
    p.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    cfg = Config.load(args.config)
    report = validate(args.input, args.date, cfg, batch_rows=args.batch_rows, progress=logs.progress)
    print(render(report))
    if report.verdict == "fail":
        hint = plan.newest_partition_hint(args.input, args.date)
        raise OasisError(f"a run of logs date {args.date} on {args.input} would fail: "
                         + "; ".join(report.failures) + (f" ({hint})" if hint else ""))
    return 0


def render(report: Report) -> str:
    lines = [f"OASIS input check for logs date {report.day} ({layout.day_dirname(report.day)}) under "
             f"{report.input_root}"]
    for p in report.partitions:
        lines.append("")
        if not p.files:
            lines.append(f"{p.source}: no partition (optional: the day has no exposure log)" if p.optional
                         else f"{p.source}: MISSING partition: no *.parquet under {p.folder}")
            continue
        share = p.bad / p.rows if p.rows else 0.0
        lines.append(f"{p.source}: {len(p.files)} file(s), {p.rows:,} rows checked, {p.bad:,} break the "
                     f"contract ({share:.3%}), {len(p.unreadable)} unreadable")
        if not p.rows and not p.unreadable:
            lines.append("  NO ROWS: a day without rows is a missing day; a run of this date would fail")
        for f in p.files:
            if f.error:
                lines.append(f"  {f.uri}: UNREADABLE: {f.error.removeprefix(f.uri + ': ')}")
                continue
            lines.append(f"  {f.uri}: {f.rows:,} rows, {f.bad:,} breaks")
            for reason, n in sorted(f.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"      {reason:<32} {n:>10,}")
        if p.bad and len(p.files) > 1:
            lines.append("  all files, by reason:")
            for reason, n in sorted(p.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"      {reason:<32} {n:>10,}")
        if p.bad:
            over = report.over_ceiling(p)
            lines.append(f"  a run would dead-letter these rows; {share:.3%} is {'above' if over else 'within'} "
                         f"the max_bad_row_share ceiling of {report.max_bad_row_share:.2%}"
                         + (" (the run would fail)" if over else ""))
    lines.append("")
    if report.verdict == "valid":
        lines.append("VALID: every file reads and every row keeps the contract; a run would proceed")
    elif report.verdict == "proceed":
        lines.append(f"A RUN WOULD PROCEED: {report.dead_lettered:,} row(s) break the contract and would be "
                     f"dead-lettered (within the max_bad_row_share ceiling of {report.max_bad_row_share:.2%})")
    else:
        lines.append("A RUN WOULD FAIL: " + "; ".join(report.failures))
    return "\n".join(lines)
