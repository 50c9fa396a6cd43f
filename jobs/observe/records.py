"""Run records: one JSON file per run, `OUT/runs/<run_id>.json` (paths in
`jobs.layout`), written when the run ends, whether it published, found its
snapshot already published, was quarantined or failed.

A record is written after everything else the run does and only into
`OUT/runs/`, so writing it never changes what is published. It holds no
listener data and no option values (secrets are scrubbed from the reason):
what ran, when, how it ended and why, how long each phase took, and where its
outputs went. `oasis status` and the metrics' "last success" read them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from jobs import layout
from pipelines import storage

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PUBLISHED, ALREADY_PUBLISHED, QUARANTINED, FAILED = "published", "already_published", "quarantined", "failed"
STATUSES = (PUBLISHED, ALREADY_PUBLISHED, QUARANTINED, FAILED)
SUCCESSES = (PUBLISHED, ALREADY_PUBLISHED)  # the run exited 0
MAX_REASON_CHARS = 2000


@dataclass
class RunRecord:
    run_id: str                        # the snapshot id the run was given (layout.new_snapshot_id)
    command: str                       # run | backfill | luigi | serving sync
    status: str                        # one of STATUSES
    started_at: dt.datetime
    finished_at: dt.datetime
    logs_date: str | None = None       # YYYY-MM-DD; None for a command that has no date (serving sync)
    score_date: str | None = None
    reason: str = ""                   # why it failed or was quarantined (first lines of the error)
    snapshot_id: str | None = None     # the snapshot published or found (may differ from run_id)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)   # snapshot, warehouse, latest_moved, dead_letters, ...
    failed_gates: list[str] = field(default_factory=list)
    parent: str | None = None          # the backfill's run id, for one date of a backfill
    lineage_run_id: str | None = None  # the OpenLineage run id of the run's events
    format_version: int = FORMAT_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESSES

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["started_at"] = self.started_at.isoformat()
        doc["finished_at"] = self.finished_at.isoformat()
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> "RunRecord":
        """Raises ValueError on anything that is not a record of this format."""
        if not isinstance(doc, dict):
            raise ValueError("a run record must be a JSON object")
        if doc.get("status") not in STATUSES:
            raise ValueError(f"unknown status {doc.get('status')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in doc.items() if k in names}
        for key in ("started_at", "finished_at"):
            value = dt.datetime.fromisoformat(str(doc[key]))
            kw[key] = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        for key in ("run_id", "command"):
            if not isinstance(kw.get(key), str):
                raise ValueError(f"{key!r} must be a string")
        return cls(**kw)


def short_reason(message: str, secrets: list[str] = ()) -> str:
    """The reason a record, an event or a status line carries: the error's
    message with secret values replaced, cut to MAX_REASON_CHARS."""
    text = scrub(message.strip(), secrets)
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


def scrub(text: str, secrets: list[str] = ()) -> str:
    for s in sorted(set(x for x in secrets if x), key=len, reverse=True):
        text = text.replace(s, "<redacted>")
    return text


def write_record(output_root: str, record: RunRecord) -> str:
    uri = layout.run_record_uri(output_root, record.run_id)
    storage.write_bytes(uri, json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str).encode())
    return uri


def read_records(output_root: str, limit: int | None = None) -> list[RunRecord]:
    """The newest run records (by start time: run ids sort by it), at most
    `limit`, returned newest-finished first. A file that is not a readable
    record is skipped with a warning."""
    names = []
    for uri in storage.list_files(layout.runs_dir(output_root), layout.RUN_RECORD_SUFFIX):
        run_id = layout.run_record_id(uri.rsplit("/", 1)[-1])
        if run_id is not None:
            names.append((run_id, uri))
    out = []
    for _, uri in sorted(names, reverse=True):
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(RunRecord.from_dict(json.loads(storage.read_bytes(uri).decode("utf-8"))))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, FileNotFoundError) as e:
            log.warning("skipping run record %s: %s", uri, e)
    return sorted(out, key=lambda r: (r.finished_at, r.run_id), reverse=True)


def last_success(output_root: str) -> RunRecord | None:
    """The newest record of a run that succeeded (published or already published)."""
    for record in read_records(output_root):
        if record.succeeded:
            return record
    return None
