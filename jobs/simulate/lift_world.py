"""A world of promotion campaigns measured against a randomised listener
holdout, with a planted lift per campaign: the ground truth the campaign_lift
table is tested against.

One campaign is one (campaign, market, surface) promoting one track over a
flight that starts on `flight_start` (day 0; days are counted from it). Per
campaign, vectorised over its listeners:

population   P listeners drawn from the market's pool of user ids
             (log-uniform size). Holdout: the real assignment
             (`pipelines.holdout`) with the world's salt and share, in the
             flight's month; a holdout listener is never promoted.
propensity   organic daily rate of streaming the track: zero-inflated gamma
             (a share of never-listeners, gamma shape in [0.3, 1.2] for the
             rest: strong overdispersion, many zeros).
exposure     the serving rule picks listeners with a probability tilted toward
             heavy listeners, the same rule in both arms; the first exposure
             falls at d ~ U(0, exposure_days) days. Treated listeners get the
             boost, holdout listeners a ghost exposure.
boost        from the first exposure on, a treated listener's rate becomes
             lam + L (alpha lam + (1 - alpha) lam_bar u), u ~ Gamma(0.5, 2)
             (mean 1), lam_bar the mean rate of the exposed: part more plays
             from existing listeners, part plays from new ones. Over the
             exposed, the expected rate ratio is exactly 1 + L (the planted lift).
trend        every rate is multiplied by (1 + trend) ** (t / 30) on trended
             campaigns (+20% over a month), identically in both arms: the
             holdout comparison stays unbiased, before/after does not.

Lifts cycle through LIFTS and the trend is on for every other block of
len(LIFTS) campaigns, so lift x trend is balanced.

Two consumers share the latent draws (`latent`): `campaign_stats` draws
Poisson counts over the exact intervals the pipeline measures and reduces them
to the estimator's sufficient statistics (the statistical tests, hundreds of
campaigns in seconds); `jobs.simulate.lift_days` turns the same latent world
into engagement, exposure and enrollment files in the input contract (the
end-to-end tests). The intervals, in days from the flight start, with d0 the
exposure day, d the exposure time, sel the campaign's first exposure day, P the
pre-period and W the attribution window (the pipeline's definitions):

    A=[sel-P, d0-P)  B=[d0-P, sel)  C=[sel, d0)  D0=[d0, d)  Y=[d, d0+W)  E=[d0+W, end)
    X (pre-period) = B + C    before (historical) = A + B    Y = the window
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.sample.draws import ids
from pipelines import holdout as ho

LIFTS = (0.0, 0.10, 0.30, 0.60)
SURFACES = ("radio", "autoplay", "mixes")
MARKETS = ("US", "GB", "DE", "BR", "SE", "JP", "FR", "MX", "IN", "CA", "AU", "ES")

# Campaign-level nuisance ranges ((lo, hi); *_log: log-uniform). "base": CV^2 of
# window streams among exposed holdout listeners ~1-3, 30-45% new listeners;
# "heavy": heavier tails and more zeros (CV^2 ~2-6, ~55% new listeners).
PROFILES = {
    "base": dict(exposure_rate=(0.25, 0.55), never_share=(0.3, 0.6), shape=(0.4, 1.2),
                 daily_rate_log=(0.03, 0.3), tilt_base=(0.3, 1.0)),
    "heavy": dict(exposure_rate=(0.15, 0.5), never_share=(0.4, 0.85), shape=(0.3, 1.0),
                  daily_rate_log=(0.02, 0.2), tilt_base=(0.3, 1.5)),
}


@dataclass
class LiftWorldSpec:
    campaigns: int = 240
    seed: int = 0
    profile: str = "base"
    pop_range: tuple[int, int] = (3_000, 250_000)
    markets: int = 12
    holdout_share: float = 0.10
    holdout_salt: int = 20_261_001
    trend: float = 0.20
    flight_start: dt.date = dt.date(2026, 10, 1)
    flight_days: int = 28
    exposure_days: int = 14          # first exposures fall in [0, exposure_days)
    window_days: int = 14            # the pipeline's lift_window_days
    pre_days: int = 28               # the pipeline's lift_pre_days
    lifts: tuple[float, ...] = LIFTS

    @property
    def end(self) -> int:
        """The day after the last day of logs, from the flight start: every
        attribution window is complete by then."""
        return self.exposure_days + self.window_days - 1

    @property
    def as_of(self) -> dt.date:
        return self.flight_start + dt.timedelta(days=self.end - 1)

    @property
    def month(self) -> int:
        return ho.month_number(self.flight_start)


@dataclass
class LiftWorld:
    spec: LiftWorldSpec
    params: pd.DataFrame                     # one row per campaign: market, surface, lift, trend, nuisances
    pool_ids: dict[str, pa.Array] = field(default_factory=dict)     # market -> user ids
    pool_keys: dict[str, np.ndarray] = field(default_factory=dict)  # market -> listener keys (uint64)
    pool_holdout: dict[str, np.ndarray] = field(default_factory=dict)


def build_world(spec: LiftWorldSpec) -> LiftWorld:
    """Campaign parameters and the markets' listener pools (ids, keys, holdout)."""
    rng = np.random.default_rng([spec.seed, 0])
    pr = PROFILES[spec.profile]
    lo, hi = np.log(spec.pop_range[0]), np.log(spec.pop_range[1])
    n = spec.campaigns
    markets = np.array(MARKETS[:spec.markets])
    rows = dict(
        campaign=np.arange(n),
        market=markets[rng.integers(len(markets), size=n)],
        surface=np.array(SURFACES)[np.arange(n) % len(SURFACES)],
        planted_lift=np.array(spec.lifts)[np.arange(n) % len(spec.lifts)],
        trended=(np.arange(n) // len(spec.lifts)) % 2 == 1,
        pop_size=np.exp(rng.uniform(lo, hi, n)).astype(np.int64),
        exposure_rate=rng.uniform(*pr["exposure_rate"], n),
        never_share=rng.uniform(*pr["never_share"], n),
        shape=rng.uniform(*pr["shape"], n),
        daily_rate=np.exp(rng.uniform(*np.log(pr["daily_rate_log"]), n)),
        tilt_base=rng.uniform(*pr["tilt_base"], n),
        alpha=rng.uniform(0.3, 0.9, n),
        save_k=rng.uniform(0.02, 0.1, n),
    )
    params = pd.DataFrame(rows)
    w = LiftWorld(spec, params)
    for i, m in enumerate(markets):
        size = int(params.loc[params.market == m, "pop_size"].to_numpy().max(initial=0) * 1.25) + 100
        user_ids = ids(f"u{m.lower()}", size, spec.seed * 7919 + i * 104729 + 1, 14)
        keys = ho.listener_keys(user_ids)
        w.pool_ids[m], w.pool_keys[m] = user_ids, keys
        w.pool_holdout[m] = ho.in_holdout_keys(keys, pa.array([m] * size), np.full(size, spec.month),
                                               spec.holdout_salt, spec.holdout_share)
    return w


def trend_integral(a, b, g: float) -> np.ndarray:
    """Integral of exp(g t / 30) over [a, b) (= b - a when g == 0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if g == 0:
        return b - a
    return (np.exp(g * b / 30.0) - np.exp(g * a / 30.0)) * 30.0 / g


@dataclass
class Latent:
    """One campaign's listeners: everything but the Poisson noise of the plays."""
    members: np.ndarray      # indices into the market pool
    holdout: np.ndarray      # bool
    lam: np.ndarray          # organic daily rate (0 for never-listeners)
    exposed: np.ndarray      # bool
    d: np.ndarray            # first exposure time (days from the flight start) of the exposed
    rate_post: np.ndarray    # rate from the first exposure on, of the exposed
    g: float                 # log trend rate
    sel: int                 # the campaign's first exposure day

    @property
    def d0(self) -> np.ndarray:
        return np.floor(self.d).astype(np.int64)


def latent(w: LiftWorld, c: int) -> Latent:
    """The latent draws of campaign c, from its own seeded generator."""
    p = w.params.iloc[c]
    rng = np.random.default_rng([w.spec.seed, 1, c])
    pool = len(w.pool_ids[p.market])
    members = np.sort(rng.choice(pool, size=int(p.pop_size), replace=False))
    holdout = w.pool_holdout[p.market][members]
    n = len(members)
    active = rng.random(n) >= p.never_share
    lam = np.zeros(n)
    lam[active] = rng.standard_gamma(p.shape, size=int(active.sum())) * (p.daily_rate / p.shape)
    lbar = max(float(lam.mean()), 1e-12)
    a1 = p.exposure_rate / (p.tilt_base + 1.0) / lbar
    a0 = p.exposure_rate * p.tilt_base / (p.tilt_base + 1.0)
    exposed = rng.random(n) < a0 + a1 * lam
    le = lam[exposed]
    d = rng.uniform(0.0, w.spec.exposure_days, size=len(le))
    u = rng.standard_gamma(0.5, size=len(le)) * 2.0
    lam_bar = le.mean() if len(le) else 0.0
    boosted = le + p.planted_lift * (p.alpha * le + (1 - p.alpha) * lam_bar * u)
    rate_post = np.where(holdout[exposed], le, boosted)
    g = float(np.log1p(w.spec.trend)) if p.trended else 0.0
    sel = int(np.floor(d.min())) if len(d) else 0
    return Latent(members, holdout, lam, exposed, d, rate_post, g, sel)


def _campaign_counts(w: LiftWorld, c: int, lat: Latent, rng: np.random.Generator) -> dict:
    """Poisson counts over the pipeline's intervals, per exposed listener, and
    the intent-to-treat population outcome over the flight."""
    s = w.spec
    P, W, end, g = s.pre_days, s.window_days, s.end, lat.g
    le, d, d0, sel = lat.lam[lat.exposed], lat.d, lat.d0, lat.sel
    wend = np.minimum(d0 + W, end)
    draw = lambda rate, a, b: rng.poisson(rate * trend_integral(a, b, g)).astype(float)  # noqa: E731
    A = draw(le, sel - P, d0 - P)
    B1, B2 = draw(le, d0 - P, 0), draw(le, 0, sel)
    C, D0 = draw(le, sel, d0), draw(le, d0, d)
    Y = draw(lat.rate_post, d, wend)
    E = draw(lat.rate_post, wend, end)
    arm = (~lat.holdout[lat.exposed]).astype(np.int8)  # 1 treated, 0 holdout
    p = w.params.iloc[c]
    saved = rng.random(len(Y)) < 1.0 - np.exp(-p.save_k * Y)
    # intent to treat: every listener's streams over the flight up to `end`
    pop_y = np.zeros(len(lat.members))
    quiet = ~lat.exposed & (lat.lam > 0)
    pop_y[quiet] = rng.poisson(lat.lam[quiet] * trend_integral(0, end, g))
    pop_y[lat.exposed] = B2 + C + D0 + Y + E
    extra = np.sum((lat.rate_post - le) * trend_integral(d, end, g))
    base = np.sum(lat.lam) * trend_integral(0, end, g)
    return dict(arm=arm, y=Y, x=B1 + B2 + C, before=A + B1 + B2, saved=saved, window=wend - d,
                pop_arm=(~lat.holdout).astype(np.int8), pop_y=pop_y,
                planted_itt=extra / base if base > 0 else np.nan)


def campaign_stats(w: LiftWorld) -> pd.DataFrame:
    """Per campaign: the sufficient statistics of both arms (the estimator's
    inputs, suffix _t treated, _g holdout), the intent-to-treat sums and the
    planted truth."""
    out = []
    for c in range(len(w.params)):
        lat = latent(w, c)
        k = _campaign_counts(w, c, lat, np.random.default_rng([w.spec.seed, 2, c]))
        row = {}
        for arm, sfx in ((1, "t"), (0, "g")):
            sel = k["arm"] == arm
            y, x = k["y"][sel], k["x"][sel]
            row.update({f"n_{sfx}": int(sel.sum()), f"s_{sfx}": y.sum(), f"ss_{sfx}": (y * y).sum(),
                        f"sx_{sfx}": x.sum(), f"sxx_{sfx}": (x * x).sum(), f"sxy_{sfx}": (x * y).sum(),
                        f"new_{sfx}": int((x == 0).sum()), f"savers_{sfx}": int(k["saved"][sel].sum()),
                        f"before_{sfx}": k["before"][sel].sum(), f"window_{sfx}": k["window"][sel].sum()})
            pop = k["pop_arm"] == arm
            py = k["pop_y"][pop]
            row.update({f"pop_n_{sfx}": int(pop.sum()), f"pop_s_{sfx}": py.sum(), f"pop_ss_{sfx}": (py * py).sum()})
        row["planted_itt"] = k["planted_itt"]
        out.append(row)
    return pd.concat([w.params.reset_index(drop=True), pd.DataFrame(out)], axis=1)
