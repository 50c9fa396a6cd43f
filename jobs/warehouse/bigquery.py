"""The BigQuery warehouse (`--warehouse bq://PROJECT.DATASET`): same tables, views
and interface as `jobs.warehouse.duckdb.DuckDBWarehouse`.

* Explicit schemas from `schemas` (never autodetect). The three output tables
  are partitioned by score_date (DAY) and clustered by market, surface; the
  `snapshots` registry is partitioned by score_date. `*_latest` views as in
  DuckDB.
* Publishing a snapshot loads each table's Parquet bytes into a fresh staging
  table of this run, then moves them in with ONE multi-statement transaction
  (delete the score date, insert; registry row likewise; commit). Literal
  values only (script parameters are not portable to the emulator). A failed
  staging load or transaction leaves the real tables as they were, raises
  WarehouseError, and the staging tables are dropped either way.
* `BIGQUERY_EMULATOR_HOST` (a URL) selects the emulator with anonymous
  credentials; otherwise Application Default Credentials apply.
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

from jobs.warehouse.base import (PROJECT_ID, WAREHOUSE_TABLES, WarehouseError, check_identifier, latest_view_sql,
                                 parquet_bytes, partition_date, tables_to_publish)
from schemas import OUTPUTS, SNAPSHOTS

log = logging.getLogger(__name__)

CLUSTERING = ["market", "surface"]
PARTITION_FIELD = "score_date"
STAGING_TTL = dt.timedelta(days=1)  # a crashed run's staging tables expire by themselves
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
            got = self.client.create_table(table, exists_ok=True)
            self._check_layout(t, table, got)
        for name, body in latest_view_sql(self._q).items():
            self.client.query(f"CREATE OR REPLACE VIEW {self._q(name)} AS {body}").result()
        self._ensured = True

    def _check_layout(self, t, want, got) -> None:
        problems = []
        if _schema_key(got.schema) != _schema_key(want.schema):
            problems.append(f"schema {_schema_key(got.schema)} != contract {_schema_key(want.schema)}")
        part = got.time_partitioning
        if part is None or part.field != PARTITION_FIELD or part.type_ != "DAY":
            problems.append(f"partitioning {part} != DAY on {PARTITION_FIELD}")
        if (got.clustering_fields or None) != (want.clustering_fields or None):
            problems.append(f"clustering {got.clustering_fields} != {want.clustering_fields}")
        if problems:
            raise WarehouseError(f"existing table {self._ref(t.name)} does not match the contract: "
                                 + "; ".join(problems))

    # ----------------------------------------------------------- publish ---
    def publish(self, score_date: dt.date, tables: dict[str, pa.Table], registry: dict) -> None:
        """Replace `score_date`'s rows of every table with `tables` and add the
        registry row, in one transaction."""
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
            self._move_in(score_date, sources, publishing)
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

    def _move_in(self, score_date: dt.date, sources: dict[str, str], publishing) -> None:
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
            "COMMIT TRANSACTION;",
        ]
        try:
            self.client.query("\n".join(statements)).result()
        except Exception as e:
            raise WarehouseError(f"the publish transaction for {score_date} failed and was rolled "
                                 f"back; the warehouse is unchanged: {e}") from e

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
