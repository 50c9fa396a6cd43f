"""Listener estimates of docs/design.md §4: empirical-Bayes (beta-binomial) shrinkage of
skip and save rates, and the listener guardrail with its hysteresis.

The prior. A track's true rate q ~ Beta(mean m, strength k). Its mean m and
strength k are fitted together on the market's enrolled tracks of the surface
(`fit_beta_prior`): centring the spread on the all-track baseline instead, as
this module once did, reads the enrolled pool's offset from the catalogue as
between-track variance (pool 3 points above a 0.30 baseline, true k = 245: k
came out 118, so shrinkage was halved and pulled toward the wrong mean). The
baseline (all tracks of the market and surface) stays what value and the
guardrail's threshold are measured against.

Effective trials. The signals are decay-weighted sums s = sum_d w_d s_d,
n = sum_d w_d n_d. The binomial noise of the rate s/n is that of
n_eff = (sum_d w_d n_d)^2 / sum_d w_d^2 n_d trials (>= n, since w <= 1), so
both the prior fit and the posterior use (r n_eff, n_eff): using n as the
sample size overstates the noise and over-shrinks (about 1.5x on a 28-day
window with a 14-day half-life).

The guardrail. A row is pulled back when listeners confidently dislike the
track: its skip rate above the baseline + delta (on the surface, or pooled over
the track's promotion surfaces in the market), or the skip rate of its
promoted plays above that of its organic plays + promoted_guardrail_delta. A
row pulled back in the previous snapshot is reinstated only once its skip
rate is no longer confidently above the lower baseline +
guardrail_reinstate_delta (hysteresis), so a track near the threshold does
not flip in and out day after day.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from pipelines.arrays import compensated_sum
from pipelines.config import Config
from pipelines.scoring.signals import effective_trials
from schemas import PROMOTION_SURFACES


def fit_beta_prior(successes, trials, n_eff, lo: float, hi: float, fallback_mean: float,
                   min_trials: float = 1.0, iters: int = 30) -> tuple[float, float]:
    """(mean, strength) of the Beta prior of the pool's rates successes/trials,
    fitted together by an iterated method of moments.

    With rho = 1/(k+1), Var(r_i) = p(1-p) [rho + (1-rho)/m_i] (m_i: n_eff). The
    mean is the pool's inverse-variance weighted mean; the spread
    S = sum om_i (r_i - p)^2 uses om ~ 1/Var^2 (the inverse variance of a squared
    deviation) and rho solves its exact expectation, which accounts for the
    fitted mean. Rows with trials < min_trials are left out. With fewer than 3
    rows, or no spread beyond the noise, the strength is `hi` (and the mean the
    pooled rate, or `fallback_mean` without a pool). Strength clipped to [lo, hi]."""
    s, n, m = (np.asarray(v, float) for v in (successes, trials, n_eff))
    keep = (n >= min_trials) & (m > 0) & np.isfinite(s)
    s, n, m = s[keep], n[keep], m[keep]
    if len(n) == 0:
        return float(fallback_mean), float(hi)
    r = np.clip(s / n, 0.0, 1.0)
    pooled = float(s.sum() / n.sum())
    if len(n) < 3 or not 0.0 < pooled < 1.0:
        return pooled, float(hi)
    rho_lo, rho_hi = 1.0 / (hi + 1.0), 1.0 / (lo + 1.0)
    rho, p = rho_lo, pooled
    vr, v0 = 1.0 - 1.0 / np.maximum(m, 1.0), 1.0 / np.maximum(m, 1.0)   # Var / p(1-p) = rho vr + v0
    for _ in range(iters):
        V = rho * vr + v0
        u = 1.0 / V
        u /= u.sum()
        p = float(np.sum(u * r))
        if not 0.0 < p < 1.0:
            return pooled, float(hi)
        om = V ** -2.0
        om /= om.sum()
        S = float(np.sum(om * (r - p) ** 2)) / (p * (1 - p))
        A = float(np.sum(om * vr * (1 - 2 * u)) + np.sum(u ** 2 * vr))
        B = float(np.sum(om * v0 * (1 - 2 * u)) + np.sum(u ** 2 * v0))
        new = float(np.clip((S - B) / A, rho_lo, rho_hi)) if A > 0 else rho_lo
        done = abs(new - rho) <= 1e-8 * rho
        rho = new
        if done:
            break
    return p, float(np.clip(1.0 / rho - 1.0, lo, hi))


def shrink(successes, trials, prior_mean, strength):
    """Posterior mean of a rate under a Beta(m k, (1-m) k) prior, given
    (effective) successes and trials."""
    return (np.asarray(successes) + prior_mean * strength) / (np.asarray(trials) + strength)


def effective_counts(w_successes, w_trials, n_eff):
    """(r n_eff, n_eff) with r = w_successes / w_trials: the decay-weighted rate
    as binomial counts of its effective size."""
    w_successes, w_trials = np.asarray(w_successes, float), np.asarray(w_trials, float)
    rate = np.divide(w_successes, w_trials, out=np.zeros(np.broadcast(w_successes, w_trials).shape),
                     where=w_trials > 0)
    return rate * n_eff, np.asarray(n_eff, float)


def prob_above(successes, trials, prior_mean, strength, threshold) -> np.ndarray:
    """Posterior probability that the true rate exceeds `threshold`.

    The Beta survival function is `special.betaincc`, the function
    `stats.beta.sf` calls after its generic argument checks and masking (a
    fixed cost per call, here paid several times per market). a, b > 0 here,
    and betaincc is exactly 1 at 0 and 0 at 1, so a threshold outside [0, 1]
    only needs clipping: 1 at or below 0, and 0 at or above 1, as
    `stats.beta.sf` gives."""
    successes = np.asarray(successes, dtype=float)
    a = np.maximum(prior_mean * strength + successes, 1e-9)
    b = np.maximum((1 - prior_mean) * strength + np.asarray(trials, dtype=float) - successes, 1e-9)
    return special.betaincc(a, b, np.clip(np.asarray(threshold, dtype=float), 0.0, 1.0))


def priors(tot: dict, sig: dict, cfg: Config) -> dict:
    """Per promotion surface (arrays in surface order): the baseline skip and
    save rates of all tracks (mu_*; 0 on a surface without plays), and the Beta
    priors of the enrolled tracks' rates: mean (m_*) and strength (k_*)."""
    rows = []
    for s in range(len(PROMOTION_SURFACES)):
        base_plays = float(tot["w_plays"][s])
        mu_skip = float(tot["w_skips"][s]) / base_plays if base_plays > 0 else 0.0
        mu_save = float(tot["w_saves"][s]) / base_plays if base_plays > 0 else 0.0
        w_plays, n_eff = sig["w_plays"][s], sig["n_eff"][s]
        m_skip, k_skip = fit_beta_prior(sig["w_skips"][s], w_plays, n_eff, cfg.min_prior_strength,
                                        cfg.max_prior_strength, mu_skip)
        m_save, k_save = fit_beta_prior(sig["w_saves"][s], w_plays, n_eff, cfg.min_prior_strength,
                                        cfg.max_prior_strength, mu_save)
        rows.append(dict(mu_skip=mu_skip, mu_save=mu_save, m_skip=m_skip, k_skip=k_skip,
                         m_save=m_save, k_save=k_save))
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def shrunk_rates(sig: dict, prior: dict) -> tuple[np.ndarray, np.ndarray]:
    """(surface, track) skip and save rates shrunk toward the pool's means."""
    out = []
    for kind in ("skip", "save"):
        s, n = effective_counts(sig[f"w_{kind}s"], sig["w_plays"], sig["n_eff"])
        out.append(shrink(s, n, prior[f"m_{kind}"][:, None], prior[f"k_{kind}"][:, None]))
    return out[0], out[1]


def guardrail(sig: dict, prior: dict, undecided: np.ndarray, before: np.ndarray, cfg: Config) -> dict:
    """The listener guardrail on (surface, track) rows, with hysteresis.

    Evaluated where no other rule is broken (`undecided`) and where the row
    was pulled back in the previous snapshot (`before`), so that state carries
    over a day on which another reason applies; elsewhere it decides nothing
    (probabilities NaN, nothing pulled back).

    A row is pulled back when P(skip rate > baseline + guardrail_delta) (the
    larger of its surface's and its pooled test) or P(promoted skip rate >
    organic + promoted_guardrail_delta) is above guardrail_confidence. A row
    pulled back before stays so while the same tests, with both deltas lowered
    to guardrail_reinstate_delta's margin, still are: the band is in the rate,
    where a sliding window moves a track's estimate slowly (a band in the
    probability, which a one-sd move of the estimate takes from 0.9 to 0.5,
    let hovering tracks flip twice in 14 days).

    Returns (surface, track) arrays: `probability` and `promoted_probability`
    (at the pull-back deltas), `disliked` and `promoted_disliked` (pulled back
    for that reason; disliked first) and `pulled_back` (either)."""
    evaluate = undecided | before
    margin = cfg.guardrail_delta - cfg.guardrail_reinstate_delta
    pull = _probabilities(sig, prior, evaluate, 0.0, cfg)
    conf = cfg.guardrail_confidence
    disliked, promoted = pull[0] > conf, pull[1] > conf
    if before.any():
        stay = _probabilities(sig, prior, before, margin, cfg)
        disliked = np.where(before, stay[0] > conf, disliked)
        promoted = np.where(before, stay[1] > conf, promoted)
    disliked &= evaluate
    promoted &= evaluate & ~disliked
    return {"probability": np.where(evaluate, pull[0], np.nan), "promoted_probability":
            np.where(evaluate, pull[1], np.nan), "disliked": disliked, "promoted_disliked": promoted,
            "pulled_back": disliked | promoted}


def _probabilities(sig: dict, prior: dict, rows: np.ndarray, lower: float, cfg: Config):
    """(surface, track) probabilities of the two tests on `rows` (0 elsewhere),
    with both deltas lowered by `lower`."""
    delta = cfg.guardrail_delta - lower
    pooled, pooled_promoted = _pooled_probabilities(sig, prior, rows.any(axis=0), delta,
                                                    max(cfg.promoted_guardrail_delta - lower, 0.0))
    prob = np.zeros(rows.shape)
    at = np.nonzero(rows)
    s, n = effective_counts(sig["w_skips"][at], sig["w_plays"][at], sig["n_eff"][at])
    surface = at[0]
    mu = prior["mu_skip"][surface]
    by_surface = np.where((mu > 0) & (mu + delta < 1),
                          prob_above(s, n, prior["m_skip"][surface], prior["k_skip"][surface], mu + delta), 0.0)
    prob[at] = np.maximum(by_surface, pooled[at[1]])
    promoted = np.zeros(rows.shape)
    promoted[at] = pooled_promoted[at[1]]
    return prob, promoted


def _pooled_probabilities(sig: dict, prior: dict, needed: np.ndarray, delta: float, promoted_delta: float):
    """Per track, on the evidence of all its promotion surfaces in the market
    (dislike is a property of the track, and pooling gives the tests power on
    tracks whose plays are spread thin): P(skip rate > the play-weighted mix of
    the surfaces' baselines + delta), and P(promoted skip rate > organic skip
    rate + promoted_delta, the promoted rate's prior centred on the organic
    one), under the weakest of the surfaces' priors, centred on the
    play-weighted mix of their means. Only `needed` tracks are tested; the
    others get 0."""
    n = sig["w_plays"].shape[1]
    terms = np.stack([sig["w_plays"], sig["w_skips"], sig["w2_plays"], prior["mu_skip"][:, None] * sig["w_plays"],
                      prior["m_skip"][:, None] * sig["w_plays"], sig["w_promoted_plays"], sig["w_promoted_skips"],
                      sig["w2_promoted_plays"], sig["w_known_plays"], sig["w_known_skips"],
                      sig["w2_known_plays"]], axis=1)
    (plays, skips, w2, mu_plays, m_plays, p_plays, p_skips, p_w2, k_plays, k_skips,
     k_w2) = compensated_sum(terms)
    safe = np.where(plays > 0, plays, 1.0)
    mu, m = np.where(plays > 0, mu_plays / safe, 0.0), np.where(plays > 0, m_plays / safe, 0.0)
    k = float(np.min(prior["k_skip"]))
    pooled = np.zeros(n)
    ok = needed & (mu > 0) & (mu < 1) & (mu + delta < 1)
    if ok.any():
        s, trials = effective_counts(skips[ok], plays[ok], effective_trials(plays[ok], w2[ok]))
        pooled[ok] = prob_above(s, trials, m[ok], k, mu[ok] + delta)
    promoted = np.zeros(n)
    o_plays, o_skips, o_w2 = k_plays - p_plays, k_skips - p_skips, k_w2 - p_w2
    ok = needed & (p_plays > 0) & (o_plays > 0) & (m > 0) & (m < 1)
    if ok.any():
        # the organic rate, shrunk toward the pool; the promoted rate's prior is centred on it ("promoted
        # plays are skipped like organic ones"), so only promoted evidence moves it away
        so, no = effective_counts(o_skips[ok], o_plays[ok], effective_trials(o_plays[ok], o_w2[ok]))
        organic = shrink(so, no, m[ok], k)
        sp, np_ = effective_counts(p_skips[ok], p_plays[ok], effective_trials(p_plays[ok], p_w2[ok]))
        threshold = organic + promoted_delta
        promoted[ok] = np.where(threshold < 1, prob_above(sp, np_, organic, k, threshold), 0.0)
    return pooled, promoted
