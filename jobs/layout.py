"""Every path and name under the input root (IN) and the output root (OUT), and
the snapshot-id format, defined once. Roots are local folders or gs:// URIs;
every path is built with `pipelines.storage.join`.

    IN/<table>/dt=YYYY-MM-DD/*.parquet                  enrollments, engagement, exposures
    OUT/snapshots/score_date=YYYY-MM-DD/<snapshot_id>/  <table>/*.parquet, _MANIFEST.json, report.html
    OUT/snapshots/LATEST                                "score_date=YYYY-MM-DD/<snapshot_id>"
    OUT/aggregates/dt=YYYY-MM-DD/                       _SUCCESS (names the build), _SUCCESS.json
    OUT/aggregates/dt=YYYY-MM-DD/build=<snapshot_id>/   tracks/, totals/, and the lift facts: listeners/,
                                                        exposures/ (one file per listener shard), market_listeners/
    OUT/dead_letters/run=<snapshot_id>/                 contract-breaking input rows
    OUT/quarantine/score_date=YYYY-MM-DD/<snapshot_id>/ a would-be snapshot that failed a gate
    OUT/_scratch/<snapshot_id>/                         a gs:// run's working files
    OUT/warehouse.duckdb                                the embedded warehouse (default)

A snapshot id is `YYYYMMDDTHHMMSSZ-xxxxxx`: the UTC time its run started and 6
random hex digits, so ids sort by creation time.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
import tempfile

from pipelines import storage

# ------------------------------------------------------------------ inputs ---
INPUT_TABLES = ("enrollments", "engagement", "exposures")  # exposures is optional


def input_partition(input_root: str, table: str, day: dt.date) -> str:
    return storage.join(input_root, table, day_dirname(day))


def day_dirname(day: dt.date) -> str:
    """The Hive-style name of a day's partition folder (inputs and aggregates)."""
    return f"dt={day.isoformat()}"


def parse_day_dirname(name: str) -> dt.date | None:
    """The day of a `dt=YYYY-MM-DD` folder name, or None for any other name."""
    if not name.startswith("dt="):
        return None
    try:
        return dt.date.fromisoformat(name[3:])
    except ValueError:
        return None


# ------------------------------------------------------------- snapshot ids ---
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{6}$")
_ID_TIME = re.compile(r"(\d{8}T\d{6}Z)")


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:{_ID_TIME_FORMAT}}-{secrets.token_hex(3)}"


def is_snapshot_id(text: str) -> bool:
    return bool(_ID.match(text))


def snapshot_id_time(name: str) -> dt.datetime | None:
    """When the run behind a snapshot id (or any name that contains one, such as
    a scratch folder's) started; None when the name holds no id time."""
    m = _ID_TIME.search(name)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1), _ID_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


# --------------------------------------------------------------- snapshots ---
MANIFEST = "_MANIFEST.json"
LATEST = "LATEST"
REPORT = "report.html"
QUARANTINE_RECORD = "_QUARANTINE.json"
_SCORE_DATE_PREFIX = "score_date="


def snapshots_root(output_root: str) -> str:
    return storage.join(output_root, "snapshots")


def latest_uri(output_root: str) -> str:
    return storage.join(snapshots_root(output_root), LATEST)


def score_date_dirname(score_date: dt.date | str) -> str:
    text = score_date if isinstance(score_date, str) else score_date.isoformat()
    return f"{_SCORE_DATE_PREFIX}{text}"


def parse_score_date_dirname(name: str) -> dt.date | None:
    """The date of a `score_date=YYYY-MM-DD` folder name, or None for any other name."""
    if not name.startswith(_SCORE_DATE_PREFIX):
        return None
    try:
        return dt.date.fromisoformat(name[len(_SCORE_DATE_PREFIX):])
    except ValueError:
        return None


def score_date_dir(output_root: str, score_date: dt.date) -> str:
    return storage.join(snapshots_root(output_root), score_date_dirname(score_date))


def snapshot_dir(output_root: str, score_date: dt.date, snapshot_id: str) -> str:
    return storage.join(score_date_dir(output_root, score_date), snapshot_id)


def snapshot_rel(score_date: dt.date, snapshot_id: str) -> str:
    """What LATEST holds: the snapshot folder relative to OUT/snapshots."""
    return f"{score_date_dirname(score_date)}/{snapshot_id}"


def parse_snapshot_rel(text: str) -> tuple[dt.date, str]:
    """(score date, snapshot id) of a LATEST value; ValueError when it is not
    `score_date=YYYY-MM-DD/<snapshot_id>`."""
    date_part, sep, snapshot_id = (text or "").strip().partition("/")
    day = parse_score_date_dirname(date_part)
    if not sep or day is None or not snapshot_id or "/" in snapshot_id:
        raise ValueError(f"not {_SCORE_DATE_PREFIX}YYYY-MM-DD/<snapshot_id>: {text!r}")
    return day, snapshot_id


def table_dir(snapshot_folder: str, table: str) -> str:
    return storage.join(snapshot_folder, table)


def listed_file(snapshot_folder: str, relative_path: str) -> str:
    """A file a manifest lists by its path relative to the snapshot folder."""
    return storage.join(snapshot_folder, *relative_path.split("/"))


# -------------------------------------------------------------- aggregates ---
AGGREGATE_MARKER = "_SUCCESS"              # holds the name of the day's complete build
AGGREGATE_MARKER_DETAIL = "_SUCCESS.json"  # what that build was made from


def aggregates_root(output_root: str) -> str:
    return storage.join(output_root, "aggregates")


def aggregates_day(output_root: str, day: dt.date) -> str:
    return storage.join(aggregates_root(output_root), day_dirname(day))


def build_dirname(snapshot_id: str) -> str:
    return f"build={snapshot_id}"


def is_build_dirname(name: str) -> bool:
    return name.startswith("build=")


def aggregate_build(output_root: str, day: dt.date, snapshot_id: str) -> str:
    return storage.join(aggregates_day(output_root, day), build_dirname(snapshot_id))


AGGREGATE_PARTS = ("tracks", "totals", "listeners", "exposures", "market_listeners")  # folders of a build


# ------------------------------------------------------- other run outputs ---
def dead_letters_dir(output_root: str, snapshot_id: str) -> str:
    return storage.join(output_root, "dead_letters", f"run={snapshot_id}")


def quarantine_dir(output_root: str, score_date: dt.date, snapshot_id: str) -> str:
    return storage.join(output_root, "quarantine", score_date_dirname(score_date), snapshot_id)


def default_warehouse_path(output_root: str) -> str:
    return storage.join(output_root, "warehouse.duckdb")


SCRATCH_PREFIX = "oasis-scratch-"


def scratch_parent(output_root: str) -> str:
    """Where runs keep their working files (the aggregation's spilled shards): a
    local temporary folder for a local output; for a gs:// output a folder
    under it, which Dataflow workers can all reach."""
    if storage.is_gcs(output_root):
        return storage.join(output_root, "_scratch")
    return tempfile.gettempdir()


def scratch_dir(output_root: str, snapshot_id: str) -> str:
    name = snapshot_id if storage.is_gcs(output_root) else f"{SCRATCH_PREFIX}{snapshot_id}"
    return storage.join(scratch_parent(output_root), name)


def scratch_snapshot_id(output_root: str, name: str) -> str | None:
    """The snapshot id of a folder name under `scratch_parent`, or None when the
    folder is not a run's scratch folder."""
    if storage.is_gcs(output_root):
        return name
    return name[len(SCRATCH_PREFIX):] if name.startswith(SCRATCH_PREFIX) else None
