"""An independent reference for campaign_lift: the per-listener outcomes
computed with pandas straight from the raw input files (no Beam, no daily
facts, no shards), to check the pipeline's table against.

Same definitions as `pipelines.lift.measure` (docs/analysts.md): first
exposure per (campaign, market, surface, track, user); window from it to the
end of day d0 + W - 1 (capped at the last day of logs); pre-period the P days
before d0; streams are plays of at least 30 s; repeated event and exposure ids
count once.
"""
from __future__ import annotations

import datetime as dt
import glob
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROW = ["campaign_id", "market", "surface"]


def _read(root: str, table: str, last: dt.date) -> pd.DataFrame:
    parts = []
    for f in sorted(glob.glob(os.path.join(root, table, "dt=*", "*.parquet"))):
        if dt.date.fromisoformat(f.split("dt=")[1][:10]) <= last:
            parts.append(pq.read_table(f).to_pandas())
    return pd.concat(parts, ignore_index=True)


def arm_stats(root: str, as_of: dt.date, window_days: int, pre_days: int) -> pd.DataFrame:
    """Per (campaign, market, surface, arm): n, sum and sum of squares of Y, the
    pre-period sums, new listeners and savers."""
    plays = _read(root, "engagement", as_of).drop_duplicates("event_id")
    x = _read(root, "exposures", as_of).drop_duplicates("exposure_id")
    plays["day"] = plays.event_ts.dt.floor("D")
    plays["stream"] = (plays.ms_played >= 30_000).astype(int)
    plays["save"] = plays.saved.astype(int)
    unit = ["campaign_id", "market", "surface", "track_id", "user_id"]
    x = x.sort_values(unit + ["event_ts"]).drop_duplicates(unit)
    x["d0"] = x.event_ts.dt.floor("D")
    last = pd.Timestamp(as_of, tz="UTC")
    x["wend"] = np.minimum(x.d0 + pd.Timedelta(days=window_days - 1), last) + pd.Timedelta(days=1)
    j = x.merge(plays[["track_id", "market", "user_id", "event_ts", "day", "stream", "save"]],
                on=["track_id", "market", "user_id"], how="left", suffixes=("_x", ""))
    in_window = (j.event_ts >= j.event_ts_x) & (j.event_ts < j.wend)
    pre = (j.day >= j.d0 - pd.Timedelta(days=pre_days)) & (j.day < j.d0)
    j["y"] = np.where(in_window, j.stream, 0)
    j["s"] = np.where(in_window, j.save, 0)
    j["xpre"] = np.where(pre, j.stream, 0)
    per = j.groupby(ROW + ["user_id", "arm"]).agg(y=("y", "sum"), x=("xpre", "sum"), s=("s", "sum")).reset_index()
    per["yy"], per["xx"], per["xy"] = per.y ** 2, per.x ** 2, per.x * per.y
    return per.groupby(ROW + ["arm"]).agg(
        n=("y", "size"), sy=("y", "sum"), syy=("yy", "sum"), sx=("x", "sum"), sxx=("xx", "sum"),
        sxy=("xy", "sum"), new=("x", lambda v: int((v == 0).sum())), savers=("s", lambda v: int((v > 0).sum()))
    ).reset_index()
