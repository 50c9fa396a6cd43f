"""The allocation LP of DESIGN §4, solved per (market, surface): pure functions, no Beam.

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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

__all__ = [
    "AllocationError",
    "Problem",
    "Solution",
    "METHODS",
    "binding_families",
    "check_feasible",
    "objective",
    "random_problem",
    "solve",
    "solve_exact",
]

ZERO_X = 1e-9            # |x_t| below this is published as 0
_HIGHS_TOL = 1e-9        # primal/dual feasibility tolerance of HiGHS (scaled units)


class AllocationError(RuntimeError):
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


# ----------------------------------------------------------------------------- helpers

def objective(problem: Problem, x, u) -> float:
    """Σ v_t·x_t − p·Σ u_c."""
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    return float(np.dot(problem.value, x) - problem.penalty * np.sum(u))


def _campaign_totals(problem: Problem, x: np.ndarray) -> np.ndarray:
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
    c_tot = _campaign_totals(problem, x) + u
    bad = np.flatnonzero(problem.floors - c_tot > slack(problem.floors))
    report("campaign floor", bad,
           lambda c: f"campaign {c}: sum x + u = {c_tot[c]:.10g} < F = {problem.floors[c]:.10g}")
    return out


def _clean_plan(problem: Problem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    u = np.maximum(0.0, problem.floors - _campaign_totals(problem, x))
    return x, u


# ----------------------------------------------------------------------------- exact LP

def _trivial_solution(problem: Problem, method: str) -> Solution:
    """No track can receive plays (n == 0 or all ub == 0): x = 0, u = F.

    Dual: u_c is basic where F_c > 0, so the floor's price is p; every other row is slack.
    """
    C, n = problem.n_campaigns, problem.n
    x = np.zeros(n)
    u = problem.floors.copy()
    floor_price = np.where(problem.floors > 0, problem.penalty, 0.0)
    track_price = np.maximum(0.0, problem.value + floor_price[problem.campaign]) if n else np.zeros(0)
    return Solution(
        x=x, shortfall=u, objective=objective(problem, x, u), capacity_price=0.0,
        artist_price=np.zeros(problem.n_artists), licensor_price=np.zeros(problem.n_licensors),
        floor_price=floor_price, track_price=track_price, method=method,
    )


def solve_exact(problem: Problem) -> Solution:
    """Solve the LP exactly with HiGHS; raise AllocationError unless HiGHS reports success."""
    n, A, L, C = problem.n, problem.n_artists, problem.n_licensors, problem.n_campaigns
    active = np.flatnonzero(problem.upper > 0)        # ineligible tracks are fixed at 0
    if active.size == 0:
        return _trivial_solution(problem, "exact")
    m = active.size

    # Scaling: quantities by K, values by max |v|. Neither changes the optimal plan;
    # duals are unaffected by the quantity scale and multiply back by the value scale.
    # (Both scales are bounded below so that no scaled coefficient can overflow.)
    big_q = max(float(problem.upper.max()), float(problem.floors.max(initial=0.0)))
    qs = max(problem.capacity, 1e-9 * big_q)
    vs = max(float(np.max(np.abs(problem.value))), 1e-9 * problem.penalty)
    qs = qs if qs > 0 else 1.0
    vs = vs if vs > 0 else 1.0

    cost = np.concatenate([-problem.value[active] / vs, np.full(C, problem.penalty / vs)])
    bounds = np.empty((m + C, 2))
    bounds[:, 0] = 0.0
    bounds[:m, 1] = problem.upper[active] / qs
    bounds[m:, 1] = np.inf

    # Rows: [capacity | artists (A) | licensors (L) | campaigns (C), written as −Σx − u ≤ −F].
    cols = np.arange(m)
    r_art, r_lic, r_camp = 1, 1 + A, 1 + A + L
    n_rows = 1 + A + L + C
    rows = np.concatenate([
        np.zeros(m, dtype=np.int64),
        r_art + problem.artist[active],
        r_lic + problem.licensor[active],
        r_camp + problem.campaign[active],
        r_camp + np.arange(C),
    ])
    colidx = np.concatenate([cols, cols, cols, cols, m + np.arange(C)])
    data = np.concatenate([np.ones(3 * m), -np.ones(m + C)])
    a_ub = sp.csc_array((data, (rows, colidx)), shape=(n_rows, m + C))
    b_ub = np.concatenate([
        [problem.capacity / qs],
        np.full(A, problem.artist_cap / qs),
        np.full(L, problem.licensor_cap / qs),
        -problem.floors / qs,
    ])

    res = linprog(
        cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs",
        options={"primal_feasibility_tolerance": _HIGHS_TOL, "dual_feasibility_tolerance": _HIGHS_TOL},
    )
    if res.status != 0 or not res.success or res.x is None:
        raise AllocationError(
            f"HiGHS did not solve the allocation LP (n={n} tracks, {m} eligible, A={A}, L={L}, C={C}): "
            f"status {res.status}: {res.message}"
        )

    x = np.zeros(n)
    x[active] = res.x[:m] * qs
    x, u = _clean_plan(problem, x)

    # Duals: linprog's marginals are d(min objective)/d(rhs) <= 0; the maximisation's
    # prices are their negatives. Tiny negative noise is clipped to 0.
    row_price = np.maximum(0.0, -np.asarray(res.ineqlin.marginals) * vs)
    capacity_price = float(row_price[0])
    artist_price = row_price[r_art:r_lic]
    licensor_price = row_price[r_lic:r_camp]
    floor_price = row_price[r_camp:]
    # The column dual of x_t is split by scipy into lower/upper marginals by basis status;
    # their sum is the reduced cost, and the price of x_t <= ub_t is its positive part.
    track_price = np.zeros(n)
    col_dual = (np.asarray(res.lower.marginals[:m]) + np.asarray(res.upper.marginals[:m])) * vs
    track_price[active] = np.maximum(0.0, -col_dual)
    inactive = np.ones(n, dtype=bool)
    inactive[active] = False
    if inactive.any():
        # Fixed at 0: the price of the bound is the positive part of the reduced cost.
        t = np.flatnonzero(inactive)
        reduced = (problem.value[t] - capacity_price - artist_price[problem.artist[t]]
                   - licensor_price[problem.licensor[t]] + floor_price[problem.campaign[t]])
        track_price[t] = np.maximum(0.0, reduced)

    return Solution(
        x=x, shortfall=u, objective=objective(problem, x, u), capacity_price=capacity_price,
        artist_price=artist_price, licensor_price=licensor_price, floor_price=floor_price,
        track_price=track_price, method="exact",
    )


METHODS = {"exact": solve_exact}


def solve(problem: Problem, method: str = "exact") -> Solution:
    """Solve the allocation LP with the named method (see METHODS)."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown allocation method {method!r}; choose one of {sorted(METHODS)}") from None
    return fn(problem)


# ----------------------------------------------------------------------------- instances

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
    c_tot = _campaign_totals(problem, x)
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



def _zipf(k: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** s
    return w / w.sum()


def random_problem(rng: np.random.Generator, n_tracks: int, n_artists: int, n_licensors: int,
                   n_campaigns: int, binding: bool = True) -> Problem:
    """A random allocation instance, for tests and benchmarks (deterministic given rng).

    binding=True (needs n_tracks >= 100, n_artists >= 5, n_licensors >= 5, n_campaigns >= 3)
    returns an instance where every constraint family binds at the optimum, as reported
    by `binding_families`:
    - licensor 0 and artist 0 are the largest (Zipf popularity) and get value boosts,
      so they fill their caps φ·K and ψ·K;
    - the other positive-value tracks can fill K comfortably, so capacity binds with an
      interior marginal track, and the best tracks sit at their ub;
    - campaign 0 has only negative-value tracks and a feasible floor (met by buying plays),
      campaign 1 has a floor above its total ub (shortfall > 0), the others small floors.
    K is set by sufficient conditions on the draw; the rare sparse draw where they are not
    enough is detected by solving it, and drawn again (ValueError after 100 attempts: the
    shape is too sparse). The penalty follows the config default p = 10·(max |v| + 1e-6).

    binding=False returns an unstructured instance (uniform codes, random caps and floors).
    """
    n, A, L, C = int(n_tracks), int(n_artists), int(n_licensors), int(n_campaigns)
    if min(A, L, C) < 1 or n < 0:
        raise ValueError("random_problem needs n_tracks >= 0 and at least one artist, licensor, campaign")
    if binding and (n < 100 or A < 5 or L < 5 or C < 3):
        raise ValueError("binding instances need n_tracks >= 100, n_artists >= 5, n_licensors >= 5, "
                         "n_campaigns >= 3")

    if not binding:
        value = rng.normal(0.0, 0.02, n)
        upper = rng.lognormal(5.0, 1.0, n) * 0.5
        upper[rng.random(n) < 0.1] = 0.0
        artist = rng.integers(0, A, n)
        licensor = rng.integers(0, L, n)
        campaign = rng.integers(0, C, n)
        camp_ub = np.bincount(campaign, weights=upper, minlength=C)
        floors = camp_ub * rng.uniform(0.0, 0.5, C)
        K = float(upper.sum()) * rng.uniform(0.1, 1.0)
        return Problem(value=value, upper=upper, artist=artist, licensor=licensor, campaign=campaign,
                       floors=floors, capacity=K, artist_cap=K * rng.uniform(0.05, 1.0),
                       licensor_cap=K * rng.uniform(0.05, 1.0),
                       penalty=10.0 * (float(np.max(np.abs(value), initial=0.0)) + 1e-6))

    # Caps: every group together can take well over K (A·φ, L·ψ >= 2 when possible),
    # while the two stars together stay below K (φ + ψ <= 0.8), so the filler is needed.
    phi = min(0.4, max(0.05, 2.5 / A))
    psi = min(0.4, max(0.1, 2.5 / L))
    for _ in range(100):
        prob = _binding_draw(rng, n, A, L, C, phi, psi)
        # The construction makes every family bind in all but rare sparse draws;
        # those are caught by solving the instance and drawn again.
        if prob is not None and all(binding_families(prob, solve_exact(prob)).values()):
            return prob
    raise ValueError(f"could not draw a binding instance with n_tracks={n}, n_artists={A}, "
                     f"n_licensors={L}, n_campaigns={C}; use more tracks")


def _binding_draw(rng, n, A, L, C, phi, psi) -> Problem | None:
    """One attempt at a binding instance; None if the draw cannot make every family bind.

    Structure: licensor 0 (value +0.08) fills its cap first, from tracks of many artists;
    artist 0 (value +0.05) fills its cap, from tracks outside licensor 0 if need be; the
    rest of K goes to positive-value "filler" tracks (artist != 0, licensor != 0), of which
    there is comfortably more than the caps let through, so K binds and the marginal
    filler track is interior. K is the largest value for which the (monotone in K)
    sufficient conditions below hold, at most a quarter of the positive supply.
    """
    artist = rng.choice(A, size=n, p=_zipf(A, 1.1))
    licensor = rng.choice(L, size=n, p=_zipf(L, 1.1))
    # Campaign 0 (negative values, floor to be bought) and campaign 1 (infeasible floor)
    # are small; the other tracks are spread uniformly over campaigns 2..C-1.
    k0 = max(3, n // (2 * C))
    k1 = 3
    perm = rng.permutation(n)
    campaign = rng.integers(2, C, n)
    campaign[perm[:k0]] = 0
    campaign[perm[k0:k0 + k1]] = 1
    c0, c1 = campaign == 0, campaign == 1

    upper = rng.lognormal(5.0, 0.5, n) * 0.5
    upper[(rng.random(n) < 0.1) & (campaign >= 2)] = 0.0

    value = rng.normal(0.0, 0.02, n)
    value[artist == 0] += 0.05
    value[licensor == 0] += 0.08
    value[c0] = -np.abs(value[c0]) - 0.01

    supply = np.where((value > 0) & (campaign >= 2), upper, 0.0)
    a0, l0 = artist == 0, licensor == 0
    star_art = float(supply[a0 & ~l0].sum())                       # artist 0 outside licensor 0
    l0_by_art = np.bincount(artist[l0 & ~a0], weights=supply[l0 & ~a0], minlength=A)
    filler = np.where(~a0 & ~l0, supply, 0.0)
    f_art = np.bincount(artist, weights=filler, minlength=A)
    f_lic = np.bincount(licensor, weights=filler, minlength=L)
    need = 1.3 * (1.0 - max(phi, psi))                             # filler share of K, with slack

    def ok(K: float) -> bool:
        return (star_art >= 1.5 * phi * K
                and np.minimum(l0_by_art, phi * K).sum() >= 1.5 * psi * K
                # filler under the artist caps, less what licensor 0 may take of them
                and np.minimum(f_art, phi * K).sum() - psi * K >= need * K
                # filler under the licensor caps, less what artist 0 may take of them
                and np.minimum(f_lic, psi * K).sum() - phi * K >= need * K)

    hi = 0.25 * float(supply.sum())
    if hi <= 0:
        return None
    if not ok(hi):
        lo = 0.0
        for _ in range(60):                  # each condition is monotone in K
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        hi = lo
        if hi <= 0 or not ok(hi):
            return None
    K = hi

    # The two special campaigns, sized relative to K.
    upper[c0] *= 0.08 * K / upper[c0].sum()
    upper[c1] *= 0.03 * K / upper[c1].sum()
    camp_ub = np.bincount(campaign, weights=upper, minlength=C)
    floors = np.empty(C)
    floors[0] = 0.02 * K                     # met, but only by giving to negative-value tracks
    floors[1] = 0.04 * K                     # infeasible: shortfall >= 0.01·K
    floors[2:] = rng.uniform(0.05, 0.5, C - 2) * np.minimum(camp_ub[2:], 0.3 * K / (C - 2))

    return Problem(value=value, upper=upper, artist=artist, licensor=licensor, campaign=campaign,
                   floors=floors, capacity=K, artist_cap=phi * K, licensor_cap=psi * K,
                   penalty=10.0 * (float(np.max(np.abs(value))) + 1e-6))
