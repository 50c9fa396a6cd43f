"""The warehouse interface, which knows no backend: the output tables
partitioned by score_date, a `snapshots` registry and `*_latest` views, the
same in every backend (`jobs.warehouse.duckdb`, `jobs.warehouse.bigquery`;
`jobs.warehouse.backends.open_warehouse` picks one by URI).

A backend publishes a snapshot by replacing its score date's rows of every
table and adding its registry row in one transaction, so a rerun never
duplicates rows and a failed publish leaves the previous content. One table
lags: `delivery_reconciliation` holds the logs day, the day before the
snapshot's score date, so a publish replaces that day's rows of it
(`partition_date`).
"""
from __future__ import annotations

import datetime as dt
import io
import re
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.manifest import Manifest
from pipelines.errors import OasisError
from schemas import CAMPAIGN_DELIVERY, CAPACITY, DELIVERY_RECONCILIATION, PROMOTION_SCORES

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
PROJECT_ID = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")

WAREHOUSE_TABLES = (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, DELIVERY_RECONCILIATION)
# Days a table's rows lie before the snapshot's score date (its partition in a publish).
PARTITION_LAG_DAYS = {DELIVERY_RECONCILIATION.name: 1}
# Tables a snapshot written before they existed lacks: publishing it (a rollback) leaves them as they are.
OPTIONAL_TABLES = frozenset({DELIVERY_RECONCILIATION.name})


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

    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, in one transaction."""

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run SQL in the warehouse's dialect; the result as Arrow."""


def check_identifier(name: str, what: str = "identifier") -> str:
    """Dataset and table names are validated before any SQL is built from them."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise WarehouseError(f"invalid {what} {name!r}: use letters, digits and underscores, "
                             "starting with a letter or underscore")
    return name


def latest_view_sql(qualify) -> dict[str, str]:
    """`CREATE VIEW` bodies shared by DuckDB and BigQuery. `qualify(name)` returns
    the quoted, qualified table name for the dialect."""
    latest = (f"(SELECT snapshot_id FROM {qualify('snapshots')} "
              "ORDER BY score_date DESC, created_at DESC LIMIT 1)")
    return {
        f"{t.name}_latest": f"SELECT * FROM {qualify(t.name)} WHERE snapshot_id = {latest}"
        for t in WAREHOUSE_TABLES
    }


def registry_row(manifest: Manifest, manifest_uri: str) -> dict:
    """The `snapshots` registry row of a snapshot."""
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
    }


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
