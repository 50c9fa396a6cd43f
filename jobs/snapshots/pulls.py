"""The rollback record: which published snapshots a rollback withdrew ("pulled").

`oasis snapshots rollback --to S` writes one record per published snapshot
newer than S (`OUT/snapshots/_pulled/<snapshot_id>.json`, see `jobs.layout`)
BEFORE it moves LATEST, so a rollback killed half-way is finished, never
undone. Everything that could serve a snapshot again reads these records:

* the daily run neither finishes the publish of a pulled snapshot nor
  publishes the same content again (same run fingerprint: same inputs, config,
  code and method), `--force` included, unless `--republish` says so;
* backfill (it runs the daily run), the Luigi task's completion (a date whose
  only snapshots are pulled is not done), the serving reader's fall-back, the
  gates' "previous snapshot", gc's retention and the warehouse's current
  snapshot all leave pulled snapshots out.

gc never deletes a record: after a pulled snapshot's files are gone, its
record still stops a rerun with the same fingerprint. `--republish`, or a
rollback *to* the snapshot, lifts it.

A record whose bytes cannot be read still pulls the snapshot its file name
names (with a warning): damage never puts a withdrawn snapshot back in service.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import socket
from dataclasses import dataclass

from jobs import layout
from jobs.manifest import Manifest
from pipelines import storage
from pipelines.errors import OasisError

log = logging.getLogger(__name__)


class SnapshotPulled(OasisError):
    """A run would serve again what a rollback withdrew; nothing was published."""


@dataclass(frozen=True)
class Pull:
    snapshot_id: str
    score_date: dt.date | None       # None when the record is damaged
    run_fingerprint: str             # "" when unknown
    pulled_at: dt.datetime | None
    rolled_back_to: str = ""         # what the rollback pointed LATEST at
    by: str = ""                     # user@host of the rollback
    damaged: str = ""                # why the record could not be read, if it could not

    def to_json(self) -> bytes:
        return json.dumps({
            "snapshot_id": self.snapshot_id,
            "score_date": self.score_date.isoformat() if self.score_date else None,
            "run_fingerprint": self.run_fingerprint,
            "pulled_at": self.pulled_at.isoformat() if self.pulled_at else None,
            "rolled_back_to": self.rolled_back_to,
            "by": self.by,
        }, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, snapshot_id: str) -> "Pull":
        """The record of `snapshot_id` (the id its file name gives) from any bytes:
        what cannot be read is left unknown and said in `damaged`; never raises."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return cls(snapshot_id, None, "", None, damaged=f"not a JSON record ({type(e).__name__})")
        if not isinstance(doc, dict):
            return cls(snapshot_id, None, "", None, damaged=f"a JSON {type(doc).__name__}, not an object")
        problems = []

        def text(key: str) -> str:
            v = doc.get(key, "")
            if isinstance(v, str):
                return v
            problems.append(f"{key} is not text")
            return ""

        def parsed(key: str, parse):
            v = doc.get(key)
            if v is None:
                return None
            try:
                return parse(v)
            except (TypeError, ValueError, OverflowError):
                problems.append(f"{key} {str(v)[:40]!r} does not parse")
                return None

        named = doc.get("snapshot_id")
        if named is not None and named != snapshot_id:
            problems.append(f"names snapshot {str(named)[:40]!r}")
        pulled_at = parsed("pulled_at", dt.datetime.fromisoformat)
        if pulled_at is not None and pulled_at.tzinfo is None:
            pulled_at = pulled_at.replace(tzinfo=dt.timezone.utc)
        return cls(snapshot_id, parsed("score_date", dt.date.fromisoformat), text("run_fingerprint"), pulled_at,
                   text("rolled_back_to"), text("by"), damaged="; ".join(problems))


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment (some containers)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def read_pulls(output_root: str) -> dict[str, Pull]:
    """Every rollback record under the output root, by snapshot id."""
    found = {}
    for uri in storage.list_files(layout.pulled_dir(output_root)):
        sid = layout.pulled_record_id(uri.replace("\\", "/").rsplit("/", 1)[-1])
        if sid is None:
            continue
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            continue  # lifted meanwhile
        except OSError as e:
            data = b""
            log.warning("cannot read the rollback record %s (%s): the snapshot stays pulled", uri, e)
        pull = Pull.from_json(data, sid)
        if pull.damaged:
            log.warning("rollback record %s is damaged (%s); snapshot %s stays pulled", uri, pull.damaged, sid)
        found[sid] = pull
    return found


def record(output_root: str, manifests: list[Manifest], rolled_back_to: str,
           now: dt.datetime | None = None) -> list[str]:
    """Write the record of each of `manifests` (the snapshots a rollback
    withdraws); returns their ids. A record already there is left as it is."""
    now = now or dt.datetime.now(dt.timezone.utc)
    existing = read_pulls(output_root)
    by = _who()
    done = []
    for m in manifests:
        if m.snapshot_id not in existing:
            pull = Pull(m.snapshot_id, m.score_date, m.run_fingerprint, now, rolled_back_to, by)
            storage.write_bytes(layout.pulled_record(output_root, m.snapshot_id), pull.to_json())
        done.append(m.snapshot_id)
    return done


def lift(output_root: str, snapshot_ids: list[str]) -> list[str]:
    """Remove the records of `snapshot_ids` (a deliberate republish); returns
    the ids whose record was there."""
    lifted = []
    for sid in snapshot_ids:
        uri = layout.pulled_record(output_root, sid)
        if storage.exists(uri):
            storage.delete_file(uri)
            lifted.append(sid)
    return lifted


def same_content(pulls: dict[str, Pull], score_date: dt.date, run_fingerprint: str) -> list[Pull]:
    """The pulled snapshots of `score_date` made from this run fingerprint (the
    same inputs, config, code and method)."""
    return [p for p in pulls.values() if p.run_fingerprint == run_fingerprint and p.score_date == score_date]


def describe(p: Pull) -> str:
    when = p.pulled_at.strftime("%Y-%m-%d %H:%M UTC") if p.pulled_at else "an unknown time"
    to = f" to {p.rolled_back_to}" if p.rolled_back_to else ""
    by = f" by {p.by}" if p.by else ""
    return f"{p.snapshot_id} was pulled{by} at {when} (rollback{to})"
