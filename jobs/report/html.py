"""The run report: one self-contained `report.html` per snapshot.

Written by `jobs.daily.run` just before the manifest, which lists it under
"report" with its size and sha256. The page has no external references: CSS is
inline and the plots are inline SVG, built here as plain strings (numpy for the
binning, no plotting library), so it opens anywhere, from a local folder or a
bucket download, and costs a few tens of milliseconds to draw.

Contents: the key numbers of the run (rows read, dead-lettered, duplicates
removed, eligible rows and why the others are not, validation results) and four
plots: the score distribution of eligible rows, capacity used per (market,
surface), delivery against the floor per campaign (shortfalls highlighted) and
the score drift against the previous snapshot. It is built from the published
tables and the manifest only, so it never contains user ids; every piece of
text in it, plots included, goes through `html.escape`.
"""
from __future__ import annotations

import hashlib
import html
import logging
import math
from collections import Counter

import numpy as np
import pandas as pd


from jobs.snapshots import store as publish
from pipelines import storage
from schemas import PROMOTION_SURFACES

log = logging.getLogger(__name__)

REPORT = "report.html"
WIDTH = 960            # px, every plot (10 in at 96 dpi)
FONT = 11              # px, tick labels; axis labels are a pixel larger
SURFACE_COLORS = {"radio": "#1f77b4", "autoplay": "#ff7f0e", "mixes": "#2ca02c"}
PLANNED, CAPACITY, SHORT = "#1f77b4", "#c7c7c7", "#d62728"
MAX_CAMPAIGNS = 30     # campaigns shown in the delivery plot
MAX_TABLE_ROWS = 15    # rows in the shortfall and drift tables
SCORE_COLUMNS = ["track_id", "market", "surface", "eligible", "score"]
DELIVERY_COLUMNS = ["campaign_id", "market", "surface", "floor", "planned", "shortfall", "pacing_multiplier"]
CAPACITY_COLUMNS = ["market", "surface", "capacity", "planned_total", "shadow_price"]


# -------------------------------------------------------------- entry ---
def write_report(snapshot_dir: str, manifest: dict, tables: dict, previous: tuple[str, dict] | None) -> dict:
    """Render `report.html` into the snapshot folder; return its manifest entry."""
    data = render(manifest, tables, previous).encode("utf-8")
    storage.write_bytes(storage.join(snapshot_dir, REPORT), data)
    return {"path": REPORT, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_report_or_error(snapshot_dir: str, manifest: dict, tables: dict,
                          previous: tuple[str, dict] | None) -> dict:
    """As `write_report`, but a failure to draw the report does not stop the
    publish: it is logged and recorded in the manifest as {"error": ...}."""
    try:
        return write_report(snapshot_dir, manifest, tables, previous)
    except Exception as e:  # noqa: BLE001 - the report is not part of the data contract
        log.warning("run report not written: %s: %s", type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


# ------------------------------------------------------------- render ---
def render(manifest: dict, tables: dict, previous: tuple[str, dict] | None) -> str:
    scores = _pandas(tables["promotion_scores"], SCORE_COLUMNS)
    delivery = _pandas(tables["campaign_delivery"], DELIVERY_COLUMNS)
    capacity = _pandas(tables["capacity"], CAPACITY_COLUMNS)
    e = html.escape
    sid, score_date = manifest["snapshot_id"], manifest["score_date"]

    sections = [
        "<h1>OASIS run report</h1>",
        f"<p class='sub'>snapshot <b>{e(sid)}</b> &middot; score date <b>{e(score_date)}</b> &middot; "
        f"logs up to {e(str(manifest.get('as_of', '')))} &middot; created {e(str(manifest.get('created_at', '')))}"
        f" &middot; code {e(str(manifest.get('code_version', '')))}</p>",
        _key_numbers(manifest, scores),
        _section("score-distribution", "Score distribution (eligible rows)", *_plot_scores(scores)),
        _section("capacity", "Capacity used per market and surface", *_plot_capacity(capacity)),
        _section("delivery", "Delivery against the floor per campaign", *_plot_delivery(delivery)),
        _section("drift", "Score drift against the previous snapshot", *_plot_drift(scores, previous)),
        _details(manifest, scores),
        _config(manifest),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>OASIS report {e(score_date)} {e(sid)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


CSS = """
body{font-family:sans-serif;margin:24px auto;max-width:1100px;color:#222;background:#fff;line-height:1.35}
h1{margin:0 0 4px 0;font-size:26px} h2{font-size:19px;margin:28px 0 8px 0;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0 0 12px 0;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:18px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card .n{font-size:22px;font-weight:bold} .card .l{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px;margin:6px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:bold} .bad{color:#b42318;font-weight:bold}
figure{margin:8px 0} figure svg{display:block;max-width:100%;height:auto;border:1px solid #eee}
svg text{fill:#222}
figcaption{font-size:12px;color:#555} .empty{color:#555;font-style:italic;padding:16px;border:1px dashed #bbb}
"""


def _pandas(t, columns: list[str]) -> pd.DataFrame:
    """The columns the report uses (converting the others to pandas would cost more than drawing)."""
    if hasattr(t, "select"):
        return t.select(columns).to_pandas()
    return pd.DataFrame(t)[columns]


def _section(anchor: str, title: str, svg: str | None, caption: str, extra: str = "") -> str:
    e = html.escape
    if svg is None:
        body = f"<p class='empty'>{e(caption)}</p>"
    else:
        body = f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"
    return f"<section id='{anchor}'><h2>{e(title)}</h2>{body}{extra}</section>"


# ------------------------------------------------------------ SVG kit ---
# Just enough of a plotting library: a frame maps data to pixels, and a few
# functions write the marks, axes and legends as SVG elements. Coordinates are
# pixels with the origin at the top left; every text goes through html.escape.
def _n(v: float) -> str:
    """A coordinate, to a tenth of a pixel."""
    return f"{v:.1f}".replace(".0", "") if abs(v) < 1e6 else f"{v:.0f}"


class _Frame:
    """A plot area: its pixel box and the linear maps from data to pixels."""

    def __init__(self, left: float, top: float, width: float, height: float,
                 xlim: tuple[float, float], ylim: tuple[float, float]):
        self.left, self.top, self.width, self.height = left, top, width, height
        self.xlim, self.ylim = xlim, ylim

    def x(self, v):
        x0, x1 = self.xlim
        return self.left + (np.asarray(v, float) - x0) * (self.width / (x1 - x0))

    def y(self, v):
        y0, y1 = self.ylim
        return self.top + self.height - (np.asarray(v, float) - y0) * (self.height / (y1 - y0))


def _svg(anchor: str, title: str, width: float, height: float, parts: list[str]) -> str:
    e = html.escape
    w, h = _n(width), _n(height)
    return (f"<svg id='plot-{anchor}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
            f"aria-label='{e(title)}' font-family='sans-serif' font-size='{FONT}'>"
            f"<title>{e(title)}</title><rect width='{w}' height='{h}' fill='#fff'/>" + "".join(parts) + "</svg>")


def _text(x: float, y: float, s: str, anchor: str = "start", size: int | None = None, color: str | None = None,
          rotate: bool = False, cls: str = "") -> str:
    """Text vertically centred on y (rotated a quarter turn, reading upwards, if `rotate`)."""
    attrs = f" text-anchor='{anchor}'" if anchor != "start" else ""
    attrs += f" font-size='{size}'" if size else ""
    attrs += f" style='fill:{color}'" if color else ""
    attrs += f" class='{cls}'" if cls else ""
    if rotate:
        attrs += f" transform='rotate(-90 {_n(x)} {_n(y)})'"
    return f"<text x='{_n(x)}' y='{_n(y)}' dy='0.35em'{attrs}>{html.escape(s)}</text>"


def _rect(x: float, y: float, w: float, h: float, fill: str, cls: str = "", n: int | None = None,
          tip: str = "", stroke: bool = False) -> str:
    """A bar; `n` (the rows it stands for) and `tip` (a tooltip) are optional."""
    attrs = f" class='{cls}'" if cls else ""
    attrs += f" data-n='{n}'" if n is not None else ""
    attrs += " stroke='#fff' stroke-width='0.8'" if stroke else ""
    tail = f"><title>{html.escape(tip)}</title></rect>" if tip else "/>"
    return (f"<rect x='{_n(x)}' y='{_n(y)}' width='{_n(max(w, 0.0))}' height='{_n(max(h, 0.0))}' "
            f"fill='{fill}'{attrs}{tail}")


def _ticks(lo: float, hi: float, n: int = 6, integer: bool = False) -> tuple[list[float], float]:
    """Round tick values inside [lo, hi] at most n + 1 of them, and their step."""
    span = hi - lo
    if not span > 0:
        return [lo], 1.0
    mag = 10.0 ** math.floor(math.log10(span / n))
    step = 10 * mag
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * mag) <= n and not (integer and m * mag < 1):
            step = m * mag
            break
    step = max(step, 1.0) if integer else step
    first = math.ceil(lo / step - 1e-9)
    ticks = [(first + k) * step for k in range(int(math.floor(hi / step + 1e-9)) - first + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], step


def _tick_label(v: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * step), 6)
    return f"{v:,.{decimals}f}"


def _axes(f: _Frame, xlabel: str, ylabel: str = "", xticks: bool = True, yticks: bool = True,
          integer_y: bool = False) -> list[str]:
    """The frame's box, tick marks and labels on the bottom and left, axis labels."""
    out = [f"<rect x='{_n(f.left)}' y='{_n(f.top)}' width='{_n(f.width)}' height='{_n(f.height)}' "
           f"fill='none' stroke='#333' stroke-width='0.8'/>"]
    bottom = f.top + f.height
    if xticks:
        ticks, step = _ticks(*f.xlim)
        for t in ticks:
            x = float(f.x(t))
            out.append(f"<line x1='{_n(x)}' y1='{_n(bottom)}' x2='{_n(x)}' y2='{_n(bottom + 4)}' stroke='#333'/>")
            out.append(_text(x, bottom + 12, _tick_label(t, step), anchor="middle", cls="tick"))
    if yticks:
        ticks, step = _ticks(*f.ylim, integer=integer_y)
        for t in ticks:
            y = float(f.y(t))
            out.append(f"<line x1='{_n(f.left - 4)}' y1='{_n(y)}' x2='{_n(f.left)}' y2='{_n(y)}' stroke='#333'/>")
            out.append(_text(f.left - 6, y, _tick_label(t, step), anchor="end", cls="tick"))
    out.append(_text(f.left + f.width / 2, bottom + 30, xlabel, anchor="middle", size=FONT + 1))
    if ylabel:
        out.append(_text(f.left - 46, f.top + f.height / 2, ylabel, anchor="middle", size=FONT + 1, rotate=True))
    return out


def _category_axis(f: _Frame, labels: list[str], colors: list[str | None]) -> list[str]:
    """Tick marks and labels on the left of a horizontal bar chart, one per row (row i centred at y = i)."""
    out = []
    for i, (label, color) in enumerate(zip(labels, colors)):
        y = float(f.y(i))
        out.append(f"<line x1='{_n(f.left - 4)}' y1='{_n(y)}' x2='{_n(f.left)}' y2='{_n(y)}' stroke='#333'/>")
        out.append(_text(f.left - 6, y, label, anchor="end", color=color, cls="tick"))
    return out


def _legend(x: float, y: float, items: list[tuple[str, str]], title: str = "") -> list[str]:
    """A row of coloured swatches with their labels, starting at (x, y)."""
    out = ["<g class='legend'>"]
    if title:
        out.append(_text(x, y, title + ":"))
        x += _text_width(title + ":") + 10
    for label, color in items:
        out.append(f"<rect x='{_n(x)}' y='{_n(y - 5)}' width='18' height='10' fill='{color}'/>")
        out.append(_text(x + 23, y, label))
        x += 23 + _text_width(label) + 18
    out.append("</g>")
    return out


def _text_width(s: str, size: int = FONT) -> float:
    """Roughly how wide a text is in a sans-serif font, to keep labels inside the plot."""
    return 0.6 * size * len(s)


def _bar_xmax(values: np.ndarray, labels: list[str], width: float) -> float:
    """The right end of a bar chart's x axis: room for the longest bar plus its label (and 5 % more)."""
    xmax = float(np.max(values, initial=0.0)) * 1.05 or 1.0
    for v, label in zip(values, labels):
        room = width - _text_width(label) - 8
        if room > width / 3 and v > 0:
            xmax = max(xmax, float(v) * width / room)
    return xmax


# --------------------------------------------------------- key numbers ---
def _key_numbers(manifest: dict, scores: pd.DataFrame) -> str:
    e = html.escape
    metrics = manifest.get("metrics", {}) or {}
    read = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("rows_read/")}
    dupes = sum(v for k, v in metrics.items() if k.startswith("duplicates_removed/"))
    dead = manifest.get("dead_letter_count", sum(v for k, v in metrics.items() if k.startswith("dead_lettered/")))
    eligible = metrics.get("rows_eligible", int(scores["eligible"].sum()) if len(scores) else 0)
    ineligible = metrics.get("rows_ineligible", int((~scores["eligible"]).sum()) if len(scores) else 0)
    reasons = Counter({k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("ineligible/")})
    validation = manifest.get("validation", []) or []
    failed = [c for c in validation if not c.get("passed") and not c.get("skipped")]

    cards = [(f"{v:,}", f"{k} rows read") for k, v in sorted(read.items())]
    cards += [(f"{dead:,}", "dead-lettered rows"), (f"{dupes:,}", "repeated events removed"),
              (f"{eligible:,}", "eligible rows"), (f"{ineligible:,}", "ineligible rows"),
              ("all passed" if not failed else f"{len(failed)} failed", "validation")]
    out = ["<section id='key-numbers'><h2>Key numbers</h2><div class='grid'>"]
    out += [f"<div class='card'><div class='n'>{e(n)}</div><div class='l'>{e(l)}</div></div>" for n, l in cards]
    out.append("</div>")
    if reasons:
        out.append("<p class='sub'>ineligible by reason: "
                   + " &middot; ".join(f"{e(r)} {n:,}" for r, n in reasons.most_common()) + "</p>")
    if failed:
        out.append("<p class='bad'>validation failed: " + ", ".join(e(str(c.get("name"))) for c in failed) + "</p>")
    out.append("</section>")
    return "".join(out)


def _details(manifest: dict, scores: pd.DataFrame) -> str:
    """The tables behind the key numbers: eligibility by reason, input checks,
    validation results, table sizes."""
    e = html.escape
    metrics = manifest.get("metrics", {}) or {}
    eligible = metrics.get("rows_eligible", int(scores["eligible"].sum()) if len(scores) else 0)
    reasons = Counter({k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("ineligible/")})
    validation = manifest.get("validation", []) or []
    out = ["<section id='details'><h2>Details</h2><div class='grid'>"]
    rows = "".join(f"<tr><td>{e(r)}</td><td class='num'>{n:,}</td></tr>" for r, n in reasons.most_common())
    out.append(f"<div><h3>Eligibility</h3><table><tr><th>reason</th><th>rows</th></tr>"
               f"<tr><td>eligible</td><td class='num'>{eligible:,}</td></tr>{rows}</table></div>")

    by_source = manifest.get("bad_rows", {}) or {}
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{v.get('rows', 0):,}</td>"
                   f"<td class='num'>{v.get('dead_lettered', 0):,}</td>"
                   f"<td class='num'>{100 * v.get('share', 0.0):.3f}%</td></tr>" for k, v in sorted(by_source.items()))
    out.append(f"<div><h3>Input checks</h3><table><tr><th>partition</th><th>rows</th><th>dead-lettered</th>"
               f"<th>share</th></tr>{rows}</table></div>")

    rows = "".join(
        f"<tr><td>{e(str(c.get('name')))}</td><td class='{'ok' if c.get('passed') else 'bad'}'>"
        f"{'passed' if c.get('passed') else 'FAILED'}</td><td>{e(str(c.get('detail', '')))}</td></tr>"
        for c in validation)
    out.append(f"<div><h3>Validation</h3><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
               f"{rows}</table></div>")

    inputs = manifest.get("inputs", {}) or {}
    tables = manifest.get("tables", {}) or {}
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{v.get('rows', 0):,}</td></tr>" for k, v in tables.items())
    missing = inputs.get("missing_window_days", []) or []
    out.append(
        f"<div><h3>Tables and aggregates</h3><table><tr><th>table</th><th>rows</th></tr>{rows}</table>"
        f"<p class='sub'>aggregates built for {len(inputs.get('built_days', []) or [])} day(s), reused "
        f"{len(inputs.get('stored_days', []) or [])}; window days without events: {len(missing)}</p></div>")
    out.append("</div></section>")
    return "".join(out)


def _config(manifest: dict) -> str:
    e = html.escape
    cfg = manifest.get("config", {}) or {}
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{e(str(v))}</td></tr>" for k, v in sorted(cfg.items()))
    return f"<section id='config'><h2>Config</h2><table><tr><th>parameter</th><th>value</th></tr>{rows}</table></section>"


# --------------------------------------------------------------- plots ---
def _hist_bars(f: _Frame, bins: np.ndarray, counts: np.ndarray, bottom: np.ndarray, color: str, what: str,
               cls: str = "mark bar") -> list[str]:
    """One rect per non-empty bin, stacked on `bottom`, with its row count."""
    x0, x1 = f.x(bins[:-1]), f.x(bins[1:])
    y_top, y_bottom = f.y(bottom + counts), f.y(bottom)
    return [_rect(x0[i], y_top[i], x1[i] - x0[i], y_bottom[i] - y_top[i], color, cls=cls, n=int(counts[i]),
                  tip=f"{what}{bins[i]:.2f} to {bins[i + 1]:.2f}: {int(counts[i]):,} rows", stroke=True)
            for i in np.flatnonzero(counts)]


def _plot_scores(scores: pd.DataFrame) -> tuple[str | None, str]:
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
    f = _Frame(76, 34, WIDTH - 76 - 24, height - 34 - 52, (0.0, 1.0), (0.0, max(float(total.max()) * 1.05, 1.0)))
    parts = _legend(f.left, 16, [(s, SURFACE_COLORS[s]) for s, _ in stacks], title="surface")
    bottom = np.zeros(len(bins) - 1)
    for s, counts in stacks:
        parts += _hist_bars(f, bins, counts, bottom, SURFACE_COLORS[s], f"{s}, score ")
        bottom = bottom + counts
    parts += _axes(f, "score = x / (rho*E)", "eligible rows", integer_y=True)
    s = el["score"]
    caption = (f"{len(el):,} eligible rows; mean score {s.mean():.3f}, median {s.median():.3f}; "
               f"{int((s >= 1 - 1e-9).sum()):,} at their track cap (score 1), {int((s <= 0).sum()):,} at 0")
    return _svg("score-distribution", "Score distribution (eligible rows)", WIDTH, height, parts), caption


def _hbar_frame(labels: list[str], ends: np.ndarray, notes: list[str], row: float) -> tuple[_Frame, float]:
    """The frame of a horizontal bar chart with one row per label, top to bottom (row i at y = i), bars
    ending at `ends` with a note after each; and the SVG's height."""
    left = max(60.0, max(_text_width(s) for s in labels) + 16)
    width = WIDTH - left - 24
    f = _Frame(left, 34, width, row * len(labels), (0.0, _bar_xmax(ends, notes, width)), (len(labels) - 0.5, -0.5))
    return f, 34 + row * len(labels) + 52


def _plot_capacity(capacity: pd.DataFrame) -> tuple[str | None, str]:
    if capacity.empty:
        return None, "no (market, surface) in this snapshot"
    c = capacity.sort_values(["market", "surface"]).reset_index(drop=True)
    labels = [f"{m} {s}" for m, s in zip(c["market"], c["surface"])]
    used, cap = c["planned_total"].to_numpy(float), c["capacity"].to_numpy(float)
    notes = [f"{(u / k if k > 0 else 0.0):.0%}" + (f"  price {p:.3g}" if p > 1e-9 else "")
             for u, k, p in zip(used, cap, c["shadow_price"])]
    ends = np.maximum(used, cap)
    f, height = _hbar_frame(labels, ends, notes, row=18)
    parts = _legend(f.left, 16, [("capacity K", CAPACITY), ("planned promoted plays", PLANNED)])
    x0, y = float(f.x(0)), f.y(np.arange(len(c)))
    row = f.height / len(c)
    for i in range(len(c)):
        parts.append(_rect(x0, y[i] - 0.4 * row, float(f.x(cap[i])) - x0, 0.8 * row, CAPACITY, cls="mark capacity"))
        parts.append(_rect(x0, y[i] - 0.25 * row, float(f.x(used[i])) - x0, 0.5 * row, PLANNED, cls="mark planned"))
        parts.append(_text(float(f.x(ends[i])) + 5, y[i], notes[i], size=FONT - 1))
    parts += _axes(f, "promoted plays on the score date", yticks=False)
    parts += _category_axis(f, labels, [None] * len(labels))
    full = int(((c["planned_total"] >= c["capacity"] * (1 - 1e-6)) & (c["capacity"] > 0)).sum())
    caption = (f"{len(c)} (market, surface) problems; {full} use their whole capacity; total planned "
               f"{c['planned_total'].sum():,.1f} of {c['capacity'].sum():,.1f} promoted plays")
    return _svg("capacity", "Capacity used per market and surface", WIDTH, height, parts), caption


def _plot_delivery(delivery: pd.DataFrame) -> tuple[str | None, str, str]:
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
    f, height = _hbar_frame(labels, ends, notes, row=20)
    legend = [("floor", CAPACITY), ("planned (floor met)", PLANNED)]
    if is_short.any():
        legend.append(("planned (short of the floor)", SHORT))
    parts = _legend(f.left, 16, legend)
    x0, y = float(f.x(0)), f.y(np.arange(len(shown)))
    row = f.height / len(shown)
    for i in range(len(shown)):
        parts.append(_rect(x0, y[i] - 0.4 * row, float(f.x(floor[i])) - x0, 0.8 * row, CAPACITY, cls="mark floor"))
        colour, cls = (SHORT, "mark planned short") if is_short[i] else (PLANNED, "mark planned")
        parts.append(_rect(x0, y[i] - 0.225 * row, float(f.x(planned[i])) - x0, 0.45 * row, colour, cls=cls))
        if is_short[i]:
            parts.append(_text(float(f.x(ends[i])) + 5, y[i], notes[i], size=FONT - 1, color=SHORT))
    parts += _axes(f, "promoted plays on the score date", yticks=False)
    parts += _category_axis(f, labels, [SHORT if s else None for s in is_short])
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
    return _svg("delivery", "Delivery against the floor per campaign", WIDTH, height, parts), caption, extra


def _previous_scores(previous: tuple[str, dict] | None) -> tuple[pd.DataFrame | None, str]:
    if previous is None:
        return None, "no previous snapshot: this is the first published score date under this output root"
    folder, manifest = previous
    try:
        files = [storage.join(folder, f["path"]) for f in manifest["tables"]["promotion_scores"]["files"]]
        prev = publish.read_table_files(files, "promotion_scores",
                                        ["track_id", "market", "surface", "score"]).to_pandas()
    except Exception as e:  # noqa: BLE001 - a damaged previous snapshot only loses the drift plot
        return None, f"previous snapshot {manifest.get('snapshot_id')} could not be read ({type(e).__name__}: {e})"
    return prev, ""


def _plot_drift(scores: pd.DataFrame, previous: tuple[str, dict] | None) -> tuple[str | None, str, str]:
    prev, why = _previous_scores(previous)
    if prev is None:
        return None, why, ""
    pm = previous[1]
    key = ["track_id", "market", "surface"]
    j = scores[key + ["score"]].merge(prev[key + ["score"]], on=key, suffixes=("", "_prev"), how="inner")
    label = f"previous snapshot {pm.get('snapshot_id')} (score date {pm.get('score_date')})"
    if j.empty:
        return None, f"no (track, market, surface) in common with the {label}", ""
    d = (j["score"] - j["score_prev"]).to_numpy(float)
    changed = np.abs(d) > 1e-9
    height, panel = 380, 372
    f1 = _Frame(66, 34, panel, height - 34 - 52, (-0.03, 1.03), (-0.03, 1.03))
    surface, xy = j["surface"].to_numpy(), j[["score_prev", "score"]].to_numpy(float)
    on = {s: surface == s for s in PROMOTION_SURFACES}
    parts = _legend(f1.left, 16, [(s, SURFACE_COLORS[s]) for s in PROMOTION_SURFACES if on[s].any()])
    x1, y1 = f1.x([0.0, 1.0]), f1.y([0.0, 1.0])
    parts.append(f"<line x1='{_n(x1[0])}' y1='{_n(y1[0])}' x2='{_n(x1[1])}' y2='{_n(y1[1])}' stroke='#888' "
                 f"stroke-dasharray='5 3'/>")
    for s in PROMOTION_SURFACES:
        parts += _points(f1, xy[on[s]], SURFACE_COLORS[s], s)
    parts += _axes(f1, f"previous score ({pm.get('score_date')})", "score")
    f2 = _Frame(WIDTH - 24 - panel, 34, panel, f1.height, (-1.0, 1.0), (0.0, 1.0))
    if changed.any():
        bins = np.linspace(-1, 1, 41)
        counts, _ = np.histogram(d[changed], bins=bins)
        f2.ylim = (0.0, max(float(counts.max()) * 1.05, 1.0))
        parts += _hist_bars(f2, bins, counts, np.zeros(len(counts)), PLANNED, "change ")
    else:
        parts.append(_text(f2.left + f2.width / 2, f2.top + f2.height / 2, "no score changed", anchor="middle"))
    parts += _axes(f2, f"score - previous score ({int((~changed).sum()):,} unchanged rows not shown)",
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
    return _svg("drift", "Score drift against the previous snapshot", WIDTH, height, parts), caption, extra


def _points(f: _Frame, xy: np.ndarray, color: str, label: str, radius: float = 2.5, alpha: float = 0.6) -> list[str]:
    """A scatter of rows as dots. Rows that land on the same half pixel are drawn as one dot standing for all of
    them (`data-n`), as opaque as that many dots of opacity `alpha` on top of each other: the same picture as
    one dot per row, for a fraction of the page size (a snapshot has tens of thousands of rows on a few hundred
    distinct spots)."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    if not len(xy):
        return []
    px = np.column_stack([f.x(xy[:, 0]), f.y(xy[:, 1])])
    half = np.round(px * 2).astype(np.int64)  # half pixels, inside the SVG so not negative
    spots, counts = np.unique((half[:, 0] << 20) | half[:, 1], return_counts=True)
    opacity = 1 - (1 - alpha) ** counts
    e = html.escape(label)
    return [f"<circle class='mark point' data-surface='{e}' data-n='{n}' cx='{_n((k >> 20) / 2)}' "
            f"cy='{_n((k & 0xFFFFF) / 2)}' r='{radius}' fill='{color}' fill-opacity='{o:.3f}'/>"
            for k, n, o in zip(spots.tolist(), counts.tolist(), opacity.tolist())]
