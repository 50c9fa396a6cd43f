"""The run report's planned-against-delivered plot: per (market, surface), the
promoted plays planned for each of the last 28 reconciled days and those its
logs held, with the serving gain the plan divided by.

Each snapshot reconciles one day (the logs day, its score date minus one) and
keeps the sums per (market, surface) in `capacity` (reconciled_planned,
reconciled_realised), so the history is read from the capacity tables of the
newest published snapshot of each of the 27 score dates before this one, plus
this run's own.
"""
from __future__ import annotations

import datetime as dt
import html
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs import layout
from jobs.report.svg import FONT, WIDTH, Frame, fmt_number, legend, svg, text, tick_label, tick_values
from jobs.snapshots import store
from pipelines.beam.io import read_published_columns
from schemas import CAPACITY, PROMOTION_SURFACES

log = logging.getLogger(__name__)

HISTORY_DAYS = 28
COLUMNS = ["market", "surface", "reconciled_planned", "reconciled_realised", "serving_gain"]
PLANNED, REALISED = "#1f77b4", "#ff7f0e"
PANEL_HEIGHT = 96


def delivery_history(output_root: str, score_date: dt.date, capacity: pa.Table) -> pd.DataFrame:
    """Per reconciled day, market and surface over the last HISTORY_DAYS days:
    planned and realised promoted plays and the serving gain of the plan
    (`day`: the logs day, score date minus one). Snapshots that cannot be read
    are left out (the plot is not data)."""
    first = score_date - dt.timedelta(days=HISTORY_DAYS - 1)
    newest = {}
    for folder, m in store.list_manifests(output_root):
        if first <= m.score_date < score_date:
            newest[m.score_date] = (folder, m)      # oldest first: the newest of each date wins
    parts = [_rows(capacity.select([c for c in COLUMNS if c in capacity.column_names]), score_date)]
    for day, (folder, m) in sorted(newest.items()):
        try:
            files = [layout.listed_file(folder, f.path) for f in m.table_files("capacity")]
            parts += [_rows(read_published_columns(f, CAPACITY, COLUMNS), day) for f in files]
        except Exception as e:  # noqa: BLE001 - a damaged old snapshot only loses its day in the plot
            log.warning("report: capacity of %s not read: %s", m.snapshot_id, e)
    out = pd.concat(parts, ignore_index=True)
    out = out[out["planned"].notna() & out["realised"].notna()]
    return out.sort_values(["market", "surface", "day"]).reset_index(drop=True)


def _rows(t: pa.Table, score_date: dt.date) -> pd.DataFrame:
    df = pd.DataFrame({c: t.column(c).to_pandas() if c in t.column_names else np.nan for c in COLUMNS})
    df = df.rename(columns={"reconciled_planned": "planned", "reconciled_realised": "realised"})
    df["day"] = score_date - dt.timedelta(days=1)
    # a day with nothing planned (no plan was published for it, an older snapshot) has nothing to compare
    return df[df["planned"].fillna(0) > 0]


def plot_planned_delivered(history: pd.DataFrame | None, score_date: dt.date) -> tuple[str | None, str, str]:
    if history is None or history.empty:
        return None, ("no reconciled day yet: a snapshot reconciles the plan of its logs day once the snapshot "
                      "of that day has been published"), ""
    pairs = sorted({(m, s) for m, s in zip(history["market"], history["surface"])},
                   key=lambda p: (p[0], PROMOTION_SURFACES.index(p[1]) if p[1] in PROMOTION_SURFACES else 9))
    first = score_date - dt.timedelta(days=HISTORY_DAYS + 1)   # day k of the window at x = k; the logs day at 28
    cols, gap = 3, 22
    width = (WIDTH - 16 - gap * (cols - 1)) / cols
    left_pad, top_pad, bottom_pad = 52, 18, 20
    rows = (len(pairs) + cols - 1) // cols
    height = 30 + rows * (PANEL_HEIGHT + top_pad + bottom_pad)
    parts = legend(16, 14, [("planned", PLANNED), ("realised (logs)", REALISED)])
    table = []
    for i, (market, surface) in enumerate(pairs):
        h = history[(history["market"] == market) & (history["surface"] == surface)]
        x0 = 8 + (i % cols) * (width + gap)
        y0 = 30 + (i // cols) * (PANEL_HEIGHT + top_pad + bottom_pad) + top_pad
        days = np.array([(d - first).days for d in h["day"]], dtype=float)
        planned, realised = h["planned"].to_numpy(float), h["realised"].to_numpy(float)
        top = max(float(np.nanmax(np.concatenate([planned, realised]))) * 1.1, 1.0)
        f = Frame(x0 + left_pad, y0, width - left_pad - 6, PANEL_HEIGHT, (0.5, HISTORY_DAYS + 0.5), (0.0, top))
        last = h.iloc[-1]
        ratio = last["realised"] / last["planned"] if last["planned"] > 0 else float("nan")
        title = f"{market} {surface}: last day {ratio:.2f} of plan, gain {last['serving_gain']:.2f}" \
            if np.isfinite(ratio) and np.isfinite(last["serving_gain"]) else f"{market} {surface}"
        parts.append(text(f.left, y0 - 8, title, size=FONT))
        parts += _panel(f, days, planned, realised)
        table.append((market, surface, h["planned"].sum(), h["realised"].sum(), len(h)))
    total_p = sum(r[2] for r in table)
    total_r = sum(r[3] for r in table)
    caption = (f"{len(pairs)} (market, surface), {history['day'].nunique()} reconciled day(s) from "
               f"{history['day'].min()} to {history['day'].max()}: {total_r:,.0f} promoted plays delivered of "
               f"{total_p:,.0f} planned ({total_r / total_p if total_p else float('nan'):.1%})")
    e = html.escape
    body = "".join(f"<tr><td>{e(m)}</td><td>{e(s)}</td><td class='num'>{p:,.0f}</td><td class='num'>{r:,.0f}</td>"
                   f"<td class='num'>{(r / p if p else float('nan')):.3f}</td><td class='num'>{n}</td></tr>"
                   for m, s, p, r, n in table)
    extra = (f"<table><tr><th>market</th><th>surface</th><th>planned</th><th>realised</th><th>ratio</th>"
             f"<th>days</th></tr>{body}</table>")
    return svg("planned-delivered", "Planned and delivered promoted plays", WIDTH, height, parts), caption, extra


def _panel(f: Frame, days: np.ndarray, planned: np.ndarray, realised: np.ndarray) -> list[str]:
    out = [f"<rect x='{fmt_number(f.left)}' y='{fmt_number(f.top)}' width='{fmt_number(f.width)}' "
           f"height='{fmt_number(f.height)}' fill='none' stroke='#333' stroke-width='0.8'/>"]
    ticks, step = tick_values(*f.ylim, n=3)
    for t in ticks:
        y = float(f.y(t))
        out.append(text(f.left - 4, y, tick_label(t, step), anchor="end", size=FONT - 2, cls="tick"))
    bottom = f.top + f.height
    for d in (1, HISTORY_DAYS // 2, HISTORY_DAYS):
        out.append(text(float(f.x(d)), bottom + 9, f"-{HISTORY_DAYS - d + 1}d", anchor="middle", size=FONT - 2))
    for values, color, cls in ((planned, PLANNED, "planned"), (realised, REALISED, "realised")):
        xy = " ".join(f"{fmt_number(float(x))},{fmt_number(float(y))}" for x, y in zip(f.x(days), f.y(values)))
        out.append(f"<polyline class='line {cls}' points='{xy}' fill='none' stroke='{color}' stroke-width='1.6'/>")
        out += [f"<circle class='mark {cls}' cx='{fmt_number(float(x))}' cy='{fmt_number(float(y))}' r='1.8' "
                f"fill='{color}'/>" for x, y in zip(f.x(days), f.y(values))]
    return out
