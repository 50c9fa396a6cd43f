"""The run report's four plots, each from the published tables (and the
previous snapshot's scores for drift): (svg or None, caption, extra html)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from jobs import layout
from jobs.manifest import Manifest
from jobs.report.svg import (FONT, WIDTH, Frame, axes, bar_xmax, category_axis, fmt_number, legend, points, rect, svg,
                             text, text_width)
from jobs.snapshots import store
from schemas import PROMOTION_SURFACES

SURFACE_COLORS = {"radio": "#1f77b4", "autoplay": "#ff7f0e", "mixes": "#2ca02c"}
PLANNED, CAPACITY, SHORT = "#1f77b4", "#c7c7c7", "#d62728"
MAX_CAMPAIGNS = 30     # campaigns shown in the delivery plot
MAX_TABLE_ROWS = 15    # rows in the shortfall and drift tables


def hist_bars(f: Frame, bins: np.ndarray, counts: np.ndarray, bottom: np.ndarray, color: str, what: str,
               cls: str = "mark bar") -> list[str]:
    """One rect per non-empty bin, stacked on `bottom`, with its row count."""
    x0, x1 = f.x(bins[:-1]), f.x(bins[1:])
    y_top, y_bottom = f.y(bottom + counts), f.y(bottom)
    return [rect(x0[i], y_top[i], x1[i] - x0[i], y_bottom[i] - y_top[i], color, cls=cls, n=int(counts[i]),
                  tip=f"{what}{bins[i]:.2f} to {bins[i + 1]:.2f}: {int(counts[i]):,} rows", stroke=True)
            for i in np.flatnonzero(counts)]


def plot_scores(scores: pd.DataFrame) -> tuple[str | None, str]:
    el = scores[scores["eligible"]] if len(scores) else scores
    if el.empty:
        return None, "no eligible rows in this snapshot"
    bins = np.linspace(0.0, 1.0, 21)
    stacks = []
    for s in PROMOTION_SURFACES:
        counts, _ = np.histogram(np.clip(el.loc[el["surface"] == s, "score"].to_numpy(float), 0, 1), bins=bins)
        if counts.any():
            stacks.append((s, counts))
    total = sum(c for _, c in stacks)
    height = 370
    f = Frame(76, 34, WIDTH - 76 - 24, height - 34 - 52, (0.0, 1.0), (0.0, max(float(total.max()) * 1.05, 1.0)))
    parts = legend(f.left, 16, [(s, SURFACE_COLORS[s]) for s, _ in stacks], title="surface")
    bottom = np.zeros(len(bins) - 1)
    for s, counts in stacks:
        parts += hist_bars(f, bins, counts, bottom, SURFACE_COLORS[s], f"{s}, score ")
        bottom = bottom + counts
    parts += axes(f, "score = x / (rho*E)", "eligible rows", integer_y=True)
    s = el["score"]
    caption = (f"{len(el):,} eligible rows; mean score {s.mean():.3f}, median {s.median():.3f}; "
               f"{int((s >= 1 - 1e-9).sum()):,} at their track cap (score 1), {int((s <= 0).sum()):,} at 0")
    return svg("score-distribution", "Score distribution (eligible rows)", WIDTH, height, parts), caption


def hbar_frame(labels: list[str], ends: np.ndarray, notes: list[str], row: float) -> tuple[Frame, float]:
    """The frame of a horizontal bar chart with one row per label, top to bottom (row i at y = i), bars
    ending at `ends` with a note after each; and the SVG's height."""
    left = max(60.0, max(text_width(s) for s in labels) + 16)
    width = WIDTH - left - 24
    f = Frame(left, 34, width, row * len(labels), (0.0, bar_xmax(ends, notes, width)), (len(labels) - 0.5, -0.5))
    return f, 34 + row * len(labels) + 52


def plot_capacity(capacity: pd.DataFrame) -> tuple[str | None, str]:
    if capacity.empty:
        return None, "no (market, surface) in this snapshot"
    c = capacity.sort_values(["market", "surface"]).reset_index(drop=True)
    labels = [f"{m} {s}" for m, s in zip(c["market"], c["surface"])]
    used, cap = c["planned_total"].to_numpy(float), c["capacity"].to_numpy(float)
    notes = [f"{(u / k if k > 0 else 0.0):.0%}" + (f"  price {p:.3g}" if p > 1e-9 else "")
             for u, k, p in zip(used, cap, c["shadow_price"])]
    ends = np.maximum(used, cap)
    f, height = hbar_frame(labels, ends, notes, row=18)
    parts = legend(f.left, 16, [("capacity K", CAPACITY), ("planned promoted plays", PLANNED)])
    x0, y = float(f.x(0)), f.y(np.arange(len(c)))
    row = f.height / len(c)
    for i in range(len(c)):
        parts.append(rect(x0, y[i] - 0.4 * row, float(f.x(cap[i])) - x0, 0.8 * row, CAPACITY, cls="mark capacity"))
        parts.append(rect(x0, y[i] - 0.25 * row, float(f.x(used[i])) - x0, 0.5 * row, PLANNED, cls="mark planned"))
        parts.append(text(float(f.x(ends[i])) + 5, y[i], notes[i], size=FONT - 1))
    parts += axes(f, "promoted plays on the score date", yticks=False)
    parts += category_axis(f, labels, [None] * len(labels))
    full = int(((c["planned_total"] >= c["capacity"] * (1 - 1e-6)) & (c["capacity"] > 0)).sum())
    caption = (f"{len(c)} (market, surface) problems; {full} use their whole capacity; total planned "
               f"{c['planned_total'].sum():,.1f} of {c['capacity'].sum():,.1f} promoted plays")
    return svg("capacity", "Capacity used per market and surface", WIDTH, height, parts), caption


def plot_delivery(delivery: pd.DataFrame) -> tuple[str | None, str, str]:
    if delivery.empty:
        return None, "no campaign is live on the score date", ""
    per = delivery.groupby("campaign_id", sort=True).agg(
        floor=("floor", "sum"), planned=("planned", "sum"), shortfall=("shortfall", "sum")).reset_index()
    short = per["shortfall"] > 1e-9
    per = per.assign(_s=short).sort_values(["_s", "shortfall", "floor", "campaign_id"],
                                            ascending=[False, False, False, True])
    shown = per.head(MAX_CAMPAIGNS).reset_index(drop=True)  # top to bottom: shortfalls first
    labels = [str(v) for v in shown["campaign_id"]]
    planned, floor, gap = (shown[k].to_numpy(float) for k in ("planned", "floor", "shortfall"))
    is_short = gap > 1e-9
    notes = [f"short {u:.3g}" if s else "" for u, s in zip(gap, is_short)]
    ends = np.maximum(planned, floor)
    f, height = hbar_frame(labels, ends, notes, row=20)
    items = [("floor", CAPACITY), ("planned (floor met)", PLANNED)]
    if is_short.any():
        items.append(("planned (short of the floor)", SHORT))
    parts = legend(f.left, 16, items)
    x0, y = float(f.x(0)), f.y(np.arange(len(shown)))
    row = f.height / len(shown)
    for i in range(len(shown)):
        parts.append(rect(x0, y[i] - 0.4 * row, float(f.x(floor[i])) - x0, 0.8 * row, CAPACITY, cls="mark floor"))
        colour, cls = (SHORT, "mark planned short") if is_short[i] else (PLANNED, "mark planned")
        parts.append(rect(x0, y[i] - 0.225 * row, float(f.x(planned[i])) - x0, 0.45 * row, colour, cls=cls))
        if is_short[i]:
            parts.append(text(float(f.x(ends[i])) + 5, y[i], notes[i], size=FONT - 1, color=SHORT))
    parts += axes(f, "promoted plays on the score date", yticks=False)
    parts += category_axis(f, labels, [SHORT if s else None for s in is_short])
    n_short = int(short.sum())
    caption = (f"{len(per):,} campaigns live ({len(delivery):,} campaign, market and surface rows); "
               f"{n_short} short of their floor by {per['shortfall'].sum():,.2f} promoted plays in total"
               + (f"; showing the {len(shown)} with a shortfall or the largest floors" if len(per) > len(shown)
                  else ""))
    rows = delivery[delivery["shortfall"] > 1e-9].sort_values(["shortfall", "campaign_id"], ascending=[False, True])
    extra = ""
    if len(rows):
        e = html.escape
        body = "".join(
            f"<tr><td>{e(r.campaign_id)}</td><td>{e(r.market)}</td><td>{e(r.surface)}</td>"
            f"<td class='num'>{r.floor:,.2f}</td><td class='num'>{r.planned:,.2f}</td>"
            f"<td class='num bad'>{r.shortfall:,.2f}</td><td class='num'>{r.pacing_multiplier:.2f}</td></tr>"
            for r in rows.head(MAX_TABLE_ROWS).itertuples())
        extra = (f"<table><tr><th>campaign</th><th>market</th><th>surface</th><th>floor</th><th>planned</th>"
                 f"<th>shortfall</th><th>pacing</th></tr>{body}</table>")
    return svg("delivery", "Delivery against the floor per campaign", WIDTH, height, parts), caption, extra


def previous_scores(previous: tuple[str, Manifest] | None) -> tuple[pd.DataFrame | None, str]:
    if previous is None:
        return None, "no previous snapshot: this is the first published score date under this output root"
    folder, manifest = previous
    try:
        files = [layout.listed_file(folder, f.path) for f in manifest.table_files("promotion_scores")]
        prev = store.read_table_files(files, "promotion_scores",
                                      ["track_id", "market", "surface", "score"]).to_pandas()
    except Exception as e:  # noqa: BLE001 - a damaged previous snapshot only loses the drift plot
        return None, f"previous snapshot {manifest.snapshot_id} could not be read ({type(e).__name__}: {e})"
    return prev, ""


def plot_drift(scores: pd.DataFrame, previous: tuple[str, Manifest] | None) -> tuple[str | None, str, str]:
    prev, why = previous_scores(previous)
    if prev is None:
        return None, why, ""
    pm = previous[1]
    key = ["track_id", "market", "surface"]
    j = scores[key + ["score"]].merge(prev[key + ["score"]], on=key, suffixes=("", "_prev"), how="inner")
    label = f"previous snapshot {pm.snapshot_id} (score date {pm.score_date})"
    if j.empty:
        return None, f"no (track, market, surface) in common with the {label}", ""
    d = (j["score"] - j["score_prev"]).to_numpy(float)
    changed = np.abs(d) > 1e-9
    height, panel = 380, 372
    f1 = Frame(66, 34, panel, height - 34 - 52, (-0.03, 1.03), (-0.03, 1.03))
    surface, xy = j["surface"].to_numpy(), j[["score_prev", "score"]].to_numpy(float)
    on = {s: surface == s for s in PROMOTION_SURFACES}
    parts = legend(f1.left, 16, [(s, SURFACE_COLORS[s]) for s in PROMOTION_SURFACES if on[s].any()])
    x1, y1 = f1.x([0.0, 1.0]), f1.y([0.0, 1.0])
    parts.append(f"<line x1='{fmt_number(x1[0])}' y1='{fmt_number(y1[0])}' x2='{fmt_number(x1[1])}' y2='{fmt_number(y1[1])}' stroke='#888' "
                 f"stroke-dasharray='5 3'/>")
    for s in PROMOTION_SURFACES:
        parts += points(f1, xy[on[s]], SURFACE_COLORS[s], s)
    parts += axes(f1, f"previous score ({pm.score_date})", "score")
    f2 = Frame(WIDTH - 24 - panel, 34, panel, f1.height, (-1.0, 1.0), (0.0, 1.0))
    if changed.any():
        bins = np.linspace(-1, 1, 41)
        counts, _ = np.histogram(d[changed], bins=bins)
        f2.ylim = (0.0, max(float(counts.max()) * 1.05, 1.0))
        parts += hist_bars(f2, bins, counts, np.zeros(len(counts)), PLANNED, "change ")
    else:
        parts.append(text(f2.left + f2.width / 2, f2.top + f2.height / 2, "no score changed", anchor="middle"))
    parts += axes(f2, f"score - previous score ({int((~changed).sum()):,} unchanged rows not shown)",
                   "changed rows", yticks=bool(changed.any()), integer_y=True)
    new = len(scores) - len(j)
    gone = len(prev) - len(j)
    caption = (f"against the {label}: {len(j):,} rows in both, {int(changed.sum()):,} changed, "
               f"mean |difference| {np.abs(d).mean():.4f}, largest {np.abs(d).max():.4f}; "
               f"{new:,} new rows, {gone:,} rows no longer enrolled")
    top = j[changed].assign(diff=d[changed], absdiff=np.abs(d[changed]))
    top = top.sort_values(["absdiff"] + key, ascending=[False, True, True, True]).head(MAX_TABLE_ROWS)
    extra = ""
    if len(top):
        e = html.escape
        body = "".join(f"<tr><td>{e(r.track_id)}</td><td>{e(r.market)}</td><td>{e(r.surface)}</td>"
                       f"<td class='num'>{r.score_prev:.3f}</td><td class='num'>{r.score:.3f}</td>"
                       f"<td class='num'>{r.diff:+.3f}</td></tr>" for r in top.itertuples())
        extra = (f"<table><tr><th>track</th><th>market</th><th>surface</th><th>previous</th><th>score</th>"
                 f"<th>change</th></tr>{body}</table>")
    return svg("drift", "Score drift against the previous snapshot", WIDTH, height, parts), caption, extra
