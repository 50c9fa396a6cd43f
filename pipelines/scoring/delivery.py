"""Delivery against the plan, and the serving gain (docs/design.md §4, §5): pure
functions over one market's frames, called by `score_market`.

Serving reads `boost_probability b = min(1, x / (E * g_hat))` for a score date
and turns it into promoted plays. Its real response is unknown to us: on a
day with O organic (non-promoted) plays of a track it delivers about
g * b * O promoted plays, g the serving gain of the (market, surface). With
g_hat = g and an unbiased forecast (O about E), that is x: the plan.

`reconcile` compares the plan of the logs day (the snapshot published for that
day) with the promoted plays in that day's logs, row by row: the
`delivery_reconciliation` table. `serving_gain` then estimates the gain per
(market, surface) as realised promoted plays over what the plan asked serving
for, sum(realised) / sum(b * E) over the boosted rows (b * E is x / g_hat
where b is not capped at 1), decay-weighted over the recent reconciled days
(`gain_half_life_days`), shrunk toward 1 by `gain_prior_plays` (so a new
market or surface starts at 1) and clamped to [gain_min, gain_max].

What it measures is realised over planned, the product's question, so it
also takes in the forecast's bias on the boosted rows: with unbiased
forecasts g_hat is serving's gain g; when the boosted tracks' organic plays
come in below E (promotion displaces organic plays, a flight start boosts
tracks whose history was unboosted, a holiday lifts a day) g_hat moves so
that delivery meets the plan, and the table's organic_plays against
supply_forecast shows that part row by row. (Applying an estimate of g alone
would leave delivery short by the forecast's error: measured on the
simulator, 0.76-0.88 of the plan in the days after a flight start.)

That estimate of g alone is published beside it, as the split of a miss
between serving and the forecast: `serving_response`, realised promoted plays
over b * O with O the day's realised organic plays of the boosted rows (what
serving made of the boost, whatever the forecast said), smoothed, shrunk and
clamped the same way. Their ratio is the forecast's bias on the boosted rows.

The estimate is recursive: the decay-weighted sums are published in
`capacity` (gain_realised, gain_requested, gain_requested_organic), and the
next run adds its day to the previous snapshot's. So is the delivery gate's count of consecutive
missed days (delivery_miss_days): a run needs only the snapshot before it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.arrays import lookup
from pipelines.config import Config
from pipelines.scoring.signals import daynums
from schemas import PROMOTION_SURFACES

TINY = 1e-9   # planned promoted plays at or below this are nothing planned (an LP's rounding dust)

# What a run reads of the previous snapshot (older snapshots may lack some: they read as missing).
PLAN_COLUMNS = ("track_id", "market", "surface", "campaign_id", "planned_promoted_plays", "boost_probability",
                "supply_forecast")
STATE_COLUMNS = ("market", "surface", "gain_realised", "gain_requested", "gain_requested_organic",
                 "delivery_miss_days")

RECONCILIATION_COLUMNS = ("track_id", "market", "surface", "planned_promoted_plays", "boost_probability",
                          "realised_promoted_plays", "ratio", "campaign_id", "supply_forecast", "organic_plays",
                          "plan_snapshot_id")


def reconcile(market: str, plan: pd.DataFrame | None, aggregates: pd.DataFrame, day_num: int,
              plan_snapshot_id: str | None) -> tuple[pd.DataFrame, dict]:
    """The reconciliation rows of one market for the logs day `day_num` (a day
    number), and per promotion surface the sums behind the serving gain and
    the delivery gate.

    plan: the market's promotion_scores rows of the snapshot published for
        that day (PLAN_COLUMNS), or None when there was none.
    aggregates: daily_aggregates rows of the market (any days: the logs day's
        are taken).

    A row is kept when it was planned (x > 0) or has realised promoted plays,
    so every promoted play of the day's aggregates is in exactly one row.
    Returned sums, arrays over PROMOTION_SURFACES: planned and realised (all
    rows), gain_realised, gain_requested and gain_requested_organic (the
    boosted rows: realised, boost_probability * supply_forecast and
    boost_probability * organic plays), and measured (a plan existed).
    """
    day = aggregates[daynums(aggregates["dt"]) == day_num] if len(aggregates) else aggregates
    realised = pd.DataFrame({
        "track_id": day["track_id"].to_numpy(object), "surface": day["surface"].to_numpy(object),
        "realised_promoted_plays": day["promoted_plays"].to_numpy(np.int64),
        "organic_plays": (day["plays"].to_numpy(np.int64) - day["promoted_plays"].to_numpy(np.int64)),
    })
    planned = _planned_rows(plan)
    rows = planned.merge(realised, on=["track_id", "surface"], how="outer", sort=False)
    rows = rows[(rows["planned_promoted_plays"].fillna(0.0) > TINY) | (rows["realised_promoted_plays"].fillna(0) > 0)]
    rows = rows.sort_values(["track_id", "surface"], kind="stable").reset_index(drop=True)
    x = rows["planned_promoted_plays"].fillna(0.0).to_numpy(float)
    b = rows["boost_probability"].fillna(0.0).to_numpy(float)
    got = rows["realised_promoted_plays"].fillna(0).to_numpy(np.int64)
    organic = rows["organic_plays"].fillna(0).to_numpy(np.int64)
    out = pd.DataFrame({
        "track_id": rows["track_id"].to_numpy(object), "market": market, "surface": rows["surface"].to_numpy(object),
        "planned_promoted_plays": x, "boost_probability": b, "realised_promoted_plays": got,
        "ratio": np.divide(got, x, out=np.full(len(x), np.nan), where=x > TINY),
        "campaign_id": rows["campaign_id"].to_numpy(object),
        "supply_forecast": rows["supply_forecast"].fillna(0.0).to_numpy(float), "organic_plays": organic,
        "plan_snapshot_id": plan_snapshot_id,
    })
    surface = lookup(PROMOTION_SURFACES, out["surface"].to_numpy(object))
    boosted = b > 0
    n = len(PROMOTION_SURFACES)

    def per_surface(values, mask=None):
        keep = surface >= 0 if mask is None else (surface >= 0) & mask
        return np.bincount(surface[keep], weights=np.asarray(values, float)[keep], minlength=n)

    sums = {"planned": per_surface(x), "realised": per_surface(got),
            "gain_realised": per_surface(got, boosted),
            "gain_requested": per_surface(b * out["supply_forecast"].to_numpy(float), boosted),
            "gain_requested_organic": per_surface(b * organic, boosted),
            "measured": np.full(n, plan is not None)}
    return out, sums


def _planned_rows(plan: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["track_id", "surface", "campaign_id", "planned_promoted_plays", "boost_probability",
               "supply_forecast"]
    if plan is None or not len(plan):
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("track_id", "surface", "campaign_id") else float)
                             for c in columns})
    keep = plan["planned_promoted_plays"].fillna(0.0).to_numpy(float) > TINY
    return plan.loc[keep, columns].reset_index(drop=True)


def serving_gain(state: pd.DataFrame | None, sums: dict, cfg: Config) -> dict:
    """Per promotion surface: the serving-gain estimate and the gain applied to
    boost probabilities, the decay-weighted sums behind it, and the delivery
    gate's ratio and count of consecutive missed days.

    state: the previous snapshot's capacity rows of the market (STATE_COLUMNS;
        None or missing values: nothing reconciled yet). A day adds to the sums
        only when a plan existed and boosted something there; otherwise they
        carry over unchanged.
    """
    n = len(PROMOTION_SURFACES)
    prev = {c: _state_column(state, c, n) for c in STATE_COLUMNS[2:]}
    informative = sums["measured"] & (sums["gain_requested"] > 0)
    decay = 0.5 ** (1.0 / cfg.gain_half_life_days)
    running = {c: np.where(informative, decay * prev[c] + sums[c], prev[c])
               for c in ("gain_realised", "gain_requested", "gain_requested_organic")}

    def estimate_over(requested):
        total = requested + cfg.gain_prior_plays
        raw = np.divide(running["gain_realised"] + cfg.gain_prior_plays, total, out=np.ones(n), where=total > 0)
        return np.clip(raw, cfg.gain_min, cfg.gain_max)

    estimate = estimate_over(running["gain_requested"])
    applied = estimate if cfg.calibrate_serving_gain else np.ones(n)

    planned, realised = sums["planned"], sums["realised"]
    ratio = np.divide(realised, planned, out=np.full(n, np.nan), where=planned > TINY)
    judged = sums["measured"] & (planned >= cfg.gate_delivery_min_planned) & (planned > TINY)
    miss = judged & (np.abs(np.nan_to_num(ratio, nan=1.0) - 1.0) > cfg.gate_delivery_max_miss)
    return {"serving_gain": applied, "serving_gain_estimate": estimate,
            "serving_response": estimate_over(running["gain_requested_organic"]), **running,
            "reconciled_planned": planned,
            "reconciled_realised": realised.astype(np.int64), "delivery_ratio": ratio,
            "delivery_miss_days": np.where(miss, prev["delivery_miss_days"] + 1, 0).astype(np.int64)}


def _state_column(state: pd.DataFrame | None, column: str, n: int) -> np.ndarray:
    """The previous capacity's `column` per promotion surface (0 where absent or null)."""
    out = np.zeros(n)
    if state is None or not len(state) or column not in state.columns:
        return out
    s = lookup(PROMOTION_SURFACES, state["surface"].to_numpy(object))
    values = pd.to_numeric(state[column], errors="coerce").fillna(0.0).to_numpy(float)
    out[s[s >= 0]] = values[s >= 0]
    return out


def boost_probability(x: np.ndarray, supply: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """min(1, x / (E * g_hat)), 0 where E is 0; x and supply are (surface,
    track), gain per surface."""
    scaled = supply * gain[:, None]
    return np.minimum(1.0, np.divide(x, scaled, out=np.zeros_like(x), where=scaled > 0))
