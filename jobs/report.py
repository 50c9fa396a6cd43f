"""The run report: one self-contained `report.html` per snapshot.

Written by `jobs.daily.run` just before the manifest, which lists it under
"report" with its size and sha256. The page has no external references: CSS is
inline and the plots are PNGs (matplotlib, Agg backend) embedded as base64
data URIs, so it opens anywhere, from a local folder or a bucket download.

Contents: the key numbers of the run (rows read, dead-lettered, duplicates
removed, eligible rows and why the others are not, validation results) and four
plots: the score distribution of eligible rows, capacity used per (market,
surface), delivery against the floor per campaign (shortfalls highlighted) and
the score drift against the previous snapshot. It is built from the published
tables and the manifest only, so it never contains user ids.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
from collections import Counter

import numpy as np
import pandas as pd

from jobs import publish
from pipelines import storage
from schemas import PROMOTION_SURFACES

log = logging.getLogger(__name__)

REPORT = "report.html"
DPI = 96
SURFACE_COLORS = {"radio": "#1f77b4", "autoplay": "#ff7f0e", "mixes": "#2ca02c"}
PLANNED, CAPACITY, SHORT = "#1f77b4", "#c7c7c7", "#d62728"
MAX_CAMPAIGNS = 30     # campaigns shown in the delivery plot
MAX_TABLE_ROWS = 15    # rows in the shortfall and drift tables


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
    scores = _pandas(tables["promotion_scores"])
    delivery = _pandas(tables["campaign_delivery"])
    capacity = _pandas(tables["capacity"])
    e = html.escape
    sid, score_date = manifest["snapshot_id"], manifest["score_date"]

    sections = [
        f"<h1>OASIS run report</h1>",
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
figure{margin:8px 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555} .empty{color:#555;font-style:italic;padding:16px;border:1px dashed #bbb}
"""


def _pandas(t) -> pd.DataFrame:
    return t.to_pandas() if hasattr(t, "to_pandas") else pd.DataFrame(t)


def _section(anchor: str, title: str, image: str | None, caption: str, extra: str = "") -> str:
    e = html.escape
    if image is None:
        body = f"<p class='empty'>{e(caption)}</p>"
    else:
        body = (f"<figure><img id='plot-{anchor}' alt='{e(title)}' src='data:image/png;base64,{image}'>"
                f"<figcaption>{e(caption)}</figcaption></figure>")
    return f"<section id='{anchor}'><h2>{e(title)}</h2>{body}{extra}</section>"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float, left: float = 0.8, bottom: float = 0.55, top: float = 0.15, right: float = 0.25,
            wspace: float = 0.25):
    """A figure with fixed margins in inches (faster than a layout engine, which
    draws every figure twice)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(w, h))
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace)
    return fig


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
def _plot_scores(scores: pd.DataFrame) -> tuple[str | None, str]:
    el = scores[scores["eligible"]] if len(scores) else scores
    if el.empty:
        return None, "no eligible rows in this snapshot"
    fig = _figure(10, 3.6)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    bottom = np.zeros(len(bins) - 1)
    for s in PROMOTION_SURFACES:
        counts, _ = np.histogram(np.clip(el.loc[el["surface"] == s, "score"].to_numpy(float), 0, 1), bins=bins)
        if counts.any():
            ax.bar(bins[:-1], counts, width=np.diff(bins), bottom=bottom, align="edge", label=s,
                   color=SURFACE_COLORS[s], edgecolor="white")
            bottom += counts
    ax.set_xlabel("score = x / (rho*E)")
    ax.set_ylabel("eligible rows")
    ax.set_xlim(0, 1)
    ax.legend(title="surface")
    s = el["score"]
    caption = (f"{len(el):,} eligible rows; mean score {s.mean():.3f}, median {s.median():.3f}; "
               f"{int((s >= 1 - 1e-9).sum()):,} at their track cap (score 1), {int((s <= 0).sum()):,} at 0")
    return _png(fig), caption


def _plot_capacity(capacity: pd.DataFrame) -> tuple[str | None, str]:
    if capacity.empty:
        return None, "no (market, surface) in this snapshot"
    c = capacity.sort_values(["market", "surface"], ascending=[False, False]).reset_index(drop=True)
    labels = [f"{m} {s}" for m, s in zip(c["market"], c["surface"])]
    fig = _figure(10, min(1.2 + 0.3 * len(c), 14), left=1.2, right=0.3, top=0.4)
    ax = fig.add_subplot()
    y = np.arange(len(c))
    ax.barh(y, c["capacity"], color=CAPACITY, label="capacity K", height=0.8)
    ax.barh(y, c["planned_total"], color=PLANNED, label="planned promoted plays", height=0.5)
    for yi, (used, cap, price) in enumerate(zip(c["planned_total"], c["capacity"], c["shadow_price"])):
        share = used / cap if cap > 0 else 0.0
        ax.text(max(used, cap), yi, f"  {share:.0%}" + (f"  price {price:.3g}" if price > 1e-9 else ""),
                va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("promoted plays on the score date")
    ax.margins(x=0.12)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    full = int(((c["planned_total"] >= c["capacity"] * (1 - 1e-6)) & (c["capacity"] > 0)).sum())
    caption = (f"{len(c)} (market, surface) problems; {full} use their whole capacity; total planned "
               f"{c['planned_total'].sum():,.1f} of {c['capacity'].sum():,.1f} promoted plays")
    return _png(fig), caption


def _plot_delivery(delivery: pd.DataFrame) -> tuple[str | None, str, str]:
    if delivery.empty:
        return None, "no campaign is live on the score date", ""
    per = delivery.groupby("campaign_id", sort=True).agg(
        floor=("floor", "sum"), planned=("planned", "sum"), shortfall=("shortfall", "sum")).reset_index()
    short = per["shortfall"] > 1e-9
    per = per.assign(_s=short).sort_values(["_s", "shortfall", "floor", "campaign_id"],
                                            ascending=[False, False, False, True])
    shown = per.head(MAX_CAMPAIGNS).iloc[::-1].reset_index(drop=True)
    fig = _figure(10, min(1.2 + 0.26 * len(shown), 12), left=1.5, right=0.3, top=0.4)
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    ax.barh(y, shown["floor"], color=CAPACITY, height=0.8)
    is_short = shown["shortfall"] > 1e-9
    ax.barh(y, shown["planned"], color=np.where(is_short, SHORT, PLANNED), height=0.45, label="planned")
    for yi, (p, f, u) in enumerate(zip(shown["planned"], shown["floor"], shown["shortfall"])):
        if u > 1e-9:
            ax.text(max(p, f), yi, f"  short {u:.3g}", va="center", fontsize=8, color=SHORT)
    ax.set_yticks(y, shown["campaign_id"], fontsize=7)
    for lbl, s in zip(ax.get_yticklabels(), is_short):
        if s:
            lbl.set_color(SHORT)
    ax.set_xlabel("promoted plays on the score date")
    ax.margins(x=0.12)
    from matplotlib.patches import Patch

    handles = [Patch(color=CAPACITY, label="floor"), Patch(color=PLANNED, label="planned (floor met)")]
    if is_short.any():
        handles.append(Patch(color=SHORT, label="planned (short of the floor)"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
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
    return _png(fig), caption, extra


def _previous_scores(previous: tuple[str, dict] | None) -> tuple[pd.DataFrame | None, str]:
    if previous is None:
        return None, "no previous snapshot: this is the first published score date under this output root"
    folder, manifest = previous
    try:
        files = [storage.join(folder, f["path"]) for f in manifest["tables"]["promotion_scores"]["files"]]
        prev = publish.read_table_files(files, "promotion_scores").to_pandas()
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
    fig = _figure(10, 3.8, wspace=0.3)
    ax1, ax2 = fig.subplots(1, 2)
    for s in PROMOTION_SURFACES:
        m = (j["surface"] == s).to_numpy()
        if m.any():
            ax1.scatter(j.loc[m, "score_prev"], j.loc[m, "score"], s=14, alpha=0.6, color=SURFACE_COLORS[s], label=s)
    ax1.plot([0, 1], [0, 1], color="#888", lw=1, ls="--")
    ax1.set_xlim(-0.03, 1.03)
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_xlabel(f"previous score ({pm.get('score_date')})")
    ax1.set_ylabel("score")
    ax1.legend(fontsize=8)
    changed = np.abs(d) > 1e-9
    if changed.any():
        ax2.hist(d[changed], bins=np.linspace(-1, 1, 41), color=PLANNED, edgecolor="white")
    else:
        ax2.text(0.5, 0.5, "no score changed", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlim(-1, 1)
    ax2.set_xlabel(f"score - previous score ({int((~changed).sum()):,} unchanged rows not shown)")
    ax2.set_ylabel("changed rows")
    new = len(scores) - len(j)
    gone = len(prev) - len(j)
    caption = (f"against the {label}: {len(j):,} rows in both, {int(changed.sum()):,} changed, "
               f"mean |difference| {np.abs(d).mean():.4f}, largest {np.abs(d).max():.4f}; "
               f"{new:,} new rows, {gone:,} rows no longer enrolled")
    top = j.assign(diff=d, absdiff=np.abs(d)).sort_values(["absdiff"] + key, ascending=[False, True, True, True])
    top = top[top["absdiff"] > 1e-9].head(MAX_TABLE_ROWS)
    extra = ""
    if len(top):
        e = html.escape
        body = "".join(f"<tr><td>{e(r.track_id)}</td><td>{e(r.market)}</td><td>{e(r.surface)}</td>"
                       f"<td class='num'>{r.score_prev:.3f}</td><td class='num'>{r.score:.3f}</td>"
                       f"<td class='num'>{r.diff:+.3f}</td></tr>" for r in top.itertuples())
        extra = (f"<table><tr><th>track</th><th>market</th><th>surface</th><th>previous</th><th>score</th>"
                 f"<th>change</th></tr>{body}</table>")
    return _png(fig), caption, extra
