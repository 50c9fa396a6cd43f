"""Scoring of one market (DESIGN §4), pure functions over numpy arrays.

One call of `score_market` handles one market: it picks the enrollment row per
track (`campaigns`), computes decayed signals (`signals`), empirical-Bayes
shrunk rates and the guardrail (`estimation`), value, eligibility with
reasons, supply forecasts and campaign floors with pacing (`campaigns`), and
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

import numpy as np
import pandas as pd

from pipelines.allocation.problem import Problem
from pipelines.allocation.solve import solve
from pipelines.arrays import sorted_codes
from pipelines.config import Config
from pipelines.scoring import delivery
from pipelines.scoring.campaigns import Candidates, campaign_floors, candidates, delivery_frame
from pipelines.scoring.estimation import guardrail, priors, shrink
from pipelines.scoring.signals import day_weights, daynum, surface_totals, track_signals, window_days
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
)


@dataclass
class MarketResult:
    scores: pd.DataFrame
    delivery: pd.DataFrame
    capacity: pd.DataFrame
    reconciliation: pd.DataFrame | None = None


def score_market(market: str, enrolled: pd.DataFrame, aggregates: pd.DataFrame, totals: pd.DataFrame,
                 observed_days: list[dt.date], as_of: dt.date, cfg: Config, method: str, *,
                 plan: pd.DataFrame | None = None, state: pd.DataFrame | None = None,
                 plan_snapshot_id: str | None = None) -> MarketResult:
    """Score and allocate one market for score date as_of + 1.

    enrolled: latest enrollment rows of this market (the contract's columns).
    aggregates: daily_aggregates rows of this market's enrolled tracks, for the
        window days and any earlier days back to the oldest live flight start.
    totals: surface_totals rows of this market for the window days.
    observed_days: the window days whose engagement was observed (a day with no
        raw partition is left out of the forecast's average).
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
    window = [d for d in window_days(as_of, cfg.window_days)]
    observed = sorted(set(observed_days) & set(window))
    weights = day_weights(observed, as_of, cfg.half_life_days)
    weight_sum = float(weights.sum()) if len(weights) else 0.0
    observed_nums = np.array([daynum(d) for d in observed], dtype=np.int64)
    as_of_num, today = daynum(as_of), daynum(score_date)

    def weight_of(day_numbers: np.ndarray) -> np.ndarray:
        return np.power(0.5, (as_of_num - day_numbers) / cfg.half_life_days)

    tracks = candidates(enrolled, score_date)
    shape = (len(PROMOTION_SURFACES), len(tracks.track_id))
    sig, delivered = track_signals(tracks.track_id, tracks.start, aggregates, observed_nums, weight_of,
                                   as_of_num)
    prior = priors(surface_totals(totals, observed_nums, weight_of), sig, cfg)

    # --- estimates --------------------------------------------------------
    mu_skip, mu_save = prior["mu_skip"][:, None], prior["mu_save"][:, None]
    skip_rate = shrink(sig["w_skips"], sig["w_plays"], mu_skip, prior["k_skip"][:, None])
    save_rate = shrink(sig["w_saves"], sig["w_plays"], mu_save, prior["k_save"][:, None])
    value = (save_rate - mu_save) - cfg.skip_penalty * (skip_rate - mu_skip)
    supply = sig["w_organic"] / weight_sum if weight_sum > 0 else np.zeros(shape)
    supply = np.maximum(supply, 0.0)
    total_forecast = prior["base_plays"] / weight_sum if weight_sum > 0 else np.zeros(shape[0])

    # --- eligibility: the first broken rule is the reason ----------------
    live_flight = (tracks.start <= today) & (tracks.end >= today)
    broken = np.stack([np.broadcast_to(b, shape) for b in (
        tracks.status == "cancelled", tracks.status == "paused", ~live_flight, ~tracks.on_surface,
        today - tracks.released < cfg.min_track_age_days,
        sig["plays"].sum(axis=0) < cfg.min_window_plays)])
    broken = np.concatenate([broken, guardrail(sig, prior, ~broken.any(axis=0), cfg)[None]])
    eligible = ~broken.any(axis=0)
    upper = np.where(eligible, cfg.track_boost_cap * supply, 0.0)

    # --- campaigns: floors with pacing; then one LP per surface ----------
    campaign, campaign_ids = sorted_codes(tracks.campaign_id)
    camp = campaign_floors(campaign, live_flight & tracks.on_surface, eligible, upper, delivered,
                            tracks.start, tracks.end, today, cfg)
    x, camp["planned"], camp["shortfall"], capacity = _allocate(
        market, tracks, value, upper, eligible, camp, total_forecast, prior, cfg, method)

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
    })
    return MarketResult(scores, delivery_frame(market, camp, campaign_ids, tracks.licensor_id),
                        pd.DataFrame(capacity), reconciliation)


def _allocate(market: str, tracks: Candidates, value: np.ndarray, upper: np.ndarray, eligible: np.ndarray,
              camp: dict, total_forecast: np.ndarray, prior: dict, cfg: Config, method: str):
    """Build and solve the LP of each promotion surface. Returns the plan x
    (surface, track), each campaign's planned plays and shortfall (in `camp`
    order), and the capacity rows."""
    artist, licensor = sorted_codes(tracks.artist_id)[0], sorted_codes(tracks.licensor_id)[0]
    K = cfg.promoted_share_cap * total_forecast
    x = np.zeros(value.shape)
    planned, shortfall = np.zeros(len(camp["floor"])), np.zeros(len(camp["floor"]))
    capacity = []
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
            "eligible_rows": int(eligible[s].sum()),
        })
    return x, planned, shortfall, capacity


def first_reason(broken: np.ndarray) -> np.ndarray:
    """The first broken rule of each row, in REASONS order, None where no rule
    is broken. `broken` is (len(REASONS), rows...)."""
    names = np.array(REASONS + (None,), dtype=object)
    return names[np.where(broken.any(axis=0), np.argmax(broken, axis=0), len(REASONS))]
