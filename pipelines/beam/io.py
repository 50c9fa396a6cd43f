"""Beam I/O of the daily job: input files read as contract-conformed Arrow
batches, stored aggregate files read whole, and (part name, table) elements
written as one Parquet file per part. Every file goes through
`pipelines.storage`, so local folders and gs:// behave the same.

  ReadInputBatches      file URIs -> ((file, batch, uri) order key, conformed batch)
  ReadStoredAggregates  aggregate files -> tables
  ReadPulledBack        the previous snapshot's promotion_scores files -> its pulled-back rows
  ReadPublishedColumns  a published snapshot table's files -> tables of some of its columns
  WriteParquetParts     (part name, table) -> FOLDER/<part name>.parquet, yields (uri, rows)
"""
from __future__ import annotations

from typing import Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contract, faults, storage
from pipelines.beam.coders import ArrowTableCoder  # noqa: F401 - registers the coder of pa.Table
from pipelines.metrics import counter

# rows the listener guardrail held back in the previous snapshot (its hysteresis)
PULLED_BACK_SCHEMA = pa.schema([("track_id", pa.string()), ("market", pa.string()), ("surface", pa.string())])


# ------------------------------------------------------------------ read ---
class ReadParquetBatchesFn(beam.DoFn):
    """(file index, URI) -> ((file index, batch index), conformed Arrow table)."""

    def __init__(self, contract_table, batch_rows: int, metric: str):
        self.contract_table = contract_table
        self.batch_rows = batch_rows
        self.metric = metric

    def setup(self):
        self.rows = counter(f"rows_read/{self.metric}")

    def process(self, element):
        file_index, uri = element
        try:
            f = pq.ParquetFile(storage.open_input(uri))
        except Exception as e:
            raise contract.InputFileError(f"{uri}: cannot be read as Parquet: {e}") from e
        columns = [n for n in self.contract_table.names if n in f.schema_arrow.names]
        for i, batch in enumerate(f.iter_batches(batch_size=self.batch_rows, columns=columns)):
            table = contract.conform_batch(pa.Table.from_batches([batch]), self.contract_table, uri)
            self.rows.inc(table.num_rows)
            yield (file_index, i, uri), table


class ReadInputBatches(beam.PTransform):
    def __init__(self, files: list[str], contract_table, metric: str, batch_rows: int):
        super().__init__()
        self.files, self.contract_table, self.metric, self.batch_rows = files, contract_table, metric, batch_rows

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(list(enumerate(self.files)), reshuffle=False)  # spread next
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadBatches" >> beam.ParDo(ReadParquetBatchesFn(self.contract_table, self.batch_rows,
                                                                     self.metric))
                .with_output_types(Tuple[Tuple[int, int, str], pa.Table]))


# ---------------------------------------------------------------- stored ---
def _read_whole(uri: str, contract_table) -> pa.Table:
    """A stored file, conformed; one written before a nullable column was added
    to its table reads that column as nulls (format-1 aggregates)."""
    table = pq.read_table(storage.open_input(uri))
    try:
        return contract_table.conform_stored(table)
    except (ValueError, pa.ArrowException):
        return contract.conform_batch(table, contract_table, uri)   # raises, naming the file


def read_pulled_back(uri: str) -> pa.Table:
    """The rows of a published promotion_scores file the listener guardrail
    held back: `pulled_back`, or for a snapshot written before that column the
    reason listeners_dislike. (track_id, market, surface)."""
    f = pq.ParquetFile(storage.open_input(uri))
    has_state = "pulled_back" in f.schema_arrow.names
    t = f.read(columns=["track_id", "market", "surface", "pulled_back" if has_state else "reason"])
    held = (pc.fill_null(t.column("pulled_back"), False) if has_state
            else pc.fill_null(pc.equal(t.column("reason"), "listeners_dislike"), False))
    return t.filter(held).select(["track_id", "market", "surface"]).cast(PULLED_BACK_SCHEMA)


class ReadStoredAggregates(beam.PTransform):
    def __init__(self, files: list[str], contract_table):
        super().__init__()
        self.files, self.contract_table = files, contract_table

    def expand(self, pbegin):
        return (pbegin
                # small files, a few per window day: one bundle reads them, without a shuffle stage
                | "ListFiles" >> beam.Create(self.files, reshuffle=False)
                | "ReadFiles" >> beam.Map(_read_whole, self.contract_table).with_output_types(pa.Table))


class ReadPulledBack(beam.PTransform):
    """The previous snapshot's promotion_scores files -> tables of its pulled-back rows."""

    def __init__(self, files: list[str]):
        super().__init__()
        self.files = files

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self.files, reshuffle=False)
                | "ReadFiles" >> beam.Map(read_pulled_back).with_output_types(pa.Table))


# ------------------------------------------------------------- published ---
def published_schema(contract_table, columns) -> pa.Schema:
    """The Arrow schema of `columns` of a published table, every field nullable
    (a column an older snapshot lacks reads as nulls)."""
    return pa.schema([pa.field(c, contract_table.arrow().field(c).type) for c in columns])


def read_published_columns(uri: str, contract_table, columns) -> pa.Table:
    schema = published_schema(contract_table, columns)
    t = pq.read_table(storage.open_input(uri))
    return pa.Table.from_arrays(
        [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
         for f in schema], schema=schema)


class ReadPublishedColumns(beam.PTransform):
    """`columns` of a published table (the previous snapshot's plan or
    capacity), read whole: a few small files."""

    def __init__(self, files: list[str], contract_table, columns):
        super().__init__()
        self.files, self.contract_table, self.columns = files, contract_table, tuple(columns)

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self.files, reshuffle=False)
                | "ReadFiles" >> beam.Map(read_published_columns, self.contract_table, self.columns)
                .with_output_types(pa.Table))


# ----------------------------------------------------------------- write ---
class WriteParquetPartFn(beam.DoFn):
    def __init__(self, folder: str, private: bool = False, fault_stage: str | None = None):
        self.folder, self.private, self.fault_stage = folder, private, fault_stage

    def process(self, element):
        name, table = element
        uri = storage.join(self.folder, f"{name}.parquet")
        with storage.open_output(uri, private=self.private) as f:
            pq.write_table(table, f, compression="zstd")
        faults.checkpoint(self.fault_stage)  # crash tests: a kill with some files written, not all
        yield uri, table.num_rows


class WriteParquetParts(beam.PTransform):
    """(part name, table) -> FOLDER/<part name>.parquet; yields (uri, rows).
    private: owner-only files and folder (rows with user ids)."""

    def __init__(self, folder: str, private: bool = False, fault_stage: str | None = None):
        super().__init__()
        self.folder, self.private, self.fault_stage = folder, private, fault_stage

    def expand(self, parts):
        return parts | "WriteFiles" >> beam.ParDo(WriteParquetPartFn(self.folder, self.private, self.fault_stage))
