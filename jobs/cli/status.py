"""`oasis status --output OUT [--max-age-hours N]`: freshness and the last runs,
for an on-call or a cron check. Prints LATEST's score date and age, the last
failure and a table of the last runs (from `OUT/runs/`); exits 1 with a
one-line reason when LATEST is older than the freshness objective, nothing is
published, or the latest run failed (the work is in `jobs.observe.status`)."""
from __future__ import annotations

from jobs.cli import args as a
from jobs.observe import status
from jobs.observe.status import first_line
from pipelines.errors import OasisError

REASON_WIDTH = 80


class NotHealthy(OasisError):
    """Late, nothing published, or the last run failed."""


def register(sub) -> None:
    p = sub.add_parser(
        "status", help="freshness and the last runs; exit 1 when late or the last run failed",
        description="Show LATEST's score date and age, the last failure and the last runs (from the run records "
                    "under OUT/runs/). Exit 0 when LATEST's score date began at most --max-age-hours ago and "
                    "the latest run succeeded; otherwise exit 1 with the reason on one line. Meant for an "
                    "on-call or a cron check.")
    a.add_output(p)
    p.add_argument("--max-age-hours", type=a.non_negative_float, default=status.DEFAULT_MAX_AGE_HOURS,
                   help="freshness objective: hours since the start (00:00 UTC) of LATEST's score date "
                        f"(default {status.DEFAULT_MAX_AGE_HOURS:g}: the next score date is due by 06:00 UTC)")
    p.add_argument("--runs", type=a.positive_int, default=10, help="how many of the last runs to list (default 10)")
    p.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    found = status.check(args.output, args.max_age_hours, args.runs)
    print(render(found), flush=True)
    if not found.ok:
        raise NotHealthy("; ".join(found.problems))
    return 0


def render(s: status.Status) -> str:
    lines = []
    if s.latest:
        lines.append(f"LATEST:       score date {s.latest[0]}  snapshot {s.latest[1]}  "
                     f"age {s.age_hours:.1f} h (objective {s.max_age_hours:g} h)")
    else:
        lines.append("LATEST:       none (nothing published)")
    if s.last_failure:
        f = s.last_failure
        lines.append(f"last failure: {f.run_id} ({f.command}, logs date {f.logs_date or '-'}) {f.status}: "
                     f"{first_line(f.reason) or 'no reason recorded'}")
    else:
        lines.append("last failure: none recorded")
    lines.append(f"health:       {'OK' if s.ok else 'NOT OK'}")
    lines.append("")
    if not s.runs:
        lines.append("no run records (OUT/runs/ is empty)")
        return "\n".join(lines)
    rows = [("run_id", "command", "logs_date", "score_date", "status", "seconds", "snapshot_id", "finished (UTC)",
             "reason")]
    for r in s.runs:
        reason = first_line(r.reason)
        rows.append((r.run_id, r.command, r.logs_date or "-", r.score_date or "-", r.status, f"{r.seconds:.1f}",
                     r.snapshot_id or "-", r.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
                     reason if len(reason) <= REASON_WIDTH else reason[:REASON_WIDTH - 1] + "…"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(c.rjust(w) if i == 5 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)
