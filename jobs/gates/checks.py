"""Gates a would-be snapshot must pass before anything is published.

`jobs.gates.suite.check_snapshot` runs them all and returns one
`jobs.manifest.GateResult` per gate: `passed` is the gate's own verdict;
`skipped` says an engineer overrode it (`--skip-gate NAME`), so a skipped gate
that failed still reads passed = false in the manifest. `measured` is the
number the gate looked at and `threshold` what it compared it with (a count of
violations against 0, a share against a bound, ...). Every result goes into the
manifest; a failed, unskipped gate publishes nothing and the would-be snapshot
is quarantined (`jobs.gates.quarantine`).

This module holds the registry and the gates on the snapshot's own tables;
`jobs.gates.drift` the gates that compare with the previous snapshot.

Gates (thresholds are `gate_*` parameters of `pipelines.config.Config`):

  finite_values   no NaN or infinite value in any float column of any table
  unique_rows     no (track, market, surface) twice in promotion_scores
  enrolled_keys   every (track, market) of the as-of day's enrollment export
                  (rows keeping the contract) x radio/autoplay/mixes is in
                  promotion_scores exactly once, and nothing else is
  track_caps      planned x <= rho * E on every row
  ineligible_zero an ineligible row has x = 0 and score 0
  score_range     scores in [0, 1]
  reasons         a reason exactly on the ineligible rows
  capacity        planned_total <= capacity in every (market, surface), both as
                  published in `capacity` and as the sum of x in promotion_scores
  capacity_use    sum(planned_total) / sum(capacity) >= gate_min_capacity_use
  eligible_share  gate_min_eligible_share <= eligible rows / rows
                  <= gate_max_eligible_share
  row_count       no table lost more than gate_max_row_drop of the rows it had in
                  the previous snapshot (the newest published earlier score date)
  score_drift     population stability index of the eligible rows' scores
                  against the previous snapshot <= gate_max_score_psi
  delivery        no (market, surface) delivered more than gate_delivery_max_miss
                  off its plan for gate_delivery_days consecutive days
                  (`jobs.gates.delivery`; warn-only unless gate_delivery_blocks)
  holdout         the days this run read from raw logs promote no holdout
                  listener, their logged holdout flags agree with the
                  assignment function (`pipelines.holdout`; a null flag is not
                  checked: it predates the holdout), and every exposure's arm
                  agrees with it (ghost exactly for holdout listeners)

row_count and score_drift pass (and say why) when there is no previous
snapshot to compare with, or when it cannot be read.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.manifest import GateResult
from pipelines import contract, storage
from pipelines.config import Config
from schemas import ENROLLMENTS, PROMOTION_SURFACES

TOL = 1e-6
KEY = ["track_id", "market", "surface"]

GATES = {
    "finite_values": "no NaN or infinite value in any float column",
    "unique_rows": "no duplicate (track, market, surface) in promotion_scores",
    "enrolled_keys": "every valid enrolled (track, market) x 3 promotion surfaces present exactly once",
    "track_caps": "planned promoted plays x <= rho * E on every row",
    "ineligible_zero": "ineligible rows have x = 0 and score 0",
    "score_range": "scores within [0, 1]",
    "reasons": "a reason exactly on the ineligible rows",
    "capacity": "planned_total <= capacity in every (market, surface)",
    "capacity_use": "overall share of capacity used >= gate_min_capacity_use",
    "eligible_share": "share of enrolled rows eligible within [gate_min_eligible_share, gate_max_eligible_share]",
    "row_count": "no table drops by more than gate_max_row_drop against the previous snapshot",
    "score_drift": "PSI of eligible scores against the previous snapshot <= gate_max_score_psi",
    "delivery": "realised / planned promoted plays within gate_delivery_max_miss, or not for gate_delivery_days "
                "days in a row (warns by default)",
    "holdout": "no promoted play of a holdout listener; logged flags and exposure arms agree with the assignment",
}
HOLDOUT_COUNTERS = {"holdout_promoted": "promoted plays of holdout listeners",
                    "holdout_flag_mismatch": "logged holdout flags that disagree with the assignment",
                    "holdout_arm_mismatch": "exposures whose arm disagrees with the assignment"}


def result(name: str, passed: bool, detail: str, measured=None, threshold=None) -> GateResult:
    if isinstance(measured, (np.floating, np.integer)):
        measured = measured.item()
    return GateResult(name=name, passed=bool(passed), detail=detail, measured=measured, threshold=threshold)


# ------------------------------------------------------------------ gates ---
def table_gates(tables: dict[str, pa.Table], cfg: Config, expected_keys: pa.Table | None) -> list[GateResult]:
    """The gates on the would-be snapshot's own tables, in registry order."""
    scores, capacity = tables["promotion_scores"], tables["capacity"]
    return ([finite_values(tables), unique_rows(scores), enrolled_keys(scores, expected_keys)] + row_checks(scores)
            + [capacity_within(scores, capacity), capacity_use(capacity, cfg), eligible_share(scores, cfg)])


def finite_values(tables: dict[str, pa.Table]) -> GateResult:
    """A null (a nullable column's "not measured") is not a non-finite value."""
    bad, total = [], 0
    for name, t in tables.items():
        for col in t.column_names:
            if pa.types.is_floating(t.schema.field(col).type):
                # a null (not computed; a ratio with nothing planned) is not a NaN: it is left out
                n = int(pc.sum(pc.invert(pc.is_finite(t.column(col)))).as_py() or 0)
                if n:
                    bad.append(f"{name}.{col}: {n}")
                    total += n
    return result("finite_values", total == 0, "; ".join(bad) or "no NaN or infinite value", total, 0)


def unique_rows(scores: pa.Table) -> GateResult:
    keys = pc.binary_join_element_wise(*[scores.column(k) for k in KEY], "\x1f")
    dupes = scores.num_rows - len(pc.unique(keys))
    return result("unique_rows", dupes == 0, f"{dupes} duplicate (track, market, surface) rows", dupes, 0)


def _key_table(t: pa.Table) -> pa.Table:
    return pa.table({k: t.column(k).cast(pa.string()) for k in KEY})


def _examples(t: pa.Table, n: int = 3) -> str:
    rows = t.slice(0, n).to_pylist()
    return ", ".join("/".join(str(r[k]) for k in KEY) for r in rows)


def enrolled_keys(scores: pa.Table, expected: pa.Table | None) -> GateResult:
    if expected is None:
        return result("enrolled_keys", True, "not checked: no enrollment export given", None, 0)
    counts = _key_table(scores).group_by(KEY).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts.column("count_all"), 1))
    extra_rows = int(pc.sum(pc.subtract(dup.column("count_all"), 1)).as_py() or 0)
    exp = _key_table(expected).group_by(KEY).aggregate([])
    missing = exp.join(counts.select(KEY), KEY, join_type="left anti")
    unexpected = counts.select(KEY).join(exp, KEY, join_type="left anti")
    bad = missing.num_rows + unexpected.num_rows + extra_rows
    parts = [f"{exp.num_rows} expected keys, {scores.num_rows} rows"]
    if missing.num_rows:
        parts.append(f"{missing.num_rows} missing (e.g. {_examples(missing)})")
    if unexpected.num_rows:
        parts.append(f"{unexpected.num_rows} not in the enrollment export (e.g. {_examples(unexpected)})")
    if extra_rows:
        parts.append(f"{extra_rows} extra rows for {dup.num_rows} repeated keys (e.g. {_examples(dup)})")
    return result("enrolled_keys", bad == 0, "; ".join(parts), bad, 0)


def row_checks(scores: pa.Table) -> list[GateResult]:
    s = scores.select(["eligible", "reason", "planned_promoted_plays", "max_promoted_plays", "score"]).to_pandas()
    x, ub = s["planned_promoted_plays"], s["max_promoted_plays"]
    eligible = s["eligible"].astype(bool)
    over = int((x > ub * (1 + TOL) + TOL).sum())
    inel = int(((~eligible) & ((x > 0) | (s["score"] > 0))).sum())
    out_of_range = int(((s["score"] < 0) | (s["score"] > 1 + TOL)).sum())
    no_reason = int((~eligible & s["reason"].isna()).sum() + (eligible & s["reason"].notna()).sum())
    return [
        result("track_caps", over == 0, f"{over} rows above rho*E", over, 0),
        result("ineligible_zero", inel == 0, f"{inel} ineligible rows with a boost", inel, 0),
        result("score_range", out_of_range == 0, f"{out_of_range} scores outside [0, 1]", out_of_range, 0),
        result("reasons", no_reason == 0, f"{no_reason} rows whose reason disagrees with eligible",
                no_reason, 0),
    ]


def capacity_within(scores: pa.Table, capacity: pa.Table) -> GateResult:
    c = capacity.select(["market", "surface", "capacity", "planned_total"]).to_pandas()
    if not len(c):
        return result("capacity", True, "no (market, surface) in the capacity table", 0, 0)
    used = (scores.select(["market", "surface", "planned_promoted_plays"]).to_pandas()
            .groupby(["market", "surface"])["planned_promoted_plays"].sum())
    c = c.set_index(["market", "surface"])
    c["rows_total"] = used.reindex(c.index).fillna(0.0)
    limit = c["capacity"] * (1 + TOL) + TOL
    over = c[(c["planned_total"] > limit) | (c["rows_total"] > limit)]
    detail = (", ".join(f"{m} {s}: planned {r.planned_total:.1f} (rows sum {r.rows_total:.1f}) > "
                        f"capacity {r.capacity:.1f}" for (m, s), r in over.head(5).iterrows())
              or f"planned_total <= capacity in all {len(c)} (market, surface)")
    return result("capacity", over.empty, detail, len(over), 0)


def capacity_use(capacity: pa.Table, cfg: Config) -> GateResult:
    total = float(pc.sum(capacity.column("capacity")).as_py() or 0.0)
    planned = float(pc.sum(capacity.column("planned_total")).as_py() or 0.0)
    share = planned / total if total > 0 else 0.0
    ok = share >= cfg.gate_min_capacity_use - TOL
    return result("capacity_use", ok, f"{planned:.1f} of {total:.1f} planned = {share:.2%} "
                   f"(minimum {cfg.gate_min_capacity_use:.2%})", share, cfg.gate_min_capacity_use)


def eligible_share(scores: pa.Table, cfg: Config) -> GateResult:
    n = scores.num_rows
    k = int(pc.sum(scores.column("eligible").cast(pa.int64())).as_py() or 0) if n else 0
    share = k / n if n else 0.0
    lo, hi = cfg.gate_min_eligible_share, cfg.gate_max_eligible_share
    ok = lo <= share <= hi
    detail = f"{k} of {n} enrolled rows eligible = {share:.2%} (allowed {lo:.2%} to {hi:.2%})"
    if lo > hi:
        detail += "; the config's minimum exceeds its maximum, so no share can pass"
    return result("eligible_share", ok, detail, share, {"min": lo, "max": hi})


def holdout(metrics: dict[str, int] | None) -> GateResult:
    """From the run's counters (per day read from raw logs, `pipelines.beam.lift`)."""
    if metrics is None:
        return result("holdout", True, "not checked: no run counters given", None, 0)
    found = {}
    for name, n in metrics.items():
        kind, _, day = name.partition("/")
        if kind in HOLDOUT_COUNTERS and n:
            found.setdefault(kind, []).append(f"{day}: {n}")
    total = sum(n for name, n in metrics.items() if name.partition("/")[0] in HOLDOUT_COUNTERS)
    detail = "; ".join(f"{HOLDOUT_COUNTERS[k]}: {', '.join(v)}" for k, v in sorted(found.items()))
    return result("holdout", total == 0, detail or "no holdout listener promoted; flags and arms agree with the "
                  "assignment", total, 0)


# ------------------------------------------------------- expected keys ------
def expected_enrollment_keys(enrollment_files: list[str], batch_rows: int) -> pa.Table:
    """(track_id, market, surface) that promotion_scores must hold exactly once:
    the distinct (track, market) of the export's rows that keep the contract
    (the run dead-letters the others), times the three promotion surfaces."""
    parts = []
    for uri in enrollment_files:
        f = pq.ParquetFile(storage.open_input(uri))
        columns = [n for n in ENROLLMENTS.names if n in f.schema_arrow.names]
        for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
            t = contract.conform_batch(pa.Table.from_batches([batch]), ENROLLMENTS, uri)
            ok = pc.is_null(contract.check_enrollments(t))
            parts.append(t.filter(ok).select(["track_id", "market"]).group_by(["track_id", "market"])
                         .aggregate([]))
    if parts:
        pairs = pa.concat_tables(parts).group_by(["track_id", "market"]).aggregate([])
    else:
        pairs = pa.table({"track_id": pa.array([], pa.string()), "market": pa.array([], pa.string())})
    n, k = pairs.num_rows, len(PROMOTION_SURFACES)
    rep = pairs.take(pa.array(np.repeat(np.arange(n), k)))
    return rep.append_column("surface", pa.array(list(PROMOTION_SURFACES) * n, pa.string()))
