"""The allocation LP solved exactly by HiGHS (`scipy.optimize.linprog(method="highs")`)
with sparse constraint matrices: the plan together with the dual prices, all signed so
that a price is >= 0 and means "objective gained per unit of relaxation" (for a floor:
objective lost per unit the floor is raised).

Fastest below ~5k eligible tracks per problem, but its time grows superlinearly
(~0.15 s at 10k tracks, ~10 s at 100k, > 15 min at 1M): see `pipelines.allocation.dual`.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from pipelines.allocation.problem import (AllocationError, Problem, Solution, scales, solution_from_prices,
                                          trivial_solution)

HIGHS_TOL = 1e-9        # primal/dual feasibility tolerance of HiGHS (scaled units)


def highs_lp(value, upper, artist, licensor, campaign, A, L, C, capacity, artist_caps, licensor_caps,
              floors, penalty, what: str):
    """The LP of docs/design.md §4 over the given tracks with one cap per group (all in solver units),
    solved by HiGHS. Returns (x, row prices >= 0 laid out [capacity | A | L | C]).
    Raises AllocationError naming `what` unless HiGHS reports success."""
    m = value.shape[0]
    # a penalty below the solver's tolerance is no penalty: HiGHS cannot tell it from 0 and, given
    # 5.8e-15, ended with model status Unknown (found by the property tests); real ones are >= 2 max|v|
    penalty = penalty if penalty > HIGHS_TOL else 0.0
    cost = np.concatenate([-value, np.full(C, penalty)])
    bounds = np.empty((m + C, 2))
    bounds[:, 0] = 0.0
    bounds[:m, 1] = upper
    bounds[m:, 1] = np.inf

    # Rows: [capacity | artists (A) | licensors (L) | campaigns (C), written as −Σx − u ≤ −F].
    cols = np.arange(m)
    r_art, r_lic, r_camp = 1, 1 + A, 1 + A + L
    n_rows = 1 + A + L + C
    rows = np.concatenate([
        np.zeros(m, dtype=np.int64),
        r_art + artist,
        r_lic + licensor,
        r_camp + campaign,
        r_camp + np.arange(C),
    ])
    colidx = np.concatenate([cols, cols, cols, cols, m + np.arange(C)])
    data = np.concatenate([np.ones(3 * m), -np.ones(m + C)])
    a_ub = sp.csc_array((data, (rows, colidx)), shape=(n_rows, m + C))
    b_ub = np.concatenate([[capacity], artist_caps, licensor_caps, -floors])

    res = linprog(
        cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs",
        options={"primal_feasibility_tolerance": HIGHS_TOL, "dual_feasibility_tolerance": HIGHS_TOL},
    )
    if res.status != 0 or not res.success or res.x is None:
        raise AllocationError(f"HiGHS did not solve the allocation LP ({what}): "
                              f"status {res.status}: {res.message}")
    # linprog's marginals are d(min objective)/d(rhs) <= 0; the maximisation's prices are
    # their negatives. Tiny negative noise is clipped to 0.
    return res.x[:m], np.maximum(0.0, -np.asarray(res.ineqlin.marginals))


def solve_exact(problem: Problem) -> Solution:
    """Solve the LP exactly with HiGHS; raise AllocationError unless HiGHS reports success."""
    n, A, L, C = problem.n, problem.n_artists, problem.n_licensors, problem.n_campaigns
    active = np.flatnonzero(problem.upper > 0)        # ineligible tracks are fixed at 0
    if active.size == 0:
        return trivial_solution(problem, "exact")
    m = active.size
    qs, vs = scales(problem)
    xs, row_price = highs_lp(
        problem.value[active] / vs, problem.upper[active] / qs, problem.artist[active],
        problem.licensor[active], problem.campaign[active], A, L, C, problem.capacity / qs,
        np.full(A, problem.artist_cap / qs), np.full(L, problem.licensor_cap / qs), problem.floors / qs,
        problem.penalty / vs, f"n={n} tracks, {m} eligible, A={A}, L={L}, C={C}")
    x = np.zeros(n)
    x[active] = xs * qs
    return solution_from_prices(problem, x, row_price * vs, "exact")

