"""`oasis status`'s findings: the last runs (from the run records), LATEST's
score date and age, the last failure, and what is wrong, if anything. Prints
nothing (`jobs.cli.status` does)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from jobs.observe import records
from jobs.observe.metrics import day_seconds
from jobs.observe.records import RunRecord
from jobs.snapshots import store

# A score date's scores serve that day; the next snapshot is due by 06:00 UTC
# the day after, so LATEST is late once its score date began more than 30 h ago.
DEFAULT_MAX_AGE_HOURS = 30.0


@dataclass
class Status:
    runs: list[RunRecord]                  # newest first
    latest: tuple[dt.date, str] | None     # (score date, snapshot id) LATEST points to
    age_hours: float | None                # hours since LATEST's score date began (00:00 UTC)
    max_age_hours: float
    last_failure: RunRecord | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(output_root: str, max_age_hours: float = DEFAULT_MAX_AGE_HOURS, limit: int = 10,
          now: dt.datetime | None = None) -> Status:
    now = now or dt.datetime.now(dt.timezone.utc)
    runs = records.read_records(output_root)
    latest = store.latest_target(output_root)
    age = (now.timestamp() - day_seconds(latest[0])) / 3600 if latest else None
    last_failure = next((r for r in runs if not r.succeeded), None)
    problems = []
    if latest is None:
        problems.append(f"nothing published: no LATEST under {output_root}")
    elif age > max_age_hours:
        problems.append(f"LATEST is late: score date {latest[0]} began {age:.1f} h ago, more than the "
                        f"freshness objective of {max_age_hours:g} h")
    for r in last_failures(runs):
        what = f"{r.command} of logs date {r.logs_date}" if r.logs_date else r.command
        problems.append(f"the last run ({r.run_id}, {what}) {r.status.replace('_', ' ')}: "
                        f"{first_line(r.reason) or 'no reason recorded'}")
    return Status(runs[:limit], latest, age, max_age_hours, last_failure, problems)


def last_failures(runs: list[RunRecord]) -> list[RunRecord]:
    """The failures of the last run: the newest record if it failed; for a
    backfill, every date of it that failed (as the metrics report it)."""
    if not runs:
        return []
    newest = runs[0]
    group = [r for r in runs if r.parent == newest.parent] if newest.parent else [newest]
    return sorted((r for r in group if not r.succeeded), key=lambda r: r.logs_date or "")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
