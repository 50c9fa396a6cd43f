"""The repair of the dual method (`dual._repair`) and its building block
`dual._keep_by_priority`, checked against the rules of their docstrings: hand instances
whose repaired plan is derived by hand, an independent loop-per-group oracle, and the
feasibility properties of the repaired plan.

Instances are built with `make` and `dual._dual_setup(p, all tracks, qs=1, vs=1)`, so solver
units are the problem's units; x (the plan to repair) and r (the reduced costs, which set
the priority "best = highest r") are given by hand.
"""
from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.allocation import dual
from tests.unit.test_allocation import make

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 100.0                 # a cap that never binds in the hand instances


def setup(p):
    """The _Dual of p over all its tracks, in the problem's own units (qs = vs = 1)."""
    return dual._dual_setup(p, np.arange(p.n), 1.0, 1.0)


def repair(p, x, r):
    return dual._repair(setup(p), np.asarray(x, float), np.asarray(r, float), p.penalty)


def grouped(order_priority, codes):
    """`order` as _repair builds it: tracks grouped by code, by priority within a group."""
    order_priority = np.asarray(order_priority)
    return order_priority[np.argsort(codes[order_priority], kind="stable")]


# ----------------------------------------------------------------------------- _keep_by_priority

def keep_oracle(amount, order, codes, limit):
    """The docstring, one track at a time: walk `order`; each track keeps what still fits
    in its group's limit (at most its own amount)."""
    out = np.array(amount, float)
    left = {}
    for t in order:
        g = codes[t]
        room = left.get(g, float(limit[g]))
        keep = min(out[t], max(room, 0.0)) if out[t] > 0 else out[t]
        out[t] = keep
        left[g] = room - keep
    return out


def test_keep_by_priority_cuts_the_last_tracks_of_each_group():
    """Two groups, limit 1 each. Group 0 in order t2, t0 (amounts 0.6, 0.7): t2 keeps 0.6,
    t0 the 0.4 left. Group 1 in order t1, t3, t4 (amounts 0.5, 0.5, 0.5): t1 and t3 fit
    exactly, t4 gets 0. Catches a cut not cumulative within each group (e.g. group starts
    misplaced, so every track only checked against the limit on its own)."""
    amount = np.array([0.7, 0.5, 0.6, 0.5, 0.5])
    codes = np.array([0, 1, 0, 1, 1])
    order = np.array([2, 0, 1, 3, 4])
    out = dual._keep_by_priority(amount, order, codes, np.array([1.0, 1.0]))
    np.testing.assert_allclose(out, [0.4, 0.5, 0.6, 0.5, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(amount, [0.7, 0.5, 0.6, 0.5, 0.5])   # input left alone


def test_keep_by_priority_later_group_is_cut_on_its_own_sum():
    """Groups 0 | 1 1 (order 0, 1, 2), amounts 1 each, limits 1: group 1 sums to 2 and must
    lose its second track -> [1, 1, 0]. Catches group starts taken relative to the first
    group only (every track after group 0 treated as the start of its own group)."""
    out = dual._keep_by_priority(np.ones(3), np.arange(3), np.array([0, 1, 1]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(out, [1.0, 1.0, 0.0])


def test_keep_by_priority_cuts_a_single_track():
    """One track with amount 2 in a group of limit 0.5 keeps 0.5 (catches a shortcut that
    returns the amount unchanged when only one track is positive)."""
    out = dual._keep_by_priority(np.array([0.0, 2.0]), np.array([0, 1]), np.array([0, 0]), np.array([0.5]))
    np.testing.assert_allclose(out, [0.0, 0.5])


def test_keep_by_priority_nothing_positive():
    """All amounts 0: nothing to cut, zeros back."""
    out = dual._keep_by_priority(np.zeros(3), np.arange(3), np.zeros(3, np.intp), np.array([1.0]))
    np.testing.assert_array_equal(out, np.zeros(3))


@st.composite
def keep_cases(draw):
    n = draw(st.integers(1, 25))
    G = draw(st.integers(1, 4))
    codes = np.array(draw(st.lists(st.integers(0, G - 1), min_size=n, max_size=n)), dtype=np.intp)
    amount = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.01, 5.0)), min_size=n, max_size=n)))
    limit = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 10.0)), min_size=G, max_size=G)))
    prio = np.array(draw(st.permutations(range(n))), dtype=np.intp)
    return amount, grouped(prio, codes), codes, limit


@PROPS
@given(keep_cases())
def test_keep_by_priority_matches_the_per_track_oracle(case):
    """Random small inputs against the one-track-at-a-time oracle of the docstring; and each
    group's sum is within its limit, every track within [0, its amount]."""
    amount, order, codes, limit = case
    out = dual._keep_by_priority(amount, order, codes, limit)
    np.testing.assert_allclose(out, keep_oracle(amount, order, codes, limit), rtol=1e-12, atol=1e-12)
    assert np.all(out >= 0) and np.all(out <= amount)
    sums = np.bincount(codes, weights=out, minlength=limit.size)
    assert np.all(sums <= np.maximum(limit, 0) + 1e-12)


# ----------------------------------------------------------------------------- _repair: caps

def test_over_cap_artist_loses_its_excess_from_its_lowest_r_tracks():
    """One artist (cap 1) with x = 0.6 on each of 3 tracks; licensors distinct (cap 5),
    K = 10. Best first by r: t0 (0.3), t2 (0.2), t1 (0.1): t0 keeps 0.6, t2 0.4, t1 0.
    The artist is then full, so the r > 0 tracks get nothing more -> [0.6, 0, 0.4].
    Catches the artist cap read from the wrong row (here the licensor's 5) and an
    artist room computed as cap + sum (the over-full plan would then only be scaled down
    proportionally at the end)."""
    p = make([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], artist=[0, 0, 0], capacity=10.0,
             artist_cap=1.0, licensor_cap=5.0)
    x = repair(p, [0.6, 0.6, 0.6], [0.3, 0.1, 0.2])
    np.testing.assert_allclose(x, [0.6, 0.0, 0.4], rtol=1e-12, atol=1e-15)


def test_left_over_artist_room_goes_to_best_r_tracks():
    """One artist (cap 2), distinct licensors (cap 10), K = 10; ub = 1, v = 1 > 0 and
    r = 0.5, 0.3, 0.2 > 0 on all. x = [0.5, 0, 0] is within caps; the room 2 - 0.5 = 1.5 goes
    best first to the wants ub - x = [0.5, 1, 1]: t0 +0.5, t1 +1, t2 nothing -> [1, 1, 0].
    Catches: room counted in tracks instead of plays, additions subtracted, wants of
    ub + x, or no left-over additions at all."""
    p = make([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], artist=[0, 0, 0], capacity=10.0,
             artist_cap=2.0, licensor_cap=10.0)
    x = repair(p, [0.5, 0.0, 0.0], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(x, [1.0, 1.0, 0.0], rtol=1e-12, atol=1e-15)


def test_left_over_licensor_room_goes_to_best_r_tracks():
    """The licensor twin of the previous test: one licensor (cap 2), distinct artists
    (cap 10), K = 10 -> [1, 1, 0]. Also catches the licensor cap read from the wrong row
    (with one licensor the next row is the campaign floor, -0)."""
    p = make([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], licensor=[0, 0, 0], capacity=10.0,
             artist_cap=10.0, licensor_cap=2.0)
    x = repair(p, [0.5, 0.0, 0.0], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(x, [1.0, 1.0, 0.0], rtol=1e-12, atol=1e-15)


def test_plan_within_caps_is_left_alone():
    """One artist (cap 2), two licensors (cap 1), K = 10; x = [1, 1] = ub fills the artist
    and each licensor exactly, r < 0: nothing is over a cap and nothing is to be added, so
    the plan comes back unchanged. Catches the final artist pull-back using another row's
    cap (the licensor's 1 would halve both tracks)."""
    p = make([1.0, 1.0], [1.0, 1.0], artist=[0, 0], licensor=[0, 1], capacity=10.0,
             artist_cap=2.0, licensor_cap=1.0)
    x = repair(p, [1.0, 1.0], [-0.1, -0.2])
    np.testing.assert_array_equal(x, [1.0, 1.0])


# Rounding: cut to a cap of 0.3 with the best tracks at 0.1 and 0.7, the plan is 0.1 + 0.2,
# and in binary floating point 0.1 + 0.2 = 0.30000000000000004 > 0.3. The docstring promises
# an exactly feasible plan, so the final pull-back must bring the sum to <= 0.3.

def _rounding_case(kind):
    caps = dict(capacity=BIG, artist_cap=BIG, licensor_cap=BIG)
    caps[{"a": "artist_cap", "l": "licensor_cap", "0": "capacity"}[kind]] = 0.3
    same = np.zeros(3, int)
    p = make([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], artist=same if kind == "a" else None,
             licensor=same if kind == "l" else None, **caps)
    return repair(p, [0.1, 0.7, 0.2], [-0.1, -0.2, -0.3])


def test_rounding_over_the_artist_cap_is_pulled_back():
    """Artist cap 0.3 -> plan ~[0.1, 0.2, 0] whose artist sum is <= 0.3 exactly.
    Catches a missing or inverted (divide instead of multiply) final pull-back."""
    x = _rounding_case("a")
    np.testing.assert_allclose(x, [0.1, 0.2, 0.0], rtol=1e-12, atol=1e-15)
    assert np.bincount(np.zeros(3, int), weights=x)[0] <= 0.3


def test_rounding_over_the_licensor_cap_is_pulled_back():
    """Licensor cap 0.3 -> plan ~[0.1, 0.2, 0] whose licensor sum is <= 0.3 exactly."""
    x = _rounding_case("l")
    np.testing.assert_allclose(x, [0.1, 0.2, 0.0], rtol=1e-12, atol=1e-15)
    assert np.bincount(np.zeros(3, int), weights=x)[0] <= 0.3


def test_rounding_over_the_capacity_is_pulled_back():
    """Capacity 0.3 -> plan ~[0.1, 0.2, 0] with sum <= 0.3 exactly (the pull-back scales
    by K / total, so the plan stays ~[0.1, 0.2, 0]: catches K * total or dividing)."""
    x = _rounding_case("0")
    np.testing.assert_allclose(x, [0.1, 0.2, 0.0], rtol=1e-12, atol=1e-15)
    assert x.sum() <= 0.3


def test_group_without_plays_does_not_divide_by_zero():
    """Artist 1 and licensor 1 have no plays (their track has x = 0, r < 0); the final
    pull-back guards its division by a group's total, so no RuntimeWarning (divide by
    zero) may escape, and the plan [0.5, 0] is within every cap and kept as it is."""
    p = make([1.0, 1.0], [1.0, 1.0], artist=[0, 1], licensor=[0, 1], capacity=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = repair(p, [0.5, 0.0], [-0.1, -0.2])
    np.testing.assert_array_equal(x, [0.5, 0.0])


# ----------------------------------------------------------------------------- _repair: floors

def test_floor_topped_up_on_best_tracks_worth_p_plus_v():
    """Caps never bind (distinct artists and licensors, caps 100); p = 1.
    Campaign 0 (floor 1.5): t4 (r 0, v -1: p + v = 0, not worth it), t0 (r -0.1, v -0.5,
    x 0.5), t1 (r -0.2, v -0.2), t2 (r -0.3, v -0.1); campaign 1 (floor 0): t3 (v -0.1).
    Deficit of campaign 0 = 1.5 - 0.5 = 1, topped up best first on the worthwhile tracks
    with room: t0 +0.5 (to its ub 1), t1 +0.5; t2 nothing; t4 nothing (p + v = 0); t3
    nothing (its campaign has no deficit). No r > 0 & v > 0 track -> [1, 0.5, 0, 0, 0].
    Catches: deficit = floor + sum or counted in tracks, a deficit floored at 1 (t3 would get
    1), thresholds deficit > 1 or p + v > 1 (no top-up), p + v >= 0 (t4 first), wants of
    ub + x (t0's 1.5 would use up the deficit) or 1 on unworthy tracks, and no top-up."""
    p = make([-0.5, -0.2, -0.1, -0.1, -1.0], np.ones(5), campaign=[0, 0, 0, 1, 0],
             floors=[1.5, 0.0], capacity=BIG, artist_cap=BIG, licensor_cap=BIG, penalty=1.0)
    x = repair(p, [0.5, 0, 0, 0, 0], [-0.1, -0.2, -0.3, -0.5, 0.0])
    np.testing.assert_allclose(x, [1.0, 0.5, 0.0, 0.0, 0.0], rtol=1e-12, atol=1e-15)


def test_left_over_room_only_to_positive_r_and_positive_v():
    """Caps never bind, no floors. Only t0 (r 0.5, v 0.5) has r > 0 and v > 0 and is filled
    to ub; t1 (r 0, v 0.5), t2 (r 0.2, v 0), t3 (r -0.1, v 0.3), t4 (r 0.3, v -0.2) stay at 0
    -> [1, 0, 0, 0, 0]. Catches r >= 0, v >= 0, 'or' for 'and', and thresholds of 1."""
    p = make([0.5, 0.5, 0.0, 0.3, -0.2], np.ones(5), capacity=BIG, artist_cap=BIG,
             licensor_cap=BIG, penalty=1.0)
    x = repair(p, np.zeros(5), [0.5, 0.0, 0.2, -0.1, 0.3])
    np.testing.assert_array_equal(x, [1.0, 0.0, 0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- _repair: oracle

def repair_oracle(v, ub, ja, jl, K, acap, lcap, x, r):
    """The docstring's rules without floors, one track at a time: clip to [0, ub]; for the
    artists, the licensors, then the capacity, walk each group best r first and keep what
    fits; then the tracks with r > 0 and v > 0 want ub - x, cut the same way (best first)
    to the room left in their artist, licensor and the capacity; add what is left."""
    n = len(v)
    rank = sorted(range(n), key=lambda t: (-r[t], t))
    groups = (ja, jl, np.zeros(n, int))
    caps = (acap, lcap, K)

    def cut(amount, rooms):
        amount = amount.copy()
        for codes, room in zip(groups, rooms):
            left = dict(room)
            for t in rank:
                take = min(amount[t], max(left[codes[t]], 0.0))
                amount[t] = take
                left[codes[t]] -= take
        return amount

    x = np.minimum(np.maximum(x, 0.0), ub)
    full = [{g: c for g in set(codes)} for codes, c in zip(groups, caps)]
    x = cut(x, full)
    rooms = [{g: c - sum(x[t] for t in range(n) if codes[t] == g) for g in set(codes)}
             for codes, c in zip(groups, caps)]
    want = np.where((r > 0) & (v > 0), ub - x, 0.0)
    return x + cut(want, rooms)


def test_repair_matches_the_oracle_on_random_instances():
    """40-track instances in 2-3 artists and licensors with distinct r, binding caps and
    no floors: the repaired plan equals the one-track-at-a-time oracle. With many tracks
    per group the cut must follow r within each group (catches a grouping sort that is
    not stable, which scrambles the priority inside a group)."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = 40
        v = rng.uniform(-0.5, 1.0, n)
        ub = rng.uniform(0.1, 1.0, n)
        ja, jl = rng.integers(0, 3, n), rng.integers(0, 2, n)
        K = float(rng.uniform(3.0, 12.0))
        acap, lcap = K * float(rng.uniform(0.2, 0.6)), K * float(rng.uniform(0.3, 0.8))
        p = make(v, ub, artist=ja, licensor=jl, capacity=K, artist_cap=acap, licensor_cap=lcap)
        x = rng.uniform(-0.2, 1.2, n) * ub
        r = rng.uniform(-1.0, 1.0, n)
        got = repair(p, x, r)
        np.testing.assert_allclose(got, repair_oracle(v, ub, ja, jl, K, acap, lcap, x, r),
                                   rtol=1e-9, atol=1e-12)


@PROPS
@given(st.integers(0, 2**32 - 1))
def test_repaired_plan_is_feasible(seed):
    """Random instances with floors: the plan is within [0, ub], within every cap (up to
    1e-12 relative: the pull-back is a float multiplication)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    A, L, C = (int(rng.integers(1, 4)) for _ in range(3))
    v = rng.uniform(-1.0, 1.0, n)
    ub = rng.uniform(0.1, 2.0, n)
    ja, jl, jc = rng.integers(0, A, n), rng.integers(0, L, n), rng.integers(0, C, n)
    K = float(rng.uniform(0.5, 10.0))
    p = make(v, ub, artist=ja, licensor=jl, campaign=jc, floors=rng.uniform(0.0, 3.0, C),
             capacity=K, artist_cap=K * float(rng.uniform(0.1, 1.0)),
             licensor_cap=K * float(rng.uniform(0.1, 1.0)), penalty=float(rng.uniform(0.0, 2.0)))
    d = setup(p)
    x = dual._repair(d, rng.uniform(-0.5, 1.5, n) * ub, rng.uniform(-1.0, 1.0, n), p.penalty)
    tol = 1e-12
    assert np.all(x >= 0) and np.all(x <= ub)
    assert x.sum() <= K * (1 + tol)
    a_tot = np.bincount(d.ja, weights=x, minlength=d.A)
    l_tot = np.bincount(d.jl, weights=x, minlength=d.L)
    assert np.all(a_tot <= p.artist_cap * (1 + tol))
    assert np.all(l_tot <= p.licensor_cap * (1 + tol))


def test_ties_in_r_are_broken_by_track_order():
    """Tracks of equal reduced cost are taken in track order, so the plan is the same on
    every machine (numpy's default sort orders ties by an implementation detail, which
    differs between its sorting kernels). 40 tracks of one artist, each x = 1 (= ub): the
    odd ones r = 0.9, the even ones r = 0.5; artist cap 25.5: the 20 odd tracks keep 1,
    then the even ones in track order: 0, 2, 4, 6, 8 keep 1, track 10 keeps 0.5, the rest 0.
    Catches the best-first sort of r made unstable."""
    n = 40
    p = make([1.0] * n, [1.0] * n, artist=[0] * n, capacity=100.0, artist_cap=25.5, licensor_cap=100.0)
    r = np.where(np.arange(n) % 2 == 1, 0.9, 0.5)
    x = repair(p, np.ones(n), r)
    want = np.where(r == 0.9, 1.0, 0.0)
    want[[0, 2, 4, 6, 8]] = 1.0
    want[10] = 0.5
    np.testing.assert_array_equal(x, want)
