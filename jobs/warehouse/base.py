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
from schemas import CAMPAIGN_DELIVERY, CAPACITY, PRICES, PROMOTION_SCORES

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
PROJECT_ID = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")

WAREHOUSE_TABLES = (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, PRICES)


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
