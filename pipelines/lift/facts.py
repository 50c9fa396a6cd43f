"""One day's per-listener lift facts, from one listener shard of that day's
plays and exposures (pure functions; `pipelines.beam.lift.BuildLiftFacts`
calls them per shard).

    listener_days  per (track, market, listener): streams (plays of at least
                   30 s, any surface) and saves of the enrolled tracks, and the
                   logged holdout flag
    exposure_days  per (campaign, market, surface, track, listener, arm): the
                   day's first exposure, the number of exposures, and the
                   listener's streams and saves of that track from that
                   exposure to the end of the day (what the first day of an
                   attribution window counts)
    market_listeners (`active_listeners`): per (market, holdout flag) the
                   listener keys active that day, for the intent-to-treat
                   populations

A listener is a 64-bit key (`pipelines.holdout.listener_keys`), never a user
id. Repeated event and exposure ids count once (the first row in input order).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import arrays, holdout
from schemas import EXPOSURE_DAYS, LISTENER_DAYS

STREAM_MS = 30_000  # a stream is a play of at least 30 s (the contract's "skipped before 30 s")
PLAY_COLUMNS = ["event_id", "listener_key", "track_id", "market", "event_ts", "stream", "saved", "holdout"]
EXPOSURE_COLUMNS = ["exposure_id", "listener_key", "campaign_id", "track_id", "market", "surface", "arm",
                    "event_ts"]
UNIT = ["campaign_id", "market", "surface", "track_id", "listener_key", "arm"]
LISTENER = ["track_id", "market", "listener_key"]


def play_rows(table: pa.Table, keys: np.ndarray, enrolled: pa.Array | None) -> pa.Table:
    """A checked engagement batch -> the plays of enrolled tracks, projected to
    PLAY_COLUMNS (the listener key instead of the user id)."""
    keep = pc.is_in(table.column("track_id"), enrolled) if enrolled is not None else None
    t = table.append_column("listener_key", pa.array(holdout.as_int64(keys), pa.int64()))
    if keep is not None:
        t = t.filter(keep)
    return pa.table({
        "event_id": t.column("event_id"), "listener_key": t.column("listener_key"),
        "track_id": t.column("track_id"), "market": t.column("market"), "event_ts": t.column("event_ts"),
        "stream": pc.greater_equal(t.column("ms_played"), STREAM_MS), "saved": t.column("saved"),
        "holdout": pc.fill_null(t.column("holdout"), False),
    })


def exposure_rows(table: pa.Table, keys: np.ndarray) -> pa.Table:
    t = table.append_column("listener_key", pa.array(holdout.as_int64(keys), pa.int64()))
    return t.select(EXPOSURE_COLUMNS)


def active_listeners(table: pa.Table, keys: np.ndarray) -> dict[tuple[str, bool], np.ndarray]:
    """(market, logged holdout flag) -> the distinct listener keys with a play in
    this batch (every track, not only enrolled ones)."""
    if table.num_rows == 0:
        return {}
    market_codes, markets = arrays.codes(table.column("market"))
    flag = pc.fill_null(table.column("holdout"), False).to_numpy(zero_copy_only=False).astype(np.int64)
    cell = market_codes * 2 + flag
    order, runs = arrays.key_runs(cell)
    out = {}
    for c, start, end in runs:
        out[(markets[c // 2].as_py(), bool(c % 2))] = np.unique(keys[order[start:end]])
    return out


def _int(col) -> pa.Array:
    return pc.cast(col, pa.int64())


def listener_days(plays: pa.Table, day: dt.date) -> pa.Table:
    """Deduplicated plays of one shard and day -> LISTENER_DAYS rows, sorted by key."""
    t = plays.append_column("n_stream", _int(plays.column("stream"))) \
        .append_column("n_saved", _int(plays.column("saved"))) \
        .append_column("n_holdout", _int(plays.column("holdout")))
    agg = t.group_by(LISTENER, use_threads=False).aggregate(
        [("n_stream", "sum"), ("n_saved", "sum"), ("n_holdout", "max")])
    out = pa.table({
        "dt": pa.repeat(pa.scalar(day, pa.date32()), agg.num_rows),
        "track_id": agg.column("track_id"), "market": agg.column("market"),
        "listener_key": agg.column("listener_key"), "streams": agg.column("n_stream_sum"),
        "saves": agg.column("n_saved_sum"), "holdout": pc.greater(agg.column("n_holdout_max"), 0),
    })
    return LISTENER_DAYS.conform(out).sort_by([(k, "ascending") for k in LISTENER_DAYS.key])


def exposure_days(exposures: pa.Table, plays: pa.Table, day: dt.date) -> pa.Table:
    """Deduplicated exposures and plays of one shard and day -> EXPOSURE_DAYS
    rows, sorted by key: per unit the day's first exposure and the streams and
    saves of the unit's track from it on."""
    if exposures.num_rows == 0:
        return EXPOSURE_DAYS.empty()
    units = exposures.group_by(UNIT, use_threads=False).aggregate([("event_ts", "min"), ("exposure_id", "count")])
    units = units.rename_columns(UNIT + ["first_ts", "exposures"])
    after = plays.select(LISTENER + ["event_ts", "stream", "saved"]).join(
        units.select(UNIT + ["first_ts"]), keys=LISTENER, join_type="inner", use_threads=False)
    after = after.filter(pc.greater_equal(after.column("event_ts"), after.column("first_ts")))
    after = after.append_column("n_stream", _int(after.column("stream"))) \
        .append_column("n_saved", _int(after.column("saved")))
    sums = after.group_by(UNIT, use_threads=False).aggregate([("n_stream", "sum"), ("n_saved", "sum")])
    joined = units.join(sums, keys=UNIT, join_type="left outer", use_threads=False)
    out = pa.table({
        "dt": pa.repeat(pa.scalar(day, pa.date32()), joined.num_rows),
        **{k: joined.column(k) for k in UNIT[:-1]}, "arm": joined.column("arm"),
        "first_ts": joined.column("first_ts"), "exposures": joined.column("exposures"),
        "streams_after": pc.fill_null(joined.column("n_stream_sum"), 0),
        "saves_after": pc.fill_null(joined.column("n_saved_sum"), 0),
    })
    return EXPOSURE_DAYS.conform(out).sort_by([(k, "ascending") for k in EXPOSURE_DAYS.key])


def dedupe(table: pa.Table, key: str) -> tuple[pa.Table, int]:
    """(first row per `key` in table order, rows dropped)."""
    kept = arrays.first_per_key(table, key)
    return kept, table.num_rows - kept.num_rows
