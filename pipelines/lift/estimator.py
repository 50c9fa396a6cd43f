"""Causal campaign lift against a randomised listener holdout: the estimators,
pure numpy, vectorised over campaigns.

Every estimator works from per-(campaign, arm) sufficient statistics, so the
pipeline reduces listeners to sums before anything is estimated:

    n      exposed listeners in the arm
    s, ss  sum and sum of squares over listeners of Y, the streams (plays of at
           least 30 s) of the exposed tracks in the listener's attribution window
    sx, sxx, sxy
           the same for X, the listener's streams of those tracks in the 28 days
           before the first exposure (the pre-period), and sum of X*Y

Arms: treated listeners had a real exposure, holdout listeners a "ghost" one
(serving would have boosted them, by the same rule). Exposed-treated and
exposed-ghost listeners are exchangeable apart from the boost, so the ratio is
unbiased even though exposure selects heavy listeners and under any organic
trend; a before/after comparison (`historical_lift`) is not.

Estimand: lift = mean(Y | exposed, treated) / mean(Y | exposed, ghost) - 1.

Interval: delta method on the log ratio, each arm's variance floored at the
negative-binomial variance implied by the pooled overdispersion:

    Var(log R) = v_t / (n_t m_t^2) + v_g / (n_g m_g^2)
    phi        = max(0, (n-1)-weighted mean over arms of (v_a - m_a) / m_a^2)
    v_a used   = max(v_a, m_a + phi m_a^2)
    CI         = exp(log R -/+ z se) - 1

The log scale keeps the interval inside (-1, inf) and asymmetric like a
ratio's sampling distribution. The floor matters for small, skewed holdout arms
(~100 listeners, many zeros, a few heavy repeat listeners): when the sample
misses the heavy tail both its mean and its variance come out too small, and
the plain delta interval is too narrow exactly when the ratio is overestimated
(measured on n_g = 100: coverage with the floor 93-98%, see
tests/unit/test_lift_estimator.py). Under no lift both arms share one
distribution, and under a multiplicative boost they share phi, so the floor is
well founded; it never narrows an interval.

`lift_interval_adjusted` estimates the same quantity with the pre-period X as
a covariate on the log scale (CUPED): log R_adj = log R - beta log(xbar_t /
xbar_g), beta chosen to minimise the variance. X is pre-treatment, so its arm
ratio is 1 in expectation by randomisation and the adjustment removes chance
imbalance between the arms without bias. This is what `campaign_lift.lift`
publishes (docs/analysts.md says why: on the planted worlds it keeps every
criterion on every seed, the plain estimator only pooled).

Minimum data (`min_data_mask`): no lift unless each arm has `min_n` exposed
listeners, the holdout arm `min_holdout_streams` streams (a denominator near 0
makes the ratio meaningless) and the treated arm at least one.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

MIN_N = 100
MIN_HOLDOUT_STREAMS = 20
LEVEL = 0.95


def z_value(level: float = LEVEL) -> float:
    """Two-sided normal quantile (1.959964 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def mean_var(n, s, ss) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance from (n, sum, sum of squares); the variance is
    clipped at 0 (rounding) and NaN below 2 observations."""
    n, s, ss = _f(n), _f(s), _f(ss)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = s / n
        v = np.maximum(ss - s * m, 0.0) / (n - 1.0)
    return m, np.where(n >= 2, v, np.nan)


def min_data_mask(n_t, s_t, n_g, s_g, min_n=MIN_N, min_holdout_streams=MIN_HOLDOUT_STREAMS) -> np.ndarray:
    n_t, s_t, n_g, s_g = map(_f, (n_t, s_t, n_g, s_g))
    return (n_t >= min_n) & (n_g >= min_n) & (s_g >= min_holdout_streams) & (s_t > 0)


def _floored_vars(m_t, v_t, n_t, m_g, v_g, n_g):
    with np.errstate(divide="ignore", invalid="ignore"):
        phi_t = (v_t - m_t) / m_t**2
        phi_g = (v_g - m_g) / m_g**2
        w_t, w_g = n_t - 1.0, n_g - 1.0
        phi = (w_t * np.nan_to_num(phi_t) + w_g * np.nan_to_num(phi_g)) / (w_t + w_g)
    phi = np.maximum(np.nan_to_num(phi), 0.0)
    return np.maximum(v_t, m_t + phi * m_t**2), np.maximum(v_g, m_g + phi * m_g**2)


def log_ratio_se(n_t, s_t, ss_t, n_g, s_g, ss_g, floor: bool = True) -> np.ndarray:
    """Delta-method standard error of log(m_t / m_g)."""
    n_t, n_g = _f(n_t), _f(n_g)
    m_t, v_t = mean_var(n_t, s_t, ss_t)
    m_g, v_g = mean_var(n_g, s_g, ss_g)
    if floor:
        v_t, v_g = _floored_vars(m_t, v_t, n_t, m_g, v_g, n_g)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v_t / (n_t * m_t**2) + v_g / (n_g * m_g**2))


def lift_interval(n_t, s_t, ss_t, n_g, s_g, ss_g, level: float = LEVEL, min_n=MIN_N,
                  min_holdout_streams=MIN_HOLDOUT_STREAMS, floor: bool = True):
    """(lift, low, high): m_t / m_g - 1 with the floored log-delta interval; NaN
    where the minimum-data rule fails."""
    m_t, _ = mean_var(n_t, s_t, ss_t)
    m_g, _ = mean_var(n_g, s_g, ss_g)
    valid = min_data_mask(n_t, s_t, n_g, s_g, min_n, min_holdout_streams)
    se = log_ratio_se(n_t, s_t, ss_t, n_g, s_g, ss_g, floor=floor)
    z = z_value(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(m_t / m_g)
        return (np.where(valid, np.expm1(lr), np.nan), np.where(valid, np.expm1(lr - z * se), np.nan),
                np.where(valid, np.expm1(lr + z * se), np.nan))


def lift_interval_adjusted(n_t, s_t, ss_t, sx_t, sxx_t, sxy_t, n_g, s_g, ss_g, sx_g, sxx_g, sxy_g,
                           level: float = LEVEL, min_n=MIN_N, min_holdout_streams=MIN_HOLDOUT_STREAMS,
                           floor: bool = True):
    """(lift, low, high) of the same estimand with the pre-period X as a
    covariate on the log scale:

        log R_adj = log(m_t / m_g) - beta log(xbar_t / xbar_g)

    With per-arm relative (co)variances A = v_y / m_y^2, B = c_xy / (m_y m_x),
    C = v_x / m_x^2: beta = (B_t/n_t + B_g/n_g) / (C_t/n_t + C_g/n_g) (the
    variance-minimising value) and Var = sum over arms of (A - 2 beta B +
    beta^2 C) / n. Y variances are NB-floored as in `lift_interval`, then each
    arm's residual relative variance is floored at the (n-1)-weighted pooled
    value of both arms. Where an arm has no pre-period streams (xbar = 0) the
    adjustment is off (beta = 0): the plain estimator."""
    n_t, n_g = _f(n_t), _f(n_g)
    m_t, v_t = mean_var(n_t, s_t, ss_t)
    m_g, v_g = mean_var(n_g, s_g, ss_g)
    if floor:
        v_t, v_g = _floored_vars(m_t, v_t, n_t, m_g, v_g, n_g)
    x_t, vx_t = mean_var(n_t, sx_t, sxx_t)
    x_g, vx_g = mean_var(n_g, sx_g, sxx_g)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c_t = (_f(sxy_t) - n_t * m_t * x_t) / (n_t - 1.0)
        c_g = (_f(sxy_g) - n_g * m_g * x_g) / (n_g - 1.0)
        ra_t, ra_g = v_t / m_t**2, v_g / m_g**2
        rb_t, rb_g = c_t / (m_t * x_t), c_g / (m_g * x_g)
        rc_t, rc_g = vx_t / x_t**2, vx_g / x_g**2
        use = (x_t > 0) & (x_g > 0) & np.isfinite(rc_t + rc_g) & ((rc_t + rc_g) > 0) & np.isfinite(rb_t + rb_g)
        beta = np.where(use, (rb_t / n_t + rb_g / n_g) / (rc_t / n_t + rc_g / n_g), 0.0)
        res_t = np.where(use, ra_t - 2 * beta * rb_t + beta**2 * rc_t, ra_t)
        res_g = np.where(use, ra_g - 2 * beta * rb_g + beta**2 * rc_g, ra_g)
        if floor:
            pooled = ((n_t - 1) * res_t + (n_g - 1) * res_g) / (n_t + n_g - 2)
            res_t = np.where(use, np.maximum(res_t, pooled), res_t)
            res_g = np.where(use, np.maximum(res_g, pooled), res_g)
        se = np.sqrt(res_t / n_t + res_g / n_g)
        lr = np.log(m_t / m_g) - np.where(use, beta * np.log(x_t / x_g), 0.0)
    valid = min_data_mask(n_t, s_t, n_g, s_g, min_n, min_holdout_streams)
    z = z_value(level)
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.where(valid, np.expm1(lr), np.nan), np.where(valid, np.expm1(lr - z * se), np.nan),
                np.where(valid, np.expm1(lr + z * se), np.nan))


def itt_interval(s_t, ss_t, exposure_t, s_g, ss_g, exposure_g, level: float = LEVEL,
                 min_holdout_streams=MIN_HOLDOUT_STREAMS):
    """Intent-to-treat fallback, without an exposure log: (lift, low, high) of
    the streams of the campaign's tracks per listener-day of the market's
    listeners, treated population over holdout population, minus 1.

    `exposure_*` are the arms' active listener-days (randomisation balances
    them, so their ratio normalises the totals without bias). It measures the
    effect of being *assignable*, diluted toward 0 by every listener the
    campaign never reached: it answers a different question from the exposed
    lift and is flagged `intent_to_treat`.

    Var(log S_a) is taken as ss_a / s_a^2, the variance of a sum over listeners
    sampled at random from a large population (it leaves out the finite
    population term -1/N, so it is slightly conservative)."""
    s_t, ss_t, e_t, s_g, ss_g, e_g = map(_f, (s_t, ss_t, exposure_t, s_g, ss_g, exposure_g))
    valid = (s_g >= min_holdout_streams) & (s_t > 0) & (e_t > 0) & (e_g > 0)
    z = z_value(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log((s_t / e_t) / (s_g / e_g))
        se = np.sqrt(ss_t / s_t**2 + ss_g / s_g**2)
        return (np.where(valid, np.expm1(lr), np.nan), np.where(valid, np.expm1(lr - z * se), np.nan),
                np.where(valid, np.expm1(lr + z * se), np.nan))


def historical_lift(streams_before, days_before, streams_after, days_after) -> np.ndarray:
    """Before/after: (streams per day after) / (streams per day before) - 1, NaN
    when there was no stream before. No counterfactual: any organic trend or
    seasonality is credited to the campaign. For comparison only."""
    b, db, a, da = map(_f, (streams_before, days_before, streams_after, days_after))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a / da) / (b / db) - 1.0
    return np.where((b > 0) & (da > 0) & (db > 0), out, np.nan)


def incremental_streams(n_t, s_t, ss_t, n_g, s_g, ss_g, level: float = LEVEL):
    """(incremental, low, high): n_t (m_t - m_g), the streams the treated
    listeners added, with a normal interval on the difference of means
    (variances floored as in `lift_interval`)."""
    n_t, n_g = _f(n_t), _f(n_g)
    m_t, v_t = mean_var(n_t, s_t, ss_t)
    m_g, v_g = mean_var(n_g, s_g, ss_g)
    v_t, v_g = _floored_vars(m_t, v_t, n_t, m_g, v_g, n_g)
    z = z_value(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = m_t - m_g
        se = np.sqrt(v_t / n_t + v_g / n_g)
    return n_t * d, n_t * (d - z * se), n_t * (d + z * se)
