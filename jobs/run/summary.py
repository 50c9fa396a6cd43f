"""The short summary a run prints: what was read, what was dropped, who is
eligible and why not, how much capacity each (market, surface) uses."""
from __future__ import annotations

from collections import Counter

from jobs import layout
from jobs.run.daily import RunResult


def render(result: RunResult, warehouse: str) -> str:
    m = result.manifest
    metrics = m.metrics
    lines = []
    if result.status == "already_published":
        lines.append(f"Snapshot {m.snapshot_id} for score date {m.score_date} is already published "
                     "with the same inputs, config and code; nothing to do.")
        lines.append(f"  snapshot: {result.snapshot_dir}")
        if report_line(result):
            lines.append(f"  report:   {report_line(result)}")
        lines += warning_lines(result)
        return "\n".join(lines)
    read = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("rows_read/")}
    lines.append(f"OASIS snapshot {m.snapshot_id}  score date {m.score_date}  "
                 f"(logs up to {m.as_of}, {result.seconds:.1f} s)")
    lines.append("  rows read:        " + ", ".join(f"{k} {v:,}" for k, v in sorted(read.items())))
    dupes = sum(v for k, v in metrics.items() if k.startswith("duplicates_removed/"))
    lines.append(f"  dead-lettered:    {m.dead_letter_count:,}   repeated events dropped: {dupes:,}")
    days = m.inputs
    lines.append(f"  aggregates:       built {len(days.built_days)} day(s), reused {len(days.stored_days)}"
                 + (f", missing window days: {', '.join(days.missing_window_days)}"
                    if days.missing_window_days else ""))
    reasons = Counter({k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("ineligible/")})
    lines.append(f"  enrolled rows:    {metrics.get('rows_eligible', 0):,} eligible, "
                 f"{metrics.get('rows_ineligible', 0):,} ineligible")
    for reason, n in reasons.most_common():
        lines.append(f"      {reason:<24} {n:,}")
    cap = result.tables["capacity"].to_pandas() if "capacity" in result.tables else None
    if cap is not None and len(cap):
        lines.append("  capacity used (planned / capacity), serving gain, the logs day's delivery "
                     "(realised / planned):")
        for row in cap.sort_values(["market", "surface"]).itertuples():
            share = row.planned_total / row.capacity if row.capacity > 0 else 0.0
            delivered = (f"{row.reconciled_realised:,} / {row.reconciled_planned:,.0f}"
                         if row.reconciled_planned > 0 else "nothing planned")
            lines.append(f"      {row.market} {row.surface:<9} {row.planned_total:>12,.1f} / "
                         f"{row.capacity:>12,.1f}  {share:6.1%}   gain {row.serving_gain:.3f}   {delivered}")
    lift = result.tables["campaign_lift"].to_pandas() if "campaign_lift" in result.tables else None
    if lift is not None:
        lines.append("  campaign lift:    " + lift_line(lift))
    waits = {"publish lock": m.seconds.get("wait_publish_lock", 0.0), "warehouse": m.seconds.get("wait_warehouse", 0.0)}
    if any(v >= 0.5 for v in waits.values()):
        lines.append("  waited:           " + ", ".join(f"{v:.1f} s for the {k}" for k, v in waits.items() if v >= 0.5)
                     + " (recorded in the manifest's seconds)")
    lines.append(f"  validation:       {m.validation_text}")
    for r in m.validation:
        if r.warning:
            lines.append(f"  WARNING ({r.name}): {r.detail}")
    lines.append(f"  snapshot:         {result.snapshot_dir}")
    if report_line(result):
        lines.append(f"  report:           {report_line(result)}")
    lines.append(f"  LATEST:           {'moved here' if result.latest_moved else 'unchanged (newer snapshot exists)'}")
    lines.append(f"  warehouse:        {warehouse}")
    lines.append(f"  dead letters:     {m.dead_letters}")
    lines += warning_lines(result)
    return "\n".join(lines)


def warning_lines(result: RunResult) -> list[str]:
    """What a person should look at (a warehouse to rebuild, ...), last, so it is seen."""
    return [f"WARNING: {w}" for w in result.warnings]


def lift_line(lift) -> str:
    """campaign_lift at a glance: rows by method, intervals that exclude 0, and
    how far the before/after figure sits from the holdout lift."""
    if lift.empty:
        return "no campaign row has enough data yet"
    itt = int((lift["method"] == "intent_to_treat").sum())
    excludes = int(((lift["lift_low"] > 0) | (lift["lift_high"] < 0)).sum())
    gap = (lift["historical_lift"] - lift["lift"]).mean()
    return (f"{len(lift):,} rows ({len(lift) - itt:,} from exposures, {itt:,} intent-to-treat); {excludes:,} with "
            f"a 95% interval excluding 0; historical minus holdout lift {gap:+.3f} on average"
            if gap == gap else
            f"{len(lift):,} rows ({len(lift) - itt:,} from exposures, {itt:,} intent-to-treat); {excludes:,} with "
            f"a 95% interval excluding 0")


def report_line(result: RunResult) -> str | None:
    """Where the run report is (`make run` prints it), or why it is missing."""
    rep = result.manifest.report
    if not rep:
        return None
    if "path" in rep:
        return layout.listed_file(result.snapshot_dir, str(rep["path"]))
    return f"not written ({rep.get('error', 'unknown error')})"
