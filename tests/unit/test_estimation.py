"""Listener estimates (pipelines/scoring/estimation.py) on planted truth: the
prior fitted on the enrolled pool, the effective sample size of decay-weighted
rates, the promoted-vs-organic guardrail and its hysteresis."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import Config
from pipelines.scoring import estimation, signals

TRUE_K = 245.0
HL = 14.0
W28 = np.power(0.5, np.arange(27, -1, -1) / HL)


def _pool(seed: int, pool_mean: float, n_tracks: int = 1500, strength: float = TRUE_K):
    """An enrolled pool: true rates ~ Beta(pool_mean, strength), Zipf daily
    plays over 28 days, decay-weighted as the pipeline weighs them."""
    rng = np.random.default_rng(seed)
    q = rng.beta(pool_mean * strength, (1 - pool_mean) * strength, n_tracks)
    lam = np.maximum(2000.0 * np.arange(1, n_tracks + 1) ** -0.9, 0.3)[rng.permutation(n_tracks)]
    plays = rng.poisson(lam[:, None] * rng.gamma(25.0, 1 / 25.0, (n_tracks, 28)))
    succ = rng.binomial(plays, q[:, None])
    w_trials, w2 = (plays * W28).sum(1), (plays * W28 ** 2).sum(1)
    return (succ * W28).sum(1), w_trials, signals.effective_trials(w_trials, w2)


def _centred_on_baseline(successes, trials, baseline, lo=5.0, hi=2000.0) -> float:
    """The method of moments this module used before: the spread around the
    all-track baseline, with the weighted plays as the binomial sample size."""
    mask = trials >= 1.0
    n, r = trials[mask], successes[mask] / trials[mask]
    w = n / n.sum()
    between = float(np.sum(w * (r - baseline) ** 2)) - baseline * (1 - baseline) * float(np.sum(w / n))
    return float(np.clip(baseline * (1 - baseline) / between - 1.0, lo, hi)) if between > 1e-12 else hi


CASES = [(0.30, 0.33), (0.05, 0.08)]     # (catalogue baseline, enrolled pool mean): the pool 3 points above


@pytest.mark.parametrize("baseline,pool_mean", CASES, ids=["skip", "save"])
def test_prior_strength_within_15_percent_with_the_pool_3_points_above_the_baseline(baseline, pool_mean):
    ks, means = [], []
    for seed in range(8):
        s, n, n_eff = _pool(seed, pool_mean)
        mean, k = estimation.fit_beta_prior(s, n, n_eff, 5.0, 2000.0, baseline)
        ks.append(k)
        means.append(mean)
    s, n, n_eff = _pool(0, pool_mean)
    old = _centred_on_baseline(s, n, baseline)
    no_neff = estimation.fit_beta_prior(s, n, n, 5.0, 2000.0, baseline)[1]
    err = np.array(ks) / TRUE_K - 1
    print(f"\npool {pool_mean} vs baseline {baseline}, planted k = {TRUE_K:.0f}: fitted k "
          f"{', '.join(f'{k:.0f}' for k in ks)} (errors {', '.join(f'{e:+.1%}' for e in err)}); "
          f"means {np.mean(means):.4f}; centred on the baseline (before) k = {old:.0f}; "
          f"pool-centred but weighted plays as the sample size k = {no_neff:.0f}")
    assert np.all(np.abs(err) <= 0.15)
    assert np.all(np.abs(np.array(means) - pool_mean) < 0.005)
    assert old < 0.7 * TRUE_K            # what the baseline-centred fit did: shrinkage halved
    assert no_neff > 1.3 * TRUE_K        # why the effective sample size is needed


@pytest.mark.parametrize("baseline,pool_mean", CASES, ids=["skip", "save"])
def test_prior_strength_is_unbiased_over_40_pools(baseline, pool_mean):
    """The fit's own sampling error at this pool size (1,500 tracks, most of
    them sparse) is about 7%: over 40 planted pools its mean error is near 0
    and nearly all land within 15% (the 8 pools above all do)."""
    err = np.array([estimation.fit_beta_prior(*_pool(seed, pool_mean), 5.0, 2000.0, baseline)[1] / TRUE_K - 1
                    for seed in range(100, 140)])
    print(f"\npool {pool_mean}, 40 pools: mean error {err.mean():+.1%}, sd {err.std():.1%}, "
          f"within 15%: {np.mean(np.abs(err) <= 0.15):.0%}, range {err.min():+.1%} .. {err.max():+.1%}")
    assert abs(err.mean()) < 0.04
    assert np.mean(np.abs(err) <= 0.15) >= 0.85


def test_effective_trials_of_decay_weighted_counts():
    """(sum w n)^2 / sum w^2 n: n for one day, and for equal daily plays
    n_days * (sum w)^2 / (n_days * sum w^2) times the daily plays."""
    assert signals.effective_trials(np.array([7.0]), np.array([7.0]))[0] == 7.0
    daily = 10.0
    n_eff = signals.effective_trials((daily * W28).sum(), (daily * W28 ** 2).sum())
    assert n_eff == pytest.approx(daily * W28.sum() ** 2 / (W28 ** 2).sum())
    assert (daily * W28).sum() < n_eff < 28 * daily
    assert signals.effective_trials(np.array([0.0]), np.array([0.0]))[0] == 0.0
    assert signals.effective_trials(np.array([0.5]), np.array([0.25]))[0] == 1.0   # one play weighing 0.5
    s, n = estimation.effective_counts(np.array([0.25, 0.0]), np.array([0.5, 0.0]), np.array([1.0, 0.0]))
    assert s.tolist() == [0.5, 0.0] and n.tolist() == [1.0, 0.0]   # the rate of half-weighted plays; none


def test_effective_counts_of_a_row_without_plays_are_zero_whatever_memory_held():
    """Where no plays were weighed the rate is 0, not read from memory: numpy hands a
    freed block of the same size to the next array, so a division that leaves those
    rows unwritten (no `out`, or out=None) returns the NaN freed just before. Catches
    exactly that."""
    for n in (2, 4, 16, 64):
        trials = np.zeros(n)
        trials[::2] = 4.0
        successes = trials / 4
        junk = np.full(n, np.nan)
        del junk
        s, n_eff = estimation.effective_counts(successes, trials, np.ones(n))
        assert s.tolist() == [0.25 if i % 2 == 0 else 0.0 for i in range(n)], n
        assert n_eff.tolist() == [1.0] * n


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 200), p=st.floats(0.02, 0.9), k=st.floats(5, 3000))
def test_prior_fit_properties(seed, n, p, k):
    rng = np.random.default_rng(seed)
    trials = rng.integers(1, 400, n).astype(float)
    succ = rng.binomial(trials.astype(int), rng.beta(p * k, (1 - p) * k, n)).astype(float)
    mean, strength = estimation.fit_beta_prior(succ, trials, trials, 5.0, 2000.0, 0.5)
    assert 5.0 <= strength <= 2000.0
    r = succ / trials
    assert r.min() - 1e-12 <= mean <= r.max() + 1e-12
    perm = rng.permutation(n)
    assert estimation.fit_beta_prior(succ[perm], trials[perm], trials[perm], 5.0, 2000.0, 0.5) == pytest.approx(
        (mean, strength), rel=1e-9)


def _moment_root(r, m, lo, hi):
    """An oracle for fit_beta_prior written apart from it: rho = 1/(k+1) is the
    root of  S(rho) = E[S](rho)  in [1/(hi+1), 1/(lo+1)], where, with
    Sigma = diag(rho + (1-rho)/m) (Var(r_i) / p(1-p)), the mean is the
    inverse-variance weighted p = u.r, deviations d = (I - 1 u^T) r, S =
    d^T Om d / p(1-p) with Om = diag(Sigma^-2) normalised, and E[S] is the
    trace tr(Om (I - 1 u^T) Sigma (I - 1 u^T)^T), here as matrices (the code
    sums terms). Found with brentq; a bound when no root lies inside."""
    from scipy.optimize import brentq

    m = np.maximum(m, 1.0)

    def parts(rho):
        sigma = rho + (1 - rho) / m
        u = (1 / sigma) / (1 / sigma).sum()
        om = sigma ** -2.0 / (sigma ** -2.0).sum()
        p = float(u @ r)
        proj = np.eye(len(r)) - np.outer(np.ones(len(r)), u)
        d = proj @ r
        expected = np.trace(np.diag(om) @ proj @ np.diag(sigma) @ proj.T)
        return p, float(d @ (om * d)) / (p * (1 - p)) - expected

    a, b = 1 / (hi + 1), 1 / (lo + 1)
    fa, fb = parts(a)[1], parts(b)[1]
    if fa <= 0:   # no spread beyond the noise even at the largest strength
        rho = a
    elif fb >= 0:
        rho = b
    else:
        rho = brentq(lambda x: parts(x)[1], a, b, xtol=1e-14, rtol=1e-12)
    return parts(rho)[0], 1 / rho - 1


@pytest.mark.parametrize("seed", range(12))
def test_prior_fit_solves_its_moment_equation_on_small_pools(seed):
    """On pools of 3-8 rows with effective trials between 1 and 60 (where the
    1/N corrections of the expectation matter), fit_beta_prior returns the
    root of its moment equation found by an independent oracle (matrix form,
    brentq): catches a wrong term, sign or weight in the expectation, the mean
    or the variance model."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    m = rng.uniform(1.0, 60.0, n)
    m[0] = rng.uniform(1.0, 2.0)   # a row of about one effective play
    q = rng.beta(0.3 * 40, 0.7 * 40, n)
    succ = rng.binomial(np.ceil(m).astype(int), q) * (m / np.ceil(m))
    mean, strength = estimation.fit_beta_prior(succ, m, m, 2.0, 5000.0, 0.5, min_trials=0.5)
    want_mean, want_k = _moment_root(succ / m, m, 2.0, 5000.0)
    assert mean == pytest.approx(want_mean, rel=1e-7)
    assert strength == pytest.approx(want_k, rel=1e-6)


def test_prior_fit_leaves_out_rows_without_enough_trials_and_reaches_its_bounds():
    """Rows below min_trials or without effective trials are left out (the
    fit equals the fit without them); three rows are enough to fit; a pool
    spread far beyond its noise is clipped at the lowest strength, and one
    with no spread at the highest."""
    succ, trials = np.array([1.0, 30.0, 60.0, 90.0]), np.array([100.0, 100.0, 100.0, 100.0])
    three = estimation.fit_beta_prior(succ[1:], trials[1:], trials[1:], 2.0, 5000.0, 0.5)
    assert three[1] < 5000.0                   # three rows are fitted, not given the default strength
    few = estimation.fit_beta_prior(np.r_[0.0, succ[1:]], np.r_[3.0, trials[1:]], np.r_[3.0, trials[1:]],
                                    2.0, 5000.0, 0.5, min_trials=5.0)
    assert few == pytest.approx(three, rel=1e-12)
    no_eff = estimation.fit_beta_prior(succ, trials, np.r_[0.0, trials[1:]], 2.0, 5000.0, 0.5)
    assert no_eff == pytest.approx(three, rel=1e-12)
    n_eff = np.array([100.0, 20.0, 50.0, 10.0])
    spread = estimation.fit_beta_prior(np.array([1.0, 99.0, 2.0, 98.0]), trials, n_eff, 3.0, 5000.0, 0.5)
    assert spread[1] == 3.0
    assert spread[0] == pytest.approx(_moment_root(np.array([0.01, 0.99, 0.02, 0.98]), n_eff, 3.0, 5000.0)[0],
                                      rel=1e-9)   # the mean weighted at the lowest strength
    assert abs(spread[0] - 0.5) > 0.01          # which the weights move off the plain mean
    # one effective play each: no spread is measurable beyond the noise (the expectation's slope A is 0)
    assert estimation.fit_beta_prior(np.array([0.0, 1.0, 1.0]), np.ones(3), np.ones(3), 3.0, 5000.0, 0.5) == (
        pytest.approx(2 / 3), 5000.0)
    flat = estimation.fit_beta_prior(np.full(4, 30.0), trials, trials, 3.0, 5000.0, 0.5)
    assert flat == (pytest.approx(0.3), 5000.0)


# ------------------------------------------------------------------ guardrail ---
BASE, POOL, K = 0.30, 0.31, TRUE_K
PRIOR = {"mu_skip": np.full(3, BASE), "m_skip": np.full(3, POOL), "k_skip": np.full(3, K)}
DAY0 = 20_000


def _signals(plays, skips, promoted=None, promoted_skips=None, as_of_num=DAY0):
    """Window signals of one track (radio only) from its daily counts, through
    the pipeline's own `track_signals`."""
    T = len(plays)
    days = np.arange(as_of_num - T + 1, as_of_num + 1)
    zeros = np.zeros(T, dtype=np.int64)
    promoted = zeros if promoted is None else promoted
    agg = pd.DataFrame({"dt": days.astype("datetime64[D]"), "track_id": "t", "market": "SE", "surface": "radio",
                        "plays": plays, "listeners": plays, "skips": skips, "saves": zeros,
                        "promoted_plays": promoted, "ms_played": zeros,
                        "promoted_skips": zeros if promoted_skips is None else promoted_skips,
                        "promoted_saves": zeros})
    sig, _ = signals.track_signals(np.array(["t"], dtype=object), np.array([0]), agg, days[-28:],
                                   lambda d: np.power(0.5, (as_of_num - d) / HL), as_of_num)
    return sig


def _guard(sig, before=False, cfg=Config()):
    return estimation.guardrail(sig, PRIOR, np.ones((3, 1), bool), np.full((3, 1), before), cfg)


@pytest.mark.parametrize("promoted_skip, pulled", [(0.45, True), (0.30, False)], ids=["disliked", "control"])
def test_promoted_plays_skipped_more_than_organic_ones_pull_the_track_back(promoted_skip, pulled):
    """20 tracks, each with 60 organic plays a day skipped at 0.30 (the
    baseline) and 20 promoted plays a day skipped at `promoted_skip`, 28 days:
    every one pulled back for its promoted plays, or none."""
    probs, overall, decided = [], [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        organic, promoted = rng.poisson(60, 28), rng.poisson(20, 28)
        o_skips, p_skips = rng.binomial(organic, 0.30), rng.binomial(promoted, promoted_skip)
        g = _guard(_signals(organic + promoted, o_skips + p_skips, promoted, p_skips))
        probs.append(g["promoted_probability"][0, 0])
        overall.append(g["probability"][0, 0])
        decided.append((bool(g["promoted_disliked"][0, 0]), bool(g["disliked"][0, 0])))
    print(f"\npromoted {promoted_skip} / organic 0.30, 20 tracks: P(promoted > organic + delta) "
          f"{min(probs):.4f} .. {max(probs):.4f}; P(skip > baseline + delta) up to {max(overall):.4f}; "
          f"pulled back {sum(d[0] for d in decided)} of 20")
    assert all(d == (pulled, False) for d in decided)   # and the overall skip rate alone pulls none back


def _states_over_days(q: float, seed: int, cfg: Config, days: int = 14, per_day: float = 60) -> list[bool]:
    """The guardrail's decision on each of `days` consecutive days, each with the
    previous day's decision as its state, for a track skipped at rate q."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(per_day, 28 + days)
    k = rng.binomial(n, q)
    before, states = False, []
    for day in range(days):
        g = _guard(_signals(n[day:day + 28], k[day:day + 28], as_of_num=DAY0 + day), before, cfg)
        before = bool(g["pulled_back"][0, 0])
        states.append(before)
    return states


def test_a_track_hovering_at_the_threshold_flips_at_most_once_in_14_days():
    """Tracks whose true skip rate sits where the pull-back probability hovers
    around guardrail_confidence (0.365-0.37 against 0.35 = baseline + delta,
    under the prior): without hysteresis (reinstate_delta = delta) they flip in
    and out; with it none flips more than once over 14 consecutive days."""
    hysteresis, none = Config(), Config(guardrail_reinstate_delta=Config().guardrail_delta)
    flips = {"hysteresis": [], "none": []}
    for q in (0.365, 0.37):
        for seed in range(15):
            for name, cfg in (("hysteresis", hysteresis), ("none", none)):
                states = _states_over_days(q, seed, cfg)
                flips[name].append(int(np.sum(np.diff(states) != 0)))
    with_, without = np.array(flips["hysteresis"]), np.array(flips["none"])
    print(f"\nflips over 14 days, 30 hovering tracks: with hysteresis max {with_.max()} (mean {with_.mean():.2f}, "
          f"ever pulled back {np.mean(with_ > 0):.0%}); without max {without.max()} (mean {without.mean():.2f})")
    assert with_.max() <= 1
    assert without.max() >= 3 and without.mean() > 1.5 * with_.mean()   # the tracks do hover


def test_a_pulled_back_track_is_reinstated_once_listeners_stop_skipping():
    """Hysteresis is not a life sentence: a track pulled back yesterday whose
    skip rate is the baseline's is reinstated."""
    rng = np.random.default_rng(2)
    n = rng.poisson(60, 28)
    g = _guard(_signals(n, rng.binomial(n, 0.30)), before=True)
    assert not g["pulled_back"][0, 0]
    n = rng.poisson(60, 28)
    g = _guard(_signals(n, rng.binomial(n, 0.45)), before=False)
    assert g["disliked"][0, 0]


def test_the_guardrail_decides_nothing_where_it_is_not_evaluated():
    sig = _signals(np.full(28, 60), np.full(28, 40))          # skipped two times in three
    g = estimation.guardrail(sig, PRIOR, np.zeros((3, 1), bool), np.zeros((3, 1), bool), Config())
    assert not g["pulled_back"].any() and np.isnan(g["probability"]).all()
    g = estimation.guardrail(sig, PRIOR, np.zeros((3, 1), bool), np.array([[True], [False], [False]]), Config())
    assert g["pulled_back"][0, 0] and not g["pulled_back"][1:].any() and not np.isnan(g["probability"][0, 0])


def test_days_without_promoted_skips_leave_the_promoted_test_alone():
    """A format-1 day (promoted_skips null) counts for plays and skips, but
    not for the promoted-vs-organic comparison: its promoted plays' skips are
    unknown, not zero."""
    sig = _signals(np.full(28, 60), np.full(28, 18), np.full(28, 20), np.full(28, 9))
    plays, promoted = np.full(28, 60), np.full(28, 20)
    T = 28
    days = np.arange(DAY0 - T + 1, DAY0 + 1)
    agg = pd.DataFrame({"dt": days.astype("datetime64[D]"), "track_id": "t", "market": "SE", "surface": "radio",
                        "plays": plays, "listeners": plays, "skips": np.full(T, 18), "saves": 0,
                        "promoted_plays": promoted, "ms_played": 0,
                        "promoted_skips": pd.array([None] * 10 + [9] * 18, dtype="Int64"), "promoted_saves": 0})
    legacy, _ = signals.track_signals(np.array(["t"], dtype=object), np.array([0]), agg, days,
                                      lambda d: np.power(0.5, (DAY0 - d) / HL), DAY0)
    assert legacy["w_plays"][0, 0] == pytest.approx(sig["w_plays"][0, 0])            # plays: every day
    assert legacy["w_known_plays"][0, 0] == pytest.approx((60 * W28[10:]).sum())        # known: 18 days
    assert legacy["w_promoted_skips"][0, 0] == pytest.approx((9 * W28[10:]).sum())
    assert legacy["promoted_skips"][0, 0] == 9 * 18


def test_baselines_are_weighted_skips_and_saves_over_weighted_plays():
    """priors' mu_*: a surface's decay-weighted skips (saves) over its
    weighted plays, also when those plays weigh less than one (a single old
    play); 0 on a surface without plays. Every key is one value per surface."""
    tot = {"w_plays": np.array([0.5, 0.0, 200.0]), "w_skips": np.array([0.25, 0.0, 50.0]),
           "w_saves": np.array([0.125, 0.0, 20.0])}
    sig = signals.track_signals(np.array(["t"], dtype=object), np.array([0]), pd.DataFrame(
        {"dt": np.array([DAY0]).astype("datetime64[D]"), "track_id": "t", "market": "SE", "surface": "radio",
         "plays": [10], "listeners": [10], "skips": [2], "saves": [1], "promoted_plays": [0], "ms_played": [0],
         "promoted_skips": [0], "promoted_saves": [0]}), np.array([DAY0]), lambda d: np.ones(len(d)), DAY0)[0]
    prior = estimation.priors(tot, sig, Config())
    np.testing.assert_allclose(prior["mu_skip"], [0.5, 0.0, 0.25])
    np.testing.assert_allclose(prior["mu_save"], [0.25, 0.0, 0.1])
    assert set(prior) == {"mu_skip", "mu_save", "m_skip", "k_skip", "m_save", "k_save"}
    assert all(v.shape == (3,) and v.dtype == float for v in prior.values())


SUM_NAMES = ("w_plays", "w_skips", "w2_plays", "w_promoted_plays", "w_promoted_skips", "w2_promoted_plays",
             "w_known_plays", "w_known_skips", "w2_known_plays")


def _hand_sums(rows: dict) -> dict:
    """Window signals of hand-set sums: rows {track: (surface, *values in SUM_NAMES order)}, each track
    on one surface; n_eff derived from the weighted plays as the pipeline does."""
    sig = {name: np.zeros((3, len(rows))) for name in SUM_NAMES}
    for t, (surface, *values) in rows.items():
        for name, v in zip(SUM_NAMES, values):
            sig[name][surface, t] = v
    sig["n_eff"] = signals.effective_trials(sig["w_plays"], sig["w2_plays"])
    return sig


def test_pooled_probabilities_by_hand():
    """The pooled tests of the guardrail on hand-set sums, each track on one
    surface (so its baseline and prior mean are that surface's), against
    scipy's Beta survival function written from the docstring: the skip test
    P(rate > mu + delta) and the promoted test P(promoted rate > shrunk organic
    rate + promoted_delta), under the weakest prior. Edge rows: no plays, less
    than one weighted play, a baseline of 0, a track not asked for, no promoted
    or no organic plays, under one play of either, and a threshold at or past 1:
    each 0 where the test cannot be made."""
    from scipy import stats

    prior = {"mu_skip": np.array([0.3, 0.0, 0.6]), "m_skip": np.array([0.32, 0.0, 0.6]),
             "k_skip": np.array([2.0, 5.0, 5.0])}
    #        surface plays skips w2   p_plays p_skips p_w2  k_plays k_skips k_w2
    rows = {0: (0, 40.0, 20.0, 40.0, 10.0, 8.0, 10.0, 40.0, 20.0, 40.0),
            1: (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),          # no plays
            2: (0, 0.5, 0.5, 0.25, 0.0, 0.0, 0.0, 0.5, 0.5, 0.25),        # one old play, no promoted
            3: (1, 40.0, 5.0, 40.0, 10.0, 5.0, 10.0, 40.0, 5.0, 40.0),    # baseline and prior mean 0
            4: (0, 40.0, 30.0, 40.0, 10.0, 9.0, 10.0, 40.0, 30.0, 40.0),  # not needed
            5: (0, 40.0, 10.0, 40.0, 0.5, 0.5, 0.25, 40.0, 10.0, 40.0),   # half a promoted play
            6: (0, 10.0, 5.0, 10.0, 10.0, 5.0, 10.0, 10.0, 5.0, 10.0),    # no organic plays
            7: (0, 10.5, 2.5, 10.25, 10.0, 2.0, 10.0, 10.5, 2.5, 10.25),  # half an organic play
            8: (0, 40.0, 39.0, 40.0, 10.0, 10.0, 10.0, 40.0, 39.0, 40.0), # promoted threshold past 1
            9: (2, 40.0, 30.0, 40.0, 10.0, 9.0, 10.0, 40.0, 30.0, 40.0)}  # the mixes surface
    sig = _hand_sums(rows)
    needed = np.array([t != 4 for t in rows])
    delta, promoted_delta, k = 0.05, 0.1, 2.0
    pooled, promoted = estimation._pooled_probabilities(sig, prior, needed, delta, promoted_delta)

    def counts(successes, trials, w2):   # a rate of weighted counts as binomial counts of n_eff trials
        n_eff = trials ** 2 / w2
        return successes / trials * n_eff, n_eff

    want_pooled, want_promoted = np.zeros(len(rows)), np.zeros(len(rows))
    for t, (surface, plays, skips, w2, p_plays, p_skips, p_w2, k_plays, k_skips, k_w2) in rows.items():
        mu, m = prior["mu_skip"][surface], prior["m_skip"][surface]
        if not needed[t] or plays == 0:
            continue
        if 0 < mu and mu + delta < 1:
            s, n = counts(skips, plays, w2)
            want_pooled[t] = stats.beta.sf(mu + delta, m * k + s, (1 - m) * k + n - s)
        o_plays = k_plays - p_plays
        if p_plays > 0 and o_plays > 0 and 0 < m < 1:
            so, no = counts(k_skips - p_skips, o_plays, k_w2 - p_w2)
            organic = (so + m * k) / (no + k)
            sp, n_p = counts(p_skips, p_plays, p_w2)
            if organic + promoted_delta < 1:
                want_promoted[t] = stats.beta.sf(organic + promoted_delta, organic * k + sp,
                                                 (1 - organic) * k + n_p - sp)
    np.testing.assert_allclose(pooled, want_pooled, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(promoted, want_promoted, rtol=1e-9, atol=1e-15)
    # the edge rows are what they are meant to be
    assert pooled[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0] and pooled[[0, 2, 9]].min() > 0
    assert promoted[[1, 2, 3, 4, 6, 8]].tolist() == [0.0] * 6 and promoted[[0, 5, 7, 9]].min() > 0


# (surface, plays, skips, promoted plays, promoted skips); unit weights, so n_eff = plays
_GUARD_ROWS = {0: (0, 40.0, 30.0, 10.0, 10.0),  # disliked by both tests
               1: (1, 40.0, 5.0, 0.0, 0.0),     # on a surface whose baseline is 0
               2: (0, 60.0, 24.0, 0.0, 0.0),    # between the tests: the surface's prior is the stronger
               3: (0, 40.0, 12.0, 10.0, 5.0),   # not evaluated
               4: (2, 60.0, 21.0, 20.0, 11.0)}   # promoted skips above organic ones
_GUARD_PRIOR = {"mu_skip": np.array([0.3, 0.0, 0.3]), "m_skip": np.array([0.45, 0.0, 0.3]),
                "k_skip": np.array([60.0, 5.0, 8.0])}


def _guard_sig():
    return _hand_sums({t: (s, plays, skips, plays, p_plays, p_skips, p_plays, plays, skips, plays)
                       for t, (s, plays, skips, p_plays, p_skips) in _GUARD_ROWS.items()})


def test_guardrail_probability_is_the_larger_of_the_surface_and_the_pooled_test():
    """On the evaluated rows, `probability` is max(P under the surface's own
    prior, P under the pooled, weakest prior), each from scipy's Beta survival
    function; 0 where the surface's baseline is 0; NaN (both probabilities)
    where the row is not evaluated; a row disliked by both tests is reported
    for listeners_dislike only."""
    from scipy import stats

    cfg = Config()
    sig, evaluated = _guard_sig(), np.ones((3, len(_GUARD_ROWS)), bool)
    evaluated[:, 3] = False
    g = estimation.guardrail(sig, _GUARD_PRIOR, evaluated, np.zeros_like(evaluated), cfg)
    k_min, delta = 5.0, cfg.guardrail_delta
    for t, (s, plays, skips, _, _) in _GUARD_ROWS.items():
        mu, m, k = (_GUARD_PRIOR[c][s] for c in ("mu_skip", "m_skip", "k_skip"))
        want = 0.0 if mu == 0 else max(stats.beta.sf(mu + delta, m * k + skips, (1 - m) * k + plays - skips),
                                       stats.beta.sf(mu + delta, m * k_min + skips, (1 - m) * k_min + plays - skips))
        if t == 3:
            assert np.isnan(g["probability"][s, t]) and np.isnan(g["promoted_probability"][s, t])
        else:
            assert g["probability"][s, t] == pytest.approx(want, rel=1e-9, abs=1e-15), t
    assert g["probability"][1, 1] == 0.0
    surface_prior = stats.beta.sf(0.35, 0.45 * 60 + 24, 0.55 * 60 + 36)
    assert g["probability"][0, 2] == pytest.approx(surface_prior) and surface_prior > stats.beta.sf(
        0.35, 0.45 * 5 + 24, 0.55 * 5 + 36)      # the surface's test is the larger one here
    assert g["promoted_probability"][0, 0] > cfg.guardrail_confidence   # the promoted test would pull it back too
    assert g["disliked"][0, 0] and not g["promoted_disliked"][0, 0] and g["pulled_back"][0, 0]
    assert g["promoted_probability"][2, 4] > cfg.guardrail_confidence
    assert g["promoted_disliked"][2, 4] and not g["disliked"][2, 4]
    assert g["promoted_probability"][2, 4] != g["probability"][2, 4]


@pytest.mark.parametrize("test", ["skip", "promoted"])
def test_guardrail_pulls_back_strictly_above_the_confidence_and_keeps_state_in_the_band(test):
    """A probability equal to guardrail_confidence does not pull back (nor keep
    pulled back); a row pulled back before stays so while the test with the
    lowered delta is above the confidence, for the promoted test as for the
    skip test."""
    t, s = (2, 0) if test == "skip" else (4, 2)
    which, key = (0, "disliked") if test == "skip" else (1, "promoted_disliked")
    sig, rows = _guard_sig(), np.zeros((3, len(_GUARD_ROWS)), bool)
    rows[s, t] = True
    none = np.zeros_like(rows)
    base = Config()
    margin = base.guardrail_delta - base.guardrail_reinstate_delta
    pull = estimation._probabilities(sig, _GUARD_PRIOR, rows, 0.0, base)[which][s, t]
    stay = estimation._probabilities(sig, _GUARD_PRIOR, rows, margin, base)[which][s, t]
    assert 0.5 <= pull < stay <= 1.0
    at_pull = Config(guardrail_confidence=float(pull))
    assert not estimation.guardrail(sig, _GUARD_PRIOR, rows, none, at_pull)[key][s, t]
    at_stay = Config(guardrail_confidence=float(stay))
    assert not estimation.guardrail(sig, _GUARD_PRIOR, rows, rows, at_stay)[key][s, t]
    between = Config(guardrail_confidence=float((pull + stay) / 2))
    assert not estimation.guardrail(sig, _GUARD_PRIOR, rows, none, between)[key][s, t]
    assert estimation.guardrail(sig, _GUARD_PRIOR, rows, rows, between)[key][s, t]


def test_no_promoted_test_when_the_pool_skips_everything():
    """A prior mean of 1 (every enrolled play skipped): the promoted test is not made (0), whatever the
    track's own counts."""
    prior = {"mu_skip": np.array([0.3, 0.3, 0.3]), "m_skip": np.array([1.0, 0.3, 0.3]),
             "k_skip": np.array([2.0, 2.0, 2.0])}
    sig = _hand_sums({0: (0, 20.0, 15.0, 20.0, 10.0, 10.0, 10.0, 20.0, 15.0, 20.0)})
    pooled, promoted = estimation._pooled_probabilities(sig, prior, np.array([True]), 0.05, 0.05)
    assert promoted.tolist() == [0.0] and pooled[0] > 0
