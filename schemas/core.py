"""The schema language: a table is declared once as a list of fields, and every
store-specific form (pyarrow, BigQuery JSON, Beam row type) is derived here.

Only the handful of logical types the contracts use are supported, so each
mapping is total and a test can check the forms against each other.
"""
from __future__ import annotations

import datetime as _dt
import typing
from dataclasses import dataclass

import pyarrow as pa

# logical type -> (pyarrow type, BigQuery type, BigQuery mode override, Python type)
_TYPES: dict[str, tuple[pa.DataType, str, str | None, type]] = {
    "string": (pa.string(), "STRING", None, str),
    "bool": (pa.bool_(), "BOOLEAN", None, bool),
    "int64": (pa.int64(), "INTEGER", None, int),
    "double": (pa.float64(), "FLOAT", None, float),
    "date": (pa.date32(), "DATE", None, _dt.date),
    "timestamp": (pa.timestamp("us", tz="UTC"), "TIMESTAMP", None, _dt.datetime),
    "list<string>": (pa.list_(pa.string()), "STRING", "REPEATED", typing.List[str]),
}


@dataclass(frozen=True)
class Field:
    """One column. `optional`: an input column added after the contract's first
    version, so older partitions may not have it; a missing optional column
    reads as nulls (it must therefore be nullable)."""
    name: str
    type: str
    nullable: bool = False
    doc: str = ""
    optional: bool = False

    def __post_init__(self):
        if self.type not in _TYPES:
            raise ValueError(f"field {self.name}: unknown logical type {self.type!r}")
        if self.optional and not self.nullable:
            raise ValueError(f"field {self.name}: an optional column must be nullable (absent reads as null)")


@dataclass(frozen=True)
class Table:
    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    key: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def optional_names(self) -> list[str]:
        return [f.name for f in self.fields if f.optional]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    # --- derived forms -------------------------------------------------
    def arrow(self) -> pa.Schema:
        return pa.schema(
            [pa.field(f.name, _TYPES[f.type][0], nullable=f.nullable) for f in self.fields]
        )

    def bigquery(self) -> list[dict]:
        """BigQuery JSON schema (the form `bq mk --schema` and the API take)."""
        out = []
        for f in self.fields:
            _, bq_type, mode, _ = _TYPES[f.type]
            out.append(
                {
                    "name": f.name,
                    "type": bq_type,
                    "mode": mode or ("NULLABLE" if f.nullable else "REQUIRED"),
                    "description": f.doc,
                }
            )
        return out

    def beam_row_type(self) -> type:
        """A NamedTuple usable as a Beam schema'd row type (`with_output_types`)."""
        # Beam's schema type for a timestamp is its own Timestamp (micros_instant);
        # datetime.datetime would become an opaque, nullable pickled Any field.
        from apache_beam.utils.timestamp import Timestamp

        cls_name = "".join(p.capitalize() for p in self.name.split("_")) + "Row"
        annotations = []
        for f in self.fields:
            py = Timestamp if f.type == "timestamp" else _TYPES[f.type][3]
            annotations.append((f.name, typing.Optional[py] if f.nullable else py))
        row_type = typing.NamedTuple(cls_name, annotations)
        return row_type

    def empty(self) -> pa.Table:
        return self.arrow().empty_table()

    def conform(self, table: pa.Table) -> pa.Table:
        """Select and cast `table` to exactly this schema (column order included)."""
        missing = [n for n in self.names if n not in table.column_names]
        if missing:
            raise ValueError(f"{self.name}: missing columns {missing}")
        return table.select(self.names).cast(self.arrow())

    def conform_stored(self, table: pa.Table) -> pa.Table:
        """`conform` for a file an older version wrote: a nullable column added
        to the table since is read as nulls (a missing required column is
        still an error)."""
        n = table.num_rows
        for f in self.fields:
            if f.nullable and f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(n, _TYPES[f.type][0]))
        return self.conform(table)


def schema_mismatches(expected: pa.Schema, actual: pa.Schema, optional=()) -> list[str]:
    """Human-readable differences between an input file's schema and the contract.

    Extra columns are tolerated (producers may add fields); a missing column or a
    column of another type is a mismatch, except that a column named in
    `optional` (`Table.optional_names`) may be missing: older partitions predate
    it. A timestamp in another unit or zone is accepted because it converts
    losslessly enough for the contract.
    """
    problems = []
    for f in expected:
        idx = actual.get_field_index(f.name)
        if idx < 0:
            if f.name not in optional:
                problems.append(f"missing column {f.name!r}")
            continue
        got = actual.field(idx).type
        if got == f.type:
            continue
        if pa.types.is_timestamp(f.type) and pa.types.is_timestamp(got):
            continue
        if pa.types.is_string(f.type) and pa.types.is_large_string(got):
            continue
        if pa.types.is_list(f.type) and (pa.types.is_list(got) or pa.types.is_large_list(got)):
            if pa.types.is_string(got.value_type) or pa.types.is_large_string(got.value_type):
                continue
        if pa.types.is_date(f.type) and pa.types.is_date(got):
            continue
        problems.append(f"column {f.name!r} has type {got}, expected {f.type}")
    return problems
