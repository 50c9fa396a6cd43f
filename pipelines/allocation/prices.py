"""The prices of a solved allocation LP as rows (the `prices` table of docs/design.md §5),
and what serving and `oasis explain` derive from such rows: each track's reduced
cost and the dual bound that certifies a plan.

One row per constraint that involves at least one track with ub_t > 0 (a
constraint over no such track reads 0 <= bound: it cannot bind and its price is
0), plus the capacity row and every campaign floor of the problem:

    constraint      key          bound    slack (>= 0)              price (>= 0)
    capacity        ""           K        K - Σ x                   y_0
    artist_cap      artist_id    φ·K      φ·K - Σ_{t∈a} x_t          y_a
    licensor_cap    licensor_id  ψ·K      ψ·K - Σ_{t∈l} x_t          y_l
    campaign_floor  campaign_id  F_c      Σ_{t∈c} x_t + u_c - F_c    z_c (<= p)
    track_cap       track_id     ρ·E_t    ρ·E_t - x_t               w_t

A price is the objective gained per unit the bound is relaxed (for a floor: lost
per unit it is raised). With them a track's reduced cost is

    r_t = v_t - y_0 - y_a(t) - y_l(t) + z_c(t)

and the LP's optimality conditions say x_t = ρ·E_t where r_t > 0 and x_t = 0
where r_t < 0; only tracks with r_t = 0 (ties) sit strictly between. That is
what lets serving rank boosted candidates per request by value minus prices.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.allocation.problem import Problem, Solution, campaign_totals
from schemas import PRICE_CONSTRAINTS

CAPACITY_KEY = ""
PRICE_COLUMNS = ("constraint", "key", "bound", "slack", "price")


def price_rows(problem: Problem, sol: Solution, artist_ids, licensor_ids, campaign_ids,
               track_ids) -> pd.DataFrame:
    """The price rows of one solved problem (columns PRICE_COLUMNS).

    `artist_ids`, `licensor_ids`: the id of each code; `campaign_ids`: the id of
    each floor the rows should carry (a problem may end with floor-less groups
    past them, which get no row); `track_ids`: one per track."""
    return pd.DataFrame(price_columns(problem, sol, artist_ids, licensor_ids, campaign_ids, track_ids))


def price_columns(problem: Problem, sol: Solution, artist_ids, licensor_ids, campaign_ids,
                  track_ids) -> dict[str, np.ndarray]:
    """`price_rows` as numpy columns: a market concatenates its surfaces' before
    building one frame (a DataFrame per problem cost more than the rows)."""
    x, active = sol.x, problem.upper > 0
    a_tot = np.bincount(problem.artist, weights=x, minlength=problem.n_artists)
    l_tot = np.bincount(problem.licensor, weights=x, minlength=problem.n_licensors)
    artists = np.flatnonzero(np.bincount(problem.artist[active], minlength=problem.n_artists))
    licensors = np.flatnonzero(np.bincount(problem.licensor[active], minlength=problem.n_licensors))
    floors = np.arange(len(campaign_ids))
    c_tot = campaign_totals(problem, x)[floors] + sol.shortfall[floors]
    tracks = np.flatnonzero(active)
    parts = [  # (keys, bound, slack, price) per family, in PRICE_CONSTRAINTS order
        (np.array([CAPACITY_KEY], dtype=object), np.array([problem.capacity]),
         np.array([problem.capacity - float(np.sum(x))]), np.array([sol.capacity_price])),
        (np.asarray(artist_ids, dtype=object)[artists], np.full(len(artists), problem.artist_cap),
         problem.artist_cap - a_tot[artists], sol.artist_price[artists]),
        (np.asarray(licensor_ids, dtype=object)[licensors], np.full(len(licensors), problem.licensor_cap),
         problem.licensor_cap - l_tot[licensors], sol.licensor_price[licensors]),
        (np.asarray(campaign_ids, dtype=object), problem.floors[floors], c_tot - problem.floors[floors],
         sol.floor_price[floors]),
        (np.asarray(track_ids, dtype=object)[tracks], problem.upper[tracks], problem.upper[tracks] - x[tracks],
         sol.track_price[tracks]),
    ]
    return {
        "constraint": np.concatenate([np.full(len(keys), name, dtype=object)
                                      for name, (keys, *_) in zip(PRICE_CONSTRAINTS, parts)]),
        "key": np.concatenate([keys for keys, *_ in parts]),
        "bound": np.concatenate([b for _, b, _, _ in parts]).astype(np.float64),
        # the plan is clean (`clean_plan`): a negative slack is summation rounding, published as 0
        "slack": np.maximum(0.0, np.concatenate([s for _, _, s, _ in parts]).astype(np.float64)),
        "price": np.concatenate([p for *_, p in parts]).astype(np.float64),
    }


def lookup_prices(rows: pd.DataFrame, tracks: pd.DataFrame) -> dict[str, np.ndarray]:
    """The price each track faces in each family, from the price rows of its
    (market, surface) alone: `tracks` has artist_id, licensor_id, campaign_id
    and track_id columns. A key without a row (no floor, an ineligible track)
    has price 0."""
    def family(constraint: str, column: str) -> np.ndarray:
        sel = rows[rows["constraint"] == constraint]
        price = pd.Series(sel["price"].to_numpy(float), index=sel["key"].to_numpy(object))
        return tracks[column].map(price).fillna(0.0).to_numpy(float)

    capacity = rows.loc[rows["constraint"] == "capacity", "price"]
    return {
        "capacity": np.full(len(tracks), float(capacity.iloc[0]) if len(capacity) else 0.0),
        "artist_cap": family("artist_cap", "artist_id"),
        "licensor_cap": family("licensor_cap", "licensor_id"),
        "campaign_floor": family("campaign_floor", "campaign_id"),
        "track_cap": family("track_cap", "track_id"),
    }


def reduced_costs(value: np.ndarray, faced: dict[str, np.ndarray]) -> np.ndarray:
    """r_t = v_t - y_0 - y_a(t) - y_l(t) + z_c(t), from `lookup_prices`."""
    return (np.asarray(value, float) - faced["capacity"] - faced["artist_cap"] - faced["licensor_cap"]
            + faced["campaign_floor"])


def dual_bound(rows: pd.DataFrame, upper: np.ndarray, reduced: np.ndarray) -> float:
    """The LP dual objective at the published prices: Σ bound·price over the
    cap rows, minus Σ F_c·z_c over the floors, plus Σ ρ·E_t·max(0, r_t) over the
    tracks. When the floor prices are at most the penalty p it is an upper bound
    on every feasible plan's objective, so (bound − plan objective) certifies how
    far the plan can be from the optimum: 0 means optimal."""
    caps = rows[rows["constraint"].isin(["capacity", "artist_cap", "licensor_cap"])]
    floors = rows[rows["constraint"] == "campaign_floor"]
    return float(np.dot(caps["bound"], caps["price"]) - np.dot(floors["bound"], floors["price"])
                 + np.dot(np.asarray(upper, float), np.maximum(0.0, reduced)))
