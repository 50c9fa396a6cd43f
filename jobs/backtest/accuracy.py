"""Forecast accuracy of one origin, and the summary of a backtest: pure
functions over numpy arrays and pandas frames (`oasis backtest` calls them;
`jobs.backtest.run` does the reading and writing).

For an origin D (the logs date), the forecasts for D+1 made from data up to D
are compared with D+1's actual plays. Per (market, surface) and per cohort of
the enrolled tracks, for each method:

  rows      forecasts compared
  forecast  their sum;  actual: the sum of the actual organic plays
  abs_error sum |forecast - actual|;  wape = abs_error / actual
  bias      (forecast - actual) / actual
  interval_coverage  share of rows whose actual lies in the 80% interval (model only)

Cohorts (a row may be in both of the first two): `new_enrollee` (the
(track, market) was not in the enrollment export a week before the origin),
`young_release` (released fewer than min_track_age_days before D+1),
`established` (neither) and `all`. The surface totals S are the cohort
`surface_total`, one row per (market, surface).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from schemas import PROMOTION_SURFACES

METHODS = ("model", "decayed_mean", "seasonal_naive")
COHORTS = ("all", "new_enrollee", "young_release", "established")
SURFACE_TOTAL = "surface_total"


def _metrics(forecast: np.ndarray, actual: np.ndarray, low=None, high=None) -> dict:
    f, a = np.asarray(forecast, float), np.asarray(actual, float)
    total = float(a.sum())
    out = {"rows": int(len(a)), "forecast": float(f.sum()), "actual": total,
           "abs_error": float(np.abs(f - a).sum())}
    out["wape"] = out["abs_error"] / total if total > 0 else None
    out["bias"] = (out["forecast"] - total) / total if total > 0 else None
    out["interval_coverage"] = (float(np.mean((low <= a) & (a <= high))) if low is not None and len(a) else None)
    return out


def origin_rows(origin: dt.date, market: str, forecasts: dict, actual: np.ndarray, totals: dict,
                actual_totals: np.ndarray, cohorts: dict) -> list[dict]:
    """forecast_accuracy rows (without backtest_id) of one origin and market.

    forecasts: method -> (point, low, high) (surface, track) arrays (low/high
        None for a baseline); actual: (surface, track) actual organic plays.
    totals: method -> (point, low, high) per surface; actual_totals: (surface,).
    cohorts: name -> (track,) bool mask."""
    rows = []
    target = origin + dt.timedelta(days=1)
    for s, surface in enumerate(PROMOTION_SURFACES):
        key = {"origin_date": origin, "target_date": target, "market": market, "surface": surface}
        for method in METHODS:
            point, low, high = forecasts[method]
            for cohort in COHORTS:
                sel = cohorts[cohort]
                if not sel.any():
                    continue
                m = _metrics(point[s][sel], actual[s][sel], None if low is None else low[s][sel],
                             None if high is None else high[s][sel])
                rows.append({**key, "cohort": cohort, "method": method, **m})
            t_point, t_low, t_high = totals[method]
            m = _metrics([t_point[s]], [actual_totals[s]], None if t_low is None else np.array([t_low[s]]),
                         None if t_high is None else np.array([t_high[s]]))
            rows.append({**key, "cohort": SURFACE_TOTAL, "method": method, **m})
    return rows


def cohorts_of(track_ids: np.ndarray, released: np.ndarray, target_num: int, min_age: int,
               exported_week_before: set | None) -> dict:
    """The cohort masks of a market's enrolled tracks (see the module docstring);
    exported_week_before: the track ids of the market in the export a week
    before the origin, None when that export is missing (no track is new)."""
    n = len(track_ids)
    new = (np.zeros(n, dtype=bool) if exported_week_before is None
           else ~np.isin(track_ids, np.array(sorted(exported_week_before), dtype=object)))
    young = target_num - np.asarray(released) < min_age
    return {"all": np.ones(n, dtype=bool), "new_enrollee": new, "young_release": young,
            "established": ~new & ~young}


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Over every origin, market and surface: per cohort and method, rows, WAPE
    (sum of absolute errors over sum of actuals), bias and interval coverage
    (weighted by rows); for surface_total the MAPE over its (origin, market,
    surface) rows instead of the WAPE."""
    out = []
    for (cohort, method), g in table.groupby(["cohort", "method"], sort=False):
        actual = g["actual"].sum()
        cover = g.dropna(subset=["interval_coverage"])
        row = {"cohort": cohort, "method": method, "rows": int(g["rows"].sum()), "origins": g["origin_date"].nunique(),
               "wape": g["abs_error"].sum() / actual if actual > 0 else np.nan,
               "bias": (g["forecast"].sum() - actual) / actual if actual > 0 else np.nan,
               "interval_coverage": (np.average(cover["interval_coverage"], weights=cover["rows"])
                                     if len(cover) else np.nan)}
        if cohort == SURFACE_TOTAL:
            ok = g["actual"] > 0
            row["mape"] = float(np.mean(g.loc[ok, "abs_error"] / g.loc[ok, "actual"])) if ok.any() else np.nan
        out.append(row)
    order = {c: i for i, c in enumerate(COHORTS + (SURFACE_TOTAL,))}
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    frame["_c"], frame["_m"] = frame["cohort"].map(order), frame["method"].map({m: i for i, m in enumerate(METHODS)})
    return frame.sort_values(["_c", "_m"]).drop(columns=["_c", "_m"]).reset_index(drop=True)


def summary_text(table: pd.DataFrame) -> str:
    """The summary as the table `oasis backtest` prints."""
    s = summary(table)
    if s.empty:
        return "no forecasts compared"
    head = (f"{'cohort':<16} {'rows':>9} | " + " | ".join(f"{m:>14}" for m in METHODS)
            + f" | {'model bias':>10} {'80% cover':>9}")
    lines = ["E: WAPE by method (S: MAPE)", head, "-" * len(head)]
    for cohort, g in s.groupby("cohort", sort=False):
        by = g.set_index("method")
        key = "mape" if cohort == SURFACE_TOTAL else "wape"
        cells = " | ".join(f"{by.loc[m, key]:>14.4f}" if m in by.index and pd.notna(by.loc[m, key]) else f"{'-':>14}"
                           for m in METHODS)
        model = by.loc["model"] if "model" in by.index else None
        bias = f"{model['bias']:>+10.2%}" if model is not None and pd.notna(model["bias"]) else f"{'-':>10}"
        cover = (f"{model['interval_coverage']:>9.1%}" if model is not None and pd.notna(model["interval_coverage"])
                 else f"{'-':>9}")
        rows = int(model["rows"]) if model is not None else int(g["rows"].max())
        lines.append(f"{('S ' if cohort == SURFACE_TOTAL else 'E ') + cohort:<16} {rows:>9,} | {cells} | {bias} {cover}")
    return "\n".join(lines)
