"""Every path and name under the input root (IN) and the output root (OUT), and
the snapshot-id format, defined once. Roots are local folders or gs:// URIs;
every path is built with `pipelines.storage.join`.

    IN/<table>/dt=YYYY-MM-DD/*.parquet                  enrollments, engagement, exposures
    OUT/snapshots/score_date=YYYY-MM-DD/<snapshot_id>/  <table>/*.parquet, _MANIFEST.json, report.html
    OUT/snapshots/LATEST                                "score_date=YYYY-MM-DD/<snapshot_id>"
    OUT/snapshots/_pulled/<snapshot_id>.json            a rollback withdrew that snapshot (jobs.snapshots.pulls)
    OUT/aggregates/dt=YYYY-MM-DD/                       _SUCCESS (names the build), _SUCCESS.json
    OUT/aggregates/dt=YYYY-MM-DD/build=<snapshot_id>/   tracks/, totals/, event_ids/*.arrow (hashed ids seen:
                                                        pipelines.dedupe), and the lift facts: listeners/,
                                                        exposures/ (one file per listener shard), market_listeners/
    OUT/dead_letters/run=<snapshot_id>/                 contract-breaking input rows
    OUT/backtests/<backtest_id>/                        forecast_accuracy/*.parquet, _MANIFEST.json
    OUT/quarantine/score_date=YYYY-MM-DD/<snapshot_id>/ a would-be snapshot that failed a gate
    OUT/_scratch/<snapshot_id>/                         a gs:// run's working files
    OUT/runs/<run_id>.json                              the record of every run, failed ones included
    OUT/metrics/oasis.prom                              the last run's metrics (Prometheus text format)
    $TMPDIR/oasis-<uid>/oasis-scratch-<snapshot_id>/    a local run's working files (owner-only folders)
    OUT/warehouse.duckdb                                the embedded warehouse (default)
    OUT/feature_repo/                                   the Feast online store (`oasis serving sync`)

The feature repository (OUT/feature_repo or any local folder, `--repo`):

    REPO/current -> stores/<snapshot_id>-<nonce>        the store serving reads (a symlink)
    REPO/stores/<snapshot_id>-<nonce>/                  feature_store.yaml, registry.db, online.db,
                                                        SNAPSHOT.json (written last: the store is whole)
    REPO/.sync.lock                                     one sync at a time

A snapshot id is `YYYYMMDDTHHMMSSZ-xxxxxx`: the UTC time its run started and 6
random hex digits, so ids sort by creation time. A run's id is the snapshot id
it publishes under (given before it starts, so a run that fails has one too).
"""
from __future__ import annotations

import datetime as dt
import os
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


PULLED = "_pulled"


def pulled_dir(output_root: str) -> str:
    """Where the rollback records live: one file per withdrawn snapshot."""
    return storage.join(snapshots_root(output_root), PULLED)


def pulled_record(output_root: str, snapshot_id: str) -> str:
    return storage.join(pulled_dir(output_root), f"{snapshot_id}.json")


def pulled_record_id(name: str) -> str | None:
    """The snapshot id of a rollback record's file name, or None."""
    return name[:-len(".json")] if name.endswith(".json") and is_snapshot_id(name[:-len(".json")]) else None


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

EVENT_IDS = "event_ids"


def event_ids_dir(build_dir: str) -> str:
    """The hashed event ids a build saw (`pipelines.dedupe`: the cross-day
    dedupe of later days reads them)."""
    return storage.join(build_dir, EVENT_IDS)


# --------------------------------------------------------------- backtests ---
def backtests_root(output_root: str) -> str:
    return storage.join(output_root, "backtests")


def backtest_dir(output_root: str, backtest_id: str) -> str:
    """A backtest's folder: its tables and `_MANIFEST.json`. A backtest id has
    the snapshot-id format (`new_snapshot_id`)."""
    return storage.join(backtests_root(output_root), backtest_id)


# ------------------------------------------------------- other run outputs ---
def dead_letters_root(output_root: str) -> str:
    return storage.join(output_root, "dead_letters")


def dead_letters_dir(output_root: str, snapshot_id: str) -> str:
    return storage.join(dead_letters_root(output_root), f"run={snapshot_id}")


def dead_letters_run_id(name: str) -> str | None:
    """The snapshot id of a `run=<snapshot_id>` dead-letter folder name, or None."""
    return name[4:] if name.startswith("run=") and is_snapshot_id(name[4:]) else None


def quarantine_root(output_root: str) -> str:
    return storage.join(output_root, "quarantine")


def quarantine_dir(output_root: str, score_date: dt.date, snapshot_id: str) -> str:
    """A would-be snapshot that failed a gate: dated by its SCORE date, like the
    snapshot it would have been."""
    return storage.join(quarantine_root(output_root), score_date_dirname(score_date), snapshot_id)


# ----------------------------------------------------- the feature repository ---
FEATURE_REPO = "feature_repo"
REPO_CURRENT = "current"
REPO_STORES = "stores"
REPO_LOCK = ".sync.lock"
STORE_STATE = "SNAPSHOT.json"
STORE_CONFIG = "feature_store.yaml"
STORE_REGISTRY = "registry.db"
STORE_ONLINE = "online.db"


def feature_repo(output_root: str) -> str:
    return storage.join(output_root, FEATURE_REPO)


def repo_current(repo: str) -> str:
    return storage.join(repo, REPO_CURRENT)


def repo_stores(repo: str) -> str:
    return storage.join(repo, REPO_STORES)


def repo_lock(repo: str) -> str:
    return storage.join(repo, REPO_LOCK)


def store_dirname(snapshot_id: str) -> str:
    """A new store's folder name: the snapshot it holds and a nonce (a store is
    built once; a rebuild of the same snapshot gets a fresh folder)."""
    return f"{snapshot_id}-{secrets.token_hex(4)}"


def store_file(store_dir: str, name: str) -> str:
    return storage.join(store_dir, name)


def default_warehouse_path(output_root: str) -> str:
    return storage.join(output_root, "warehouse.duckdb")


SCRATCH_PREFIX = "oasis-scratch-"


def scratch_parent(output_root: str) -> str:
    """Where runs keep their working files (the aggregation's spilled shards,
    raw rows with user ids): for a local output a folder of this user's own in
    the temporary folder (`oasis-<uid>`, made owner-only by
    `jobs.run.scratch.prepare`), never the shared temporary folder itself; for
    a gs:// output a folder under it, which Dataflow workers can all reach."""
    if storage.is_gcs(output_root):
        return storage.join(output_root, "_scratch")
    return os.path.join(tempfile.gettempdir(), f"oasis-{os.getuid()}")


def scratch_dir(output_root: str, snapshot_id: str) -> str:
    name = snapshot_id if storage.is_gcs(output_root) else f"{SCRATCH_PREFIX}{snapshot_id}"
    return storage.join(scratch_parent(output_root), name)


def scratch_snapshot_id(output_root: str, name: str) -> str | None:
    """The snapshot id of a folder name under `scratch_parent`, or None when the
    folder is not a run's scratch folder."""
    if storage.is_gcs(output_root):
        return name
    return name[len(SCRATCH_PREFIX):] if name.startswith(SCRATCH_PREFIX) else None


# ----------------------------------------------------- run records, metrics ---
RUN_RECORD_SUFFIX = ".json"
METRICS_TEXTFILE = "oasis.prom"


def runs_dir(output_root: str) -> str:
    return storage.join(output_root, "runs")


def run_record_uri(output_root: str, run_id: str) -> str:
    return storage.join(runs_dir(output_root), f"{run_id}{RUN_RECORD_SUFFIX}")


def run_record_id(name: str) -> str | None:
    """The run id of a file name under `runs_dir`, or None for any other file."""
    if not name.endswith(RUN_RECORD_SUFFIX):
        return None
    stem = name[:-len(RUN_RECORD_SUFFIX)]
    return stem if is_snapshot_id(stem) else None


def metrics_textfile(output_root: str) -> str:
    return storage.join(output_root, "metrics", METRICS_TEXTFILE)


# -------------------------------------------------------------- simulation ---
# `oasis simulate --out DIR`: DIR/world is the input root it writes (with the
# planted truth under truth/), DIR/out the output root its daily runs publish to.
SIMULATION_RECORD = "simulation.json"


def simulation_world(sim_dir: str) -> str:
    return storage.join(sim_dir, "world")


def simulation_output(sim_dir: str) -> str:
    return storage.join(sim_dir, "out")


def simulation_config(sim_dir: str) -> str:
    return storage.join(sim_dir, "config.toml")


def truth_file(input_root: str, name: str) -> str:
    """IN/truth/<name>: what a generated world planted."""
    return storage.join(input_root, "truth", name)


def truth_day_dir(input_root: str, day: dt.date) -> str:
    """IN/truth/days/dt=D: the planted truth of one simulated day."""
    return storage.join(input_root, "truth", "days", day_dirname(day))


def staging_day_dir(input_root: str, day: dt.date) -> str:
    """IN/.staging/dt=D: a simulated day being written; moved into place when whole."""
    return storage.join(input_root, ".staging", day_dirname(day))
