"""Unit tests of `pipelines.scoring.negbin`: the penalised NB regression (IRLS), its sandwich
covariance, the per-group overdispersion, the empirical-Bayes trend prior and the NB interval
endpoints, each checked against an independent oracle (scipy optimisation of the likelihood
written here, scipy.stats.nbinom, hand derivations on tiny inputs) or planted truth."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from pipelines.scoring import negbin


# ------------------------------------------------------------------ oracles ---
def _nll(theta, y, w, off, x, alpha, b0, tau):
    """Negative penalised NB log-likelihood of one row (log link), its gradient and its
    observed Hessian, written from the NB pmf: log p(y) = y log(alpha mu) - (y + 1/alpha)
    log(1 + alpha mu) + terms free of mu; prior b ~ N(b0, 1/tau)."""
    a, b = theta
    eta = a + b * x + off
    mu = np.exp(eta)
    ll = np.sum(w * (y * eta - (y + 1.0 / alpha) * np.log1p(alpha * mu)))
    s = w * (y - mu) / (1.0 + alpha * mu)                       # d ll / d eta
    h = w * mu * (1.0 + alpha * y) / (1.0 + alpha * mu) ** 2    # - d2 ll / d eta2 (observed)
    grad = -np.array([s.sum(), (s * x).sum()]) + np.array([0.0, tau * (b - b0)])
    hess = np.array([[h.sum(), (h * x).sum()], [(h * x).sum(), (h * x * x).sum() + tau]])
    return -ll + 0.5 * tau * (b - b0) ** 2, grad, hess


def _oracle_fit(y, w, off, x, alpha, b0, tau):
    """(a, b) maximising the penalised likelihood of each row, by scipy's trust-region Newton."""
    out = []
    for i in range(y.shape[0]):
        args = (y[i], w[i], off[i], x, alpha[i], b0[i], tau[i])
        start = np.array([np.log(max((w[i] * y[i]).sum(), 1e-3) / (w[i] * np.exp(off[i])).sum()), b0[i]])
        res = optimize.minimize(lambda t: _nll(t, *args)[0], start, jac=lambda t: _nll(t, *args)[1],
                                hess=lambda t: _nll(t, *args)[2], method="trust-exact",
                                options={"gtol": 1e-11})
        out.append(res.x)
    return np.array(out).T


def _expected_info(a, b, w, off, x, alpha, power=1):
    """sum w^power mu/(1 + alpha mu) (1 x; x x^2) per row, as (N, 2, 2), and mu."""
    mu = np.exp(a[:, None] + b[:, None] * x + off)
    q = w ** power * mu / (1.0 + alpha[:, None] * mu)
    m = np.empty((len(a), 2, 2))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 1] = q.sum(1), (q * x).sum(1), (q * x * x).sum(1)
    m[:, 1, 0] = m[:, 0, 1]
    return m, mu


def _world(seed=3, N=6, T=28):
    """Rows simulated from planted NB coefficients, shaped like forecast_tracks' call: x = day
    offsets ending at 0, weekday offsets, decay weights with unobserved (w = 0) leading days."""
    rng = np.random.default_rng(seed)
    x = np.arange(T) - (T - 1.0)
    off = np.tile(rng.normal(0, 0.3, 7)[np.arange(T) % 7], (N, 1))
    w = np.tile(0.5 ** ((T - 1 - np.arange(T)) / 10.0), (N, 1))
    for i in range(N):
        w[i, : 2 * i] = 0.0                                    # row i unobserved on its first 2i days
    a_true = rng.uniform(0.0, 4.0, N)
    b_true = rng.uniform(-0.05, 0.05, N)
    alpha = rng.uniform(0.02, 1.0, N)
    mu = np.exp(a_true[:, None] + b_true[:, None] * x + off)
    y = rng.negative_binomial(1.0 / alpha[:, None], 1.0 / (1.0 + alpha[:, None] * mu)).astype(float)
    b0 = rng.normal(0, 0.02, N)
    tau = rng.choice([1e-2, 1.0, 100.0, 1e4], N)
    return y, w, off, x, alpha, b0, tau


def _fisher_step(y, w, off, x, alpha, b0, tau, a, b):
    """One Fisher-scoring step of the penalised fit at (a, b): (I + prior)^-1 (score - prior
    gradient), solved with numpy.linalg.solve (not the code's adjugate formula)."""
    info, mu = _expected_info(a, b, w, off, x, alpha)
    info[:, 1, 1] += tau
    s = w * (y - mu) / (1.0 + alpha[:, None] * mu)
    g = np.stack([s.sum(1), (s * x).sum(1) - tau * (b - b0)], -1)
    return np.linalg.solve(info, g[..., None])[..., 0]


# --------------------------------------------------------------------- irls ---
def test_irls_is_the_penalised_nb_maximum_likelihood():
    """Converged fit = the penalised NB MLE found by scipy on the likelihood written above,
    for rows with various dispersions, prior strengths, weekday offsets and unobserved days.
    Tight (tol 1e-12): 1e-7; at the defaults each row stops once its step is below 1e-4 log
    plays, so it is within 1e-4 of the optimum. Catches a wrong score/information (a step that
    does not vanish at the optimum or a damped step that stalls under the iteration cap)."""
    y, w, off, x, alpha, b0, tau = _world()
    ao, bo = _oracle_fit(y, w, off, x, alpha, b0, tau)
    a, b, *_ = negbin.irls(y, w, off, x, alpha, b0, tau, iters=200, tol=1e-12)
    np.testing.assert_allclose(a, ao, atol=1e-7)
    np.testing.assert_allclose(b, bo, atol=1e-7)
    a, b, *_ = negbin.irls(y, w, off, x, alpha, b0, tau)
    np.testing.assert_allclose(a, ao, atol=1e-4)
    np.testing.assert_allclose(b, bo, atol=1e-4)


def test_irls_returns_information_sandwich_middle_and_mu_at_its_fit():
    """inv = (expected information + prior)^-1, J = sum w^2 mu/v (1, x, x^2), mu = exp(a + b x
    + off), all at the returned (a, b): each recomputed here from the docstring's formulas
    (inverse by numpy.linalg.inv). Catches sign/axis slips in the 2x2 inverse, a wrong
    variance in J and a wrong offset sign in mu."""
    y, w, off, x, alpha, b0, tau = _world(seed=5)
    a, b, inv, J, mu = negbin.irls(y, w, off, x, alpha, b0, tau)
    info, mu_ref = _expected_info(a, b, w, off, x, alpha)
    info[:, 1, 1] += tau
    np.testing.assert_allclose(inv, np.linalg.inv(info), rtol=1e-9)
    J_ref, _ = _expected_info(a, b, w, off, x, alpha, power=2)
    np.testing.assert_allclose(J, J_ref, rtol=1e-12)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)


def test_irls_without_steps_returns_its_start():
    """iters=0 takes no step: without `start` the fit begins at the flat-row weighted Poisson
    level a = log(sum w y / sum w e^off) (the closed-form MLE of a with b = 0), b = b0; with
    `start`, at the given values (copied: the caller's arrays are not modified). Rows differ in
    total and offsets, and the third has sum w y = 0.5 < 1 plays. Catches a start pooled over
    rows, e^-off for e^off, a product for the ratio, a floor that lifts a small total."""
    T = 5
    x = np.arange(T) - (T - 1.0)
    y = np.array([[1.0, 0, 2, 3, 4], [10, 0, 0, 5, 5], [0, 0, 0, 0, 1]])
    w = np.array([[1.0, 1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8, 1.0], [0.5, 0.5, 0.5, 0.5, 0.5]])
    off = np.array([[0.0] * 5, [-2.0, -2, -1, -1, 0], [-3.0] * 5])
    alpha, b0, tau = np.array([0.1, 0.5, 1e-8]), np.array([0.0, 0.02, -0.01]), np.ones(3)
    a, b, inv, J, mu = negbin.irls(y, w, off, x, alpha, b0, tau, iters=0)
    # row 0: sum w y = 10, sum w e^0 = 5; row 2: sum w y = 0.5, sum w e^-3 = 2.5 e^-3
    ew1 = 0.2 * np.exp(-2) + 0.4 * np.exp(-2) + 0.6 * np.exp(-1) + 0.8 * np.exp(-1) + 1.0
    np.testing.assert_allclose(a, [np.log(2.0), np.log((2 + 4 + 5) / ew1), np.log(0.2) + 3.0], rtol=1e-12)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_allclose(mu, np.exp(a[:, None] + b[:, None] * x + off), rtol=1e-12)
    start = (np.array([0.5, 1.0, -1.0]), np.array([0.1, 0.0, -0.1]))
    keep = (start[0].copy(), start[1].copy())
    a, b, *_ = negbin.irls(y, w, off, x, alpha, b0, tau, start=start, iters=0)
    np.testing.assert_array_equal(a, keep[0])
    np.testing.assert_array_equal(b, keep[1])
    a[:] = 99.0
    np.testing.assert_array_equal(start[0], keep[0])


def test_irls_one_step_is_the_clipped_fisher_scoring_step():
    """iters=1 from a given start = start + the Fisher-scoring step (solved here with
    numpy.linalg.solve), clipped to the trust region |da| <= 3, |db| <= 0.5. The rows start far
    enough off that the step is clipped below, above, or not at all (asserted on the oracle's
    raw step). Catches a wrong determinant, a wrong weight 1/(1 + alpha mu) and each clip
    bound."""
    T = 6
    x = np.arange(T) - (T - 1.0)
    y = np.array([[3.0, 4, 2, 5, 3, 4], [0, 0, 1, 0, 0, 0], [50.0, 40, 30, 20, 10, 5],
                  [1.0, 2, 4, 8, 16, 32], [2.0, 3, 2, 3, 2, 3], [6.0, 1, 0, 9, 2, 4]])
    n = len(y)
    w = np.tile(0.8 ** (T - 1 - np.arange(T)), (n, 1))
    off = np.tile(np.array([0.1, -0.2, 0.0, 0.3, -0.1, 0.0]), (n, 1))
    alpha = np.array([0.3, 1.0, 0.05, 0.2, 1e-8, 2.0])
    b0 = np.array([0.0, 0.0, 0.0, 2.0, -2.0, 0.0])
    tau = np.array([1.0, 0.1, 10.0, 1e3, 1e3, 5.0])
    sa = np.array([1.2, 4.0, -3.0, 0.0, 1.0, 0.5])
    sb = np.array([0.0, -0.3, 0.2, 0.0, 0.0, 0.05])
    step = _fisher_step(y, w, off, x, alpha, b0, tau, sa, sb)
    assert (step[:, 0] < -3).any() and (step[:, 0] > 3).any() and (np.abs(step[:, 0]) < 3).any()
    assert (step[:, 1] < -0.5).any() and (step[:, 1] > 0.5).any() and (np.abs(step[:, 1]) < 0.5).any()
    a, b, *_ = negbin.irls(y, w, off, x, alpha, b0, tau, start=(sa, sb), iters=1)
    np.testing.assert_allclose(a, sa + np.clip(step[:, 0], -3, 3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, sb + np.clip(step[:, 1], -0.5, 0.5), rtol=1e-10, atol=1e-12)


def test_irls_caps_each_row_at_iters_steps_and_lets_the_others_stop():
    """A row whose strong prior (b0 = 10, tau = 1e6) pulls its trend far from the start moves
    by the trust region's 0.5 a step, every step (its raw step stays above 4), so after the
    default 12 steps b = 6 exactly, after iters=3, 1.5. A quick row alongside converges
    on its own: its fit equals that of the row fitted alone. Catches a different default
    cap, a wider trend step, rows that stop together or restart."""
    x = np.array([-0.003, -0.002, -0.001, 0.0])         # tiny x: eta stays near a whatever b is
    y = np.array([[5.0, 6, 4, 5], [2.0, 3, 1, 2]])
    w, off = np.ones((2, 4)), np.zeros((2, 4))
    alpha, b0, tau = np.array([0.1, 0.1]), np.array([10.0, 0.0]), np.array([1e6, 1.0])
    start = (np.log([5.0, 2.0]), np.zeros(2))
    a, b, *_ = negbin.irls(y, w, off, x, alpha, b0, tau, start=start)
    assert b[0] == pytest.approx(6.0, abs=1e-12)
    _, b3, *_ = negbin.irls(y, w, off, x, alpha, b0, tau, start=start, iters=3)
    assert b3[0] == pytest.approx(1.5, abs=1e-12)
    a1, b1, *_ = negbin.irls(y[1:], w[1:], off[1:], x, alpha[1:], b0[1:], tau[1:], start=(start[0][1:], start[1][1:]))
    assert (a[1], b[1]) == (a1[0], b1[0])
    # mirrored: a trend pulled downwards moves by -0.5 a step
    _, bm, *_ = negbin.irls(y, w, off, x, alpha, -b0, tau, start=start)
    assert bm[0] == pytest.approx(-6.0, abs=1e-12)


def test_irls_takes_integer_day_offsets_as_floats():
    """x given as narrow integers (int8 days -19..0) fits exactly as the same days as floats:
    x is converted before x^2 is formed (int8 would wrap 19^2 = 361). Catches a missing float
    conversion."""
    y, w, off, _, alpha, b0, tau = _world(seed=7, N=3, T=20)
    xi = np.arange(-19, 1, dtype=np.int8)
    ref = negbin.irls(y, w, off, xi.astype(float), alpha, b0, tau)
    got = negbin.irls(y, w, off, xi, alpha, b0, tau)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


def test_irls_log_scale_guard_keeps_outputs_finite_and_mu_positive():
    """Started (or wandering) far outside the data, eta is kept inside a finite range before
    exp: every output stays finite and mu strictly positive (log link), instead of overflowing
    to inf/nan (eta = 800) or underflowing to mu = 0 (eta = -800)."""
    T = 5
    x = np.arange(T) - (T - 1.0)
    y = np.array([[3.0, 2, 4, 3, 5], [3.0, 2, 4, 3, 5]])
    w, off = np.ones((2, T)), np.zeros((2, T))
    alpha, b0, tau = np.array([0.2, 0.2]), np.zeros(2), np.ones(2)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = negbin.irls(y, w, off, x, alpha, b0, tau, start=(np.array([800.0, -800.0]), np.zeros(2)))
    for arr in out:
        assert np.isfinite(arr).all()
    assert (out[4] > 0).all()


def test_irls_edge_rows():
    """Edge rows, each with a derivable answer:
    - days of zero weight do not count: changing their counts changes nothing;
    - a single observed day with a pinned trend: mu on that day = its count;
    - x constant (c) on every day, no offsets: a and b are only tied through a + b c, so the
      prior alone sets b = b0, and the common mean is then the sample mean (the score
      sum (y - mu)/(1 + alpha mu) vanishes at mu = mean y): a = log(mean y) - b0 c;
    - an all-zero row: its level falls (mu far below any count) and everything stays finite."""
    T = 6
    x = np.arange(T) - (T - 1.0)
    y = np.array([[4.0, 6, 5, 3, 7, 5]])
    w = np.array([[0.0, 0.0, 1, 1, 1, 1]])
    off = np.zeros((1, T))
    one = np.ones(1)
    ref = negbin.irls(y, w, off, x, 0.3 * one, 0 * one, one)
    y2 = y.copy()
    y2[0, :2] = [400.0, 0.0]
    got = negbin.irls(y2, w, off, x, 0.3 * one, 0 * one, one)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)

    w1 = np.zeros((1, T))
    w1[0, 3] = 1.0
    a, b, _, _, mu = negbin.irls(y, w1, off, x, 0.3 * one, 0.0 * one, 1e8 * one, iters=50, tol=1e-12)
    assert mu[0, 3] == pytest.approx(3.0, rel=1e-6)

    xc = np.full(T, -2.0)
    wc = np.ones((1, T))
    a, b, *_ = negbin.irls(y, wc, off, xc, 0.3 * one, 0.04 * one, 1e-2 * one, iters=100, tol=1e-12)
    assert b[0] == pytest.approx(0.04, abs=1e-8)
    assert a[0] == pytest.approx(np.log(5.0) + 0.08, abs=1e-8)

    a, b, inv, J, mu = negbin.irls(np.zeros((1, T)), wc, off, x, 0.3 * one, 0 * one, one)
    assert (mu < 1e-6).all()
    for arr in (a, b, inv, J, mu):
        assert np.isfinite(arr).all()


# ---------------------------------------------------------------- param_cov ---
def test_param_cov_by_hand():
    """I^-1 (J + prior) I^-1 with the prior tau on the trend's diagonal only:
    inv = [[2, 1], [1, 3]], J + prior = [[1, .5], [.5, 2 + 4]];
    inv (J + P) = [[2.5, 7], [2.5, 18.5]]; times inv = [[12, 23.5], [23.5, 58]].
    J itself is left unchanged. Catches the prior replacing or subtracted from J[1, 1]."""
    inv = np.array([[[2.0, 1.0], [1.0, 3.0]]])
    J = np.array([[[1.0, 0.5], [0.5, 2.0]]])
    got = negbin.param_cov(inv, J, np.array([4.0]))
    np.testing.assert_allclose(got, [[[12.0, 23.5], [23.5, 58.0]]], rtol=1e-14)
    np.testing.assert_array_equal(J, [[[1.0, 0.5], [0.5, 2.0]]])


def test_param_cov_is_the_inverse_information_for_unit_weights():
    """With weights 0/1, w^2 = w so J is the information without the prior and the sandwich
    collapses to I^-1 (I) I^-1 = I^-1 (the docstring's reason for the sandwich is w != w^2)."""
    y, w, off, x, alpha, b0, tau = _world(seed=9)
    w = (w > 0).astype(float)
    _, _, inv, J, _ = negbin.irls(y, w, off, x, alpha, b0, tau)
    np.testing.assert_allclose(negbin.param_cov(inv, J, tau), inv, rtol=1e-8)


# ----------------------------------------------------------- alpha_by_group ---
def _pearson_pass(y, mu, w, alpha):
    """One pass of the moment estimate, without leverage: the mean of the unbiased per-day
    values e = ((y - mu)^2 - mu) / mu^2 (E e = alpha for Var = mu + alpha mu^2), weighted by
    w mu^2 / v^2, v = 1 + alpha mu at the previous alpha."""
    e = ((y - mu) ** 2 - mu) / mu ** 2
    om = w * mu ** 2 / (1.0 + alpha * mu) ** 2
    return np.sum(om * e) / np.sum(om)


def test_alpha_by_group_solves_its_moment_equation_by_hand():
    """One row, two days, no leverage (inv = 0: E r^2 = V = mu + alpha mu^2): mu = (1, 4),
    y = (3, 0). One pass from alpha0 = 1 weights w/v^2 = (1/4, 1/25): alpha1 = (3/4 + 12/25) /
    (1/4 + 16/25) = 1.23/0.89; a second pass reweights at alpha1. Left to run, the passes stop
    at the root of sum w/v^2 (r^2 - mu - alpha mu^2) = 0 (scipy's brentq on that function
    written here), from any start. Catches a different weight, a pass count that stops early
    and a start that stays in the answer."""
    y, mu, w = np.array([[3.0, 0.0]]), np.array([[1.0, 4.0]]), np.ones((1, 2))
    args = (y, w, mu, np.array([-1.0, 0.0]), np.zeros((1, 2, 2)), np.array([-1]), np.array([0]), 1)
    a1 = _pearson_pass(y, mu, w, 1.0)
    assert a1 == pytest.approx(1.23 / 0.89, rel=1e-12)
    assert negbin.alpha_by_group(*args, 1.0, 1e-3, iters=1)[0] == pytest.approx(a1, rel=1e-12)
    a2 = _pearson_pass(y, mu, w, a1)
    assert negbin.alpha_by_group(*args, 1.0, 1e-3, iters=2)[0] == pytest.approx(a2, rel=1e-12)

    def g(al):
        return np.sum(w / (1 + al * mu) ** 2 * ((y - mu) ** 2 - mu - al * mu ** 2))

    root = optimize.brentq(g, 0.5, 3.0, xtol=1e-14)
    assert abs(a2 - root) > 1e-3                      # two passes are not there yet
    for start in (0.05, 1.0, 5.0):
        assert negbin.alpha_by_group(*args, start, 1e-3)[0] == pytest.approx(root, abs=1e-5)
        assert negbin.alpha_by_group(*args, start, 1e-3, tol=1e-13)[0] == pytest.approx(root, abs=1e-11)


def test_alpha_by_group_stops_a_group_once_alpha_moves_by_at_most_tol():
    """Docstring: passes repeat until a group's alpha moves by at most tol, at most `iters`
    (50) of them. The passes are read off the function itself (tol = -1: nothing ever stops,
    so iters=k runs exactly k). With tol set to exactly the move of pass 3, it stops there
    (a move equal to tol stops); a little below, it runs pass 4. A slow row (y = (5, 1),
    mu = (28, 0.15): still moving 1.8e-5 a pass at 50) runs exactly 50 passes by default.
    Catches a stop on a strict inequality, a group that never stops, and another cap."""
    args = (np.array([[3.0, 0.0]]), np.ones((1, 2)), np.array([[1.0, 4.0]]), np.array([-1.0, 0.0]),
            np.zeros((1, 2, 2)), np.array([-1]), np.array([0]), 1, 1.0, 1e-3)
    a = [negbin.alpha_by_group(*args, iters=k, tol=-1.0)[0] for k in range(1, 6)]
    move3 = abs(a[2] - a[1])
    assert move3 > 0 and abs(a[3] - a[2]) > 0
    assert negbin.alpha_by_group(*args, tol=move3)[0] == a[2]
    assert negbin.alpha_by_group(*args, tol=np.nextafter(move3, 0))[0] == a[3]
    slow = (np.array([[5.0, 1.0]]), np.ones((1, 2)), np.array([[28.0, 0.15]]), np.array([-1.0, 0.0]),
            np.zeros((1, 2, 2)), np.array([-1]), np.array([0]), 1, 0.05, 1e-3)
    a50, a51 = (negbin.alpha_by_group(*slow, iters=k, tol=-1.0)[0] for k in (50, 51))
    assert abs(a51 - a50) > 1e-6
    assert negbin.alpha_by_group(*slow, tol=-1.0)[0] == a50


def test_alpha_by_group_days_left_out_groups_and_floors():
    """Per group, only observed days (w > 0) count, and each row's corrected first day is left
    out (`first` is its column, 0 included; -1 for none). A group with no usable day keeps
    alpha0; an estimate below min_alpha is floored. Expected values by the one-pass formula
    (iters=1, inv = 0) on the days that should count, computed here on those days alone."""
    mu = np.array([[2.0, 3.0, 1.0, 5.0], [4.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    y = np.array([[9.0, 0.0, 4.0, 1.0], [0.0, 3.0, 6.0, 0.0], [1.0, 2.0, 0.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    w = np.array([[0.5, 0.7, 0.9, 1.0], [0.0, 0.6, 0.8, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    first = np.array([0, 2, -1, -1])
    group = np.array([1, 1, 2, 3])          # groups 0 and 4 have no row, group 2 no observed day
    x = np.arange(4) - 3.0
    alpha0, min_alpha = 0.3, 0.01
    got = negbin.alpha_by_group(y, w, mu, x, np.zeros((4, 2, 2)), first, group, 5, alpha0, min_alpha, iters=1)
    # group 1 counts row 0 days 1..3 (day 0 is its first) and row 1 days 1, 3 (day 0 unobserved, day 2 first)
    keep_y = np.array([0.0, 4.0, 1.0, 3.0, 0.0])
    keep_mu = np.array([3.0, 1.0, 5.0, 1.0, 2.0])
    keep_w = np.array([0.7, 0.9, 1.0, 0.6, 1.0])
    expect1 = _pearson_pass(keep_y, keep_mu, keep_w, alpha0)
    assert expect1 > min_alpha
    # group 3: y = mu on every day: e = -1/mu < 0 -> floored
    np.testing.assert_allclose(got, [alpha0, expect1, alpha0, min_alpha, alpha0], rtol=1e-12)


def _expected_r2_dense(mu, w, x, inv, V):
    """E r^2 per day of one row, written with the whole T x T sensitivity of the fit: to first
    order r = (I - A) (y - mu), A_ts = mu_t f_t' inv f_s w_s, f_t = (1, x_t), so
    E r^2 = diag((I - A) diag(V) (I - A)')."""
    f = np.stack([np.ones_like(x), x], 1)
    A = mu[:, None] * (f @ inv @ f.T) * w[None, :]
    B = np.eye(len(x)) - A
    return np.diag(B @ np.diag(V) @ B.T)


def test_alpha_by_group_leverage_correction():
    """One pass (iters=1) from alpha0 solves sum w/v^2 (r^2 - E r^2) = 0 for alpha, E r^2 the
    expected squared residual of the fit that produced mu; it is linear in alpha (V = mu + alpha
    mu^2). Oracle: E r^2 from the dense T x T sensitivity matrix (not the docstring's quadratic
    forms), at alpha 0 and 1 for its two coefficients. Two rows of one group, 6 days, decay
    weights, the Poisson fit's own inv; row 1's first day left out of the sum but not of the
    fit. Catches a leverage of a different size or sign, a sandwich without w^2, and the first
    day dropped from the fit's sensitivity."""
    rng = np.random.default_rng(3)
    T = 6
    x = np.arange(T) - (T - 1.0)
    w = np.tile(0.5 ** ((T - 1 - np.arange(T)) / 3.0), (2, 1))
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + np.array([[4.0], [9.0]])), (2, T)).astype(float)
    _, _, inv, _, mu = negbin.irls(y, w, np.zeros((2, T)), x, np.full(2, 1e-8), np.zeros(2), np.full(2, 100.0))
    first = np.array([-1, 0])
    alpha0 = 0.3
    got = negbin.alpha_by_group(y, w, mu, x, inv, first, np.zeros(2, int), 1, alpha0, 1e-3, iters=1)
    num = den = 0.0
    for i in range(2):
        c = _expected_r2_dense(mu[i], w[i], x, inv[i], mu[i])
        d = _expected_r2_dense(mu[i], w[i], x, inv[i], mu[i] + mu[i] ** 2) - c
        om = w[i] / (1 + alpha0 * mu[i]) ** 2
        keep = np.arange(T) != first[i]
        num += np.sum((om * ((y[i] - mu[i]) ** 2 - c))[keep])
        den += np.sum((om * d)[keep])
    assert got[0] == pytest.approx(num / den, rel=1e-10)
    assert got[0] != pytest.approx(_pearson_pass(y[:, 1:], mu[:, 1:], w[:, 1:], alpha0), rel=1e-3)


def test_alpha_by_group_recovers_planted_dispersion():
    """Planted truth: rows of 28 days simulated from NB with alpha 0.5 (group 0) and 0.1
    (group 1). Given the true means (inv = 0: no leverage) the moment estimate is unbiased, so
    it lands within 4 standard errors of the truth, the SE being that of a weighted mean of the
    per-day values e: (sum om^2 (e - alpha)^2)^(1/2) / sum om (about 0.02 and 0.005 here).
    With means fitted by irls (Poisson pass, as forecast_tracks does) the residuals shrink;
    the expected residual of that fit moves the estimate back to within 10% of the truth."""
    rng = np.random.default_rng(21)
    N, T = 1000, 28
    x = np.arange(T) - (T - 1.0)
    group = np.arange(N) % 2
    alpha_true = np.array([0.5, 0.1])
    mu = np.exp(rng.uniform(0.5, 3.0, N))[:, None] * np.ones(T)
    al = alpha_true[group][:, None]
    y = rng.negative_binomial(1.0 / al, 1.0 / (1.0 + al * mu)).astype(float)
    w = np.tile(0.5 ** ((T - 1 - np.arange(T)) / 7.0), (N, 1))
    none = np.full(N, -1)
    got = negbin.alpha_by_group(y, w, mu, x, np.zeros((N, 2, 2)), none, group, 2, 0.05, 1e-3)
    for g in (0, 1):
        m = mu[group == g]
        om = w[group == g] * m ** 2 / (1 + alpha_true[g] * m) ** 2
        e = ((y[group == g] - m) ** 2 - m) / m ** 2
        se = np.sqrt(np.sum(om ** 2 * (e - alpha_true[g]) ** 2)) / om.sum()
        assert abs(got[g] - alpha_true[g]) < 4 * se, (g, got[g], se)
    _, _, inv, _, mu_hat = negbin.irls(y, w, np.zeros((N, T)), x, np.full(N, 1e-8), np.zeros(N), np.full(N, 100.0))
    plain = negbin.alpha_by_group(y, w, mu_hat, x, 0 * inv, none, group, 2, 0.05, 1e-3)
    corrected = negbin.alpha_by_group(y, w, mu_hat, x, inv, none, group, 2, 0.05, 1e-3)
    assert (np.abs(corrected - alpha_true) < np.abs(plain - alpha_true)).all()
    # measured (seeds 21-23): 5-7% and 3-5% below the truth; two passes taking r^2 (1 - h) for
    # the noise were 13-16% below, and r^2 alone 17-26%
    assert np.all(np.abs(corrected / alpha_true - 1) < 0.10), corrected


# -------------------------------------------------------------- trend_prior ---
def test_trend_prior_dersimonian_laird_by_hand():
    """DerSimonian-Laird on three rows, b = (0, 1, 3), var = (1/4, 1/2, 1/2): weights
    u = (4, 2, 2), fixed mean m = 8/8 = 1, Q = 4 + 0 + 2*4 = 12, k - 1 = 2,
    sum u - sum u^2/sum u = 8 - 24/8 = 5, tau^2 = (12 - 2)/5 = 2; random-effects weights
    1/(var + 2) = (4/9, 2/5, 2/5), mean = (8/5)/(56/45) = 9/7, sd = sqrt 2. The rows are in
    bucket 1; bucket 0 (no rows) borrows the all-row values, equal here."""
    b, var_b = np.array([0.0, 1.0, 3.0]), np.array([0.25, 0.5, 0.5])
    means, sds = negbin.trend_prior(b, var_b, np.array([1, 1, 1]), 2, 1e-3)
    np.testing.assert_allclose(means, [9 / 7, 9 / 7], rtol=1e-12)
    np.testing.assert_allclose(sds, [np.sqrt(2), np.sqrt(2)], rtol=1e-12)


def test_trend_prior_floors_the_between_row_spread():
    """Rows that agree better than their variances imply (Q < k - 1) get the floor min_sd:
    b = (1, 1, 1) -> Q = 0, tau^2 = max(-2/denominator, min_sd^2); the mean is 1 whatever the
    weights."""
    means, sds = negbin.trend_prior(np.ones(3), np.array([0.1, 0.2, 0.3]), np.zeros(3, int), 1, 0.01)
    np.testing.assert_allclose(means, [1.0], rtol=1e-12)
    np.testing.assert_allclose(sds, [0.01], rtol=1e-12)


def test_trend_prior_ignores_unusable_variances():
    """Only rows with a finite variance in (0, 1) count: extra rows of wild slope and variance
    nan, inf, exactly 1, 0 or negative change nothing (the hand case above still holds)."""
    b = np.array([0.0, 1.0, 3.0, 50.0, -50.0, 70.0, 90.0, -90.0])
    var_b = np.array([0.25, 0.5, 0.5, np.nan, np.inf, 1.0, 0.0, -0.5])
    means, sds = negbin.trend_prior(b, var_b, np.zeros(8, int), 1, 1e-3)
    np.testing.assert_allclose(means, [9 / 7], rtol=1e-12)
    np.testing.assert_allclose(sds, [np.sqrt(2)], rtol=1e-12)


def test_trend_prior_small_buckets_borrow_and_tiny_samples_default():
    """A bucket with fewer than 3 usable rows takes the all-row values (those of the same rows
    in a single bucket), a bucket with 3 or more its own; with fewer than 3 usable rows in all,
    every bucket gets mean 0 and sd 0.05."""
    b = np.array([0.0, 1.0, 3.0, 0.4, -0.2, 5.0])
    var_b = np.array([0.25, 0.5, 0.5, 0.3, 0.2, 2.0])    # the last row is unusable
    bucket = np.array([2, 2, 2, 0, 0, 1])
    means, sds = negbin.trend_prior(b, var_b, bucket, 4, 1e-3)
    all_m, all_s = negbin.trend_prior(b, var_b, np.zeros(6, int), 1, 1e-3)
    assert not np.isclose(all_m[0], 9 / 7)
    np.testing.assert_allclose(means, [all_m[0], all_m[0], 9 / 7, all_m[0]], rtol=1e-12)
    np.testing.assert_allclose(sds, [all_s[0], all_s[0], np.sqrt(2), all_s[0]], rtol=1e-12)
    means, sds = negbin.trend_prior(b[:2], var_b[:2], bucket[:2], 3, 1e-3)
    np.testing.assert_array_equal(means, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(sds, [0.05, 0.05, 0.05])


def test_trend_prior_recovers_planted_random_effects():
    """Planted truth: 2000 slopes b_i = m + s z_i + noise of known variance v_i (m = 0.03,
    s = 0.02, v_i in [1e-4, 1e-3]). The DL mean is within 4 SE of m, SE = (sum 1/(v + s^2))^-1/2
    (about 5e-4), and the sd within 15% of s: the spread's SE is about sqrt(2/n) (s^2 + mean v)
    / (2 s^2) ~ 4% of s at this size."""
    rng = np.random.default_rng(4)
    n, m, s = 2000, 0.03, 0.02
    v = rng.uniform(1e-4, 1e-3, n)
    b = m + s * rng.standard_normal(n) + np.sqrt(v) * rng.standard_normal(n)
    means, sds = negbin.trend_prior(b, v, np.zeros(n, int), 1, 1e-3)
    se = 1.0 / np.sqrt(np.sum(1.0 / (v + s ** 2)))
    assert abs(means[0] - m) < 4 * se
    assert sds[0] == pytest.approx(s, rel=0.15)


# --------------------------------------------------------------- nb_quantile ---
def _scipy_nb(mu, alpha):
    """scipy's NB with mean mu and Var mu + alpha mu^2: size 1/alpha, prob 1/(1 + alpha mu)."""
    return stats.nbinom(1.0 / alpha, 1.0 / (1.0 + alpha * mu))


def _grid():
    mu = np.array([0.0, 0.01, 0.3, 1.0, 2.5, 7.0, 30.0, 150.0, 2000.0])
    alpha = np.array([1e-3, 0.05, 0.3, 1.0, 4.0])
    m, a = np.meshgrid(mu, alpha)
    return m.ravel(), a.ravel()


def test_nb_cdf_is_scipys():
    """P(Y <= k) of NB(size r, prob p) = scipy.stats.nbinom.cdf, and 0 for k < 0."""
    k = np.array([-3.0, -1.0, 0.0, 1.0, 2.0, 5.0, 40.0])
    r, p = 2.5, 0.3
    np.testing.assert_allclose(negbin._nb_cdf(k, r, p), stats.nbinom.cdf(k, r, p), rtol=1e-10, atol=1e-300)
    assert (negbin._nb_cdf(k[:2], r, p) == 0).all()


@pytest.mark.parametrize("prob", [0.02, 0.1, 0.5, 0.9, 0.98])
def test_nb_quantile_conservative_is_scipys_ppf(prob):
    """nearest=False is the prob-quantile (smallest k with P(Y <= k) >= prob), which is
    scipy.stats.nbinom.ppf, over means 0..2000 and dispersions 1e-3..4 (skews from tiny to
    huge: the Cornish-Fisher start is off in both directions and the walk must fix it);
    `lower` does not matter then. A zero mean gives 0."""
    mu, alpha = _grid()
    pos = mu > 0
    want = np.zeros_like(mu)
    want[pos] = _scipy_nb(mu[pos], alpha[pos]).ppf(prob)
    for lower in (True, False):
        np.testing.assert_array_equal(negbin.nb_quantile(prob, mu, alpha, lower, nearest=False), want)


def _nearest_oracle(prob, mu, alpha, lower):
    """The docstring's rule, with scipy: from q = ppf(prob) move one step inwards (low: q + 1,
    high: q - 1) when that brings the tail probability (P(Y < low) = cdf(low - 1),
    P(Y > high) = 1 - cdf(high)) strictly closer to the nominal tail."""
    out = np.zeros_like(mu)
    for i in np.flatnonzero(mu > 0):
        d = _scipy_nb(mu[i], alpha[i])
        q = d.ppf(prob)
        if lower:
            nominal = prob
            stay, move = abs(d.cdf(q - 1) - nominal), abs(d.cdf(q) - nominal)
            out[i] = q + 1 if move < stay else q
        else:
            nominal = 1.0 - prob
            stay, move = abs(d.sf(q) - nominal), abs(d.sf(q - 1) - nominal)
            out[i] = q - 1 if move < stay else q
    return out


@pytest.mark.parametrize("prob,lower", [(0.1, True), (0.02, True), (0.9, False), (0.98, False),
                                        (0.5, True), (0.5, False)])
def test_nb_quantile_nearest_moves_inwards_when_closer(prob, lower):
    """nearest=True = the docstring's one-step-inwards rule, evaluated with scipy's NB; both
    outcomes (moved and kept) occur on the grid."""
    mu, alpha = _grid()
    got = negbin.nb_quantile(prob, mu, alpha, lower, nearest=True)
    np.testing.assert_allclose(got, _nearest_oracle(prob, mu, alpha, lower), atol=0)
    plain = negbin.nb_quantile(prob, mu, alpha, lower, nearest=False)
    assert (got != plain).any() and (got[mu > 0] == plain[mu > 0]).any()


def test_nb_quantile_docstring_example():
    """mu = 0.3, near-Poisson: the conservative 80% interval [q(0.1), q(0.9)] is [0, 1]
    (P(Y <= 1) = e^-0.3 1.3 = 0.963 >= 0.9 > P(Y = 0) = 0.741, and P(Y = 0) >= 0.1), covering
    96%; a scalar alpha is broadcast over the rows."""
    mu = np.array([0.3, 0.3])
    assert negbin.nb_quantile(0.1, mu, 1e-6, True, nearest=False).tolist() == [0.0, 0.0]
    assert negbin.nb_quantile(0.9, mu, 1e-6, False, nearest=False).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("prob", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_nb_quantile_refuses_a_probability_outside_the_open_interval(prob):
    """The 0- and 1-quantiles of a count are 0 and infinity, not interval endpoints: before
    the check, prob = 1.0 walked up forever (a hang, for any mu > 0) and prob = 0.0 gave NaN
    (inf - inf in the Cornish-Fisher start). Catches a bound written <= or dropped."""
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        negbin.nb_quantile(prob, np.array([5.0]), np.array([0.5]), True)


def test_nb_quantile_accepts_probabilities_next_to_the_bounds():
    """Just inside the bounds the quantile is finite and ordered: q(1e-12) = 0 for a mean of
    5 (P(Y = 0) = (1/(1 + 0.5 * 5))^2 = 0.082 >= 1e-12); q(1 - 1e-9) = scipy's ppf. Catches a
    check that also refuses the open interval's own points."""
    mu, alpha = np.array([5.0]), np.array([0.5])
    assert negbin.nb_quantile(1e-12, mu, alpha, True, nearest=False).tolist() == [0.0]
    high = negbin.nb_quantile(1.0 - 1e-9, mu, alpha, False, nearest=False)
    np.testing.assert_array_equal(high, _scipy_nb(mu, alpha).ppf(1.0 - 1e-9))


def _counting_cdf(monkeypatch):
    """Wrap negbin._nb_cdf (calling through) and count its calls: one for the start's CDF,
    one for CDF(k - 1), and one more per step of either walk."""
    calls = []
    real = negbin._nb_cdf

    def spy(k, r, p):
        calls.append(np.size(k))
        return real(k, r, p)
    monkeypatch.setattr(negbin, "_nb_cdf", spy)
    return calls


def test_nb_quantile_starts_within_a_step_where_the_old_start_walked_hundreds(monkeypatch):
    """The docstring's claim: the start (scipy's inverse CDF, capped by Cantelli's bound) is at
    most one step off for every mean below 1e7, so at most 3 CDF evaluations (start, one step,
    CDF(k - 1)); the rows include a geometric-like NB (mu = 2,000, alpha = 1), where the
    Cornish-Fisher start was about 390 steps above the 0.9-quantile (2,000 ln 10 = 4,605), and
    means so small that p rounds to 1, where scipy's inverse returns its search bound 1e100 and
    an uncapped walk down would never end. The answers are scipy's ppf. Catches a start off by
    more than a step (a dropped cap, a floor for the ceiling, another start)."""
    calls = _counting_cdf(monkeypatch)
    mu = np.array([2000.0, 2000.0, 1e-16, 1e-16, 0.3, 40.0, 9e6, 5.0])
    alpha = np.array([1.0, 3.0, 2.0, 1e-8, 1e-3, 0.5, 0.01, 200.0])
    for prob in (0.02, 0.1, 0.5, 0.9, 0.98):
        calls.clear()
        got = negbin.nb_quantile(prob, mu, alpha, prob < 0.5, nearest=False)
        np.testing.assert_array_equal(got, _scipy_nb(mu, alpha).ppf(prob))
        assert len(calls) <= 3, (prob, calls)


def test_nb_quantile_start_is_the_quantile_over_the_forecasts_range(monkeypatch):
    """The docstring's measured claim, on the forecast's own range (alpha >= MIN_ALPHA = 1e-3,
    means from 0.05 to 1e6 plays; p < 1): the start is the quantile itself, so each call makes
    exactly 2 CDF evaluations (CDF(k) and CDF(k - 1)) and no walk step, and the answers are
    scipy's ppf. The rows include quantiles of 0 (small means at low levels) and, at the
    0.9997-level, very overdispersed small means (mu 0.08, alpha 450: the 0.9997-quantile is
    about 50, far above mu + sd when sd is taken from the wrong variance). Catches a start
    clipped to 1 instead of 0, a Cantelli cap with the wrong variance, and a walk up at
    CDF(k) = prob."""
    rng = np.random.default_rng(11)
    mu = np.concatenate([np.exp(rng.uniform(np.log(0.05), np.log(1e6), 400)), [0.084, 0.073, 0.009]])
    alpha = np.concatenate([np.exp(rng.uniform(np.log(1e-3), np.log(20.0), 400)), [443.7, 477.5, 9072.0]])
    calls = _counting_cdf(monkeypatch)
    for prob in (0.02, 0.1, 0.5, 0.9, 0.98, 0.999, 0.9997):
        calls.clear()
        got = negbin.nb_quantile(prob, mu, alpha, prob < 0.5, nearest=False)
        np.testing.assert_array_equal(got, _scipy_nb(mu, alpha).ppf(prob))
        assert len(calls) == 2, (prob, calls)
    assert (negbin.nb_quantile(0.1, mu, alpha, True, nearest=False) == 0).sum() > 10


def test_nb_quantile_at_a_level_that_is_a_cdf_value_needs_no_step(monkeypatch):
    """Where prob equals a CDF value exactly, the quantile is that k (smallest k with
    P(Y <= k) >= prob, equality included): geometric (alpha = 1, mu = 1, so p = 1/2 and
    P(Y <= k) = 1 - 2^-(k+1), exact in binary): prob = 0.875 -> 2, 1 - 2^-6 -> 5. scipy's
    inverse gives exactly 2.0 and 5.0 at these two (at 0.9375 it gives 3 + 2e-15, whose
    ceiling is one step above, so that level is not used here), so there is no walk step: 2
    CDF evaluations each. Catches a walk up while CDF(k) <= prob (it would step to k + 1)."""
    mu, alpha = np.array([1.0]), np.array([1.0])
    assert negbin._nb_cdf(np.array([2.0, 5.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist() == [0.875, 0.984375]
    calls = _counting_cdf(monkeypatch)
    for prob, want in ((0.875, 2.0), (0.984375, 5.0)):
        calls.clear()
        assert negbin.nb_quantile(prob, mu, alpha, False, nearest=False).tolist() == [want]
        assert len(calls) == 2, (prob, calls)


@pytest.mark.parametrize("mu,alpha,prob,shift", [
    (30.0, 0.2, 0.9, 5.0), (30.0, 0.2, 0.9, -7.0),
    # quantile 0: P(Y = 0) = 7^-0.05 = 0.907 >= 0.5; start 2 (Cantelli's cap: ceil(0.3 + sqrt(2.1)) = 2)
    (0.3, 20.0, 0.5, 2.0),
    # geometric, prob = P(Y <= 2) exactly; start 5 (cap ceil(1 + sqrt(2) sqrt(7)) = 5): down past P(Y <= 3) to 2
    (1.0, 1.0, 0.875, 3.0),
    # the same from below: up from 0 past P(Y <= 1) = 0.75, stopping at P(Y <= 2) = 0.875 = prob
    (1.0, 1.0, 0.875, -2.0),
])
def test_nb_quantile_walks_from_a_start_that_is_off(monkeypatch, mu, alpha, prob, shift):
    """The walks make the answer exact whatever the start: with scipy's inverse replaced by one
    `shift` steps off, the quantile is still scipy's ppf, after exactly |shift| steps (one CDF
    evaluation each, besides the start's CDF(k) and CDF(k - 1)). Catches a walk that stops
    early (at k = 1 instead of 0, or before a CDF(k - 1) equal to prob), one that walks up past
    a CDF(k) equal to prob, or steps the wrong way."""
    m, a = np.array([mu]), np.array([alpha])
    want = _scipy_nb(m, a).ppf(prob)
    monkeypatch.setattr(negbin.special, "nbdtrik", lambda prob, r, p: want + shift - 0.5)   # ceil: want + shift
    calls = _counting_cdf(monkeypatch)
    np.testing.assert_array_equal(negbin.nb_quantile(prob, m, a, False, nearest=False), want)
    assert len(calls) == 2 + abs(shift), calls


def test_nb_quantile_moves_to_the_nearest_endpoint_by_default():
    """nearest=True is the default (the signature is the contract; forecast_tracks passes it
    explicitly). Poisson-like mu = 2: the 0.9-quantile is 4 (P(Y <= 3) = e^-2 (1 + 2 + 2 + 4/3)
    = 0.857 < 0.9 <= P(Y <= 4) = 0.947); the high endpoint 3 leaves P(Y > 3) = 0.143, 0.043
    from the nominal 0.1, closer than P(Y > 4) = 0.053 (0.047 away), so the nearest endpoint
    is 3. A call without `nearest` gives 3, not the conservative 4."""
    mu = np.array([2.0])
    assert negbin.nb_quantile(0.9, mu, 1e-9, False, nearest=False).tolist() == [4.0]
    assert negbin.nb_quantile(0.9, mu, 1e-9, False).tolist() == [3.0]


@settings(max_examples=40, deadline=None)
@given(mu=st.floats(0.001, 500.0), alpha=st.floats(1e-3, 5.0), prob=st.floats(0.01, 0.99),
       lower=st.booleans(), nearest=st.booleans())
def test_nb_quantile_matches_scipy_anywhere(mu, alpha, prob, lower, nearest):
    """Random means, dispersions and levels: conservative = scipy's ppf; nearest = the rule."""
    m, a = np.array([mu]), np.array([alpha])
    got = negbin.nb_quantile(prob, m, a, lower, nearest)
    if nearest:
        want = _nearest_oracle(prob, m, a, lower)
    else:
        want = _scipy_nb(m, a).ppf(prob)
    np.testing.assert_array_equal(got, want)
