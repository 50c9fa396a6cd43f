"""The snapshot manifest (`_MANIFEST.json`): a typed, versioned record that
every reader goes through.

A manifest is written once, after the data files and before the warehouse and
LATEST. It records what the snapshot is (id, score date, the logs day it was
computed from), how it was made (code version, config, run options, every
input file with a fingerprint), what it holds (per table: files with rows,
bytes and sha256, a content fingerprint) and whether it may be served (the
gates' results).

`Manifest.from_dict` is the one parser: it checks the shape of what it reads
and raises `ManifestError` naming the field, so a damaged or foreign file is
an error a reader can handle, never a KeyError deep inside a command. Keys it
does not know are kept in `extra` and written back unchanged.

Format versions:
  1  the first format (no `format_version` key, no `options`);
  2  adds `format_version` and `options` (the run options: solver method, ...);
  3  adds `valid_until` (the last day serving may use the snapshot) and the
     `prices` table. An older manifest reads with valid_until = score date +
     the default `serving_max_age_days`, and lists no prices (`TABLES_SINCE`).
  4  adds `basis` to the gate results that compare with an earlier snapshot
     (which snapshot, which rows) and `inputs.empty_days` (engagement
     partitions that exist but hold no rows: missing days).
  5  adds `aggregate_format_version` (the daily aggregates' format the run
     wrote and read: `schemas.AGGREGATE_FORMAT_VERSION`; 1 when absent),
     `previous_snapshot` (the snapshot whose guardrail state the run carried
     on; "" for none) and `inputs.legacy_aggregate_days` (stored days read in
     an older aggregate format because their raw partition is gone).
  6  adds `warn_only` to gate results (a failed warn-only gate does not block)
     and `inputs.previous` (the snapshot before: its plan and serving gain).
  7  adds `holdout` (the salt and share of the holdout assignment serving must
     use), `inputs.exposures`, `inputs.exposure_days`, `inputs.lift_days`, and
     the `campaign_lift` table (older snapshots have none).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pipelines.config import Config
from pipelines.errors import OasisError

FORMAT_VERSION = 7
TABLES_SINCE = {"prices": 3, "delivery_reconciliation": 6, "campaign_lift": 7}   # listed from this version on


class ManifestError(OasisError):
    """A manifest that cannot be read as one: the message names the field."""


# ------------------------------------------------------------------ checks ---
def _get(doc: dict, key: str, kind, where: str, default=dataclasses.MISSING):
    if key not in doc:
        if default is dataclasses.MISSING:
            raise ManifestError(f"{where}: missing {key!r}")
        return default
    value = doc[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ManifestError(f"{where}: {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "an object",
            list: "a list", type(None): "null"}.get(kind, kind.__name__)


def _date(doc: dict, key: str, where: str) -> dt.date:
    text = _get(doc, key, str, where)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ManifestError(f"{where}: {key!r} is not a date (YYYY-MM-DD): {text!r}") from None


def _time(doc: dict, key: str, where: str) -> dt.datetime:
    text = _get(doc, key, str, where)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ManifestError(f"{where}: {key!r} is not a timestamp: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _json_number(v):
    """NaN and infinity are not JSON; they are written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ------------------------------------------------------------------ parts ---
@dataclass
class FileEntry:
    path: str     # relative to the snapshot folder, "/"-separated
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "FileEntry":
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: a file entry must be an object")
        path = _get(d, "path", str, where)
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise ManifestError(f"{where}: file path {path!r} is not inside the snapshot folder")
        return cls(path, _get(d, "rows", int, where), _get(d, "bytes", int, where), _get(d, "sha256", str, where))


@dataclass
class TableEntry:
    rows: int
    files: list[FileEntry]
    content_sha256: str

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TableEntry":
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: must be an object")
        files = [FileEntry.from_dict(f, f"{where}.files[{i}]") for i, f in enumerate(_get(d, "files", list, where))]
        return cls(_get(d, "rows", int, where), files, _get(d, "content_sha256", str, where))


@dataclass
class GateResult:
    """One validation gate's verdict. `passed` is the gate's own verdict;
    `skipped` says an engineer overrode it (`--skip-gate`), so a skipped gate
    that failed still reads passed = false; `warn_only` says the config made
    the gate a warning (it fails without blocking, and the run says so)."""
    name: str
    passed: bool
    detail: str
    measured: Any = None     # the number the gate looked at
    threshold: Any = None    # what it compared it with
    skipped: bool = False
    basis: dict | None = None  # what a comparing gate compared (the earlier snapshot, the rows); None otherwise
    warn_only: bool = False

    @property
    def blocking(self) -> bool:
        return not self.passed and not self.skipped and not self.warn_only

    @property
    def warning(self) -> bool:
        """Failed, but only warns: neither skipped by hand nor blocking."""
        return not self.passed and not self.skipped and self.warn_only

    def to_dict(self) -> dict:
        d = {"name": self.name, "passed": self.passed, "skipped": self.skipped, "warn_only": self.warn_only,
             "measured": _json_number(self.measured), "threshold": self.threshold, "detail": self.detail}
        if self.basis is not None:
            d["basis"] = self.basis
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "gate") -> "GateResult":
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: a gate result must be an object")
        return cls(name=_get(d, "name", str, where), passed=_get(d, "passed", bool, where),
                   detail=_get(d, "detail", str, where, ""), measured=d.get("measured"),
                   threshold=d.get("threshold"), skipped=_get(d, "skipped", bool, where, False),
                   basis=_get(d, "basis", (dict, type(None)), where, None),
                   warn_only=_get(d, "warn_only", bool, where, False))


def blocking_gates(results: list[GateResult]) -> list[str]:
    """Names of the gates that failed and were not skipped: they block a publish."""
    return [r.name for r in results if r.blocking]


def skipped_gates(results: list[GateResult]) -> list[str]:
    return [r.name for r in results if r.skipped]


def warning_gates(results: list[GateResult]) -> list[str]:
    """Names of the warn-only gates that failed: the run published and says so."""
    return [r.name for r in results if r.warning]


def validation_text(results: list[GateResult]) -> str:
    """One line on a set of gate results, the same wherever it is printed."""
    if not results:
        return "none recorded"
    blocking = blocking_gates(results)
    if blocking:
        return "FAILED " + ", ".join(blocking)
    warned = warning_gates(results)
    warning = f"; WARNING from {', '.join(warned)} (warn-only)" if warned else ""
    overridden = [r.name for r in results if r.skipped and not r.passed]
    if overridden:
        return (f"{len(overridden)} gate(s) failed, skipped by hand ({', '.join(overridden)}); "
                f"the others passed{warning}")
    if warned:
        return f"passed, with a WARNING from {', '.join(warned)} (a warn-only gate)"
    return "all passed"


@dataclass
class Inputs:
    enrollments: dict[str, str]        # file -> fingerprint
    engagement: dict[str, str]
    aggregates: dict[str, str]
    sources_by_day: dict[str, list[str]]
    built_days: list[str]
    stored_days: list[str]
    missing_window_days: list[str]     # window days without engagement rows (no partition, or an empty one)
    empty_days: list[str] = field(default_factory=list)  # of those, the days whose partition holds 0 rows
    legacy_aggregate_days: list[str] = field(default_factory=list)
    previous: dict = field(default_factory=dict)  # the snapshot before: snapshot_id, score_date, plan_reconciled
    exposures: dict[str, str] = field(default_factory=dict)    # the exposure log files read
    exposure_days: list[str] = field(default_factory=list)     # days with an exposure log (built or stored)
    lift_days: list[str] = field(default_factory=list)         # days whose lift facts were read

    @classmethod
    def from_dict(cls, d: Any, where: str = "inputs") -> "Inputs":
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: must be an object")
        return cls(**{f.name: _get(d, f.name, list if f.type.startswith("list") else dict, where,
                                   [] if f.type.startswith("list") else {})
                      for f in dataclasses.fields(cls)})


# --------------------------------------------------------------- manifest ---
@dataclass
class Manifest:
    snapshot_id: str
    score_date: dt.date
    as_of: dt.date                   # the last day of logs
    created_at: dt.datetime
    code_version: str
    run_fingerprint: str
    config: dict
    config_sha256: str
    inputs: Inputs
    tables: dict[str, TableEntry]
    validation: list[GateResult]
    options: dict = field(default_factory=dict)       # jobs.run.options.RunOptions.to_dict()
    metrics: dict[str, int] = field(default_factory=dict)
    bad_rows: dict = field(default_factory=dict)
    dead_letter_count: int = 0
    dead_letters: str = ""
    beam_options: list[str] = field(default_factory=list)
    report: dict | None = None       # {"path", "bytes", "sha256"} or {"error"}
    seconds: dict[str, float] = field(default_factory=dict)
    valid_until: dt.date | None = None   # None: score_date + the default serving_max_age_days
    aggregate_format_version: int = 1
    previous_snapshot: str = ""
    holdout: dict = field(default_factory=dict)       # {"salt", "share", "function"}: serving's assignment
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)          # keys this code does not know, kept as read

    # --- what readers ask --------------------------------------------------
    @property
    def blocking_gates(self) -> list[str]:
        return blocking_gates(self.validation)

    @property
    def skipped_gates(self) -> list[str]:
        return skipped_gates(self.validation)

    @property
    def warning_gates(self) -> list[str]:
        return warning_gates(self.validation)

    @property
    def gates_passed(self) -> bool:
        """Fit to serve as far as validation goes: gates were recorded and none
        blocks (a failed gate skipped by hand does not)."""
        return bool(self.validation) and not self.blocking_gates

    @property
    def validation_text(self) -> str:
        return validation_text(self.validation)

    @property
    def order_key(self) -> tuple[dt.date, dt.datetime, str]:
        """Snapshots sort by score date, then creation time."""
        return self.score_date, self.created_at, self.snapshot_id

    def __post_init__(self):
        if self.valid_until is None:
            self.valid_until = self.score_date + dt.timedelta(days=Config().serving_max_age_days)

    def lists_table(self, name: str) -> bool:
        """Whether a manifest of this format version must list table `name`."""
        return self.format_version >= TABLES_SINCE.get(name, 1)

    def table_files(self, name: str) -> list[FileEntry]:
        entry = self.tables.get(name)
        return entry.files if entry else []

    # --- JSON ----------------------------------------------------------------
    def to_dict(self) -> dict:
        doc = dict(self.extra)
        doc.update({
            "format_version": self.format_version,
            "snapshot_id": self.snapshot_id,
            "score_date": self.score_date.isoformat(),
            "as_of": self.as_of.isoformat(),
            "created_at": self.created_at.isoformat(),
            "code_version": self.code_version,
            "run_fingerprint": self.run_fingerprint,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "options": self.options,
            "inputs": dataclasses.asdict(self.inputs),
            "tables": {k: dataclasses.asdict(v) for k, v in self.tables.items()},
            "validation": [r.to_dict() for r in self.validation],
            "metrics": self.metrics,
            "bad_rows": self.bad_rows,
            "dead_letter_count": self.dead_letter_count,
            "dead_letters": self.dead_letters,
            "beam_options": self.beam_options,
            "report": self.report,
            "seconds": self.seconds,
            "valid_until": self.valid_until.isoformat(),
            "aggregate_format_version": self.aggregate_format_version,
            "previous_snapshot": self.previous_snapshot,
            "holdout": self.holdout,
        })
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_dict(cls, doc: Any, where: str = "manifest") -> "Manifest":
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: must be a JSON object, got {type(doc).__name__}")
        version = _get(doc, "format_version", int, where, 1)
        if not 1 <= version <= FORMAT_VERSION:
            raise ManifestError(f"{where}: format_version {version} is not one this code reads "
                                f"(1..{FORMAT_VERSION}); a newer OASIS wrote it")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        tables = _get(doc, "tables", dict, where)
        report = _get(doc, "report", (dict, type(None)), where, None)
        return cls(
            _nonempty(_get(doc, "snapshot_id", str, where), "snapshot_id", where),  # snapshot_id
            _date(doc, "score_date", where),                                         # score_date
            as_of=_date(doc, "as_of", where),
            created_at=_time(doc, "created_at", where),
            code_version=_get(doc, "code_version", str, where, ""),
            run_fingerprint=_get(doc, "run_fingerprint", str, where),
            config=_get(doc, "config", dict, where),
            config_sha256=_get(doc, "config_sha256", str, where, ""),
            options=_get(doc, "options", dict, where, {}),
            inputs=Inputs.from_dict(_get(doc, "inputs", dict, where, {}), f"{where}.inputs"),
            tables={name: TableEntry.from_dict(t, f"{where}.tables.{name}") for name, t in tables.items()},
            validation=[GateResult.from_dict(r, f"{where}.validation[{i}]")
                        for i, r in enumerate(_get(doc, "validation", list, where, []))],
            metrics=_get(doc, "metrics", dict, where, {}),
            bad_rows=_get(doc, "bad_rows", dict, where, {}),
            dead_letter_count=_get(doc, "dead_letter_count", int, where, 0),
            dead_letters=_get(doc, "dead_letters", str, where, ""),
            beam_options=_get(doc, "beam_options", list, where, []),
            report=report,
            seconds=_get(doc, "seconds", dict, where, {}),
            valid_until=_date(doc, "valid_until", where) if "valid_until" in doc else None,
            aggregate_format_version=_get(doc, "aggregate_format_version", int, where, 1),
            previous_snapshot=_get(doc, "previous_snapshot", str, where, ""),
            holdout=_get(doc, "holdout", dict, where, {}),
            format_version=version,
            extra={k: v for k, v in doc.items() if k not in known},
        )

    @classmethod
    def from_json(cls, data: bytes, where: str = "manifest") -> "Manifest":
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ManifestError(f"{where}: not valid JSON: {e}") from None
        return cls.from_dict(doc, where)


def _nonempty(value: str, key: str, where: str) -> str:
    if not value.strip():
        raise ManifestError(f"{where}: {key!r} is empty")
    return value
