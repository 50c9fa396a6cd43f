"""The polish of the dual method (`dual._polish`) and the control flow of `solve_dual`
(extra stages, when the polish is skipped, its diagnostics), on hand instances whose
screening, restricted LP and prices can be derived by hand.

_polish is called on `_dual_setup(problem, all tracks, qs=1, vs=1)`, so solver units are
the problem's units and the row layout is [capacity | artists | licensors | campaigns].
"""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.allocation import dual
from pipelines.allocation.dual import solve_dual
from pipelines.allocation.exact import solve_exact
from pipelines.allocation.instances import random_problem
from pipelines.allocation.problem import AllocationError, check_feasible, objective, scales
from tests.unit.test_allocation import assert_certificate, make
from tests.unit.test_allocation_dual_repair import setup

EPS = 1e-7                  # _polish's reduced-cost tolerance (documented in its body)


def polish(p, y, delta, max_rounds=20):
    d = setup(p)
    info: dict = {}
    out = dual._polish(p, d, np.asarray(y, float), 1.0, delta, info, max_rounds)
    return d, out, info


def d_rows(p):
    return 1 + p.n_artists + p.n_licensors + p.n_campaigns


def prices(d, **rows):
    """Row prices with the named entries set: y0, a<i>, l<i>, c<i>."""
    y = np.zeros(d.R)
    for key, val in rows.items():
        kind, i = key[0], int(key[1:] or 0)
        y[{"y": 0, "a": 1 + i, "l": 1 + d.A + i, "c": 1 + d.A + d.L + i}[kind]] = val
    return y


# ----------------------------------------------------------------------------- _polish: screening

def test_fixed_up_tracks_overflowing_an_artist_cap_are_freed():
    # One artist (A = 1) and one licensor (L = 1), artist cap 1.5 < licensor cap 3, K = 10.
    # At y = 0, delta = 0.6: r = v = (1, 0.9, 0.5): t2 free, t0 and t1 fixed at ub = 1; they
    # put 2 > 1.5 on the artist (but 2 <= 3 on the licensor, 2 <= 10 on the capacity), so the
    # artist's tracks are all freed: one restricted LP over the 3 tracks, which is the whole LP:
    # x = (1, 0.5, 0) with the artist price 0.9 (t1 is marginal). No fixed track is left, so it
    # settles in one round. Catches an overflow test that is skipped (upx empty), compares with
    # another row's cap (b[2] is the licensor's here), or lets the licensor test overwrite it.
    p = make([1.0, 0.9, 0.5], [1.0, 1.0, 1.0], artist=np.zeros(3, int), licensor=np.zeros(3, int),
             capacity=10.0, artist_cap=1.5, licensor_cap=3.0)
    d, out, info = polish(p, np.zeros(4), 0.6)
    assert out is not None
    x, y = out
    np.testing.assert_allclose(x, [1.0, 0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(y, [0.0, 0.9, 0.0, 0.0], atol=1e-9)
    assert info == {"polish_rounds": 1, "polish_free": 3}


def test_fixed_up_tracks_overflowing_the_capacity_free_every_fixed_track():
    # K = 1.5 (also each artist's and licensor's cap; one track each). At y = 0, delta = 0.6,
    # t0 (v 1) and t1 (v 0.9) are fixed at ub = 1: 2 > K, so all are freed and the single
    # restricted LP is the whole LP: x = (1, 0.5, 0), capacity price 0.9.
    p = make([1.0, 0.9, 0.5], [1.0, 1.0, 1.0], capacity=1.5)
    d, out, info = polish(p, np.zeros(d_rows(p)), 0.6)
    x, y = out
    np.testing.assert_allclose(x, [1.0, 0.5, 0.0], atol=1e-9)
    assert y[0] == pytest.approx(0.9, abs=1e-9) and np.all(y[1:] <= 1e-9)
    assert info == {"polish_rounds": 1, "polish_free": 3}
    assert float(d.v @ x) == pytest.approx(solve_exact(p).objective, rel=1e-9)


def test_fixed_up_tracks_exactly_filling_their_caps_stay_fixed():
    # t0, t1 (ub 0.5 each) share the artist (cap 1), the licensor (cap 2) and fill K = 1
    # exactly; at y = 0, delta = 0.1 both are fixed at ub and none is free. Fitting exactly is
    # fitting: nothing is freed (a `<= 0` overflow test, or the licensor compared with the
    # campaign row b[1 + A + 1] = -F, would free both), the restricted LP is empty, its prices
    # are 0 and r = v > 0 agrees with ub: done in one round with the plan (0.5, 0.5).
    p = make([1.0, 0.9], [0.5, 0.5], artist=np.zeros(2, int), licensor=np.zeros(2, int),
             capacity=1.0, artist_cap=1.0, licensor_cap=2.0)
    d, out, info = polish(p, np.zeros(4), 0.1)
    np.testing.assert_array_equal(out[0], [0.5, 0.5])
    assert info == {"polish_rounds": 1, "polish_free": 0}


def test_a_track_with_reduced_cost_equal_to_delta_is_free():
    # |r_t| <= delta frees t. K = 1.5, y = 0, delta = 0.5: r = (1, 0.5): t1 sits on the
    # boundary and is free, t0 fixed at ub = 1; the LP over t1 gets the 0.5 left, capacity
    # price 0.5, and t0 (r = 0.5 > 0) is right: one round, one free track. Were t1 fixed at 0
    # (strict screen), its r = 0.5 at the empty LP's prices would free it in a second round.
    p = make([1.0, 0.5], [1.0, 1.0], capacity=1.5)
    d, out, info = polish(p, np.zeros(d_rows(p)), 0.5)
    np.testing.assert_allclose(out[0], [1.0, 0.5], atol=1e-12)
    assert out[1][0] == pytest.approx(0.5, abs=1e-12)
    assert info == {"polish_rounds": 1, "polish_free": 1}


def test_reduced_costs_within_the_tolerance_do_not_free_a_track():
    # Fixed tracks are freed only when their reduced cost at the LP's prices has the wrong
    # sign by more than EPS. Hand instance, K = 1.5, every other cap slack:
    #   t_u: v 0,     campaign 1 (floor 0) priced 1 in y  -> r = 1 > delta: fixed at ub = 1
    #   t_m: v EPS                                         -> r = EPS <= delta: free
    #   t_z: v 2·EPS, artist priced 1 in y                 -> r < -delta: fixed at 0
    # The LP over t_m (ub 1) gets K - 1 = 0.5 of capacity: t_m is strictly between its bounds,
    # so the capacity price is v_m = EPS, and every other row is slack (price 0). Then
    # r_u = 0 - EPS = -EPS and r_z = 2·EPS - EPS = +EPS (both exact in floating point): on the
    # tolerance, not beyond it, so neither is freed and the polish ends after one round.
    assert 0.0 - EPS == -EPS and 2 * EPS - EPS == EPS
    p = make([0.0, EPS, 2 * EPS], [1.0, 1.0, 1.0], campaign=np.array([1, 0, 0]), floors=(0.0, 0.0),
             capacity=1.5)
    d = setup(p)
    y = prices(d, c1=1.0, a2=1.0)
    r = d.reduced(y)
    assert r[0] > 0.1 and abs(r[1]) <= 0.1 and r[2] < -0.1                # the screening above
    info: dict = {}
    x, price = dual._polish(p, d, y, 1.0, 0.1, info)
    assert price[0] == EPS and np.all(price[1:] == 0)          # the derivation's premise
    np.testing.assert_array_equal(d.reduced(price), [-EPS, 0.0, EPS])
    np.testing.assert_allclose(x, [1.0, 0.5, 0.0], atol=1e-12)
    assert info == {"polish_rounds": 1, "polish_free": 1}


# ----------------------------------------------------------------------------- _polish: rounds

def test_wrongly_fixed_track_is_freed_in_a_second_round_and_max_rounds_bounds_it():
    # K = 1.5, y0 = 0.8, delta = 0.1: r = (0.2, -0.3): t0 fixed at ub = 1, t1 at 0, none free.
    # Round 1: the empty LP prices every row at 0, so t1's reduced cost is 0.5 > EPS: wrong.
    # Round 2: the LP over t1 gets 0.5, capacity price 0.5, and t0's r = 0.5 agrees with ub:
    # plan (1, 0.5), the optimum. With max_rounds = 1 the polish has not settled: None.
    p = make([1.0, 0.5], [1.0, 1.0], capacity=1.5)
    d, out, info = polish(p, prices(setup(p), y=0.8), 0.1)
    np.testing.assert_allclose(out[0], [1.0, 0.5], atol=1e-12)
    assert info == {"polish_rounds": 2, "polish_free": 1}
    d, out, info = polish(p, prices(setup(p), y=0.8), 0.1, max_rounds=1)
    assert out is None and info == {"polish_rounds": 1, "polish_free": 0}


def chain_instance():
    """A path t_0 .. t_21 alternating licensor rows L_j = {t_2j, t_2j+1} (cap 1.04) and
    campaign rows C_j = {t_2j-1, t_2j} (floor 1, penalty 1); own artist each, K = 100 slack.
    Even tracks: v = -a = -0.02, ub 2; odd tracks: v = b = 0.075, ub 1.02."""
    a, b = 0.02, 0.075
    k = np.arange(22)
    p = make(np.where(k % 2, b, -a), np.where(k % 2, 1.02, 2.0), licensor=k // 2, campaign=(k + 1) // 2,
             floors=[1.0] * 12, capacity=100.0, licensor_cap=1.04, penalty=1.0)
    return p, a, b


def test_a_chain_of_wrongly_fixed_tracks_needs_one_round_each():
    # Screen at y = (price a on C_0), delta = 0.01: r_0 = 0 (t_0 free), odd r = b (fixed at ub,
    # 1.02 <= 1.04 on each licensor: no overflow), even r = -a (fixed at 0).
    # Round k+1 (free t_0..t_k): every row up to the frontier binds (C_0 unmet: z_0 = p = 1;
    # each t_i strictly inside its bounds, so its reduced cost is 0), hence prices
    #   y_Lj = 1 - (j+1)a - j·b,  z_Cj = 1 - j(a+b);   the rows past the frontier are slack (0).
    # The next track is then the only wrong one: t_2j+1 (fixed at ub): r = (j+1)(a+b) - 1 < 0
    # for j <= 9; t_2j+2 (fixed at 0): r = 1 - (j+1)(a+b) - a > 0 for j <= 9. So rounds 1..20
    # free t_1..t_20 one by one and round 21 settles (t_21: r = 11(a+b) - 1 = 0.045 > 0), with
    # 21 free tracks. Primal (back from the frontier x_20 = 1.04 - 1.02): x_{20-2m} = 0.02 +
    # 0.04m, x_{19-2m} = 0.98 - 0.04m, t_21 at ub. The default max_rounds (20) is one short.
    p, a, b = chain_instance()
    d = setup(p)
    y = prices(d, c0=a)
    info: dict = {}
    assert dual._polish(p, d, y, 1.0, 0.01, info) is None
    assert info == {"polish_rounds": 20, "polish_free": 20}
    x, price = dual._polish(p, d, y, 1.0, 0.01, info, max_rounds=21)
    assert info == {"polish_rounds": 21, "polish_free": 21}
    m = np.arange(11)
    np.testing.assert_allclose(x[20 - 2 * m], 0.02 + 0.04 * m, atol=1e-9)
    np.testing.assert_allclose(x[19 - 2 * m[:10]], 0.98 - 0.04 * m[:10], atol=1e-9)
    assert x[21] == 1.02
    A, L = d.A, d.L
    np.testing.assert_allclose(price[1 + A:1 + A + L], 1 - (m + 1) * a - m * b, atol=1e-9)
    np.testing.assert_allclose(price[1 + A + L:], np.append(1 - m * (a + b), 0.0), atol=1e-9)
    u = np.maximum(p.floors - np.bincount(p.campaign, weights=x, minlength=p.n_campaigns), 0.0)
    assert objective(p, x, u) == pytest.approx(solve_exact(p).objective, rel=1e-9)


def test_a_failing_restricted_lp_is_reported_as_such():
    # A free track with an infinite bound and caps HiGHS reads as infinite (>= 1e20): the
    # restricted LP is unbounded, and the error names it (restricted, 1 of 2 tracks free).
    p = make([1.0, 0.5], [1.0, 1.0], capacity=1.0)
    d = setup(p)
    d.ub = np.array([1.0, np.inf])
    d.b = np.array([1e30] * (1 + d.A + d.L) + [0.0])
    with pytest.raises(AllocationError, match=r"restricted to 1 of 2 eligible tracks"):
        dual._polish(p, d, np.zeros(d.R), 1.0, 0.6, {})


# ----------------------------------------------------------------------------- solve_dual: polish="auto"

def screen_instance(n: int, n_free: int):
    """n tracks of ub 1, all fitting in K = 1024 (every row slack); n - n_free of value 1 and
    n_free of value delta, the screen width _SCREEN·γ·mean(ub) of the last stage in solver
    units (qs = K, vs = 1).

    With every row slack, y = 0 is already stationary: the cold start is 0 (the greedy plan
    fits K), and at y = 0 every gradient is a positive slack, so each stage stops at once
    and y stays exactly 0. Then r = v exactly: the n_free tracks sit on the screen's
    boundary (free), the others outside it; x(y) = ub (r/γ >> ub) is feasible and optimal,
    D(0) = Σ ub·v equals its objective, so the certified gap is exactly 0."""
    K = 1024.0
    ub_s = 1.0 / K                                             # ub in solver units
    mean_ub = float(np.full(n, ub_s).mean())
    delta = dual._SCREEN * (dual._GAMMAS[-1] / mean_ub) * mean_ub
    p = make([1.0] * (n - n_free) + [delta] * n_free, [1.0] * n, capacity=K)
    assert scales(p) == (K, 1.0)
    return p


@pytest.mark.parametrize("n, n_free, max_free, gap_tol, polished", [
    (10, 9, 0, 0.0, False),    # 9 free > max(0, 5% of 10) and gap 0 <= 0: skipped
    (10, 9, 0, dual.DUAL_GAP_TOL, False),
    (10, 9, 8, 0.0, False),
    (10, 9, 9, 0.0, True),     # 9 free is not above 9
    (10, 9, 0, -1.0, True),    # gap 0 above gap_tol: polished
    (40, 1, 0, 0.0, True),     # 1 free is not above 5% of 40 = 2
    (40, 2, 0, 0.0, True),
    (40, 3, 0, 0.0, False),
])
def test_auto_skips_the_polish_only_when_certified_and_large(monkeypatch, n, n_free, max_free, gap_tol,
                                                              polished):
    # docstring: skipped iff the restricted LP would have > max(_POLISH_MAX_FREE, 5% of the
    # eligible) tracks and the certified gap is <= gap_tol. Default polish is "auto".
    monkeypatch.setattr(dual, "_POLISH_MAX_FREE", max_free)
    p = screen_instance(n, n_free)
    s = solve_dual(p, gap_tol=gap_tol)
    assert s.info["polished"] is polished
    assert s.info["certified_gap"] == 0.0
    np.testing.assert_array_equal(s.x, p.upper)                 # every track at ub is optimal
    if polished:
        # the restricted LP is the n_free boundary tracks (the others fit at ub); y = 0 and the
        # LP's prices (all rows slack: 0) agree on every sign: one round
        assert s.info["polish_free"] == n_free and s.info["polish_rounds"] == 1
    else:
        assert "polish_free" not in s.info


def test_explicit_polish_flags_override_auto(monkeypatch):
    # polish=True polishes and polish=False never does, whatever the size rule says
    monkeypatch.setattr(dual, "_POLISH_MAX_FREE", 0)
    p = screen_instance(10, 9)
    assert solve_dual(p, polish=True).info["polished"] is True
    assert solve_dual(p, polish=False).info["polished"] is False
    monkeypatch.setattr(dual, "_POLISH_MAX_FREE", 100)
    assert solve_dual(p, polish=False).info["polished"] is False


# ----------------------------------------------------------------------------- solve_dual: stages

def spy_fista(monkeypatch):
    """Record (γ, tol, info counters at entry) of every stage; call the real _fista."""
    calls = []
    real = dual._fista

    def spy(d, y, gamma, max_iter, tol, stats):
        calls.append((gamma, tol, dict(stats)))
        return real(d, y, gamma, max_iter, tol, stats)

    monkeypatch.setattr(dual, "_fista", spy)
    return calls


@pytest.mark.parametrize("gap_tol, stages", [(0.0, 3), (-1.0, 6)])
def test_unpolished_stages_and_work_counters(monkeypatch, gap_tol, stages):
    # Unpolished, the continuation goes on for up to _EXTRA_STAGES = 3 stages (γ and tol / 10
    # each) while the certified gap is above gap_tol. On screen_instance the gap is exactly 0:
    # gap_tol 0 is met after the 3 regular stages, gap_tol -1 never (all 3 extra ones run).
    # Work: each stage is one _jump (one x(y) per row family: capacity, artists, licensors,
    # campaigns) plus one x(y), then stops at its first check (y = 0 is stationary): 5 passes
    # and 1 iteration per stage, counted from 0.
    calls = spy_fista(monkeypatch)
    p = screen_instance(10, 9)
    s = solve_dual(p, polish=False, gap_tol=gap_tol)
    mean_ub = 1.0 / 1024.0
    rel = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7][:stages]
    assert [c[0] for c in calls] == pytest.approx([g / mean_ub for g in rel], rel=1e-12)
    assert [c[1] for c in calls] == pytest.approx(rel, rel=1e-12)
    assert calls[0][2] == {"passes": 0, "iterations": 0}
    assert s.info["passes"] == 5 * stages and s.info["iterations"] == stages
    assert s.info["polished"] is False and s.info["certified_gap"] == 0.0
    np.testing.assert_array_equal(s.x, p.upper)


def test_unpolished_gap_is_certified_when_it_says_so():
    # polish=False: the plan is within gap_tol of the optimum unless certified_gap says
    # otherwise; the certified gap bounds the true one. gap_tol large: no extra stage runs.
    p = random_problem(np.random.default_rng(3), 400, 40, 12, 10)
    opt = solve_exact(p).objective
    loose = solve_dual(p, polish=False, gap_tol=10.0)
    tight = solve_dual(p, polish=False, gap_tol=1e-6)
    for s in (loose, tight):
        assert check_feasible(p, s.x, s.shortfall) == []
        true_gap = max(0.0, opt - s.objective) / abs(s.objective)
        assert true_gap <= s.info["certified_gap"] + 1e-9
    # the three regular stages leave a gap above 1e-6 here (the instance is chosen so), so the
    # tight run needed further stages: more work (they need not improve the certificate)
    assert 1e-6 < loose.info["certified_gap"] <= 10.0
    assert tight.info["iterations"] > loose.info["iterations"]
    assert tight.info["passes"] > loose.info["passes"]


# ----------------------------------------------------------------------------- solve_dual: fallback, units

def test_polish_that_does_not_settle_falls_back_to_the_whole_lp(monkeypatch):
    # _polish limited to 1 round on a problem that needs more returns None: solve_dual then
    # solves the whole LP; the result is optimal with a certificate and says so.
    p = random_problem(np.random.default_rng(4), 400, 40, 12, 10)
    real = dual._polish
    monkeypatch.setattr(dual, "_fista", lambda d, y, *args: y)       # crude prices: several rounds
    monkeypatch.setattr(dual, "_polish", lambda *a: real(*a, max_rounds=1))
    s = solve_dual(p, polish=True)
    assert s.method == "dual" and s.info["polished"] == "exact"
    assert s.info["polish_rounds"] == 1
    assert s.objective == pytest.approx(solve_exact(p).objective, rel=1e-9)
    assert_certificate(p, s, tol=1e-7)


def test_plan_and_prices_are_scaled_back():
    # values 3, 2, 1 (vs = 3), ub 4 each, K = 6 (qs = 6): the optimum is x = (4, 2, 0) with
    # capacity price 2 (t1 is marginal), in the problem's units, polished or not.
    p = make([3.0, 2.0, 1.0], [4.0, 4.0, 4.0], capacity=6.0)
    s = solve_dual(p, polish=True)
    np.testing.assert_allclose(s.x, [4.0, 2.0, 0.0], atol=1e-9)
    assert s.capacity_price == pytest.approx(2.0, abs=1e-9)
    assert s.objective == pytest.approx(16.0, rel=1e-12)
    assert_certificate(p, s, tol=1e-7)
