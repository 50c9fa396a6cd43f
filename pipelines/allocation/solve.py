"""Solve an allocation problem by method name: "exact" (HiGHS on the whole LP),
"dual" (dual ascent polished to the exact optimum) or "auto" (exact below
AUTO_DUAL_MIN_ELIGIBLE eligible tracks, dual above)."""
from __future__ import annotations

import numpy as np

from pipelines.allocation.dual import solve_dual
from pipelines.allocation.exact import solve_exact
from pipelines.allocation.problem import Problem, Solution

# Measured crossover (bench/allocation.py): below this many eligible tracks per problem HiGHS
# on the whole LP is faster than the dual method; above it the dual method wins, by a factor
# that grows with n (HiGHS grows superlinearly, the dual method about linearly).
AUTO_DUAL_MIN_ELIGIBLE = 5_000


def solve_auto(problem: Problem) -> Solution:
    """`solve_exact` for small problems, `solve_dual` for large ones (AUTO_DUAL_MIN_ELIGIBLE)."""
    if int(np.count_nonzero(problem.upper > 0)) < AUTO_DUAL_MIN_ELIGIBLE:
        return solve_exact(problem)
    return solve_dual(problem)


METHODS = {"exact": solve_exact, "dual": solve_dual, "auto": solve_auto}


def solve(problem: Problem, method: str = "exact") -> Solution:
    """Solve the allocation LP with the named method (see METHODS)."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown allocation method {method!r}; choose one of {sorted(METHODS)}") from None
    return fn(problem)
