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

Methods (`solve(problem, method)`, see METHODS):
- "exact": HiGHS on the whole LP. Fastest below ~5k eligible tracks per problem, but its
  time grows superlinearly (~0.15 s at 10k tracks, ~10 s at 100k, > 15 min at 1M).
- "dual": `solve_dual`, a DuaLip-style ridge-regularised dual ascent (accelerated
  projected gradient, γ continuation) in vectorised numpy, whose approximate prices
  screen the tracks so that HiGHS only solves the LP over the ~0.5% whose reduced cost
  is near 0 (the "polish"); the result is the exact optimum with exact prices, certified
  for the whole LP. About linear in n: ~0.1 s at 10k tracks, ~1 s at 100k, ~12 s at 1M.
- "auto": `solve_auto`, exact below AUTO_DUAL_MIN_ELIGIBLE eligible tracks, dual above.
Solution.info carries the method's diagnostics (iterations, certified gap, polish size).
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    "solve_auto",
    "solve_dual",
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
    info: dict = field(default_factory=dict)   # solver diagnostics (iterations, certified gap, ...)


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


def _scales(problem: Problem) -> tuple[float, float]:
    """(quantity scale, value scale) of the solver units: quantities by K, values by max |v|.

    Neither changes the optimal plan; duals are unaffected by the quantity scale and
    multiply back by the value scale. Both are bounded below so that no scaled
    coefficient can overflow."""
    big_q = max(float(problem.upper.max(initial=0.0)), float(problem.floors.max(initial=0.0)))
    qs = max(problem.capacity, 1e-9 * big_q)
    vs = max(float(np.max(np.abs(problem.value), initial=0.0)), 1e-9 * problem.penalty)
    return (qs if qs > 0 else 1.0), (vs if vs > 0 else 1.0)


def _highs_lp(value, upper, artist, licensor, campaign, A, L, C, capacity, artist_caps, licensor_caps,
              floors, penalty, what: str):
    """The LP of DESIGN §4 over the given tracks with one cap per group (all in solver units),
    solved by HiGHS. Returns (x, row prices >= 0 laid out [capacity | A | L | C]).
    Raises AllocationError naming `what` unless HiGHS reports success."""
    m = value.shape[0]
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
        options={"primal_feasibility_tolerance": _HIGHS_TOL, "dual_feasibility_tolerance": _HIGHS_TOL},
    )
    if res.status != 0 or not res.success or res.x is None:
        raise AllocationError(f"HiGHS did not solve the allocation LP ({what}): "
                              f"status {res.status}: {res.message}")
    # linprog's marginals are d(min objective)/d(rhs) <= 0; the maximisation's prices are
    # their negatives. Tiny negative noise is clipped to 0.
    return res.x[:m], np.maximum(0.0, -np.asarray(res.ineqlin.marginals))


def _solution_from_prices(problem: Problem, x: np.ndarray, row_price: np.ndarray, method: str) -> Solution:
    """Clean x (see _clean_plan) and attach the row prices (original units, laid out
    [capacity | A | L | C]); the price of x_t <= ub_t is the positive part of t's reduced cost."""
    A, L = problem.n_artists, problem.n_licensors
    x, u = _clean_plan(problem, x)
    capacity_price = float(row_price[0])
    artist_price = row_price[1:1 + A]
    licensor_price = row_price[1 + A:1 + A + L]
    floor_price = row_price[1 + A + L:]
    track_price = np.maximum(0.0, _reduced_cost(problem, capacity_price, artist_price, licensor_price,
                                                floor_price))
    return Solution(
        x=x, shortfall=u, objective=objective(problem, x, u), capacity_price=capacity_price,
        artist_price=artist_price, licensor_price=licensor_price, floor_price=floor_price,
        track_price=track_price, method=method,
    )


def _reduced_cost(problem: Problem, capacity_price, artist_price, licensor_price, floor_price) -> np.ndarray:
    """v_t − y_0 − y_a(t) − y_l(t) + z_c(t): the objective gained per unit of x_t at these prices."""
    if not problem.n:
        return np.zeros(0)
    return (problem.value - capacity_price - artist_price[problem.artist]
            - licensor_price[problem.licensor] + floor_price[problem.campaign])


def solve_exact(problem: Problem) -> Solution:
    """Solve the LP exactly with HiGHS; raise AllocationError unless HiGHS reports success."""
    n, A, L, C = problem.n, problem.n_artists, problem.n_licensors, problem.n_campaigns
    active = np.flatnonzero(problem.upper > 0)        # ineligible tracks are fixed at 0
    if active.size == 0:
        return _trivial_solution(problem, "exact")
    m = active.size
    qs, vs = _scales(problem)
    xs, row_price = _highs_lp(
        problem.value[active] / vs, problem.upper[active] / qs, problem.artist[active],
        problem.licensor[active], problem.campaign[active], A, L, C, problem.capacity / qs,
        np.full(A, problem.artist_cap / qs), np.full(L, problem.licensor_cap / qs), problem.floors / qs,
        problem.penalty / vs, f"n={n} tracks, {m} eligible, A={A}, L={L}, C={C}")
    x = np.zeros(n)
    x[active] = xs * qs
    return _solution_from_prices(problem, x, row_price * vs, "exact")


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
                   n_campaigns: int, binding: bool = True, check: bool = True) -> Problem:
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

    check=False skips that solve (for benchmarks of large instances): the first draw that
    meets the sufficient conditions is returned, in rare sparse draws one where a family
    does not bind.

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
        if prob is not None and (not check or all(binding_families(prob, solve_exact(prob)).values())):
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


# ----------------------------------------------------------------------------- dual method
#
# DuaLip-style ridge-regularised dual ascent. In solver units (see _scales) and over the
# eligible tracks, for γ > 0
#
#     maximize  vᵀx − p·Σu − (γ/2)‖x‖²   over 0 <= x <= ub, u >= 0, subject to the rows of §4.
#
# With the rows written as s_i·(Mx)_i <= b_i (floors as −Σ_{t∈c} x_t <= −F_c) and prices
# y = [y_0 | y_a | y_l | z_c] >= 0 (z_c <= p, else u_c is unbounded), the Lagrangian is
# maximised in closed form by
#
#     x_t(y) = clip(r_t / γ, 0, ub_t),   r_t = v_t − y_0 − y_a(t) − y_l(t) + z_c(t),
#
# and the dual function g(y) = Σ_t (r_t·x_t − (γ/2)·x_t²) + yᵀb is convex and smooth with
# gradient ∇g = b − s∘Mx (the slack of each row at x(y)). g is minimised over the box by
# accelerated projected gradient (FISTA with backtracking and gradient-based restarts) in
# the metric of a diagonal preconditioner, with γ decreased stage by stage (continuation).
# At any y in the box the unregularised dual bound
#
#     D(y) = Σ_t ub_t·max(0, r_t) + yᵀb  >=  LP optimum
#
# certifies the gap of any feasible plan. The plan x(y) is repaired into an exactly
# feasible one (`_repair`), and then, as a rule, polished (`_polish`): tracks whose reduced
# cost is clearly negative are fixed at 0, clearly positive at ub, and the LP over the rest
# is solved by HiGHS; fixed tracks whose reduced cost at the LP's prices has the wrong sign
# are freed and the LP solved again, until the prices certify the plan as optimal for the
# whole LP (so a polished plan is exact). See `solve_dual` for when the polish is skipped.


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # Elementwise rather than np.dot: BLAS threads contend badly on a busy machine, and
    # these vectors are short enough that one pass of numpy is as fast.
    return float(np.multiply(a, b).sum())


@dataclass
class _Dual:
    """The eligible tracks in solver units, with the row layout [capacity | A | L | C]."""
    v: np.ndarray
    ub: np.ndarray
    ja: np.ndarray           # artist, licensor and campaign code of each track
    jl: np.ndarray
    jc: np.ndarray
    b: np.ndarray            # (R,) right-hand sides, floors negated
    hi: np.ndarray           # (R,) upper bound of each price (inf, or p for floors)
    A: int
    L: int
    C: int

    def __post_init__(self):
        # row index of each track's artist, licensor and campaign row
        self.ia = 1 + self.ja
        self.il = 1 + self.A + self.jl
        self.ic = 1 + self.A + self.L + self.jc

    @property
    def R(self) -> int:
        return 1 + self.A + self.L + self.C

    def reduced(self, y: np.ndarray) -> np.ndarray:
        r = self.v - y[0]
        r -= y[self.ia]
        r -= y[self.il]
        r += y[self.ic]
        return r

    def row_sums(self, x: np.ndarray) -> np.ndarray:
        """s∘Mx: [Σx | artist sums | licensor sums | −campaign sums]."""
        A, L = self.A, self.L
        return np.concatenate([[x.sum()], np.bincount(self.ja, weights=x, minlength=A),
                               np.bincount(self.jl, weights=x, minlength=L),
                               -np.bincount(self.jc, weights=x, minlength=self.C)])

    def at(self, y: np.ndarray, gamma: float):
        """(g(y), ∇g(y), x(y), r(y)) of the γ-regularised dual."""
        r = self.reduced(y)
        x = r * (1.0 / gamma)
        np.maximum(x, 0.0, out=x)
        np.minimum(x, self.ub, out=x)
        t = x * (-0.5 * gamma)
        t += r
        t *= x
        g = float(t.sum()) + _dot(y, self.b)
        return g, self.b - self.row_sums(x), x, r

    def bound(self, y: np.ndarray) -> float:
        """D(y): the LP dual objective at prices y (an upper bound on the LP optimum)."""
        r = self.reduced(y)
        return float(_dot(self.ub, np.maximum(r, 0.0)) + _dot(y, self.b))


def _dual_setup(problem: Problem, active: np.ndarray, qs: float, vs: float) -> _Dual:
    A, L, C = problem.n_artists, problem.n_licensors, problem.n_campaigns
    b = np.concatenate([[problem.capacity / qs], np.full(A, problem.artist_cap / qs),
                        np.full(L, problem.licensor_cap / qs), -problem.floors / qs])
    hi = np.concatenate([np.full(1 + A + L, np.inf), np.full(C, problem.penalty / vs)])
    return _Dual(v=problem.value[active] / vs, ub=problem.upper[active] / qs,
                 ja=problem.artist[active].astype(np.intp), jl=problem.licensor[active].astype(np.intp),
                 jc=problem.campaign[active].astype(np.intp), b=b, hi=hi, A=A, L=L, C=C)


_STALL = 100


def _group_min(values: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Per-group minimum (inf for an empty group)."""
    out = np.full(k, np.inf)
    np.minimum.at(out, codes, values)
    return out


def _jump(d: _Dual, y: np.ndarray, gamma: float, stats: dict) -> np.ndarray:
    """Exact line search on the rows along which g is linear.

    A row none of whose tracks is interior (0 < x_t < ub_t) leaves every x_t unchanged
    when its price moves, until the first of its tracks reaches a kink (r_t = 0 from
    below, or r_t = γ·ub_t from above): along it g falls at the rate |∇g_i| up to that
    point (or to the price's bound). Such rows are moved there, one family at a time
    (the rows of a family share no track, so their moves add up exactly). FISTA would
    creep along them at the step the curved rows allow: a floor that cannot be met must
    have its price raised all the way to p."""
    fam = ((0, 1, np.zeros(d.v.shape[0], dtype=np.intp), 1.0),
           (1, d.A, d.ja, 1.0), (1 + d.A, d.L, d.jl, 1.0), (1 + d.A + d.L, d.C, d.jc, -1.0))
    for start, k, codes, sign in fam:
        if k == 0:
            continue
        g, grad, x, r = d.at(y, gamma)
        stats["passes"] += 1
        rows = slice(start, start + k)
        gi, yi, hi = grad[rows], y[rows], d.hi[rows]
        interior = np.bincount(codes, weights=((x > 0) & (x < d.ub)).astype(np.float64), minlength=k)
        up = (gi < 0) & (yi < hi)                  # descent raises the price
        down = (gi > 0) & (yi > 0)                 # descent lowers it
        move = (interior == 0) & (up | down)
        if not move.any():
            continue
        # r_t moves by -sign·Δy: raising a cap price (or lowering a floor price) lowers r_t
        lowers = np.where(up, sign > 0, sign < 0)[codes]
        at_ub = x >= d.ub
        at_0 = x <= 0
        dist = np.where(lowers, np.where(at_ub, r - gamma * d.ub, np.inf), np.where(at_0, -r, np.inf))
        dist = np.maximum(dist, 0.0)
        step = _group_min(dist, codes, k)
        step = np.minimum(step, np.where(up, hi - yi, yi))
        step = np.where(move & np.isfinite(step), step, 0.0)
        y = y.copy()
        y[rows] = yi + np.where(up, step, -step)
    return y




def _fista(d: _Dual, y: np.ndarray, gamma: float, max_iter: int, tol: float, stats: dict) -> np.ndarray:
    """Minimise the γ-regularised dual g over 0 <= y <= hi from y; return the last iterate.

    Metric: step η·w_i on row i, w_i = 1/(number of tracks of row i with 0 < x_t < ub_t),
    refreshed at every restart, so that η ≈ γ/4 is safe locally (Gershgorin); η is found by
    backtracking. Stops when every row's projected gradient (a slack or violation, in
    units of K) is below tol, when its smallest value so far has not halved over _STALL
    iterations (kinks that this γ does not smooth, e.g. ties between tracks whose ub is
    large against K: the polish deals with them), or after max_iter iterations."""
    stats.setdefault("passes", 0)
    y = _jump(d, y, gamma, stats)
    g, grad, x, _ = d.at(y, gamma)
    stats["passes"] += 1

    def metric(x):
        return 1.0 / np.maximum(np.abs(d.row_sums(((x > 0) & (x < d.ub)).astype(np.float64))), 1.0)

    w = metric(x)
    eta = gamma
    y_prev = y.copy()
    t = 1.0
    best = best_then = np.inf
    for it in range(max_iter):
        # projected-gradient stationarity at y
        pg = np.where(y <= 0.0, np.minimum(grad, 0.0), np.where(y >= d.hi, np.maximum(grad, 0.0), grad))
        best = min(best, float(np.max(np.abs(pg))))
        if best <= tol:
            break
        if it % _STALL == 0:
            if it and best > 0.5 * best_then:
                break
            best_then = best
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        if beta > 0:
            z = y + beta * (y - y_prev)
            np.clip(z, 0.0, d.hi, out=z)
            gz, gradz, _, _ = d.at(z, gamma)
            stats["passes"] += 1
        else:
            z, gz, gradz = y, g, grad
        for _ in range(60):
            y_new = np.clip(z - eta * w * gradz, 0.0, d.hi)
            step = y_new - z
            g_new, grad_new, x_new, _ = d.at(y_new, gamma)
            stats["passes"] += 1
            if g_new <= gz + _dot(gradz, step) + _dot(step * step, 1.0 / w) / (2.0 * eta) + 1e-15 * abs(gz):
                break
            eta *= 0.5
        # gradient restart: momentum that points uphill is dropped
        if _dot(z - y_new, y_new - y) > 0:
            t = 1.0
            y_prev = y_new = _jump(d, y_new, gamma, stats)
            g_new, grad_new, x_new, _ = d.at(y_new, gamma)
            stats["passes"] += 1
            w = metric(x_new)          # the interior set has moved: refresh the metric
            y = y_new
        else:
            t = t_next
        y_prev, y = y, y_new
        g, grad, x = g_new, grad_new, x_new
        eta *= 1.25
    stats["iterations"] = stats.get("iterations", 0) + it + 1
    return y


def _keep_by_priority(amount: np.ndarray, order: np.ndarray, codes: np.ndarray,
                      limit: np.ndarray) -> np.ndarray:
    """amount cut so that each group's sum is at most limit[group], keeping the earliest
    tracks of `order` (tracks sorted by group, then by priority) whole: the cut falls on
    the last ones."""
    o = order[amount[order] > 0]
    if o.size == 0:
        return amount
    a, g = amount[o], codes[o]
    cum = np.cumsum(a)
    first = np.ones(o.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(o.size), 0))
    before = (cum - a)[start]                     # cumulative sum before the group's first track
    keep = np.clip(limit[g] - (cum - a - before), 0.0, a)
    out = amount.copy()
    out[o] = keep
    return out


def _repair(d: _Dual, x: np.ndarray, r: np.ndarray, p: float) -> np.ndarray:
    """Make x (in [0, ub]) exactly feasible for the caps, then add plays where they pay,
    in the order of the reduced costs r (which include the floors' prices).

    Over-cap groups (artist, licensor, then the capacity) lose their excess from their
    lowest-r tracks. Then campaigns below their floor are topped up on their best tracks
    with room (each unit is worth p + v_t > 0), and left-over room goes to tracks that the
    prices say should be given more (r_t > 0, v_t > 0); every addition is cut, best tracks
    first, to the room left in each campaign deficit, artist, licensor and the capacity."""
    A, L, C = d.A, d.L, d.C
    ja, jl, jc = d.ja, d.jl, d.jc
    j0 = np.zeros_like(ja)
    acap, lcap, K = np.full(A, d.b[1]), np.full(L, d.b[1 + A]), np.array([d.b[0]])
    floors = -d.b[1 + A + L:]
    best = np.argsort(-r, kind="stable")          # best first; then grouped, stably
    by = {name: best[np.argsort(codes[best], kind="stable")]
          for name, codes in (("a", ja), ("l", jl), ("c", jc))}
    by["0"] = best
    codes_of = {"a": ja, "l": jl, "c": jc, "0": j0}

    def room(x):
        return {"a": acap - np.bincount(ja, weights=x, minlength=A),
                "l": lcap - np.bincount(jl, weights=x, minlength=L),
                "0": K - x.sum()}

    x = np.minimum(np.maximum(x, 0.0), d.ub)
    # The plays that meet each floor (its best tracks, up to F_c) are cut last: a unit cut
    # there costs p, elsewhere v_t.
    meet = _keep_by_priority(x, by["c"], jc, floors)
    rest = x - meet
    for name, cap in (("a", acap), ("l", lcap), ("0", K)):
        codes = codes_of[name]
        k = cap.shape[0]
        meet = _keep_by_priority(meet, by[name], codes, cap)
        left = cap - np.bincount(codes, weights=meet, minlength=k)
        rest = _keep_by_priority(rest, by[name], codes, np.maximum(left, 0.0))
    x = meet + rest

    def add(x, want):
        rm = room(x)
        for name in ("a", "l", "0"):
            want = _keep_by_priority(want, by[name], codes_of[name], np.maximum(rm[name], 0.0))
        return np.minimum(x + want, d.ub)

    deficit = np.maximum(floors - np.bincount(jc, weights=x, minlength=C), 0.0)
    take = (deficit[jc] > 0) & (p + d.v > 0)
    if take.any():
        want = _keep_by_priority(np.where(take, d.ub - x, 0.0), by["c"], jc, deficit)
        x = add(x, want)
    want = np.where((r > 0) & (d.v > 0), d.ub - x, 0.0)
    if want.any():
        x = add(x, want)
    # rounding in the cumulative sums can leave a cap exceeded by ~1e-16: pull it back
    for codes, cap, k in ((ja, d.b[1], A), (jl, d.b[1 + A], L)):
        tot = np.bincount(codes, weights=x, minlength=k)
        f = np.where(tot > cap, cap / np.where(tot > 0, tot, 1.0), 1.0)
        x *= f[codes]
    total = x.sum()
    if total > K[0]:
        x *= K[0] / total
    return x


def _scaled_objective(d: _Dual, x: np.ndarray, p: float) -> float:
    C = d.C
    floors = -d.b[1 + d.A + d.L:]
    u = np.maximum(floors - np.bincount(d.jc, weights=x, minlength=C), 0.0)
    return float(_dot(d.v, x) - p * u.sum())


def _initial_prices(d: _Dual) -> np.ndarray:
    """A cold start for the prices: the capacity price of the greedy plan that fills K
    with the best tracks (ignoring every other row); all other prices 0."""
    y = np.zeros(d.R)
    pos = np.flatnonzero(d.v > 0)
    if pos.size:
        order = pos[np.argsort(-d.v[pos], kind="stable")]
        k = int(np.searchsorted(np.cumsum(d.ub[order]), d.b[0]))
        if k < order.size:
            y[0] = d.v[order[k]]
    return y


def _polish(problem: Problem, d: _Dual, y: np.ndarray, vs: float, delta: float, info: dict,
            max_rounds: int = 20) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact plan from approximate prices y: the LP restricted to the tracks whose reduced
    cost is within `delta` of 0 (the others fixed at 0 or ub), re-solved with the fixed tracks
    whose reduced cost at the new prices has the wrong sign freed, until none has.

    Returns (x over the eligible tracks, row prices) in solver units, or None if it did not
    settle in max_rounds (the caller then solves the whole LP)."""
    A, L, C = d.A, d.L, d.C
    ja, jl, jc = d.ja, d.jl, d.jc
    r = d.reduced(y)
    free = np.abs(r) <= delta
    up = (r > delta)
    eps = 1e-7                                   # reduced-cost tolerance (values scaled to max |v| = 1)
    for rnd in range(max_rounds):
        # Tracks fixed at ub must fit their caps; where they do not, free the group (or all
        # of them, for the capacity). Freeing only lowers the sums: once is enough.
        upx = np.where(up & ~free, d.ub, 0.0)
        over = np.zeros(len(d.ub), dtype=bool)
        for codes, cap, k in ((ja, d.b[1], A), (jl, d.b[1 + A], L)):
            over |= (cap - np.bincount(codes, weights=upx, minlength=k))[codes] < 0
        if d.b[0] - upx.sum() < 0:
            over[:] = True
        free |= over & up
        fixed_up = up & ~free
        upx = np.where(fixed_up, d.ub, 0.0)
        idx = np.flatnonzero(free)
        caps = d.b - d.row_sums(upx)            # right-hand sides left for the free tracks
        xs, price = _highs_lp(
            d.v[idx], d.ub[idx], ja[idx], jl[idx], jc[idx], A, L, C, max(caps[0], 0.0),
            np.maximum(caps[1:1 + A], 0.0), np.maximum(caps[1 + A:1 + A + L], 0.0),
            -caps[1 + A + L:], problem.penalty / vs,
            f"restricted to {idx.size} of {d.ub.size} eligible tracks")
        info["polish_rounds"] = rnd + 1
        info["polish_free"] = int(idx.size)
        r = d.reduced(price)
        wrong = ~free & ((fixed_up & (r < -eps)) | (~fixed_up & (r > eps)))
        if not wrong.any():
            x = upx
            x[idx] = xs
            return x, price
        free |= wrong
    return None


# Continuation schedule of the dual method: γ relative to 1/mean(ub) (solver units), and the
# projected-gradient tolerance (a row's slack or violation, in units of K) at which each stage
# stops. Measured (bench/allocation.py): a third stage at 1e-4 costs a few dozen passes and
# keeps the polishing LP at ~0.5% of the tracks; stopping at 1e-3 leaves it 10x larger, which
# costs more than the stage at 1M tracks per problem.
_GAMMAS = (1e-2, 1e-3, 1e-4)
_STAGE_TOL = (1e-2, 1e-3, 1e-4)
_STAGE_ITERS = 1000
_EXTRA_STAGES = 3        # unpolished: further stages (γ, tol / 10 each) while the gap is not certified
_SCREEN = 10.0           # polish frees the tracks with |r_t| <= _SCREEN·γ·mean(ub)
DUAL_GAP_TOL = 1e-3      # a certified relative gap below this may skip a large polish
_POLISH_MAX_FREE = 20_000


def solve_dual(problem: Problem, polish: bool | str = "auto", gap_tol: float = DUAL_GAP_TOL) -> Solution:
    """First-order dual method (see the comment above `_Dual`): dual ascent, repair, polish.

    polish=True: always polish, so the plan is LP-optimal (up to HiGHS's tolerance) and the
    prices are the LP's; polish=False: return the repaired plan of the dual ascent with the
    prices y, after up to _EXTRA_STAGES further stages while its certified gap is above
    gap_tol (so it is within gap_tol unless info["certified_gap"] says otherwise);
    polish="auto" (default): polish, unless the restricted LP would be large
    (> _POLISH_MAX_FREE tracks and > 5% of them) while the repaired plan's certified gap
    (D(y) − objective) / |objective| is already <= gap_tol.

    Solution.info: passes (evaluations of x(y)), iterations, certified_gap (of the repaired
    plan), polished, polish_free (tracks in the last restricted LP), polish_rounds."""
    active = np.flatnonzero(problem.upper > 0)
    if active.size == 0:
        return _trivial_solution(problem, "dual")
    qs, vs = _scales(problem)
    d = _dual_setup(problem, active, qs, vs)
    p = problem.penalty / vs
    info: dict = {"passes": 0, "iterations": 0}
    y = _initial_prices(d)
    mean_ub = float(d.ub.mean())

    def repaired(y, gamma):
        """(x(y) repaired, r(y), certified relative gap of the repaired plan)."""
        _, _, x, r = d.at(y, gamma)
        x = _repair(d, x, r, p)
        obj = _scaled_objective(d, x, p)
        return x, r, max(0.0, d.bound(y) - obj) / max(abs(obj), 1e-12)

    for rel, tol in zip(_GAMMAS, _STAGE_TOL):
        gamma = rel / mean_ub
        y = _fista(d, y, gamma, _STAGE_ITERS, tol, info)
    x, r, cert = repaired(y, gamma)
    if polish is False:
        # no LP to fall back on: continue the continuation until the gap is certified
        for k in range(1, _EXTRA_STAGES + 1):
            if cert <= gap_tol:
                break
            gamma = _GAMMAS[-1] * 0.1 ** k / mean_ub
            y = _fista(d, y, gamma, _STAGE_ITERS, _STAGE_TOL[-1] * 0.1 ** k, info)
            x, r, cert = repaired(y, gamma)
    info.update(certified_gap=cert, polished=False)
    delta = _SCREEN * gamma * mean_ub
    if polish == "auto":
        n_free = int(np.count_nonzero(np.abs(r) <= delta))
        polish = not (cert <= gap_tol and n_free > max(_POLISH_MAX_FREE, 0.05 * active.size))
    if polish:
        out = _polish(problem, d, y, vs, delta, info)
        if out is None:                          # did not settle: solve the whole LP
            sol = solve_exact(problem)
            sol.method = "dual"
            sol.info = {**info, "polished": "exact"}
            return sol
        x, y = out
        info["polished"] = True
    full = np.zeros(problem.n)
    full[active] = x * qs
    sol = _solution_from_prices(problem, full, y * vs, "dual")
    sol.info = info
    return sol


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
