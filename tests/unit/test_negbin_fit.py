"""Unit tests of `pipelines.scoring.negbin.irls` where its log-scale guard is reached inside
forecast_tracks' domain: a track's row on a surface where it never played (observed from the
track's first play elsewhere, every count 0) has no finite maximum-likelihood level, so the
chained Newton passes of forecast_tracks push its log-mean below the guard's floor."""
from __future__ import annotations

import numpy as np

from pipelines.scoring import negbin


def _silent_rows_after_two_passes(T=28):
    """forecast_tracks' first two passes on 0/1 weights: a Poisson fit (alpha 1e-8, trend prior
    sd 0.1), then an NB fit (alpha 0.5, nearly flat trend prior tau 1e-2) started at it.
    Rows: all zeros on every observed day (its level falls ~1 log-unit a step, as the score of a
    level with no plays is -sum w mu and its information sum w mu); one play on the first
    observed day then silence; a busy control row. Weekday log-offsets as from a surface fit;
    rows 1 and 2 unobserved (w = 0) on their first days."""
    rng = np.random.default_rng(11)
    x = np.arange(T) - (T - 1.0)
    off = np.tile(np.array([0.2, -0.1, 0.0, 0.1, -0.3, 0.15, -0.05])[np.arange(T) % 7], (3, 1))
    w = np.ones((3, T))
    w[1, :9] = 0.0
    w[2, :4] = 0.0
    y = np.zeros((3, T))
    y[1, 9] = 1.0
    y[2] = rng.poisson(20.0, T)
    n = 3
    a, b, *_ = negbin.irls(y, w, off, x, np.full(n, 1e-8), np.zeros(n), np.full(n, 100.0))
    alpha, tau = np.full(n, 0.5), np.full(n, 1e-2)
    out = negbin.irls(y, w, off, x, alpha, np.zeros(n), tau, (a, b))
    return (y, w, off, x, alpha, tau), out


def test_irls_information_and_sandwich_middle_agree_below_the_log_scale_floor():
    """With 0/1 weights J = sum w^2 mu/v (1, x, x^2) is the expected information without the
    prior, so inv (documented: inverse information, prior included) must be exactly
    (J + prior)^-1 -- the sandwich inv (J + prior) inv of `param_cov` is then inv itself.
    Both are taken at the same fitted means, floored at the log-scale guard: here the silent
    row's log-mean is below -30 on every observed day (asserted from a, b), where a guard
    applied at one level for the information and another for mu/J would make the sandwich
    disagree with the information by a factor up to e. Catches a floor of the Newton sums'
    (and information's) clip or of the returned mu's clip moved away from the other."""
    (y, w, off, x, alpha, tau), (a, b, inv, J, mu) = _silent_rows_after_two_passes()
    eta = a[:, None] + b[:, None] * x + off
    assert (eta[0] < -31).all()                        # the guard is reached, in the domain
    assert (eta[2][w[2] > 0] > 2).all()                # the control row stays near its ~20 plays
    full = J.copy()
    full[:, 1, 1] += tau
    # rtol 1e-6: the silent row's information is ill-conditioned (entries 1e-12 next to tau =
    # 1e-2, condition ~1e13), so numpy's LU inverse agrees to ~1e-9 only; a guard mismatch is O(1)
    np.testing.assert_allclose(inv, np.linalg.inv(full), rtol=1e-6)
    np.testing.assert_allclose(negbin.param_cov(inv, J, tau), inv, rtol=1e-6)


# ----------------------------------------------------------------------------- documented rules

ROW_X = np.array([-0.003, -0.002, -0.001, 0.0])
ROW_Y = np.array([[5.0, 6.0, 4.0, 5.0]])


def test_irls_stops_a_row_whose_trend_step_equals_tol():
    """Stopping rule (docstring): a row stops once both parts of its step are at most tol.
    Prior b ~ N(10, 1e-6) far from the start b = 0 on a 4-day row: the trend's Newton step is
    ~10, clipped to the documented 0.5; with tol = 0.5 that step equals tol, and the level's
    step is 0 (start a = log 5 = log of the mean plays, and x ~ 0 so the trend barely moves the
    mean: |da| < 0.01), so the row stops after one step at b = 0.5. Catches a stop only when
    the trend step is strictly below tol (the row would walk on to b = 6 in 12 steps)."""
    out = negbin.irls(ROW_Y, np.ones((1, 4)), np.zeros((1, 4)), ROW_X, np.array([0.1]), np.array([10.0]),
                      np.array([1e6]), start=(np.log([5.0]), np.zeros(1)), tol=0.5)
    assert out[1].tolist() == [0.5]


def test_irls_stops_a_row_whose_level_step_equals_tol():
    """The same rule for the level: from a = -20 (mu = 2e-9 against 5 plays a day) the Newton
    step is huge, clipped to the documented 3; with tol = 3 the row stops after one step at
    a = -17 (the trend step, prior N(0, 1) with b = 0, is below 3: x ~ 0 gives the trend no
    information but the prior's). Catches a stop only when the level step is strictly below
    tol (the row would climb on toward log 5)."""
    out = negbin.irls(ROW_Y, np.ones((1, 4)), np.zeros((1, 4)), ROW_X, np.array([0.1]), np.array([0.0]),
                      np.array([1.0]), start=(np.array([-20.0]), np.zeros(1)), tol=3.0)
    assert out[0].tolist() == [-17.0]


def test_irls_returned_means_are_capped_at_e30():
    """The returned mu is exp of the log-mean clipped to [-30, 30] (docstring). iters=0: no
    step, the fit is the start a = 0, b = -1 on 40 days (x = -39..0), so the log-mean is -x:
    39 on the first day, 0 on the last. Days with -x > 30 (the first 9, unobserved here as
    before a steep decliner's first play) get exactly e^30; the others e^-x. Catches another
    cap (e^31), or none."""
    T = 40
    x = np.arange(T) - (T - 1.0)
    w = np.ones((1, T))
    w[0, :9] = 0.0
    _, _, _, _, mu = negbin.irls(np.zeros((1, T)), w, np.zeros((1, T)), x, np.array([0.5]), np.zeros(1),
                                 np.ones(1), start=(np.zeros(1), np.array([-1.0])), iters=0)
    want = np.exp(np.minimum(-x, 30.0))
    assert want[0] == np.exp(30.0) and want[9] == np.exp(30.0) and want[10] == np.exp(29.0)
    np.testing.assert_array_equal(mu[0], want)


def test_irls_newton_step_uses_the_capped_mean():
    """The steps' means are capped at e^30 too (docstring). One step (iters=1) from a = 30.5,
    b = 0 on 2 days with 1e12 plays each, trend pinned by its prior (tau = 1e12): every day has
    the same mu = e^30 (capped) and v = 1 + alpha mu, so the level's Newton step with the
    expected information is sum w (y - mu)/v / sum w mu/v = y/e^30 - 1 = -0.9064 (the trend
    terms are O(1/tau)); uncapped (e^30.5) it would be y/e^30.5 - 1 = -0.9432. Catches a cap
    at another level inside the steps."""
    x = np.array([-1.0, 0.0])
    y = np.full((1, 2), 1e12)
    a, *_ = negbin.irls(y, np.ones((1, 2)), np.zeros((1, 2)), x, np.array([1e-3]), np.zeros(1),
                        np.array([1e12]), start=(np.array([30.5]), np.zeros(1)), iters=1)
    np.testing.assert_allclose(a, 30.5 + 1e12 / np.exp(30.0) - 1.0, rtol=1e-9)
