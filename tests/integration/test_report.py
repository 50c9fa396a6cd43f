"""The run report: written by every published run, listed in the manifest,
self-contained, and rendered for real in headless Chromium."""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import html as htmllib
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.cli import main as cli
from jobs.manifest import Manifest
from jobs.report import html as report
from jobs.report import lift as report_lift
from jobs.report import plots as report_plots
from jobs.run import summary
from jobs.snapshots import store as publish
from tests.support import worlds

DAY1 = (worlds.END - dt.timedelta(days=1)).isoformat()
DAY2 = worlds.END.isoformat()
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SVG = re.compile(r"<svg id='plot-([a-z-]+)'.*?</svg>", re.S)
MARK = re.compile(r"<(rect|circle)\b([^>]*\bclass='mark [^']*'[^>]*)>")
ATTR = re.compile(r"([a-z][a-z-]*)='([^']*)'")
ANCHORS = ("score-distribution", "capacity", "delivery", "planned-delivered", "drift")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1280,3000"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two daily runs on one small world: the second has a previous snapshot."""
    w = worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000, markets=2)
    out = str(tmp_path_factory.mktemp("out"))
    stdout = []
    for day in (DAY1, DAY2):
        o, e = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            rc = cli.main(["run", "--date", day, "--input", w, "--output", out])
        assert rc == 0, e.getvalue()[-3000:]
        stdout.append(o.getvalue())
    snaps = worlds.snapshot_dirs(out)
    assert len(snaps) == 2
    return {"world": w, "out": out, "snaps": snaps, "stdout": stdout,
            "html": [open(os.path.join(s, "report.html"), encoding="utf-8").read() for s in snaps]}


def _plots(html: str) -> dict[str, str]:
    """The inline SVG of each plot, by anchor, in page order."""
    return {m.group(1): m.group(0) for m in SVG.finditer(html)}


def _marks(svg: str, kind: str) -> list[dict]:
    """The data marks (bars, dots) of one kind in a plot, with their attributes."""
    out = []
    for tag, attrs in MARK.findall(svg):
        a = dict(ATTR.findall(attrs))
        if kind in a["class"].split():
            out.append({"tag": tag, **a})
    return out


def _proportional(sizes, values) -> bool:
    """Marks drawn to scale: size / value is one constant (to the tenth of a pixel they are rounded to)."""
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    nz = values > 0
    assert (sizes[~nz] == 0).all()
    if not nz.any():
        return True
    scale = sizes[nz].max() / values[nz].max()
    return bool(np.all(np.abs(sizes[nz] - values[nz] * scale) <= 0.15))


def test_report_is_written_and_listed_in_the_manifest(runs):
    for snap, stdout in zip(runs["snaps"], runs["stdout"]):
        m = worlds.manifest(snap)
        data = open(os.path.join(snap, "report.html"), "rb").read()
        assert m["report"] == {"path": "report.html", "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
        # `oasis run` (and so `make run`) prints where the report is
        assert f"  report:           {os.path.join(snap, 'report.html')}\n" in stdout


def _direct_fair_exposure(scores: pd.DataFrame) -> dict:
    """Fair exposure computed here, with loops, from promotion_scores: per
    (market, surface) the Gini (mean absolute difference over all pairs) and per
    size decile (NTILE(10) by organic plays, then artist_id) the planned and
    eligible-track shares."""
    out = {}
    for (market, surface), g in scores.groupby(["market", "surface"]):
        art = {}
        for r in g.itertuples(index=False):
            a = art.setdefault(r.artist_id, [0.0, 0, 0.0])
            a[0] += r.supply_forecast
            a[1] += int(r.eligible)
            a[2] += r.planned_promoted_plays
        rows = sorted((size, artist, el, x) for artist, (size, el, x) in art.items() if el > 0)
        n, total_x, total_el = len(rows), sum(r[3] for r in rows), sum(r[2] for r in rows)
        small, extra = divmod(n, 10)
        decile, seen = [], 0
        for d in range(1, 11):
            size = small + (1 if d <= extra else 0)
            decile += [d] * size
            seen += size
        shares = {}
        for d in sorted(set(decile)):
            members = [r for r, k in zip(rows, decile) if k == d]
            shares[d] = (sum(r[3] for r in members) / total_x if total_x > 0 else None,
                         sum(r[2] for r in members) / total_el, len(members))
        xs = [r[3] for r in rows]
        gini = (sum(abs(a - b) for a in xs for b in xs) / (2 * n * total_x)) if total_x > 0 else None
        out[(market, surface)] = {"gini": gini, "deciles": shares, "artists": n}
    return out


def test_fair_exposure_in_the_report_equals_a_direct_computation(runs):
    html, snap, out = runs["html"][1], runs["snaps"][1], runs["out"]
    want = _direct_fair_exposure(worlds.table(snap, "promotion_scores"))
    table = re.search(r"<table id='fair-exposure-table'>.*?</table>", html, re.S).group(0)
    rows = re.findall(r"<tr data-market='([A-Z]+)' data-surface='([a-z]+)' data-gini='([^']*)'>(.*?)</tr>", table)
    assert sorted((m, s) for m, s, _, _ in rows) == sorted(want) and len(rows) == 6
    for market, surface, gini, cells in rows:
        w = want[(market, surface)]
        assert w["gini"] is not None and float(gini) == pytest.approx(w["gini"], abs=1e-12)
        got = {int(d): (float(p), float(t), int(a)) for d, a, p, t in re.findall(
            r"data-decile='(\d+)' data-artists='(\d+)' data-planned-share='([^']*)' data-track-share='([^']*)'",
            cells)}
        assert sorted(got) == sorted(w["deciles"])
        for d, (planned, tracks, artists) in got.items():
            wp, wt, wa = w["deciles"][d]
            assert (planned, tracks, artists) == (pytest.approx(wp, abs=1e-12), pytest.approx(wt, abs=1e-12), wa)
    # the warehouse view computes the same numbers
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    try:
        view = con.execute("SELECT market, surface, size_decile, artists, planned_share, eligible_track_share, gini "
                           "FROM fair_exposure WHERE score_date = DATE '2026-11-25'").fetchall()
    finally:
        con.close()
    assert len(view) == sum(len(w["deciles"]) for w in want.values())
    for market, surface, d, artists, planned, tracks, gini in view:
        w = want[(market, surface)]
        assert (artists, planned, tracks, gini) == (w["deciles"][d][2], pytest.approx(w["deciles"][d][0], abs=1e-12),
                                                    pytest.approx(w["deciles"][d][1], abs=1e-12),
                                                    pytest.approx(w["gini"], abs=1e-12))


def test_report_is_self_contained_with_five_inline_plots(runs):
    html = runs["html"][1]
    plots = _plots(html)
    assert tuple(plots) == ANCHORS and html.count("<svg") == 5
    for anchor, svg in plots.items():
        w, h = (float(re.search(rf"\b{k}='([0-9.]+)'", svg).group(1)) for k in ("width", "height"))
        assert w >= 600 and h >= 150, anchor
        assert f"viewBox='0 0 {w:g} {h:g}'" in svg, anchor
        assert len(re.findall(r"class='mark ", svg)) >= 2, f"{anchor}: nothing drawn"
        assert len(re.findall(r"class='tick'>[^<]+</text>", svg)) >= 4, f"{anchor}: no tick labels"
    # nothing to fetch: no images, scripts, stylesheets, fonts or remote URLs
    for needle in ("<img", "<script", "<link", "<image", "<use", "href", "url(", "http://", "https://",
                   "@import", "src="):
        assert needle not in html, needle


def test_plots_draw_the_published_tables(runs):
    html, snap = runs["html"][1], runs["snaps"][1]
    m = worlds.manifest(snap)
    plots = _plots(html)

    # score distribution: stacked bars, one colour per surface, as many rows as are eligible, to scale
    scores = worlds.table(snap, "promotion_scores")
    eligible = scores[scores["eligible"]]
    bars = _marks(plots["score-distribution"], "bar")
    assert sum(int(b["data-n"]) for b in bars) == len(eligible) == m["metrics"]["rows_eligible"] > 0
    assert _proportional([float(b["height"]) for b in bars], [int(b["data-n"]) for b in bars])
    colours = {b["fill"] for b in bars}
    assert colours == {report_plots.SURFACE_COLORS[s] for s in eligible["surface"].unique()}
    for s in eligible["surface"].unique():
        assert f">{s}</text>" in plots["score-distribution"]  # in the legend

    # capacity: a grey capacity bar and a blue planned bar per (market, surface), to scale
    cap = worlds.table(snap, "capacity").sort_values(["market", "surface"])
    k, used = _marks(plots["capacity"], "capacity"), _marks(plots["capacity"], "planned")
    assert len(k) == len(used) == len(cap) == m["tables"]["capacity"]["rows"] > 0
    widths = [float(b["width"]) for b in k + used]
    assert _proportional(widths, list(cap["capacity"]) + list(cap["planned_total"]))
    for market, surface in zip(cap["market"], cap["surface"]):
        assert f"class='tick'>{market} {surface}</text>" in plots["capacity"]

    # delivery: a floor bar and a planned bar per campaign shown, red exactly for the short ones
    delivery = worlds.table(snap, "campaign_delivery")
    per = delivery.groupby("campaign_id")[["floor", "planned", "shortfall"]].sum()
    shown = min(len(per), report_plots.MAX_CAMPAIGNS)
    floors, planned = _marks(plots["delivery"], "floor"), _marks(plots["delivery"], "planned")
    assert len(floors) == len(planned) == shown > 0
    n_short = min(int((per["shortfall"] > 1e-9).sum()), shown)
    assert len(_marks(plots["delivery"], "short")) == n_short
    assert sum(b["fill"] == report_plots.SHORT for b in planned) == n_short
    assert _proportional([float(b["width"]) for b in floors + planned],
                         [per.loc[c, "floor"] for c in _delivery_order(plots["delivery"])]
                         + [per.loc[c, "planned"] for c in _delivery_order(plots["delivery"])])


def _delivery_order(svg: str) -> list[str]:
    """The campaigns on the delivery plot's axis, top to bottom."""
    return re.findall(r"class='tick'>([^<]+)</text>", svg.split("promoted plays on the score date</text>", 1)[1])


def test_report_has_the_key_numbers_of_the_manifest(runs):
    html, m = runs["html"][1], worlds.manifest(runs["snaps"][1])
    metrics = m["metrics"]
    for k, v in metrics.items():
        if k.startswith("rows_read/"):
            assert f"<div class='n'>{v:,}</div><div class='l'>{k.split('/', 1)[1]} rows read</div>" in html
    dupes = sum(v for k, v in metrics.items() if k.startswith("duplicates_removed/"))
    assert f"<div class='n'>{m['dead_letter_count']:,}</div><div class='l'>dead-lettered rows" in html
    assert f"<div class='n'>{dupes:,}</div><div class='l'>repeated events removed" in html
    assert f"<div class='n'>{metrics['rows_eligible']:,}</div><div class='l'>eligible rows" in html
    for k, v in metrics.items():
        if k.startswith("ineligible/"):
            assert f"<tr><td>{k.split('/', 1)[1]}</td><td class='num'>{v:,}</td></tr>" in html
    for c in m["validation"]:
        assert f"<td>{htmllib.escape(c['name'])}</td><td class='{'ok' if c['passed'] else 'bad'}'>" in html


def test_report_contains_no_user_ids(runs):
    users = set()
    for f in glob.glob(os.path.join(runs["world"], "engagement", "dt=*", "*.parquet")):
        users |= set(pq.read_table(f, columns=["user_id"]).column("user_id").to_pylist())
    assert len(users) > 100
    for html in runs["html"]:
        assert "user_id" not in html.lower()
        tokens = set(re.findall(r"[A-Za-z0-9_\-]+", html))
        assert not tokens & users
        assert not any(u in html for u in users)  # not even inside a longer word


def test_planned_delivered_plot_draws_the_reconciled_days(runs):
    """The second run reconciles the first one's plan: one point per (market,
    surface) and line, planned and realised, as its capacity table says."""
    html, snap = runs["html"][1], runs["snaps"][1]
    svg = _plots(html)["planned-delivered"]
    cap = worlds.table(snap, "capacity")
    drawn = cap[cap["reconciled_planned"] > 0]
    assert len(_marks(svg, "realised")) == len(_marks(svg, "planned")) == len(drawn) > 0
    for r in drawn.itertuples():
        assert f"{r.market} {r.surface}" in svg
    total = f"{drawn['reconciled_realised'].sum():,.0f} promoted plays delivered of " \
            f"{drawn['reconciled_planned'].sum():,.0f} planned"
    assert total in html
    assert "no reconciled day yet" in runs["html"][0]


def test_drift_against_the_previous_snapshot(runs):
    first, second = runs["html"]
    assert "no previous snapshot" in first and tuple(_plots(first)) == ANCHORS[:3]
    assert "id='plot-drift'" not in first
    prev_snap, snap = runs["snaps"]
    prev_m = worlds.manifest(prev_snap)
    key = ["track_id", "market", "surface"]
    a = worlds.table(snap, "promotion_scores")[key + ["score"]]
    b = worlds.table(prev_snap, "promotion_scores")[key + ["score"]]
    j = a.merge(b, on=key, suffixes=("", "_prev"))
    changed = int((np.abs(j["score"] - j["score_prev"]) > 1e-9).sum())
    assert len(j) > 50 and changed > 0
    assert (f"against the previous snapshot {prev_m['snapshot_id']} (score date {prev_m['score_date']}): "
            f"{len(j):,} rows in both, {changed:,} changed") in second
    assert f"{len(a) - len(j):,} new rows, {len(b) - len(j):,} rows no longer enrolled" in second
    # the scatter stands for every row in both snapshots, in its surface's colour (rows on the same
    # half pixel share a dot that says how many they are)
    drift = _plots(second)["drift"]
    dots = _marks(drift, "point")
    for s, n in j["surface"].value_counts().items():
        mine = [d for d in dots if d["data-surface"] == s]
        assert sum(int(d["data-n"]) for d in mine) == n
        assert {d["fill"] for d in mine} == {report_plots.SURFACE_COLORS[s]}
    assert sum(int(d["data-n"]) for d in dots) == len(j)
    # the histogram counts the changed rows, to scale
    bars = _marks(drift, "bar")
    assert sum(int(b["data-n"]) for b in bars) == changed
    assert _proportional([float(b["height"]) for b in bars], [int(b["data-n"]) for b in bars])


def _tiny_tables(shortfall: float) -> dict:
    scores = pd.DataFrame({"track_id": ["t1", "t2"], "market": "XX", "surface": "radio", "eligible": [True, False],
                           "score": [0.5, 0.0], "score_date": dt.date(2026, 1, 2), "artist_id": ["a1", "a2"],
                           "supply_forecast": [4.0, 2.0], "planned_promoted_plays": [1.0, 0.0]})
    delivery = pd.DataFrame({"campaign_id": ["c-ok", "c-short"], "market": "XX", "surface": "radio",
                             "floor": [1.0, 2.0], "planned": [1.5, 2.0 - shortfall], "shortfall": [0.0, shortfall],
                             "pacing_multiplier": [1.0, 2.0]})
    capacity = pd.DataFrame({"market": ["XX"], "surface": ["radio"], "capacity": [10.0], "planned_total": [3.5],
                             "shadow_price": [0.0]})
    return {"promotion_scores": pa.Table.from_pandas(scores), "campaign_delivery": pa.Table.from_pandas(delivery),
            "capacity": pa.Table.from_pandas(capacity)}


def _manifest(**fields) -> Manifest:
    """A minimal manifest for rendering a report from hand-made tables."""
    doc = {"snapshot_id": "s1", "score_date": "2026-01-02", "as_of": "2026-01-01",
           "created_at": "2026-01-02T00:00:00+00:00", "run_fingerprint": "f", "config": {}, "tables": {}}
    return Manifest.from_dict({**doc, **fields})


def test_delivery_plot_highlights_shortfalls():
    manifest = _manifest()
    short = report.render(manifest, _tiny_tables(0.75), None)
    met = report.render(manifest, _tiny_tables(0.0), None)
    assert "1 short of their floor by 0.75 promoted plays" in short
    assert "<td>c-short</td><td>XX</td><td>radio</td>" in short and "<td class='num bad'>0.75</td>" in short
    assert "0 short of their floor" in met and "c-short</td><td>XX" not in met
    short_svg, met_svg = _plots(short)["delivery"], _plots(met)["delivery"]
    (bar,) = _marks(short_svg, "short")
    assert bar["fill"] == report_plots.SHORT and float(bar["width"]) > 0
    assert "planned (short of the floor)</text>" in short_svg and ">short 0.75</text>" in short_svg
    assert f"style='fill:{report_plots.SHORT}' class='tick'>c-short</text>" in short_svg
    assert not _marks(met_svg, "short") and report_plots.SHORT not in met_svg
    assert "short of the floor" not in met_svg


LIFT_ROWS = pd.DataFrame({
    "campaign_id": ["c-big", "c-none", "c-small"], "market": "XX", "surface": ["radio", "mixes", "all"],
    "method": ["exposures", "exposures", "intent_to_treat"], "exposed_listeners_treated": [9000, 4000, 2000],
    "exposed_listeners_holdout": [1000, 450, 220], "lift": [0.31, -0.02, 0.12], "lift_low": [0.2, -0.15, -0.1],
    "lift_high": [0.43, 0.12, 0.4], "historical_lift": [0.55, 0.2, None],
    "incremental_streams": [2500.0, -30.0, 60.0]})


def _with_lift(tables: dict) -> dict:
    return {**tables, "campaign_lift": pa.Table.from_pandas(LIFT_ROWS)}


def test_lift_plot_draws_each_row_with_its_interval_and_historical_figure():
    html = report.render(_manifest(), _with_lift(_tiny_tables(0.0)), None)
    svg = _plots(html)["campaign-lift"]
    dots = _marks(svg, "lift")
    assert len(dots) == 3                      # one per row, the most exposed listeners first
    cx = [float(d["cx"]) for d in sorted(dots, key=lambda d: int(d["data-row"]))]
    assert cx[0] > cx[2] > cx[1]               # 0.31 > 0.12 > -0.02, on one linear axis
    lines = re.findall(r"<line class='interval' x1='([0-9.]+)' y1='[0-9.]+' x2='([0-9.]+)'", svg)
    assert all(float(a) < c < float(b) for (a, b), c in zip(lines, cx))
    assert svg.count("class='mark historical'") == 2       # none where the before/after is null
    assert "3 campaign rows with a lift (1 intent-to-treat, no exposure log); 1 with an interval that excludes 0" \
        in html
    assert "<td>c-big</td><td>XX</td><td>radio</td><td>exposures</td>" in html and "+31.0%" in html
    empty = report.render(_manifest(), _tiny_tables(0.0), None)
    assert "id='plot-campaign-lift'" not in empty and "no campaign has enough data for a lift yet" in empty


def test_lift_plot_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed (CI installs it via .ci/run)")
    html = report.render(_manifest(), _with_lift(_tiny_tables(0.0)), None)
    probe = {p["id"]: p for p in _probe(binary, html, tmp_path, "probe-lift")}
    assert probe["plot-campaign-lift"]["marks"] == 3 + 2      # dots and historical diamonds
    (page := tmp_path / "lift.html").write_text(html, encoding="utf-8")
    screen = _screenshot(binary, page, tmp_path / "lift.png", tmp_path / "profile-lift")
    region = _region(screen, probe["plot-campaign-lift"])
    assert _near(region, report_lift.LIFT) > 60 and _near(region, report_lift.HISTORICAL) > 20


def test_report_failure_is_recorded_not_fatal(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(report, "render", boom)
    entry = report.write_report_or_error(str(tmp_path), _manifest(snapshot_id="s"), {}, None)
    assert entry == {"error": "RuntimeError: no fonts today"}
    assert not (tmp_path / "report.html").exists()

    class Result:
        manifest = _manifest(report=entry)
        snapshot_dir = str(tmp_path)

    assert summary.report_line(Result) == "not written (RuntimeError: no fonts today)"


def test_report_is_fast(runs, tmp_path):
    snap = runs["snaps"][1]
    m = worlds.manifest(snap)
    tables = {n: publish.read_table_files([os.path.join(snap, f["path"]) for f in t["files"]], n)
              for n, t in m["tables"].items()}
    previous = (runs["snaps"][0], Manifest.from_dict(worlds.manifest(runs["snaps"][0])))
    cpu = time.process_time()
    entry = report.write_report(str(tmp_path), Manifest.from_dict(m), tables, previous)
    cpu = time.process_time() - cpu
    assert entry["bytes"] == (tmp_path / "report.html").stat().st_size
    assert cpu < 0.5, f"report took {cpu:.2f} s of CPU"


# ------------------------------------------------------------ browser ---
def _chromium() -> str:
    """The Chromium binary; a missing one FAILS the test (never skips): the
    screenshot test is part of the suite, and `.ci/run` installs Debian's
    chromium (and fails when it cannot)."""
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (what .ci/run does)", pytrace=False)
    return found


PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const r = [...document.querySelectorAll('svg')].map(svg => {
    const b = box(svg);
    const drawn = sel => [...svg.querySelectorAll(sel)].filter(e => box(e).width > 0 && box(e).height > 0).length;
    return {id: svg.id, x: b.left + svg.clientLeft + window.scrollX, y: b.top + svg.clientTop + window.scrollY,
            w: svg.clientWidth, h: svg.clientHeight,
            marks: drawn('.mark'), texts: drawn('text'), red: drawn('.mark.short')};
  });
  document.body.setAttribute('data-probe', JSON.stringify(r));
});
</script></body>"""


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _probe(binary: str, html: str, tmp_path: Path, name: str) -> list[dict]:
    """Where each plot's <svg> is on the page and how many of its marks and texts Chromium lays out with
    a nonzero size: a copy of the page with a probe script (the report itself has no script) dumped after load."""
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("</body>", PROBE), encoding="utf-8")
    dom = _run_chromium(binary, tmp_path / f"profile-{name}", "--dump-dom", page.as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(htmllib.unescape(found.group(1)))


def _screenshot(binary: str, page: Path, shot: Path, profile: Path) -> np.ndarray:
    if shot.exists():
        shot.unlink()
    _run_chromium(binary, profile, f"--screenshot={shot}", page.as_uri())
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)


def _near(region: np.ndarray, colour: str, tol: int = 12) -> int:
    """Pixels of a colour (#rrggbb) in a screenshot region."""
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(region - want) < tol).all(axis=2).sum())


def _region(screen: np.ndarray, p: dict) -> np.ndarray:
    x, y, w, h = (int(round(p[k])) for k in ("x", "y", "w", "h"))
    assert y + h <= screen.shape[0] and x + w <= screen.shape[1], f"{p['id']} is below the screenshot"
    return screen[y:y + h, x:x + w]


def test_report_renders_in_headless_chromium(runs, tmp_path):
    binary = _chromium()
    snap = runs["snaps"][1]
    page = Path(snap) / "report.html"
    html = runs["html"][1]
    plots = _plots(html)

    # 1. Each plot laid out at its size, with every mark that has a size in the SVG, and its labels.
    probe = _probe(binary, html, tmp_path, "probe")
    assert [p["id"] for p in probe] == [f"plot-{a}" for a in ANCHORS]
    for p, svg in zip(probe, plots.values()):
        assert p["w"] >= 600 and p["h"] >= 150, p
        w, h = (float(re.search(rf"\b{k}='([0-9.]+)'", svg).group(1)) for k in ("width", "height"))
        assert abs(p["w"] - w) < 1 and abs(p["h"] - h) < 1, p  # not squeezed: the page is wide enough
        sized = [m for m in MARK.findall(svg)
                 if "r=" in m[1] or (float(dict(ATTR.findall(m[1]))["width"]) > 0
                                     and float(dict(ATTR.findall(m[1]))["height"]) > 0)]
        assert p["marks"] == len(sized) > 0, p
        assert p["texts"] == svg.count("<text") > 4, p

    # 2. The report itself, as a user sees it.
    ARTIFACTS.mkdir(exist_ok=True)
    screen = _screenshot(binary, page, ARTIFACTS / "report-screenshot.png", tmp_path / "profile-shot")
    assert screen.shape[:2] == (3000, 1280)
    assert (screen.min(axis=2) < 200).mean() > 0.02  # not a blank page

    # 3. Every plot is painted where the probe found it, in its colours.
    regions = {p["id"][len("plot-"):]: _region(screen, p) for p in probe}
    for anchor, region in regions.items():
        assert (region.min(axis=2) < 200).mean() > 0.01, anchor
        assert len(np.unique(region.reshape(-1, 3), axis=0)) > 20, anchor  # text and antialiased edges
    scores = worlds.table(snap, "promotion_scores")
    for s in scores.loc[scores["eligible"], "surface"].unique():
        assert _near(regions["score-distribution"], report_plots.SURFACE_COLORS[s]) > 200, s
    for anchor in ("capacity", "delivery"):
        assert _near(regions[anchor], report_plots.CAPACITY) > 200 and _near(regions[anchor], report_plots.PLANNED) > 200
    assert _near(regions["drift"], report_plots.PLANNED) > 100
    # the shortfall colour is painted exactly when a campaign is short
    assert (_near(regions["delivery"], report_plots.SHORT) > 100) == (len(_marks(plots["delivery"], "short")) > 0)


def test_shortfall_highlight_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    manifest = _manifest()
    for shortfall in (0.75, 0.0):
        html = report.render(manifest, _tiny_tables(shortfall), None)
        (page := tmp_path / f"short-{shortfall}.html").write_text(html, encoding="utf-8")
        probe = {p["id"]: p for p in _probe(binary, html, tmp_path, f"probe-{shortfall}")}
        assert probe["plot-delivery"]["marks"] == 4 and probe["plot-delivery"]["red"] == (shortfall > 0)
        screen = _screenshot(binary, page, tmp_path / f"short-{shortfall}.png", tmp_path / f"shot-{shortfall}")
        red = _near(_region(screen, probe["plot-delivery"]), report_plots.SHORT)
        assert (red > 100) if shortfall else (red == 0), red
