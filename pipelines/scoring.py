"""Scoring math of DESIGN §4, pure functions over small pandas frames.

One call of `score_market` handles one market: it picks the enrollment row per
track, computes decayed signals, empirical-Bayes shrunk rates, value,
eligibility with reasons, supply forecasts and campaign floors with pacing, and
builds and solves the LP of each promotion surface. No Beam here, so every step
is testable with plain pytest.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipelines import allocation
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


def daynums(s: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of a column of dates: comparisons and group-bys on
    int64 stay in numpy, where object dates fall back to per-row Python."""
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    values = s.to_numpy()
    if not np.issubdtype(values.dtype, np.datetime64):
        values = pd.to_datetime(s).to_numpy()
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
    """Posterior probability that the true rate exceeds `threshold`."""
    a = baseline * strength + np.asarray(successes, dtype=float)
    b = (1 - baseline) * strength + np.asarray(trials, dtype=float) - np.asarray(successes, dtype=float)
    a = np.maximum(a, 1e-9)
    b = np.maximum(b, 1e-9)
    threshold = np.asarray(threshold, dtype=float)
    return np.where(threshold >= 1.0, 0.0, stats.beta.sf(np.minimum(threshold, 1.0), a, b))


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


# ------------------------------------------------------------ selection ---
def choose_enrollments(enrolled: pd.DataFrame, score_date: dt.date) -> pd.DataFrame:
    """One enrollment row per (track, market): a row whose campaign is active on
    the score date first, then the latest flight, then the campaign id."""
    e = enrolled.copy()
    today = daynum(score_date)
    e["_live"] = ((e["status"] == "active").to_numpy() & (daynums(e["start_date"]) <= today)
                  & (daynums(e["end_date"]) >= today))
    e = e.sort_values(["track_id", "market", "_live", "start_date", "campaign_id"],
                      ascending=[True, True, False, False, True], kind="mergesort")
    return e.drop_duplicates(["track_id", "market"], keep="first").drop(columns="_live")


# ---------------------------------------------------------------- market ---
@dataclass
class MarketResult:
    scores: pd.DataFrame
    delivery: pd.DataFrame
    capacity: pd.DataFrame


SIGNAL_COLUMNS = ("plays", "listeners", "skips", "saves", "promoted_plays")


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

    aggregates = aggregates.assign(_dt=daynums(aggregates["dt"]))
    totals = totals.assign(_dt=daynums(totals["dt"]))

    chosen = choose_enrollments(enrolled, score_date)
    rows = chosen.loc[chosen.index.repeat(len(PROMOTION_SURFACES))].reset_index(drop=True)
    rows["surface"] = list(PROMOTION_SURFACES) * len(chosen)

    # --- signals over the window -----------------------------------------
    agg = aggregates[np.isin(aggregates["_dt"].to_numpy(), observed_nums)].copy()
    agg["w"] = weight_of(agg["_dt"].to_numpy())
    agg["organic"] = agg["plays"] - agg["promoted_plays"]
    for c in ("plays", "skips", "saves", "organic"):
        agg[f"w_{c}"] = agg["w"] * agg[c]
    sig = agg.groupby(["track_id", "surface"], sort=True).agg(
        plays=("plays", "sum"), skips=("skips", "sum"), saves=("saves", "sum"),
        w_plays=("w_plays", "sum"), w_skips=("w_skips", "sum"), w_saves=("w_saves", "sum"),
        w_organic=("w_organic", "sum"),
    ).reset_index()
    rows = rows.merge(sig, on=["track_id", "surface"], how="left")
    for c in ("plays", "skips", "saves"):
        rows[c] = rows[c].fillna(0).astype("int64")
    for c in ("w_plays", "w_skips", "w_saves", "w_organic"):
        rows[c] = rows[c].fillna(0.0).astype(float)
    promo_plays = rows.groupby("track_id")["plays"].transform("sum")

    tot = totals[np.isin(totals["_dt"].to_numpy(), observed_nums)].copy()
    tot["w"] = weight_of(tot["_dt"].to_numpy())
    for c in ("plays", "skips", "saves"):
        tot[f"w_{c}"] = tot["w"] * tot[c]
    tot = tot.groupby("surface")[["w_plays", "w_skips", "w_saves"]].sum()

    # --- reasons independent of the surface's estimates -----------------
    status = rows["status"].to_numpy()
    rows["_start"], rows["_end"] = daynums(rows["start_date"]), daynums(rows["end_date"])
    live_flight = (rows["_start"].to_numpy() <= today) & (rows["_end"].to_numpy() >= today)
    on_surface = np.array([s in list(surfs) for s, surfs in zip(rows["surface"], rows["surfaces"])],
                          dtype=bool)
    age_days = today - daynums(rows["release_date"])

    # --- baselines and prior strengths per surface -----------------------
    prior = {}
    for surface in PROMOTION_SURFACES:
        r = rows[rows["surface"] == surface]
        base_plays = float(tot["w_plays"].get(surface, 0.0))
        mu_skip = float(tot["w_skips"].get(surface, 0.0)) / base_plays if base_plays > 0 else 0.0
        mu_save = float(tot["w_saves"].get(surface, 0.0)) / base_plays if base_plays > 0 else 0.0
        prior[surface] = dict(
            base_plays=base_plays, mu_skip=mu_skip, mu_save=mu_save,
            k_skip=prior_strength(r["w_skips"].to_numpy(), r["w_plays"].to_numpy(), mu_skip,
                                  cfg.min_prior_strength, cfg.max_prior_strength),
            k_save=prior_strength(r["w_saves"].to_numpy(), r["w_plays"].to_numpy(), mu_save,
                                  cfg.min_prior_strength, cfg.max_prior_strength))
    disliked_in_market = _disliked_in_market(rows, prior, cfg)

    out_scores, out_delivery, out_capacity = [], [], []
    for surface in PROMOTION_SURFACES:
        m = (rows["surface"] == surface).to_numpy()
        r = rows.loc[m].reset_index(drop=True)
        base_plays, mu_skip, mu_save, k_skip, k_save = (prior[surface][k] for k in (
            "base_plays", "mu_skip", "mu_save", "k_skip", "k_save"))
        skip_rate = shrink(r["w_skips"], r["w_plays"], mu_skip, k_skip)
        save_rate = shrink(r["w_saves"], r["w_plays"], mu_save, k_save)
        value = (save_rate - mu_save) - cfg.skip_penalty * (skip_rate - mu_skip)
        disliked = (prob_above(r["w_skips"], r["w_plays"], mu_skip, k_skip,
                               mu_skip + cfg.guardrail_delta) > cfg.guardrail_confidence)
        disliked = disliked | r["track_id"].map(disliked_in_market).fillna(False).to_numpy(dtype=bool)
        supply = r["w_organic"].to_numpy() / weight_sum if weight_sum > 0 else np.zeros(len(r))
        supply = np.maximum(supply, 0.0)
        total_forecast = base_plays / weight_sum if weight_sum > 0 else 0.0

        broken = [
            status[m] == "cancelled",
            status[m] == "paused",
            ~live_flight[m],
            ~on_surface[m],
            age_days[m] < cfg.min_track_age_days,
            promo_plays.to_numpy()[m] < cfg.min_window_plays,
            np.asarray(disliked, dtype=bool),
        ]
        reason = np.full(len(r), None, dtype=object)
        for name, b in reversed(list(zip(REASONS, broken))):
            reason = np.where(b, name, reason)
        eligible = np.array([x is None for x in reason], dtype=bool)
        upper = np.where(eligible, cfg.track_boost_cap * supply, 0.0)

        # --- campaigns: floors with pacing -------------------------------
        camp = _campaign_floors(r, eligible, upper, aggregates, surface, as_of_num, today,
                                on_surface[m], cfg)
        K = cfg.promoted_share_cap * total_forecast
        vmax = float(np.max(np.abs(value[eligible]))) if eligible.any() else 0.0
        penalty = cfg.shortfall_penalty_factor * (vmax + 1e-6)
        problem, camp_codes = _build_problem(r, value, upper, camp, K, cfg, penalty)
        sol = allocation.solve(problem, method=method)
        x = sol.x

        scores = pd.DataFrame({
            "track_id": r["track_id"], "market": market, "surface": surface,
            "campaign_id": r["campaign_id"], "artist_id": r["artist_id"], "licensor_id": r["licensor_id"],
            "eligible": eligible, "reason": reason, "plays": r["plays"],
            "skip_rate": np.asarray(skip_rate, dtype=float), "save_rate": np.asarray(save_rate, dtype=float),
            "value": np.asarray(value, dtype=float), "supply_forecast": supply,
            "max_promoted_plays": upper, "planned_promoted_plays": x,
            "boost_probability": np.divide(x, supply, out=np.zeros_like(x), where=supply > 0),
            "score": np.clip(np.divide(x, upper, out=np.zeros_like(x), where=upper > 0), 0.0, 1.0),
            "skips": r["skips"], "saves": r["saves"], "weighted_plays": r["w_plays"],
            "release_date": r["release_date"],
        })
        out_scores.append(scores)

        if len(camp):
            planned = np.bincount(camp_codes, weights=x, minlength=len(camp) + 1)[:len(camp)]
            camp = camp.assign(planned=planned, shortfall=sol.shortfall[:len(camp)],
                               market=market, surface=surface)
            out_delivery.append(camp)
        out_capacity.append(pd.DataFrame([{
            "market": market, "surface": surface, "total_forecast": total_forecast,
            "promoted_share_cap": cfg.promoted_share_cap, "capacity": K,
            "artist_cap": cfg.artist_share_cap * K, "licensor_cap": cfg.licensor_share_cap * K,
            "shortfall_penalty": penalty, "planned_total": float(np.sum(x)),
            "shadow_price": sol.capacity_price, "baseline_skip_rate": mu_skip,
            "baseline_save_rate": mu_save, "prior_strength_skip": k_skip, "prior_strength_save": k_save,
            "candidates": int(len(r)), "eligible_rows": int(eligible.sum()),
        }]))

    delivery_cols = ["campaign_id", "market", "surface", "flight_start", "flight_end", "delivered_to_date",
                     "floor", "planned", "shortfall", "pacing_multiplier", "licensor_id",
                     "eligible_tracks", "max_boost"]
    delivery = (pd.concat(out_delivery, ignore_index=True)[delivery_cols] if out_delivery
                else pd.DataFrame({c: [] for c in delivery_cols}))
    return MarketResult(pd.concat(out_scores, ignore_index=True), delivery,
                        pd.concat(out_capacity, ignore_index=True))


def _disliked_in_market(rows: pd.DataFrame, prior: dict, cfg: Config) -> pd.Series:
    """Guardrail on the evidence of all promotion surfaces of a track in the
    market: dislike is a property of the track, and pooling gives the test power
    on tracks whose plays are spread thin. Observed skips are compared with the
    play-weighted mix of the surfaces' baselines. Returns a bool per track_id."""
    r = rows[["track_id", "surface", "w_plays", "w_skips"]].copy()
    r["mu"] = r["surface"].map({s: p["mu_skip"] for s, p in prior.items()})
    r["k"] = r["surface"].map({s: p["k_skip"] for s, p in prior.items()})
    r["mu_plays"] = r["mu"] * r["w_plays"]
    g = r.groupby("track_id", sort=True).agg(w_plays=("w_plays", "sum"), w_skips=("w_skips", "sum"),
                                             mu_plays=("mu_plays", "sum"), k=("k", "min"))
    n = g["w_plays"].to_numpy()
    mu = np.where(n > 0, g["mu_plays"].to_numpy() / np.where(n > 0, n, 1.0), 0.0)
    defined = (mu > 0) & (mu < 1) & (mu + cfg.guardrail_delta < 1)
    probs = np.zeros(len(g))
    if defined.any():
        probs[defined] = prob_above(g["w_skips"].to_numpy()[defined], n[defined], mu[defined],
                                    g["k"].to_numpy()[defined], mu[defined] + cfg.guardrail_delta)
    return pd.Series(probs > cfg.guardrail_confidence, index=g.index)


def _campaign_floors(r: pd.DataFrame, eligible: np.ndarray, upper: np.ndarray, aggregates: pd.DataFrame,
                     surface: str, as_of_num: int, today: int, on_surface: np.ndarray,
                     cfg: Config) -> pd.DataFrame:
    """Per campaign live on the score date with tracks enrolled on this surface:
    delivered to date, maximal boost, pacing multiplier and floor. Dates are day
    numbers here (`daynums`); `r` has `_start` and `_end`, `aggregates` has `_dt`."""
    live = (r["_start"].to_numpy() <= today) & (r["_end"].to_numpy() >= today) & on_surface
    columns = ["campaign_id", "flight_start", "flight_end", "licensor_id", "delivered_to_date",
               "eligible_tracks", "max_boost", "pacing_multiplier", "floor"]
    if not live.any():
        return pd.DataFrame(columns=columns)
    rl = r.loc[live, ["campaign_id", "track_id", "_start", "_end", "licensor_id"]].copy()
    rl["ub"] = upper[live]
    rl["elig"] = eligible[live].astype(np.int64)
    # promoted plays of each track on this surface since its flight started
    a = aggregates.loc[aggregates["surface"].to_numpy() == surface, ["track_id", "_dt", "promoted_plays"]]
    a = a.merge(rl[["track_id", "_start"]], on="track_id")
    a = a[(a["_dt"] >= a["_start"]) & (a["_dt"] <= as_of_num)]
    delivered = a.groupby("track_id")["promoted_plays"].sum()
    rl["delivered"] = rl["track_id"].map(delivered).fillna(0.0).astype(float)
    camp = rl.groupby("campaign_id", sort=True).agg(
        _start=("_start", "min"), _end=("_end", "max"), licensor_id=("licensor_id", "first"),
        delivered_to_date=("delivered", "sum"), eligible_tracks=("elig", "sum"), max_boost=("ub", "sum"),
    ).reset_index()
    base = cfg.floor_fraction * camp["max_boost"].to_numpy()
    mult = pacing_multiplier(camp["delivered_to_date"].to_numpy(), base,
                             camp["_end"].to_numpy() - camp["_start"].to_numpy() + 1,
                             camp["_end"].to_numpy() - today + 1, cfg.pacing_min, cfg.pacing_max)
    camp["pacing_multiplier"] = np.atleast_1d(mult)
    camp["floor"] = np.minimum(base * camp["pacing_multiplier"].to_numpy(), camp["max_boost"].to_numpy())
    camp["flight_start"], camp["flight_end"] = dates(camp["_start"]), dates(camp["_end"])
    camp["eligible_tracks"] = camp["eligible_tracks"].astype("int64")
    return camp[columns]


def _build_problem(r: pd.DataFrame, value, upper, camp: pd.DataFrame, K: float, cfg: Config,
                   penalty: float) -> tuple[allocation.Problem, np.ndarray]:
    artist = pd.factorize(r["artist_id"], sort=True)[0]
    licensor = pd.factorize(r["licensor_id"], sort=True)[0]
    camp_index = {c: i for i, c in enumerate(camp["campaign_id"])} if len(camp) else {}
    # A row whose campaign is not live has upper == 0, so its campaign code only
    # needs to be valid: put it in an extra floor-less group.
    extra = len(camp_index)
    camp_codes = np.array([camp_index.get(c, extra) for c in r["campaign_id"]], dtype=np.int64)
    floors = np.concatenate([camp["floor"].to_numpy(dtype=float) if len(camp) else np.zeros(0), [0.0]])
    problem = allocation.Problem(
        value=np.asarray(value, dtype=float), upper=np.asarray(upper, dtype=float),
        artist=artist.astype(np.int64), licensor=licensor.astype(np.int64), campaign=camp_codes,
        floors=floors, capacity=float(K), artist_cap=cfg.artist_share_cap * K,
        licensor_cap=cfg.licensor_share_cap * K, penalty=float(penalty),
    )
    return problem, camp_codes
