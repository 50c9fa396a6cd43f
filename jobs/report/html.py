"""The run report: one self-contained `report.html` per snapshot.

Written by `jobs.run.daily` just before the manifest, which lists it under
"report" with its size and sha256. The page has no external references: CSS is
inline and the plots are inline SVG (`jobs.report.svg`, `jobs.report.plots`),
built as plain strings (numpy for the binning, no plotting library), so it opens
anywhere, from a local folder or a bucket download, and costs a few tens of
milliseconds to draw.

Contents: the key numbers of the run (rows read, dead-lettered, duplicates
removed, eligible rows and why the others are not, validation results), six
plots: the score distribution of eligible rows, capacity used per (market,
surface), delivery against the floor per campaign (shortfalls highlighted),
planned against delivered promoted plays per (market, surface) over the last
28 reconciled days (`jobs.report.delivery`), the score drift against the
previous snapshot and each campaign's lift against the holdout with its 95%
interval beside its before/after figure (`jobs.report.lift`); and fair
exposure per (market, surface): planned plays by artist size decile against
eligible tracks, and the Gini coefficient (`jobs.report.exposure`). It is
built from the published
tables and the manifest only, so it never contains user ids; every piece of
text in it, plots included, goes through `html.escape`.
"""
from __future__ import annotations

import hashlib
import html
import logging
from collections import Counter

import pandas as pd

from jobs import layout
from jobs.manifest import Manifest
from jobs.report import exposure
from jobs.report.delivery import plot_planned_delivered
from jobs.report.lift import COLUMNS as LIFT_COLUMNS
from jobs.report.lift import plot_lift
from jobs.report.plots import plot_capacity, plot_delivery, plot_drift, plot_scores
from pipelines import storage

log = logging.getLogger(__name__)

SCORE_COLUMNS = ["track_id", "market", "surface", "eligible", "score"]
DELIVERY_COLUMNS = ["campaign_id", "market", "surface", "floor", "planned", "shortfall", "pacing_multiplier"]
CAPACITY_COLUMNS = ["market", "surface", "capacity", "planned_total", "shadow_price"]


def write_report(snapshot_dir: str, manifest: Manifest, tables: dict,
                 previous: tuple[str, Manifest] | None, history: pd.DataFrame | None = None) -> dict:
    """Render `report.html` into the snapshot folder; return its manifest entry.
    history: the reconciled days behind the planned-against-delivered plot
    (`jobs.report.delivery.delivery_history`)."""
    data = render(manifest, tables, previous, history).encode("utf-8")
    storage.write_bytes(storage.join(snapshot_dir, layout.REPORT), data)
    return {"path": layout.REPORT, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_report_or_error(snapshot_dir: str, manifest: Manifest, tables: dict,
                          previous: tuple[str, Manifest] | None, history=None) -> dict:
    """As `write_report`, but a failure to draw the report does not stop the
    publish: it is logged and recorded in the manifest as {"error": ...}.
    `history` may be a function returning it (its failure is the report's too)."""
    try:
        return write_report(snapshot_dir, manifest, tables, previous, history() if callable(history) else history)
    except Exception as e:  # noqa: BLE001 - the report is not part of the data contract
        log.warning("run report not written: %s: %s", type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


def render(manifest: Manifest, tables: dict, previous: tuple[str, Manifest] | None,
           history: pd.DataFrame | None = None) -> str:
    scores = _pandas(tables["promotion_scores"], SCORE_COLUMNS)
    delivery = _pandas(tables["campaign_delivery"], DELIVERY_COLUMNS)
    capacity = _pandas(tables["capacity"], CAPACITY_COLUMNS)
    lift = (_pandas(tables["campaign_lift"], LIFT_COLUMNS) if "campaign_lift" in tables
            else pd.DataFrame(columns=LIFT_COLUMNS))
    e = html.escape
    sid, score_date = manifest.snapshot_id, manifest.score_date.isoformat()

    sections = [
        "<h1>OASIS run report</h1>",
        f"<p class='sub'>snapshot <b>{e(sid)}</b> &middot; score date <b>{e(score_date)}</b> &middot; "
        f"logs up to {e(manifest.as_of.isoformat())} &middot; created {e(manifest.created_at.isoformat())}"
        f" &middot; code {e(manifest.code_version)}</p>",
        _key_numbers(manifest, scores),
        _section("score-distribution", "Score distribution (eligible rows)", *plot_scores(scores)),
        _section("capacity", "Capacity used per market and surface", *plot_capacity(capacity)),
        _section("delivery", "Delivery against the floor per campaign", *plot_delivery(delivery)),
        _section("planned-delivered", "Planned and delivered promoted plays per market and surface (last 28 days)",
                 *plot_planned_delivered(history, manifest.score_date)),
        _section("drift", "Score drift against the previous snapshot", *plot_drift(scores, previous)),
        _fair_exposure(_pandas(tables["promotion_scores"], exposure.SCORE_COLUMNS)),
        _section("campaign-lift", "Campaign lift against the holdout", *plot_lift(lift)),
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


def _key_numbers(manifest: Manifest, scores: pd.DataFrame) -> str:
    e = html.escape
    metrics = manifest.metrics
    read = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("rows_read/")}
    dupes = sum(v for k, v in metrics.items() if k.startswith("duplicates_removed/"))
    dead = manifest.dead_letter_count
    eligible = metrics.get("rows_eligible", int(scores["eligible"].sum()) if len(scores) else 0)
    ineligible = metrics.get("rows_ineligible", int((~scores["eligible"]).sum()) if len(scores) else 0)
    reasons = Counter({k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("ineligible/")})
    failed = manifest.blocking_gates
    warned = [r for r in manifest.validation if r.warning]

    cards = [(f"{v:,}", f"{k} rows read") for k, v in sorted(read.items())]
    cards += [(f"{dead:,}", "dead-lettered rows"), (f"{dupes:,}", "repeated events removed"),
              (f"{eligible:,}", "eligible rows"), (f"{ineligible:,}", "ineligible rows"),
              (manifest.validation_text, "validation")]
    out = ["<section id='key-numbers'><h2>Key numbers</h2><div class='grid'>"]
    out += [f"<div class='card'><div class='n'>{e(n)}</div><div class='l'>{e(l)}</div></div>" for n, l in cards]
    out.append("</div>")
    if reasons:
        out.append("<p class='sub'>ineligible by reason: "
                   + " &middot; ".join(f"{e(r)} {n:,}" for r, n in reasons.most_common()) + "</p>")
    if failed:
        out.append("<p class='bad'>validation failed: " + ", ".join(e(name) for name in failed) + "</p>")
    for r in warned:
        out.append(f"<p class='bad'>WARNING from the {e(r.name)} gate (warn-only, published): {e(r.detail)}</p>")
    out.append("</section>")
    return "".join(out)


def _fair_exposure(scores: pd.DataFrame) -> str:
    """Per (market, surface): each artist size decile's share of planned
    promoted plays / share of eligible tracks, and the Gini coefficient. The
    exact numbers are in data- attributes."""
    e = html.escape
    deciles, summary = exposure.fair_exposure(scores)
    cells = {(r.market, r.surface, r.size_decile): r for r in deciles.itertuples(index=False)}
    head = "".join(f"<th>d{d}</th>" for d in range(1, exposure.DECILES + 1))
    rows = []
    for r in summary.itertuples(index=False):
        tds = []
        for d in range(1, exposure.DECILES + 1):
            c = cells.get((r.market, r.surface, d))
            if c is None:
                tds.append("<td class='num'>&ndash;</td>")
                continue
            planned = "n/a" if pd.isna(c.planned_share) else f"{100 * c.planned_share:.1f}%"
            tds.append(f"<td class='num' data-decile='{d}' data-artists='{c.artists}' "
                       f"data-planned-share='{_exact(c.planned_share)}' "
                       f"data-track-share='{_exact(c.eligible_track_share)}'>"
                       f"{planned} / {100 * c.eligible_track_share:.1f}%</td>")
        gini = "n/a" if pd.isna(r.gini) else f"{r.gini:.3f}"
        rows.append(f"<tr data-market='{e(r.market)}' data-surface='{e(r.surface)}' data-gini='{_exact(r.gini)}'>"
                    f"<td>{e(r.market)}</td><td>{e(r.surface)}</td><td class='num'>{r.artists:,}</td>"
                    f"<td class='num'>{gini}</td>{''.join(tds)}</tr>")
    if not rows:
        body = "<p class='empty'>no eligible rows in this snapshot</p>"
    else:
        body = (f"<table id='fair-exposure-table'><tr><th>market</th><th>surface</th><th>artists</th><th>Gini</th>"
                f"{head}</tr>{''.join(rows)}</table>")
    return ("<section id='fair-exposure'><h2>Fair exposure: planned plays by artist size</h2>"
            "<p class='sub'>Artists with an eligible track, in size deciles by forecast organic plays (d1 "
            "smallest); each cell is the decile's share of planned promoted plays / its share of eligible "
            "tracks. Gini of planned plays across artists: 0 equal, 1 all to one.</p>" + body + "</section>")


def _exact(v) -> str:
    return "" if v is None or pd.isna(v) else repr(float(v))


def _details(manifest: Manifest, scores: pd.DataFrame) -> str:
    """The tables behind the key numbers: eligibility by reason, input checks,
    validation results, table sizes."""
    e = html.escape
    metrics = manifest.metrics
    eligible = metrics.get("rows_eligible", int(scores["eligible"].sum()) if len(scores) else 0)
    reasons = Counter({k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("ineligible/")})
    out = ["<section id='details'><h2>Details</h2><div class='grid'>"]
    rows = "".join(f"<tr><td>{e(r)}</td><td class='num'>{n:,}</td></tr>" for r, n in reasons.most_common())
    out.append(f"<div><h3>Eligibility</h3><table><tr><th>reason</th><th>rows</th></tr>"
               f"<tr><td>eligible</td><td class='num'>{eligible:,}</td></tr>{rows}</table></div>")

    by_source = manifest.bad_rows
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{v.get('rows', 0):,}</td>"
                   f"<td class='num'>{v.get('dead_lettered', 0):,}</td>"
                   f"<td class='num'>{100 * v.get('share', 0.0):.3f}%</td></tr>" for k, v in sorted(by_source.items()))
    out.append(f"<div><h3>Input checks</h3><table><tr><th>partition</th><th>rows</th><th>dead-lettered</th>"
               f"<th>share</th></tr>{rows}</table></div>")

    rows = "".join(
        f"<tr><td>{e(c.name)}</td><td class='{'ok' if c.passed else 'bad'}'>"
        f"{_verdict(c)}</td>"
        f"<td>{e(c.detail)}</td></tr>"
        for c in manifest.validation)
    out.append(f"<div><h3>Validation</h3><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
               f"{rows}</table></div>")

    inputs = manifest.inputs
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{v.rows:,}</td></tr>" for k, v in manifest.tables.items())
    out.append(
        f"<div><h3>Tables and aggregates</h3><table><tr><th>table</th><th>rows</th></tr>{rows}</table>"
        f"<p class='sub'>aggregates built for {len(inputs.built_days)} day(s), reused "
        f"{len(inputs.stored_days)}; window days without events: {len(inputs.missing_window_days)}</p></div>")
    out.append("</div></section>")
    return "".join(out)


def _verdict(gate) -> str:
    if gate.passed:
        return "passed"
    return "FAILED, skipped by hand" if gate.skipped else "WARNING (warn-only)" if gate.warning else "FAILED"


def _config(manifest: Manifest) -> str:
    e = html.escape
    cfg = manifest.config
    rows = "".join(f"<tr><td>{e(k)}</td><td class='num'>{e(str(v))}</td></tr>" for k, v in sorted(cfg.items()))
    return f"<section id='config'><h2>Config</h2><table><tr><th>parameter</th><th>value</th></tr>{rows}</table></section>"
