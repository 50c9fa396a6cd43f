"""How many plays the sample world's tracks get each day: the planted supply
(weekday factors, post-release decay, a market-wide holiday, first-time
enrollees) and the plays serving adds by promotion, as data and pure
functions, so the supply forecasts can be checked against it and a simulator
can reuse it (replace `DayPlan.promoted` by its own plan).

Expected plays of a (market m, surface s) on day d, every track together:

    S_msd = n * share_m * mix_ms * weekday[m, s, dow(d)] * holiday[m, d] * (catalogue level of d) + promoted

with n the world's events per day: a catalogue track t in m gets
n * CAT * pop_t * m_weight_m * age(t, d) * level_m(d) / Z plays a day over its
surfaces (Z makes the catalogue's share CAT on the last day), split by the
day's surface mix; the tail gets the rest. `age` is 0 before release, a
plateau for 30 days, exponential decay (the track's planted rate) until 180
days, flat after. A promoted play is added on top of the organic ones (a
quarter of an active enrolled track's plays on an enrolled surface are
promoted: a third more), so the organic plays E the pipeline forecasts do
not jump when a flight starts.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from jobs.sample.draws import EPOCH

CAT = 0.38                       # share of the day's organic plays on campaign tracks in their markets
PROMOTED_SHARE = 0.25            # share of an active track's plays on an enrolled surface that are promoted
PLATEAU_DAYS, DECAY_END_DAYS = 30, 180


@dataclass(frozen=True)
class SupplyParams:
    """What the sample world plants; tests and a simulator change these."""
    weekday_amplitude: float = 0.15       # weekday factors per (market, surface), mean 1, largest deviation this
    decay_low: float = 0.004              # post-release decay per day (30-180 days after release), uniform in
    decay_high: float = 0.012             # [decay_low, decay_high] per track
    holiday_lift: float = 0.40            # one market-wide spike: every surface and track of the market
    holiday_market: int = 0               # index into the world's markets
    holiday_days_before_end: int | None = 9   # the holiday's day; None: no holiday (also when outside the world)
    first_time_share: float = 0.12        # campaign tracks whose first campaign starts inside the world
    promoted_disliked_share: float = 0.05  # campaign tracks whose promoted plays are skipped more than organic
    promoted_skip_lift: float = 0.15      # ... by this much


NO_SEASONS = SupplyParams(weekday_amplitude=0.0, decay_low=0.0, decay_high=0.0, holiday_days_before_end=None,
                          first_time_share=0.0, promoted_disliked_share=0.0)


@dataclass
class Supply:
    """The planted supply of one world."""
    weekday: np.ndarray        # (markets, all surfaces, 7 weekdays, Monday first): factors, mean 1 per (m, s)
    holidays: dict             # (market index, day number) -> lift
    decay: np.ndarray          # (campaign tracks,) decay per day 30-180 days after release
    first_month: np.ndarray    # (campaign tracks,) month key of a first-time enrollee's first campaign, else -1
    norm: float                # Z: the catalogue's expected plays on the last day, in pop * m_weight units


def weekday_factors(rng: np.random.Generator, markets: int, surfaces: int, amplitude: float) -> np.ndarray:
    """(markets, surfaces, 7) factors: uniform, centred to mean 1, stretched so
    the largest deviation of each (market, surface) is `amplitude`."""
    u = rng.uniform(-1.0, 1.0, (markets, surfaces, 7))
    u -= u.mean(axis=2, keepdims=True)
    return 1.0 + u * (amplitude / np.abs(u).max(axis=2, keepdims=True))


def age_factor(age_days: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """A track's plays by days since release, relative to its long-run level:
    0 before release, exp(150 decay) on the plateau, decaying to 1 at 180 days."""
    age = np.asarray(age_days, float)
    a = np.clip(age - PLATEAU_DAYS, 0.0, DECAY_END_DAYS - PLATEAU_DAYS)
    return np.where(age < 0, 0.0, np.exp(decay * (DECAY_END_DAYS - PLATEAU_DAYS - a)))


def weekday(d: dt.date) -> int:
    return d.weekday()


@dataclass
class DayPlan:
    """Expected plays of one day."""
    pair: np.ndarray            # (pairs,) organic plays of each enrolled (campaign track, market) pair
    tail: np.ndarray            # (markets,) organic plays of the tail
    mix: np.ndarray             # (markets, all surfaces) the day's surface shares
    promoted: np.ndarray        # (pairs, promotion surfaces) promoted plays (0 where not boosted)
    promoted_campaign: np.ndarray  # (pairs,) the boosting campaign (-1: none)

    def surface_totals(self, pair_market: np.ndarray, markets: int) -> np.ndarray:
        """(markets, all surfaces) expected plays of every track: the planted S."""
        organic = np.bincount(pair_market, weights=self.pair, minlength=markets) + self.tail
        out = organic[:, None] * self.mix
        n_promo = self.promoted.shape[1]
        for s in range(n_promo):
            out[:, s] += np.bincount(pair_market, weights=self.promoted[:, s], minlength=markets)
        return out


def market_level(supply: Supply, surface_share: np.ndarray, d: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """(level (markets,), mix (markets, surfaces)) of day d: a market's plays
    relative to an average day, and its surface shares that day."""
    day_num = (d - EPOCH).days
    f = surface_share * supply.weekday[:, :, weekday(d)]
    level = f.sum(axis=1)
    lift = np.array([1.0 + supply.holidays.get((m, day_num), 0.0) for m in range(len(level))])
    return level * lift, f / level[:, None]


def day_plan(w, n: int, d: dt.date, pair_camp: np.ndarray, pair_surf: np.ndarray) -> DayPlan:
    """The expected plays of day d in world w (`jobs.sample.world.World`) with
    n events on an average day; pair_camp / pair_surf: each pair's active
    campaign (-1: none) and its enrolled surfaces (bit mask), as
    `world.active_for_day` gives them."""
    sup = w.supply
    level, mix = market_level(sup, w.surface_share, d)
    day_num = (d - EPOCH).days
    age = age_factor(day_num - w.release_days[w.pair_track], sup.decay[w.pair_track])
    pair = n * CAT * w.pop[w.pair_track] * w.m_weight[w.pair_market] * age * level[w.pair_market] / sup.norm
    tail = n * (1.0 - CAT) * w.m_weight * level
    n_promo = w.truth_skip.shape[1]
    enrolled = ((pair_surf[:, None] >> np.arange(n_promo)[None, :]) & 1).astype(bool) & (pair_camp[:, None] >= 0)
    promoted = np.where(enrolled, pair[:, None] * mix[w.pair_market, :n_promo], 0.0) \
        * (PROMOTED_SHARE / (1.0 - PROMOTED_SHARE))
    return DayPlan(pair=pair, tail=tail, mix=mix, promoted=promoted, promoted_campaign=pair_camp)


def build_supply(rng: np.random.Generator, params: SupplyParams, *, markets: int, surfaces: int, n_cat: int,
                 first_day: dt.date, end_date: dt.date) -> Supply:
    """Draw the planted supply (everything but the catalogue's normalisation,
    set once the release dates are final: `finish_supply`)."""
    weekday_f = weekday_factors(rng, markets, surfaces, params.weekday_amplitude)
    decay = rng.uniform(params.decay_low, params.decay_high, n_cat)
    holidays = {}
    if params.holiday_days_before_end is not None and params.holiday_lift:
        day = end_date - dt.timedelta(days=params.holiday_days_before_end)
        if first_day <= day <= end_date and params.holiday_market < markets:
            holidays[(params.holiday_market, (day - EPOCH).days)] = params.holiday_lift
    first_month = np.full(n_cat, -1, dtype=np.int64)
    starts = [dt.date(y, m, 1) for y, m in _months(first_day, end_date)]
    starts = [s for s in starts if first_day < s <= end_date]
    if starts and params.first_time_share > 0:
        chosen = rng.random(n_cat) < params.first_time_share
        which = rng.integers(0, len(starts), n_cat)
        keys = np.array([s.year * 12 + s.month - 1 for s in starts])
        first_month = np.where(chosen, keys[which], -1)
    return Supply(weekday=weekday_f, holidays=holidays, decay=decay, first_month=first_month, norm=1.0)


def finish_supply(w, end_date: dt.date) -> None:
    """Z: the catalogue's expected plays on the last day, so CAT is its share then."""
    age = age_factor((end_date - EPOCH).days - w.release_days[w.pair_track], w.supply.decay[w.pair_track])
    w.supply.norm = float(np.sum(w.pop[w.pair_track] * w.m_weight[w.pair_market] * age)) or 1.0


def _months(first_day: dt.date, end_date: dt.date):
    y, m = first_day.year, first_day.month
    while (y, m) <= (end_date.year, end_date.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
