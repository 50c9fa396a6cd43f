"""The warehouse: the three output tables partitioned by score_date, a
`snapshots` registry and `*_latest` views. Embedded DuckDB by default,
BigQuery with `bq://PROJECT.DATASET` (see `jobs.warehouse_bigquery`).

Publishing a snapshot replaces its score date's rows in one transaction, so a
rerun never duplicates rows and a failed publish leaves the previous content.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import CAMPAIGN_DELIVERY, CAPACITY, OUTPUTS, PROMOTION_SCORES, SNAPSHOTS

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")

WAREHOUSE_TABLES = (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY)


class WarehouseError(RuntimeError):
    pass


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


def registry_row(manifest: dict, manifest_uri: str) -> dict:
    tables = manifest["tables"]
    return {
        "snapshot_id": manifest["snapshot_id"],
        "score_date": dt.date.fromisoformat(manifest["score_date"]),
        "created_at": dt.datetime.fromisoformat(manifest["created_at"]),
        "code_version": manifest["code_version"],
        "run_fingerprint": manifest["run_fingerprint"],
        "promotion_scores_rows": tables["promotion_scores"]["rows"],
        "campaign_delivery_rows": tables["campaign_delivery"]["rows"],
        "capacity_rows": tables["capacity"]["rows"],
        "manifest_uri": manifest_uri,
    }


def open_warehouse(uri: str | None, output_root: str):
    """`None` → DuckDB at OUT/warehouse.duckdb (local output roots only);
    `duckdb:///path` or a `.duckdb` path → that file; `bq://PROJECT.DATASET` → BigQuery."""
    if uri and uri.startswith("bq://"):
        from jobs.warehouse.bigquery import BigQueryWarehouse

        return BigQueryWarehouse.from_uri(uri)
    if uri is None:
        if str(output_root).startswith("gs://"):
            raise WarehouseError("with a gs:// output, pass --warehouse bq://PROJECT.DATASET "
                                 "or --warehouse duckdb:///local/path.duckdb")
        path = os.path.join(output_root, "warehouse.duckdb")
    elif uri.startswith("duckdb://"):
        path = uri[len("duckdb://"):]
    elif uri.endswith(".duckdb"):
        path = uri
    else:
        raise WarehouseError(f"unknown warehouse {uri!r}: use bq://PROJECT.DATASET or a .duckdb path")
    return DuckDBWarehouse(path)


class DuckDBWarehouse:
    """The embedded warehouse: one DuckDB file, same tables and views as BigQuery."""

    def __init__(self, path: str):
        self.path = path
        self.uri = f"duckdb://{path}"

    LOCK_WAIT_S = 120.0  # how long to wait for another process's connection to the file to close

    def _connect(self):
        """A read-write connection. DuckDB lets one process at a time open the
        file (a writer excludes readers of other processes too), so while
        another process holds it (a second run, an analyst's session) wait for
        it, up to LOCK_WAIT_S, instead of failing the run after its pipeline."""
        import duckdb

        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        deadline = time.monotonic() + self.LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def _q(name: str) -> str:
        return f'"{check_identifier(name, "table name")}"'

    def ensure(self, con) -> None:
        for t in (*WAREHOUSE_TABLES, SNAPSHOTS):
            con.register("_empty", t.empty())
            con.execute(f"CREATE TABLE IF NOT EXISTS {self._q(t.name)} AS SELECT * FROM _empty")
            con.unregister("_empty")
        for name, body in latest_view_sql(self._q).items():
            con.execute(f"CREATE OR REPLACE VIEW {self._q(name)} AS {body}")

    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, all in one transaction."""
        con = self._connect()
        try:
            self.ensure(con)
            con.execute("BEGIN TRANSACTION")
            try:
                for t in WAREHOUSE_TABLES:
                    data = OUTPUTS[t.name].conform(tables[t.name])
                    con.register("_incoming", data)
                    con.execute(f"DELETE FROM {self._q(t.name)} WHERE score_date = ?", [score_date])
                    con.execute(f"INSERT INTO {self._q(t.name)} SELECT * FROM _incoming")
                    con.unregister("_incoming")
                reg = SNAPSHOTS.conform(pa.Table.from_pylist([registry], schema=SNAPSHOTS.arrow()))
                con.register("_reg", reg)
                con.execute(f"DELETE FROM {self._q('snapshots')} WHERE snapshot_id = ?",
                            [registry["snapshot_id"]])
                con.execute(f"INSERT INTO {self._q('snapshots')} SELECT * FROM _reg")
                con.unregister("_reg")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        con = self._connect()
        try:
            self.ensure(con)
            return con.execute(sql, params or []).to_arrow_table()
        finally:
            con.close()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
