"""Edges of the allocation modules (pipelines/allocation/problem.py, exact.py, verify.py):
tolerance boundaries met exactly (numbers chosen so the arithmetic is exact), degenerate
inputs of the solver scaling, the options HiGHS is given, and the failure message.
Every expected value is derived by hand in the comments.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pipelines.allocation import exact, problem
from pipelines.allocation.exact import HIGHS_TOL, highs_lp, solve_exact
from pipelines.allocation.problem import (ZERO_X, AllocationError, Problem, binding_families, check_feasible,
                                          clean_plan, objective, scales)
from pipelines.allocation.verify import Rebuilt, gap
from tests.unit.test_allocation import make

REL = 1e-7          # binding_families' default rel
PRICE_TOL = 1e-9    # binding_families' default price_tol


def _sol(p: Problem, x, u, capacity=0.0, artist=None, licensor=None, floor=None, track=None):
    """A hand-made Solution (prices default to 0)."""
    x, u = np.array(x, float), np.array(u, float)
    zeros = np.zeros
    return problem.Solution(
        x=x, shortfall=u, objective=objective(p, x, u), capacity_price=capacity,
        artist_price=np.array(artist if artist is not None else zeros(p.n_artists), float),
        licensor_price=np.array(licensor if licensor is not None else zeros(p.n_licensors), float),
        floor_price=np.array(floor if floor is not None else zeros(p.n_campaigns), float),
        track_price=np.array(track if track is not None else zeros(p.n), float), method="hand")


# ----------------------------------------------------------------------------- binding_families

def test_rows_exactly_at_bound_times_1_minus_rel_are_tight():
    """One track, every bound 1 and x = 1·(1 − rel) exactly (a single term, so every group sum is
    that same float): capacity, artist, licensor, track (x >= ub(1 − rel)) and the floor
    (plays >= F(1 − rel), shortfall 0) are all tight and priced, so all bind; nothing is short and
    the value is positive so no floor is bought. Catches `>=` turned into `>` in any family."""
    p = make([0.5], [1.0], floors=[1.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    x = [1.0 * (1 - REL)]
    sol = _sol(p, x, [0.0], capacity=0.1, artist=[0.1], licensor=[0.1], floor=[0.1], track=[0.1])
    assert binding_families(p, sol) == dict(capacity=True, artist=True, licensor=True, track=True,
                                            floor_met=True, floor_short=False, floor_bought=False)


def test_a_price_exactly_at_price_tol_does_not_count():
    """A tight row whose price equals price_tol (1e-9) does not bind (the price must exceed it);
    twice the tolerance does. Capacity: x = K = 1. floor_bought: floor 1 met exactly by plays on a
    value −1 track. Catches `>` turned into `>=` on the capacity and floor prices."""
    p = make([-1.0], [1.0], floors=[1.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    at = binding_families(p, _sol(p, [1.0], [0.0], capacity=PRICE_TOL, floor=[PRICE_TOL]))
    assert at["capacity"] is False and at["floor_bought"] is False
    over = binding_families(p, _sol(p, [1.0], [0.0], capacity=2 * PRICE_TOL, floor=[2 * PRICE_TOL]))
    assert over["capacity"] is True and over["floor_bought"] is True


def test_a_floor_of_1_missed_by_1_5_rel_is_not_met():
    """met: shortfall <= rel·max(1, F). F = 1, shortfall 1.5e-7 > 1e-7: the floor is not met, so a priced
    floor given plays on a value −1 track is not 'bought'; shortfall 0.5e-7 is met and it is.
    Catches max(1, F) replaced by max(2, F) (which would accept up to 2e-7)."""
    p = make([-1.0], [1.0], floors=[1.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    u = 1.5e-7
    assert binding_families(p, _sol(p, [1.0 - u], [u], floor=[0.3]))["floor_bought"] is False
    u = 0.5e-7
    assert binding_families(p, _sol(p, [1.0 - u], [u], floor=[0.3]))["floor_bought"] is True


@pytest.mark.parametrize("u, short", [(1e-7, False), (1.5e-7, True), (0.5e-7, False)])
def test_floor_short_means_shortfall_over_rel_times_k(u, short):
    """floor_short: shortfall > rel·max(K, 1); with K = 1 the threshold is 1e-7 exactly: a shortfall
    equal to it is not short, 1.5e-7 is. Catches `>` turned into `>=` and max(K, 1) into max(K, 2)."""
    p = make([1.0], [1.0], floors=[1.0], capacity=1.0)
    assert binding_families(p, _sol(p, [1.0 - u], [u]))["floor_short"] is short


# ----------------------------------------------------------------------------- check_feasible

def test_a_floor_missed_by_exactly_the_tolerance_is_feasible():
    """Violated only when F − (Σx + u) > tol·max(1, F). F = 1, tol = 2^-20, x = 1 − 2^-20: the miss is
    2^-20 exactly (Sterbenz), equal to the slack, so feasible; a miss of 2^-19 is reported.
    Catches `>` turned into `>=` in the floor family."""
    tol = 2.0 ** -20
    p = make([1.0], [1.0], floors=[1.0], capacity=1.0)
    assert check_feasible(p, np.array([1.0 - tol]), np.zeros(1), tol=tol) == []
    got = check_feasible(p, np.array([1.0 - 2 * tol]), np.zeros(1), tol=tol)
    assert len(got) == 1 and got[0].startswith("campaign floor: campaign 0: sum x + u = ")


# ----------------------------------------------------------------------------- clean_plan

def test_clean_plan_clips_negative_plays_to_zero():
    """x = (−0.5, 0.5) inside caps: the negative entry is clipped to 0 (x ∈ [0, ub]); the shortfall is
    F − Σx = 1 − 0.5. Catches a clip without its lower bound."""
    p = make([1.0, 1.0], [1.0, 1.0], floors=[1.0], capacity=4.0)
    x, u = clean_plan(p, np.array([-0.5, 0.5]))
    assert x.tolist() == [0.0, 0.5] and u.tolist() == [0.5]


def test_clean_plan_scales_an_over_capacity_plan_down_onto_k():
    """x = (1, 1), each alone in its artist and licensor (caps 1, not exceeded), K = 1: Σx = 2 > K, so x
    is scaled by K/Σx = 1/2 to (0.5, 0.5), summing to K. Catches x / (K/Σx)."""
    p = make([1.0, 1.0], [1.0, 1.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    x, u = clean_plan(p, np.array([1.0, 1.0]))
    assert x.tolist() == [0.5, 0.5] and u.tolist() == [0.0]


def test_clean_plan_zeroes_only_plays_below_zero_x():
    """|x| < ZERO_X becomes 0: exactly ZERO_X is kept, half of it is zeroed.
    Catches `<` turned into `<=`."""
    p = make([1.0, 1.0], [1.0, 1.0], capacity=4.0)
    x, _ = clean_plan(p, np.array([ZERO_X, ZERO_X / 2]))
    assert x.tolist() == [ZERO_X, 0.0]


# ----------------------------------------------------------------------------- scales

def _problem(value, upper, floors, capacity, penalty):
    n = len(value)
    return Problem(value=value, upper=upper, artist=np.zeros(n, int), licensor=np.zeros(n, int),
                   campaign=np.zeros(n, int), floors=floors, capacity=capacity, artist_cap=capacity,
                   licensor_cap=capacity, penalty=penalty)


@pytest.mark.parametrize("case, prob, want", [
    # quantities by K, values by max |v|
    ("plain", _problem([-4.0, 1.0], [1.0, 3.0], [2.0], 0.5, 8.0), (0.5, 4.0)),
    # K = 0: qs is 1e-9 × the largest of the bounds (0.5) and floors (0.25); no value: vs = 1e-9 × p
    ("K = 0, penalty only", _problem([0.0], [0.5], [0.25], 0.0, 2.0), (1e-9 * 0.5, 1e-9 * 2.0)),
    # the largest quantity may be a floor (4) rather than a bound (0.5)
    ("K = 0, floor largest", _problem([1.0], [0.5], [4.0], 0.0, 0.0), (1e-9 * 4.0, 1.0)),
    # K = 0 and bounds 2 > floors: 1e-9 × 2
    ("K = 0, bound largest", _problem([1.0], [2.0], [0.0], 0.0, 1.0), (1e-9 * 2.0, 1.0)),
    # everything zero: a scale of 0 is replaced by 1
    ("all zero", _problem([0.0], [0.0], [0.0], 0.0, 0.0), (1.0, 1.0)),
    # no tracks and no campaigns: the maxima of empty arrays are 0; qs = K, vs falls back to 1
    ("empty", _problem([], [], [], 3.0, 0.0), (3.0, 1.0)),
    ("empty, one floor", _problem([], [], [5.0], 0.0, 0.0), (1e-9 * 5.0, 1.0)),
])
def test_scales_by_hand(case, prob, want):
    """(qs, vs) = (max(K, 1e-9·max(ub, F)), max(max|v|, 1e-9·p)), each replaced by 1 where it is 0.
    Catches wrong lower bounds (1/big, 1.000000001·big, initial 1 for the maxima), a missing
    `initial` (empty arrays), and the fallback to 1 broken (kept 0, > 1, or 2)."""
    assert scales(prob) == want, case


# ----------------------------------------------------------------------------- highs_lp / solve_exact

def _one_floor_lp(penalty):
    """One track (value −1, ub 1) in the only campaign, whose floor 2 exceeds what it can get: u is 1
    (or 2) in any optimum, so the floor's price equals the penalty the solver sees."""
    one = np.array([0])
    return highs_lp(np.array([-1.0]), np.array([1.0]), one, one, one, 1, 1, 1, 1.0, np.array([1.0]),
                    np.array([1.0]), np.array([2.0]), penalty, "one floor")


@pytest.mark.parametrize("penalty, price", [(HIGHS_TOL / 2, 0.0), (HIGHS_TOL, 0.0), (4 * HIGHS_TOL, 4 * HIGHS_TOL)])
def test_a_penalty_not_above_the_solver_tolerance_is_no_penalty(penalty, price):
    """highs_lp treats a penalty <= HIGHS_TOL (solver units) as 0: the missed floor is then free, its
    price 0 (dual: 0 <= z_c <= p = 0); above it the floor's price is the penalty (u_c basic).
    Catches the threshold dropped or turned into >=."""
    x, prices = _one_floor_lp(penalty)
    assert x.tolist() == [0.0]          # value −1: no plays either way
    assert prices[-1] == pytest.approx(price, rel=1e-6, abs=1e-15)


def test_exact_solves_to_its_tight_tolerance():
    """Two tracks in separate groups, K = 1, values 1 − 5e-8 and 1: the optimum gives the whole capacity
    to the second (objective 1, capacity price 1). HiGHS at its default tolerances (1e-7) stops at the
    other vertex; catches the feasibility/optimality tolerance options being dropped."""
    p = make([1.0 - 5e-8, 1.0], [1.0, 1.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    s = solve_exact(p)
    assert s.x == pytest.approx([0.0, 1.0], abs=1e-12)
    assert s.objective == pytest.approx(1.0, abs=1e-12)
    assert s.capacity_price == pytest.approx(1.0, abs=1e-12)


def test_exact_passes_only_options_highs_knows():
    """linprog warns (OptimizeWarning 'Unrecognized options') about a misnamed option and then ignores
    it; solving must raise no warning at all. Catches misspelled tolerance option names."""
    p = make([1.0, 2.0, -1.0], [1.0, 1.0, 1.0], campaign=[0, 0, 1], floors=[0.0, 0.5], capacity=1.5,
             artist_cap=1.0, licensor_cap=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = solve_exact(p)
    # the optimum (each track alone in its artist and licensor, caps 1): track 1 (value 2) gets its ub 1;
    # the other 0.5 of capacity earns +1 a play on track 0 but then misses campaign 1's floor (−10 a
    # unit), or costs 1 a play on track 2 and meets it: x = (0, 1, 0.5), objective 2 − 0.5 = 1.5
    assert s.x == pytest.approx([0.0, 1.0, 0.5], abs=1e-9) and s.objective == pytest.approx(1.5, abs=1e-9)


def test_all_tracks_ineligible_gives_the_trivial_prices_for_any_penalty():
    """No track has ub > 0: x = 0, u = F, and each positive floor's price is the penalty p exactly as
    the LP's dual (u_c basic), even for a p so small the solver would treat it as no penalty
    (1e-10 / max|v| = 5e-11 < HIGHS_TOL). Catches ineligible tracks sent to HiGHS."""
    p = make([1.0, -2.0], [0.0, 0.0], campaign=[0, 1], floors=[3.0, 0.0], penalty=1e-10)
    s = solve_exact(p)
    assert s.x.tolist() == [0.0, 0.0] and s.shortfall.tolist() == [3.0, 0.0]
    assert s.floor_price[0] == pytest.approx(1e-10, rel=1e-9) and s.floor_price[1] == 0.0
    # track price: max(0, v + z_c) = (1 + 1e-10, 0)
    assert s.track_price == pytest.approx([1.0 + 1e-10, 0.0], rel=1e-12, abs=0)


def test_failure_message_names_the_problem_sizes(monkeypatch):
    """A feasibility tolerance of 10 (module constant) lets HiGHS return a plan that breaks the
    constraints, which linprog refuses (status != 0): solve_exact raises AllocationError whose message
    names n, the eligible count, A, L and C word for word (3 tracks, one of ub 0)."""
    monkeypatch.setattr(exact, "HIGHS_TOL", 10.0)
    p = make([1.0, 2.0, 3.0], [1.0, 1.0, 0.0], artist=[0, 1, 1], licensor=[0, 0, 0], campaign=[0, 1, 0],
             floors=[0.0, 2.0], capacity=1.0, artist_cap=1.0, licensor_cap=1.0)
    with pytest.raises(AllocationError) as e:
        solve_exact(p)
    assert str(e.value).startswith(
        "HiGHS did not solve the allocation LP (n=3 tracks, 2 eligible, A=2, L=1, C=2): status ")


# ----------------------------------------------------------------------------- verify.gap

def _rebuilt(p: Problem, x, shortfall) -> Rebuilt:
    return Rebuilt("XX", "radio", p, np.array(x, float), np.array(shortfall, float), pd.DataFrame(),
                   [f"c{c}" for c in range(p.n_campaigns - 1)])


def test_gap_with_campaigns_that_have_no_track():
    """Campaigns 1 (floor 2) and 2 (the floor-less group) have no track: their plays are 0, so
    u = (1 − 0.5, 2, 0). Published: 1·0.5 − 10·2.5 = −24.5. Optimum: x = 1 (value 1 beats nothing),
    u = (0, 2, 0): 1 − 20 = −19. Catches the per-campaign totals not padded to every campaign."""
    p = make([1.0], [1.0], floors=[1.0, 2.0, 0.0], capacity=1.0, penalty=10.0)
    published, optimum, violations = gap(_rebuilt(p, [0.5], [0.5, 2.0, 0.0]))
    assert published == -24.5 and optimum == pytest.approx(-19.0, rel=1e-9) and violations == []


@pytest.mark.parametrize("published_u, agrees", [
    (1024.0 + 2.0 ** -11, True),   # |diff| 4.9e-4 <= 1e-6 + 1e-6·1024 ≈ 1.03e-3
    (1024.0 + 2.0 ** -7, False),   # |diff| 7.8e-3 > 1.03e-3 (a relative tolerance of 1e-5 would take it)
])
def test_gap_shortfall_agreement_is_relative_1e_6(published_u, agrees):
    """Floor 2048, one track of ub 1024 fully given: u = 1024. The published shortfall must agree with
    it within 1e-6 + 1e-6·|published|. Catches the relative tolerance loosened to numpy's 1e-5."""
    p = make([1.0], [1024.0], floors=[2048.0], capacity=1024.0, penalty=10.0)
    _, _, violations = gap(_rebuilt(p, [1024.0], [published_u]))
    assert (violations == []) is agrees
    if not agrees:
        assert violations == ["published shortfall disagrees with the plan"]


@pytest.mark.parametrize("x, agrees", [
    (1.0 - 2.0 ** -21, True),    # u = 2^-21 ≈ 4.8e-7 <= atol 1e-6 against a published 0
    (1.0 - 2.0 ** -19, False),   # u = 2^-19 ≈ 1.9e-6 > 1e-6
])
def test_gap_shortfall_agreement_near_zero_is_absolute_1e_6(x, agrees):
    """Floor 1 on one track of ub 1, published shortfall 0: the plan's u = 1 − x must be within the
    absolute 1e-6. Catches the absolute tolerance tightened to numpy's 1e-8."""
    p = make([1.0], [1.0], floors=[1.0], capacity=1.0, penalty=10.0)
    _, _, violations = gap(_rebuilt(p, [x], [0.0]))
    assert (violations == []) is agrees
