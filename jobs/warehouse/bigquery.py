"""The BigQuery warehouse (`--warehouse bq://PROJECT.DATASET`): same tables, views
and interface as `jobs.warehouse.duckdb.DuckDBWarehouse`.

* Explicit schemas from `schemas` (never autodetect). The three output tables
  are partitioned by score_date (DAY) and clustered by market, surface; the
  `snapshots` registry is partitioned by score_date; `forecast_accuracy`
  (`oasis backtest`) by origin_date. `*_latest` views as in DuckDB. A table an
  older version created gains the NULLABLE columns added to its contract
  since; any other difference from the contract is an error.
* Publishing a snapshot loads each table's Parquet bytes into a fresh staging
  table of this run, then moves them in with ONE multi-statement transaction
  (delete the score date, insert; registry row likewise; commit). Literal
  values only (script parameters are not portable to the emulator). A failed
  staging load or transaction leaves the real tables as they were, raises
  WarehouseError, and the staging tables are dropped either way.
* The registry's `is_current` moves with a publish that moves LATEST (in its
  transaction) or on its own (`set_current`: rollback, repair); a pulled
  snapshot's rows are deleted in that same transaction. A registry made by an
  older OASIS gains the new nullable columns in place (a schema update).
* `BIGQUERY_EMULATOR_HOST` (a URL) selects the emulator with anonymous
  credentials; otherwise Application Default Credentials apply, and `check`
  (before a run) fails at once when there are none.
"""
from __future__ import annotations

import datetime as dt
import decimal
import io
import logging
import os
import re
import uuid

import pyarrow as pa
import pyarrow.compute as pc

from jobs.warehouse.base import (PROJECT_ID, WAREHOUSE_TABLES, RegistryRow, WarehouseError, check_identifier,
                                 check_range_rows, literal_id, parquet_bytes, parse_registry, partition_date,
                                 tables_to_publish, view_sql)
from schemas import OUTPUTS, SNAPSHOTS

log = logging.getLogger(__name__)

CLUSTERING = ["market", "surface"]
PARTITION_FIELD = "score_date"
STAGING_TTL = dt.timedelta(days=1)  # a crashed run's staging tables expire by themselves
CHECK_TIMEOUT_S = 30.0  # how long the check before a run waits for BigQuery to answer
# The API may report a legacy or a standard SQL name for the same type.
_TYPE_ALIASES = {"FLOAT64": "FLOAT", "INT64": "INTEGER", "BOOL": "BOOLEAN"}


def check_project(project: str) -> str:
    if not isinstance(project, str) or not PROJECT_ID.match(project):
        raise WarehouseError(f"invalid project id {project!r}: 6-30 lower-case letters, digits "
                             "and hyphens, starting with a letter")
    return project


def parse_uri(uri: str) -> tuple[str, str]:
    """`bq://PROJECT.DATASET` → (project, dataset), both validated."""
    if not isinstance(uri, str) or not uri.startswith("bq://"):
        raise WarehouseError(f"not a BigQuery warehouse URI: {uri!r} (use bq://PROJECT.DATASET)")
    project, sep, dataset = uri[len("bq://"):].partition(".")
    if not sep:
        raise WarehouseError(f"{uri!r}: use bq://PROJECT.DATASET")
    return check_project(project), check_identifier(dataset, "dataset name")


def _bq_schema(table) -> list:
    from google.cloud import bigquery

    return [bigquery.SchemaField.from_api_repr(f) for f in table.bigquery()]


def _schema_key(fields) -> list[tuple[str, str, str]]:
    return [(f.name, _TYPE_ALIASES.get(f.field_type, f.field_type), f.mode or "NULLABLE")
            for f in fields]


def _param_type(value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, (bytes, bytearray)):
        return "BYTES"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    return "STRING"  # str and None


def _query_parameter(name, value):
    from google.cloud import bigquery

    if isinstance(value, (bigquery.ScalarQueryParameter, bigquery.ArrayQueryParameter,
                          bigquery.StructQueryParameter)):
        return value
    if isinstance(value, (list, tuple)):
        first = next((v for v in value if v is not None), None)
        return bigquery.ArrayQueryParameter(name, _param_type(first), list(value))
    return bigquery.ScalarQueryParameter(name, _param_type(value), value)


def make_client(project: str, location: str | None = None):
    """A BigQuery client: the emulator at BIGQUERY_EMULATOR_HOST (anonymous) if
    set, else Application Default Credentials."""
    from google.cloud import bigquery

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        if "://" not in host:
            host = "http://" + host
        return bigquery.Client(project=project, location=location,
                               credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=host.rstrip("/")))
    return bigquery.Client(project=project, location=location)


class BigQueryWarehouse:
    """The warehouse in one BigQuery dataset."""

    def __init__(self, project: str, dataset: str, location: str | None = None, client=None):
        self.project = check_project(project)
        self.dataset = check_identifier(dataset, "dataset name")
        self.location = location
        self.uri = f"bq://{self.project}.{self.dataset}"
        self._client = client
        self._ensured = False

    @classmethod
    def from_uri(cls, uri: str, **kwargs) -> "BigQueryWarehouse":
        project, dataset = parse_uri(uri)
        return cls(project, dataset, **kwargs)

    def __repr__(self) -> str:
        return f"BigQueryWarehouse({self.uri!r})"

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.project, self.location)
        return self._client

    def _ref(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{check_identifier(name, 'table name')}"

    def _q(self, name: str) -> str:
        return f"`{self._ref(name)}`"

    # ------------------------------------------------------------ tables ---
    def ensure(self) -> None:
        """Create the dataset, tables and views when missing (idempotent; once per
        instance). An existing table whose schema or layout differs from the
        contract is an error, not silently used."""
        if self._ensured:
            return
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        if self.location:
            dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        for t in (*WAREHOUSE_TABLES, SNAPSHOTS):
            table = bigquery.Table(self._ref(t.name), schema=_bq_schema(t))
            table.description = t.doc
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=PARTITION_FIELD)
            if t is not SNAPSHOTS:
                table.clustering_fields = CLUSTERING
            got = self._extended(t, self.client.create_table(table, exists_ok=True), table)
            self._check_layout(t, table, got)
        for name, body in view_sql(self._q).items():
            self.client.query(f"CREATE OR REPLACE VIEW {self._q(name)} AS {body}").result()
        self._ensured = True

    def _extended(self, t, got, want):
        """A table created by an older version gains the NULLABLE columns its
        contract added since, at its end (older rows hold nulls there); any
        other difference is left for `_check_layout` to refuse."""
        have, full = _schema_key(got.schema), _schema_key(want.schema)
        if len(have) < len(full) and have == full[:len(have)] and all(m == "NULLABLE" for _, _, m in
                                                                      full[len(have):]):
            ddl = {"FLOAT": "FLOAT64", "INTEGER": "INT64", "BOOLEAN": "BOOL"}
            # DDL (one column a statement): BigQuery's own way, and the only one that changes the emulator's
            # stored table; the emulator then still reports the old schema, which a patch fixes (on
            # BigQuery the schema is already the new one and the patch changes nothing)
            for n, k, _ in full[len(have):]:
                self.client.query(f"ALTER TABLE {self._q(t.name)} ADD COLUMN "
                                  f"`{check_identifier(n, 'column name')}` {ddl.get(k, k)}").result()
            got = self.client.get_table(self._ref(t.name))
            if _schema_key(got.schema) != full:
                got.schema = list(got.schema) + list(want.schema)[len(have):]
                got = self.client.update_table(got, ["schema"])
            log.info("%s: added columns %s", self._ref(t.name), [n for n, _, _ in full[len(have):]])
        return got

    def _check_layout(self, t, want, got, partition_field: str = PARTITION_FIELD) -> None:
        problems = []
        if _schema_key(got.schema) != _schema_key(want.schema):
            problems.append(f"schema {_schema_key(got.schema)} != contract {_schema_key(want.schema)}")
        part = got.time_partitioning
        if part is None or part.field != partition_field or part.type_ != "DAY":
            problems.append(f"partitioning {part} != DAY on {partition_field}")
        if (got.clustering_fields or None) != (want.clustering_fields or None):
            problems.append(f"clustering {got.clustering_fields} != {want.clustering_fields}")
        if problems:
            raise WarehouseError(f"existing table {self._ref(t.name)} does not match the contract: "
                                 + "; ".join(problems))

    # ----------------------------------------------------------- publish ---
    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict, *,
                current: bool = False) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, in one transaction (and make it current if told)."""
        if not isinstance(score_date, dt.date) or isinstance(score_date, dt.datetime):
            raise WarehouseError(f"score_date must be a datetime.date, got {score_date!r}")
        publishing = tables_to_publish(tables)
        missing = [t.name for t in publishing if t.name not in tables]
        if missing:
            raise WarehouseError(f"publish needs the tables {missing}")
        snapshot_id = str(registry.get("snapshot_id", ""))
        if not snapshot_id:
            raise WarehouseError("the registry row has no snapshot_id")
        if registry.get("score_date") != score_date:
            raise WarehouseError(f"registry score_date {registry.get('score_date')!r} != {score_date}")
        self.ensure()

        run = re.sub(r"[^A-Za-z0-9_]", "_", snapshot_id)[:200] + "_" + uuid.uuid4().hex[:8]
        staged: list[str] = []
        try:
            sources = {}
            for t in (*publishing, SNAPSHOTS):
                data = self._conform(t, tables[t.name] if t is not SNAPSHOTS else registry, score_date)
                staging = check_identifier(f"_staging_{t.name}_{run}", "staging table name")
                staged.append(staging)
                self._stage(t, data, staging)
                sources[t.name] = staging
            self._move_in(score_date, sources, publishing, current)
        except WarehouseError:
            raise
        except Exception as e:
            raise WarehouseError(f"publishing snapshot {snapshot_id} to {self.uri} failed; the "
                                 f"warehouse is unchanged: {type(e).__name__}: {e}") from e
        finally:
            for name in staged:
                try:
                    self.client.delete_table(self._ref(name), not_found_ok=True)
                except Exception as e:  # never hide the publish's own outcome
                    log.warning("could not drop staging table %s: %s", self._ref(name), e)

    @staticmethod
    def _conform(t, data, score_date: dt.date) -> pa.Table:
        try:
            if t is SNAPSHOTS:
                table = SNAPSHOTS.conform(pa.Table.from_pylist([data], schema=SNAPSHOTS.arrow()))
            else:
                table = OUTPUTS[t.name].conform(data)
        except (ValueError, TypeError, KeyError, pa.ArrowException) as e:
            raise WarehouseError(f"{t.name} does not match its schema; the warehouse is "
                                 f"unchanged: {e}") from e
        dates, day = table.column(PARTITION_FIELD), partition_date(t, score_date)
        if len(table) and not pc.all(pc.equal(dates, pa.scalar(day, pa.date32()))).as_py():
            others = sorted({d for d in dates.to_pylist() if d != day})
            raise WarehouseError(f"{t.name} has rows for score dates {others[:5]} other than "
                                 f"{day}; the warehouse is unchanged")
        return table

    def _stage(self, t, data: pa.Table, staging: str) -> None:
        from google.cloud import bigquery

        schema = _bq_schema(t)
        table = bigquery.Table(self._ref(staging), schema=schema)
        table.expires = dt.datetime.now(dt.timezone.utc) + STAGING_TTL
        self.client.create_table(table)  # fresh: fails if the name is taken
        parquet_options = bigquery.ParquetOptions()
        parquet_options.enable_list_inference = True
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET, schema=schema, autodetect=False,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            parquet_options=parquet_options)
        job = self.client.load_table_from_file(io.BytesIO(parquet_bytes(data)), self._ref(staging),
                                               job_config=config, rewind=True)
        try:
            job.result()
        except Exception as e:
            raise WarehouseError(f"loading {t.name} into staging table {self._ref(staging)} failed; "
                                 f"the warehouse is unchanged: {e}") from e
        if job.output_rows is not None and job.output_rows != len(data):
            raise WarehouseError(f"staging load of {t.name} wrote {job.output_rows} rows, "
                                 f"expected {len(data)}; the warehouse is unchanged")

    def _move_in(self, score_date: dt.date, sources: dict[str, str], publishing, current: bool = False) -> None:
        statements = ["BEGIN TRANSACTION;"]
        for t in publishing:
            day = f"DATE '{partition_date(t, score_date).isoformat()}'"  # isoformat: digits and hyphens only
            cols = ", ".join(f"`{check_identifier(c, 'column name')}`" for c in t.names)
            statements += [
                f"DELETE FROM {self._q(t.name)} WHERE score_date = {day};",
                f"INSERT INTO {self._q(t.name)} ({cols}) SELECT {cols} FROM {self._q(sources[t.name])};",
            ]
        cols = ", ".join(f"`{check_identifier(c, 'column name')}`" for c in SNAPSHOTS.names)
        reg, staging = self._q(SNAPSHOTS.name), self._q(sources[SNAPSHOTS.name])
        statements += [
            f"DELETE FROM {reg} WHERE snapshot_id IN (SELECT snapshot_id FROM {staging});",
            f"INSERT INTO {reg} ({cols}) SELECT {cols} FROM {staging};",
        ]
        if current:
            statements.append(f"UPDATE {reg} SET is_current = (snapshot_id IN (SELECT snapshot_id FROM {staging})) "
                              "WHERE TRUE;")
        statements.append("COMMIT TRANSACTION;")
        try:
            self.client.query("\n".join(statements)).result()
        except Exception as e:
            raise WarehouseError(f"the publish transaction for {score_date} failed and was rolled "
                                 f"back; the warehouse is unchanged: {e}") from e

    # ------------------------------------------------------- current, registry ---
    def set_current(self, snapshot_id: str | None, pulled: list[str]) -> None:
        """One transaction: pulled snapshots marked and their rows deleted, the
        current flag moved (literal ids, checked first)."""
        self.ensure()
        reg = self._q(SNAPSHOTS.name)
        statements = ["BEGIN TRANSACTION;"]
        if pulled:
            ids = ", ".join(literal_id(s) for s in pulled)
            statements.append(f"UPDATE {reg} SET pulled_at = COALESCE(pulled_at, CURRENT_TIMESTAMP()) "
                              f"WHERE snapshot_id IN ({ids});")
            statements += [f"DELETE FROM {self._q(t.name)} WHERE snapshot_id IN ({ids});" for t in WAREHOUSE_TABLES]
        target = literal_id(snapshot_id) if snapshot_id else "NULL"
        statements += [f"UPDATE {reg} SET is_current = COALESCE(snapshot_id = {target}, FALSE) WHERE TRUE;",
                       "COMMIT TRANSACTION;"]
        try:
            self.client.query("\n".join(statements)).result()
        except Exception as e:
            raise WarehouseError(f"moving the current snapshot of {self.uri} to {snapshot_id} failed and was "
                                 f"rolled back: {e}") from e

    def registry(self) -> tuple[list[RegistryRow], list[str]]:
        try:
            rows = self.query(f"SELECT * FROM {self._q(SNAPSHOTS.name)}").to_pylist()
        except WarehouseError:
            raise
        except Exception as e:
            raise WarehouseError(f"reading the registry of {self.uri} failed: {e}") from e
        return parse_registry(rows)

    def check(self) -> list[str]:
        """Credentials (unless the emulator) and an answer from the dataset, or
        WarehouseError; a dataset not created yet is fine (a publish creates it)."""
        from google.api_core import exceptions as gexc

        if not os.environ.get("BIGQUERY_EMULATOR_HOST"):
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                google.auth.default()
            except DefaultCredentialsError as e:
                raise WarehouseError(f"no Google credentials for {self.uri}: {str(e).splitlines()[0]} "
                                     "(on a workstation: `gcloud auth application-default login`)") from None
        from google.cloud import bigquery

        try:
            self.client.get_dataset(f"{self.project}.{self.dataset}",
                                    retry=bigquery.DEFAULT_RETRY.with_deadline(CHECK_TIMEOUT_S),
                                    timeout=CHECK_TIMEOUT_S)
        except gexc.NotFound:
            return [f"dataset {self.project}.{self.dataset} does not exist yet; the publish creates it"]
        except Exception as e:
            raise WarehouseError(f"cannot reach {self.uri}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        return []

    def rebuild_target(self):
        """This dataset; committing deletes rows and registry rows of any
        snapshot not reloaded."""
        def commit(loaded_ids) -> None:
            ids = ", ".join(literal_id(s) for s in loaded_ids) or "''"
            statements = ["BEGIN TRANSACTION;"]
            statements += [f"DELETE FROM {self._q(t.name)} WHERE snapshot_id NOT IN ({ids});"
                           for t in (*WAREHOUSE_TABLES, SNAPSHOTS)]
            statements.append("COMMIT TRANSACTION;")
            try:
                self.client.query("\n".join(statements)).result()
            except Exception as e:
                raise WarehouseError(f"pruning {self.uri} after the rebuild failed: {e}") from e
            return None

        return self, commit

    # ------------------------------------------------------------ ranges ---
    def replace_range(self, table, first: dt.date, last: dt.date, data: pa.Table) -> None:
        """Replace [first, last] of a table partitioned by its first key column
        (forecast_accuracy by origin_date): staged, then one transaction."""
        from google.cloud import bigquery

        data = check_range_rows(table, first, last, data)
        column = check_identifier(table.key[0], "column name")
        self.ensure()
        want = bigquery.Table(self._ref(table.name), schema=_bq_schema(table))
        want.description = table.doc
        want.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=column)
        want.clustering_fields = CLUSTERING
        got = self._extended(table, self.client.create_table(want, exists_ok=True), want)
        self._check_layout(table, want, got, column)
        staging = check_identifier(f"_staging_{table.name}_{uuid.uuid4().hex[:12]}", "staging table name")
        try:
            self._stage(table, data, staging)
            cols = ", ".join(f"`{check_identifier(c, 'column name')}`" for c in table.names)
            script = "\n".join([
                "BEGIN TRANSACTION;",
                f"DELETE FROM {self._q(table.name)} WHERE `{column}` BETWEEN DATE '{first.isoformat()}' "
                f"AND DATE '{last.isoformat()}';",
                f"INSERT INTO {self._q(table.name)} ({cols}) SELECT {cols} FROM {self._q(staging)};",
                "COMMIT TRANSACTION;"])
            try:
                self.client.query(script).result()
            except Exception as e:
                raise WarehouseError(f"replacing {table.name} {first}..{last} failed and was rolled back; the "
                                     f"warehouse is unchanged: {e}") from e
        finally:
            try:
                self.client.delete_table(self._ref(staging), not_found_ok=True)
            except Exception as e:  # never hide the load's own outcome
                log.warning("could not drop staging table %s: %s", self._ref(staging), e)

    # ------------------------------------------------------------- query ---
    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """Run `sql` (standard SQL; `?` for positional params, `@name` for named
        ones) and return the result as Arrow."""
        from google.cloud import bigquery

        self.ensure()
        config = bigquery.QueryJobConfig(default_dataset=f"{self.project}.{self.dataset}")
        if isinstance(params, dict):
            config.query_parameters = [_query_parameter(k, v) for k, v in params.items()]
        elif params:
            config.query_parameters = [_query_parameter(None, v) for v in params]
        return self.client.query(sql, job_config=config).result().to_arrow(
            create_bqstorage_client=False)
