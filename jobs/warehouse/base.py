"""The warehouse interface, which knows no backend: the output tables
partitioned by score_date, a `snapshots` registry and `*_latest` views, the
same in every backend (`jobs.warehouse.duckdb`, `jobs.warehouse.bigquery`;
`jobs.warehouse.backends.open_warehouse` picks one by URI).

A backend publishes a snapshot by replacing its score date's rows of every
table and adding its registry row in one transaction, so a rerun never
duplicates rows and a failed publish leaves the previous content.
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
from schemas import CAMPAIGN_DELIVERY, CAMPAIGN_LIFT, CAPACITY, PROMOTION_SCORES

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
PROJECT_ID = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")

WAREHOUSE_TABLES = (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, CAMPAIGN_LIFT)


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
