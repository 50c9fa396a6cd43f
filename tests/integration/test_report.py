"""The run report: written by every published run, listed in the manifest,
self-contained, and rendered for real in headless Chromium."""
from __future__ import annotations

import base64
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import cli, publish, report, summary
from tests import worlds

DAY1 = (worlds.END - dt.timedelta(days=1)).isoformat()
DAY2 = worlds.END.isoformat()
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
IMG = re.compile(r"<img\b[^>]*\bsrc='data:image/png;base64,([A-Za-z0-9+/=]+)'")
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


def _images(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in IMG.findall(html)]


def test_report_is_written_and_listed_in_the_manifest(runs):
    for snap, stdout in zip(runs["snaps"], runs["stdout"]):
        m = worlds.manifest(snap)
        data = open(os.path.join(snap, "report.html"), "rb").read()
        assert m["report"] == {"path": "report.html", "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
        # `oasis run` (and so `make run`) prints where the report is
        assert f"  report:           {os.path.join(snap, 'report.html')}\n" in stdout


def test_report_is_self_contained_with_four_inline_plots(runs):
    html = runs["html"][1]
    images = _images(html)
    assert len(images) == 4 == html.count("<img")
    for im in images:
        im.load()  # a valid PNG
        assert im.format == "PNG" and im.width >= 600 and im.height >= 150
        px = np.asarray(im.convert("RGB"))
        assert (px.min(axis=2) < 200).mean() > 0.01  # something is drawn
    for anchor in ("score-distribution", "capacity", "delivery", "drift"):
        assert f"id='plot-{anchor}'" in html
    # nothing to fetch: no scripts, stylesheets, fonts or remote URLs
    stripped = IMG.sub("<img", html)
    for needle in ("<script", "<link", "url(", "http://", "https://", "@import", "src='/", 'src="'):
        assert needle not in stripped, needle


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
        tokens = set(re.findall(r"[A-Za-z0-9_\-]+", IMG.sub("<img", html)))
        assert not tokens & users
        assert not any(u in html for u in users)  # not even inside the images' base64


def test_drift_against_the_previous_snapshot(runs):
    first, second = runs["html"]
    assert "no previous snapshot" in first and len(_images(first)) == 3
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


def _red_pixels(im: Image.Image) -> int:
    px = np.asarray(im.convert("RGB")).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return int(((np.abs(r - 0xd6) < 12) & (np.abs(g - 0x27) < 12) & (np.abs(b - 0x28) < 12)).sum())


def _tiny_tables(shortfall: float) -> dict:
    scores = pd.DataFrame({"track_id": ["t1", "t2"], "market": "XX", "surface": "radio", "eligible": [True, False],
                           "score": [0.5, 0.0]})
    delivery = pd.DataFrame({"campaign_id": ["c-ok", "c-short"], "market": "XX", "surface": "radio",
                             "floor": [1.0, 2.0], "planned": [1.5, 2.0 - shortfall], "shortfall": [0.0, shortfall],
                             "pacing_multiplier": [1.0, 2.0]})
    capacity = pd.DataFrame({"market": ["XX"], "surface": ["radio"], "capacity": [10.0], "planned_total": [3.5],
                             "shadow_price": [0.0]})
    return {"promotion_scores": pa.Table.from_pandas(scores), "campaign_delivery": pa.Table.from_pandas(delivery),
            "capacity": pa.Table.from_pandas(capacity)}


def test_delivery_plot_highlights_shortfalls():
    manifest = {"snapshot_id": "s1", "score_date": "2026-01-02", "metrics": {}, "validation": []}
    short = report.render(manifest, _tiny_tables(0.75), None)
    met = report.render(manifest, _tiny_tables(0.0), None)
    assert "1 short of their floor by 0.75 promoted plays" in short
    assert "<td>c-short</td><td>XX</td><td>radio</td>" in short and "<td class='num bad'>0.75</td>" in short
    assert "0 short of their floor" in met and "c-short</td><td>XX" not in met
    delivery_png = lambda h: _images(h)[2]  # noqa: E731 - scores, capacity, delivery (no drift)
    assert _red_pixels(delivery_png(short)) > 100
    assert _red_pixels(delivery_png(met)) == 0


def test_report_failure_is_recorded_not_fatal(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(report, "render", boom)
    entry = report.write_report_or_error(str(tmp_path), {"snapshot_id": "s"}, {}, None)
    assert entry == {"error": "RuntimeError: no fonts today"}
    assert not (tmp_path / "report.html").exists()

    class Result:
        manifest = {"report": entry}
        snapshot_dir = str(tmp_path)

    assert summary.report_line(Result) == "not written (RuntimeError: no fonts today)"


def test_report_is_fast(runs, tmp_path):
    snap = runs["snaps"][1]
    m = worlds.manifest(snap)
    tables = {n: publish.read_table_files([os.path.join(snap, f["path"]) for f in t["files"]], n)
              for n, t in m["tables"].items()}
    previous = (runs["snaps"][0], worlds.manifest(runs["snaps"][0]))
    cpu = time.process_time()
    entry = report.write_report(str(tmp_path), m, tables, previous)
    cpu = time.process_time() - cpu
    assert entry["bytes"] == (tmp_path / "report.html").stat().st_size
    assert cpu < 2.0, f"report took {cpu:.2f} s of CPU"


# ------------------------------------------------------------ browser ---
def _chromium() -> str | None:
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


PROBE = """<script>
window.addEventListener('load', () => {
  const r = [...document.images].map(i => {
    const b = i.getBoundingClientRect();
    return {id: i.id, ok: i.complete && i.naturalWidth > 0, nw: i.naturalWidth, nh: i.naturalHeight,
            x: b.left + i.clientLeft + window.scrollX, y: b.top + i.clientTop + window.scrollY,
            w: i.clientWidth, h: i.clientHeight};
  });
  document.body.setAttribute('data-probe', JSON.stringify(r));
});
</script></body>"""


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_report_renders_in_headless_chromium(runs, tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed (CI installs it via .ci/run)")
    snap = runs["snaps"][1]
    page = Path(snap) / "report.html"
    html = runs["html"][1]
    expected = _images(html)

    # 1. Where each <img> is, and whether Chromium decoded it: a copy of the page
    #    with a probe script (the report itself has no script) dumped after load.
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html.replace("</body>", PROBE), encoding="utf-8")
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", probe_page.as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    probe = json.loads(htmllib.unescape(found.group(1)))
    assert len(probe) == 4
    for p, im in zip(probe, expected):
        assert p["ok"], p
        assert (p["nw"], p["nh"]) == im.size, p

    # 2. The report itself, as a user sees it.
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    if shot.exists():
        shot.unlink()
    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", page.as_uri())
    screen = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert screen.shape[:2] == (3000, 1280)
    assert (screen.min(axis=2) < 200).mean() > 0.02  # not a blank page

    # 3. Every plot is on screen where the probe found it, pixel for pixel.
    for p, im in zip(probe, expected):
        x, y, w, h = (int(round(p[k])) for k in ("x", "y", "w", "h"))
        assert y + h <= screen.shape[0] and x + w <= screen.shape[1], f"{p['id']} is below the screenshot"
        want = np.asarray(im.convert("RGB").resize((w, h))).astype(int)
        best = min(np.abs(screen[y + dy:y + dy + h, x + dx:x + dx + w] - want).mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best < 8, f"{p['id']}: the screenshot differs from the plot (mean abs diff {best:.1f})"
        region = screen[y:y + h, x:x + w]
        assert (region.min(axis=2) < 200).mean() > 0.01 and len(np.unique(region.reshape(-1, 3), axis=0)) > 20
