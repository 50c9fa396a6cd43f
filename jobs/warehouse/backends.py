"""Choose a warehouse backend by URI (the one module that knows them all):

    None                     DuckDB at OUT/warehouse.duckdb (local output roots only)
    duckdb:///path, x.duckdb that DuckDB file
    bq://PROJECT.DATASET     BigQuery
"""
from __future__ import annotations

from jobs import layout
from jobs.warehouse.base import Warehouse, WarehouseError
from jobs.warehouse.bigquery import BigQueryWarehouse
from jobs.warehouse.duckdb import DuckDBWarehouse
from pipelines import storage


def open_warehouse(uri: str | None, output_root: str) -> Warehouse:
    """The warehouse `uri` names (see the module docstring); the URI is checked
    before any request is made."""
    if uri and uri.startswith("bq://"):
        return BigQueryWarehouse.from_uri(uri)
    if uri is None:
        if storage.is_gcs(output_root):
            raise WarehouseError("with a gs:// output, pass --warehouse bq://PROJECT.DATASET "
                                 "or --warehouse duckdb:///local/path.duckdb")
        return DuckDBWarehouse(layout.default_warehouse_path(output_root))
    if uri.startswith("duckdb://"):
        return DuckDBWarehouse(uri[len("duckdb://"):])
    if uri.endswith(".duckdb"):
        return DuckDBWarehouse(uri)
    raise WarehouseError(f"unknown warehouse {uri!r}: use bq://PROJECT.DATASET or a .duckdb path")


def describe(uri: str | None, output_root: str) -> str:
    """What the summary prints for the warehouse a run used."""
    return uri or layout.default_warehouse_path(output_root)
