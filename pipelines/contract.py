"""The input contract (docs/design.md §3) as vectorised checks over Arrow tables.

`check_engagement`, `check_enrollments` and `check_exposures` split a batch
into the rows that keep the contract and dead letters carrying the first rule
each row breaks.
Pure functions: the Beam transforms and `oasis validate` both call them.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import OasisError
from schemas import (ALL_SURFACES, ARMS, DEAD_LETTERS, ENGAGEMENT, ENROLLMENT_STATUSES, ENROLLMENTS, EXPOSURES,
                     PROMOTION_SURFACES, schema_mismatches)

MARKET_PATTERN = r"^[A-Z]{2}$"
# A play lasts at most a day. The bound keeps every stored sum far from the
# int64 limit: 86,400,000 ms a play leaves room for 1e11 plays of one
# (track, market, surface) in a day before ms_played could overflow, where
# values near 2**63 overflowed on the first sum.
MAX_PLAY_MS = 24 * 3600 * 1000


class InputFileError(OasisError):
    """An input file that cannot be read or whose schema breaks the contract."""


def conform_batch(table: pa.Table, contract, source_file: str) -> pa.Table:
    """Select the contract's columns and cast them to the contract's types, or
    raise InputFileError naming the file. An optional column the file does not
    have (an older partition) reads as nulls."""
    problems = schema_mismatches(contract.arrow(), table.schema, contract.optional_names)
    if problems:
        raise InputFileError(f"{source_file}: schema does not match the {contract.name} contract: "
                             + "; ".join(problems))
    cols = []
    for f in contract.arrow():
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type != f.type:
            col = col.cast(f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=pa.schema([pa.field(f.name, f.type) for f in contract.arrow()]))


def _reasons(rules: list[tuple[str, pa.Array]], n: int) -> pa.Array:
    """The first rule broken per row (rules in priority order), null when none.
    Built as rule codes in numpy, then a dictionary array of the rule names cast
    to strings, so only the (few) broken rows carry a string."""
    code = np.full(n, -1, dtype=np.int8)
    for k in range(len(rules) - 1, -1, -1):
        broken = pc.fill_null(rules[k][1], True)
        if isinstance(broken, pa.ChunkedArray):
            broken = broken.combine_chunks()
        if broken.true_count:
            code[broken.to_numpy(zero_copy_only=False)] = k
    if not (code >= 0).any():
        return pa.nulls(n, pa.string())
    names = pa.array([name for name, _ in rules], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(code, mask=code < 0), names).cast(pa.string())


def _matches(column, pattern: str) -> pa.Array:
    """Regex match per row, run once per distinct value (markets repeat)."""
    enc = pc.dictionary_encode(column)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return pc.take(pc.match_substring_regex(enc.dictionary, pattern), enc.indices)


def _null_rules(table: pa.Table, contract) -> list[tuple[str, pa.Array]]:
    rules = []
    for f in contract.fields:
        if not f.nullable:
            rules.append((f"null_{f.name}", pc.is_null(table.column(f.name))))
    return rules


def _empty(col) -> pa.Array:
    return pc.equal(pc.utf8_length(col), 0)


def check_engagement(table: pa.Table, day: dt.date, slack_hours: float) -> tuple[pa.Table, pa.Array]:
    """(reason per row, null when the row keeps the contract) for one day's events."""
    n = table.num_rows
    lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc) - dt.timedelta(hours=slack_hours)
    hi = lo + dt.timedelta(days=1, hours=2 * slack_hours)
    ts = table.column("event_ts")
    rules = _null_rules(table, ENGAGEMENT) + [
        ("empty_event_id", _empty(table.column("event_id"))),
        ("empty_user_id", _empty(table.column("user_id"))),
        ("empty_track_id", _empty(table.column("track_id"))),
        ("malformed_market", pc.invert(_matches(table.column("market"), MARKET_PATTERN))),
        ("unknown_surface", pc.invert(pc.is_in(table.column("surface"), pa.array(ALL_SURFACES)))),
        ("negative_ms_played", pc.less(table.column("ms_played"), 0)),
        ("ms_played_over_a_day", pc.greater(table.column("ms_played"), MAX_PLAY_MS)),
        ("nonpositive_duration_ms", pc.less_equal(table.column("duration_ms"), 0)),
        ("duration_ms_over_a_day", pc.greater(table.column("duration_ms"), MAX_PLAY_MS)),
        ("event_ts_outside_partition", pc.or_(pc.less(ts, pa.scalar(lo, ts.type)),
                                              pc.greater_equal(ts, pa.scalar(hi, ts.type)))),
        ("promoted_without_campaign", pc.and_(table.column("promoted"),
                                              pc.is_null(table.column("campaign_id")))),
    ]
    return _reasons(rules, n)


def _outside_day(ts, day: dt.date, slack_hours: float):
    lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc) - dt.timedelta(hours=slack_hours)
    hi = lo + dt.timedelta(days=1, hours=2 * slack_hours)
    return pc.or_(pc.less(ts, pa.scalar(lo, ts.type)), pc.greater_equal(ts, pa.scalar(hi, ts.type)))


def check_exposures(table: pa.Table, day: dt.date, slack_hours: float) -> pa.Array:
    """(reason per row, null when the row keeps the contract) for one day of
    serving's exposure log: the same key, market and time rules as engagement,
    a promotion surface, and an arm of `treated` or `ghost`."""
    rules = _null_rules(table, EXPOSURES) + [
        ("empty_exposure_id", _empty(table.column("exposure_id"))),
        ("empty_user_id", _empty(table.column("user_id"))),
        ("empty_track_id", _empty(table.column("track_id"))),
        ("empty_campaign_id", _empty(table.column("campaign_id"))),
        ("malformed_market", pc.invert(_matches(table.column("market"), MARKET_PATTERN))),
        ("unknown_surface", pc.invert(pc.is_in(table.column("surface"), pa.array(PROMOTION_SURFACES)))),
        ("unknown_arm", pc.invert(pc.is_in(table.column("arm"), pa.array(ARMS)))),
        ("event_ts_outside_partition", _outside_day(table.column("event_ts"), day, slack_hours)),
    ]
    return _reasons(rules, table.num_rows)


def check_batch(source: str, table: pa.Table, day: dt.date, slack_hours: float) -> pa.Array:
    """The reasons of one batch of `source` (enrollments, engagement or exposures)."""
    if source == "engagement":
        return check_engagement(table, day, slack_hours)
    if source == "exposures":
        return check_exposures(table, day, slack_hours)
    return check_enrollments(table)


def check_enrollments(table: pa.Table) -> pa.Array:
    n = table.num_rows
    surfaces = table.column("surfaces")
    if isinstance(surfaces, pa.ChunkedArray):
        surfaces = surfaces.combine_chunks()
    flat_ok = pc.is_in(pc.list_flatten(surfaces), pa.array(PROMOTION_SURFACES))
    parents = pc.list_parent_indices(surfaces).to_numpy(zero_copy_only=False)
    bad_surface = np.zeros(n, dtype=bool)
    bad_parents = parents[~flat_ok.to_numpy(zero_copy_only=False)]
    bad_surface[bad_parents] = True
    rate = table.column("commission_rate")
    rules = _null_rules(table, ENROLLMENTS) + [
        ("empty_campaign_id", _empty(table.column("campaign_id"))),
        ("empty_track_id", _empty(table.column("track_id"))),
        ("malformed_market", pc.invert(pc.match_substring_regex(table.column("market"), MARKET_PATTERN))),
        ("no_surfaces", pc.equal(pc.list_value_length(surfaces), 0)),
        ("unknown_surface", pa.array(bad_surface)),
        ("flight_ends_before_start", pc.greater(table.column("start_date"), table.column("end_date"))),
        # NaN compares false both ways, so it is named: a NaN rate passed both bounds
        ("commission_rate_out_of_range", pc.or_(pc.or_(pc.less_equal(rate, 0.0), pc.greater_equal(rate, 1.0)),
                                                pc.is_nan(rate))),
        ("unknown_status", pc.invert(pc.is_in(table.column("status"), pa.array(ENROLLMENT_STATUSES)))),
    ]
    return _reasons(rules, n)


def split_good_bad(table: pa.Table, reasons: pa.Array, *, day: dt.date, source: str,
                   source_file: str, good_columns: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
    """(rows keeping the contract, dead-letter rows). JSON is built only for the
    bad rows, which are few."""
    kept = table.select(good_columns) if good_columns else table  # copy only what is used downstream
    if reasons.null_count == len(reasons):
        return kept, DEAD_LETTERS.empty()
    ok = pc.is_null(reasons)
    good = kept.filter(ok)
    bad_mask = pc.invert(ok)
    bad_rows = table.filter(bad_mask).to_pylist()
    bad_reasons = reasons.filter(bad_mask)
    dead = pa.table({
        "dt": pa.array([day] * len(bad_rows), pa.date32()),
        "source": pa.array([source] * len(bad_rows), pa.string()),
        "source_file": pa.array([source_file] * len(bad_rows), pa.string()),
        "reason": bad_reasons.cast(pa.string()),
        "row_json": pa.array([json.dumps(r, default=str, sort_keys=True) for r in bad_rows], pa.string()),
    }, schema=DEAD_LETTERS.arrow())
    return good, dead


def latest_enrollments(table: pa.Table) -> pa.Table:
    """The latest row per (campaign_id, track_id, market) by updated_at; ties broken
    by the remaining columns so the result does not depend on input order."""
    if table.num_rows == 0:
        return table
    keys = list(ENROLLMENTS.key)
    rest = [n for n in ENROLLMENTS.names if n not in keys and n not in ("updated_at", "surfaces")]
    sortable = table.append_column("_surfaces", pc.binary_join(table.column("surfaces"), ","))
    order = pc.sort_indices(sortable, sort_keys=[(k, "ascending") for k in keys]
                            + [("updated_at", "descending")] + [(n, "ascending") for n in rest]
                            + [("_surfaces", "ascending")])
    t = table.take(order)
    key_strs = pc.binary_join_element_wise(*[t.column(k) for k in keys], "\x1f")
    prev = pa.concat_arrays([pa.array([None], pa.string()), key_strs.combine_chunks().slice(0, t.num_rows - 1)])
    first = pc.fill_null(pc.not_equal(key_strs.combine_chunks(), prev), True)
    return t.filter(first)
