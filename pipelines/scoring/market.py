"""Scoring math of DESIGN §4, pure functions over numpy arrays.

One call of `score_market` handles one market: it picks the enrollment row per
track, computes decayed signals, empirical-Bayes shrunk rates, value,
eligibility with reasons, supply forecasts and campaign floors with pacing, and
builds and solves the LP of each promotion surface. No Beam here, so every step
is testable with plain pytest.

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
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special

from pipelines.allocation.problem import Problem
from pipelines.allocation.solve import solve
from pipelines.config import Config
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


# ------------------------------------------------------------- weights ---
def day_weights(days: list[dt.date], as_of: dt.date, half_life_days: float) -> pd.Series:
    """Exponential decay weight of each day's signals, 1 for `as_of`."""
    age = np.array([(as_of - d).days for d in days], dtype=float)
    return pd.Series(np.power(0.5, age / half_life_days), index=pd.Index(days, name="dt"))


def window_days(as_of: dt.date, window: int) -> list[dt.date]:
    return [as_of - dt.timedelta(days=i) for i in range(window - 1, -1, -1)]


EPOCH = dt.date(1970, 1, 1)


def daynum(d: dt.date) -> int:
    return (d - EPOCH).days


def daynums(s) -> np.ndarray:
    """Days since 1970-01-01 of a column of dates: comparisons and group-bys on
    int64 stay in numpy, where object dates fall back to per-row Python.
    `datetime.date` objects (what Arrow's to_pandas gives) convert to Arrow's
    date32, days since the epoch, in C: several times faster than
    `pd.to_datetime`. Anything else (strings, or nulls, which become NaT)
    takes the pandas path."""
    values = s.to_numpy() if isinstance(s, pd.Series) else np.asarray(s)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if values.dtype == object:
        try:
            days = pa.array(values, type=pa.date32())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            days = None
        if days is not None and days.null_count == 0:
            return days.cast(pa.int32()).to_numpy().astype(np.int64)
    if not np.issubdtype(values.dtype, np.datetime64):
        values = pd.to_datetime(pd.Series(values)).to_numpy()
    return values.astype("datetime64[D]").astype(np.int64)


def dates(nums) -> list[dt.date]:
    return np.asarray(nums, dtype=np.int64).astype("datetime64[D]").astype(object).tolist()


# ----------------------------------------------------------- estimation ---
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


def pacing_multiplier(delivered, base, flight_days, remaining_days, lo: float, hi: float):
    """> 1 when behind pace, < 1 when ahead: the daily rate needed to reach the
    flight's target (base per day) over the remaining days, relative to base.
    Works on scalars and on arrays (one value per campaign)."""
    delivered, base = np.asarray(delivered, float), np.asarray(base, float)
    flight_days, remaining = np.asarray(flight_days, float), np.asarray(remaining_days, float)
    defined = (base > 0) & (remaining > 0)
    safe_base = np.where(defined, base, 1.0)
    needed = (base * flight_days - delivered) / np.where(defined, remaining, 1.0)
    mult = np.where(defined, np.clip(needed / safe_base, lo, hi), 1.0)
    return float(mult) if mult.ndim == 0 else mult


# ------------------------------------------------------------ group-bys ---
def lookup(keys, values) -> np.ndarray:
    """Position of each value in `keys` (unique), -1 when absent: a left merge
    on one key column as one hash lookup, with no frames built."""
    return pd.Index(keys).get_indexer(values)


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize(values, sort=True)` for strings: codes numbered in the
    sorted order of the distinct values (-1 for nulls), and those values sorted.
    pandas sorts the distinct values with Python comparisons; Arrow sorts them
    in C in the same order (UTF-8 bytes sort as code points), several times
    faster."""
    codes, uniques = pd.factorize(values)
    order = pc.array_sort_indices(pa.array(uniques, type=pa.string())).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    out = np.full(len(codes), -1, dtype=np.int64)
    out[codes >= 0] = rank[codes[codes >= 0]]
    return out, np.asarray(uniques, dtype=object)[order]


def int_group_sum(codes: np.ndarray, values, n_groups: int) -> np.ndarray:
    """Exact int64 sum of `values` per group code in 0..n_groups-1."""
    out = np.zeros(n_groups, dtype=np.int64)
    np.add.at(out, np.asarray(codes, dtype=np.int64), np.asarray(values, dtype=np.int64))
    return out


def group_sum(codes: np.ndarray, values, n_groups: int) -> np.ndarray:
    """Float sum of `values` per group code in 0..n_groups-1 (rows coded -1 are
    left out), adding each group's values in row order with Kahan compensation.
    `values` is one column (rows,) or several (columns, rows), summed alike.

    That is how a pandas group-by `sum` adds, so the totals are bit for bit
    those of a pandas group-by over the same rows in the same order: outputs
    must not move when the implementation changes, and a plain `np.bincount`
    rounds differently from a group's third value on. Values must be finite.
    Vectorised over groups: step k adds the k-th row of every group, so the loop
    runs as often as the largest group has rows (days of a window, surfaces of a
    track, tracks of a campaign), not once per row."""
    codes = np.asarray(codes, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    columns = values if values.ndim == 2 else values[None, :]
    total, compensation = np.zeros((len(columns), n_groups)), np.zeros((len(columns), n_groups))
    rows = np.flatnonzero(codes >= 0)
    if len(rows):
        rows = rows[_stable_argsort(codes[rows], n_groups)]   # by group, row order within a group
        counts = np.bincount(codes[rows], minlength=n_groups)
        rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[codes[rows]]
        rows = rows[_stable_argsort(rank, int(counts.max()))]  # all groups' first rows, then second rows...
        group, step_values = codes[rows], np.take(columns, rows, axis=1)
        lo = 0
        for hi in np.cumsum(np.bincount(rank)):
            _kahan_add(total, compensation, (slice(None), group[lo:hi]), step_values[:, lo:hi])
            lo = hi
    return total if values.ndim == 2 else total[0]


def compensated_sum(terms: np.ndarray) -> np.ndarray:
    """terms[0] + terms[1] + ... in that order, elementwise, with Kahan
    compensation: `group_sum` for groups whose rows are these terms in order
    (a track's promotion surfaces, say), without sorting anything."""
    terms = np.asarray(terms, dtype=float)
    total, compensation = np.zeros(terms.shape[1:]), np.zeros(terms.shape[1:])
    for term in terms:
        _kahan_add(total, compensation, ..., term)
    return total


def _kahan_add(total: np.ndarray, compensation: np.ndarray, index, values: np.ndarray) -> None:
    """Add `values` to total[index] in place, one Kahan step, as pandas' group
    sum does it: y = v - c; t = s + y; c = (t - s) - y; s = t."""
    before = total[index]
    y = values - compensation[index]
    t = before + y
    compensation[index] = (t - before) - y
    total[index] = t


def _stable_argsort(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of integers in [0, bound). Below 2**16 the keys are cast to
    uint16, for which numpy's stable sort is a radix sort: linear, and ten
    times faster than the timsort it uses on int64."""
    return np.argsort(keys.astype(np.uint16) if bound <= 1 << 16 else keys, kind="stable")


# ------------------------------------------------------------ selection ---
def choose_enrollments(enrolled: pd.DataFrame, score_date: dt.date) -> pd.DataFrame:
    """One enrollment row per (track, market): a row whose campaign is active on
    the score date first, then the latest flight, then the campaign id."""
    return enrolled.iloc[_chosen_positions(enrolled, daynums(enrolled["start_date"]),
                                           daynums(enrolled["end_date"]), daynum(score_date))]


def _chosen_positions(enrolled: pd.DataFrame, start: np.ndarray, end: np.ndarray, today: int) -> np.ndarray:
    """Positions of the rows `choose_enrollments` keeps, in (track_id, market)
    order: one stable lexsort on integer codes (factorized in sort order, so the
    order is that of the strings) instead of a multi-column sort_values and a
    drop_duplicates, whose bookkeeping costs more than the sort."""
    live = (enrolled["status"].to_numpy() == "active") & (start <= today) & (end >= today)
    track, market, campaign = (sorted_codes(enrolled[c].to_numpy())[0]
                               for c in ("track_id", "market", "campaign_id"))
    order = np.lexsort((campaign, -start, ~live, market, track))  # last key sorts first
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(track[order]) != 0) | (np.diff(market[order]) != 0)
    return order[first]


@dataclass(frozen=True)
class _Candidates:
    """The enrollment chosen for each track of the market, column by column in
    track_id order: the rows of every surface's problem."""
    track_id: np.ndarray
    campaign_id: np.ndarray
    artist_id: np.ndarray
    licensor_id: np.ndarray
    status: np.ndarray
    release_date: np.ndarray   # as given, for the output
    start: np.ndarray          # day numbers of the flight
    end: np.ndarray
    released: np.ndarray       # day number of release_date
    on_surface: np.ndarray     # (surfaces, tracks): the surface is enrolled


def _candidates(enrolled: pd.DataFrame, score_date: dt.date) -> _Candidates:
    start, end = daynums(enrolled["start_date"]), daynums(enrolled["end_date"])
    pos = _chosen_positions(enrolled, start, end, daynum(score_date))

    def column(name):
        return enrolled[name].to_numpy()[pos]

    return _Candidates(
        track_id=column("track_id"), campaign_id=column("campaign_id"), artist_id=column("artist_id"),
        licensor_id=column("licensor_id"), status=column("status"), release_date=column("release_date"),
        start=start[pos], end=end[pos], released=daynums(column("release_date")),
        on_surface=enrolled_on(column("surfaces")))


def enrolled_on(surfaces: np.ndarray) -> np.ndarray:
    """(promotion surfaces, rows) mask: is the surface in the row's list of
    enrolled surfaces. Arrow flattens and matches the lists, so there is no
    per-row Python."""
    lists = pa.array(surfaces, type=pa.list_(pa.string()))
    surface = pc.index_in(pc.list_flatten(lists), value_set=pa.array(PROMOTION_SURFACES))
    surface = surface.fill_null(-1).to_numpy()
    owner = pc.list_parent_indices(lists).to_numpy()
    out = np.zeros((len(PROMOTION_SURFACES), len(surfaces)), dtype=bool)
    out[surface[surface >= 0], owner[surface >= 0]] = True
    return out


# ---------------------------------------------------------------- market ---
@dataclass
class MarketResult:
    scores: pd.DataFrame
    delivery: pd.DataFrame
    capacity: pd.DataFrame


DELIVERY_COLUMNS = ("campaign_id", "market", "surface", "flight_start", "flight_end", "delivered_to_date",
                    "floor", "planned", "shortfall", "pacing_multiplier", "licensor_id",
                    "eligible_tracks", "max_boost")


def score_market(market: str, enrolled: pd.DataFrame, aggregates: pd.DataFrame, totals: pd.DataFrame,
                 observed_days: list[dt.date], as_of: dt.date, cfg: Config,
                 method: str = "exact") -> MarketResult:
    """Score and allocate one market for score date as_of + 1.

    enrolled: latest enrollment rows of this market (the contract's columns).
    aggregates: daily_aggregates rows of this market's enrolled tracks, for the
        window days and any earlier days back to the oldest live flight start.
    totals: surface_totals rows of this market for the window days.
    observed_days: the window days whose engagement was observed (a day with no
        raw partition is left out of the forecast's average).

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

    tracks = _candidates(enrolled, score_date)
    shape = (len(PROMOTION_SURFACES), len(tracks.track_id))
    sig, delivered = _track_signals(tracks, aggregates, observed_nums, weight_of, as_of_num)
    prior = _priors(_surface_totals(totals, observed_nums, weight_of), sig, cfg)

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
    broken = np.concatenate([broken, _guardrail(sig, prior, ~broken.any(axis=0), cfg)[None]])
    eligible = ~broken.any(axis=0)
    upper = np.where(eligible, cfg.track_boost_cap * supply, 0.0)

    # --- campaigns: floors with pacing; then one LP per surface ----------
    campaign, campaign_ids = sorted_codes(tracks.campaign_id)
    camp = _campaign_floors(campaign, live_flight & tracks.on_surface, eligible, upper, delivered,
                            tracks.start, tracks.end, today, cfg)
    x, camp["planned"], camp["shortfall"], capacity = _allocate(
        market, tracks, value, upper, eligible, camp, total_forecast, prior, cfg, method)

    scores = pd.DataFrame({
        "track_id": np.tile(tracks.track_id, shape[0]), "market": market,
        "surface": np.repeat(np.array(PROMOTION_SURFACES, dtype=object), shape[1]),
        "campaign_id": np.tile(tracks.campaign_id, shape[0]),
        "artist_id": np.tile(tracks.artist_id, shape[0]),
        "licensor_id": np.tile(tracks.licensor_id, shape[0]), "eligible": eligible.ravel(),
        "reason": first_reason(broken).ravel(), "plays": sig["plays"].ravel(), "skip_rate": skip_rate.ravel(),
        "save_rate": save_rate.ravel(), "value": value.ravel(), "supply_forecast": supply.ravel(),
        "max_promoted_plays": upper.ravel(), "planned_promoted_plays": x.ravel(),
        "boost_probability": np.divide(x, supply, out=np.zeros_like(x), where=supply > 0).ravel(),
        "score": np.clip(np.divide(x, upper, out=np.zeros_like(x), where=upper > 0), 0.0, 1.0).ravel(),
        "skips": sig["skips"].ravel(), "saves": sig["saves"].ravel(),
        "weighted_plays": sig["w_plays"].ravel(),
        "release_date": np.tile(tracks.release_date, shape[0]),
    })
    return MarketResult(scores, _delivery_frame(market, camp, campaign_ids, tracks.licensor_id),
                        pd.DataFrame(capacity))


def _allocate(market: str, tracks: _Candidates, value: np.ndarray, upper: np.ndarray, eligible: np.ndarray,
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


def _delivery_frame(market: str, camp: dict, campaign_ids: np.ndarray,
                    licensor_id: np.ndarray) -> pd.DataFrame:
    """campaign_delivery rows of a market, by surface then campaign id."""
    if not len(camp["floor"]):
        return pd.DataFrame({c: [] for c in DELIVERY_COLUMNS})
    return pd.DataFrame({
        "campaign_id": campaign_ids[camp["campaign"]], "market": market,
        "surface": np.array(PROMOTION_SURFACES, dtype=object)[camp["surface"]],
        "flight_start": dates(camp["flight_start"]), "flight_end": dates(camp["flight_end"]),
        "delivered_to_date": camp["delivered_to_date"], "floor": camp["floor"], "planned": camp["planned"],
        "shortfall": camp["shortfall"], "pacing_multiplier": camp["pacing_multiplier"],
        "licensor_id": licensor_id[camp["first_row"]], "eligible_tracks": camp["eligible_tracks"],
        "max_boost": camp["max_boost"],
    })


def _track_signals(tracks: _Candidates, aggregates: pd.DataFrame, observed_nums: np.ndarray, weight_of,
                   as_of_num: int) -> tuple[dict, np.ndarray]:
    """(surface, track) signals over the observed window days (`_window_signals`),
    and promoted plays delivered from the track's flight start to as_of, in one
    pass over the aggregates: each row's (surface, track) cell is found once."""
    n = len(tracks.track_id)
    agg_dt = daynums(aggregates["dt"])
    track = lookup(tracks.track_id, aggregates["track_id"].to_numpy())
    surface = lookup(PROMOTION_SURFACES, aggregates["surface"].to_numpy())
    known = (track >= 0) & (surface >= 0)
    cell = np.where(known, surface * n + track, -1)   # flat index into (surface, track) arrays
    shape = (len(PROMOTION_SURFACES), n)
    sig = _window_signals(np.where(np.isin(agg_dt, observed_nums), cell, -1), weight_of(agg_dt),
                          aggregates, shape)
    flight_start = np.zeros(len(cell), dtype=np.int64)
    flight_start[known] = tracks.start[track[known]]
    since_start = known & (agg_dt >= flight_start) & (agg_dt <= as_of_num)
    delivered = int_group_sum(cell[since_start], aggregates["promoted_plays"].to_numpy()[since_start],
                              shape[0] * n).reshape(shape).astype(float)
    return sig, delivered


def first_reason(broken: np.ndarray) -> np.ndarray:
    """The first broken rule of each row, in REASONS order, None where no rule
    is broken. `broken` is (len(REASONS), rows...)."""
    names = np.array(REASONS + (None,), dtype=object)
    return names[np.where(broken.any(axis=0), np.argmax(broken, axis=0), len(REASONS))]


def _window_signals(cell: np.ndarray, weight: np.ndarray, aggregates: pd.DataFrame, shape: tuple) -> dict:
    """(surface, track) sums over the aggregate rows whose `cell` (flat index
    into those arrays) is not -1: plays, skips and saves, and their
    decay-weighted sums with weighted organic plays (not promoted), the supply
    forecast's numerator."""
    rows = cell >= 0
    codes, w, size = cell[rows], weight[rows], shape[0] * shape[1]
    column = {c: aggregates[c].to_numpy()[rows] for c in ("plays", "skips", "saves", "promoted_plays")}
    column["organic"] = column["plays"] - column["promoted_plays"]
    sig = {c: int_group_sum(codes, column[c], size).reshape(shape) for c in ("plays", "skips", "saves")}
    weighted = ("plays", "skips", "saves", "organic")
    sums = group_sum(codes, np.stack([w * column[c] for c in weighted]), size)
    sig.update({f"w_{c}": total.reshape(shape) for c, total in zip(weighted, sums)})
    return sig


def _surface_totals(totals: pd.DataFrame, observed_nums: np.ndarray, weight_of) -> dict:
    """Decay-weighted plays, skips and saves of all tracks per promotion surface
    over the observed window days: the baselines' numerators and denominator."""
    day = daynums(totals["dt"])
    rows = np.isin(day, observed_nums)
    codes = lookup(PROMOTION_SURFACES, totals["surface"].to_numpy()[rows])
    w = weight_of(day[rows])
    names = ("plays", "skips", "saves")
    sums = group_sum(codes, np.stack([w * totals[c].to_numpy()[rows] for c in names]),
                     len(PROMOTION_SURFACES))
    return {f"w_{c}": total for c, total in zip(names, sums)}


def _priors(tot: dict, sig: dict, cfg: Config) -> dict:
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


def _guardrail(sig: dict, prior: dict, undecided: np.ndarray, cfg: Config) -> np.ndarray:
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


def _campaign_floors(campaign: np.ndarray, live: np.ndarray, eligible: np.ndarray, upper: np.ndarray,
                     delivered: np.ndarray, start: np.ndarray, end: np.ndarray, today: int,
                     cfg: Config) -> dict:
    """Per (surface, campaign) with tracks live on the score date and enrolled
    on the surface (`live`): delivered to date, maximal boost, pacing
    multiplier and floor, as arrays ordered by surface then campaign id.

    `campaign` holds each track's code among the market's campaigns in id
    order; the other arrays are (surface, track), `delivered` the promoted plays
    since the track's flight start; dates are day numbers. Also returned:
    `offsets`, where each surface's campaigns start, and `group`, each (surface,
    track)'s campaign in its surface's problem: the campaign's index among the
    surface's, or one extra floor-less group past them for a track whose
    campaign is not live there (its upper bound is 0, so any valid group does)."""
    n_surfaces, n = live.shape
    n_campaigns = int(campaign.max()) + 1 if n else 0
    surface, track = np.nonzero(live)   # surface by surface, tracks in order
    key = surface * n_campaigns + campaign[track]
    present = np.zeros(n_surfaces * n_campaigns, dtype=bool)
    present[key] = True
    keys = np.flatnonzero(present)
    index = np.full(n_surfaces * n_campaigns, -1, dtype=np.int64)
    index[keys] = np.arange(len(keys))
    group, m = index[key], len(keys)

    first_row = np.full(m, len(key), dtype=np.int64)
    np.minimum.at(first_row, group, np.arange(len(key)))
    flight_start = np.full(m, np.iinfo(np.int64).max)
    np.minimum.at(flight_start, group, start[track])
    flight_end = np.full(m, np.iinfo(np.int64).min)
    np.maximum.at(flight_end, group, end[track])
    max_boost, delivered_to_date = group_sum(group, np.stack([upper[live], delivered[live]]), m)
    base = cfg.floor_fraction * max_boost
    mult = np.atleast_1d(pacing_multiplier(delivered_to_date, base, flight_end - flight_start + 1,
                                           flight_end - today + 1, cfg.pacing_min, cfg.pacing_max))

    offsets = np.searchsorted(keys // max(n_campaigns, 1), np.arange(n_surfaces + 1))
    local = index[np.arange(n_surfaces)[:, None] * n_campaigns + campaign[None, :]]
    return dict(
        surface=keys // max(n_campaigns, 1), campaign=keys % max(n_campaigns, 1), first_row=track[first_row],
        flight_start=flight_start, flight_end=flight_end, delivered_to_date=delivered_to_date,
        max_boost=max_boost, eligible_tracks=np.bincount(group[eligible[live]], minlength=m).astype(np.int64),
        pacing_multiplier=mult, floor=np.minimum(base * mult, max_boost), offsets=offsets,
        group=np.where(local >= 0, local - offsets[:-1, None], np.diff(offsets)[:, None]))
