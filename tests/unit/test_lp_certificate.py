"""The independent optimality oracle (tests/support/lp_oracle.py) on problems
published in the shape of docs/design.md §5: it certifies what every method publishes,
and it refuses a plan short of the optimum, an infeasible plan and a wrong
capacity shadow price, so the end-to-end tests that rely on it can fail."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.allocation.instances import random_problem
from pipelines.allocation.problem import Problem
from pipelines.allocation import verify as yardstick
from pipelines.allocation.solve import solve
from tests.support import lp_oracle

GAP = 1e-6


def publish(problem: Problem, method: str, sol=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The published columns of one (market, surface), as the pipeline writes them."""
    sol = sol or solve(problem, method=method)
    n = problem.n
    C = problem.n_campaigns
    scores = pd.DataFrame({
        "market": "XX", "surface": "radio", "track_id": [f"t{i:05d}" for i in range(n)],
        "artist_id": [f"a{c:04d}" for c in problem.artist], "licensor_id": [f"l{c:04d}" for c in problem.licensor],
        # the last campaign code is the floor-less group, as in the pipeline
        "campaign_id": [f"c{c:04d}" if c < C - 1 else "nofloor" for c in problem.campaign],
        "value": problem.value, "max_promoted_plays": problem.upper, "planned_promoted_plays": sol.x})
    delivery = pd.DataFrame({"market": "XX", "surface": "radio",
                             "campaign_id": [f"c{c:04d}" for c in range(C - 1)],
                             "floor": problem.floors[:-1], "shortfall": sol.shortfall[:-1]})
    capacity = pd.DataFrame([{"market": "XX", "surface": "radio", "capacity": problem.capacity,
                              "artist_cap": problem.artist_cap, "licensor_cap": problem.licensor_cap,
                              "shortfall_penalty": problem.penalty, "planned_total": float(sol.x.sum()),
                              "shadow_price": sol.capacity_price}])
    return scores, delivery, capacity


def binding_problem(seed: int, n: int = 300) -> Problem:
    p = random_problem(np.random.default_rng(seed), n_tracks=n, n_artists=40, n_licensors=8, n_campaigns=12,
                       binding=True)
    floors = p.floors.copy()
    floors[-1] = 0.0  # the pipeline's last group has no floor
    return Problem(p.value, p.upper, p.artist, p.licensor, p.campaign, floors, p.capacity, p.artist_cap,
                   p.licensor_cap, p.penalty)


@pytest.mark.parametrize("method", ["exact", "dual", "auto"])
@pytest.mark.parametrize("seed", range(3))
def test_every_method_publishes_a_certified_optimum(method, seed):
    (cert,) = lp_oracle.certify(*publish(binding_problem(seed), method))
    assert cert.violations == []
    assert abs(cert.gap) <= GAP, cert
    assert cert.binding == {"capacity", "track", "artist", "licensor", "floor"}


def test_a_plan_short_of_the_optimum_is_refused():
    """Catches an allocation that is feasible but not optimal (e.g. a dual method
    published before it converged): scaling the plan down keeps it feasible."""
    p = binding_problem(0)
    sol = solve(p, "exact")
    sol.x = sol.x * 0.99
    sol.shortfall = np.maximum(0.0, p.floors - np.bincount(p.campaign, weights=sol.x, minlength=p.n_campaigns))
    (cert,) = lp_oracle.certify(*publish(p, "exact", sol))
    assert cert.violations == []
    assert cert.gap > 1e-3, cert


def test_a_wrong_capacity_price_is_refused():
    """Catches a published shadow price that is not the capacity row's dual
    (here: off by 20%, or 0 while the capacity binds)."""
    p = binding_problem(1)
    sol = solve(p, "exact")
    assert sol.capacity_price > 0
    for wrong in (sol.capacity_price * 1.2, sol.capacity_price * 0.8, 0.0):
        s = solve(p, "exact")
        s.capacity_price = wrong
        (cert,) = lp_oracle.certify(*publish(p, "exact", s))
        assert cert.gap > 1e-4, (wrong, cert)


def test_an_infeasible_plan_is_refused():
    p = binding_problem(2)
    sol = solve(p, "exact")
    sol.x = sol.x * 1.05  # over the capacity and the caps
    (cert,) = lp_oracle.certify(*publish(p, "exact", sol))
    assert any(v.startswith("capacity") for v in cert.violations), cert.violations
    assert any("cap exceeded" in v for v in cert.violations)
    assert "planned_total" not in " ".join(cert.violations)


def test_a_shortfall_that_disagrees_with_the_plan_is_refused():
    p = binding_problem(3)
    sol = solve(p, "exact")
    sol.shortfall = sol.shortfall + 1.0
    (cert,) = lp_oracle.certify(*publish(p, "exact", sol))
    assert "published shortfall is not max(0, floor - planned)" in cert.violations


def test_slack_capacity_must_have_a_zero_price():
    """Complementary slackness of the capacity row: ample capacity, price 0."""
    p = binding_problem(4)
    roomy = Problem(p.value, p.upper, p.artist, p.licensor, p.campaign, p.floors, p.upper.sum() * 2,
                    p.upper.sum() * 2, p.upper.sum() * 2, p.penalty)
    sol = solve(roomy, "exact")
    assert sol.capacity_price == 0.0
    (cert,) = lp_oracle.certify(*publish(roomy, "exact", sol))
    assert abs(cert.gap) <= GAP and "capacity" not in cert.binding
    sol.capacity_price = 1e-3 * float(np.abs(p.value).max())
    (cert,) = lp_oracle.certify(*publish(roomy, "exact", sol))
    assert cert.gap > 1e-4


# ------------------------------------------- verify: the yardstick's rebuild ---
def test_rebuild_from_the_published_columns_gives_back_the_problem_and_plan():
    """verify.rebuild reads a (market, surface) back into the LP it was solved as:
    the same values, bounds, groups (codes in sorted id order), floors (plus the
    floor-less group), capacity, caps, penalty and plan; verify.gap finds the plan
    feasible and optimal, and a plan 1% short is 1% below the optimum."""
    p = binding_problem(5)
    scores, delivery, capacity = publish(p, "exact")
    # rows in another order, and a second (market, surface) the rebuild must keep apart
    other = scores.assign(surface="mixes", planned_promoted_plays=0.0)
    (rb, rb_mixes) = sorted(yardstick.rebuild(pd.concat([other, scores.iloc[::-1]]),
                                              pd.concat([delivery, delivery.assign(surface="mixes",
                                                                                   floor=delivery["floor"] + 1.0)]),
                                              pd.concat([capacity, capacity.assign(surface="mixes")])),
                            key=lambda r: r.surface != "radio")
    assert (rb.market, rb.surface, rb_mixes.surface) == ("XX", "radio", "mixes")
    q = rb.problem
    np.testing.assert_array_equal(q.value, p.value)
    np.testing.assert_array_equal(q.upper, p.upper)
    # the same groups, codes renumbered over the ids present
    np.testing.assert_array_equal(q.artist, pd.factorize(p.artist, sort=True)[0])
    np.testing.assert_array_equal(q.licensor, pd.factorize(p.licensor, sort=True)[0])
    np.testing.assert_array_equal(q.campaign, p.campaign)
    np.testing.assert_array_equal(q.floors, p.floors)
    np.testing.assert_array_equal(rb_mixes.problem.floors[:-1], p.floors[:-1] + 1.0)   # each surface its own floors
    assert list(rb.rows.columns) == list(scores.columns)
    assert (q.capacity, q.artist_cap, q.licensor_cap, q.penalty) == (p.capacity, p.artist_cap, p.licensor_cap,
                                                                     p.penalty)
    np.testing.assert_array_equal(rb.x, solve(p, "exact").x)
    assert rb.campaigns == [f"c{c:04d}" for c in range(p.n_campaigns - 1)]
    assert list(rb.rows["track_id"]) == sorted(scores["track_id"])
    published, optimum, violations = yardstick.gap(rb)
    assert violations == [] and published == pytest.approx(optimum, rel=1e-9)
    assert yardstick.relative_gap(published, optimum) <= 1e-9
    # the same plan 1% short: feasible, 1% below the optimum's objective
    short = rb.x * 0.99
    rb.x = short
    rb.shortfall = np.maximum(0.0, p.floors - np.bincount(p.campaign, weights=short, minlength=p.n_campaigns))
    published, optimum, violations = yardstick.gap(rb)
    assert violations == [] and yardstick.relative_gap(published, optimum) > 1e-3
    # a published shortfall that disagrees with the plan is reported
    rb.shortfall = rb.shortfall + 1.0
    assert "published shortfall disagrees with the plan" in yardstick.gap(rb)[2]
    # an infeasible plan is reported
    rb.x = short * 1.1 / 0.99
    rb.shortfall = np.maximum(0.0, p.floors - np.bincount(p.campaign, weights=rb.x, minlength=p.n_campaigns))
    assert any(v.startswith("capacity") for v in yardstick.gap(rb)[2])


def test_relative_gap():
    assert yardstick.relative_gap(99.0, 100.0) == pytest.approx(0.01)
    assert yardstick.relative_gap(101.0, 100.0) == 0.0  # above the optimum: no gap (solver noise)
    assert yardstick.relative_gap(-101.0, -100.0) == pytest.approx(0.01)
    assert yardstick.relative_gap(-1e-12, 0.0) == pytest.approx(1e-3)  # scale floored at 1e-9
