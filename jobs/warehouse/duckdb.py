"""The embedded warehouse: one DuckDB file (default `OUT/warehouse.duckdb`),
with the same tables, registry and views as BigQuery."""
from __future__ import annotations

import datetime as dt
import os
import time

import duckdb
import pyarrow as pa

from jobs.warehouse.base import WAREHOUSE_TABLES, WarehouseError, check_identifier, check_range_rows, latest_view_sql
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
            self._add_new_columns(con, t)
            con.unregister("_empty")
        for name, body in latest_view_sql(self._q).items():
            con.execute(f"CREATE OR REPLACE VIEW {self._q(name)} AS {body}")

    def _add_new_columns(self, con, t) -> None:
        """A table created by an older version gains the nullable columns added
        to its contract since (at its end, as the contract adds them); older
        rows hold nulls there. `_empty` is the contract's empty table."""
        have = [r[0] for r in con.execute(f"DESCRIBE {self._q(t.name)}").fetchall()]
        if have == t.names:
            return
        missing = t.names[len(have):]
        if have != t.names[:len(have)] or not all(t.field(c).nullable for c in missing):
            raise WarehouseError(f"{self.path}: table {t.name} has columns {have}, which the contract's "
                                 f"{t.names} cannot extend")
        types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM _empty").fetchall()}
        for c in missing:
            con.execute(f'ALTER TABLE {self._q(t.name)} ADD COLUMN "{check_identifier(c, "column name")}" {types[c]}')

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

    def replace_range(self, table, first: dt.date, last: dt.date, data: pa.Table) -> None:
        data = check_range_rows(table, first, last, data)
        column = check_identifier(table.key[0], "column name")
        con = self._connect()
        try:
            con.register("_empty", table.empty())
            con.execute(f"CREATE TABLE IF NOT EXISTS {self._q(table.name)} AS SELECT * FROM _empty")
            con.unregister("_empty")
            con.execute("BEGIN TRANSACTION")
            try:
                con.register("_incoming", data)
                con.execute(f'DELETE FROM {self._q(table.name)} WHERE "{column}" BETWEEN ? AND ?', [first, last])
                con.execute(f"INSERT INTO {self._q(table.name)} SELECT * FROM _incoming")
                con.unregister("_incoming")
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
