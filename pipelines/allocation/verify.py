"""Rebuild each (market, surface) LP of docs/design.md §4 from the published columns
alone (docs/design.md §5), so anyone can check a published plan against the exact
optimum. Used by tests, `oasis explain` and the benchmark."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.allocation.exact import solve_exact
from pipelines.allocation.problem import Problem, check_feasible, objective


@dataclass
class Rebuilt:
    market: str
    surface: str
    problem: Problem
    x: np.ndarray  # the published plan
    shortfall: np.ndarray  # the published u_c, per campaign code (last: floor-less group)
    rows: pd.DataFrame  # the promotion_scores rows, in problem order
    campaigns: list[str]


def rebuild(scores: pd.DataFrame, delivery: pd.DataFrame, capacity: pd.DataFrame) -> list[Rebuilt]:
    out = []
    for cap in capacity.sort_values(["market", "surface"]).itertuples(index=False):
        r = scores[(scores["market"] == cap.market) & (scores["surface"] == cap.surface)]
        r = r.sort_values("track_id").reset_index(drop=True)
        d = delivery[(delivery["market"] == cap.market) & (delivery["surface"] == cap.surface)]
        d = d.sort_values("campaign_id")
        campaigns = list(d["campaign_id"])
        index = {c: i for i, c in enumerate(campaigns)}
        extra = len(campaigns)
        camp = np.array([index.get(c, extra) for c in r["campaign_id"]], dtype=np.int64)
        problem = Problem(
            value=r["value"].to_numpy(float), upper=r["max_promoted_plays"].to_numpy(float),
            artist=pd.factorize(r["artist_id"], sort=True)[0].astype(np.int64),
            licensor=pd.factorize(r["licensor_id"], sort=True)[0].astype(np.int64),
            campaign=camp, floors=np.concatenate([d["floor"].to_numpy(float), [0.0]]),
            capacity=float(cap.capacity), artist_cap=float(cap.artist_cap),
            licensor_cap=float(cap.licensor_cap), penalty=float(cap.shortfall_penalty))
        shortfall = np.concatenate([d["shortfall"].to_numpy(float), [0.0]])
        out.append(Rebuilt(cap.market, cap.surface, problem, r["planned_promoted_plays"].to_numpy(float),
                           shortfall, r, campaigns))
    return out


def gap(rebuilt: Rebuilt) -> tuple[float, float, list[str]]:
    """(published objective, exact optimum, feasibility violations)."""
    p = rebuilt.problem
    exact = solve_exact(p)
    # the published shortfall must be consistent with the plan; recompute u from x
    per_campaign = np.bincount(p.campaign, weights=rebuilt.x, minlength=len(p.floors))
    u = np.maximum(0.0, p.floors - per_campaign)
    published = objective(p, rebuilt.x, u)
    violations = check_feasible(p, rebuilt.x, u)
    if not np.allclose(u, rebuilt.shortfall, rtol=1e-6, atol=1e-6):
        violations.append("published shortfall disagrees with the plan")
    return published, exact.objective, violations


def relative_gap(published: float, optimum: float) -> float:
    """How far below the optimum the plan is, relative to the optimum's scale."""
    scale = max(abs(optimum), 1e-9)
    return max(0.0, optimum - published) / scale
