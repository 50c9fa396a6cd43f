"""The embedded warehouse: one DuckDB file (default `OUT/warehouse.duckdb`),
with the same tables, registry and views as BigQuery.

Every DuckDB failure comes out as a WarehouseError naming the file: a file
that is not a database (say so, and how to rebuild it), a full disk (the real
"no space left", never hidden behind a failed ROLLBACK), a lock held too long.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import logging
import os
import re
import time

import duckdb
import pyarrow as pa

from jobs.warehouse.base import (WAREHOUSE_TABLES, RegistryRow, WarehouseError, check_identifier, check_range_rows,
                                 parse_registry, partition_date, tables_to_publish, view_sql)
from pipelines import faults, storage
from pipelines.errors import resource_problem
from schemas import OUTPUTS, SNAPSHOTS

log = logging.getLogger(__name__)

REBUILD_HINT = "`oasis warehouse rebuild --output OUT` rebuilds it from the published snapshots"
_HOLDER = re.compile(r"lock is held in (.*?) \(PID (\d+)\)", re.IGNORECASE)


def _is_lock_error(e: Exception) -> bool:
    return isinstance(e, duckdb.IOException) and "lock" in str(e).lower()


def lock_holder_text(e: Exception) -> str:
    """Who holds a DuckDB file, from DuckDB's own lock error (it names the
    program and PID), with the PID's command line when this machine can see it."""
    m = _HOLDER.search(str(e))
    if not m:
        return "another process"
    pid = m.group(2)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:160]
    except OSError:
        cmd = m.group(1)
    return f"pid {pid} ({cmd})"


def lock_holder(message: str) -> str:
    """Who holds a DuckDB file, from DuckDB's lock error ("Conflicting lock is
    held in /usr/bin/python3 (PID 1234)")."""
    m = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"PID {m.group(2)} ({m.group(1)})" if m else "another process"


class DuckDBWarehouse:
    """The warehouse in one DuckDB file."""

    def __init__(self, path: str):
        self.path = path
        self.uri = f"duckdb://{path}"

    LOCK_WAIT_S = 120.0  # how long to wait for another process's connection to the file to close

    def _failure(self, doing: str, e: Exception) -> WarehouseError:
        words = resource_problem(e)
        if words:
            return WarehouseError(f"{doing} {self.path} failed: {words} ({e})")
        if "not a valid duckdb database" in str(e).lower() or isinstance(e, duckdb.SerializationException):
            return WarehouseError(f"{self.path} is not a DuckDB database ({e}); {REBUILD_HINT}")
        return WarehouseError(f"{doing} {self.path} failed: {type(e).__name__}: {e}")

    def _connect(self, on_wait=None):
        """A read-write connection. DuckDB lets one process at a time open the
        file (a writer excludes readers of other processes too), so while
        another process holds it (a second run, an analyst's session) wait for
        it, up to LOCK_WAIT_S, instead of failing the run after its pipeline.
        `on_wait(who)` is told once who holds it (DuckDB names the process)."""
        with storage.translated(self.path):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        deadline = time.monotonic() + self.LOCK_WAIT_S
        delay = 0.05
        told = False
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise self._failure("opening", e) from e
                if time.monotonic() + delay > deadline:
                    raise WarehouseError(f"{self.path} stayed open in {lock_holder_text(e)} for more than "
                                         f"{self.LOCK_WAIT_S:.0f} s; close that session and rerun") from e
                if not told and on_wait is not None:
                    told = True
                    on_wait(lock_holder(str(e)))
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def hold(self, on_wait=None):
        """Keep the file open (waiting for other processes as `_connect` does)
        for the block: a publish takes it before its manifest, so the wait is
        measured and the load right after does not wait again (connections of
        one process share the open database). Yields the seconds waited."""
        started = time.monotonic()
        con = self._connect(on_wait)
        try:
            yield time.monotonic() - started
        finally:
            con.close()

    @staticmethod
    def _q(name: str) -> str:
        return f'"{check_identifier(name, "table name")}"'

    def ensure(self, con) -> None:
        for t in (*WAREHOUSE_TABLES, SNAPSHOTS):
            con.register("_empty", t.empty())
            con.execute(f"CREATE TABLE IF NOT EXISTS {self._q(t.name)} AS SELECT * FROM _empty")
            self._add_new_columns(con, t)
            con.unregister("_empty")
        for name, body in view_sql(self._q).items():
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

    def _transaction(self, doing: str, work) -> None:
        """Run `work(con)` in one transaction. A failure rolls back; a failed
        ROLLBACK (after a full disk, say) is logged, never raised in place of
        the failure itself."""
        con = self._connect()
        try:
            try:
                self.ensure(con)
                con.execute("BEGIN TRANSACTION")
                try:
                    work(con)
                    con.execute("COMMIT")
                except BaseException:
                    try:
                        con.execute("ROLLBACK")
                    except Exception as rollback_error:  # noqa: BLE001 - the first failure is what matters
                        log.debug("ROLLBACK after a failed %s also failed: %s", doing, rollback_error)
                    raise
            except duckdb.Error as e:
                raise self._failure(doing, e) from e
        finally:
            try:
                con.close()
            except Exception:  # noqa: BLE001 - closing after a failure must not hide it
                log.debug("closing %s failed", self.path, exc_info=True)

    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict, *,
                current: bool = False) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, all in one transaction (and make it current if told)."""
        reg = SNAPSHOTS.conform(pa.Table.from_pylist([registry], schema=SNAPSHOTS.arrow()))
        publishing = tables_to_publish(tables)
        data = {t.name: OUTPUTS[t.name].conform(tables[t.name]) for t in publishing}

        def work(con):
            for t in publishing:
                con.register("_incoming", data[t.name])
                con.execute(f"DELETE FROM {self._q(t.name)} WHERE score_date = ?", [partition_date(t, score_date)])
                con.execute(f"INSERT INTO {self._q(t.name)} SELECT * FROM _incoming")
                con.unregister("_incoming")
                faults.checkpoint("in_warehouse_transaction")  # crash tests: a kill before COMMIT
            con.register("_reg", reg)
            con.execute(f"DELETE FROM {self._q('snapshots')} WHERE snapshot_id = ?", [registry["snapshot_id"]])
            con.execute(f"INSERT INTO {self._q('snapshots')} BY NAME SELECT * FROM _reg")
            con.unregister("_reg")
            if current:
                self._make_current(con, registry["snapshot_id"])

        self._transaction(f"publishing snapshot {registry.get('snapshot_id')} to", work)

    def _make_current(self, con, snapshot_id: str | None) -> None:
        con.execute(f"UPDATE {self._q('snapshots')} SET is_current = (snapshot_id IS NOT DISTINCT FROM ?)",
                    [snapshot_id])

    def set_current(self, snapshot_id: str | None, pulled: list[str]) -> None:
        now = dt.datetime.now(dt.timezone.utc)

        def work(con):
            for sid in pulled:
                con.execute(f"UPDATE {self._q('snapshots')} SET pulled_at = COALESCE(pulled_at, ?) "
                            "WHERE snapshot_id = ?", [now, sid])
                for t in WAREHOUSE_TABLES:
                    con.execute(f"DELETE FROM {self._q(t.name)} WHERE snapshot_id = ?", [sid])
            self._make_current(con, snapshot_id)

        self._transaction("moving the current snapshot of", work)

    def registry(self) -> tuple[list[RegistryRow], list[str]]:
        """The registry, read without waiting: a read-only connection shares the
        file with analysts' sessions; a writer holding it is an error at once
        (the caller goes on without the registry; a publish waits instead)."""
        if not os.path.exists(self.path):
            return [], []
        try:
            con = duckdb.connect(self.path, read_only=True)
        except duckdb.Error as e:
            if _is_lock_error(e):
                raise WarehouseError(f"{self.path} is held by {lock_holder_text(e)}") from e
            raise self._failure("opening", e) from e
        try:
            have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if "snapshots" not in have:
                return [], []
            rows = con.execute(f"SELECT * FROM {self._q('snapshots')}").to_arrow_table().to_pylist()
        except duckdb.Error as e:
            raise self._failure("reading the registry of", e) from e
        finally:
            con.close()
        return parse_registry(rows)

    def check(self) -> list[str]:
        if not os.path.exists(self.path):
            return []
        try:
            duckdb.connect(self.path).close()
        except duckdb.Error as e:
            if _is_lock_error(e):
                return [f"the warehouse {self.path} is open in {lock_holder_text(e)}; the publish will wait up "
                        f"to {self.LOCK_WAIT_S:.0f} s for it to close, then fail"]
            raise self._failure("opening", e) from e
        return []

    def rebuild_target(self):
        """A fresh file beside this one; committing moves the old file (and its
        write-ahead log) aside and the fresh one into place. Half-built files
        of a rebuild that was killed are removed first (rebuilds hold the
        publish lock, so no other rebuild is writing them)."""
        for stale in glob.glob(glob.escape(self.path) + ".rebuild-*"):
            with storage.translated(stale):
                os.unlink(stale)
        fresh = DuckDBWarehouse(f"{self.path}.rebuild-{os.getpid()}-{int(time.time())}")

        def commit(_loaded_ids) -> str | None:
            aside = None
            if os.path.lexists(self.path):
                aside = storage.set_aside(self.path, "before-rebuild")
            if os.path.lexists(self.path + ".wal"):
                storage.set_aside(self.path + ".wal", "before-rebuild")
            with storage.translated(self.path):
                os.replace(fresh.path, self.path)
            return aside

        return fresh, commit

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
            try:
                self.ensure(con)
                return con.execute(sql, params or []).to_arrow_table()
            except duckdb.Error as e:
                raise self._failure("querying", e) from e
        finally:
            con.close()
