"""Scoring of one market (docs/design.md §4), pure functions over numpy arrays.

One call of `score_market` handles one market: it picks the enrollment row per
track (`campaigns`), computes decayed signals (`signals`), empirical-Bayes
shrunk rates and the guardrail (`estimation`), value, eligibility with
reasons, supply forecasts (`supply`, `forecast`) and campaign floors with
pacing (`campaigns`), and
builds and solves the LP of each promotion surface (`pipelines.allocation`).
No Beam here, so every step is testable with plain pytest.

A market is a few thousand rows, so the cost is per call, not per row: the
frames at the boundary are read into numpy once, keys become integer codes, and
every group-by is a bincount or `group_sum` on codes. `group_sum` adds the way a
pandas group-by does, so the numbers are those pandas gives, to the last bit.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from pipelines.allocation.prices import PRICE_COLUMNS, price_columns
from pipelines.allocation.problem import Problem
from pipelines.allocation.solve import solve
from pipelines.arrays import lookup, sorted_codes
from pipelines.config import Config
from pipelines.scoring import delivery
from pipelines.scoring.campaigns import Candidates, campaign_floors, candidates, delivery_frame
from pipelines.scoring.estimation import guardrail, priors, shrunk_rates
from pipelines.scoring.signals import dates, daynum, decay_weights, surface_totals, track_signals
from pipelines.scoring.supply import forecast_supply, window_numbers
from schemas import PROMOTION_SURFACES

# Reasons a row is not eligible, in the order they are reported (first wins).
REASONS = (
    "campaign_cancelled",
    "campaign_paused",
    "outside_flight",
    "surface_not_enrolled",
    "too_new",
    "too_few_plays",
    "listeners_dislike",
    "promoted_plays_disliked",
)


@dataclass
class MarketResult:
    scores: pd.DataFrame
    delivery: pd.DataFrame
    capacity: pd.DataFrame
    prices: pd.DataFrame
    reconciliation: pd.DataFrame | None = None


def score_market(market: str, enrolled: pd.DataFrame, aggregates: pd.DataFrame, totals: pd.DataFrame,
                 observed_days: list[dt.date], as_of: dt.date, cfg: Config, method: str,
                 pulled_back_before: pd.DataFrame | None = None, *,
                 plan: pd.DataFrame | None = None, state: pd.DataFrame | None = None,
                 plan_snapshot_id: str | None = None) -> MarketResult:
    """Score and allocate one market for score date as_of + 1.

    enrolled: latest enrollment rows of this market (the contract's columns).
    aggregates: daily_aggregates rows of this market's enrolled tracks, for the
        window days and any earlier days back to the oldest live flight start.
    totals: surface_totals rows of this market for the window days.
    observed_days: the window days whose engagement was observed (a day with no
        raw partition is left out of the forecasts and the averages).
    pulled_back_before: (track_id, surface) rows the listener guardrail held
        back in the previous snapshot (its hysteresis); None: none.
    plan, state, plan_snapshot_id: the market's promotion_scores and capacity
        rows of the previous snapshot, and its id (`pipelines.scoring.delivery`):
        the plan of as_of is reconciled with as_of's logs, and the serving gain
        the new boost probabilities divide by is updated. plan is None when no
        snapshot was published for as_of; state is None when none before it.

    Everything up to the LPs is computed for all promotion surfaces at once, as
    (surface, track) arrays with each surface's parameters broadcast along its
    row: the same arithmetic, element by element, as one surface at a time.
    """
    score_date = as_of + dt.timedelta(days=1)
    as_of_num, today = daynum(as_of), daynum(score_date)
    observed_nums = np.intersect1d(np.array([daynum(d) for d in observed_days], dtype=np.int64),
                                   window_numbers(as_of_num, cfg.window_days))

    weight_of = partial(decay_weights, as_of_num=as_of_num, half_life_days=cfg.half_life_days)
    tracks = candidates(enrolled, score_date)
    shape = (len(PROMOTION_SURFACES), len(tracks.track_id))
    sig, delivered = track_signals(tracks.track_id, tracks.start, aggregates, observed_nums, weight_of,
                                   as_of_num)
    prior = priors(surface_totals(totals, observed_nums, weight_of), sig, cfg)

    # --- estimates and supply ---------------------------------------------
    mu_skip, mu_save = prior["mu_skip"][:, None], prior["mu_save"][:, None]
    skip_rate, save_rate = shrunk_rates(sig, prior)
    value = (save_rate - mu_save) - cfg.skip_penalty * (skip_rate - mu_skip)
    sup = forecast_supply(tracks.track_id, tracks.released, aggregates, totals, observed_nums, as_of_num, cfg)
    supply = np.maximum(sup.point, 0.0)
    cap_basis = supply if cfg.track_cap_basis == "point" or np.isnan(sup.low).all() else np.maximum(sup.low, 0.0)

    # --- eligibility: the first broken rule is the reason ----------------
    live_flight = (tracks.start <= today) & (tracks.end >= today)
    broken = np.stack([np.broadcast_to(b, shape) for b in (
        tracks.status == "cancelled", tracks.status == "paused", ~live_flight, ~tracks.on_surface,
        today - tracks.released < cfg.min_track_age_days,
        sig["plays"].sum(axis=0) < cfg.min_window_plays)])
    guard = guardrail(sig, prior, ~broken.any(axis=0), _before(pulled_back_before, tracks.track_id, shape), cfg)
    broken = np.concatenate([broken, guard["disliked"][None], guard["promoted_disliked"][None]])
    eligible = ~broken.any(axis=0)
    upper = np.where(eligible, cfg.track_boost_cap * cap_basis, 0.0)

    # --- campaigns: floors with pacing; then one LP per surface ----------
    campaign, campaign_ids = sorted_codes(tracks.campaign_id)
    camp = campaign_floors(campaign, live_flight & tracks.on_surface, eligible, upper, delivered,
                            tracks.start, tracks.end, today, cfg)
    x, camp["planned"], camp["shortfall"], capacity, prices = _allocate(
        market, tracks, value, upper, eligible, camp, campaign_ids, sup, prior, cfg, method)

    # --- delivery of as_of against its plan; the serving gain g-hat -------
    reconciliation, sums = delivery.reconcile(market, plan, aggregates, as_of_num, plan_snapshot_id)
    gain = delivery.serving_gain(state, sums, cfg)
    for s, row in enumerate(capacity):
        row.update({k: v[s] for k, v in gain.items()})

    scores = pd.DataFrame({
        "track_id": np.tile(tracks.track_id, shape[0]), "market": market,
        "surface": np.repeat(np.array(PROMOTION_SURFACES, dtype=object), shape[1]),
        "campaign_id": np.tile(tracks.campaign_id, shape[0]),
        "artist_id": np.tile(tracks.artist_id, shape[0]),
        "licensor_id": np.tile(tracks.licensor_id, shape[0]), "eligible": eligible.ravel(),
        "reason": first_reason(broken).ravel(), "plays": sig["plays"].ravel(), "skip_rate": skip_rate.ravel(),
        "save_rate": save_rate.ravel(), "value": value.ravel(), "supply_forecast": supply.ravel(),
        "max_promoted_plays": upper.ravel(), "planned_promoted_plays": x.ravel(),
        "boost_probability": delivery.boost_probability(x, supply, gain["serving_gain"]).ravel(),
        "score": np.clip(np.divide(x, upper, out=np.zeros_like(x), where=upper > 0), 0.0, 1.0).ravel(),
        "skips": sig["skips"].ravel(), "saves": sig["saves"].ravel(),
        "weighted_plays": sig["w_plays"].ravel(),
        "release_date": np.tile(tracks.release_date, shape[0]),
        "flight_end": np.tile(dates(tracks.end), shape[0]),
        "supply_forecast_low": sup.low.ravel(), "supply_forecast_high": sup.high.ravel(),
        "history_days": np.tile(sup.history_days, shape[0]), "effective_plays": sig["n_eff"].ravel(),
        "pulled_back": guard["pulled_back"].ravel(), "dislike_probability": guard["probability"].ravel(),
        "promoted_plays": sig["promoted_plays"].ravel(), "promoted_skips": sig["promoted_skips"].ravel(),
        "promoted_dislike_probability": guard["promoted_probability"].ravel(),
    })
    return MarketResult(scores, delivery_frame(market, camp, campaign_ids, tracks.licensor_id),
                        pd.DataFrame(capacity), prices, reconciliation)


def _before(pulled_back: pd.DataFrame | None, track_ids: np.ndarray, shape: tuple) -> np.ndarray:
    """(surface, track) rows pulled back in the previous snapshot."""
    out = np.zeros(shape, dtype=bool)
    if pulled_back is None or not len(pulled_back):
        return out
    track = lookup(track_ids, pulled_back["track_id"].to_numpy())
    surface = lookup(PROMOTION_SURFACES, pulled_back["surface"].to_numpy())
    known = (track >= 0) & (surface >= 0)
    out[surface[known], track[known]] = True
    return out


def _allocate(market: str, tracks: Candidates, value: np.ndarray, upper: np.ndarray, eligible: np.ndarray,
              camp: dict, campaign_ids: np.ndarray, sup, prior: dict, cfg: Config, method: str):
    """Build and solve the LP of each promotion surface. Returns the plan x
    (surface, track), each campaign's planned plays and shortfall (in `camp`
    order), the capacity rows and the price rows."""
    artist, artist_ids = sorted_codes(tracks.artist_id)
    licensor, licensor_ids = sorted_codes(tracks.licensor_id)
    total_forecast = np.maximum(sup.total, 0.0)
    K = cfg.promoted_share_cap * total_forecast
    x = np.zeros(value.shape)
    planned, shortfall = np.zeros(len(camp["floor"])), np.zeros(len(camp["floor"]))
    capacity, prices = [], []
    for s, surface in enumerate(PROMOTION_SURFACES):
        lo, hi = camp["offsets"][s], camp["offsets"][s + 1]   # this surface's campaigns
        vmax = float(np.max(np.abs(value[s][eligible[s]]))) if eligible[s].any() else 0.0
        penalty = cfg.shortfall_penalty_factor * (vmax + 1e-6)
        problem = Problem(
            value=value[s], upper=upper[s], artist=artist, licensor=licensor, campaign=camp["group"][s],
            floors=np.concatenate([camp["floor"][lo:hi], [0.0]]), capacity=float(K[s]),
            artist_cap=cfg.artist_share_cap * K[s], licensor_cap=cfg.licensor_share_cap * K[s],
            penalty=float(penalty))
        sol = solve(problem, method=method)
        x[s] = sol.x
        planned[lo:hi] = np.bincount(camp["group"][s], weights=sol.x, minlength=hi - lo + 1)[:hi - lo]
        shortfall[lo:hi] = sol.shortfall[:hi - lo]
        capacity.append({
            "market": market, "surface": surface, "total_forecast": total_forecast[s],
            "promoted_share_cap": cfg.promoted_share_cap, "capacity": K[s],
            "artist_cap": cfg.artist_share_cap * K[s], "licensor_cap": cfg.licensor_share_cap * K[s],
            "shortfall_penalty": penalty, "planned_total": float(np.sum(sol.x)),
            "shadow_price": sol.capacity_price, "baseline_skip_rate": prior["mu_skip"][s],
            "baseline_save_rate": prior["mu_save"][s], "prior_strength_skip": prior["k_skip"][s],
            "prior_strength_save": prior["k_save"][s], "candidates": int(value.shape[1]),
            "eligible_rows": int(eligible[s].sum()), "total_forecast_low": sup.total_low[s],
            "total_forecast_high": sup.total_high[s], "prior_mean_skip": prior["m_skip"][s],
            "prior_mean_save": prior["m_save"][s],
        })
        prices.append(price_columns(problem, sol, artist_ids, licensor_ids, campaign_ids[camp["campaign"][lo:hi]],
                                    tracks.track_id))
    price_frame = pd.DataFrame({c: np.concatenate([p[c] for p in prices]) for c in PRICE_COLUMNS})
    price_frame["market"] = market
    price_frame["surface"] = np.repeat(np.array(PROMOTION_SURFACES, dtype=object), [len(p["key"]) for p in prices])
    return x, planned, shortfall, capacity, price_frame


def first_reason(broken: np.ndarray) -> np.ndarray:
    """The first broken rule of each row, in REASONS order, None where no rule
    is broken. `broken` is (len(REASONS), rows...)."""
    names = np.array(REASONS + (None,), dtype=object)
    return names[np.where(broken.any(axis=0), np.argmax(broken, axis=0), len(REASONS))]
