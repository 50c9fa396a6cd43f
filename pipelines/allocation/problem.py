"""The allocation LP of docs/design.md §4, solved per (market, surface): pure functions, no Beam.

    maximize    Σ_t v_t·x_t − p·Σ_c u_c
    subject to  Σ_t x_t ≤ K                          (capacity)
                0 ≤ x_t ≤ ub_t                       (ub_t = ρ·E_t; 0 for ineligible tracks)
                Σ_{t ∈ artist a} x_t ≤ A_cap          (A_cap = φ·K, same for every artist)
                Σ_{t ∈ licensor l} x_t ≤ L_cap        (L_cap = ψ·K)
                Σ_{t ∈ campaign c} x_t + u_c ≥ F_c,  u_c ≥ 0

`solve_exact` hands the LP to HiGHS (`scipy.optimize.linprog(method="highs")`) with
sparse constraint matrices and returns the plan together with the dual prices, all
signed so that a price is >= 0 and means "objective gained per unit of relaxation"
(for a floor: objective lost per unit the floor is raised).

The published plan is cleaned of solver noise: x is clipped into [0, ub], |x| < 1e-9
becomes 0, a group that exceeds its cap by solver tolerance is scaled down onto it,
and the shortfall is recomputed from x as max(0, F_c − Σ_{t∈c} x_t), so that
(x, shortfall, objective) are exactly consistent with each other.

Numerics: the LP is solved in scaled units (quantities divided by K, values divided
by max |v|); neither scaling changes the optimal plan, and the duals are scaled back.


The pieces: this module holds the problem, the solution and what every method
shares (feasibility check, objective, plan cleaning, solver scaling, prices);
`exact` solves with HiGHS, `dual` by a first-order dual method polished to the
exact optimum, `solve` picks one by name, `instances` generates test problems
(tests and benchmarks only) and `verify` rebuilds a published problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.errors import OasisError

ZERO_X = 1e-9            # |x_t| below this is published as 0


class AllocationError(OasisError):
    """The LP solver did not return an optimal solution."""


# ----------------------------------------------------------------------------- data

@dataclass
class Problem:
    value: np.ndarray        # (n,) float v_t
    upper: np.ndarray        # (n,) float ub_t >= 0
    artist: np.ndarray       # (n,) int codes 0..A-1
    licensor: np.ndarray     # (n,) int codes 0..L-1
    campaign: np.ndarray     # (n,) int codes 0..C-1
    floors: np.ndarray       # (C,) float F_c >= 0
    capacity: float          # K
    artist_cap: float        # φ·K
    licensor_cap: float      # ψ·K
    penalty: float           # p

    def __post_init__(self):
        self.value = np.asarray(self.value, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        self.artist = _codes(self.artist, "artist")
        self.licensor = _codes(self.licensor, "licensor")
        self.campaign = _codes(self.campaign, "campaign")
        self.floors = np.asarray(self.floors, dtype=np.float64).reshape(-1)
        self.capacity = float(self.capacity)
        self.artist_cap = float(self.artist_cap)
        self.licensor_cap = float(self.licensor_cap)
        self.penalty = float(self.penalty)
        self.validate()

    # sizes -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.value.shape[0])

    @property
    def n_artists(self) -> int:
        return int(self.artist.max()) + 1 if self.n else 0

    @property
    def n_licensors(self) -> int:
        return int(self.licensor.max()) + 1 if self.n else 0

    @property
    def n_campaigns(self) -> int:
        return int(self.floors.shape[0])

    def validate(self) -> None:
        """Raise ValueError naming the first malformed field."""
        n = self.n
        for name in ("upper", "artist", "licensor", "campaign"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"Problem.{name} has length {getattr(self, name).shape[0]}, "
                                 f"expected {n} (length of value)")
        for name in ("value", "upper", "floors"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Problem.{name} contains NaN or infinite entries")
        if np.any(self.upper < 0):
            raise ValueError("Problem.upper must be >= 0 (ub_t = rho*E_t)")
        if np.any(self.floors < 0):
            raise ValueError("Problem.floors must be >= 0")
        for name in ("artist", "licensor", "campaign"):
            codes = getattr(self, name)
            if n and codes.min() < 0:
                raise ValueError(f"Problem.{name} codes must be >= 0")
        if n and self.campaign.max() >= self.n_campaigns:
            raise ValueError(f"Problem.campaign code {int(self.campaign.max())} has no floor "
                             f"(floors has length {self.n_campaigns})")
        for name in ("capacity", "artist_cap", "licensor_cap", "penalty"):
            val = getattr(self, name)
            if not np.isfinite(val) or val < 0:
                raise ValueError(f"Problem.{name} must be finite and >= 0, got {val!r}")


def _codes(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"Problem.{name} must hold integer codes")
    return a.astype(np.int64).reshape(-1)


@dataclass
class Solution:
    x: np.ndarray                # (n,)
    shortfall: np.ndarray        # (C,) u_c
    objective: float
    capacity_price: float        # dual of the capacity row, >= 0
    artist_price: np.ndarray     # (A,) >= 0
    licensor_price: np.ndarray   # (L,) >= 0
    floor_price: np.ndarray      # (C,) >= 0
    track_price: np.ndarray      # (n,) dual of x_t <= ub_t, >= 0
    method: str
    info: dict = field(default_factory=dict)   # solver diagnostics (iterations, certified gap, ...)


# ----------------------------------------------------------------------------- helpers

def objective(problem: Problem, x, u) -> float:
    """Σ v_t·x_t − p·Σ u_c."""
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    return float(np.dot(problem.value, x) - problem.penalty * np.sum(u))


def campaign_totals(problem: Problem, x: np.ndarray) -> np.ndarray:
    return np.bincount(problem.campaign, weights=x, minlength=problem.n_campaigns)[: problem.n_campaigns]


def check_feasible(problem: Problem, x, u, tol: float = 1e-6) -> list[str]:
    """Human-readable list of violated constraints, empty if (x, u) is feasible.

    A constraint `lhs <= rhs` counts as violated when lhs − rhs > tol·max(1, |rhs|)
    (likewise for >=), i.e. the tolerance is relative to the bound, absolute below 1.
    At most 5 violations are listed per family, followed by a count of the rest.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    n, C = problem.n, problem.n_campaigns
    out: list[str] = []
    if x.shape[0] != n:
        return [f"x has length {x.shape[0]}, expected {n}"]
    if u.shape[0] != C:
        return [f"shortfall has length {u.shape[0]}, expected {C}"]
    if not np.all(np.isfinite(x)):
        out.append("x contains NaN or infinite entries")
    if not np.all(np.isfinite(u)):
        out.append("shortfall contains NaN or infinite entries")
    if out:
        return out

    def slack(rhs):
        return tol * np.maximum(1.0, np.abs(rhs))

    def report(family: str, bad_idx: np.ndarray, fmt):
        shown = [fmt(int(i)) for i in bad_idx[:5]]
        out.extend(f"{family}: {s}" for s in shown)
        if bad_idx.size > 5:
            out.append(f"{family}: ... and {bad_idx.size - 5} more")

    bad = np.flatnonzero(x < -slack(0.0))
    report("track lower bound", bad, lambda i: f"x[{i}] = {x[i]:.10g} < 0")
    bad = np.flatnonzero(x - problem.upper > slack(problem.upper))
    report("track upper bound", bad, lambda i: f"x[{i}] = {x[i]:.10g} > ub = {problem.upper[i]:.10g}")
    bad = np.flatnonzero(u < -slack(0.0))
    report("shortfall lower bound", bad, lambda i: f"u[{i}] = {u[i]:.10g} < 0")

    total = float(np.sum(x))
    if total - problem.capacity > slack(problem.capacity):
        out.append(f"capacity: sum x = {total:.10g} > K = {problem.capacity:.10g}")
    if n:
        a_tot = np.bincount(problem.artist, weights=x)
        bad = np.flatnonzero(a_tot - problem.artist_cap > slack(problem.artist_cap))
        report("artist cap", bad, lambda a: f"artist {a}: sum x = {a_tot[a]:.10g} > {problem.artist_cap:.10g}")
        l_tot = np.bincount(problem.licensor, weights=x)
        bad = np.flatnonzero(l_tot - problem.licensor_cap > slack(problem.licensor_cap))
        report("licensor cap", bad,
               lambda l: f"licensor {l}: sum x = {l_tot[l]:.10g} > {problem.licensor_cap:.10g}")
    c_tot = campaign_totals(problem, x) + u
    bad = np.flatnonzero(problem.floors - c_tot > slack(problem.floors))
    report("campaign floor", bad,
           lambda c: f"campaign {c}: sum x + u = {c_tot[c]:.10g} < F = {problem.floors[c]:.10g}")
    return out


def clean_plan(problem: Problem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip x into [0, ub], pull groups over their caps by solver tolerance back onto them,
    zero |x| < ZERO_X, and recompute the shortfall from x."""
    x = np.clip(x, 0.0, problem.upper)
    if problem.n:
        for codes, cap in ((problem.artist, problem.artist_cap), (problem.licensor, problem.licensor_cap)):
            tot = np.bincount(codes, weights=x)
            over = tot > cap
            if over.any():
                factor = np.ones_like(tot)
                factor[over] = cap / tot[over]
                x = x * factor[codes]
        total = float(np.sum(x))
        if total > problem.capacity:
            x = x * (problem.capacity / total)
    x[np.abs(x) < ZERO_X] = 0.0
    u = np.maximum(0.0, problem.floors - campaign_totals(problem, x))
    return x, u


def trivial_solution(problem: Problem, method: str) -> Solution:
    """No track can receive plays (n == 0 or all ub == 0): x = 0, u = F.

    Dual: u_c is basic where F_c > 0, so the floor's price is p; every other row is slack.
    """
    n = problem.n
    x = np.zeros(n)
    u = problem.floors.copy()
    floor_price = np.where(problem.floors > 0, problem.penalty, 0.0)
    track_price = np.maximum(0.0, problem.value + floor_price[problem.campaign]) if n else np.zeros(0)
    return Solution(
        x=x, shortfall=u, objective=objective(problem, x, u), capacity_price=0.0,
        artist_price=np.zeros(problem.n_artists), licensor_price=np.zeros(problem.n_licensors),
        floor_price=floor_price, track_price=track_price, method=method,
    )


def scales(problem: Problem) -> tuple[float, float]:
    """(quantity scale, value scale) of the solver units: quantities by K, values by max |v|.

    Neither changes the optimal plan; duals are unaffected by the quantity scale and
    multiply back by the value scale. Both are bounded below so that no scaled
    coefficient can overflow."""
    big_q = max(float(problem.upper.max(initial=0.0)), float(problem.floors.max(initial=0.0)))
    qs = max(problem.capacity, 1e-9 * big_q)
    vs = max(float(np.max(np.abs(problem.value), initial=0.0)), 1e-9 * problem.penalty)
    return (qs if qs > 0 else 1.0), (vs if vs > 0 else 1.0)


def solution_from_prices(problem: Problem, x: np.ndarray, row_price: np.ndarray, method: str) -> Solution:
    """Clean x (see clean_plan) and attach the row prices (original units, laid out
    [capacity | A | L | C]); the price of x_t <= ub_t is the positive part of t's reduced cost."""
    A, L = problem.n_artists, problem.n_licensors
    x, u = clean_plan(problem, x)
    capacity_price = float(row_price[0])
    artist_price = row_price[1:1 + A]
    licensor_price = row_price[1 + A:1 + A + L]
    floor_price = row_price[1 + A + L:]
    track_price = np.maximum(0.0, reduced_cost(problem, capacity_price, artist_price, licensor_price,
                                                floor_price))
    return Solution(
        x=x, shortfall=u, objective=objective(problem, x, u), capacity_price=capacity_price,
        artist_price=artist_price, licensor_price=licensor_price, floor_price=floor_price,
        track_price=track_price, method=method,
    )


def reduced_cost(problem: Problem, capacity_price, artist_price, licensor_price, floor_price) -> np.ndarray:
    """v_t − y_0 − y_a(t) − y_l(t) + z_c(t): the objective gained per unit of x_t at these prices."""
    if not problem.n:
        return np.zeros(0)
    return (problem.value - capacity_price - artist_price[problem.artist]
            - licensor_price[problem.licensor] + floor_price[problem.campaign])


def binding_families(problem: Problem, sol: Solution, rel: float = 1e-7,
                     price_tol: float = 1e-9) -> dict[str, bool]:
    """Which constraint families bind in `sol`: a row counts when it is tight (within
    `rel` of its bound) and its price exceeds `price_tol`.

    capacity, artist, licensor, track (x_t = ub_t > 0): some row of the family binds;
    floor_met: some positive floor is met exactly by plays (shortfall 0);
    floor_short: some floor is missed (shortfall > rel·K);
    floor_bought: some priced floor is met with plays on a negative-value track.
    """
    x, K = sol.x, problem.capacity
    a_tot = np.bincount(problem.artist, weights=x, minlength=problem.n_artists)
    l_tot = np.bincount(problem.licensor, weights=x, minlength=problem.n_licensors)
    c_tot = campaign_totals(problem, x)
    neg_given = np.bincount(problem.campaign, weights=((problem.value < 0) & (x > 0)).astype(float),
                            minlength=problem.n_campaigns)[: problem.n_campaigns] > 0
    met = sol.shortfall <= rel * np.maximum(1.0, problem.floors)
    return {
        "capacity": bool(sol.capacity_price > price_tol and x.sum() >= K * (1 - rel)),
        "artist": bool(np.any((sol.artist_price > price_tol) & (a_tot >= problem.artist_cap * (1 - rel)))),
        "licensor": bool(np.any((sol.licensor_price > price_tol)
                                & (l_tot >= problem.licensor_cap * (1 - rel)))),
        "track": bool(np.any((sol.track_price > price_tol) & (problem.upper > 0)
                             & (x >= problem.upper * (1 - rel)))),
        "floor_met": bool(np.any((problem.floors > 0) & met & (c_tot >= problem.floors * (1 - rel)))),
        "floor_short": bool(np.any(sol.shortfall > rel * max(K, 1.0))),
        "floor_bought": bool(np.any((sol.floor_price > price_tol) & met & neg_given)),
    }


