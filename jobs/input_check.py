"""`oasis validate`: check one day's input partitions against the contract
without running the job.

For the enrollments and engagement partitions of D: every file's schema
(`plan.check_file_schema`: the footer is read and compared with the contract),
then every row against the contract (`pipelines.contract`, the same checks the
run applies), reading the files in Arrow record batches. Prints the breaks per
file and per reason. Exit 0 when everything is valid; 1 when a partition is
missing, a file cannot be read or has the wrong schema, or any row breaks the
contract (the run would dead-letter those rows, and fail above
`max_bad_row_share`).
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.run.plan import check_file_schema, partition
from pipelines import contract, storage
from pipelines.config import Config
from schemas import ENGAGEMENT, ENROLLMENTS

SOURCES = (("enrollments", ENROLLMENTS), ("engagement", ENGAGEMENT))


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
        return all(p.files and not p.bad and not p.unreadable for p in self.partitions)


def check_file(uri: str, source: str, contract_table, day: dt.date, cfg: Config,
               batch_rows: int = 262_144) -> FileReport:
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
            if source == "engagement":
                reasons = contract.check_engagement(table, day, cfg.event_ts_slack_hours)
            else:
                reasons = contract.check_enrollments(table)
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
             batch_rows: int = 262_144) -> Report:
    cfg = cfg or Config()
    parts = []
    for source, table in SOURCES:
        folder = partition(input_root, source, day)
        files = storage.list_files(folder, ".parquet")
        rep = PartitionReport(source, folder)
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


def render(report: Report) -> str:
    lines = [f"OASIS input check for dt={report.day} under {report.input_root}"]
    for p in report.partitions:
        lines.append("")
        if not p.files:
            lines.append(f"{p.source}: MISSING partition: no *.parquet under {p.folder}")
            continue
        share = p.bad / p.rows if p.rows else 0.0
        lines.append(f"{p.source}: {len(p.files)} file(s), {p.rows:,} rows checked, {p.bad:,} break the "
                     f"contract ({share:.3%}), {len(p.unreadable)} unreadable")
        for f in p.files:
            if f.error:
                lines.append(f"  {f.uri}: UNREADABLE: {f.error.removeprefix(f.uri + ': ')}")
                continue
            lines.append(f"  {f.uri}: {f.rows:,} rows, {f.bad:,} breaks")
            for reason, n in sorted(f.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"      {reason:<32} {n:>10,}")
        if p.bad and len(p.files) > 1:
            lines.append("  all files, by reason:")
            for reason, n in sorted(p.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"      {reason:<32} {n:>10,}")
        if p.bad:
            verdict = ("above" if share > report.max_bad_row_share else "within")
            lines.append(f"  a run would dead-letter these rows; {share:.3%} is {verdict} the "
                         f"max_bad_row_share ceiling of {report.max_bad_row_share:.2%}"
                         + (" (the run would fail)" if verdict == "above" else ""))
    lines.append("")
    problems = []
    missing = [p.source for p in report.partitions if not p.files]
    unreadable = sum(len(p.unreadable) for p in report.partitions)
    bad = sum(p.bad for p in report.partitions)
    if missing:
        problems.append(f"missing partition(s): {', '.join(missing)}")
    if unreadable:
        problems.append(f"{unreadable} unreadable file(s) or wrong schema")
    if bad:
        problems.append(f"{bad:,} rows break the contract")
    lines.append("VALID: every file reads and every row keeps the contract" if report.valid
                 else "INVALID: " + "; ".join(problems))
    return "\n".join(lines)


def register(sub) -> None:
    import argparse

    from jobs.cli.main import date_arg

    p = sub.add_parser("validate", help="check one day's input partitions against the contract (no run)",
                       description="Check IN/enrollments/dt=D and IN/engagement/dt=D: every file's schema, "
                                   "then every row against the input contract. Prints the breaks per file and "
                                   "per reason. Exit 0 when everything is valid, 1 otherwise.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--date", type=date_arg, required=True, help="partition day (YYYY-MM-DD)")
    p.add_argument("--input", required=True, help="input root: local folder or gs://bucket/prefix")
    p.add_argument("--config", default=None, help="TOML config (event_ts_slack_hours, max_bad_row_share)")
    p.add_argument("--batch-rows", type=int, default=262_144, help="rows per Arrow record batch")
    p.set_defaults(func=main, beam=False)


def main(args, _rest=None) -> int:
    cfg = Config.load(args.config)
    report = validate(args.input, args.date, cfg, batch_rows=args.batch_rows,
                      progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(render(report))
    return 0 if report.valid else 1
