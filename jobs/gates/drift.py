"""The gates that compare a would-be snapshot with the previous one (the newest
published earlier score date): row_count and score_drift. Both pass, saying
why, when there is no previous snapshot or it cannot be read."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import layout
from jobs.gates.checks import TOL, result
from jobs.manifest import GateResult, Manifest
from jobs.snapshots import store
from pipelines.config import Config

log = logging.getLogger(__name__)

PSI_BINS = 10  # equal-width score bins over [0, 1]
PSI_PSEUDOCOUNT = 0.5  # per bin (Jeffreys): keeps log(q/p) finite for an empty bin
# campaign_lift rows come and go with the campaigns (a month's flights end
# together), so its row count is no sign of a broken run
ROW_COUNT_EXEMPT = ("campaign_lift",)


def drift_gates(tables: dict[str, pa.Table], previous: tuple[str, Manifest] | None, cfg: Config) -> list[GateResult]:
    prev_rows, prev_scores, note = load_previous(previous)
    return [row_count(tables, prev_rows, note, cfg), score_drift(tables["promotion_scores"], prev_scores, note, cfg)]


def load_previous(previous: tuple[str, Manifest] | None) -> tuple[dict | None, np.ndarray | None, str]:
    """(rows per table, eligible scores, note) of the previous snapshot."""
    if previous is None:
        return None, None, "no previous snapshot to compare with"
    folder, manifest = previous
    sid = f"{manifest.score_date}/{manifest.snapshot_id}"
    try:
        rows = {name: t.rows for name, t in manifest.tables.items()}
        files = [layout.listed_file(folder, f.path) for f in manifest.table_files("promotion_scores")]
        t = store.read_table_files(files, "promotion_scores", ["eligible", "score"])
    except Exception as e:  # a damaged previous snapshot must not block today's
        log.warning("previous snapshot %s cannot be read for comparison: %s", sid, e)
        return None, None, f"previous snapshot {sid} cannot be read ({type(e).__name__}: {e}); not compared"
    sc = t.filter(pc.fill_null(t.column("eligible"), False)).column("score").to_numpy(zero_copy_only=False)
    return rows, sc.astype(float), f"previous snapshot {sid}"


def row_count(tables: dict[str, pa.Table], prev_rows: dict | None, note: str, cfg: Config) -> GateResult:
    limit = cfg.gate_max_row_drop
    if prev_rows is None:
        return result("row_count", True, f"not compared: {note}", None, limit)
    drops, parts, bad = {}, [], []
    for name, t in tables.items():
        if name in ROW_COUNT_EXEMPT:
            continue
        before, now = prev_rows.get(name), t.num_rows
        if not before:
            parts.append(f"{name} {now} (none before)")
            continue
        drop = max(0.0, 1.0 - now / before)
        drops[name] = drop
        parts.append(f"{name} {before} -> {now}" + (f" (-{drop:.1%})" if drop else ""))
        if drop > limit + TOL:
            bad.append(name)
    worst = max(drops.values()) if drops else 0.0
    detail = (f"vs {note}: " + ", ".join(parts) + f"; max drop allowed {limit:.0%}"
              + (f"; dropped too far: {', '.join(bad)}" if bad else ""))
    return result("row_count", not bad, detail, worst, limit)


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS,
                               pseudocount: float = PSI_PSEUDOCOUNT) -> float:
    """PSI = sum over bins of (q - p) * ln(q / p), p the previous and q the current
    share of scores per equal-width bin of [0, 1]; `pseudocount` is added to every
    bin's count on both sides (so an empty bin does not give an infinite term, and
    a few rows moving between sparse bins count for little)."""
    p = np.histogram(np.clip(expected, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0] + pseudocount
    q = np.histogram(np.clip(actual, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0] + pseudocount
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def score_drift(scores: pa.Table, prev_scores: np.ndarray | None, note: str, cfg: Config) -> GateResult:
    limit = cfg.gate_max_score_psi
    if prev_scores is None:
        return result("score_drift", True, f"not compared: {note}", None, limit)
    elig = scores.filter(pc.fill_null(scores.column("eligible"), False))
    cur = elig.column("score").to_numpy(zero_copy_only=False).astype(float)
    cur = cur[np.isfinite(cur)]
    if len(cur) == 0 or len(prev_scores) == 0:
        return result("score_drift", True, f"not compared: {len(prev_scores)} eligible rows in the "
                       f"{note}, {len(cur)} now (see eligible_share)", None, limit)
    psi = population_stability_index(prev_scores, cur)
    return result("score_drift", psi <= limit + TOL,
                   f"PSI {psi:.4f} over {PSI_BINS} score bins, {len(prev_scores)} eligible rows in the "
                   f"{note} vs {len(cur)} now (maximum {limit})", psi, limit)
