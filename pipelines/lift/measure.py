"""Follow each exposed listener over the attribution window, reduce listeners
to sufficient statistics, and turn those into campaign_lift rows (pure
functions; `pipelines.beam.lift.MeasureCampaignLift` runs `measure_shard` on
each listener shard and `lift_table` once).

Definitions (days are UTC days, D the last day of logs, W `lift_window_days`,
P `lift_pre_days`):

* a unit is (campaign, market, surface, track, listener): its first exposure
  is the earliest exposure of that track to that listener in the campaign's
  flight, on day d0 at time t0; its arm is the exposure's (a unit logged in
  both arms is dropped and counted);
* the attribution window is t0 to the end of day min(d0 + W - 1, D): the
  streams of the track after t0 on d0 (`exposure_days.streams_after`) plus its
  streams on the following days; Y, a listener's outcome, sums the window
  streams of its units (tracks) in the campaign row;
* the pre-period X sums the streams of the units' tracks on days d0 - P to
  d0 - 1; a listener is new when X = 0;
* a listener saved when any unit has a save in its window (saves count
  listeners, a library save counts once);
* historical_lift: the treated units' streams per unit-day in their windows
  against their streams per unit-day on the P days before the campaign's
  first selection (the earliest exposure day of the campaign row, either arm);
  null when one of those P days is missing from the logs;
* without an exposure log for the flight (method intent_to_treat), the arms are
  the market's listeners by their logged holdout flag, Y their streams of the
  campaign's tracks over the flight up to D, normalised by the arms' active
  listener-days (`market_listeners`), surface 'all'.

Every partial sum is an integer (seconds for window lengths), so combining
shards in any order gives identical totals: a rerun publishes identical rows.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.lift import estimator as est
from schemas import CAMPAIGN_LIFT

EPOCH = dt.date(1970, 1, 1)
DAY_S = 86_400
ROW = ["campaign_id", "market", "surface"]
ITT_SURFACE = "all"
EXPOSURES, ITT = "exposures", "intent_to_treat"

ARMS_SCHEMA = pa.schema([
    ("campaign_id", pa.string()), ("market", pa.string()), ("surface", pa.string()), ("arm", pa.string()),
    ("n", pa.int64()), ("units", pa.int64()), ("sy", pa.int64()), ("syy", pa.int64()), ("sx", pa.int64()),
    ("sxx", pa.int64()), ("sxy", pa.int64()), ("new", pa.int64()), ("savers", pa.int64()),
    ("window_s", pa.int64()), ("first_day", pa.int64()), ("conflicts", pa.int64())])
DAYS_SCHEMA = pa.schema([("campaign_id", pa.string()), ("market", pa.string()), ("surface", pa.string()),
                         ("day", pa.int64()), ("streams", pa.int64())])
TRACKS_SCHEMA = pa.schema([("campaign_id", pa.string()), ("market", pa.string()), ("surface", pa.string()),
                           ("track_id", pa.string())])
CAMPAIGNS_SCHEMA = pa.schema([("campaign_id", pa.string()), ("market", pa.string()), ("track_id", pa.string()),
                              ("licensor_id", pa.string()), ("flight_start", pa.int64()),
                              ("flight_end", pa.int64()), ("method", pa.string())])


def daynum(d: dt.date) -> int:
    return (d - EPOCH).days


def _daynums(col) -> np.ndarray:
    return pa.array(col, pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


# --------------------------------------------------------------- campaigns ---
def lift_campaigns(enrollments: pa.Table, as_of: dt.date, window_days: int, exposure_input_days) -> pa.Table:
    """The campaign rows measurable on `as_of` (flight started, attribution
    windows still open: as_of <= flight_end + W - 1), one row per (campaign,
    market, track), with the method: exposures when an exposure log exists for
    any flight day up to as_of, else intent_to_treat."""
    if enrollments.num_rows == 0:
        return CAMPAIGNS_SCHEMA.empty_table()
    e = pd.DataFrame({
        "campaign_id": enrollments.column("campaign_id").to_numpy(zero_copy_only=False),
        "market": enrollments.column("market").to_numpy(zero_copy_only=False),
        "track_id": enrollments.column("track_id").to_numpy(zero_copy_only=False),
        "licensor_id": enrollments.column("licensor_id").to_numpy(zero_copy_only=False),
        "start": _daynums(enrollments.column("start_date")), "end": _daynums(enrollments.column("end_date"))})
    per = e.groupby(["campaign_id", "market"], sort=True).agg(
        flight_start=("start", "min"), flight_end=("end", "max"), licensor_id=("licensor_id", "min")).reset_index()
    d = daynum(as_of)
    per = per[(per.flight_start <= d) & (d <= per.flight_end + window_days - 1)]
    logged = np.array(sorted(daynum(x) for x in exposure_input_days), dtype=np.int64)
    last = np.minimum(per.flight_end.to_numpy(), d)
    lo = np.searchsorted(logged, per.flight_start.to_numpy(), side="left")
    hi = np.searchsorted(logged, last, side="right")
    per = per.assign(method=np.where(hi > lo, EXPOSURES, ITT))
    rows = e[["campaign_id", "market", "track_id"]].drop_duplicates().merge(per, on=["campaign_id", "market"])
    rows = rows.sort_values(["campaign_id", "market", "track_id"])
    return pa.Table.from_pandas(rows[CAMPAIGNS_SCHEMA.names], schema=CAMPAIGNS_SCHEMA, preserve_index=False)


# ---------------------------------------------------------------- one shard ---
def _frame(t: pa.Table) -> pd.DataFrame:
    """A facts table as a frame, with its day (and first exposure time) as integers."""
    df = t.drop_columns([c for c in ("dt", "first_ts") if c in t.column_names]).to_pandas()
    if "dt" in t.column_names:
        df["day"] = _daynums(t.column("dt"))
    if "first_ts" in t.column_names:
        df["t0_us"] = t.column("first_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return df


def measure_shard(listener_days: pa.Table, exposure_days: pa.Table, campaigns: pa.Table, as_of: dt.date,
                  window_days: int, pre_days: int) -> dict[str, pa.Table]:
    """One listener shard's facts over the lookback -> partial sums: `arms`
    (per campaign row and arm), `days` (treated streams per campaign row and
    day, for historical_lift) and `tracks` (the tracks exposed per row)."""
    L, E, C = _frame(listener_days), _frame(exposure_days), campaigns.to_pandas()
    d = daynum(as_of)
    arms, days, tracks = [], [], []
    exp_c = C[C.method == EXPOSURES]
    if len(E) and len(exp_c):
        a, dy, tr = _exposed(L, E, exp_c, d, window_days, pre_days)
        arms.append(a), days.append(dy), tracks.append(tr)
    itt_c = C[C.method == ITT]
    if len(L) and len(itt_c):
        a, dy = _intent_to_treat(L, itt_c, d, pre_days)
        arms.append(a), days.append(dy)
    return {"arms": _table(arms, ARMS_SCHEMA), "days": _table(days, DAYS_SCHEMA),
            "tracks": _table(tracks, TRACKS_SCHEMA)}


def _table(frames: list[pd.DataFrame], schema: pa.Schema) -> pa.Table:
    frames = [f for f in frames if len(f)]
    if not frames:
        return schema.empty_table()
    df = pd.concat(frames, ignore_index=True)[schema.names]
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def _exposed(L, E, C, d, W, P):
    E = E.merge(C[["campaign_id", "market", "track_id", "flight_start", "flight_end"]],
                on=["campaign_id", "market", "track_id"])
    E = E[(E.day >= E.flight_start) & (E.day <= np.minimum(E.flight_end, d))]
    unit = ["campaign_id", "market", "surface", "track_id", "listener_key"]
    arms_per_unit = E.groupby(unit, sort=False)["arm"].transform("nunique")
    conflicts = E[arms_per_unit > 1].drop_duplicates(unit).groupby(ROW).size().rename("conflicts")
    E = E[arms_per_unit == 1].sort_values(unit + ["day", "t0_us"], kind="stable")
    U = E.drop_duplicates(unit, keep="first").rename(columns={"day": "d0"}).reset_index(drop=True)
    U["wend"] = np.minimum(U.d0 + W - 1, d)
    U["window_s"] = (U.wend + 1) * DAY_S - U.t0_us // 1_000_000
    U["uid"] = np.arange(len(U))
    J = U[["uid", "track_id", "market", "listener_key", "d0", "wend", "arm", "flight_start"]].merge(
        L[["track_id", "market", "listener_key", "day", "streams", "saves"]],
        on=["track_id", "market", "listener_key"])
    rest = (J.day > J.d0) & (J.day <= J.wend)
    pre = (J.day >= J.d0 - P) & (J.day < J.d0)
    n = len(U)
    U["y"] = U.streams_after.to_numpy() + np.bincount(J.uid[rest], J.streams[rest], n).astype(np.int64)
    U["saves"] = U.saves_after.to_numpy() + np.bincount(J.uid[rest], J.saves[rest], n).astype(np.int64)
    U["x"] = np.bincount(J.uid[pre], J.streams[pre], n).astype(np.int64)
    per = U.groupby(ROW + ["listener_key", "arm"], sort=False).agg(
        y=("y", "sum"), x=("x", "sum"), saves=("saves", "sum"), window_s=("window_s", "sum"),
        units=("uid", "size"), first_day=("d0", "min")).reset_index()
    per = per.assign(yy=per.y * per.y, xx=per.x * per.x, xy=per.x * per.y, new=(per.x == 0).astype(np.int64),
                     saver=(per.saves > 0).astype(np.int64))
    arms = per.groupby(ROW + ["arm"], sort=True).agg(
        n=("y", "size"), units=("units", "sum"), sy=("y", "sum"), syy=("yy", "sum"), sx=("x", "sum"),
        sxx=("xx", "sum"), sxy=("xy", "sum"), new=("new", "sum"), savers=("saver", "sum"),
        window_s=("window_s", "sum"), first_day=("first_day", "min")).reset_index()
    arms = arms.merge(conflicts.reset_index(), on=ROW, how="left")
    arms["conflicts"] = arms.conflicts.fillna(0).astype(np.int64)
    treated = J[(J.arm == "treated") & (J.day >= J.flight_start - P) & (J.day <= d)].drop(
        columns="market").merge(U[["uid"] + ROW], on="uid")
    days = treated.groupby(ROW + ["day"], sort=True)["streams"].sum().reset_index()
    tracks = U[ROW + ["track_id"]].drop_duplicates()
    return arms, days, tracks


def _intent_to_treat(L, C, d, P):
    J = L.merge(C[["campaign_id", "market", "track_id", "flight_start", "flight_end"]], on=["track_id", "market"])
    J = J[(J.day >= J.flight_start - P) & (J.day <= np.minimum(J.flight_end, d))].assign(surface=ITT_SURFACE)
    days = J.groupby(ROW + ["day"], sort=True)["streams"].sum().reset_index()
    F = J[J.day >= J.flight_start]
    per = F.groupby(ROW + ["listener_key"], sort=False).agg(
        y=("streams", "sum"), saves=("saves", "sum"), holdout=("holdout", "max")).reset_index()
    per = per.assign(arm=np.where(per.holdout, "ghost", "treated"), yy=per.y * per.y,
                     saver=(per.saves > 0).astype(np.int64))
    arms = per.groupby(ROW + ["arm"], sort=True).agg(
        n=("y", "size"), sy=("y", "sum"), syy=("yy", "sum"), savers=("saver", "sum")).reset_index()
    arms = arms.assign(units=arms.n, sx=0, sxx=0, sxy=0, new=0, window_s=0, first_day=-1, conflicts=0)
    return arms, days


# --------------------------------------------------------------- combine ---
def combine(arms: list[pa.Table], days: list[pa.Table], tracks: list[pa.Table]) -> dict[str, pd.DataFrame]:
    """Sum the shards' partials (integers: exact in any order)."""
    def cat(tables, schema):
        ts = [t for t in tables if t.num_rows]
        return pa.concat_tables(ts).to_pandas() if ts else schema.empty_table().to_pandas()
    arms = cat(arms, ARMS_SCHEMA)
    sums = [c for c in ARMS_SCHEMA.names if c not in ROW + ["arm", "first_day"]]
    arms = arms.groupby(ROW + ["arm"], sort=True).agg(
        **{c: (c, "sum") for c in sums}, first_day=("first_day", "min")).reset_index()
    days = cat(days, DAYS_SCHEMA).groupby(ROW + ["day"], sort=True)["streams"].sum().reset_index()
    tracks = cat(tracks, TRACKS_SCHEMA).drop_duplicates()
    return {"arms": arms, "days": days, "tracks": tracks}


# ----------------------------------------------------------------- table ---
def _arm(arms: pd.DataFrame, rows: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The `arm` partial of each row of `rows` (zeros where the arm is absent)."""
    a = arms[arms.arm == arm].drop(columns="arm")
    out = rows[ROW].merge(a, on=ROW, how="left")
    return out.fillna({c: 0 for c in a.columns if c not in ROW}).astype(
        {c: np.int64 for c in a.columns if c not in ROW})


def _window_sum(days: pd.DataFrame, rows: pd.DataFrame, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row of `rows`: the sum of `days.streams` of its campaign row over days [lo, hi)."""
    j = rows[ROW].assign(_i=np.arange(len(rows)), _lo=lo, _hi=hi).merge(days, on=ROW)
    inside = (j.day >= j._lo) & (j.day < j._hi)
    return np.bincount(j._i[inside], j.streams[inside], len(rows)).astype(np.int64)


def _observed(lo: np.ndarray, hi: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """True where every day in [lo, hi) is an observed day of the logs."""
    return (np.searchsorted(observed, hi, side="left") - np.searchsorted(observed, lo, side="left")) == (hi - lo)


def lift_table(combined: dict[str, pd.DataFrame], campaigns: pa.Table, market_listeners: pa.Table,
               observed_days, as_of: dt.date, score_date: dt.date, snapshot_id: str, cfg) -> pa.Table:
    """campaign_lift rows: the campaign rows with enough flight days and data."""
    arms, days, tracks = combined["arms"], combined["days"], combined["tracks"]
    camp = campaigns.to_pandas().groupby(["campaign_id", "market"], sort=True).agg(
        licensor_id=("licensor_id", "min"), flight_start=("flight_start", "min"), flight_end=("flight_end", "max"),
        method=("method", "min")).reset_index()
    d = daynum(as_of)
    camp["flight_days"] = np.minimum(camp.flight_end, d) - camp.flight_start + 1
    camp = camp[camp.flight_days >= cfg.lift_min_flight_days]
    observed = np.array(sorted(daynum(x) for x in observed_days), dtype=np.int64)
    keys = arms[ROW].drop_duplicates()
    rows = keys.merge(camp, on=["campaign_id", "market"])
    rows = rows[(rows.method == EXPOSURES) != (rows.surface == ITT_SURFACE)].sort_values(ROW).reset_index(drop=True)
    if rows.empty:
        return CAMPAIGN_LIFT.empty()
    t, g = _arm(arms, rows, "treated"), _arm(arms, rows, "ghost")
    P, itt = cfg.lift_pre_days, (rows.method == ITT).to_numpy()
    # the arms' sizes: exposed listeners, or (intent to treat) mean daily active listeners
    active = _active_listener_days(market_listeners, rows, d, observed)
    n_t = np.where(itt, active["days_t"] / np.maximum(active["days"], 1), t.n).astype(float)
    n_g = np.where(itt, active["days_g"] / np.maximum(active["days"], 1), g.n).astype(float)
    valid = est.min_data_mask(n_t, t.sy, n_g, g.sy, cfg.lift_min_listeners, cfg.lift_min_holdout_streams)
    plain = est.lift_interval(n_t, t.sy, t.syy, n_g, g.sy, g.syy, min_n=cfg.lift_min_listeners,
                              min_holdout_streams=cfg.lift_min_holdout_streams)
    adjusted = est.lift_interval_adjusted(n_t, t.sy, t.syy, t.sx, t.sxx, t.sxy, n_g, g.sy, g.syy, g.sx, g.sxx,
                                          g.sxy, min_n=cfg.lift_min_listeners,
                                          min_holdout_streams=cfg.lift_min_holdout_streams)
    intent = est.itt_interval(t.sy, t.syy, active["days_t"], g.sy, g.syy, active["days_g"],
                              min_holdout_streams=cfg.lift_min_holdout_streams)
    lift = [np.where(itt, i, a) for i, a in zip(intent, adjusted)]
    unadjusted = [np.where(itt, i, p) for i, p in zip(intent, plain)]
    incr = est.incremental_streams(n_t, t.sy, t.syy, n_g, g.sy, g.syy)
    # historical: exposures rows against the P days before the first selection,
    # intent-to-treat rows against the P days before the flight
    sel = np.where(itt, rows.flight_start, np.minimum(np.where(t.n > 0, t.first_day, 1 << 40),
                                                      np.where(g.n > 0, g.first_day, 1 << 40)))
    before = _window_sum(days, rows, sel - P, sel)
    after_days = np.where(itt, np.minimum(rows.flight_end, d) - rows.flight_start + 1, t.window_s / DAY_S)
    after = np.where(itt, _window_sum(days, rows, rows.flight_start.to_numpy(), np.minimum(rows.flight_end, d) + 1),
                     t.sy)
    before_days = np.where(itt, P, P * t.units).astype(float)
    seen = _observed(sel - P, sel, observed)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_day_before = np.where(seen & (before_days > 0), before / before_days, np.nan)
        per_day_after = np.where(after_days > 0, after / after_days, np.nan)
    historical = np.where(seen, est.historical_lift(before, before_days, after, after_days), np.nan)
    n_tracks = tracks.groupby(ROW).size().rename("n").reset_index()
    exposed_tracks = rows[ROW].merge(n_tracks, on=ROW, how="left").n.fillna(0).to_numpy()
    exposed_tracks = np.where(itt, campaigns.to_pandas().groupby(["campaign_id", "market"]).size().reindex(
        pd.MultiIndex.from_frame(rows[["campaign_id", "market"]])).to_numpy(), exposed_tracks)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = {
            "score_date": score_date, "snapshot_id": snapshot_id,
            "campaign_id": rows.campaign_id, "market": rows.market, "surface": rows.surface,
            "exposed_listeners_treated": np.rint(n_t).astype(np.int64),
            "exposed_listeners_holdout": np.rint(n_g).astype(np.int64),
            "lift": lift[0], "lift_low": lift[1], "lift_high": lift[2], "historical_lift": historical,
            "method": rows.method, "licensor_id": rows.licensor_id,
            "flight_start": _dates(rows.flight_start), "flight_end": _dates(rows.flight_end),
            "flight_days": rows.flight_days.astype(np.int64),
            "first_exposure_date": [None if i else x for i, x in zip(itt, _dates(sel))],
            "exposed_tracks": exposed_tracks.astype(np.int64),
            "streams_per_listener_treated": t.sy / n_t, "streams_per_listener_holdout": g.sy / n_g,
            "incremental_streams": incr[0], "incremental_streams_low": incr[1], "incremental_streams_high": incr[2],
            "lift_unadjusted": unadjusted[0], "lift_unadjusted_low": unadjusted[1],
            "lift_unadjusted_high": unadjusted[2],
            "new_listeners_treated": [None if i else int(x) for i, x in zip(itt, t.new)],
            "new_listeners_holdout": [None if i else int(x) for i, x in zip(itt, g.new)],
            "saves_treated": t.savers, "saves_holdout": g.savers,
            "intent_rate_treated": t.savers / n_t, "intent_rate_holdout": g.savers / n_g,
            "streams_per_day_before": per_day_before, "streams_per_day_after": per_day_after,
        }
    keep = valid & np.isfinite(lift[0]) & np.isfinite(lift[1]) & np.isfinite(lift[2])
    schema = CAMPAIGN_LIFT.arrow()
    arrays = []
    for f in schema:
        v = cols[f.name]
        if f.name in ("score_date", "snapshot_id"):
            arrays.append(pa.repeat(pa.scalar(v, f.type), int(keep.sum())))
            continue
        v = np.asarray(v, dtype=object if f.type in (pa.string(), pa.date32()) or f.nullable else None)[keep]
        if f.nullable and pa.types.is_floating(f.type):
            v = [None if x is None or not np.isfinite(x) else float(x) for x in v]
        arrays.append(pa.array(v, f.type, from_pandas=True))
    out = pa.Table.from_arrays(arrays, schema=schema)
    return out.sort_by([(k, "ascending") for k in CAMPAIGN_LIFT.key])


def _dates(days) -> list[dt.date]:
    return [EPOCH + dt.timedelta(days=int(x)) for x in np.asarray(days)]


def _active_listener_days(market_listeners: pa.Table, rows: pd.DataFrame, d: int, observed) -> dict:
    """Per row: active listener-days by logged holdout flag over its flight days
    up to D, and the number of those days with counts."""
    ml = market_listeners.drop_columns(["dt"]).to_pandas().assign(day=_daynums(market_listeners.column("dt")))
    j = rows[["market", "flight_start", "flight_end"]].assign(_i=np.arange(len(rows))).merge(ml, on="market")
    inside = (j.day >= j.flight_start) & (j.day <= np.minimum(j.flight_end, d))
    j = j[inside]
    n = len(rows)
    out = {"days_t": np.bincount(j._i[~j.holdout], j.listeners[~j.holdout], n),
           "days_g": np.bincount(j._i[j.holdout], j.listeners[j.holdout], n),
           "days": np.bincount(j.drop_duplicates(["_i", "day"])._i, minlength=n)}
    return out
