"""The warehouse interface, which knows no backend: the output tables
partitioned by score_date, a `snapshots` registry and `*_latest` views, the
same in every backend (`jobs.warehouse.duckdb`, `jobs.warehouse.bigquery`;
`jobs.warehouse.backends.open_warehouse` picks one by URI).

A backend publishes a snapshot by replacing its score date's rows of every
table and adding its registry row in one transaction, so a rerun never
duplicates rows and a failed publish leaves the previous content. The
registry records which snapshot is current (`is_current`: the one LATEST
points to) and which a rollback pulled (`pulled_at`; their rows leave the
tables); the `*_latest` views show the current snapshot. A publish that moves
LATEST makes its snapshot current in the same transaction; `set_current`
moves it on its own (a rollback, a repair), in one transaction as well. One
table lags: `delivery_reconciliation` holds the logs day, the day before the
snapshot's score date, so a publish replaces that day's rows of it
(`partition_date`).
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.manifest import Manifest
from pipelines.errors import OasisError
from schemas import CAMPAIGN_DELIVERY, CAMPAIGN_LIFT, CAPACITY, DELIVERY_RECONCILIATION, PRICES, PROMOTION_SCORES

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
PROJECT_ID = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_LITERAL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")  # what may go into SQL as a quoted literal

WAREHOUSE_TABLES = (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, PRICES, DELIVERY_RECONCILIATION, CAMPAIGN_LIFT)
# Days a table's rows lie before the snapshot's score date (its partition in a publish).
PARTITION_LAG_DAYS = {DELIVERY_RECONCILIATION.name: 1}
# Tables a snapshot written before they existed lacks: publishing it (a rollback) leaves them as they are.
OPTIONAL_TABLES = frozenset({PRICES.name, DELIVERY_RECONCILIATION.name})


def partition_date(table, score_date: dt.date) -> dt.date:
    """The score_date partition a snapshot of `score_date` replaces in `table`."""
    return score_date - dt.timedelta(days=PARTITION_LAG_DAYS.get(table.name, 0))


def tables_to_publish(tables: dict) -> list:
    """The warehouse tables a snapshot's publish replaces: all, but an optional
    one only when the snapshot has it."""
    return [t for t in WAREHOUSE_TABLES if t.name in tables or t.name not in OPTIONAL_TABLES]


class WarehouseError(OasisError):
    """The warehouse refused or failed a request; the message says which."""


class Warehouse(Protocol):
    """What every backend offers."""

    uri: str

    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict, *,
                current: bool = False) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, in one transaction; `current`: make it the current snapshot
        in the same transaction."""

    def set_current(self, snapshot_id: str | None, pulled: list[str]) -> None:
        """In one transaction: mark `pulled` snapshots pulled and delete their
        rows, and make `snapshot_id` the current one (None: none is)."""

    def registry(self) -> tuple[list["RegistryRow"], list[str]]:
        """The registry's rows that parse, and one problem line per row that does not."""

    def check(self) -> list[str]:
        """Before a run: raise WarehouseError when the warehouse cannot be used
        (no credentials, unreachable, not a database); return notes (who holds it
        and how long a publish will wait)."""

    def rebuild_target(self) -> tuple["Warehouse", Any]:
        """(warehouse to load every snapshot into, commit(loaded_ids) that makes
        it the warehouse): a fresh file swapped in for DuckDB, the same dataset
        pruned of anything else for BigQuery."""

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run SQL in the warehouse's dialect; the result as Arrow."""

    def replace_range(self, table, first: dt.date, last: dt.date, data: pa.Table) -> None:
        """Replace the rows of `table` (a schemas Table partitioned by the date of
        its first key column, e.g. forecast_accuracy by origin_date) whose date
        is in [first, last] with `data`, in one transaction; the table is
        created when missing."""


def check_range_rows(table, first: dt.date, last: dt.date, data: pa.Table) -> pa.Table:
    """`data` conformed to `table`, every row's partition date within [first, last]."""
    data = table.conform(data)
    column = table.key[0]
    dates = [d for d in data.column(column).to_pylist() if not first <= d <= last]
    if dates:
        raise WarehouseError(f"{table.name} has rows for {column} {sorted(set(dates))[:5]} outside "
                             f"{first}..{last}; the warehouse is unchanged")
    return data


def check_identifier(name: str, what: str = "identifier") -> str:
    """Dataset and table names are validated before any SQL is built from them."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise WarehouseError(f"invalid {what} {name!r}: use letters, digits and underscores, "
                             "starting with a letter or underscore")
    return name


def literal_id(snapshot_id: str) -> str:
    """A snapshot id as a quoted SQL literal, after checking it holds nothing
    but letters, digits, '-' and '_' (ids come from files, which may be hostile)."""
    if not isinstance(snapshot_id, str) or not _LITERAL_ID.match(snapshot_id):
        raise WarehouseError(f"refusing snapshot id {str(snapshot_id)[:60]!r} in SQL: not a snapshot id")
    return f"'{snapshot_id}'"


def current_snapshot_sql(qualify) -> str:
    """The current snapshot's id: the registry row marked current, else (a
    registry from before `is_current`) the newest not pulled."""
    return (f"(SELECT snapshot_id FROM {qualify('snapshots')} WHERE pulled_at IS NULL "
            "ORDER BY COALESCE(is_current, FALSE) DESC, score_date DESC, created_at DESC LIMIT 1)")


def latest_view_sql(qualify) -> dict[str, str]:
    """`CREATE VIEW` bodies shared by DuckDB and BigQuery. `qualify(name)` returns
    the quoted, qualified table name for the dialect."""
    current = current_snapshot_sql(qualify)
    return {f"{t.name}_latest": f"SELECT * FROM {qualify(t.name)} WHERE snapshot_id = {current}"
            for t in WAREHOUSE_TABLES}


def fair_exposure_view_sql(qualify) -> str:
    """The `fair_exposure` view's body, the same on DuckDB and BigQuery: per
    (score_date, market, surface, size_decile) the artists' share of planned
    promoted plays against their share of eligible enrolled tracks, and the
    Gini coefficient of planned plays across artists (`jobs.report.exposure`
    defines the numbers and computes them for the run report)."""
    part = "PARTITION BY score_date, market, surface"
    return f"""
WITH per_artist AS (
  SELECT score_date, snapshot_id, market, surface, artist_id,
         sum(supply_forecast) AS organic_plays,
         CAST(sum(CASE WHEN eligible THEN 1 ELSE 0 END) AS INT64) AS eligible_tracks,
         sum(planned_promoted_plays) AS planned
  FROM {qualify('promotion_scores')}
  GROUP BY score_date, snapshot_id, market, surface, artist_id
), ranked AS (
  SELECT *,
         NTILE(10) OVER ({part} ORDER BY organic_plays, artist_id) AS size_decile,
         ROW_NUMBER() OVER ({part} ORDER BY planned, artist_id) AS planned_rank,
         count(*) OVER ({part}) AS n_artists,
         sum(planned) OVER ({part}) AS total_planned,
         sum(eligible_tracks) OVER ({part}) AS total_eligible
  FROM per_artist
  WHERE eligible_tracks > 0
), gini AS (
  SELECT score_date, market, surface,
         CASE WHEN sum(planned) > 0
              THEN sum((2 * planned_rank - n_artists - 1) * planned) / (max(n_artists) * sum(planned)) END AS gini
  FROM ranked
  GROUP BY score_date, market, surface
)
SELECT r.score_date, r.snapshot_id, r.market, r.surface, r.size_decile,
       count(*) AS artists,
       CAST(sum(r.eligible_tracks) AS INT64) AS eligible_tracks,
       sum(r.eligible_tracks) / max(r.total_eligible) AS eligible_track_share,
       sum(r.planned) AS planned_promoted_plays,
       CASE WHEN max(r.total_planned) > 0 THEN sum(r.planned) / max(r.total_planned) END AS planned_share,
       max(g.gini) AS gini
FROM ranked AS r
JOIN gini AS g ON g.score_date = r.score_date AND g.market = r.market AND g.surface = r.surface
GROUP BY r.score_date, r.snapshot_id, r.market, r.surface, r.size_decile"""


def view_sql(qualify) -> dict[str, str]:
    """Every view of the warehouse: `*_latest` and `fair_exposure`."""
    return {**latest_view_sql(qualify), "fair_exposure": fair_exposure_view_sql(qualify)}


def registry_row(manifest: Manifest, manifest_uri: str) -> dict:
    """The `snapshots` registry row of a snapshot (`is_current` is set by the
    publish transaction)."""
    return {
        "snapshot_id": manifest.snapshot_id,
        "score_date": manifest.score_date,
        "created_at": manifest.created_at,
        "code_version": manifest.code_version,
        "run_fingerprint": manifest.run_fingerprint,
        "promotion_scores_rows": manifest.tables["promotion_scores"].rows,
        "campaign_delivery_rows": manifest.tables["campaign_delivery"].rows,
        "capacity_rows": manifest.tables["capacity"].rows,
        "manifest_uri": manifest_uri,
        "validation": manifest.validation_text,
        "skipped_gates": ",".join(manifest.skipped_gates),
        "is_current": False,
        "pulled_at": None,
    }


# ------------------------------------------------------------- registry ---
@dataclass(frozen=True)
class RegistryRow:
    """One registry row as read back, checked: the repair tools decide from these."""
    snapshot_id: str
    score_date: dt.date
    created_at: dt.datetime | None
    run_fingerprint: str
    is_current: bool
    pulled_at: dt.datetime | None
    validation: str
    skipped_gates: tuple[str, ...]

    @classmethod
    def parse(cls, row: Any) -> "RegistryRow":
        """A registry row from a query result row (a dict); WarehouseError naming
        the field when it is not one."""
        if not isinstance(row, dict):
            raise WarehouseError(f"registry row is a {type(row).__name__}, not a row")
        sid = row.get("snapshot_id")
        if not isinstance(sid, str) or not _LITERAL_ID.match(sid):
            raise WarehouseError(f"registry row has no usable snapshot_id: {str(sid)[:60]!r}")
        day = row.get("score_date")
        if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
            raise WarehouseError(f"registry row {sid}: score_date is not a date: {str(day)[:40]!r}")
        created, pulled = (_time(row, k, sid) for k in ("created_at", "pulled_at"))
        current = row.get("is_current")
        if current is not None and not isinstance(current, bool):
            raise WarehouseError(f"registry row {sid}: is_current is not true/false: {str(current)[:40]!r}")
        texts = {}
        for k in ("run_fingerprint", "validation", "skipped_gates"):
            v = row.get(k)
            if v is not None and not isinstance(v, str):
                raise WarehouseError(f"registry row {sid}: {k} is not text")
            texts[k] = v or ""
        gates = tuple(g for g in texts["skipped_gates"].split(",") if g)
        return cls(sid, day, created, texts["run_fingerprint"], bool(current), pulled, texts["validation"], gates)


def _time(row: dict, key: str, sid: str) -> dt.datetime | None:
    v = row.get(key)
    if v is None:
        return None
    if not isinstance(v, dt.datetime):
        raise WarehouseError(f"registry row {sid}: {key} is not a timestamp: {str(v)[:40]!r}")
    return v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)


def parse_registry(rows: list) -> tuple[list[RegistryRow], list[str]]:
    """(rows that parse, one problem per row that does not, logged as a warning)."""
    good, problems = [], []
    for i, row in enumerate(rows):
        try:
            good.append(RegistryRow.parse(row))
        except WarehouseError as e:
            problems.append(f"row {i}: {e}")
            log.warning("skipping warehouse registry row %d: %s", i, e)
    return good, problems


def current_of(rows: list[RegistryRow]) -> RegistryRow | None:
    """The registry's current snapshot, as the views pick it."""
    live = [r for r in rows if r.pulled_at is None]
    if not live:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return max(live, key=lambda r: (r.is_current, r.score_date, r.created_at or epoch))


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
