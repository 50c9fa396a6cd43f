"""Score the lift estimators on a planted world (`jobs.simulate.lift_world`):
every criterion of the lift issue as one number.

    .venv/bin/python -m tests.support.lift_eval --seeds 0 1 2 3

prints per-seed and pooled figures for the plain and the adjusted estimator.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from jobs.simulate.lift_world import LiftWorldSpec, build_world, campaign_stats
from pipelines.lift import estimator as est

BIG = 2_000  # "campaigns with at least 2,000 exposed listeners per arm"


def estimate(df: pd.DataFrame, pre_days: int = 28) -> pd.DataFrame:
    """Add every estimate to a world's campaign table (vectorised over campaigns)."""
    a = {k: df[k].to_numpy() for k in df.columns}
    lift, low, high = est.lift_interval(a["n_t"], a["s_t"], a["ss_t"], a["n_g"], a["s_g"], a["ss_g"])
    adj, adj_low, adj_high = est.lift_interval_adjusted(
        a["n_t"], a["s_t"], a["ss_t"], a["sx_t"], a["sxx_t"], a["sxy_t"],
        a["n_g"], a["s_g"], a["ss_g"], a["sx_g"], a["sxx_g"], a["sxy_g"])
    itt, itt_low, itt_high = est.itt_interval(a["pop_s_t"], a["pop_ss_t"], a["pop_n_t"],
                                              a["pop_s_g"], a["pop_ss_g"], a["pop_n_g"])
    return df.assign(
        valid=est.min_data_mask(a["n_t"], a["s_t"], a["n_g"], a["s_g"]),
        lift=lift, low=low, high=high, lift_adj=adj, low_adj=adj_low, high_adj=adj_high,
        itt=itt, itt_low=itt_low, itt_high=itt_high,
        historical=est.historical_lift(a["before_t"], pre_days * a["n_t"], a["s_t"], a["window_t"]))


def figures(d: pd.DataFrame, adjusted: bool) -> dict:
    s = "_adj" if adjusted else ""
    v = d[d.valid]
    pl = v.planted_lift
    lo, hi = v["low" + s], v["high" + s]
    zero = v[pl == 0]
    big = v[(v.n_t >= BIG) & (v.n_g >= BIG)]
    tr, un = v[v.trended], v[~v.trended]
    return dict(
        campaigns=len(d), valid=len(v),
        coverage=float(((lo <= pl) & (pl <= hi)).mean()),
        zero=len(zero), zero_excluding_0=float(((zero["low" + s] > 0) | (zero["high" + s] < 0)).mean()),
        big=len(big), big_within_005=float(((big["lift" + s] - big.planted_lift).abs() <= 0.05).mean()),
        trended_historical_bias=float((tr.historical - tr.planted_lift).mean()),
        trended_holdout_bias=float((tr["lift" + s] - tr.planted_lift).mean()),
        untrended_historical_bias=float((un.historical - un.planted_lift).mean()),
        mean_itt=float(v.itt.mean()), mean_planted_itt=float(v.planted_itt.mean()),
        mean_planted_lift=float(pl.mean()),
        itt_coverage=float(((v.itt_low <= v.planted_itt) & (v.planted_itt <= v.itt_high)).mean()),
    )


def world(seed: int, profile: str = "base", **kw) -> pd.DataFrame:
    spec = LiftWorldSpec(seed=seed, profile=profile, **kw)
    return estimate(campaign_stats(build_world(spec))).assign(seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--profile", default="base")
    ap.add_argument("--campaigns", type=int, default=240)
    args = ap.parse_args()
    t0 = time.time()
    worlds = [world(s, args.profile, campaigns=args.campaigns) for s in args.seeds]
    for adjusted in (False, True):
        print(f"== profile {args.profile}, {'adjusted (published)' if adjusted else 'plain'}")
        tab = pd.DataFrame([dict(seed=w.seed.iloc[0], **figures(w, adjusted)) for w in worlds]).set_index("seed")
        print(tab.round(4).to_string())
        print("pooled:", {k: round(v, 4) for k, v in figures(pd.concat(worlds), adjusted).items()})
    d = pd.concat(worlds)
    print("holdout arm n p0/p50/p100:", np.percentile(d.n_g, [0, 50, 100]).astype(int),
          "| excluded by the minimum-data rule:", int((~d.valid).sum()), "of", len(d),
          f"| {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
