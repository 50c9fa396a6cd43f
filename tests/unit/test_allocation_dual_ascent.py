"""The dual ascent of pipelines/allocation/dual.py on its own: `_jump` (exact line search
along the rows on which the regularised dual g is linear) and `_fista` (accelerated
projected gradient on g over the box 0 <= y <= hi), on hand-made `_Dual` instances whose
result is derived by hand in the comments, and against an independent minimiser of g
(scipy L-BFGS-B on a dense formulation written here).

Notation (the module's): rows [capacity | artists | licensors | campaigns], prices y,
reduced cost r_t = v_t - y_0 - y_a(t) - y_l(t) + z_c(t), x_t = clip(r_t/γ, 0, ub_t),
∇g = b - s∘Mx (campaign rows have s = -1 and b = -floor).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import minimize

from pipelines.allocation import dual
from pipelines.allocation.instances import random_problem
from pipelines.allocation.problem import scales

INF = np.inf


# ----------------------------------------------------------------------------- helpers

def hand(v, ub, ja, jl, jc, b, hi, A, L, C) -> dual._Dual:
    return dual._Dual(v=np.asarray(v, float), ub=np.asarray(ub, float),
                      ja=np.asarray(ja, np.intp), jl=np.asarray(jl, np.intp), jc=np.asarray(jc, np.intp),
                      b=np.asarray(b, float), hi=np.asarray(hi, float), A=A, L=L, C=C)


def spy_at(d: dual._Dual) -> list:
    """Record every evaluation of x(y) on this instance (calls through to the real d.at)."""
    log = []
    real = d.at

    def at(y, gamma):
        out = real(y, gamma)
        log.append(("at", np.array(y, copy=True), out))
        return out

    d.at = at
    return log


def from_problem(seed: int, shape, binding: bool = True, penalty_factor: float = 1.0) -> dual._Dual:
    p = random_problem(np.random.default_rng(seed), *shape, binding=binding)
    p = dataclasses.replace(p, penalty=p.penalty * penalty_factor)
    qs, vs = scales(p)
    return dual._dual_setup(p, np.flatnonzero(p.upper > 0), qs, vs)


def signed_matrix(d: dual._Dual) -> np.ndarray:
    """Dense s∘M, written independently of _Dual.row_sums / reduced: one row per constraint."""
    n = d.v.shape[0]
    S = np.zeros((d.R, n))
    S[0, :] = 1.0
    S[1 + d.ja, np.arange(n)] = 1.0
    S[1 + d.A + d.jl, np.arange(n)] = 1.0
    S[1 + d.A + d.L + d.jc, np.arange(n)] = -1.0
    return S


def g_ref(d: dual._Dual, S: np.ndarray, gamma: float, y: np.ndarray):
    """g(y) = Σ_t max_{0<=x<=ub} (r_t x - γ/2 x²) + bᵀy and its gradient b - S x(y), piecewise."""
    r = d.v - S.T @ y
    h = np.where(r <= 0, 0.0, np.where(r < gamma * d.ub, r * r / (2 * gamma), d.ub * r - gamma * d.ub ** 2 / 2))
    x = np.clip(r / gamma, 0.0, d.ub)
    return float(h.sum() + d.b @ y), d.b - S @ x, x


def projected_gradient(d: dual._Dual, y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return np.where(y <= 0, np.minimum(grad, 0.0), np.where(y >= d.hi, np.maximum(grad, 0.0), grad))


# ----------------------------------------------------------------------------- _jump

def test_jump_raises_an_overfull_capacity_price_to_the_first_kink():
    """Capacity row overfull with both tracks at ub (none interior): its price rises until
    the first track reaches r = γ·ub. Catches the capacity family being skipped or read at the
    wrong row offset, and a wrong count of evaluations in stats["passes"].

    γ = 1, ub = 1, v = (3, 5), y = 0: r = (3, 5) >= γ·ub, x = (1, 1), ∇g_0 = 0.5 - 2 < 0.
    Raising y_0 lowers both r; the first kink is r_0 = γ·ub = 1 at y_0 = 3 - 1 = 2.
    Artist/licensor rows are slack at price 0 (∇g > 0, cannot go lower); the campaign row
    (floor 0) has ∇g = Σx > 0 at price 0: nothing else moves."""
    d = hand(v=[3, 5], ub=[1, 1], ja=[0, 1], jl=[0, 0], jc=[0, 0],
             b=[0.5, 10, 10, 10, 0.0], hi=[INF, INF, INF, INF, 2.0], A=2, L=1, C=1)
    log = spy_at(d)
    stats = {"passes": 0}
    y = dual._jump(d, np.zeros(5), 1.0, stats)
    np.testing.assert_array_equal(y, [2.0, 0, 0, 0, 0])
    assert d.reduced(y)[0] == 1.0                       # track 0 sits on its kink r = γ·ub
    assert stats["passes"] == len(log) == 4             # one evaluation per (non-empty) family


def test_jump_leaves_a_row_whose_gradient_is_zero():
    """A row with no interior track but gradient exactly 0 is already optimal along its line:
    it must not move (neither up nor down). Catches `<= 0` / `>= 0` in the up/down tests.

    γ = 0.1, ub = 1, v = 2, y_0 = 0.5: r = 1.5 >= γ·ub so x = 1 = b_0, ∇g_0 = 0 exactly;
    other rows are slack at price 0 (∇g > 0)."""
    d = hand(v=[2.0], ub=[1.0], ja=[0], jl=[0], jc=[0],
             b=[1.0, 10, 10, 0.0], hi=[INF, INF, INF, 2.0], A=1, L=1, C=1)
    y0 = np.array([0.5, 0.0, 0.0, 0.0])
    y = dual._jump(d, y0, 0.1, {"passes": 0})
    np.testing.assert_array_equal(y, y0)


def test_jump_lowers_a_slack_artist_price_to_the_first_kink():
    """Artist row under its cap with both tracks at 0 and price 5: the price falls until the
    first track reaches r = 0 from below.

    γ = 1, v = (2, 3), y_a = 5: r = (-3, -2), x = 0, ∇g_a = 1 - 0 > 0, so y_a falls by
    min(3, 2) = 2 to 3 (track 1 at r = 0). Capacity and licensor rows are slack at 0; the
    campaign row (floor 0, Σx = 0) has ∇g = 0 and stays."""
    d = hand(v=[2, 3], ub=[1, 1], ja=[0, 0], jl=[0, 0], jc=[0, 0],
             b=[10, 1, 10, 0.0], hi=[INF, INF, INF, 2.0], A=1, L=1, C=1)
    y = dual._jump(d, np.array([0.0, 5.0, 0.0, 0.0]), 1.0, {"passes": 0})
    np.testing.assert_array_equal(y, [0.0, 3.0, 0.0, 0.0])
    assert d.reduced(y)[1] == 0.0


def test_jump_raises_unmet_floor_prices_to_a_kink_or_to_p():
    """Campaign rows (sign -1: raising z_c raises r_t). Campaign 0 cannot meet its floor 5
    (both tracks already at ub = 1): no kink lies ahead, so its price goes all the way to
    p = 2. Campaign 1 (floor 1, tracks at 0 with r = -1, -3) rises by 1 until its first
    track reaches r = 0. Every other row is slack at price 0."""
    d = hand(v=[3, 3, -1, -3], ub=[1, 1, 1, 1], ja=[0, 1, 2, 3], jl=[0, 0, 0, 0], jc=[0, 0, 1, 1],
             b=[10, 10, 10, 10, 10, 10, -5.0, -1.0], hi=[INF] * 6 + [2.0, 2.0], A=4, L=1, C=2)
    log = spy_at(d)
    stats = {"passes": 3}
    y = dual._jump(d, np.zeros(8), 1.0, stats)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 0, 0, 2.0, 1.0])
    assert stats["passes"] == 3 + len(log)


def test_jump_without_tracks_moves_every_row_to_its_bound():
    """With no tracks g is linear in every price (slope b_i): the capacity price (b_0 = 1 > 0)
    falls to 0, the floor price (b = -2 < 0) rises to p = 3. The artist and licensor
    families are empty here (A = L = 0) and must be skipped without skipping the campaigns
    after them; only non-empty families cost an evaluation."""
    d = hand(v=[], ub=[], ja=[], jl=[], jc=[], b=[1.0, -2.0], hi=[INF, 3.0], A=0, L=0, C=1)
    log = spy_at(d)
    stats = {"passes": 0}
    y = dual._jump(d, np.array([0.5, 0.0]), 1.0, stats)
    np.testing.assert_array_equal(y, [0.0, 3.0])
    assert stats["passes"] == len(log) == 2


# ----------------------------------------------------------------------------- _fista

def one_track_instance():
    """γ = 1, ub = 4, y = (3, 0, 0, 0): track 0 (v = 4) has r = 1, x = 1 (interior); track 1
    (v = 2.5) has r = -0.5, x = 0. ∇g_0 = 2 - 1 = 1 at y_0 = 3 > 0 (projected gradient 1);
    the artist/licensor rows (b = 10) and the campaign row (floor 0) have ∇g > 0 at price 0,
    projected gradient 0. Every row holds the interior track 0, so _jump moves nothing."""
    d = hand(v=[4.0, 2.5], ub=[4, 4], ja=[0, 0], jl=[0, 0], jc=[0, 0],
             b=[2.0, 10, 10, 0.0], hi=[INF, INF, INF, 1.0], A=1, L=1, C=1)
    return d, np.array([3.0, 0.0, 0.0, 0.0])


def test_fista_stops_at_once_when_the_projected_gradient_is_at_tol():
    """Stopping rule `max |projected gradient| <= tol`, at equality: the start (projected
    gradient exactly 1, see one_track_instance) is returned as is after one iteration.
    stats starts empty: passes = the evaluations made, iterations = 1."""
    d, y0 = one_track_instance()
    log = spy_at(d)
    stats = {}
    y = dual._fista(d, y0, 1.0, 50, 1.0, stats)
    np.testing.assert_array_equal(y, y0)
    assert stats == {"passes": len(log), "iterations": 1}


def test_fista_adds_to_the_counters_in_stats():
    """stats accumulates over calls (solve_dual passes one dict to every stage): passes grows
    by the evaluations made, iterations by this call's iterations (1 here, as above)."""
    d, y0 = one_track_instance()
    log = spy_at(d)
    stats = {"passes": 7, "iterations": 5}
    dual._fista(d, y0, 1.0, 50, 1.0, stats)
    assert stats == {"passes": 7 + len(log), "iterations": 6}


def test_fista_backtracks_to_sufficient_decrease():
    """One iteration from one_track_instance (no momentum yet): the step η·w·∇g with η = γ = 1
    and w_0 = 1/(1 interior track) would take y_0 to 2, where track 1 enters (r = 0.5):
    g(2) = [2·2 - 2] + [0.5·0.5 - 0.125] + 2·2 = 6.125 > model g(3) - 1 + 1/2 = 6.5 - 0.5 = 6.0,
    rejected; η = 1/2 gives y_0 = 2.5 (r = 1.5, 0): g = 1.125 + 5 = 6.125 <= 6.5 - 0.5 + 0.25,
    accepted."""
    d, y0 = one_track_instance()
    log = spy_at(d)
    stats = {}
    y = dual._fista(d, y0, 1.0, 1, 0.0, stats)
    np.testing.assert_array_equal(y, [2.5, 0.0, 0.0, 0.0])
    assert stats == {"passes": len(log), "iterations": 1}


def test_fista_backtracking_gives_up_after_60_halvings_and_takes_the_last_trial():
    """The backtracking's cap (docstring): η is halved at most 60 times in an iteration
    (2^-60 ≈ 1e-18: below that a step is rounding noise), then the last trial point is taken.
    Reached here by an evaluation that adds 1 to g at every call (calls through to the real
    d.at), as rounding noise larger than the step's decrease would: every trial fails the
    sufficient-decrease test. One iteration from one_track_instance (∇g_0 = 1, w_0 = 1, no
    momentum): the trials are y_0 = 3 - 2^-k, k = 0..59, and y_0 = 3 - 2^-59 = 3 in floating
    point is returned. Catches a cap of 59 or 61 trials, and an endless loop."""
    d, y0 = one_track_instance()
    real = d.at
    trials = []

    def noisy_at(y, gamma):
        g, grad, x, r = real(y, gamma)
        trials.append(float(y[0]))
        return g + len(trials), grad, x, r

    d.at = noisy_at
    stats = {}
    y = dual._fista(d, y0, 1.0, 1, 0.0, stats)
    # before the loop: _jump evaluates once per non-empty family (4), then g at the start (1)
    loop = trials[5:]
    assert loop == [3.0 - 2.0 ** -k for k in range(60)]
    np.testing.assert_array_equal(y, y0)
    assert stats == {"passes": len(trials), "iterations": 1}


def test_fista_exact_halving_is_not_a_stall(monkeypatch):
    """Stall rule: stop when the best projected gradient has NOT halved over _STALL
    iterations. With _STALL = 1: at iteration 0 it is 1, after the step above (y_0 = 2.5,
    Σx = 1.5) it is 2 - 1.5 = 0.5, exactly half: that is halving, so the run goes on to
    max_iter = 3 (whatever happens at iteration 2, it ends there)."""
    monkeypatch.setattr(dual, "_STALL", 1)
    d, y0 = one_track_instance()
    stats = {}
    dual._fista(d, y0, 1.0, 3, 0.0, stats)
    assert stats["iterations"] == 3


def test_fista_first_step_uses_the_interior_count_metric():
    """The metric is w_i = 1/(number of interior tracks of row i) and the first iteration
    (no momentum) tries η = γ. Capacity row with 6 interior tracks, γ = 1, ub = 4, y_0 = 1:
    v = (3, 1.0625 ×5) → r = (2, 1/16 ×5), Σx = 2.3125, b_0 = 1.3125, ∇g_0 = -1. The step is
    y_0 += γ·(1/6)·1. It is accepted: along it the curvature of g is (interior tracks)/γ <= 6,
    which is exactly the model's 1/(η·w_0), so g stays below the model. Result y_0 = 7/6
    (the 5 small tracks have left the interior; the other rows stay at 0)."""
    d = hand(v=[3.0] + [1.0625] * 5, ub=[4] * 6, ja=[0] * 6, jl=[0] * 6, jc=[0] * 6,
             b=[1.3125, 10, 10, 0.0], hi=[INF, INF, INF, 1.0], A=1, L=1, C=1)
    y = dual._fista(d, np.array([1.0, 0, 0, 0]), 1.0, 1, 1e-12, {})
    np.testing.assert_allclose(y, [7 / 6, 0, 0, 0], rtol=1e-15, atol=0)


def test_fista_reaches_the_minimiser_of_the_regularised_dual():
    """Oracle: scipy L-BFGS-B on g (written independently, g_ref) over the same box. The
    regularised primal is strictly concave, so x(y*) is unique even where y* is not:
    compare g and x, and check _fista's own stopping rule (projected gradient <= tol)."""
    rng = np.random.default_rng(7)
    n, A, L, C = 9, 2, 2, 2
    d = hand(v=rng.uniform(-0.5, 1.0, n), ub=rng.uniform(0.2, 1.0, n), ja=rng.integers(0, A, n),
             jl=rng.integers(0, L, n), jc=rng.integers(0, C, n),
             b=[1.5, 0.9, 0.8, 1.0, 1.2, -0.6, -1.5], hi=[INF] * 5 + [0.8, 0.8], A=A, L=L, C=C)
    gamma, tol = 0.3, 1e-7
    S = signed_matrix(d)
    stats = {}
    y = dual._fista(d, np.zeros(d.R), gamma, 5000, tol, stats)
    assert np.all(y >= 0) and np.all(y <= d.hi)
    g, grad, x = g_ref(d, S, gamma, y)
    assert np.max(np.abs(projected_gradient(d, y, grad))) <= tol
    ref = minimize(lambda z: g_ref(d, S, gamma, z)[:2], np.zeros(d.R), jac=True, method="L-BFGS-B",
                   bounds=[(0, None if h == INF else h) for h in d.hi],
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
    g_star, _, x_star = g_ref(d, S, gamma, ref.x)
    assert g <= g_star + 1e-9
    np.testing.assert_allclose(x, x_star, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fista_stall_rule_fires_only_every__STALL_iterations(monkeypatch, seed):
    """With tol < 0 the tolerance rule cannot fire, so a run ends by the stall rule, which is
    checked at iterations 0, _STALL, 2·_STALL, ... (it stops at a check, having done
    k·_STALL + 1 iterations), or at max_iter = 200 (not of that form, so the endings differ)."""
    monkeypatch.setattr(dual, "_STALL", 5)
    d = from_problem(seed, (30, 3, 3, 3), binding=False, penalty_factor=0.05)
    log = spy_at(d)
    stats = {}
    dual._fista(d, dual._initial_prices(d), 0.1 / d.ub.mean(), 200, -1.0, stats)
    assert (stats["iterations"] - 1) % 5 == 0 or stats["iterations"] == 200
    assert stats["passes"] == len(log)


def box_instance():
    # small penalty p: the floor prices run into their bound hi = p during the ascent
    return from_problem(1, (30, 3, 3, 3), binding=False, penalty_factor=0.01)


def test_fista_evaluates_only_prices_inside_the_box():
    """g is +inf outside the box (a floor price above p makes the shortfall u_c unbounded), so
    every point where x(y) is evaluated, the extrapolated ones included, lies in 0 <= y <= hi."""
    d = box_instance()
    log = spy_at(d)
    stats = {}
    y = dual._fista(d, dual._initial_prices(d), 0.1 / d.ub.mean(), 300, 1e-6, stats)
    assert np.all(y >= 0) and np.all(y <= d.hi)
    for _, at_y, _ in log:
        assert np.all(at_y >= 0) and np.all(at_y <= d.hi)
    assert stats["passes"] == len(log)


def test_fista_restart_drops_the_momentum(monkeypatch):
    """After the start and after every gradient restart (each begins with a _jump) the
    momentum is zero: the iteration that follows tries a plain projected gradient step from
    the (re-evaluated) jumped point y, i.e. its next evaluation is at clip(y - η·w·∇g(y))
    for some η > 0, with w_i = 1/max(1, interior tracks of row i) taken at y — not at an
    extrapolated point (which would be y itself). Every evaluation is counted in passes."""
    d = box_instance()
    log = spy_at(d)
    real_jump = dual._jump

    def jump(dd, y, gamma, stats):
        log.append(("jump", None, None))
        out = real_jump(dd, y, gamma, stats)
        log.append(("jumped", out.copy(), None))
        return out

    monkeypatch.setattr(dual, "_jump", jump)
    stats = {}
    dual._fista(d, dual._initial_prices(d), 0.1 / d.ub.mean(), 300, 1e-6, stats)
    assert stats["passes"] == sum(kind == "at" for kind, _, _ in log)
    checked = 0
    for i, (kind, yj, _) in enumerate(log):
        if kind != "jumped":
            continue
        assert log[i + 1][0] == "at"
        np.testing.assert_array_equal(log[i + 1][1], yj)     # x(y) re-evaluated at the jumped point
        if i + 2 >= len(log):
            continue                                         # the run ended right there
        kind2, y_next, _ = log[i + 2]
        assert kind2 == "at"
        _, grad, x, _ = log[i + 1][2]
        inner = ((x > 0) & (x < d.ub)).astype(float)
        count = np.concatenate([[inner.sum()], np.bincount(d.ja, inner, d.A),
                                np.bincount(d.jl, inner, d.L), np.bincount(d.jc, inner, d.C)])
        wg = grad / np.maximum(count, 1.0)
        free = (wg != 0) & (y_next > 0) & (y_next < d.hi)
        assert free.any()
        eta = (yj - y_next)[free] / wg[free]
        assert np.all(eta > 0)
        np.testing.assert_allclose(y_next, np.clip(yj - eta.mean() * wg, 0.0, d.hi), rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked >= 2          # the start and at least one restart were checked


def test_fista_does_not_restart_where_the_momentum_is_neutral():
    """The restart drops momentum that points uphill (strictly): a step that goes nowhere
    (inner product exactly 0) is no reason to restart, which costs a _jump and an
    evaluation. Catches `>= 0` in the restart test; the counts are derived by hand.

    γ = 1, one track v = 4, ub = 1; capacity b_0 = 3.75 (slack at y_0 = 0, whose optimum is
    there), the other rows slack at price 0. Start y_0 = 3.5: r = 0.5, x = 0.5 (interior, so
    the start's _jump moves nothing: 4 families, 4 evaluations, then 1 more).
    Iteration 0 (no momentum): ∇g_0 = 3.75 - 0.5 = 3.25, η = γ, w_0 = 1: y_0 = 0.25, accepted
    (g = 4.1875 <= the model's 7.96875): 1 evaluation.
    Iteration 1: β = (t - 1)/t' ≈ 0.28 extrapolates past 0, clipped: z = 0 (1 evaluation),
    where every gradient is > 0, so the step from z stays at 0 (1 evaluation): z - y_new = 0,
    the inner product is 0, no restart.
    Iteration 2: y = 0 is stationary (projected gradient 0 <= tol = 0): stop.
    In all 8 evaluations, 3 iterations."""
    d = hand(v=[4.0], ub=[1.0], ja=[0], jl=[0], jc=[0], b=[3.75, 10, 10, 0.0], hi=[INF, INF, INF, 1.0],
             A=1, L=1, C=1)
    log = spy_at(d)
    stats = {}
    y = dual._fista(d, np.array([3.5, 0.0, 0.0, 0.0]), 1.0, 50, 0.0, stats)
    np.testing.assert_array_equal(y, np.zeros(4))
    assert stats == {"passes": 8, "iterations": 3} and len(log) == 8
