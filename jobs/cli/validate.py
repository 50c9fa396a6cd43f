"""`oasis validate`: check one day's input partitions against the contract, no
run (the checks are in `jobs.input_check`; this prints the report)."""
from __future__ import annotations

import sys

from jobs import layout
from jobs.cli import args as a
from jobs.input_check import Report, validate
from jobs.run.options import DEFAULT_BATCH_ROWS
from pipelines.config import Config
from pipelines.errors import OasisError


def register(sub) -> None:
    p = sub.add_parser("validate", help="check one day's input partitions against the contract (no run)",
                       description="Check IN/enrollments/dt=D, IN/engagement/dt=D and IN/exposures/dt=D "
                                   "(optional: serving's exposure log): every file's schema, "
                                   "then every row against the input contract. Prints the breaks per file and "
                                   "per reason. Exit 0 when everything is valid, 1 otherwise.")
    p.add_argument("--date", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="partition day (YYYY-MM-DD), the logs date a run would be given")
    a.add_input(p)
    a.add_config(p)
    p.add_argument("--batch-rows", type=a.positive_int, default=DEFAULT_BATCH_ROWS,
                   help=f"rows per Arrow record batch (default {DEFAULT_BATCH_ROWS})")
    p.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    cfg = Config.load(args.config)
    report = validate(args.input, args.date, cfg, batch_rows=args.batch_rows,
                      progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(render(report))
    if not report.valid:
        raise OasisError(f"the inputs of {layout.day_dirname(args.date)} under {args.input} are not valid "
                         "(the report above says where)")
    return 0


def render(report: Report) -> str:
    lines = [f"OASIS input check for {layout.day_dirname(report.day)} under {report.input_root}"]
    for p in report.partitions:
        lines.append("")
        if not p.files:
            lines.append(f"{p.source}: no partition (optional: the day has no exposure log)" if p.optional
                         else f"{p.source}: MISSING partition: no *.parquet under {p.folder}")
            continue
        share = p.bad / p.rows if p.rows else 0.0
        lines.append(f"{p.source}: {len(p.files)} file(s), {p.rows:,} rows checked, {p.bad:,} break the "
                     f"contract ({share:.3%}), {len(p.unreadable)} unreadable")
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
            verdict = ("above" if share > report.max_bad_row_share else "within")
            lines.append(f"  a run would dead-letter these rows; {share:.3%} is {verdict} the "
                         f"max_bad_row_share ceiling of {report.max_bad_row_share:.2%}"
                         + (" (the run would fail)" if verdict == "above" else ""))
    lines.append("")
    problems = []
    missing = [p.source for p in report.partitions if p.missing]
    unreadable = sum(len(p.unreadable) for p in report.partitions)
    bad = sum(p.bad for p in report.partitions)
    if missing:
        problems.append(f"missing partition(s): {', '.join(missing)}")
    if unreadable:
        problems.append(f"{unreadable} unreadable file(s) or wrong schema")
    if bad:
        problems.append(f"{bad:,} rows break the contract")
    lines.append("VALID: every file reads and every row keeps the contract" if report.valid
                 else "INVALID: " + "; ".join(problems))
    return "\n".join(lines)


