"""The parts of pipelines/scoring/forecast.py one by one, each against its
documented contract on small planted inputs: the baselines (decayed mean,
seasonal naive) against weighted means written out, the surface fit's design,
weighted least squares, row median, robust weights, residual scale and
sandwich covariance against independent formulas (numpy lstsq / nanmedian,
the bisquare fixed point), and `forecast_surface` on a hand-built fit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipelines.scoring import forecast as fc
from tests.unit.test_forecast import HL, PHI, WEEK, _target


def _wmean(y, w):
    """Weighted mean written out (the oracle of the decayed mean)."""
    return float(np.sum(np.asarray(w) * np.asarray(y)) / np.sum(w))


def _ages_weights(T, hl):
    """0.5^(age / hl), age = T-1 .. 0 (written independently of fc.decay_weights)."""
    return np.array([0.5 ** ((T - 1 - t) / hl) for t in range(T)])


# ------------------------------------------------------------------ weekdays ---
def test_weekdays_of_float_day_numbers_are_integer_indices():
    """Day numbers given as floats (e.g. read from a float column) still give
    integer weekdays that index a (7,) weekday table; catches dropping the
    int64 conversion (a float weekday cannot index)."""
    wd = fc.weekdays(np.array([0.0, 4.0, 19_000.0]))
    assert np.issubdtype(wd.dtype, np.integer)
    # 1970-01-01 a Thursday (3), 1970-01-05 a Monday; 19000 = 3 + 19000 % 7 = 3 + 2 -> 5 (Saturday)
    assert wd.tolist() == [3, 0, (19_000 + 3) % 7]
    assert np.arange(7)[wd].tolist() == wd.tolist()


# -------------------------------------------------------------- decayed mean ---
def test_decayed_mean_of_one_series_and_of_a_stack():
    """The mean runs over the last axis whatever the rank: a single (T,) series,
    and a (2, 3, T) stack, each equal to the weighted mean written out; catches
    reading the day count or summing along axis 1 instead of the last axis."""
    T = 5
    w = _ages_weights(T, HL)
    y1 = np.array([3.0, 0.0, 5.0, 2.0, 8.0])
    assert fc.decayed_mean(y1, HL) == pytest.approx(_wmean(y1, w))
    m1 = np.array([False, True, True, False, True])
    assert fc.decayed_mean(y1, HL, m1) == pytest.approx(_wmean(y1[m1], w[m1]))
    rng = np.random.default_rng(0)
    y3 = rng.integers(0, 20, (2, 3, T)).astype(float)
    m3 = rng.random((2, 3, T)) < 0.7
    got = fc.decayed_mean(y3, HL, m3)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            mm = m3[i, j]
            want = _wmean(y3[i, j][mm], w[mm]) if mm.any() else 0.0
            assert got[i, j] == pytest.approx(want)


def test_decayed_mean_is_zero_for_rows_never_observed():
    """'0 when none': rows whose mask is all False get exactly 0 (not NaN, not
    leftover memory); catches dropping the zero `out` buffer or the where guard."""
    rng = np.random.default_rng(1)
    N, T = 64, 6
    y = rng.uniform(1, 50, (N, T))
    mask = rng.random((N, T)) < 0.8
    mask[::3] = False
    w = _ages_weights(T, HL)
    for _ in range(3):
        junk = np.full(N, 7.25)          # a freed buffer of the output's size, so an uninitialised output shows
        del junk
        got = fc.decayed_mean(y, HL, mask)
        assert np.all(got[::3] == 0.0)
        for i in range(N):
            if mask[i].any():
                assert got[i] == pytest.approx(_wmean(y[i][mask[i]], w[mask[i]]))


# ------------------------------------------------------------ seasonal naive ---
def test_seasonal_naive_takes_the_day_seven_before_the_target():
    """The target is D+1, so the same weekday last week is column -7: with
    exactly 7 columns that is the first column (not the short-window
    fallback); with 28 columns it is column 21, and the mask is read there
    (not at column 7 or -8)."""
    y7 = np.array([[11.0, 2, 3, 4, 5, 6, 7]])
    assert fc.seasonal_naive(y7, HL)[0] == 11.0
    assert fc.seasonal_naive(y7, HL, np.ones((1, 7), bool))[0] == 11.0
    T = 28
    y = np.arange(1.0, T + 1)[None, :].repeat(3, 0)
    mask = np.ones((3, T), bool)
    mask[1, 7] = False                 # column 7 unobserved: irrelevant, day -7 (col 21) is observed
    mask[2, 20] = False                # column -8 unobserved: irrelevant too
    got = fc.seasonal_naive(y, HL, mask)
    np.testing.assert_array_equal(got, [22.0, 22.0, 22.0])
    mask[0, 21] = False                # day -7 unobserved -> the decayed mean of the observed days
    w = _ages_weights(T, HL)
    got = fc.seasonal_naive(y, HL, mask)
    assert got[0] == pytest.approx(_wmean(y[0][mask[0]], w[mask[0]]))
    assert got[0] != 22.0


def test_seasonal_naive_short_window_is_the_masked_decayed_mean():
    """Fewer than 7 days: no day a week back, the decayed mean over the
    observed days (mask honoured, half-life honoured), for a single series
    and for rows; catches the fallback dropping its arguments."""
    y = np.array([[4.0, 9.0, 1.0, 6.0, 2.0, 5.0]])
    mask = np.array([[True, False, True, True, False, True]])
    hl = 2.0
    w = _ages_weights(6, hl)
    assert fc.seasonal_naive(y, hl, mask)[0] == pytest.approx(_wmean(y[0][mask[0]], w[mask[0]]))
    assert fc.seasonal_naive(y, hl)[0] == pytest.approx(_wmean(y[0], w))
    assert fc.seasonal_naive(y[0], hl, mask[0]) == pytest.approx(_wmean(y[0][mask[0]], w[mask[0]]))
    y1 = np.arange(1.0, 10.0)                        # a single 9-day series: day -7 is 3
    assert fc.seasonal_naive(y1, hl) == 3.0


# ---------------------------------------------------------- design and WLS ---
def test_design_columns():
    """_design: intercept 1, x = d - D (0 on the last day, -1 the day before),
    the weekday effect coding (1 on its own weekday's column, -1 on every
    column for Sunday, 0 else)."""
    dow = np.array([5, 6, 0, 1, 2])
    X = fc._design(dow)
    assert X.dtype == float and X.shape == (5, 8)
    np.testing.assert_array_equal(X[:, 0], 1.0)
    np.testing.assert_array_equal(X[:, 1], [-4.0, -3.0, -2.0, -1.0, 0.0])
    np.testing.assert_array_equal(X[0, 2:], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(X[1, 2:], [-1] * 6)
    np.testing.assert_array_equal(X[2, 2:], [1, 0, 0, 0, 0, 0])


def test_wls_adds_the_ridge_to_the_diagonal():
    """_wls solves (X'WX + diag(ridge)) beta = X'Wz per row; oracle: lstsq on
    the augmented system [sqrt(W) X; sqrt(ridge) I] beta = [sqrt(W) z; 0].
    A sizeable ridge (0.5, 3) shows its sign."""
    rng = np.random.default_rng(2)
    T, p, G = 9, 3, 2
    X = rng.normal(size=(T, p))
    W = rng.uniform(0.2, 1.0, (G, T))
    z = rng.normal(size=(G, T))
    ridge = np.array([[0.5, 0.0, 3.0], [0.0, 1e-9, 0.5]])
    got = fc._wls(X, W, z, ridge)
    for g in range(G):
        A = np.vstack([np.sqrt(W[g])[:, None] * X, np.diag(np.sqrt(ridge[g]))])
        rhs = np.concatenate([np.sqrt(W[g]) * z[g], np.zeros(p)])
        np.testing.assert_allclose(got[g], np.linalg.lstsq(A, rhs, rcond=None)[0], rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cols=st.integers(1, 9))
def test_row_median_is_nanmedian(seed, cols):
    """_row_median equals np.nanmedian row by row, for every count of non-NaN
    values (0 -> NaN, 1, 2, odd, even); ties and repeated values included."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, (cols + 1, cols)).astype(float)
    for i in range(cols + 1):                # row i keeps i values ... (row cols keeps all)
        a[i, rng.permutation(cols)[: cols - i]] = np.nan
    got = fc._row_median(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the all-NaN row's "All-NaN slice" warning
        want = np.nanmedian(a, axis=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)])


# ------------------------------------------------------------------ surface ---
def _planted(T, a, b, f, dow):
    """exp(a + b x + log f[dow]), x = d - D."""
    x = np.arange(T) - (T - 1.0)
    return np.exp(a + b * x + np.log(f)[dow])


def test_noise_free_trend_and_weekdays_are_recovered_exactly():
    """A noise-free log-linear series with a 1%/day trend and a weekday
    pattern: the fit returns the planted level at D, trend, weekday effects
    (summing to 0) and, with damping 1, exactly the value of D+1; catches a
    mis-centred x column (the level read at another day) or a ridge that
    shrinks the trend."""
    T = 28
    dow = (np.arange(T) + 4) % 7
    f = WEEK / np.exp(np.log(WEEK).mean())
    y = _planted(T, np.log(5e5), 0.01, f, dow)[None, :]
    fit = fc.fit_surface(y, dow, HL)
    assert fit.coef[0, 0] == pytest.approx(np.log(5e5), abs=1e-6)
    assert fit.coef[0, 1] == pytest.approx(0.01, abs=1e-7)
    np.testing.assert_allclose(fit.log_weekday[0], np.log(f), atol=1e-6)
    assert abs(fit.log_weekday.sum()) < 1e-9
    k = _target(dow)
    p, lo, hi = fc.forecast_surface(fit, k, 1.0)
    assert p[0] == pytest.approx(5e5 * np.exp(0.01) * f[k], rel=1e-6)
    p, _, _ = fc.forecast_surface(fit, k, PHI)
    assert p[0] == pytest.approx(5e5 * np.exp(0.01 * PHI) * f[k], rel=1e-6)


@pytest.mark.parametrize("n_obs, weekdays_fitted, trend_fitted", [(14, True, True), (13, False, True),
                                                                  (4, False, True), (3, False, False)])
def test_identification_thresholds(n_obs, weekdays_fitted, trend_fitted):
    """Weekday effects need 14 observed days (two of each weekday), the trend
    4: at 14 days a planted weekday pattern is recovered, at 13 the effects
    are held at 0; at 4 days a planted trend is recovered, at 3 it is held at 0."""
    T = 28
    dow = np.arange(T) % 7
    f = WEEK / np.exp(np.log(WEEK).mean()) if n_obs >= 13 else np.ones(7)
    y = _planted(T, np.log(2e4), -0.02, f, dow)[None, :]
    present = np.arange(T) >= T - n_obs
    fit = fc.fit_surface(y, dow, HL, present)
    assert fit.observed[0] == n_obs
    if weekdays_fitted:
        np.testing.assert_allclose(fit.log_weekday[0], np.log(f), atol=1e-6)
    else:
        np.testing.assert_allclose(fit.log_weekday[0], 0.0, atol=1e-6)
    if trend_fitted and n_obs < 13:
        assert fit.coef[0, 1] == pytest.approx(-0.02, abs=1e-6)
        assert fit.coef[0, 0] == pytest.approx(np.log(2e4), abs=1e-6)
    elif not trend_fitted:
        assert abs(fit.coef[0, 1]) < 1e-6


def test_a_surface_of_one_play_a_day_is_observed():
    """A day counts as observed when its total is positive: a tiny surface with
    1 play a day is forecast 1 (not 'never observed' 0); catches y > 1."""
    dow = np.arange(21) % 7
    fit = fc.fit_surface(np.ones((1, 21)), dow, HL)
    assert fit.observed[0] == 21
    p, lo, hi = fc.forecast_surface(fit, 0, PHI)
    assert p[0] == pytest.approx(1.0, rel=1e-6) and lo[0] <= 1.0 <= hi[0]


def test_a_numeric_mask_is_a_boolean_mask():
    """mask given as 0/1 numbers (as decayed_mean accepts) is read as observed
    days: the same fit as the boolean mask."""
    rng = np.random.default_rng(4)
    T = 28
    dow = np.arange(T) % 7
    y = 1e4 * WEEK[dow] * np.exp(rng.normal(0, 0.05, (2, T)))
    present = rng.random(T) < 0.8
    a = fc.fit_surface(y, dow, HL, present)
    b = fc.fit_surface(y, dow, HL, present.astype(float))
    np.testing.assert_allclose(b.coef, a.coef)
    np.testing.assert_array_equal(b.robust, a.robust)
    np.testing.assert_array_equal(b.observed, a.observed)


def _noisy_groups(seed, ns, sd=0.05, outlier=1.6):
    """(G, 28) totals, group g observed on its last ns[g] days, weekday pattern
    times log-normal noise; the fully observed last group has a holiday."""
    rng = np.random.default_rng(seed)
    T = 28
    dow = (np.arange(T) + 1) % 7
    y = 1e4 * WEEK[dow] * np.exp(rng.normal(0, sd, (len(ns), T)))
    y[-1, 22] *= outlier
    mask = np.arange(T)[None, :] >= T - np.array(ns)[:, None]
    return y, dow, mask


def test_robust_weights_are_the_bisquare_fixed_point():
    """At convergence the robust weights are Tukey's bisquare (1 - u^2)^2 of
    u = r / (c * scale), r the final log residuals and scale the MAD of the
    kept days' residuals, 1.4826 * median |r| * sqrt(n / (n - p)) (floored at
    1e-3; p the fitted parameters: 1, 2 or 8 by observed days); 0 for
    |u| >= 1 and on unobserved days. Groups of 2, 3, 4, 10, 21 and 28
    observed days cover every p and its thresholds; the holiday of the last
    group is rejected. Catches a wrong constant, exponent, sign or threshold
    in the weight or the scale, or stopping before the fixed point."""
    ns, c = [2, 3, 4, 10, 21, 28], fc.BISQUARE_C
    y, dow, mask = _noisy_groups(5, ns)
    fit = fc.fit_surface(y, dow, HL, mask, bisquare_c=c, robust_iters=500)
    X = fc._design(dow)
    r = np.log(y) - fit.coef @ X.T
    n = mask.sum(axis=1)
    assert n.tolist() == ns
    p = np.where(n >= 14, 8, np.where(n >= 4, 2, 1))
    keep = mask & (fit.robust > 0)
    mad = np.array([np.median(np.abs(r[g][keep[g]])) for g in range(len(ns))])
    scale = np.maximum(1.4826 * mad * np.sqrt(n / np.maximum(n - p, 1)), 1e-3)
    u = r / (c * scale[:, None])
    want = np.where(mask & (np.abs(u) < 1), (1 - u ** 2) ** 2, 0.0)
    np.testing.assert_allclose(fit.robust, want, atol=1e-3)
    assert np.all(fit.robust[~mask] == 0.0)
    assert np.mean(fit.robust[mask] > 0.5) > 0.8        # a fit of the data, not a collapse onto a few days
    assert fit.robust[-1, 22] == 0.0


def test_coefficients_are_the_wls_of_the_robust_weights():
    """The returned coefficients solve the decay- and robust-weighted least
    squares of the log totals on the design (oracle: numpy lstsq of
    sqrt(w rob) X against sqrt(w rob) log y, written from the docstring:
    intercept, x = d - D, effect-coded weekdays)."""
    ns = [14, 28]
    y, dow, mask = _noisy_groups(6, ns)
    fit = fc.fit_surface(y, dow, HL, mask)
    T = y.shape[1]
    x = np.arange(T) - (T - 1.0)
    eff = np.array([[1.0 if k == d else (-1.0 if d == 6 else 0.0) for k in range(6)] for d in dow])
    X = np.column_stack([np.ones(T), x, eff])
    w = _ages_weights(T, HL)
    for g in range(2):
        sw = np.sqrt(w * fit.robust[g])
        beta = np.linalg.lstsq(sw[:, None] * X, sw * np.log(y[g]), rcond=None)[0]
        np.testing.assert_allclose(fit.coef[g], beta, atol=1e-6)


def test_sandwich_covariance_is_that_of_the_weighted_fit():
    """cov = A^-1 X'W^2X A^-1, the covariance of the weighted fit's linear map
    L (beta = L z) under unit-variance independent errors: oracle L L' with
    L = pinv(sqrt(W) X) diag(sqrt(W)), W = decay * robust weights."""
    y, dow, mask = _noisy_groups(7, [10, 28])
    fit = fc.fit_surface(y, dow, HL, mask)
    X = fc._design(dow)
    w = _ages_weights(y.shape[1], HL)
    g = 1                                                 # the fully identified group (its ridge negligible)
    W = w * fit.robust[g]
    L = np.linalg.pinv(np.sqrt(W)[:, None] * X) * np.sqrt(W)[None, :]
    np.testing.assert_allclose(fit.cov[g], L @ L.T, rtol=1e-5, atol=1e-12)


def test_two_observed_days_sigma_by_hand():
    """Two observed days, an intercept-only fit (trend and weekdays not
    identifiable), bisquare made inert (c huge, weights 1): the weighted mean
    a = (w1 z1 + w2 z2)/(w1 + w2) leaves sum w r^2 = w1 w2 (z1-z2)^2/(w1+w2),
    and the effective dof sum w - sum w^2 / sum w = 2 w1 w2/(w1+w2) (0.98:
    below 1), so sigma = |z1 - z2| / sqrt(2) whatever the weights. Catches a
    floor of the dof at 1, the 'too few days' fallback taken at dof < 1.5 or
    always, a wrong dof sign, and a sigma floor near 1."""
    T = 28
    dow = np.arange(T) % 7
    totals = np.zeros((2, T))
    totals[0, -2:] = [1000.0, 1500.0]
    totals[1, -2:] = [800.0, 600.0]
    fit = fc.fit_surface(totals, dow, HL, totals > 0, bisquare_c=1e9)
    np.testing.assert_allclose(fit.robust[:, -2:], 1.0, atol=1e-9)
    want = np.abs(np.log([1000 / 1500, 800 / 600])) / np.sqrt(2)
    np.testing.assert_allclose(fit.sigma, want, rtol=1e-5)
    w1, w2 = 0.5 ** (1 / HL), 1.0
    a = (w1 * np.log(totals[:, -2]) + w2 * np.log(totals[:, -1])) / (w1 + w2)
    np.testing.assert_allclose(fit.coef[:, 0], a, atol=1e-6)


def test_sigma_is_unbiased_for_the_planted_noise():
    """The residual sd over the kept days, with the effective dof correction,
    estimates the planted log-noise sd: sigma^2 averaged over 600 groups of
    28 days (each with a rejected +60% holiday) is within 8% of 0.03^2 (the
    standard error of that mean is about 2%). Catches a wrong dof (sign,
    weights), the holiday kept in the sum, sums across groups, a floor."""
    rng = np.random.default_rng(8)
    G, T, sd = 600, 28, 0.03
    dow = np.arange(T) % 7
    y = 1e5 * WEEK[dow] * np.exp(rng.normal(0, sd, (G, T)))
    y[:, 17] *= 1.6
    fit = fc.fit_surface(y, dow, HL)
    assert np.all(fit.robust[:, 17] == 0.0)
    ratio = np.mean(fit.sigma ** 2) / sd ** 2
    assert abs(ratio - 1) < 0.08, ratio


def test_day_factors_and_robust_weights_on_each_kind_of_day():
    """h_gd = observed / fitted on a rejected day (the planted +60% holiday),
    1 on unobserved days, and in between (1 .. observed / fitted) on a
    partly down-weighted day; robust weights in [0, 1], 0 on unobserved days."""
    y, dow, mask = _noisy_groups(9, [10, 28])
    mask[1, 3] = False
    fit = fc.fit_surface(y, dow, HL, mask)
    X = fc._design(dow)
    with np.errstate(divide="ignore"):
        r = np.log(y) - fit.coef @ X.T
    assert np.all((fit.robust >= 0) & (fit.robust <= 1))
    assert np.all(fit.robust[~mask] == 0.0) and np.all(fit.day_factor[~mask] == 1.0)
    assert fit.robust[1, 22] == 0.0
    assert fit.day_factor[1, 22] == pytest.approx(np.exp(r[1, 22]), rel=1e-9)
    assert fit.day_factor[1, 22] == pytest.approx(1.6, rel=0.1)
    lh = np.log(fit.day_factor[mask])
    rm = r[mask]
    assert np.all(np.abs(lh) <= np.abs(rm) + 1e-12) and np.all(lh * rm >= 0)
    partly = (fit.robust > 0) & (fit.robust < 1)
    assert partly.sum() > 10


def test_no_bisquare_iteration_keeps_every_observed_day():
    """robust_iters=0: the fit is the L1 start and no day is down-weighted:
    robust weights 1 on the observed days, 0 elsewhere."""
    y, dow, mask = _noisy_groups(10, [20, 28])
    fit = fc.fit_surface(y, dow, HL, mask, robust_iters=0)
    np.testing.assert_array_equal(fit.robust, mask.astype(float))
    assert np.all(np.isfinite(fit.sigma)) and np.all(np.isfinite(fit.cov))


def test_holiday_on_the_older_of_a_weekdays_two_days_is_rejected():
    """Exactly 14 days, two of each weekday, noise-free but for a +80% holiday
    on the older day of one weekday: the L1 start sides with the (heavier,
    newer) clean day, so the holiday alone is rejected and every weekday
    factor is the planted one."""
    T = 14
    dow = np.arange(T) % 7
    f = WEEK / np.exp(np.log(WEEK).mean())
    y = _planted(T, np.log(3e4), 0.005, f, dow)
    y[2] *= 1.8
    fit = fc.fit_surface(y[None, :], dow, HL)
    assert fit.robust[0, 2] == 0.0 and fit.robust[0, 9] > 0.99
    np.testing.assert_allclose(fit.log_weekday[0], np.log(f), atol=1e-4)
    assert fit.day_factor[0, 2] == pytest.approx(1.8, rel=1e-3)


def test_one_observed_day_gets_a_finite_moderate_interval():
    """One observed day: no residual left (dof 0), so the scale is a guess; the
    80% interval of the next day's total must still be informative (a
    surface's day-to-day change is a few percent, not a factor of several):
    within [0.7, 1.4] times the observed total, and strictly around it."""
    dow = np.arange(28) % 7
    totals = np.zeros((1, 28))
    totals[0, -1] = 5000.0
    fit = fc.fit_surface(totals, dow, HL, totals[0] > 0)
    p, lo, hi = fc.forecast_surface(fit, _target(dow), PHI)
    assert p[0] == pytest.approx(5000.0, rel=1e-6)
    assert 0.7 * 5000 < lo[0] < p[0] < hi[0] < 1.4 * 5000


# ---------------------------------------------------------- forecast_surface ---
def _hand_fit(G=3, seed=11):
    """A SurfaceFit built by hand: coefficients, log weekday effects (s_6 = -sum),
    a random SPD covariance, sigmas; group 2 never observed."""
    rng = np.random.default_rng(seed)
    coef = np.column_stack([np.log([2e4, 300.0, 50.0]), [0.01, -0.03, 0.0], rng.normal(0, 0.1, (G, 6))])
    lw = np.column_stack([coef[:, 2:], -coef[:, 2:].sum(axis=1)])
    M = rng.normal(size=(G, 8, 8)) * 0.1
    cov = M @ np.transpose(M, (0, 2, 1)) + 0.01 * np.eye(8)
    T = 7
    return fc.SurfaceFit(coef, lw, np.ones((G, T)), np.ones((G, T)), np.array([0.05, 0.2, 0.1]), cov,
                         np.array([28, 9, 0]))


@pytest.mark.parametrize("target", range(7))
@pytest.mark.parametrize("level", [0.8, 0.5])
def test_forecast_surface_on_a_hand_built_fit(target, level):
    """point = exp(a + phi b + s[target]) (s[6] = -(s_0 + .. + s_5), from
    log_weekday); interval exp(eta -/+ z sd), z the normal quantile
    0.5 + level/2 (scipy.stats), sd = sigma sqrt(1 + c' cov c), c = (1, phi,
    the target's effect coding: its own unit vector, or all -1 for Sunday);
    a never-observed group gets 0, 0, 0."""
    fit = _hand_fit()
    p, lo, hi = fc.forecast_surface(fit, target, PHI, level)
    eff = np.zeros(6)
    if target < 6:
        eff[target] = 1.0
    else:
        eff[:] = -1.0
    c = np.concatenate([[1.0, PHI], eff])
    z = stats.norm.ppf(0.5 + level / 2)
    for g in range(2):
        eta = fit.coef[g, 0] + PHI * fit.coef[g, 1] + fit.log_weekday[g, target]
        sd = fit.sigma[g] * np.sqrt(1.0 + c @ fit.cov[g] @ c)
        assert p[g] == pytest.approx(np.exp(eta), rel=1e-12)
        assert lo[g] == pytest.approx(np.exp(eta - z * sd), rel=1e-12)
        assert hi[g] == pytest.approx(np.exp(eta + z * sd), rel=1e-12)
    assert (p[2], lo[2], hi[2]) == (0.0, 0.0, 0.0)
    assert all(v.dtype == float for v in (p, lo, hi))


def test_forecast_surface_extreme_levels_stay_finite_and_positive():
    """A fit whose log level is absurd (+-800) still gives finite, positive,
    ordered (low <= point <= high) values for an observed group, never inf
    or 0 (overflow / underflow guards of the exponent)."""
    fit = _hand_fit()
    fit.coef[0, 0], fit.coef[1, 0] = 800.0, -800.0
    fit.log_weekday = np.column_stack([fit.coef[:, 2:], -fit.coef[:, 2:].sum(axis=1)])
    with np.errstate(over="ignore", under="ignore"):
        p, lo, hi = fc.forecast_surface(fit, 3, PHI)
    for v in (p, lo, hi):
        assert np.all(np.isfinite(v[:2])) and np.all(v[:2] > 0)
    assert np.all((lo[:2] <= p[:2]) & (p[:2] <= hi[:2]))


# ------------------------------------------------- weights, masks, age buckets ---
@pytest.mark.parametrize("n, hl", [(1, 14.0), (5, 2.0), (28, 7.0)])
def test_decay_weights(n, hl):
    """0.5^(age / half_life), age counted back from the last (as-of) day: 1 on
    the last day, 1/2 one half-life earlier, increasing, length n."""
    w = fc.decay_weights(n, hl)
    assert w.shape == (n,)
    np.testing.assert_allclose(w, _ages_weights(n, hl), rtol=1e-12)
    assert w[-1] == 1.0
    if n > 2 * hl:
        assert w[-1 - int(hl)] == pytest.approx(0.5) and w[-1 - 2 * int(hl)] == pytest.approx(0.25)


def test_observed_from_first_play():
    """Observed from each row's first day with a play on (zeros before it
    unobserved, zeros after it observed), and only where data is present
    (present (T,) or (N, T)); a row without a play is never observed."""
    plays = np.array([[0, 0, 3, 0, 1],
                      [2, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0],
                      [0, 0, 0, 0, 7]])
    want = np.array([[0, 0, 1, 1, 1],
                     [1, 1, 1, 1, 1],
                     [0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 1]], bool)
    got = fc.observed_from_first_play(plays)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)
    present = np.array([1, 1, 1, 0, 1], bool)
    np.testing.assert_array_equal(fc.observed_from_first_play(plays, present), want & present)
    present2 = np.ones((4, 5), bool)
    present2[0, 4] = present2[1, 0] = False
    np.testing.assert_array_equal(fc.observed_from_first_play(plays, present2), want & present2)
    np.testing.assert_array_equal(fc.observed_from_first_play(plays, present.astype(int)), want & present)
    # a stack of (surface, track, day) plays: first play along the day axis
    stack = np.stack([plays, plays[::-1]])
    np.testing.assert_array_equal(fc.observed_from_first_play(stack), np.stack([want, want[::-1]]))
    # fractional organic plays count as a play
    np.testing.assert_array_equal(fc.observed_from_first_play(np.array([[0.0, 0.5, 0.0]])), [[False, True, True]])


def test_age_bucket():
    """Release-age buckets: [0, 7), [7, 30), [30, 180), [180, inf) -> 0..3
    (an age equal to an edge opens the next bucket); NaN, +-inf (unknown) -> 4;
    no ages -> every row 4; custom edges."""
    age = np.array([0, 6.9, 7, 29, 30, 179.5, 180, 1e4, np.nan, np.inf, -np.inf])
    np.testing.assert_array_equal(fc.age_bucket(age, len(age)), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4])
    np.testing.assert_array_equal(fc.age_bucket(None, 3), [4, 4, 4])
    assert fc.age_bucket(None, 0).shape == (0,)
    np.testing.assert_array_equal(fc.age_bucket([1, 2, 3, np.nan], 4, edges=(2,)), [0, 1, 1, 2])
    np.testing.assert_array_equal(fc.age_bucket(None, 2, edges=(2,)), [2, 2])
    np.testing.assert_array_equal(fc.age_bucket([5, 40], 2), [0, 2])      # integer ages


# -------------------------------------------------------------------- tracks ---
def _pattern(seed):
    rng = np.random.default_rng(seed)
    lw = np.log(rng.uniform(0.8, 1.25, 7))
    return lw - lw.mean()


@pytest.mark.parametrize("prior_sd", [None, 0.05])
def test_tracks_noise_free_weekday_rows_are_forecast_exactly(prior_sd):
    """Rows whose plays are exactly c_i f_g[dow] (two surfaces with their own
    weekday patterns, every day observed): each forecast is c_i f_g[target]
    (no trend, nothing to shrink), for several target weekdays; the same with
    a holiday on one day that the surface's day factor h explains (the row's
    plays times h that day)."""
    T = 21
    dow = (np.arange(T) + 2) % 7
    lw = np.stack([_pattern(1), _pattern(2)])
    c = np.array([40.0, 250.0, 900.0, 60.0, 3000.0, 15.0])
    group = np.array([0, 0, 0, 1, 1, 1])
    y = c[:, None] * np.exp(lw[group][:, dow])
    mask = np.ones_like(y, bool)
    for target in (0, 4, 6):
        p, lo, hi = fc.forecast_tracks(y, mask, dow, target, lw, group, HL, PHI, prior_sd=prior_sd,
                                       age=np.full(6, 100.0))
        np.testing.assert_allclose(p, c * np.exp(lw[group, target]), rtol=1e-6)
        assert np.all((lo <= p) & (p <= hi))
    h = np.ones((2, T))
    h[1, 9], h[0, 15] = 1.5, 0.6
    yh = y * h[group]
    p, _, _ = fc.forecast_tracks(yh, mask, dow, 5, lw, group, HL, PHI, day_factor=h, prior_sd=prior_sd)
    np.testing.assert_allclose(p, c * np.exp(lw[group, 5]), rtol=1e-6)


@pytest.mark.parametrize("prior_sd", [None, 10.0])
def test_tracks_a_shared_trend_is_extrapolated_with_damping(prior_sd):
    """Noise-free rows c_i exp(beta x) f[dow] sharing one trend beta = -3%/day:
    the fit is exact and the forecast is c_i exp(phi beta) f[target] (the
    trend damped by phi: x = 1 on D+1 counts as phi). With the empirical-Bayes
    prior the prior mean is the rows' common slope (nothing to shrink); with
    a fixed wide prior (sd 10) the pull to 0 is negligible."""
    T = 28
    dow = np.arange(T) % 7
    lw = _pattern(3)[None, :]
    beta = -0.03
    c = np.array([500.0, 80.0, 2000.0, 120.0])
    x = np.arange(T) - (T - 1.0)
    y = c[:, None] * np.exp(beta * x + lw[0, dow])
    g = np.zeros(4, int)
    for phi in (PHI, 0.5):
        p, _, _ = fc.forecast_tracks(y, np.ones_like(y, bool), dow, 1, lw, g, HL, phi, prior_sd=prior_sd,
                                     age=np.array([3.0, 50, 400, np.nan]))
        np.testing.assert_allclose(p, c * np.exp(phi * beta + lw[0, 1]), rtol=1e-5)


def test_tracks_a_single_observed_day_and_the_first_play_correction():
    """A row observed on its last day only, with y plays: a history that
    starts inside the window starts on a day chosen for having a play, so
    that day counts as y (1 - P0), P0 = exp(-mu), mu = y (the row's level that
    day); with one day at x = 0 the trend stays at its prior mean 0, so the
    forecast is y (1 - e^-y) f[target] / f[dow_D]. Without the correction:
    y f[target] / f[dow_D]. Rows of one `selection` unit share P0 = exp(-(mu_1
    + mu_2)): no play on any of the unit's rows. A row observed on its first
    window day only is not corrected (its history may start before the
    window): y f[target] / f[dow_0]."""
    T = 14
    dow = (np.arange(T) + 5) % 7
    lw = np.stack([_pattern(4), _pattern(5)])
    y = np.zeros((4, T))
    y[0, -1], y[1, -1], y[2, -1], y[3, 0] = 1.0, 2.0, 3.0, 4.0
    mask = fc.observed_from_first_play(y)
    mask[3, 1:] = False
    group = np.array([0, 1, 1, 0])
    k = 2
    ratio_last = np.exp(lw[group, k] - lw[group, dow[-1]])
    args = (y, mask, dow, k, lw, group, HL, PHI)
    p, lo, hi = fc.forecast_tracks(*args)
    np.testing.assert_allclose(p[:3], y[:3, -1] * (1 - np.exp(-y[:3, -1])) * ratio_last[:3], rtol=1e-6)
    assert p[3] == pytest.approx(4.0 * np.exp(lw[0, k] - lw[0, dow[0]]), rel=1e-6)
    p0, _, _ = fc.forecast_tracks(*args, first_play_correction=False)
    np.testing.assert_allclose(p0[:3], y[:3, -1] * ratio_last[:3], rtol=1e-6)
    assert p0[3] == pytest.approx(p[3], rel=1e-9)
    ps, _, _ = fc.forecast_tracks(*args, selection=np.array(["u", "u", "v", "w"]))
    np.testing.assert_allclose(ps[:2], y[:2, -1] * (1 - np.exp(-3.0)) * ratio_last[:2], rtol=1e-6)
    np.testing.assert_allclose(ps[2:], p[2:], rtol=1e-9)
    assert np.all((lo <= p) & (p <= hi))


def test_tracks_rows_never_observed_get_zero():
    """Rows with no observed day get 0 and a [0, 0] interval, and do not change
    the other rows' forecasts; no observed row at all: all zeros."""
    T = 14
    dow = np.arange(T) % 7
    lw = np.zeros((1, 7))
    rng = np.random.default_rng(12)
    y = rng.poisson(30.0, (3, T)).astype(float)
    mask = np.ones_like(y, bool)
    mask[1] = False
    p, lo, hi = fc.forecast_tracks(y, mask, dow, 0, lw, np.zeros(3, int), HL, PHI)
    assert (p[1], lo[1], hi[1]) == (0.0, 0.0, 0.0) and np.all(p[[0, 2]] > 0)
    q, qlo, qhi = fc.forecast_tracks(y[[0, 2]], mask[[0, 2]], dow, 0, lw, np.zeros(2, int), HL, PHI)
    np.testing.assert_allclose(p[[0, 2]], q, rtol=1e-9)
    np.testing.assert_array_equal(lo[[0, 2]], qlo)
    np.testing.assert_array_equal(hi[[0, 2]], qhi)
    z = fc.forecast_tracks(y, np.zeros_like(mask), dow, 0, lw, np.zeros(3, int), HL, PHI)
    for v in z:
        np.testing.assert_array_equal(v, 0.0)


@pytest.mark.parametrize("level, nearest, prior_sd", [(0.8, False, 0.1), (0.8, True, 0.1), (0.5, False, 0.1),
                                                      (0.5, True, 0.1), (0.8, True, None), (0.8, False, None)])
def test_tracks_interval_is_the_nb_quantile_with_parameter_uncertainty(level, nearest, prior_sd):
    """Rows of constant plays c on every day (flat surface): the fit is exact
    (a = log c, b = 0), the Pearson overdispersion is negative so alpha is its
    floor MIN_ALPHA, and the interval is the NB (mean c) quantile pair at
    (1 -/+ level)/2 with alpha_eff = alpha + v (1 + alpha), v the variance of
    a + phi b from the sandwich I^-1 (J + prior) I^-1 of the weighted NB fit,
    I = sum w mu/(1 + alpha mu) (1, x; x, x^2) + prior, J the same with w^2
    (written out here). Oracle quantiles: scipy.stats.nbinom (conservative:
    ppf; nearest: one step inwards when the tail probability gets closer).
    prior_sd None: the empirical-Bayes prior over rows whose slopes are all
    0 has no between-row variance, so its sd is the floor MIN_PRIOR_SD."""
    T = 21
    dow = np.arange(T) % 7
    c = np.array([50.0, 3.0, 400.0])
    y = np.repeat(c[:, None], T, axis=1)
    sd_prior = fc.MIN_PRIOR_SD if prior_sd is None else prior_sd
    p, lo, hi = fc.forecast_tracks(y, np.ones_like(y, bool), dow, 2, np.zeros((1, 7)), np.zeros(3, int), HL,
                                   PHI, prior_sd=prior_sd, level=level, nearest=nearest)
    np.testing.assert_allclose(p, c, rtol=1e-9)
    al = fc.MIN_ALPHA
    w = _ages_weights(T, HL)
    x = np.arange(T) - (T - 1.0)
    P = np.diag([0.0, 1.0 / sd_prior ** 2])                # the trend prior
    F = np.stack([np.ones(T), x])                           # (2, T)
    tail = (1 - level) / 2
    for i, ci in enumerate(c):
        q = ci / (1 + al * ci)
        I = (F * (w * q)) @ F.T + P
        J = (F * (w * w * q)) @ F.T + P
        Ii = np.linalg.inv(I)
        cv = np.array([1.0, PHI])
        v = cv @ Ii @ J @ Ii @ cv
        ae = al + v * (1 + al)
        dist = stats.nbinom(1 / ae, 1 / (1 + ae * ci))
        k_lo, k_hi = dist.ppf(tail), dist.ppf(1 - tail)
        if nearest:
            if dist.cdf(k_lo) - tail < tail - dist.cdf(k_lo - 1):
                k_lo += 1
            if (1 - tail) - dist.cdf(k_hi - 1) < dist.cdf(k_hi) - (1 - tail):
                k_hi -= 1
        assert (lo[i], hi[i]) == (k_lo, k_hi), (i, lo[i], hi[i], k_lo, k_hi)


@pytest.mark.parametrize("hl", [HL, 5.0])
def test_tracks_without_trend_on_a_flat_surface_are_the_decayed_mean(hl):
    """With the trend pinned at 0 (prior sd 1e-6) and a flat surface, the NB
    score sum w (y - mu) / (1 + alpha mu) = 0 with a constant mu gives
    mu = sum w y / sum w: the forecast is the decayed mean over the row's
    observed days, whatever alpha. A row whose history starts inside the
    window first has its first day scaled by 1 - exp(-m), m its uncorrected
    decayed mean (written out here); a row observed from day 0 is not.
    Integer plays give the same forecasts as float ones."""
    rng = np.random.default_rng(13)
    N, T = 6, 20
    y = rng.poisson(rng.uniform(0.5, 40, N)[:, None] * np.ones(T)).astype(float)
    y[:, 0] = np.maximum(y[:, 0], 1)
    y[3, :8] = 0
    y[3, 8] = 2.0                              # first play on day 8
    y[4, :15] = 0
    y[4, 15] = 1.0                             # first play on day 15, a sparse row
    present = np.ones(T, bool)
    present[[5, 11]] = False                   # days without raw data
    mask = fc.observed_from_first_play(y, present)
    dow = np.arange(T) % 7
    p, lo, hi = fc.forecast_tracks(y, mask, dow, 0, np.zeros((1, 7)), np.zeros(N, int), hl, PHI, prior_sd=1e-6)
    w = _ages_weights(T, hl)
    want = []
    for i in range(N):
        yi, mi = y[i].copy(), mask[i]
        first = int(np.argmax(mi))
        if first > 0:
            m = _wmean(yi[mi], w[mi])
            yi[first] *= 1 - np.exp(-m)
        want.append(_wmean(yi[mi], w[mi]))
    np.testing.assert_allclose(p, want, rtol=1e-6)
    assert np.all((lo <= p) & (p <= hi))
    q = fc.forecast_tracks(y.astype(np.int64), mask, dow, 0, np.zeros((1, 7)), np.zeros(N, int), hl, PHI,
                           prior_sd=1e-6)
    for u, v in zip((p, lo, hi), q):
        np.testing.assert_allclose(v, u, rtol=1e-12)


def test_tracks_a_short_row_borrows_its_peers_trend():
    """The empirical-Bayes trend prior: five busy noise-free rows falling 2%
    a day and one short row (2 plays on each of its 3 observed days) in the
    same age bucket. The busy rows keep their own slope (forecast
    c exp(phi beta)); the short row's slope is shrunk to its peers' -2%/day,
    so (weights w, days d of the short row) its level solves
    sum w (y - e^a e^(beta x)) = 0: e^a = sum w y / sum w e^(beta x), and its
    forecast is e^a e^(phi beta). With a wide fixed prior it keeps its own
    flat slope instead (forecast ~2)."""
    T = 28
    dow = np.arange(T) % 7
    x = np.arange(T) - (T - 1.0)
    beta = -0.02
    c = np.array([200.0, 500.0, 800.0, 1200.0, 2000.0])
    y = np.zeros((6, T))
    y[:5] = c[:, None] * np.exp(beta * x)
    y[5, -3:] = 2.0
    mask = np.ones_like(y, bool)
    mask[5, :-3] = False
    args = (y, mask, dow, 0, np.zeros((1, 7)), np.zeros(6, int), HL, PHI)
    p, lo, hi = fc.forecast_tracks(*args, age=np.full(6, 100.0), first_play_correction=False)
    np.testing.assert_allclose(p[:5], c * np.exp(PHI * beta), rtol=1e-5)
    w = _ages_weights(T, HL)[-3:]
    ea = np.sum(w * 2.0) / np.sum(w * np.exp(beta * x[-3:]))
    assert p[5] == pytest.approx(ea * np.exp(PHI * beta), rel=1e-3)
    own, _, _ = fc.forecast_tracks(*args, age=np.full(6, 100.0), first_play_correction=False, prior_sd=10.0)
    assert own[5] == pytest.approx(2.0, rel=0.02)
    assert np.all((lo <= p) & (p <= hi))
