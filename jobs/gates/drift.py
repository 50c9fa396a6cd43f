"""The gates that compare a would-be snapshot with the previous one (the newest
published earlier score date): row_count and score_drift. Both pass, saying
why, when there is no previous snapshot or it cannot be read.

score_drift compares like with like: the rows eligible in both snapshots
whose enrollment did not change (same track, market, surface and campaign),
each row's previous score against its score now. A monthly flight change
replaces every campaign at once, and with it floors and pacing (on the
sample world the 1st of a month measured PSI 0.385 over all eligible rows,
and the next day, compared with a snapshot two days old, 0.27): that is a
business event, not drift, so those rows are left out and the gate says so.
A real shift of the scores of unchanged enrollments (a config change, broken
signals) still trips it. Each gate records in its `basis` what it compared.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

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
# delivery_reconciliation's rows are what the plan boosted and serving delivered the day before: its size follows
# the plan (a warm-up that boosted every enrolled track, then a plan that boosts a third of them, halves it), not
# the enrollments, so row_count does not judge it
NOT_COUNTED = frozenset({"delivery_reconciliation"})
PSI_PSEUDOCOUNT = 0.5  # per bin (Jeffreys): keeps log(q/p) finite for an empty bin
# Not compared by row_count: a prices row exists per eligible track, so the table shrinks with
# eligibility, which the eligible_share gate judges (all campaigns cancelled: prices fell below half);
# campaign_lift rows come and go with the campaigns (a month's flights end together), so its row count
# is no sign of a broken run either.
FOLLOW_ELIGIBILITY = ("prices", "campaign_lift")
PSI_MIN_ROWS = 20  # fewer comparable rows than this say little: not compared (the detail says so)
MATCH = ["track_id", "market", "surface", "campaign_id"]  # an unchanged enrollment


@dataclass
class Previous:
    """What the drift gates need of the previous snapshot."""
    name: str                # as LATEST names a snapshot (jobs.layout.snapshot_rel)
    score_date: str
    rows: dict[str, int]     # per table
    eligible: pa.Table       # its eligible rows: MATCH columns and score


def drift_gates(tables: dict[str, pa.Table], previous: tuple[str, Manifest] | None, cfg: Config,
                for_date=None) -> list[GateResult]:
    prev, note = load_previous(previous)
    return [row_count(tables, prev, note, cfg),
            score_drift(tables["promotion_scores"], prev, note, cfg, for_date)]


def load_previous(previous: tuple[str, Manifest] | None) -> tuple[Previous | None, str]:
    """(what the gates compare with, a note naming it or saying why there is none)."""
    if previous is None:
        return None, "no previous snapshot to compare with"
    folder, manifest = previous
    name = layout.snapshot_rel(manifest.score_date, manifest.snapshot_id)
    try:
        rows = {n: t.rows for n, t in manifest.tables.items()}
        files = [layout.listed_file(folder, f.path) for f in manifest.table_files("promotion_scores")]
        t = store.read_table_files(files, "promotion_scores", MATCH + ["eligible", "score"])
    except Exception as e:  # a damaged previous snapshot must not block today's
        log.warning("previous snapshot %s cannot be read for comparison: %s", name, e)
        return None, f"previous snapshot {name} cannot be read ({type(e).__name__}: {e}); not compared"
    eligible = t.filter(pc.fill_null(t.column("eligible"), False)).select(MATCH + ["score"])
    return Previous(name, manifest.score_date.isoformat(), rows, eligible), f"previous snapshot {name}"


def row_count(tables: dict[str, pa.Table], prev: Previous | None, note: str, cfg: Config) -> GateResult:
    limit = cfg.gate_max_row_drop
    if prev is None:
        return result("row_count", True, f"not compared: {note}", None, limit)
    drops, parts, bad = {}, [], []
    for name, t in tables.items():
        if name in FOLLOW_ELIGIBILITY or name in NOT_COUNTED:
            continue
        before, now = prev.rows.get(name), t.num_rows
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
    r = result("row_count", not bad, detail, worst, limit)
    r.basis = {"previous": prev.name, "previous_score_date": prev.score_date}
    return r


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


def comparable_rows(scores: pa.Table, prev: Previous) -> tuple[np.ndarray, np.ndarray, dict]:
    """(previous scores, current scores, counts) of the rows eligible in both
    snapshots with the same (track, market, surface, campaign): like with like."""
    cur = scores.filter(pc.fill_null(scores.column("eligible"), False)).select(MATCH + ["score"])
    joined = cur.join(prev.eligible.rename_columns(MATCH + ["previous_score"]), MATCH, join_type="inner")
    keys = ["track_id", "market", "surface"]
    same_key = cur.select(keys).join(prev.eligible.select(keys), keys, join_type="inner").num_rows
    before = joined.column("previous_score").to_numpy(zero_copy_only=False).astype(float)
    now = joined.column("score").to_numpy(zero_copy_only=False).astype(float)
    ok = np.isfinite(before) & np.isfinite(now)
    counts = {"eligible_now": cur.num_rows, "eligible_before": prev.eligible.num_rows,
              "compared": int(ok.sum()), "campaign_changed": same_key - joined.num_rows,
              "not_eligible_before": cur.num_rows - same_key}
    return before[ok], now[ok], counts


def score_drift(scores: pa.Table, prev: Previous | None, note: str, cfg: Config, for_date=None) -> GateResult:
    limit = cfg.gate_max_score_psi
    if prev is None:
        return result("score_drift", True, f"not compared: {note}", None, limit)
    before, now, counts = comparable_rows(scores, prev)
    basis = {"previous": prev.name, "previous_score_date": prev.score_date,
             "rows": "eligible in both, same track, market, surface and campaign", **counts}
    if for_date is not None:  # the would-be snapshot's score date
        basis["days_apart"] = (for_date - dt.date.fromisoformat(prev.score_date)).days
    left_out = (f"{counts['campaign_changed']} with another campaign (a new flight), "
                f"{counts['not_eligible_before']} not eligible before")
    if counts["eligible_now"] == 0 or counts["eligible_before"] == 0:
        r = result("score_drift", True, f"not compared: {counts['eligible_before']} eligible rows in the "
                   f"{note}, {counts['eligible_now']} now (see eligible_share)", None, limit)
    elif counts["compared"] < PSI_MIN_ROWS:
        r = result("score_drift", True, f"not compared: {counts['compared']} of {counts['eligible_now']} eligible "
                   f"rows are comparable with the {note} (fewer than {PSI_MIN_ROWS}); left out: {left_out}",
                   None, limit)
    else:
        psi = population_stability_index(before, now)
        r = result("score_drift", psi <= limit + TOL,
                   f"PSI {psi:.4f} over {PSI_BINS} score bins (maximum {limit}) on {counts['compared']} of "
                   f"{counts['eligible_now']} eligible rows, each against its score in the {note}; left out: "
                   f"{left_out}", psi, limit)
    r.basis = basis
    return r

