"""Seeded random allocation problems for tests and benchmarks (never imported by
the pipeline): Zipf-sized artists, licensors and campaigns, drawn until every
constraint family binds when asked to."""
from __future__ import annotations

import numpy as np

from pipelines.allocation.exact import solve_exact
from pipelines.allocation.problem import Problem, binding_families


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
