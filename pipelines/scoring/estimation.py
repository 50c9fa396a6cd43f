"""Listener estimates of DESIGN §4: empirical-Bayes (beta-binomial) shrinkage of
skip and save rates toward the (market, surface) baseline, and the listener
guardrail (skip rate confidently above baseline + delta)."""
from __future__ import annotations

import numpy as np
from scipy import special

from pipelines.arrays import compensated_sum
from pipelines.config import Config
from schemas import PROMOTION_SURFACES


def prior_strength(successes: np.ndarray, trials: np.ndarray, baseline: float,
                   lo: float, hi: float) -> float:
    """Beta-binomial prior strength (alpha+beta) by the method of moments:
    the between-track variance is the observed variance of the rates minus the
    binomial noise expected at these sample sizes. Clipped to [lo, hi]."""
    mask = trials >= 1.0
    if mask.sum() < 3 or not 0.0 < baseline < 1.0:
        return float(hi)
    n = trials[mask]
    r = successes[mask] / n
    w = n / n.sum()
    observed = float(np.sum(w * (r - baseline) ** 2))
    noise = baseline * (1 - baseline) * float(np.sum(w / n))
    between = observed - noise
    if between <= 1e-12:
        return float(hi)
    k = baseline * (1 - baseline) / between - 1.0
    return float(np.clip(k, lo, hi))


def shrink(successes, trials, baseline: float, strength: float):
    """Posterior mean of a rate under a Beta(baseline*k, (1-baseline)*k) prior."""
    return (np.asarray(successes) + baseline * strength) / (np.asarray(trials) + strength)


def prob_above(successes, trials, baseline: float, strength: float, threshold: float) -> np.ndarray:
    """Posterior probability that the true rate exceeds `threshold`.

    The Beta survival function is `special.betaincc`, the function
    `stats.beta.sf` calls after its generic argument checks and masking (a
    fixed cost per call, here paid several times per market). a, b > 0 here,
    so only the support's ends need care: 1 at or below a threshold of 0, and
    0 at or above 1, as `stats.beta.sf` gives."""
    a = baseline * strength + np.asarray(successes, dtype=float)
    b = (1 - baseline) * strength + np.asarray(trials, dtype=float) - np.asarray(successes, dtype=float)
    a = np.maximum(a, 1e-9)
    b = np.maximum(b, 1e-9)
    threshold = np.asarray(threshold, dtype=float)
    x = np.minimum(threshold, 1.0)
    sf = np.where(x <= 0.0, 1.0, special.betaincc(a, b, np.maximum(x, 0.0)))
    return np.where(threshold >= 1.0, 0.0, sf)


def priors(tot: dict, sig: dict, cfg: Config) -> dict:
    """Per promotion surface (arrays in surface order): base plays, baseline
    skip and save rates, and the prior strengths of the tracks' rates."""
    rows = []
    for s in range(len(PROMOTION_SURFACES)):
        base_plays = float(tot["w_plays"][s])
        mu_skip = float(tot["w_skips"][s]) / base_plays if base_plays > 0 else 0.0
        mu_save = float(tot["w_saves"][s]) / base_plays if base_plays > 0 else 0.0
        w_plays = sig["w_plays"][s]
        rows.append(dict(
            base_plays=base_plays, mu_skip=mu_skip, mu_save=mu_save,
            k_skip=prior_strength(sig["w_skips"][s], w_plays, mu_skip, cfg.min_prior_strength,
                                  cfg.max_prior_strength),
            k_save=prior_strength(sig["w_saves"][s], w_plays, mu_save, cfg.min_prior_strength,
                                  cfg.max_prior_strength)))
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def guardrail(sig: dict, prior: dict, undecided: np.ndarray, cfg: Config) -> np.ndarray:
    """(surface, track) "listeners dislike": skip rate confidently above the
    baseline + delta on the surface, or on the track's pooled surfaces
    (`_disliked_in_market`).

    It is the last reason, so it is evaluated only where no other rule is
    broken (`undecided`; False elsewhere, where it decides nothing): the Beta
    tail is the costliest step of a market."""
    disliked = np.broadcast_to(
        _disliked_in_market(sig["w_plays"], sig["w_skips"], prior["mu_skip"], prior["k_skip"],
                            undecided.any(axis=0), cfg), undecided.shape).copy()
    test = undecided & ~disliked
    if test.any():
        mu = np.broadcast_to(prior["mu_skip"][:, None], test.shape)[test]
        k = np.broadcast_to(prior["k_skip"][:, None], test.shape)[test]
        disliked[test] = (prob_above(sig["w_skips"][test], sig["w_plays"][test], mu, k,
                                     mu + cfg.guardrail_delta) > cfg.guardrail_confidence)
    return disliked


def _disliked_in_market(w_plays: np.ndarray, w_skips: np.ndarray, mu_skip: np.ndarray, k_skip: np.ndarray,
                        needed: np.ndarray, cfg: Config) -> np.ndarray:
    """Guardrail on the evidence of all promotion surfaces of a track in the
    market: dislike is a property of the track, and pooling gives the test power
    on tracks whose plays are spread thin. Observed skips are compared with the
    play-weighted mix of the surfaces' baselines, under the weakest of their
    priors. (surface, track) arrays and per-surface baselines in, a bool per
    track out; only `needed` tracks are tested, the others are False."""
    n = w_plays.shape[1]
    plays, skips, mu_plays = compensated_sum(np.stack([w_plays, w_skips, mu_skip[:, None] * w_plays], axis=1))
    mu = np.where(plays > 0, mu_plays / np.where(plays > 0, plays, 1.0), 0.0)
    defined = (mu > 0) & (mu < 1) & (mu + cfg.guardrail_delta < 1) & needed
    probs = np.zeros(n)
    if defined.any():
        probs[defined] = prob_above(skips[defined], plays[defined], mu[defined], np.min(k_skip),
                                    mu[defined] + cfg.guardrail_delta)
    return probs > cfg.guardrail_confidence
