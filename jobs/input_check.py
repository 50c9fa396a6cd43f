"""Check one day's input partitions against the contract without running the
job (`oasis validate`; `jobs.cli.validate` prints the report).

For the enrollments, engagement and (optional) exposures partitions of D: every file's schema
(`jobs.run.plan.check_file_schema`: the footer is read and compared with the contract),
then every row against the contract (`pipelines.contract`, the same checks the
run applies), reading the files in Arrow record batches. The verdict is what a
run of that logs date would do with them (`Report.verdict`):

  valid    every file reads and every row keeps the contract (exit 0);
  proceed  a run would go on and dead-letter the breaking rows, whose share
           stays within `max_bad_row_share` (exit 0);
  fail     a run would fail: a partition missing or holding no rows (a day
           without plays is a missing day), a file unreadable or with the
           wrong schema, or a share of breaking rows above the ceiling (exit 1).
"""
from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import layout
from jobs.run.options import DEFAULT_BATCH_ROWS
from jobs.run.plan import check_file_schema
from pipelines import contract, storage
from pipelines.config import Config
from schemas import ENGAGEMENT, ENROLLMENTS, EXPOSURES

SOURCES = (("enrollments", ENROLLMENTS), ("engagement", ENGAGEMENT), ("exposures", EXPOSURES))
OPTIONAL_SOURCES = ("exposures",)  # serving's exposure log: a day without one is valid


@dataclass
class FileReport:
    uri: str
    rows: int = 0
    bad: int = 0
    reasons: Counter = field(default_factory=Counter)
    error: str | None = None  # unreadable or wrong schema: the file was not (fully) checked


@dataclass
class PartitionReport:
    source: str
    folder: str
    files: list[FileReport] = field(default_factory=list)
    optional: bool = False

    @property
    def missing(self) -> bool:
        return not self.files and not self.optional

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bad(self) -> int:
        return sum(f.bad for f in self.files)

    @property
    def reasons(self) -> Counter:
        total = Counter()
        for f in self.files:
            total.update(f.reasons)
        return total

    @property
    def unreadable(self) -> list[FileReport]:
        return [f for f in self.files if f.error]


@dataclass
class Report:
    day: dt.date
    input_root: str
    partitions: list[PartitionReport]
    max_bad_row_share: float

    @property
    def valid(self) -> bool:
        return self.verdict == "valid"

    def over_ceiling(self, p: PartitionReport) -> bool:
        return bool(p.rows) and p.bad / p.rows > self.max_bad_row_share

    @property
    def failures(self) -> list[str]:
        """Why a run of this logs date would fail; empty when it would proceed."""
        out = []
        missing = [p.source for p in self.partitions if p.missing]
        if missing:
            out.append(f"missing partition(s): {', '.join(missing)}")
        unreadable = sum(len(p.unreadable) for p in self.partitions)
        if unreadable:
            out.append(f"{unreadable} unreadable file(s) or wrong schema")
        empty = [p.source for p in self.partitions if p.files and not p.unreadable and p.rows == 0]
        if empty:
            out.append(f"no rows in the {' and '.join(empty)} partition (a day without rows is a missing day)")
        over = [p.source for p in self.partitions if self.over_ceiling(p)]
        if over:
            out.append(f"rows breaking the contract above the max_bad_row_share ceiling of "
                       f"{self.max_bad_row_share:.2%} in {', '.join(over)}")
        return out

    @property
    def dead_lettered(self) -> int:
        return sum(p.bad for p in self.partitions)

    @property
    def verdict(self) -> str:
        if self.failures:
            return "fail"
        return "proceed" if self.dead_lettered else "valid"


def check_file(uri: str, source: str, contract_table, day: dt.date, cfg: Config,
               batch_rows: int = DEFAULT_BATCH_ROWS) -> FileReport:
    rep = FileReport(uri)
    try:
        check_file_schema(uri, contract_table)
    except contract.InputFileError as e:
        rep.error = str(e)
        return rep
    try:
        f = pq.ParquetFile(storage.open_input(uri))
        columns = [n for n in contract_table.names if n in f.schema_arrow.names]
        for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
            table = contract.conform_batch(pa.Table.from_batches([batch]), contract_table, uri)
            reasons = contract.check_batch(source, table, day, cfg.event_ts_slack_hours)
            rep.rows += table.num_rows
            broken = reasons.filter(pc.is_valid(reasons))
            if len(broken):
                rep.bad += len(broken)
                for item in pc.value_counts(broken).to_pylist():
                    rep.reasons[item["values"]] += item["counts"]
    except contract.InputFileError as e:
        rep.error = str(e)
    except Exception as e:  # a damaged data page: the footer read, the rows did not
        rep.error = f"{uri}: cannot be read as Parquet: {type(e).__name__}: {e}"
    return rep


def validate(input_root: str, day: dt.date, cfg: Config | None = None, progress=None,
             batch_rows: int = DEFAULT_BATCH_ROWS) -> Report:
    cfg = cfg or Config()
    parts = []
    for source, table in SOURCES:
        folder = layout.input_partition(input_root, source, day)
        files = storage.list_files(folder, ".parquet")
        rep = PartitionReport(source, folder, optional=source in OPTIONAL_SOURCES)
        for i, uri in enumerate(files, 1):
            started = time.monotonic()
            fr = check_file(uri, source, table, day, cfg, batch_rows)
            rep.files.append(fr)
            if progress:
                state = "UNREADABLE" if fr.error else f"{fr.rows:,} rows, {fr.bad:,} breaks"
                progress(f"validate {source} dt={day}: [{i}/{len(files)}] {uri}: {state} "
                         f"({time.monotonic() - started:.1f}s; {rep.rows:,} rows so far)")
        parts.append(rep)
    return Report(day, input_root, parts, cfg.max_bad_row_share)
