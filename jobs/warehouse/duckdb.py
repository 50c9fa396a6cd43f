"""The embedded warehouse: one DuckDB file (default `OUT/warehouse.duckdb`),
with the same tables, registry and views as BigQuery."""
from __future__ import annotations

import datetime as dt
import os
import time

import duckdb
import pyarrow as pa

from jobs.warehouse.base import WAREHOUSE_TABLES, check_identifier, latest_view_sql, partition_date, tables_to_publish
from schemas import OUTPUTS, SNAPSHOTS


class DuckDBWarehouse:
    """The warehouse in one DuckDB file."""

    def __init__(self, path: str):
        self.path = path
        self.uri = f"duckdb://{path}"

    LOCK_WAIT_S = 120.0  # how long to wait for another process's connection to the file to close

    def _connect(self):
        """A read-write connection. DuckDB lets one process at a time open the
        file (a writer excludes readers of other processes too), so while
        another process holds it (a second run, an analyst's session) wait for
        it, up to LOCK_WAIT_S, instead of failing the run after its pipeline."""
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
                for t in tables_to_publish(tables):
                    data = OUTPUTS[t.name].conform(tables[t.name])
                    con.register("_incoming", data)
                    con.execute(f"DELETE FROM {self._q(t.name)} WHERE score_date = ?",
                                [partition_date(t, score_date)])
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
