"""What a simulated world plants on top of the sample world (`jobs.sample`),
so the closed loop can be checked against it:

* a serving gain g per (market, surface), spread evenly over [gain_low,
  gain_high] in a seeded order, and one step change: from `step_day` on, one
  (market, surface) (a seeded one whose stepped gain stays >= gain_low) has
  its gain multiplied by `step_factor`;
* serving's response to a boost probability b: a = g * h(b) promoted plays per
  organic play, h(b) = b up to the planted `saturation` level and flattening
  above it (h(1) = saturation + (1 - saturation)(1 - 1/e));
* a lift per campaign, drawn from `lifts`: the share of its promoted plays that
  are incremental; the rest displace an organic play of the same track that
  the listener would have made anyway (`jobs.simulate.serving`);
* before the loop (the warm-up days, when no plan exists yet) serving boosts
  every active enrolled track on its enrolled surfaces at a flat
  `warm_up_share` promoted plays per organic play.

Written to IN/truth/ (`tables`): serving_gain.parquet (per day, market and
surface), campaigns.parquet (per campaign: lift) and simulation.json (the
parameters); each simulated day adds IN/truth/days/dt=D/cells.parquet (per
boosted track, market and surface: boost, gain, response, lift, organic plays,
displaced and incremental promoted plays).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.sample.world import Enrollments, World
from schemas import PROMOTION_SURFACES

LIFTS = (0.0, 0.1, 0.3, 0.6)


@dataclass(frozen=True)
class TruthParams:
    gain_low: float = 0.5
    gain_high: float = 1.5
    saturation: float = 0.9          # boost probability above which serving's response flattens
    step_day: int | None = None      # loop day (1 = the first) of the gain's step change (may lie past the
    #                                  last day: then no step is simulated); None: a third in, >= 8, inside
    step_factor: float = 0.6
    warm_up_share: float = 0.5       # promoted plays per organic play before the loop (rho: what a plan gives most)
    lifts: tuple[float, ...] = LIFTS

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lifts"] = list(self.lifts)
        return d


@dataclass
class Truth:
    markets: list[str]
    gain: np.ndarray          # (markets, promotion surfaces): g before the step
    step_market: int
    step_surface: int
    step_day: dt.date         # the first day of the stepped gain
    step_factor: float
    saturation: float
    warm_up_share: float
    lift: np.ndarray          # per campaign (index into Enrollments.campaign_ids)
    campaign_ids: pa.Array

    def gain_on(self, day: dt.date) -> np.ndarray:
        """(markets, promotion surfaces) serving gain of `day`."""
        g = self.gain.copy()
        if day >= self.step_day:
            g[self.step_market, self.step_surface] *= self.step_factor
        return g

    def response(self, boost: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """Promoted plays per organic play serving delivers at boost probability
        `boost` with gain `gain` (arrays of the same shape)."""
        return gain * saturating(np.asarray(boost, float), self.saturation)

    def step_pair(self) -> tuple[str, str]:
        return self.markets[self.step_market], PROMOTION_SURFACES[self.step_surface]

    def gain_table(self, days: list[dt.date]) -> pa.Table:
        n_m, n_s = self.gain.shape
        rows = {"day": [], "market": [], "surface": [], "gain": [], "stepped": []}
        for d in days:
            g = self.gain_on(d)
            for m in range(n_m):
                for s in range(n_s):
                    rows["day"].append(d)
                    rows["market"].append(self.markets[m])
                    rows["surface"].append(PROMOTION_SURFACES[s])
                    rows["gain"].append(float(g[m, s]))
                    rows["stepped"].append(bool(d >= self.step_day and (m, s) == (self.step_market,
                                                                                   self.step_surface)))
        return pa.table(rows, schema=pa.schema([("day", pa.date32()), ("market", pa.string()),
                                                ("surface", pa.string()), ("gain", pa.float64()),
                                                ("stepped", pa.bool_())]))

    def campaign_table(self) -> pa.Table:
        return pa.table({"campaign_id": self.campaign_ids, "lift": pa.array(self.lift, pa.float64())})

    def record(self) -> dict:
        market, surface = self.step_pair()
        return {"step": {"market": market, "surface": surface, "day": self.step_day.isoformat(),
                         "factor": self.step_factor},
                "saturation": self.saturation, "warm_up_share": self.warm_up_share}


def saturating(b: np.ndarray, level: float) -> np.ndarray:
    """h(b): b up to `level`, then flattening (slope 1 at `level`, tending to 1 above it)."""
    if level >= 1.0:
        return b
    span = 1.0 - level
    return np.where(b <= level, b, level + span * (1.0 - np.exp(-(b - level) / span)))


def plant(w: World, e: Enrollments, params: TruthParams, seed: int, loop_days: list[dt.date]) -> Truth:
    """Draw the planted truth of a simulated world (its own random stream)."""
    rng = np.random.default_rng([seed, 12, 0])
    n_m, n_s = len(w.codes), len(PROMOTION_SURFACES)
    n = n_m * n_s
    lo, hi = params.gain_low, params.gain_high
    spread = lo + (hi - lo) * (np.arange(n) + 0.5) / n     # evenly spaced, never at the very ends
    gain = spread[rng.permutation(n)].reshape(n_m, n_s)
    can_step = np.flatnonzero(gain.ravel() * params.step_factor >= lo - 1e-12)
    flat = int(rng.choice(can_step)) if len(can_step) else int(np.argmax(gain))
    if params.step_day is None:       # the default: a third in, at least 8, and inside the simulation
        step_index = min(max(8, len(loop_days) // 3 + 1), max(len(loop_days), 1))
    else:                             # as asked, even past the last day: the first N days of a longer world
        step_index = max(params.step_day, 1)
    step_day = loop_days[0] + dt.timedelta(days=step_index - 1) if loop_days else dt.date.max
    lift = rng.choice(np.array(params.lifts, dtype=float), len(e.campaign_ids))
    return Truth(markets=list(w.codes), gain=gain, step_market=flat // n_s, step_surface=flat % n_s,
                 step_day=step_day, step_factor=params.step_factor, saturation=params.saturation,
                 warm_up_share=params.warm_up_share, lift=lift, campaign_ids=e.campaign_ids)
