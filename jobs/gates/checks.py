"""Gates a would-be snapshot must pass before anything is published.

`check_snapshot` returns one result per gate:

    {name, passed, skipped, measured, threshold, detail}

`passed` is the gate's own verdict; `skipped` says an engineer overrode it
(`oasis run --skip-gate NAME`), so a skipped gate that failed still reads
`passed: false` in the manifest. `measured` is the number the gate looked at
and `threshold` what it compared it with (a count of violations against 0, a
share against a bound, ...). Every result goes into the manifest; a failed,
unskipped gate publishes nothing and the would-be snapshot is moved to
`OUT/quarantine/score_date=D/<snapshot_id>/` with a `_QUARANTINE.json`.

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

row_count and score_drift pass (and say why) when there is no previous
snapshot to compare with, or when it cannot be read.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.snapshots import store as publish
from pipelines import contract, storage
from pipelines.config import Config
from schemas import ENROLLMENTS, PROMOTION_SURFACES

log = logging.getLogger(__name__)

TOL = 1e-6
PSI_BINS = 10  # equal-width score bins over [0, 1]
PSI_PSEUDOCOUNT = 0.5  # per bin (Jeffreys): keeps log(q/p) finite for an empty bin
KEY = ["track_id", "market", "surface"]
QUARANTINE = "_QUARANTINE.json"

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
}


class UnknownGate(ValueError):
    pass


def check_gate_names(names) -> list[str]:
    names = list(names or [])
    unknown = sorted(set(names) - set(GATES))
    if unknown:
        raise UnknownGate(f"unknown gate(s) {', '.join(unknown)}; known gates: {', '.join(GATES)}")
    return names


def _result(name: str, passed: bool, detail: str, measured=None, threshold=None) -> dict:
    if isinstance(measured, (np.floating, np.integer)):
        measured = measured.item()
    return {"name": name, "passed": bool(passed), "skipped": False, "measured": measured,
            "threshold": threshold, "detail": detail}


# ------------------------------------------------------------ entry point ---
def check_snapshot(tables: dict[str, pa.Table], cfg: Config | None = None, *,
                   previous: tuple[str, dict] | None = None,
                   expected_keys: pa.Table | None = None,
                   skip=()) -> list[dict]:
    """Every gate over the would-be snapshot's tables.

    previous: (folder, manifest) of the snapshot to compare with, or None.
    expected_keys: (track_id, market, surface) rows that must each appear once
        (`expected_enrollment_keys`); None leaves enrolled_keys unchecked.
    skip: gate names an engineer has checked by hand; they are still measured
        and recorded, with skipped = true, but do not block the publish.
    """
    cfg = cfg or Config()
    skip = set(check_gate_names(skip))
    scores, capacity = tables["promotion_scores"], tables["capacity"]
    results = [_finite_values(tables), _unique_rows(scores), _enrolled_keys(scores, expected_keys)]
    results += _row_checks(scores)
    results += [_capacity(scores, capacity), _capacity_use(capacity, cfg), _eligible_share(scores, cfg)]
    prev_rows, prev_scores, prev_note = _load_previous(previous)
    results += [_row_count(tables, prev_rows, prev_note, cfg), _score_drift(scores, prev_scores, prev_note, cfg)]
    for r in results:
        r["skipped"] = r["name"] in skip
    return results


def failed(results: list[dict]) -> list[str]:
    """Names of the gates that failed and were not skipped (these block a publish)."""
    return [r["name"] for r in results if not r["passed"] and not r.get("skipped")]


def skipped(results: list[dict]) -> list[dict]:
    return [r for r in results if r.get("skipped")]


def describe(results: list[dict]) -> str:
    return "; ".join(f"{r['name']}: {r['detail']}" for r in results)


# ------------------------------------------------------------------ gates ---
def _finite_values(tables: dict[str, pa.Table]) -> dict:
    bad, total = [], 0
    for name, t in tables.items():
        for col in t.column_names:
            if pa.types.is_floating(t.schema.field(col).type):
                arr = t.column(col).to_numpy(zero_copy_only=False).astype(float)
                n = int((~np.isfinite(arr)).sum())
                if n:
                    bad.append(f"{name}.{col}: {n}")
                    total += n
    return _result("finite_values", total == 0, "; ".join(bad) or "no NaN or infinite value", total, 0)


def _unique_rows(scores: pa.Table) -> dict:
    keys = pc.binary_join_element_wise(*[scores.column(k) for k in KEY], "\x1f")
    dupes = scores.num_rows - len(pc.unique(keys))
    return _result("unique_rows", dupes == 0, f"{dupes} duplicate (track, market, surface) rows", dupes, 0)


def _key_table(t: pa.Table) -> pa.Table:
    return pa.table({k: t.column(k).cast(pa.string()) for k in KEY})


def _examples(t: pa.Table, n: int = 3) -> str:
    rows = t.slice(0, n).to_pylist()
    return ", ".join("/".join(str(r[k]) for k in KEY) for r in rows)


def _enrolled_keys(scores: pa.Table, expected: pa.Table | None) -> dict:
    if expected is None:
        return _result("enrolled_keys", True, "not checked: no enrollment export given", None, 0)
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
    return _result("enrolled_keys", bad == 0, "; ".join(parts), bad, 0)


def _row_checks(scores: pa.Table) -> list[dict]:
    s = scores.select(["eligible", "reason", "planned_promoted_plays", "max_promoted_plays", "score"]).to_pandas()
    x, ub = s["planned_promoted_plays"], s["max_promoted_plays"]
    eligible = s["eligible"].astype(bool)
    over = int((x > ub * (1 + TOL) + TOL).sum())
    inel = int(((~eligible) & ((x > 0) | (s["score"] > 0))).sum())
    out_of_range = int(((s["score"] < 0) | (s["score"] > 1 + TOL)).sum())
    no_reason = int((~eligible & s["reason"].isna()).sum() + (eligible & s["reason"].notna()).sum())
    return [
        _result("track_caps", over == 0, f"{over} rows above rho*E", over, 0),
        _result("ineligible_zero", inel == 0, f"{inel} ineligible rows with a boost", inel, 0),
        _result("score_range", out_of_range == 0, f"{out_of_range} scores outside [0, 1]", out_of_range, 0),
        _result("reasons", no_reason == 0, f"{no_reason} rows whose reason disagrees with eligible",
                no_reason, 0),
    ]


def _capacity(scores: pa.Table, capacity: pa.Table) -> dict:
    c = capacity.select(["market", "surface", "capacity", "planned_total"]).to_pandas()
    if not len(c):
        return _result("capacity", True, "no (market, surface) in the capacity table", 0, 0)
    used = (scores.select(["market", "surface", "planned_promoted_plays"]).to_pandas()
            .groupby(["market", "surface"])["planned_promoted_plays"].sum())
    c = c.set_index(["market", "surface"])
    c["rows_total"] = used.reindex(c.index).fillna(0.0)
    limit = c["capacity"] * (1 + TOL) + TOL
    over = c[(c["planned_total"] > limit) | (c["rows_total"] > limit)]
    detail = (", ".join(f"{m} {s}: planned {r.planned_total:.1f} (rows sum {r.rows_total:.1f}) > "
                        f"capacity {r.capacity:.1f}" for (m, s), r in over.head(5).iterrows())
              or f"planned_total <= capacity in all {len(c)} (market, surface)")
    return _result("capacity", over.empty, detail, len(over), 0)


def _capacity_use(capacity: pa.Table, cfg: Config) -> dict:
    total = float(pc.sum(capacity.column("capacity")).as_py() or 0.0)
    planned = float(pc.sum(capacity.column("planned_total")).as_py() or 0.0)
    share = planned / total if total > 0 else 0.0
    ok = share >= cfg.gate_min_capacity_use - TOL
    return _result("capacity_use", ok, f"{planned:.1f} of {total:.1f} planned = {share:.2%} "
                   f"(minimum {cfg.gate_min_capacity_use:.2%})", share, cfg.gate_min_capacity_use)


def _eligible_share(scores: pa.Table, cfg: Config) -> dict:
    n = scores.num_rows
    k = int(pc.sum(scores.column("eligible").cast(pa.int64())).as_py() or 0) if n else 0
    share = k / n if n else 0.0
    lo, hi = cfg.gate_min_eligible_share, cfg.gate_max_eligible_share
    ok = lo <= share <= hi
    detail = f"{k} of {n} enrolled rows eligible = {share:.2%} (allowed {lo:.2%} to {hi:.2%})"
    if lo > hi:
        detail += "; the config's minimum exceeds its maximum, so no share can pass"
    return _result("eligible_share", ok, detail, share, {"min": lo, "max": hi})


def _load_previous(previous) -> tuple[dict | None, np.ndarray | None, str]:
    """(rows per table, eligible scores, note) of the previous snapshot."""
    if previous is None:
        return None, None, "no previous snapshot to compare with"
    folder, manifest = previous
    sid = f"{manifest.get('score_date')}/{manifest.get('snapshot_id')}"
    try:
        rows = {name: int(t["rows"]) for name, t in manifest["tables"].items()}
        files = [storage.join(folder, f["path"]) for f in manifest["tables"]["promotion_scores"]["files"]]
        t = publish.read_table_files(files, "promotion_scores", ["eligible", "score"])
    except Exception as e:  # a damaged previous snapshot must not block today's
        log.warning("previous snapshot %s cannot be read for comparison: %s", sid, e)
        return None, None, f"previous snapshot {sid} cannot be read ({type(e).__name__}: {e}); not compared"
    sc = t.filter(pc.fill_null(t.column("eligible"), False)).column("score").to_numpy(zero_copy_only=False)
    return rows, sc.astype(float), f"previous snapshot {sid}"


def _row_count(tables: dict[str, pa.Table], prev_rows: dict | None, note: str, cfg: Config) -> dict:
    limit = cfg.gate_max_row_drop
    if prev_rows is None:
        return _result("row_count", True, f"not compared: {note}", None, limit)
    drops, parts, bad = {}, [], []
    for name, t in tables.items():
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
    return _result("row_count", not bad, detail, worst, limit)


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


def _score_drift(scores: pa.Table, prev_scores: np.ndarray | None, note: str, cfg: Config) -> dict:
    limit = cfg.gate_max_score_psi
    if prev_scores is None:
        return _result("score_drift", True, f"not compared: {note}", None, limit)
    elig = scores.filter(pc.fill_null(scores.column("eligible"), False))
    cur = elig.column("score").to_numpy(zero_copy_only=False).astype(float)
    cur = cur[np.isfinite(cur)]
    if len(cur) == 0 or len(prev_scores) == 0:
        return _result("score_drift", True, f"not compared: {len(prev_scores)} eligible rows in the "
                       f"{note}, {len(cur)} now (see eligible_share)", None, limit)
    psi = population_stability_index(prev_scores, cur)
    return _result("score_drift", psi <= limit + TOL,
                   f"PSI {psi:.4f} over {PSI_BINS} score bins, {len(prev_scores)} eligible rows in the "
                   f"{note} vs {len(cur)} now (maximum {limit})", psi, limit)


# ------------------------------------------------------- expected keys ------
def expected_enrollment_keys(enrollment_files: list[str], batch_rows: int = 262_144) -> pa.Table:
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


# ------------------------------------------------------------- quarantine ---
def quarantine_dir(output_root: str, score_date: dt.date, snapshot_id: str) -> str:
    return storage.join(output_root, "quarantine", f"score_date={score_date.isoformat()}", snapshot_id)


def _relative(uri: str, folder: str) -> str:
    if storage.is_gcs(folder):
        return uri[len(folder.rstrip("/")) + 1:]
    return os.path.relpath(uri, os.path.abspath(folder)).replace(os.sep, "/")


def quarantine(output_root: str, plan, results: list[dict], tables_meta: dict) -> str:
    """Move the would-be snapshot's files from its (unpublished, manifest-less)
    folder to OUT/quarantine/score_date=D/<snapshot_id>/, then write
    `_QUARANTINE.json` (the failed gates and every result). Returns the folder.
    If the copy fails, the files stay where they were (no manifest: invisible to
    readers) and the error is raised."""
    target = quarantine_dir(output_root, plan.score_date, plan.snapshot_id)
    files = storage.list_files(plan.snapshot_dir)
    for f in files:
        storage.write_bytes(storage.join(target, *_relative(f, plan.snapshot_dir).split("/")),
                            storage.read_bytes(f))
    doc = {
        "snapshot_id": plan.snapshot_id,
        "score_date": plan.score_date.isoformat(),
        "as_of": plan.as_of.isoformat(),
        "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "failed_gates": [{k: r[k] for k in ("name", "measured", "threshold", "detail")}
                         for r in results if not r["passed"] and not r.get("skipped")],
        "validation": results,
        "tables": tables_meta,
        "dead_letters": plan.dead_letter_dir,
        "files": [_relative(f, plan.snapshot_dir) for f in files],
    }
    storage.write_bytes(storage.join(target, QUARANTINE),
                        json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    storage.delete_tree(plan.snapshot_dir)
    return target


def failure_message(results: list[dict], where: str | None, problem: str | None = None) -> str:
    names = failed(results)
    lines = [f"validation failed ({', '.join(names)}): nothing published"]
    for r in results:
        if r["name"] in names:
            lines.append(f"  {r['name']}: {r['detail']}")
    if where:
        lines.append(f"  the would-be snapshot is quarantined in {where} (see {QUARANTINE})")
    if problem:
        lines.append(f"  {problem}")
    lines.append("  after checking by hand, rerun with " + " ".join(f"--skip-gate {n}" for n in names))
    return "\n".join(lines)
