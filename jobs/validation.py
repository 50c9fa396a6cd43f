"""Checks a would-be snapshot must pass before anything is published.

Each check returns a result dict {name, passed, detail}; all results go into
the manifest. A failed check publishes nothing.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOL = 1e-6


def _result(name: str, passed: bool, detail: str) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def check_snapshot(tables: dict[str, pa.Table]) -> list[dict]:
    scores, delivery, capacity = tables["promotion_scores"], tables["campaign_delivery"], tables["capacity"]
    results = []

    bad = []
    for name, t in tables.items():
        for col in t.column_names:
            if pa.types.is_floating(t.schema.field(col).type):
                arr = t.column(col).to_numpy(zero_copy_only=False)
                n = int((~np.isfinite(arr)).sum())
                if n:
                    bad.append(f"{name}.{col}: {n}")
    results.append(_result("finite_values", not bad, "; ".join(bad) or "no NaN or infinite value"))

    keys = pc.binary_join_element_wise(scores.column("track_id"), scores.column("market"),
                                       scores.column("surface"), "|")
    dupes = scores.num_rows - len(pc.unique(keys))
    results.append(_result("unique_rows", dupes == 0, f"{dupes} duplicate (track, market, surface) rows"))

    s = scores.to_pandas()
    x, ub = s["planned_promoted_plays"], s["max_promoted_plays"]
    over = int((x > ub * (1 + TOL) + TOL).sum())
    inel = int(((~s["eligible"]) & ((x > 0) | (s["score"] > 0))).sum())
    out_of_range = int(((s["score"] < 0) | (s["score"] > 1 + TOL)).sum())
    results.append(_result("track_caps", over == 0, f"{over} rows above rho*E"))
    results.append(_result("ineligible_zero", inel == 0, f"{inel} ineligible rows with a boost"))
    results.append(_result("score_range", out_of_range == 0, f"{out_of_range} scores outside [0, 1]"))
    no_reason = int((~s["eligible"] & s["reason"].isna()).sum() + (s["eligible"] & s["reason"].notna()).sum())
    results.append(_result("reasons", no_reason == 0, f"{no_reason} rows whose reason disagrees with eligible"))

    c = capacity.to_pandas()
    if len(c):
        used = s.groupby(["market", "surface"])["planned_promoted_plays"].sum()
        c = c.set_index(["market", "surface"])
        used = used.reindex(c.index).fillna(0.0)
        over_cap = int((used > c["capacity"] * (1 + TOL) + TOL).sum())
    else:
        over_cap = 0
    results.append(_result("capacity", over_cap == 0, f"{over_cap} (market, surface) above capacity"))
    return results


def failed(results: list[dict]) -> list[str]:
    return [r["name"] for r in results if not r["passed"]]
