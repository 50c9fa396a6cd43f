"""An optimality oracle for a published allocation that shares no code with the
allocation modules: it reads the published columns itself (docs/design.md §5), checks
the plan's primal feasibility in numpy, and proves optimality by a dual
certificate built from the published capacity shadow price.

The certificate. For one (market, surface), with the published capacity price
y0 held fixed, the rest of the dual of docs/design.md §4's LP

    minimise   K·y0 + Σ_a φK·y_a + Σ_l ψK·y_l − Σ_c F_c·z_c + Σ_t ub_t·w_t
    subject to y0 + y_a(t) + y_l(t) − z_c(t) + w_t >= v_t   (every track t)
               y_a, y_l, w_t >= 0,  0 <= z_c <= p

is solved as its own LP (a different formulation from the production primal,
assembled here). Whatever solver finds those prices, the proof is checked in
numpy: prices that satisfy every dual constraint give an upper bound D on any
feasible plan's objective (weak duality), so a feasible published plan whose
objective P reaches D is optimal, and the published y0 is an optimal capacity
price. A plan short of the optimum, or a wrong published shadow price, leaves a
gap D − P > 0 that no dual-feasible prices can close.

What this cannot check without the other prices: the published plan is proven
optimal and the capacity price proven right, but the artist, licensor, floor and
track prices behind `oasis explain` are found here, not read; once every
constraint's dual is published (a prices table), `certify` can take them as
given and need no solver at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linprog


@dataclass
class Certificate:
    market: str
    surface: str
    primal: float            # the published plan's objective Σ v·x − p·Σ u
    bound: float             # D: dual objective at dual-feasible prices with the published y0
    scale: float             # the size the gap is measured against
    violations: list[str] = field(default_factory=list)   # primal or dual infeasibilities
    binding: set[str] = field(default_factory=set)        # families tight in the published plan

    @property
    def gap(self) -> float:
        """(D − P) / scale: 0 for an optimal plan with a right capacity price."""
        return (self.bound - self.primal) / self.scale


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    uniq = sorted(set(values))
    index = {v: i for i, v in enumerate(uniq)}
    return np.array([index[v] for v in values], dtype=np.int64), len(uniq)


def certify(scores: pd.DataFrame, delivery: pd.DataFrame, capacity: pd.DataFrame,
            feas_tol: float = 1e-6) -> list[Certificate]:
    """One certificate per published (market, surface)."""
    out = []
    for cap in capacity.itertuples(index=False):
        rows = scores[(scores["market"] == cap.market) & (scores["surface"] == cap.surface)]
        camps = delivery[(delivery["market"] == cap.market) & (delivery["surface"] == cap.surface)]
        out.append(_certify_one(rows, camps, cap, feas_tol))
    return out


def _certify_one(rows: pd.DataFrame, camps: pd.DataFrame, cap, tol: float) -> Certificate:
    v = rows["value"].to_numpy(float)
    ub = rows["max_promoted_plays"].to_numpy(float)
    x = rows["planned_promoted_plays"].to_numpy(float)
    artist, n_a = _codes(rows["artist_id"])
    licensor, n_l = _codes(rows["licensor_id"])
    floor_of = dict(zip(camps["campaign_id"], camps["floor"].astype(float)))
    short_of = dict(zip(camps["campaign_id"], camps["shortfall"].astype(float)))
    cids = sorted(floor_of)
    cindex = {c: i for i, c in enumerate(cids)}
    camp = np.array([cindex.get(c, -1) for c in rows["campaign_id"]], dtype=np.int64)
    F = np.array([floor_of[c] for c in cids], dtype=float)
    K, A_cap, L_cap, p = float(cap.capacity), float(cap.artist_cap), float(cap.licensor_cap), float(
        cap.shortfall_penalty)
    y0 = float(cap.shadow_price)
    n, C = len(v), len(F)

    # --- primal: the published plan, checked constraint by constraint -------------------
    problems = []
    slack = lambda rhs: tol * max(1.0, abs(rhs))  # noqa: E731
    if np.any(x < -tol):
        problems.append(f"x < 0 on {int(np.sum(x < -tol))} rows")
    over = x - ub > tol * np.maximum(1.0, ub)
    if over.any():
        problems.append(f"x > rho*E on {int(over.sum())} rows")
    if x.sum() - K > slack(K):
        problems.append(f"capacity: {x.sum():.10g} > {K:.10g}")
    for codes, k, capv, what in ((artist, n_a, A_cap, "artist"), (licensor, n_l, L_cap, "licensor")):
        tot = np.bincount(codes, weights=x, minlength=k)
        if np.any(tot - capv > slack(capv)):
            problems.append(f"{what} cap exceeded by {int(np.sum(tot - capv > slack(capv)))} groups")
    given = np.bincount(camp[camp >= 0], weights=x[camp >= 0], minlength=C)[:C]
    u = np.maximum(0.0, F - given)
    published_u = np.array([short_of[c] for c in cids], dtype=float)
    if not np.allclose(u, published_u, rtol=1e-6, atol=1e-6):
        problems.append("published shortfall is not max(0, floor - planned)")
    if abs(float(cap.planned_total) - x.sum()) > slack(x.sum()):
        problems.append(f"planned_total {cap.planned_total} != sum of x {x.sum()}")
    primal = float(v @ x - p * u.sum())

    # --- dual: the best prices with y0 fixed, found by a solver, checked here ---------
    # variables [y_a (n_a) | y_l (n_l) | z_c (C) | w_t (n)]
    m = n_a + n_l + C + n
    cost = np.concatenate([np.full(n_a, A_cap), np.full(n_l, L_cap), -F, ub])
    t = np.arange(n)
    has_c = camp >= 0
    r = np.concatenate([t, t, t[has_c], t])
    c = np.concatenate([artist, n_a + licensor, n_a + n_l + camp[has_c], n_a + n_l + C + t])
    d = np.concatenate([-np.ones(n), -np.ones(n), np.ones(int(has_c.sum())), -np.ones(n)])
    a_ub = sp.csr_array((d, (r, c)), shape=(n, m))
    b_ub = -(v - y0)
    bounds = [(0, None)] * (n_a + n_l) + [(0, p)] * C + [(0, None)] * n
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs-ipm") if n else None
    if res is not None and res.status != 0:
        problems.append(f"the dual with the published y0 = {y0} has no solution: {res.message}")
        return Certificate(cap.market, cap.surface, primal, np.inf, 1.0, problems)
    price = res.x if res is not None else np.zeros(m)
    ya, yl = price[:n_a], price[n_a:n_a + n_l]
    z, w = np.clip(price[n_a + n_l:n_a + n_l + C], 0.0, p), np.maximum(price[n_a + n_l + C:], 0.0)
    ya, yl = np.maximum(ya, 0.0), np.maximum(yl, 0.0)
    if y0 < 0:
        problems.append(f"published shadow price {y0} < 0")
    # make the prices exactly dual feasible: raise w_t by any leftover shortfall of its row
    lhs = y0 + ya[artist] + yl[licensor] - np.where(has_c, z[np.maximum(camp, 0)], 0.0) + w
    w = w + np.maximum(0.0, v - lhs)
    bound = float(K * y0 + A_cap * ya.sum() + L_cap * yl.sum() - F @ z + ub @ w)
    scale = max(abs(primal), float(np.abs(v) @ ub) * 1e-3, 1e-12)
    binding = set()
    if K > 0 and x.sum() >= K * (1 - 1e-6):
        binding.add("capacity")
    if np.any((ub > 0) & (x >= ub * (1 - 1e-6))):
        binding.add("track")
    if n and np.bincount(artist, weights=x).max() >= A_cap * (1 - 1e-6) > 0:
        binding.add("artist")
    if n and np.bincount(licensor, weights=x).max() >= L_cap * (1 - 1e-6) > 0:
        binding.add("licensor")
    if np.any((F > 0) & (given <= F * (1 + 1e-6))):
        binding.add("floor")
    return Certificate(cap.market, cap.surface, primal, bound, scale, problems, binding)
