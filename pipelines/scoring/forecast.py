"""One-day-ahead supply forecasts of docs/design.md §4: the surface total S of each
(market, surface) and each enrolled track's organic plays E, with 80%
intervals, from the decay-weighted window of daily aggregates.

Pure numpy over dense (series, day) arrays whose last column is the as-of day
D; the forecast is for D+1. `mask` marks the days a series counts as observed:
a day without raw data is unobserved for everyone, and a track's days before
its first play in the window are unobserved for it (a new release, or a history
stored before aggregates covered every track), so a track's level is an
average over the days it could have been seen, not over the window.

Surface model (per (market, surface) g, log scale, `fit_surface`)::

    log S_gd = a_g + b_g x_d + s_g[dow_d] + e_gd,   x_d = d - D,  sum_k s_g[k] = 0

weighted least squares with the decay weights, made robust by Tukey's
bisquare (started from an L1 fit), so a holiday gets weight ~0 and drags
neither the level nor the weekday factors; f_g[k] = exp(s_g[k]) are the
weekday factors. Forecast exp(a + phi b + s[dow_{D+1}]), 80% interval
log-normal from the robust residual scale plus the coefficients' (sandwich)
variance. With fewer than 14 observed days the weekday effects are not
identifiable and are left out (fewer than 4: the trend too).

Track model (per track-surface row i of group g, `forecast_tracks`)::

    Y_id ~ NB(mu_id, alpha_g),   log mu_id = a_i + b_i x_d + s_g[dow_d] + log h_gd

a negative-binomial regression per row (`negbin`): level a_i at D, trend b_i
with a Gaussian prior per release-age bucket fitted by empirical Bayes over the
call's rows (a sparse or short row's trend is shrunk to its peers', a busy one
keeps its own), the surface's weekday effects s_g, and h_gd the surface's
outlier-day factor, so a holiday counts at its de-holidayed value. A history
that starts inside the window starts on a day chosen for having a play
(E[Y | Y >= 1] = mu / (1 - P0)), so that day enters as y (1 - P0). Three
vectorised Newton passes (Poisson -> alpha_g; NB with a flat trend prior ->
the empirical-Bayes prior; NB with it). Forecast E = exp(a + phi b +
s_g[dow_{D+1}]); interval: NB quantiles with alpha_eff = alpha_g + v (1 +
alpha_g), v the variance of a + phi b (parameter uncertainty as gamma mixing).

Measured on the planted worlds of the tests (docs/design.md §4 has the
figures): the weekday-less decayed mean is several times worse on S, and the
model beats both the decayed mean and the same-weekday-last-week forecast on E.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from pipelines.scoring import negbin

LEVEL = 0.8               # central prediction-interval level (docs/design.md §5: 80%)
BISQUARE_C = 6.0          # Tukey constant, in robust sigmas, of the surface fit
AGE_EDGES = (7, 30, 180)  # release-age buckets of the trend prior (days since release on D+1)
MIN_PRIOR_SD = 1e-3       # floor of the trend prior's sd (log-plays per day)
MIN_ALPHA = 1e-3          # floor of the overdispersion
WEEKDAY_MIN_DAYS = 14     # observed days needed to fit weekday effects (two of each weekday)
TREND_MIN_DAYS = 4        # observed days needed to fit a surface trend


def weekdays(day_numbers) -> np.ndarray:
    """Weekday (0 = Monday) of days counted from 1970-01-01, a Thursday."""
    return (np.asarray(day_numbers, dtype=np.int64) + 3) % 7


def decay_weights(n_days: int, half_life: float) -> np.ndarray:
    """(n_days,) weights 0.5^(age / half_life), 1 on the last (as-of) day."""
    return np.power(0.5, np.arange(n_days - 1, -1, -1) / half_life)


def observed_from_first_play(plays: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """(N, T) mask: from each row's first day with a play on, where data is
    present (`present`: (T,) or (N, T); every day if None)."""
    plays = np.asarray(plays)
    started = np.cumsum(plays > 0, axis=-1) > 0
    if present is not None:
        started &= np.broadcast_to(np.asarray(present, bool), plays.shape)
    return started


# ----------------------------------------------------------------- baselines ---
def decayed_mean(y: np.ndarray, half_life: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Decay-weighted mean over each row's observed days (0 when none)."""
    y = np.asarray(y, float)
    w = decay_weights(y.shape[-1], half_life) * (np.ones(y.shape) if mask is None else mask)
    sw = w.sum(axis=-1)
    return np.divide((w * y).sum(axis=-1), sw, out=np.zeros(sw.shape), where=sw > 0)


def seasonal_naive(y: np.ndarray, half_life: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Same weekday last week (the column 7 days before the target); the
    decayed mean where that day is unobserved."""
    y = np.asarray(y, float)
    if y.shape[-1] < 7:
        return decayed_mean(y, half_life, mask)
    last_week = y[..., -7]
    if mask is None:
        return last_week
    return np.where(np.asarray(mask)[..., -7], last_week, decayed_mean(y, half_life, mask))


# ------------------------------------------------------------------- surface ---
@dataclass
class SurfaceFit:
    coef: np.ndarray         # (G, 8): a, b, s_0..s_5 (s_6 = -sum)
    log_weekday: np.ndarray  # (G, 7) s_g[k], summing to 0
    robust: np.ndarray       # (G, T) robust weights in [0, 1] (0 on unobserved days)
    day_factor: np.ndarray   # (G, T) h_gd: observed / fitted on rejected days, 1 otherwise
    sigma: np.ndarray        # (G,) robust residual sd (log scale)
    cov: np.ndarray          # (G, 8, 8) sandwich covariance of coef, in sigma^2 units
    observed: np.ndarray     # (G,) observed days


def _design(dow: np.ndarray) -> np.ndarray:
    """(T, 8): intercept, x = d - D (0 on the last day), effect-coded weekdays."""
    n = len(dow)
    eff = (dow[:, None] == np.arange(6)[None, :]).astype(float) - (dow == 6)[:, None]
    return np.column_stack([np.ones(n), np.arange(n) - (n - 1.0), eff])


def _wls(X: np.ndarray, W: np.ndarray, z: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """Per-row weighted least squares; ridge is (G, p), added to each row's diagonal."""
    XtWX = np.einsum("gt,ti,tj->gij", W, X, X) + ridge[:, :, None] * np.eye(X.shape[1])[None]
    return np.linalg.solve(XtWX, np.einsum("gt,ti,gt->gi", W, X, z)[..., None])[..., 0]


def _row_median(a: np.ndarray) -> np.ndarray:
    """Median of each row's non-NaN values (np.nanmedian, faster for many small rows)."""
    srt = np.sort(a, axis=1)
    k = (~np.isnan(a)).sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum((k - 1) // 2, 0)[:, None], 1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(k // 2, 0)[:, None], 1)[:, 0]
    return np.where(k > 0, (lo + hi) / 2, np.nan)


def fit_surface(totals: np.ndarray, dow: np.ndarray, half_life: float, mask: np.ndarray | None = None,
                bisquare_c: float = BISQUARE_C, l1_iters: int = 30, robust_iters: int = 10) -> SurfaceFit:
    """Robust decayed log-linear level + trend + weekday fit of (G, T) totals;
    dow: (T,) weekday of each window day; mask: (T,) or (G, T) observed days.
    At most l1_iters reweighted passes toward the L1 start and robust_iters
    bisquare passes, each loop ending early once no coefficient of any group
    moves by 1e-5 (log scale)."""
    y = np.atleast_2d(np.asarray(totals, float))
    G, T = y.shape
    m = np.ones_like(y, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), y.shape)
    m = m & (y > 0)
    z = np.log(np.where(m, y, 1.0))
    X = _design(np.asarray(dow))
    n = m.sum(axis=1)
    # columns a group cannot identify get a ridge that holds them at 0
    ridge = np.tile(np.array([1e-9, 1e-9] + [1e-6] * 6), (G, 1))
    ridge[n < WEEKDAY_MIN_DAYS, 2:] = 1e8
    ridge[n < TREND_MIN_DAYS, 1] = 1e8
    w = decay_weights(T, half_life)[None, :] * m
    beta = _wls(X, w, z, ridge)
    for _ in range(l1_iters):                         # L1 start: robust to one outlier among a weekday's days
        r = z - beta @ X.T
        beta, before = _wls(X, w / np.maximum(np.abs(r), 1e-4), z, ridge), beta
        if np.max(np.abs(beta - before)) < 1e-5:     # log scale: a 0.001% change
            break
    p = np.where(n >= WEEKDAY_MIN_DAYS, 8, np.where(n >= TREND_MIN_DAYS, 2, 1))

    def mad_scale(abs_r):
        """abs_r: (G, T) |residuals|, NaN on the days left out."""
        return np.maximum(np.nan_to_num(1.4826 * _row_median(abs_r) * np.sqrt(n / np.maximum(n - p, 1))), 1e-3)

    r = z - beta @ X.T
    # the L1 start interpolates p of the days (|r| ~ 0 whatever their noise): its scale leaves out the
    # p smallest |r| (counted in, they pulled the median to the floor when p is half the days)
    abs_r = np.where(m, np.abs(r), np.nan)
    rank = np.argsort(np.argsort(np.where(m, abs_r, np.inf), axis=1), axis=1)
    scale = mad_scale(np.where(rank < np.minimum(p, n - 1)[:, None], np.nan, abs_r))
    rob = np.ones_like(y)
    for _ in range(robust_iters):                     # Tukey bisquare; the scale re-estimated from its fit
        u = r / (bisquare_c * scale[:, None])
        rob = np.where(np.abs(u) < 1, (1 - u ** 2) ** 2, 0.0)
        beta, before = _wls(X, w * rob, z, ridge), beta
        r = z - beta @ X.T
        scale = mad_scale(np.where(m & (rob > 0), np.abs(r), np.nan))
        if np.max(np.abs(beta - before)) < 1e-5:     # log scale: a 0.001% change
            break
    W = w * rob
    A_inv = np.linalg.inv(np.einsum("gt,ti,tj->gij", W, X, X) + ridge[:, :, None] * np.eye(8)[None])
    cov = A_inv @ np.einsum("gt,ti,tj->gij", W ** 2, X, X) @ A_inv
    # residual sd over the days kept (rob > 0), not weighted by rob (which would shrink it):
    # E[sum V r^2] = sigma^2 (sum V - tr(A^-1 X'VWX)), V = the kept days' decay weights
    V = w * (rob > 0)
    dof = V.sum(axis=1) - np.einsum("gij,gji->g", A_inv, np.einsum("gt,ti,tj->gij", V * W, X, X))
    sigma = np.sqrt((V * r ** 2).sum(axis=1) / np.maximum(dof, 1e-9))
    sigma = np.where(dof > 0.5, np.maximum(sigma, 1e-3), np.maximum(scale, 0.05))  # too few days: a wide guess
    s6 = beta[:, 2:8]
    log_weekday = np.column_stack([s6, -s6.sum(axis=1)])
    day_factor = np.where(m, np.exp(r * (1.0 - rob)), 1.0)
    return SurfaceFit(beta, log_weekday, rob * m, day_factor, sigma, cov, n)


def forecast_surface(fit: SurfaceFit, target_dow: int, damping: float, level: float = LEVEL):
    """(point, low, high), each (G,): S on D+1 (the median of the log-normal
    predictive) and its central `level` interval; 0 for a group never observed.
    Each is exp of its log value clipped to [-30, 30] (e^-30 = 9.4e-14, no
    plays; e^30 = 1.1e13, beyond any surface), so exp cannot overflow."""
    eff = (np.arange(6) == target_dow).astype(float) - float(target_dow == 6)
    c = np.concatenate([[1.0, damping], eff])
    eta = fit.coef @ c
    sd = fit.sigma * np.sqrt(1.0 + np.einsum("i,gij,j->g", c, fit.cov, c))
    q = special.ndtri(0.5 + level / 2)
    seen = fit.observed > 0
    point = np.where(seen, np.exp(np.clip(eta, -30, 30)), 0.0)
    return (point, np.where(seen, np.exp(np.clip(eta - q * sd, -30, 30)), 0.0),
            np.where(seen, np.exp(np.clip(eta + q * sd, -30, 30)), 0.0))


# -------------------------------------------------------------------- tracks ---
def age_bucket(age: np.ndarray | None, n: int, edges=AGE_EDGES) -> np.ndarray:
    """Release-age bucket of each row: 0..len(edges); unknown age -> len(edges)+1."""
    if age is None:
        return np.full(n, len(edges) + 1)
    age = np.asarray(age, float)
    return np.where(np.isfinite(age), np.searchsorted(np.asarray(edges, float), age, side="right"),
                    len(edges) + 1)


def forecast_tracks(plays: np.ndarray, mask: np.ndarray, dow: np.ndarray, target_dow: int,
                    log_weekday: np.ndarray, group: np.ndarray, half_life: float, damping: float,
                    day_factor: np.ndarray | None = None, age: np.ndarray | None = None,
                    selection: np.ndarray | None = None, level: float = LEVEL, prior_sd: float | None = None,
                    first_play_correction: bool = True, nearest: bool = True):
    """(point, low, high), each (N,): each row's plays on D+1.

    plays: (N, T) organic plays; mask: (N, T) observed days, starting at the
        first play (`observed_from_first_play`) of the row or of its
        `selection` group.
    log_weekday: (G, 7) surface weekday effects (`SurfaceFit.log_weekday`),
        `group` (N,) each row's surface; day_factor: (G, T) outlier-day factors.
    age: (N,) days since release on D+1 (the trend prior's buckets).
    selection: (N,) the unit whose first play starts the mask (a track's rows
        on each surface share it): the first day's correction uses the unit's
        chance of no play at all. None: each row is its own unit.
    prior_sd: a fixed trend prior sd instead of the empirical-Bayes one.
    The overdispersion is estimated per surface from its rows' observed days
    (each row's corrected first day left out); a surface with no such day
    (every row's only day is its first play) takes alpha 0.05, a mild
    overdispersion. Rows with no observed day get 0 and a [0, 0] interval. The point is exp of
    the log-mean clipped to [-30, 30] (e^-30 = 9.4e-14 plays, none; e^30 =
    1.1e13, beyond any track), and the interval is taken around that point."""
    y_all = np.asarray(plays, float)
    N, T = y_all.shape
    mask = np.asarray(mask, bool)
    dow = np.asarray(dow)
    group = np.asarray(group)
    off_all = log_weekday[group][:, dow]
    if day_factor is not None:
        off_all = off_all + np.log(np.asarray(day_factor, float)[group])
    point, low, high = np.zeros(N), np.zeros(N), np.zeros(N)
    idx = np.flatnonzero(mask.any(axis=1))
    if not len(idx):
        return point, low, high
    n = len(idx)
    y, mask, off, g = y_all[idx], mask[idx], off_all[idx], group[idx]
    x = np.arange(T) - (T - 1.0)
    w = decay_weights(T, half_life)[None, :] * mask
    first_idx = np.argmax(mask, axis=1)
    first = np.where((first_idx > 0) & first_play_correction, first_idx, -1)
    bucket = age_bucket(None if age is None else np.asarray(age)[idx], n)
    n_buckets = len(AGE_EDGES) + 2
    zeros = np.zeros(n)

    # The first day of a history that starts inside the window was chosen for having a play:
    # E[Y | unit played] = mu / (1 - P0); it enters as y (1 - P0), P0 at the rows' uncorrected decayed
    # level (one shot: iterated, a single play has the degenerate fixed point mu -> 0).
    rows = np.flatnonzero(first >= 0)
    if len(rows):
        lvl = (w[rows] * y[rows]).sum(1) / (w[rows] * np.exp(off[rows])).sum(1)
        mu_first = lvl * np.exp(off[rows, first[rows]])
        if selection is not None:   # P0 of the unit: no play on any of its rows
            unit = np.asarray(selection)[idx][rows]
            codes, inverse = np.unique(unit, return_inverse=True)
            mu_first = np.bincount(inverse, weights=mu_first, minlength=len(codes))[inverse]
        y = y.copy()
        y[rows, first[rows]] *= 1.0 - np.exp(-mu_first)
    G = log_weekday.shape[0]
    # A: Poisson with a weak trend prior (sd 0.1 a day) -> overdispersion per surface
    a, b, inv, J, mu = negbin.irls(y, w, off, x, np.full(n, 1e-8), zeros, np.full(n, 100.0))
    alpha_g = negbin.alpha_by_group(y, w, mu, x, inv, first, g, G, 0.05, MIN_ALPHA)
    alpha = alpha_g[g]
    # B: NB with a nearly flat trend prior -> the empirical-Bayes trend prior per age bucket
    if prior_sd is None:
        tau_b = np.full(n, 1e-2)
        a, b, inv, J, mu = negbin.irls(y, w, off, x, alpha, zeros, tau_b, (a, b))
        var_b = negbin.param_cov(inv, J, tau_b)[:, 1, 1]
        b0_k, sd_k = negbin.trend_prior(b, var_b, bucket, n_buckets, MIN_PRIOR_SD)
    else:
        b0_k, sd_k = np.zeros(n_buckets), np.full(n_buckets, float(prior_sd))
    b0, sd = b0_k[bucket], sd_k[bucket]
    # C: the final NB fit with the shrunk trend
    tau = 1.0 / sd ** 2
    a, b, inv, J, mu = negbin.irls(y, w, off, x, alpha, b0, tau, (a, b))
    c = np.array([1.0, damping])
    var_eta = np.einsum("i,nij,j->n", c, negbin.param_cov(inv, J, tau), c)
    eta = a + damping * b + log_weekday[g, target_dow]
    point[idx] = np.exp(np.clip(eta, -30, 30))
    alpha_eff = alpha + var_eta * (1.0 + alpha)
    tail = (1.0 - level) / 2
    low[idx] = negbin.nb_quantile(tail, point[idx], alpha_eff, True, nearest)
    high[idx] = negbin.nb_quantile(1.0 - tail, point[idx], alpha_eff, False, nearest)
    return point, low, high
