"""The allocation LP (docs/design.md §4): pipelines/allocation/.

Optimality is checked without trusting the solver: every solution must come with a dual
certificate (dual feasibility + strong duality), and small instances are cross-checked
against an independently assembled dense LP.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import OptimizeResult, linprog

from pipelines.allocation import exact, problem
from pipelines.allocation.exact import solve_exact
from pipelines.allocation.instances import random_problem
from pipelines.allocation.problem import AllocationError, Problem, binding_families, check_feasible, objective
from pipelines.allocation.solve import solve

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REL = 1e-6


# ----------------------------------------------------------------------------- helpers

def make(value, upper, artist=None, licensor=None, campaign=None, floors=(0.0,), capacity=1.0,
         artist_cap=None, licensor_cap=None, penalty=10.0) -> Problem:
    n = len(value)
    return Problem(
        value=np.asarray(value, float), upper=np.asarray(upper, float),
        artist=np.arange(n) if artist is None else artist,
        licensor=np.arange(n) if licensor is None else licensor,
        campaign=np.zeros(n, int) if campaign is None else campaign,
        floors=np.asarray(floors, float), capacity=capacity,
        artist_cap=capacity if artist_cap is None else artist_cap,
        licensor_cap=capacity if licensor_cap is None else licensor_cap,
        penalty=penalty,
    )


def group_sums(codes, x, k):
    return np.bincount(codes, weights=x, minlength=k)[:k]


def assert_certificate(p: Problem, s, tol=1e-6):
    """Dual feasibility + strong duality: proves (x, u) optimal up to tolerance."""
    vscale = max(1.0, float(np.max(np.abs(p.value), initial=0.0)), p.penalty)
    for name in ("artist_price", "licensor_price", "floor_price", "track_price"):
        assert np.all(getattr(s, name) >= 0), name
    assert s.capacity_price >= 0
    assert s.artist_price.shape == (p.n_artists,)
    assert s.licensor_price.shape == (p.n_licensors,)
    assert s.floor_price.shape == (p.n_campaigns,)
    assert s.track_price.shape == (p.n,)
    if p.n:
        # column of x_t: y0 + y_a + y_l − z_c + w_t >= v_t
        lhs = (s.capacity_price + s.artist_price[p.artist] + s.licensor_price[p.licensor]
               - s.floor_price[p.campaign] + s.track_price)
        assert np.all(lhs >= p.value - tol * vscale), np.max(p.value - lhs)
    # column of u_c: z_c <= p
    assert np.all(s.floor_price <= p.penalty + tol * vscale)
    terms = np.array([
        p.capacity * s.capacity_price,
        p.artist_cap * s.artist_price.sum(),
        p.licensor_cap * s.licensor_price.sum(),
        float(p.upper @ s.track_price),
        -float(p.floors @ s.floor_price),
    ])
    dual = terms.sum()
    size = np.abs(terms).sum() + abs(s.objective) + vscale * max(p.capacity, 1.0) * 1e-3
    assert abs(dual - s.objective) <= tol * size, (dual, s.objective)


def dense_reference(p: Problem) -> float:
    """The LP assembled naively (dense, unscaled, loops) and solved by HiGHS."""
    n, C = p.n, p.n_campaigns
    rows, rhs = [], []
    rows.append([1.0] * n + [0.0] * C)
    rhs.append(p.capacity)
    for codes, cap, k in ((p.artist, p.artist_cap, p.n_artists), (p.licensor, p.licensor_cap, p.n_licensors)):
        for g in range(k):
            rows.append([1.0 if codes[t] == g else 0.0 for t in range(n)] + [0.0] * C)
            rhs.append(cap)
    for c in range(C):
        rows.append([-1.0 if p.campaign[t] == c else 0.0 for t in range(n)]
                    + [-1.0 if j == c else 0.0 for j in range(C)])
        rhs.append(-p.floors[c])
    cost = [-v for v in p.value] + [p.penalty] * C
    bounds = [(0.0, ub) for ub in p.upper] + [(0.0, None)] * C
    res = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
    assert res.status == 0
    return -res.fun


# ----------------------------------------------------------------------------- strategies

finite = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def problems(draw, feasible_floors: bool = False, min_n: int = 0):
    n = draw(st.integers(min_n, 40))
    A = draw(st.integers(1, 6))
    L = draw(st.integers(1, 4))
    C = draw(st.integers(1, 5))
    value = draw(arrays(np.float64, n, elements=st.floats(-1.0, 1.0, **finite)))
    upper = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(0.01, 100.0, **finite))))
    artist = draw(arrays(np.int64, n, elements=st.integers(0, A - 1)))
    licensor = draw(arrays(np.int64, n, elements=st.integers(0, L - 1)))
    campaign = draw(arrays(np.int64, n, elements=st.integers(0, C - 1)))
    if feasible_floors:
        # Jointly feasible: each floor within its campaign's ub, their sum within K,
        # caps generous, and p above any possible exchange cost 2·max|v|.
        camp_ub = np.bincount(campaign, weights=upper, minlength=C)
        frac = draw(arrays(np.float64, C, elements=st.floats(0.0, 1.0, **finite)))
        floors = frac * camp_ub
        K = float(floors.sum()) + draw(st.floats(0.0, 200.0, **finite))
        a_cap = l_cap = K
        penalty = draw(st.floats(2.5, 20.0, **finite))
    else:
        floors = draw(arrays(np.float64, C, elements=st.one_of(st.just(0.0), st.floats(0.01, 200.0, **finite))))
        K = draw(st.one_of(st.just(0.0), st.floats(0.1, 500.0, **finite)))
        a_cap = K * draw(st.floats(0.05, 1.0, **finite))
        l_cap = K * draw(st.floats(0.05, 1.0, **finite))
        penalty = draw(st.floats(0.0, 20.0, **finite))
    return Problem(value=value, upper=upper, artist=artist, licensor=licensor, campaign=campaign,
                   floors=floors, capacity=K, artist_cap=a_cap, licensor_cap=l_cap, penalty=penalty)


# ----------------------------------------------------------------------------- properties

@PROPS
@given(problems())
def test_plan_feasible_and_consistent(p):
    s = solve(p)
    assert s.method == "exact"
    assert s.x.shape == (p.n,) and s.shortfall.shape == (p.n_campaigns,)
    assert check_feasible(p, s.x, s.shortfall) == []
    # caps, checked directly (relative tolerance)
    assert np.all(s.x >= 0) and np.all(s.x <= p.upper)                    # exact after cleaning
    assert s.x.sum() <= p.capacity * (1 + REL) + 1e-9
    assert np.all(group_sums(p.artist, s.x, p.n_artists) <= p.artist_cap * (1 + REL) + 1e-9)
    assert np.all(group_sums(p.licensor, s.x, p.n_licensors) <= p.licensor_cap * (1 + REL) + 1e-9)
    assert np.all(s.x[p.upper == 0] == 0)
    assert not np.any((s.x > 0) & (s.x < problem.ZERO_X))
    # shortfall recomputed exactly from x
    np.testing.assert_array_equal(
        s.shortfall, np.maximum(0.0, p.floors - group_sums(p.campaign, s.x, p.n_campaigns)))
    assert s.objective == objective(p, s.x, s.shortfall)


@PROPS
@given(problems())
def test_optimal_with_dual_certificate(p):
    s = solve_exact(p)
    assert_certificate(p, s)
    ref = dense_reference(p)
    # The reference is solved unscaled with HiGHS's default dual feasibility
    # tolerance (1e-7): a track worth less than that may be left out, which moves
    # its optimum by up to 1e-7 per unit of upper bound (found by hypothesis:
    # v = [1e-7, 0], ub = 11 gave 0 against the exact 1.1e-6).
    reference_slack = 1e-7 * float(p.upper.sum())
    assert abs(s.objective - ref) <= 1e-6 * max(1.0, abs(ref), p.penalty * p.floors.sum()) + reference_slack


@PROPS
@given(problems())
def test_complementary_slackness(p):
    s = solve_exact(p)
    tight = lambda lhs, cap: lhs >= cap * (1 - REL) - 1e-9          # noqa: E731
    if s.capacity_price > 1e-9:
        assert tight(s.x.sum(), p.capacity)
    a_tot = group_sums(p.artist, s.x, p.n_artists)
    assert np.all(tight(a_tot, p.artist_cap)[s.artist_price > 1e-9])
    l_tot = group_sums(p.licensor, s.x, p.n_licensors)
    assert np.all(tight(l_tot, p.licensor_cap)[s.licensor_price > 1e-9])
    # a priced floor is exactly met (plays + shortfall, no over-delivery)
    c_tot = group_sums(p.campaign, s.x, p.n_campaigns) + s.shortfall
    priced = s.floor_price > 1e-9
    assert np.all(c_tot[priced] <= p.floors[priced] * (1 + REL) + 1e-9)
    # a priced track bound is at its ub; a shortfall means the floor costs p
    assert np.all(tight(s.x, p.upper)[s.track_price > 1e-9])
    short = s.shortfall > 1e-6 * np.maximum(1.0, p.floors)
    np.testing.assert_allclose(s.floor_price[short], p.penalty, rtol=1e-6, atol=1e-9)


@PROPS
@given(problems(feasible_floors=True))
def test_floors_met_wherever_feasible(p):
    s = solve(p)
    assert np.all(s.shortfall <= 1e-6 * np.maximum(1.0, p.floors)), (s.shortfall, p.floors)
    assert check_feasible(p, s.x, s.shortfall) == []


# ----------------------------------------------------------------------------- exact answers

def test_capacity_only_known_optimum():
    p = make([5, 4, 3, 2, 1], [1, 1, 1, 1, 1], capacity=2.5)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 1, 0.5, 0, 0], atol=1e-9)
    assert s.objective == pytest.approx(10.5)
    assert s.capacity_price == pytest.approx(3.0)
    np.testing.assert_allclose(s.track_price, [2, 1, 0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(s.artist_price, 0, atol=1e-12)


def test_artist_cap_known_optimum():
    # tracks 0 and 1 share an artist capped at 1.5
    p = make([5, 4, 3, 2, 1], [1, 1, 1, 1, 1], artist=[0, 0, 1, 2, 3], capacity=2.75, artist_cap=1.5)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 0.5, 1, 0.25, 0], atol=1e-9)
    assert s.objective == pytest.approx(10.5)
    assert s.capacity_price == pytest.approx(2.0)                 # the next unit goes to track 3
    np.testing.assert_allclose(s.artist_price, [2, 0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(s.track_price, [1, 0, 1, 0, 0], atol=1e-9)
    assert_certificate(p, s)


def test_licensor_cap_known_optimum():
    p = make([5, 4, 3, 2, 1], [1, 1, 1, 1, 1], licensor=[0, 0, 1, 2, 3], capacity=2.75, licensor_cap=1.5)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 0.5, 1, 0.25, 0], atol=1e-9)
    np.testing.assert_allclose(s.licensor_price, [2, 0, 0, 0], atol=1e-9)
    assert s.capacity_price == pytest.approx(2.0)


def test_floor_bought_on_negative_track():
    # campaign 1 = track 4 (value −1) with a floor of 0.5: bought at the cost of track 2
    p = make([5, 4, 3, 2, -1], [1, 1, 1, 1, 1], campaign=[0, 0, 0, 0, 1], floors=[0, 0.5], capacity=3.0)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 1, 0.5, 0, 0.5], atol=1e-9)
    np.testing.assert_allclose(s.shortfall, [0, 0], atol=1e-12)
    assert s.objective == pytest.approx(10.0)
    assert s.capacity_price == pytest.approx(3.0)
    assert s.floor_price[1] == pytest.approx(4.0)                # 1 lost on track 4 + 3 displaced
    assert_certificate(p, s)


def test_infeasible_floor_has_shortfall_and_costs_p():
    p = make([5, 4, 3, 2, -1], [1, 1, 1, 1, 1], campaign=[0, 0, 0, 0, 1], floors=[0, 2.0], capacity=3.5)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 1, 0.5, 0, 1], atol=1e-9)
    assert s.shortfall[1] == pytest.approx(1.0)
    assert s.objective == pytest.approx(10.5 - 1 - 10 * 1.0)
    assert s.floor_price[1] == pytest.approx(10.0)
    assert s.track_price[4] == pytest.approx(-1 - 3 + 10)
    assert_certificate(p, s)


# ----------------------------------------------------------------------------- duals by finite differences

@pytest.fixture(scope="module")
def bound_instance():
    p = random_problem(np.random.default_rng(7), 400, 40, 12, 10)
    return p, solve_exact(p)


def _slope(p: Problem, field: str, delta: float, index: int | None = None) -> tuple[float, float]:
    def at(d):
        if index is None:
            q = dataclasses.replace(p, **{field: getattr(p, field) + d})
        else:
            arr = getattr(p, field).copy()
            arr[index] += d
            q = dataclasses.replace(p, **{field: arr})
        return solve_exact(q).objective
    f0 = at(0.0)
    return (at(delta) - f0) / delta, (f0 - at(-delta)) / delta


def test_capacity_price_is_marginal_value(bound_instance):
    p, s = bound_instance
    assert s.capacity_price > 1e-6
    up, down = _slope(p, "capacity", 1e-4 * p.capacity)
    assert up == pytest.approx(s.capacity_price, rel=1e-4)
    assert down == pytest.approx(s.capacity_price, rel=1e-4)


def test_group_cap_prices_are_marginal_values(bound_instance):
    p, s = bound_instance
    # artist_cap / licensor_cap are shared by every group: the slope is the sum of prices
    for field, price in (("artist_cap", s.artist_price.sum()), ("licensor_cap", s.licensor_price.sum())):
        assert price > 1e-6
        up, down = _slope(p, field, 1e-4 * p.capacity)
        assert up == pytest.approx(price, rel=1e-4), field
        assert down == pytest.approx(price, rel=1e-4), field


def test_floor_price_is_marginal_cost(bound_instance):
    p, s = bound_instance
    for c in (0, 1):                        # the bought floor and the infeasible one
        assert s.floor_price[c] > 1e-6
        up, down = _slope(p, "floors", 1e-5 * p.capacity, index=c)
        assert -up == pytest.approx(s.floor_price[c], rel=1e-4)
        assert -down == pytest.approx(s.floor_price[c], rel=1e-4)


def test_strong_duality_on_binding_instances(bound_instance):
    p, s = bound_instance
    assert_certificate(p, s, tol=1e-7)
    big = random_problem(np.random.default_rng(3), 3000, 300, 40, 60)
    assert_certificate(big, solve_exact(big), tol=1e-7)


# ----------------------------------------------------------------------------- edge cases

def test_no_tracks():
    p = make([], [], campaign=np.zeros(0, int), floors=[], capacity=10.0)
    s = solve(p)
    assert s.x.shape == (0,) and s.shortfall.shape == (0,)
    assert s.objective == 0.0 and s.capacity_price == 0.0
    assert s.artist_price.shape == (0,) and s.licensor_price.shape == (0,)

    p = make([], [], campaign=np.zeros(0, int), floors=[0.0, 3.0], capacity=10.0, penalty=7.0)
    s = solve(p)
    np.testing.assert_array_equal(s.shortfall, [0.0, 3.0])
    np.testing.assert_array_equal(s.floor_price, [0.0, 7.0])
    assert s.objective == pytest.approx(-21.0)
    assert_certificate(p, s)


def test_zero_capacity():
    p = make([1, 2, -1], [5, 5, 5], campaign=[0, 0, 1], floors=[1.0, 2.0], capacity=0.0)
    s = solve(p)
    np.testing.assert_array_equal(s.x, 0.0)
    np.testing.assert_allclose(s.shortfall, [1.0, 2.0])
    assert check_feasible(p, s.x, s.shortfall) == []
    assert_certificate(p, s)


def test_all_tracks_ineligible():
    p = make([1, 2, -1], [0, 0, 0], campaign=[0, 0, 1], floors=[1.0, 0.0], capacity=10.0, penalty=5.0)
    s = solve(p)
    np.testing.assert_array_equal(s.x, 0.0)
    np.testing.assert_array_equal(s.shortfall, [1.0, 0.0])
    assert s.objective == pytest.approx(-5.0)
    assert s.capacity_price == 0.0
    assert_certificate(p, s)


def test_ineligible_tracks_get_nothing_even_if_best():
    p = make([100, 1, 1], [0, 1, 1], capacity=10.0)
    s = solve(p)
    np.testing.assert_allclose(s.x, [0, 1, 1], atol=1e-12)
    assert s.x[0] == 0.0
    assert s.track_price[0] == pytest.approx(100.0)          # reduced cost of the fixed track
    assert_certificate(p, s)


def test_floor_above_campaign_supply():
    # caps generous, p large: campaign 1's tracks all go to ub and the rest is shortfall
    p = make([1, 2, -3, -1], [1, 2, 1.5, 0.5], campaign=[0, 0, 1, 1], floors=[0, 5.0], capacity=100.0,
             penalty=50.0)
    s = solve(p)
    np.testing.assert_allclose(s.x, [1, 2, 1.5, 0.5], atol=1e-9)
    assert s.shortfall[1] == pytest.approx(3.0)
    assert s.floor_price[1] == pytest.approx(50.0)


def test_campaign_without_tracks():
    p = make([1, 2], [1, 1], campaign=[0, 0], floors=[0.5, 4.0, 0.0], capacity=1.5, penalty=3.0)
    s = solve(p)
    assert s.shortfall[1] == 4.0 and s.shortfall[2] == 0.0
    assert s.floor_price[1] == pytest.approx(3.0)
    np.testing.assert_allclose(s.x, [0.5, 1.0], atol=1e-9)
    assert_certificate(p, s)


def test_only_negative_values_and_no_floors():
    p = make([-1, -2], [1, 1], capacity=5.0)
    s = solve(p)
    np.testing.assert_array_equal(s.x, 0.0)
    assert s.objective == 0.0


def test_zero_penalty_ignores_floors():
    p = make([-1, 1], [1, 1], campaign=[0, 1], floors=[1.0, 0.0], capacity=5.0, penalty=0.0)
    s = solve(p)
    np.testing.assert_allclose(s.x, [0, 1], atol=1e-12)
    assert s.shortfall[0] == 1.0


def test_deterministic():
    p = random_problem(np.random.default_rng(11), 2000, 200, 30, 40)
    a = solve_exact(p)
    b = solve_exact(dataclasses.replace(p, value=p.value.copy(), upper=p.upper.copy()))
    for f in ("x", "shortfall", "artist_price", "licensor_price", "floor_price", "track_price"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.objective == b.objective and a.capacity_price == b.capacity_price


def test_large_units_keep_relative_accuracy():
    # plays in the millions and values around 1e-3: scaling must not lose precision
    p = random_problem(np.random.default_rng(5), 500, 50, 12, 10)
    q = dataclasses.replace(p, value=p.value * 0.05, upper=p.upper * 1e4, floors=p.floors * 1e4,
                            capacity=p.capacity * 1e4, artist_cap=p.artist_cap * 1e4,
                            licensor_cap=p.licensor_cap * 1e4, penalty=p.penalty * 0.05)
    s, t = solve_exact(p), solve_exact(q)
    np.testing.assert_allclose(t.x, s.x * 1e4, rtol=1e-6, atol=1e-6 * q.capacity / q.n)
    assert t.objective == pytest.approx(s.objective * 0.05 * 1e4, rel=1e-7)
    assert t.capacity_price == pytest.approx(s.capacity_price * 0.05, rel=1e-6)


# ----------------------------------------------------------------------------- errors and checks

def test_check_feasible_reports_violations():
    p = make([1, 1, 1], [1, 1, 1], artist=[0, 0, 1], licensor=[0, 1, 1], campaign=[0, 0, 1],
             floors=[0.0, 2.0], capacity=2.0, artist_cap=1.0, licensor_cap=1.5)
    msgs = check_feasible(p, np.array([1.0, 1.0, 1.2]), np.array([0.0, 0.0]))
    text = "\n".join(msgs)
    assert "track upper bound: x[2]" in text
    assert "capacity: sum x = 3.2 > K = 2" in text
    assert "artist cap: artist 0" in text
    assert "licensor cap: licensor 1" in text
    assert "campaign floor: campaign 1" in text
    assert check_feasible(p, np.array([-0.5, 0.5, 0]), np.array([0.0, 2.0])) == ["track lower bound: x[0] = -0.5 < 0"]
    assert check_feasible(p, np.array([0.5, 0.5, 1.0]), np.array([0.0, 1.0])) == []
    # within the relative tolerance
    assert check_feasible(p, np.array([0.5, 0.5, 1.0 + 1e-7]), np.array([0.0, 1.0])) == []
    assert check_feasible(p, np.zeros(2), np.zeros(2))[0].startswith("x has length 2")


def test_check_feasible_messages_in_full():
    """The whole list, word for word: each family's message, non-finite values,
    a wrong shortfall length, plans given as a row (flattened), and at most five
    violations per family followed by a count of the rest."""
    p = make([1, 1, 1], [1, 1, 1], artist=[0, 0, 1], licensor=[0, 1, 1], campaign=[0, 0, 1],
             floors=[0.0, 2.0], capacity=2.0, artist_cap=1.0, licensor_cap=1.5)
    assert check_feasible(p, np.array([1.0, 1.0, 1.2]), np.array([0.0, 0.0])) == [
        "track upper bound: x[2] = 1.2 > ub = 1", "capacity: sum x = 3.2 > K = 2",
        "artist cap: artist 0: sum x = 2 > 1", "artist cap: artist 1: sum x = 1.2 > 1",
        "licensor cap: licensor 1: sum x = 2.2 > 1.5", "campaign floor: campaign 1: sum x + u = 1.2 < F = 2"]
    assert check_feasible(p, np.array([[0.5, 0.5, 1.0]]), np.array([[0.0, 1.0]])) == []
    assert check_feasible(p, np.array([np.nan, 0.5, 1.0]), np.array([np.inf, 1.0])) == [
        "x contains NaN or infinite entries", "shortfall contains NaN or infinite entries"]
    assert check_feasible(p, np.zeros(3), np.zeros(3)) == ["shortfall has length 3, expected 2"]
    assert check_feasible(p, np.zeros(3), np.array([-0.5, 0.0])) == [
        "shortfall lower bound: u[0] = -0.5 < 0", "campaign floor: campaign 0: sum x + u = -0.5 < F = 0",
        "campaign floor: campaign 1: sum x + u = 0 < F = 2"]
    q = make([1] * 7, [1] * 7, capacity=10.0, artist_cap=10, licensor_cap=10)
    assert check_feasible(q, -np.ones(7), np.zeros(1)) == [
        *(f"track lower bound: x[{i}] = -1 < 0" for i in range(5)), "track lower bound: ... and 2 more",
        "campaign floor: campaign 0: sum x + u = -7 < F = 0"]


# a valid two-track problem the validation tests break one field of
VALID = dict(value=[1.0, 2.0], upper=[1.0, 1.0], artist=[0, 1], licensor=[0, 0], campaign=[0, 0], floors=[0.0],
             capacity=1.0, artist_cap=1.0, licensor_cap=1.0, penalty=1.0)


@pytest.mark.parametrize("change, match", [
    (dict(upper=np.array([1.0, -1.0])), "upper must be >= 0"),
    (dict(upper=np.array([1.0])), "upper has length 1"),
    (dict(value=np.array([np.nan, 1.0])), "value contains NaN"),
    (dict(campaign=np.array([0, 3])), "campaign code 3 has no floor"),
    (dict(artist=np.array([0, -1])), "artist codes must be >= 0"),
    (dict(artist=np.array([0.5, 1.0])), "artist must hold integer codes"),
    (dict(floors=np.array([-1.0])), "floors must be >= 0"),
    (dict(capacity=-1.0), "capacity must be finite and >= 0"),
    (dict(penalty=float("inf")), "penalty must be finite"),
])
def test_problem_validation(change, match):
    with pytest.raises(ValueError, match=match):
        Problem(**(VALID | change))


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown allocation method 'greedy'"):
        solve(make([1.0], [1.0]), method="greedy")


def test_solver_failure_is_reported(monkeypatch):
    def failing(*args, **kwargs):
        return OptimizeResult(status=4, success=False, x=None, message="numerical difficulties")
    monkeypatch.setattr(exact, "linprog", failing)
    with pytest.raises(AllocationError, match="status 4: numerical difficulties"):
        solve_exact(make([1.0], [1.0]))


# ----------------------------------------------------------------------------- random_problem

@pytest.mark.parametrize("shape, seeds", [
    ((100, 5, 5, 3), range(6)),
    ((400, 40, 12, 10), range(4)),
    ((3000, 300, 40, 60), range(2)),
])
def test_random_problem_binds_every_family(shape, seeds):
    for seed in seeds:
        p = random_problem(np.random.default_rng(seed), *shape)
        assert p.n == shape[0] and p.n_campaigns == shape[3]
        s = solve_exact(p)
        fams = binding_families(p, s)
        assert all(fams.values()), (seed, fams)
        # spelled out: capacity tight, stars at their caps, a met floor, a missed one,
        # and one met by giving plays to negative-value tracks
        assert s.x.sum() == pytest.approx(p.capacity, rel=1e-7) and s.capacity_price > 0
        assert group_sums(p.artist, s.x, p.n_artists).max() == pytest.approx(p.artist_cap, rel=1e-7)
        assert group_sums(p.licensor, s.x, p.n_licensors).max() == pytest.approx(p.licensor_cap, rel=1e-7)
        assert s.shortfall[1] > 0
        assert s.shortfall[0] <= 1e-9 * p.capacity and s.floor_price[0] > 0
        assert np.all(p.value[p.campaign == 0] < 0) and s.x[p.campaign == 0].sum() > 0
        assert check_feasible(p, s.x, s.shortfall) == []


def test_random_problem_reproducible_and_validated():
    a = random_problem(np.random.default_rng(1), 200, 10, 6, 5)
    b = random_problem(np.random.default_rng(1), 200, 10, 6, 5)
    np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert a.capacity == b.capacity
    loose = random_problem(np.random.default_rng(1), 50, 3, 2, 2, binding=False)
    assert check_feasible(loose, solve(loose).x, solve(loose).shortfall) == []
    with pytest.raises(ValueError, match="binding instances need"):
        random_problem(np.random.default_rng(1), 20, 3, 3, 3)


# ----------------------------------------------------------------------------- binding_families, by hand

def _families_problem():
    # tracks: 0 (+1, artist 0, licensor 0, campaign 0), 1 (-1, artist 0, licensor 1, campaign 0),
    # 2 (0.0, artist 1, licensor 1, campaign 1), 3 (0.0, artist 1, licensor 1, campaign 1, ub 0);
    # campaign 2 has a floor and no track
    return Problem(value=[1.0, -1.0, 0.0, 0.0], upper=[2.0, 2.0, 1.0, 0.0], artist=[0, 0, 1, 1],
                   licensor=[0, 1, 1, 1], campaign=[0, 0, 1, 1], floors=[2.5, 1.0, 0.0], capacity=4.0,
                   artist_cap=2.5, licensor_cap=1.5, penalty=10.0)


def _sol(p, x, u, capacity=0.0, artist=(0.0, 0.0), licensor=(0.0, 0.0), floor=(0.0, 0.0, 0.0),
         track=(0.0, 0.0, 0.0, 0.0)):
    x, u = np.array(x, float), np.array(u, float)
    return problem.Solution(x=x, shortfall=u, objective=objective(p, x, u), capacity_price=capacity,
                            artist_price=np.array(artist), licensor_price=np.array(licensor),
                            floor_price=np.array(floor), track_price=np.array(track), method="hand")


NONE = dict.fromkeys(("capacity", "artist", "licensor", "track", "floor_met", "floor_short", "floor_bought"), False)


@pytest.mark.parametrize("case, x, u, prices, want", [
    # campaign 0 gets its 2.5 from plays on its two tracks, campaign 1 is short
    ("plays meet floor 0 on two tracks (counts 2 < 2.5), floor 1 short", [2.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0],
     {}, dict(NONE, floor_met=True, floor_short=True)),
    ("priced floor met with plays on the negative-value track", [2.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0],
     dict(floor=(0.3, 0.0, 0.0)), dict(NONE, floor_met=True, floor_short=True, floor_bought=True)),
    ("priced floor met without the negative-value track", [2.5, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0],
     dict(floor=(0.3, 0.0, 0.0)), dict(NONE, floor_met=True, artist=False)),
    ("a zero-value track with plays is not negative", [2.5, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0],
     dict(floor=(0.0, 0.3, 0.0)), dict(NONE, floor_met=True)),
    ("under one play on the negative track still counts", [2.0, 0.5, 0.5, 0.0], [0.0, 0.5, 0.0],
     dict(floor=(0.3, 0.0, 0.0)), dict(NONE, floor_met=True, floor_short=True, floor_bought=True)),
    ("capacity exactly at K(1 - rel) and priced; artist 0 at its cap, priced; licensor 1 at its cap, priced",
     [2.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0], dict(capacity=0.2, artist=(0.1, 0.0), licensor=(0.0, 0.1)),
     "capacity+"),
    ("prices exactly at the tolerance do not count", [2.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0],
     dict(capacity=1e-9, artist=(1e-9, 0.0), licensor=(0.0, 1e-9), track=(0.0, 0.0, 1e-9, 0.0)),
     dict(NONE, floor_met=True)),
    ("tight but unpriced, priced but slack", [1.0, 0.0, 1.0, 0.0], [1.5, 0.0, 0.0],
     dict(artist=(0.0, 0.2), licensor=(0.2, 0.0), track=(0.2, 0.0, 0.0, 0.0)),
     dict(NONE, floor_met=True, floor_short=True)),
    ("nothing met: a slack capacity priced, a zero floor without tracks, a priced track of upper bound 0",
     [0.0, 0.0, 0.0, 0.0], [2.5, 1.0, 0.0], dict(capacity=0.2, track=(0.0, 0.0, 0.0, 0.5)),
     dict(NONE, floor_short=True)),
    ("a priced track at its upper bound; a priced track of upper bound 0 is not one", [0.0, 0.0, 1.0, 0.0],
     [2.5, 0.0, 0.0], dict(track=(0.0, 0.0, 0.5, 0.5)), dict(NONE, track=True, floor_met=True, floor_short=True)),
])
def test_binding_families_by_hand(case, x, u, prices, want):
    p = _families_problem()
    if want == "capacity+":
        p.capacity = 3.5 / (1 - 1e-7)     # x sums to exactly K (1 - rel)
        want = dict(NONE, capacity=True, artist=True, licensor=True, floor_met=True)
    assert binding_families(p, _sol(p, x, u, **prices)) == want, case


@pytest.mark.parametrize("u, met", [(1e-7 * 2.5, True), (1e-7, True), (1.5e-7, False)])
def test_a_floor_is_met_within_rel_times_the_larger_of_1_and_the_floor(u, met):
    """met: shortfall <= rel * max(1, F); F = 2.5 on campaign 0 (u = rel * F exactly, and under it)
    or F = 1 on campaign 1 (u = 1.5 rel is over rel * max(1, 1))."""
    p = _families_problem()
    if u == 1.5e-7:
        x, shortfall, floor = [2.5, 0.0, 1.0 - 1.5e-7, 0.0], [0.0, u, 0.0], (0.0, 0.3, 0.0)
    else:
        x, shortfall, floor = [2.0, 0.5 - u, 1.0, 0.0], [u, 0.0, 0.0], (0.3, 0.0, 0.0)
    assert binding_families(p, _sol(p, x, shortfall, floor=floor))["floor_bought"] is (met and u != 1.5e-7)
    assert binding_families(p, _sol(p, x, shortfall, floor=floor))["floor_short"] is False


def test_check_feasible_at_its_tolerance():
    """A violation must exceed tol * max(1, |bound|): exactly at it (bounds of 0, where the arithmetic
    is exact) is feasible; 1.5 tol over a bound of 0, or 5e-6 over a bound of 10 (tol * 10 = 1e-5), is
    judged against the right slack; five violations are listed without a count, six with one."""
    tol = 1e-6
    p = make([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], artist=[0, 1, 2], licensor=[0, 1, 2], campaign=[0, 0, 0],
             floors=[0.0], capacity=0.0, artist_cap=0.0, licensor_cap=0.0)
    assert check_feasible(p, np.array([tol, -tol, tol]), np.array([-tol]), tol=tol) == []
    assert check_feasible(p, np.array([1.5 * tol, 0.0, 0.0]), np.array([0.0]), tol=tol) == [
        "track upper bound: x[0] = 1.5e-06 > ub = 0", "capacity: sum x = 1.5e-06 > K = 0",
        "artist cap: artist 0: sum x = 1.5e-06 > 0", "licensor cap: licensor 0: sum x = 1.5e-06 > 0"]
    ten = make([1.0], [10.0], capacity=100.0, artist_cap=100.0, licensor_cap=100.0)
    assert check_feasible(ten, np.array([10.0 + 5e-6]), np.zeros(1), tol=tol) == []
    for n, more in ((5, []), (6, ["track lower bound: ... and 1 more"])):
        q = make([1.0] * n, [1.0] * n, capacity=10.0, artist_cap=10.0, licensor_cap=10.0)
        got = [m for m in check_feasible(q, -np.ones(n), np.full(1, float(n))) if m.startswith("track lower")]
        assert got == [f"track lower bound: x[{i}] = -1 < 0" for i in range(5)] + more


def test_trivial_solution_prices():
    """No track can get plays: x = 0, u = F, a positive floor priced at the penalty, each track priced
    at the positive part of its value plus its campaign's floor price."""
    p = make([-1.0, 0.5, -20.0], [0.0, 0.0, 0.0], campaign=[0, 0, 1], floors=[2.0, 0.0], penalty=3.0)
    s = problem.trivial_solution(p, "exact")
    assert s.x.tolist() == [0.0, 0.0, 0.0] and s.shortfall.tolist() == [2.0, 0.0]
    assert s.floor_price.tolist() == [3.0, 0.0] and s.track_price.tolist() == [2.0, 3.5, 0.0]
    assert s.objective == -6.0 and s.capacity_price == 0.0


@pytest.mark.parametrize("change, message", [
    (dict(upper=np.array([1.0, -1.0])), "Problem.upper must be >= 0 (ub_t = rho*E_t)"),
    (dict(floors=np.array([-1.0])), "Problem.floors must be >= 0"),
    (dict(licensor=np.array([0.5, 1.0])), "Problem.licensor must hold integer codes"),
    (dict(campaign=np.array([0.0, 0.5])), "Problem.campaign must hold integer codes"),
    (dict(campaign=np.array([0, 1])), "Problem.campaign code 1 has no floor (floors has length 1)"),
    (dict(upper=np.array([1.0])), "Problem.upper has length 1, expected 2 (length of value)"),
    (dict(floors=np.array([np.inf])), "Problem.floors contains NaN or infinite entries"),
    (dict(licensor_cap=-1.0), "Problem.licensor_cap must be finite and >= 0, got -1.0"),
])
def test_problem_validation_messages_in_full(change, message):
    with pytest.raises(ValueError) as e:
        Problem(**(VALID | change))
    assert str(e.value) == message


def test_problem_fields_given_as_rows_are_flattened():
    """Arrays given as one row (shape (1, n)) read as the n-vector they hold."""
    p = Problem(value=[[1.0, 2.0]], upper=[[1.0, 1.0]], artist=[[0, 1]], licensor=[[0, 0]], campaign=[[0, 0]],
                floors=[[0.0]], capacity=1.0, artist_cap=1.0, licensor_cap=1.0, penalty=1.0)
    assert p.n == 2 and p.value.shape == p.upper.shape == p.artist.shape == (2,) and p.floors.shape == (1,)
    assert p.value.dtype == p.upper.dtype == np.float64 and p.licensor.dtype == np.int64
    # whole-number codes given as floats are codes; values and bounds given as ints are floats
    q = Problem(value=[1, 2], upper=[1, 1], artist=[0.0, 1.0], licensor=[1.0, 1.0], campaign=[0.0, 0.0],
                floors=[0], capacity=1, artist_cap=1, licensor_cap=1, penalty=1)
    assert q.artist.tolist() == [0, 1] and q.licensor.tolist() == [1, 1] and q.artist.dtype == np.int64
    assert q.value.dtype == q.upper.dtype == q.floors.dtype == np.float64
