"""Why a track got its score, from a published snapshot alone (`oasis explain`;
`jobs.cli.explain` prints what `explain` returns).

The date is the **score date**: the day the scores are for, i.e. the day after
the last day of logs (`oasis run --date 2026-11-24` publishes score date
2026-11-25). Without `--snapshot` the snapshot LATEST points to is used when it
is for that date, else the newest published snapshot of that date.

Per promotion surface the breakdown shows, with the snapshot's own numbers:

* eligibility and its reason in words;
* plays, skips and saves in the window against the (market, surface) baseline
  (the capacity table's baseline rates);
* the empirical-Bayes shrinkage: how much each rate was shrunk and toward
  what (the enrolled tracks' mean, with its prior strength and the track's
  effective plays), and the guardrail's posterior probabilities (skip rate
  against the baseline, promoted against organic plays) with its hysteresis;
* the supply forecast with its 80% interval;
* value = save lift - lambda * skip lift (lambda from the manifest config);
* the track's (market, surface) LP rebuilt from the published columns
  (`pipelines.allocation.verify.rebuild`) with the snapshot's published
  `prices`: which constraints bind (capacity, the artist's and licensor's
  caps, the track's own cap x <= rho*E, its campaign's floor with pacing),
  their shadow prices, the track's marginal value, and whether the prices
  certify the published plan as optimal (their dual bound equals the plan's
  objective). A snapshot older than the prices table has its LP solved
  exactly (`solve_exact`) for them instead;
* planned promoted plays, boost probability and score;
* the lift of the track's campaign in the market (`campaign_lift`): against
  the holdout with its 95% interval, beside the before/after figure.

`explain_campaign` gives a campaign's lift rows alone (`oasis explain
--campaign C`).

Every published number is printed as published (6 significant digits in the
text, exact in `--json`); what explain derives (weighted rates, guardrail
probabilities, prices) is labelled as derived.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from jobs import layout
from jobs.gates import quarantine
from jobs.manifest import Manifest
from jobs.snapshots import pulls, store
from pipelines.allocation import verify
from pipelines.allocation.exact import solve_exact
from pipelines.allocation.prices import dual_bound, lookup_prices, price_rows, reduced_costs
from pipelines.allocation.problem import check_feasible, objective
from pipelines.errors import OasisError
from pipelines.scoring import estimation
from schemas import PROMOTION_SURFACES

TIGHT = 1e-6      # relative tolerance for "this constraint is tight"
PRICE_TOL = 1e-9  # a shadow price above this counts as positive


class ExplainError(OasisError):
    """The request cannot be answered (no such snapshot, track or market)."""


# ------------------------------------------------------------------ words ---
def reason_in_words(reason: str | None, ctx: dict) -> str:
    """The eligibility reason as a sentence, with the numbers behind it."""
    c = ctx
    if reason is None:
        return (f"eligible: the campaign is active and live on {c['score_date']}, the track is enrolled on "
                f"{c['surface']}, was released {c['age_days']} days before the score date (at least "
                f"{c['min_track_age_days']} needed), has {c['window_plays']} plays on the promotion surfaces "
                f"in the window (at least {c['min_window_plays']} needed) and listeners do not confidently "
                f"dislike it")
    words = {
        "campaign_cancelled": f"the campaign {c['campaign_id']} was cancelled",
        "campaign_paused": f"the campaign {c['campaign_id']} is paused",
        "outside_flight": f"the score date {c['score_date']} is outside the flight of campaign {c['campaign_id']}",
        "surface_not_enrolled": f"the track is not enrolled on {c['surface']} in its campaign",
        "too_new": (f"the track is too new: released {c['release_date']}, {c['age_days']} days before the score "
                    f"date; at least {c['min_track_age_days']} days are needed"),
        "too_few_plays": (f"too few plays: {c['window_plays']} plays on the promotion surfaces of "
                          f"{c['market']} in the window; at least {c['min_window_plays']} are needed"),
        "listeners_dislike": ("pulled back by the listener guardrail: listeners skip it confidently more than "
                              "the baseline + delta (see guardrail below)"),
        "promoted_plays_disliked": ("pulled back by the listener guardrail: listeners skip its promoted plays "
                                    "confidently more than its organic ones (see guardrail below)"),
    }
    return f"not eligible ({reason}): " + words.get(reason, "see the reason code")


# ------------------------------------------------------------ snapshot ---
QUARANTINED = "QUARANTINED: failed gate(s) {gates}, NOT published and never served"


def find_snapshot(output_root: str, score_date: dt.date,
                  snapshot_id: str | None = None) -> tuple[str, Manifest, str]:
    """(snapshot folder, manifest, how it was chosen) for the score date. With
    `snapshot_id`, a quarantined would-be snapshot is found too, and `how`
    says it is one."""
    published = store.list_manifests(output_root, score_date)
    if snapshot_id:
        sid = snapshot_id.rstrip("/").rsplit("/", 1)[-1]
        for folder, m in published:
            if m.snapshot_id == sid:
                return folder, m, "requested with --snapshot"
        elsewhere = [m.score_date for _, m in store.list_manifests(output_root) if m.snapshot_id == sid]
        q = quarantine.find_quarantined(output_root, sid) if not elsewhere else None
        if q is not None and q.manifest.score_date == score_date:
            return q.folder, q.manifest, QUARANTINED.format(gates=", ".join(q.failed_gates) or "?")
        if q is not None:
            elsewhere = [q.manifest.score_date]
        if elsewhere:
            raise ExplainError(f"snapshot {sid} is for score date {elsewhere[0]}, not {score_date} "
                               f"(--date is the score date)")
        raise ExplainError(f"no published or quarantined snapshot {sid} under {output_root} "
                           f"(published for {score_date}: {_ids(published)})")
    if not published:
        dates = sorted({m.score_date.isoformat() for _, m in store.list_manifests(output_root)})
        hint = ""
        if (score_date + dt.timedelta(days=1)).isoformat() in dates:
            hint = (f"; --date is the score date, the day after the last day of logs: did you mean "
                    f"{score_date + dt.timedelta(days=1)}?")
        held = quarantine.list_quarantined(output_root, score_date)
        if held:
            hint += (f"; quarantined (not published) for {score_date}: {', '.join(q.manifest.snapshot_id for q in held)}"
                     f" (--snapshot ID explains one)")
        raise ExplainError(f"no published snapshot for score date {score_date} under {output_root} "
                           f"(published score dates: {', '.join(dates) or 'none'}){hint}")
    latest = store.read_latest(output_root).content
    if latest:
        for folder, m in published:
            if layout.snapshot_rel(score_date, m.snapshot_id) == latest:
                return folder, m, "LATEST"
    pulled = pulls.read_pulls(output_root)
    live = [fm for fm in published if fm[1].snapshot_id not in pulled]
    if live:
        return *live[-1], "newest published for the score date"
    return *published[-1], "newest published for the score date, PULLED by a rollback"


def date_warnings(output_root: str, score_date: dt.date) -> list[str]:
    """A score date that is also LATEST's logs date is most likely a logs date
    given by mistake (`oasis run --date D` publishes score date D+1)."""
    target = store.latest_target(output_root)
    if target is None or target[0] != score_date + dt.timedelta(days=1):
        return []
    return [f"{score_date} is the LOGS date of LATEST (score date {target[0]}); --date is the score date, so this "
            f"explains score date {score_date} (logs up to {score_date - dt.timedelta(days=1)}); for LATEST use "
            f"--date {target[0]}"]


def _ids(published) -> str:
    return ", ".join(m.snapshot_id for _, m in published) or "none"


def read_tables(folder: str, manifest: Manifest) -> dict[str, pd.DataFrame]:
    return {name: t.to_pandas() for name, t in store.read_snapshot_tables(folder, manifest).items()}


# ------------------------------------------------------------- explain ---
def explain(output_root: str, score_date: dt.date, track_id: str, market: str, surface: str | None = None,
            snapshot_id: str | None = None) -> dict:
    """The machine-readable breakdown (what `--json` prints)."""
    folder, manifest, how = find_snapshot(output_root, score_date, snapshot_id)
    market = market.strip().upper()
    t = read_tables(folder, manifest)
    scores, delivery, capacity = t["promotion_scores"], t["campaign_delivery"], t["capacity"]
    prices = t.get("prices")  # None: a snapshot from before the prices table
    sid = manifest.snapshot_id
    markets = sorted(scores["market"].unique())
    if market not in markets:
        raise ExplainError(f"market {market} has no rows in snapshot {sid} (score date {score_date}); "
                           f"markets: {', '.join(markets) or 'none'}")
    mine = scores[(scores["track_id"] == track_id) & (scores["market"] == market)]
    if mine.empty:
        other = sorted(scores.loc[scores["track_id"] == track_id, "market"].unique())
        if other:
            raise ExplainError(f"track {track_id} is not enrolled in {market} in snapshot {sid}; "
                               f"it is enrolled in: {', '.join(other)}")
        raise ExplainError(f"track {track_id} is not in snapshot {sid} (score date {score_date}): "
                           f"no enrollment of it in any market")
    cfg = manifest.config
    surfaces = [surface] if surface else list(PROMOTION_SURFACES)
    track_rows = mine.set_index("surface")
    cap_rows = capacity[capacity["market"] == market].set_index("surface")
    guard_pooled = _pooled_guardrail(track_rows, cap_rows, cfg)

    out_surfaces = []
    for s in surfaces:
        if s not in track_rows.index:
            raise ExplainError(f"track {track_id} has no {s} row in {market} in snapshot {sid}")
        row, cap = track_rows.loc[s], cap_rows.loc[s]
        out_surfaces.append(_explain_surface(row, cap, s, market, track_rows, guard_pooled, scores, delivery,
                                             capacity, prices, cfg, score_date))
    first = track_rows.iloc[0]
    doc = {
        "track_id": track_id, "market": market, "score_date": score_date.isoformat(),
        "snapshot_id": sid, "snapshot_dir": folder, "snapshot_chosen": how,
        "quarantined": how.startswith("QUARANTINED"),
        "warnings": [] if snapshot_id else date_warnings(output_root, score_date),
        "as_of": manifest.as_of.isoformat(),
        "campaign_id": first["campaign_id"], "artist_id": first["artist_id"], "licensor_id": first["licensor_id"],
        "release_date": _iso(first["release_date"]),
        "config": {k: cfg[k] for k in ("window_days", "half_life_days", "skip_penalty", "guardrail_delta",
                                      "guardrail_confidence", "min_track_age_days", "min_window_plays",
                                      "promoted_share_cap", "track_boost_cap", "artist_share_cap",
                                      "licensor_share_cap", "floor_fraction") if k in cfg},
        "surfaces": out_surfaces,
        "campaign_lift": lift_rows(t.get("campaign_lift"), first["campaign_id"], market),
        "lift_rule": lift_rule(cfg),
    }
    return _clean(doc)


LIFT_FIELDS = ("surface", "method", "exposed_listeners_treated", "exposed_listeners_holdout", "lift", "lift_low",
               "lift_high", "historical_lift", "lift_unadjusted", "incremental_streams", "incremental_streams_low",
               "incremental_streams_high", "streams_per_listener_treated", "streams_per_listener_holdout",
               "new_listeners_treated", "new_listeners_holdout", "saves_treated", "saves_holdout",
               "intent_rate_treated", "intent_rate_holdout", "flight_days", "first_exposure_date")


def lift_rows(lift: pd.DataFrame | None, campaign_id: str, market: str | None) -> list[dict]:
    """The published campaign_lift rows of a campaign (in one market, or all)."""
    if lift is None or lift.empty:
        return []
    mine = lift[(lift["campaign_id"] == campaign_id) & ((lift["market"] == market) if market else True)]
    return [{"market": r["market"], **{k: r[k] for k in LIFT_FIELDS}}
            for _, r in mine.sort_values(["market", "surface"]).iterrows()]


def lift_rule(cfg: dict) -> str:
    return (f"a campaign_lift row needs {cfg.get('lift_min_flight_days', 10)} days of flight, "
            f"{cfg.get('lift_min_listeners', 100)} exposed listeners in each arm and "
            f"{cfg.get('lift_min_holdout_streams', 20)} holdout streams")


def explain_campaign(output_root: str, score_date: dt.date, campaign_id: str, market: str | None = None,
                     snapshot_id: str | None = None) -> dict:
    """A campaign's lift rows from a published snapshot (what `--campaign --json` prints)."""
    folder, manifest, how = find_snapshot(output_root, score_date, snapshot_id)
    market = market.strip().upper() if market else None
    tables = read_tables(folder, manifest)
    delivery = tables["campaign_delivery"]
    known = set(delivery["campaign_id"]) | set(tables.get("campaign_lift", pd.DataFrame(
        columns=["campaign_id"]))["campaign_id"])
    if campaign_id not in known:
        raise ExplainError(f"campaign {campaign_id} is not in snapshot {manifest.snapshot_id} "
                           f"(score date {score_date})")
    return _clean({"campaign_id": campaign_id, "market": market, "score_date": score_date.isoformat(),
                   "snapshot_id": manifest.snapshot_id, "snapshot_dir": folder, "snapshot_chosen": how,
                   "as_of": manifest.as_of.isoformat(), "holdout": manifest.holdout,
                   "campaign_lift": lift_rows(tables.get("campaign_lift"), campaign_id, market),
                   "lift_rule": lift_rule(manifest.config)})


def _derived_weighted(shrunk: float, w: float, mu: float, k: float) -> float:
    """Decay-weighted successes implied by a shrunk rate: inverts
    shrunk = (s + mu*k) / (w + k)."""
    return max(0.0, shrunk * (w + k) - mu * k)


def _published(row, name: str):
    """A column added after older snapshots were written: None when null."""
    v = row.get(name) if hasattr(row, "get") else None
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v


def _pooled_guardrail(track_rows: pd.DataFrame, cap_rows: pd.DataFrame, cfg: dict) -> dict:
    """The guardrail on the evidence of all the track's promotion surfaces in the
    market, as `estimation._disliked_in_market` computes it."""
    w = s = mu_w = 0.0
    ks = []
    for surf, r in track_rows.iterrows():
        cap = cap_rows.loc[surf]
        wp = float(r["weighted_plays"])
        w += wp
        s += _derived_weighted(float(r["skip_rate"]), wp, float(cap["baseline_skip_rate"]),
                               float(cap["prior_strength_skip"]))
        mu_w += float(cap["baseline_skip_rate"]) * wp
        ks.append(float(cap["prior_strength_skip"]))
    for surf in cap_rows.index:  # k is the smallest prior strength over the market's surfaces
        ks.append(float(cap_rows.loc[surf, "prior_strength_skip"]))
    mu = mu_w / w if w > 0 else 0.0
    k = min(ks)
    delta = float(cfg["guardrail_delta"])
    prob = float(estimation.prob_above(s, w, mu, k, mu + delta)) if 0 < mu < 1 else 0.0
    return {"weighted_plays": w, "weighted_skips": s, "baseline_skip_rate": mu, "prior_strength": k,
            "threshold": mu + delta, "probability": prob}


def _explain_surface(row, cap, surface, market, track_rows, pooled, scores, delivery, capacity, prices, cfg,
                     score_date) -> dict:
    lam = float(cfg["skip_penalty"])
    rho = float(cfg["track_boost_cap"])
    release = row["release_date"]
    age = (score_date - release).days if release is not None else None
    window_plays = int(track_rows["plays"].sum())
    plays, skips, saves = int(row["plays"]), int(row["skips"]), int(row["saves"])
    w = float(row["weighted_plays"])
    ctx = {"score_date": score_date.isoformat(), "surface": surface, "market": market,
           "campaign_id": row["campaign_id"], "release_date": _iso(release), "age_days": age,
           "window_plays": window_plays, "min_track_age_days": cfg.get("min_track_age_days"),
           "min_window_plays": cfg.get("min_window_plays")}
    reason = row["reason"] if isinstance(row["reason"], str) else None

    def shrinkage(kind: str) -> dict:
        # snapshots before the enrolled pool's prior: centred on the baseline, the weighted plays as trials
        mu = float(cap[f"baseline_{kind}_rate"])
        m = _published(cap, f"prior_mean_{kind}")
        m = mu if m is None else float(m)
        n = _published(row, "effective_plays")
        n = w if n is None else float(n)
        k = float(cap[f"prior_strength_{kind}"])
        shrunk = float(row[f"{kind}_rate"])
        ws = _derived_weighted(shrunk, n, m, k)
        weight = n / (n + k) if n + k > 0 else 0.0
        return {"baseline_rate": mu, "prior_mean": m, "prior_strength": k, "weighted_plays": w,
                "effective_plays": n, "weighted_count": ws, "weighted_rate": ws / n if n > 0 else None,
                "data_weight": weight, "shrunk_by": 1.0 - weight, "shrunk_rate": shrunk}

    skip, save = shrinkage("skip"), shrinkage("save")
    guard = _guardrail(row, skip, pooled, cfg)
    save_lift = save["shrunk_rate"] - save["baseline_rate"]
    skip_lift = skip["shrunk_rate"] - skip["baseline_rate"]
    recomputed = save_lift - lam * skip_lift

    return {
        "surface": surface,
        "campaign_id": row["campaign_id"], "artist_id": row["artist_id"], "licensor_id": row["licensor_id"],
        "eligible": bool(row["eligible"]), "reason": reason, "reason_text": reason_in_words(reason, ctx),
        "age_days": age, "window_plays_all_surfaces": window_plays,
        "signals": {
            "plays": plays, "skips": skips, "saves": saves, "weighted_plays": w,
            "raw_skip_rate": skips / plays if plays else None, "raw_save_rate": saves / plays if plays else None,
            "baseline_skip_rate": float(cap["baseline_skip_rate"]),
            "baseline_save_rate": float(cap["baseline_save_rate"]),
        },
        "shrinkage": {"skip": skip, "save": save},
        "guardrail": guard,
        "value": {"save_lift": save_lift, "skip_lift": skip_lift, "lambda": lam, "value": float(row["value"]),
                  "recomputed": recomputed},
        "supply": {"supply_forecast": float(row["supply_forecast"]), "rho": rho,
                   "max_promoted_plays": float(row["max_promoted_plays"]),
                   "low": _published(row, "supply_forecast_low"), "high": _published(row, "supply_forecast_high"),
                   "history_days": _published(row, "history_days"),
                   "method": cfg.get("forecast_method", "decayed_mean"),
                   "cap_basis": cfg.get("track_cap_basis", "point")},
        "lp": _explain_lp(row, cap, surface, market, scores, delivery, capacity, prices),
        "result": {"planned_promoted_plays": float(row["planned_promoted_plays"]),
                   "boost_probability": float(row["boost_probability"]), "score": float(row["score"]),
                   "serving_gain": float(cap.get("serving_gain", 1.0))},  # 1 in snapshots before it existed
    }


def _lp_prices(rb: verify.Rebuilt, prices: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The price rows of the rebuilt LP: the published ones, or for a snapshot
    older than the prices table those of an exact solve."""
    if prices is not None:
        sel = prices[(prices["market"] == rb.market) & (prices["surface"] == rb.surface)]
        return sel, "published in the snapshot's prices table"
    rows = rb.rows
    rows = price_rows(rb.problem, solve_exact(rb.problem), np.sort(rows["artist_id"].unique()),
                      np.sort(rows["licensor_id"].unique()), rb.campaigns, rows["track_id"].to_numpy())
    return rows, "derived: the snapshot predates the prices table, so its LP was solved exactly (HiGHS)"


def _guardrail(row, skip: dict, pooled: dict, cfg: dict) -> dict:
    """The guardrail's verdict on a row: the published probabilities, or for a
    snapshot written before they were published, recomputed from its columns."""
    delta, conf = float(cfg["guardrail_delta"]), float(cfg["guardrail_confidence"])
    out = {"delta": delta, "confidence": conf, "threshold": skip["baseline_rate"] + delta,
           "reinstate_delta": cfg.get("guardrail_reinstate_delta"),
           "promoted_delta": cfg.get("promoted_guardrail_delta")}
    pulled_back = _published(row, "pulled_back")
    if pulled_back is None:   # an older snapshot
        prob_surface = float(estimation.prob_above(skip["weighted_count"], skip["effective_plays"], skip["prior_mean"],
                                                   skip["prior_strength"], skip["baseline_rate"] + delta))
        prob = max(prob_surface, pooled["probability"])
        return {**out, "evaluated": True, "probability": prob, "probability_surface": prob_surface,
                "probability_pooled": pooled["probability"], "pooled": pooled, "promoted_probability": None,
                "disliked": bool(prob > conf), "pulled_back": bool(prob > conf), "held_over": False}
    prob, promoted = _published(row, "dislike_probability"), _published(row, "promoted_dislike_probability")
    reason = row["reason"] if isinstance(row["reason"], str) else None
    return {**out, "evaluated": prob is not None, "probability": prob, "promoted_probability": promoted,
            "disliked": bool(pulled_back), "pulled_back": bool(pulled_back),
            "promoted_plays": _published(row, "promoted_plays"), "promoted_skips": _published(row, "promoted_skips"),
            # pulled back although neither probability is above the confidence: the previous snapshot's state
            "held_over": bool(pulled_back) and max(prob or 0.0, promoted or 0.0) <= conf,
            "reason": reason if reason in ("listeners_dislike", "promoted_plays_disliked") else None}


def _explain_lp(row, cap, surface, market, scores, delivery, capacity, prices) -> dict:
    sel = lambda df: df[(df["market"] == market) & (df["surface"] == surface)]  # noqa: E731
    (rb,) = verify.rebuild(sel(scores), sel(delivery), sel(capacity))
    p = rb.problem
    i = int(np.flatnonzero(rb.rows["track_id"].to_numpy() == row["track_id"])[0])
    rows, source = _lp_prices(rb, prices)
    faced = lookup_prices(rows, rb.rows)
    reduced = reduced_costs(p.value, faced)
    x = rb.x
    a, lic, c = int(p.artist[i]), int(p.licensor[i]), int(p.campaign[i])
    used = float(x.sum())
    art_tot = float(x[p.artist == a].sum())
    lic_tot = float(x[p.licensor == lic].sum())

    def tight(total, limit):
        return bool(limit > 0 and total >= limit * (1 - TIGHT)) or bool(limit == 0 and total <= 0)

    out = {
        "market": market, "surface": surface, "tracks": p.n, "eligible_tracks": int((p.upper > 0).sum()),
        "prices_source": source,
        "capacity": {"planned_total": used, "published_planned_total": float(cap["planned_total"]),
                     "capacity": p.capacity, "tight": tight(used, p.capacity),
                     "shadow_price": float(faced["capacity"][i]),
                     "published_shadow_price": float(cap["shadow_price"])},
        "artist": {"artist_id": row["artist_id"], "planned": art_tot, "cap": p.artist_cap,
                   "tight": tight(art_tot, p.artist_cap), "shadow_price": float(faced["artist_cap"][i]),
                   "eligible_tracks": int(((p.artist == a) & (p.upper > 0)).sum())},
        "licensor": {"licensor_id": row["licensor_id"], "planned": lic_tot, "cap": p.licensor_cap,
                     "tight": tight(lic_tot, p.licensor_cap), "shadow_price": float(faced["licensor_cap"][i]),
                     "eligible_tracks": int(((p.licensor == lic) & (p.upper > 0)).sum())},
        "track_cap": {"planned": float(x[i]), "cap": float(p.upper[i]),
                      "tight": bool(p.upper[i] > 0 and x[i] >= p.upper[i] * (1 - TIGHT)),
                      "shadow_price": float(faced["track_cap"][i])},
    }
    if c < len(rb.campaigns):
        d = sel(delivery)
        d = d[d["campaign_id"] == rb.campaigns[c]].iloc[0]
        floor, planned, short = float(d["floor"]), float(d["planned"]), float(d["shortfall"])
        if floor <= 0:
            status = "no floor"
        elif short > TIGHT * max(1.0, floor):
            status = "short"
        elif planned <= floor * (1 + TIGHT):
            status = "met exactly"
        else:
            status = "met with room"
        out["campaign_floor"] = {
            "campaign_id": d["campaign_id"], "floor": floor, "planned": planned, "shortfall": short,
            "pacing_multiplier": float(d["pacing_multiplier"]), "delivered_to_date": float(d["delivered_to_date"]),
            "flight_start": _iso(d["flight_start"]), "flight_end": _iso(d["flight_end"]),
            "max_boost": float(d["max_boost"]), "eligible_tracks": int(d["eligible_tracks"]),
            "status": status, "tight": status in ("short", "met exactly"),
            "shadow_price": float(faced["campaign_floor"][i]),
        }
    else:
        out["campaign_floor"] = None
    marginal = float(reduced[i])
    out["marginal_value"] = marginal

    # Do the prices certify the published plan? Their dual bound is >= every feasible plan's objective.
    u = np.maximum(0.0, p.floors - np.bincount(p.campaign, weights=x, minlength=len(p.floors)))
    published_obj = objective(p, x, u)
    violations = check_feasible(p, x, u)
    bound = dual_bound(rows, p.upper, reduced)
    gap = verify.relative_gap(published_obj, bound)
    out["plan_check"] = {
        "published_objective": published_obj, "dual_bound": bound, "relative_gap": gap,
        "violations": violations, "published_is_optimal": bool(not violations and gap <= 1e-6),
    }
    if float(p.upper[i]) <= 0:
        why = "is not in the LP: an ineligible row is fixed at x = 0"
    elif x[i] <= 0:
        why = ("gets no plays: one more promoted play would change the objective by "
               f"{marginal:.6g} (value minus the binding prices), which is not positive")
    elif out["track_cap"]["tight"]:
        why = ("sits at its own cap x = rho*E: one more promoted play would be worth "
               f"{marginal:.6g} after the binding prices, but the track cap stops it")
    else:
        why = ("is the marginal track, strictly between 0 and its cap: its value equals the binding prices "
               f"(marginal value {marginal:.6g})")
    out["why"] = why
    return out


# ---------------------------------------------------------------- utils ---
def _iso(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _clean(o):
    """JSON-safe: numpy scalars to Python, NaN/inf to None, dates to ISO."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, (dt.date, pd.Timestamp)):
        return o.isoformat()
    return o


