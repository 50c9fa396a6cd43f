"""The run report's campaign lift section: each campaign row's lift against the
holdout with its 95% interval, and the before/after (historical) figure beside
it, from the published campaign_lift table: (svg or None, caption, extra html)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from jobs.report.svg import WIDTH, Frame, axes, category_axis, fmt_number, legend, svg, text_width

LIFT, HISTORICAL, ZERO = "#1f77b4", "#ff7f0e", "#888"
MAX_ROWS = 30
COLUMNS = ["campaign_id", "market", "surface", "method", "exposed_listeners_treated", "exposed_listeners_holdout",
           "lift", "lift_low", "lift_high", "historical_lift", "incremental_streams"]


def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:+.1f}%"


def plot_lift(lift: pd.DataFrame) -> tuple[str | None, str, str]:
    if lift.empty:
        return None, ("no campaign has enough data for a lift yet (a row needs lift_min_flight_days of flight "
                      "and lift_min_listeners exposed listeners in each arm)"), ""
    rows = lift.sort_values(["exposed_listeners_treated", "campaign_id", "market", "surface"],
                            ascending=[False, True, True, True]).head(MAX_ROWS).reset_index(drop=True)
    labels = [f"{c} {m} {s}" for c, m, s in zip(rows.campaign_id, rows.market, rows.surface)]
    lo, hi, mid = (rows[k].to_numpy(float) for k in ("lift_low", "lift_high", "lift"))
    hist = rows["historical_lift"].to_numpy(float)
    values = np.concatenate([lo, hi, hist[np.isfinite(hist)], [0.0]])
    span = (float(values.min()), float(values.max()))
    pad = 0.05 * (span[1] - span[0] or 1.0)
    left = max(60.0, max(text_width(s) for s in labels) + 16)
    row = 20
    f = Frame(left, 34, WIDTH - left - 24, row * len(rows), (span[0] - pad, span[1] + pad),
              (len(rows) - 0.5, -0.5))
    parts = legend(f.left, 16, [("lift vs holdout, 95% interval", LIFT), ("historical (before/after)", HISTORICAL)])
    x0 = float(f.x(0.0))
    parts.append(f"<line x1='{fmt_number(x0)}' y1='{fmt_number(f.top)}' x2='{fmt_number(x0)}' "
                 f"y2='{fmt_number(f.top + f.height)}' stroke='{ZERO}' stroke-dasharray='4 3'/>")
    y = f.y(np.arange(len(rows)))
    for i in range(len(rows)):
        a, b, m = (float(f.x(v)) for v in (lo[i], hi[i], mid[i]))
        tip = html.escape(f"{labels[i]}: lift {_pct(mid[i])} ({_pct(lo[i])} to {_pct(hi[i])}), "
                          f"historical {_pct(hist[i])}, {rows.method[i]}")
        parts.append(f"<g><title>{tip}</title><line class='interval' x1='{fmt_number(a)}' y1='{fmt_number(y[i])}' "
                     f"x2='{fmt_number(b)}' y2='{fmt_number(y[i])}' stroke='{LIFT}' stroke-width='2'/>"
                     f"<circle class='mark lift' data-row='{i}' cx='{fmt_number(m)}' cy='{fmt_number(y[i])}' r='3.5' "
                     f"fill='{LIFT}'/></g>")
        if np.isfinite(hist[i]):
            h = float(f.x(hist[i]))
            parts.append(f"<path class='mark historical' d='M{fmt_number(h)} {fmt_number(y[i] - 5)} "
                         f"l4 5 l-4 5 l-4 -5 z' fill='none' stroke='{HISTORICAL}' stroke-width='1.5'/>")
    parts += axes(f, "lift (streams per exposed listener, treated over holdout, minus 1)", yticks=False)
    parts += category_axis(f, labels, [None] * len(labels))
    excludes = int(((lift.lift_low > 0) | (lift.lift_high < 0)).sum())
    itt = int((lift.method == "intent_to_treat").sum())
    caption = (f"{len(lift):,} campaign rows with a lift ({itt} intent-to-treat, no exposure log); {excludes} "
               f"with an interval that excludes 0; mean historical minus holdout lift "
               f"{np.nanmean((lift.historical_lift - lift.lift).to_numpy(float)):+.3f}"
               + (f"; showing the {len(rows)} with the most exposed listeners" if len(lift) > len(rows) else ""))
    e = html.escape
    body = "".join(
        f"<tr><td>{e(r.campaign_id)}</td><td>{e(r.market)}</td><td>{e(r.surface)}</td><td>{e(r.method)}</td>"
        f"<td class='num'>{r.exposed_listeners_treated:,}</td><td class='num'>{r.exposed_listeners_holdout:,}</td>"
        f"<td class='num'>{_pct(r.lift)}</td><td class='num'>{_pct(r.lift_low)} to {_pct(r.lift_high)}</td>"
        f"<td class='num'>{_pct(r.historical_lift)}</td><td class='num'>{r.incremental_streams:,.0f}</td></tr>"
        for r in rows.itertuples())
    extra = (f"<table><tr><th>campaign</th><th>market</th><th>surface</th><th>method</th><th>treated</th>"
             f"<th>holdout</th><th>lift</th><th>95% interval</th><th>historical</th><th>incremental streams</th>"
             f"</tr>{body}</table>")
    height = 34 + row * len(rows) + 52
    return svg("campaign-lift", "Campaign lift against the holdout", WIDTH, height, parts), caption, extra

