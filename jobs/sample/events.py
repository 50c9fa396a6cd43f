"""One day of the sample world's engagement events, drawn column by column."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa

from jobs.sample.draws import (EPOCH, LUT_SIZE, US_PER_DAY, US_PER_HOUR, cdf, day_start_us, draw, hex_strings,
                               lut, lut_index, mix, month_add, month_key, pow15)
from jobs.sample.supply import DayPlan, day_plan
from jobs.sample.world import (BAD_SURFACES, DUPLICATE_SHARE, N_PROMO, SURFACE_DICT, SURFACE_SAVE_MULT32,
                               Enrollments, World, active_for_day, holdout_users)
from schemas import ALL_SURFACES, ENGAGEMENT, EXPOSURES


def events_for_day(w: World, e: Enrollments, d: dt.date, n: int, bad_row_share: float, holdout: bool = False,
                   plan: DayPlan | None = None) -> tuple[pa.Table, dict, pa.Table | None]:
    """One UTC day of engagement rows (resent duplicates and bad rows included),
    in arrival order: about n organic plays on an average day, as the planted
    supply (`jobs.sample.supply`) has them on day d, plus the promoted plays
    of `plan` (default: the day's active campaigns boosting a quarter of an
    enrolled track's plays on its enrolled surfaces).

    With `holdout`: every row carries its listener's holdout flag, and
    serving's exposure log of that day comes with it: one row per promotion
    decision, `treated` for a promoted play and `ghost` for a holdout
    listener's play that would have been promoted (it stays, organic).
    Without: the engagement has no holdout column (as before the holdout
    existed) and there is no exposure log (None)."""
    rng = np.random.default_rng([w.seed, 1, d.toordinal()])
    pair_camp, pair_surf = active_for_day(w, e, d)
    plan = plan if plan is not None else day_plan(w, n, d, pair_camp, pair_surf)
    day_days = (d - EPOCH).days
    day_us = day_start_us(d)
    markets = len(w.codes)
    n_surf = len(ALL_SURFACES)

    def uniform(k: int) -> np.ndarray:
        return rng.random(k, dtype=np.float32)

    # how many: the expected organic plays, rounded; promoted plays drawn per (pair, surface)
    n_cat, n_tail = int(round(plan.pair.sum())), int(round(plan.tail.sum()))
    promo_counts = rng.poisson(plan.promoted).ravel()
    cells = np.flatnonzero(promo_counts)
    promo_pair = np.repeat(cells // N_PROMO, promo_counts[cells])
    n_org = n_cat + n_tail
    n0 = n_org + len(promo_pair)
    n_dup = int(round(n0 * DUPLICATE_SHARE / (1.0 - DUPLICATE_SHARE)))

    # who plays what where: campaign tracks in their enrolled markets (once released), the long tail,
    # and the promoted plays
    market = np.empty(n0, dtype=np.int64)
    track = np.empty(n0, dtype=np.int64)
    surface = np.empty(n0, dtype=np.int32)
    campaign = np.full(n0, -1, dtype=np.int32)
    if n_cat:
        pair = draw(cdf(plan.pair), rng.random(n_cat))
        market[:n_cat] = w.pair_market[pair]
        track[:n_cat] = w.pair_track[pair]
    if n_tail:
        market[n_cat:n_org] = draw(cdf(plan.tail), rng.random(n_tail))
        n_tail_tracks = len(w.tail_by_rank)      # Zipf(1) ranks by inversion: P(rank = k) ~ log(1 + 1/k)
        rank = np.exp(uniform(n_tail) * np.float32(math.log(n_tail_tracks + 1))).astype(np.int64) - 1
        track[n_cat:n_org] = w.tail_by_rank[np.clip(rank, 0, n_tail_tracks - 1)]
    day_lut = np.concatenate([lut(cdf(row)) for row in plan.mix])    # the day's surface mix per market
    surface[:n_org] = day_lut[market[:n_org] * LUT_SIZE + lut_index(rng, n_org)]
    market[n_org:] = w.pair_market[promo_pair]
    track[n_org:] = w.pair_track[promo_pair]
    surface[n_org:] = np.repeat(cells % N_PROMO, promo_counts[cells])
    campaign[n_org:] = plan.promoted_campaign[promo_pair]

    # when: the market's local diurnal curve, shifted to UTC; rows arrive in event-time order (2 s buckets)
    offset_us = np.mod(w.hour_lut[lut_index(rng, n0)].astype(np.int64) * US_PER_HOUR
                       + rng.integers(0, US_PER_HOUR, n0) - w.m_offset_min[market] * 60_000_000, US_PER_DAY)
    bucket = (offset_us // 2_000_000).astype(np.uint16)
    order = np.argsort(bucket, kind="stable")
    ts = day_us + offset_us[order]
    del offset_us
    bucket = bucket[order]
    track = track[order].astype(np.int32)
    market = market[order].astype(np.int32)
    surface = surface[order]
    campaign = campaign[order]
    del order
    user = (w.user_offset[market] + (w.user_pool[market] * pow15(uniform(n0))).astype(np.int32)).astype(np.int32)
    # the holdout (the default config's salt and share): serving never boosts a holdout listener, it
    # logs a ghost exposure and the play stays, organic
    held = holdout_users(w, d)[user] if holdout else np.zeros(n0, dtype=bool)
    decided = np.flatnonzero(campaign >= 0)
    decided_campaign = campaign[decided].copy()
    ghost = held[decided]
    campaign[decided[ghost]] = -1
    lead = np.random.default_rng([w.seed, 6, d.toordinal()]).integers(1_000_000, 120_000_000, len(decided))
    exposed = dict(ts=ts[decided] - lead,  # decided just before the play (own generator: plays as before)
                   user=user[decided], track=track[decided], market=market[decided].copy(),
                   surface=surface[decided].copy(), campaign=decided_campaign, ghost=ghost)
    cat = np.flatnonzero(track < w.n_cat)
    cat_pair = w.pair_of[track[cat] * markets + market[cat]]
    promoted = campaign >= 0

    # everything else is drawn in arrival order
    p_skip = w.base_skip32[market * n_surf + surface] + w.skip32[track]
    p_save = w.save32[track] * SURFACE_SAVE_MULT32[surface]
    s_cat = surface[cat]
    on_promo = s_cat < N_PROMO
    cp, sp, pp = cat[on_promo], s_cat[on_promo], cat_pair[on_promo]
    p_skip[cp] = np.where(promoted[cp], w.truth_promoted_skip32[pp, sp], w.truth_skip32[pp, sp])
    p_save[cp] = w.truth_save32[pp, sp]
    np.clip(p_skip, 0.02, 0.95, out=p_skip)
    skipped = uniform(n0) < p_skip
    saved = ~skipped & (uniform(n0) * (1.0 - p_skip) < p_save)
    del p_skip, p_save, cp, sp
    duration = w.duration32[track]
    duration_ms = w.duration[track]
    u = uniform(n0)
    ms_played = np.where(skipped, np.minimum(u * np.minimum(duration, 30_000.0), 29_999.0),
                         np.where(uniform(n0) < 0.65, duration, 30_000.0 + u * (duration - 30_000.0)))
    ms_played = ms_played.astype(np.int64)
    del u

    salt = np.uint64(mix(np.array([w.seed], dtype=np.uint64), 64)[0])
    ev = mix((np.uint64(day_days) << np.uint64(32)) | np.arange(n0, dtype=np.uint64), 64) ^ salt

    # resent duplicates: exact copies that arrive late (1 min to 3 h after the original), appended in
    # arrival order after the day's regular rows, like a late batch
    src = rng.integers(0, n0, n_dup)
    src = src[np.argsort(bucket[src].astype(np.int64) + rng.integers(30, 5400, n_dup), kind="stable")]
    used = np.zeros(n0, dtype=bool)
    used[src] = True

    # contract-breaking rows (never a resent row or the original of one)
    n_bad = int(round((n0 + n_dup) * bad_row_share))
    candidates = np.flatnonzero(~used)
    n_bad = min(n_bad, len(candidates))
    bad = np.sort(rng.choice(candidates, n_bad, replace=False)) if n_bad else np.zeros(0, dtype=np.int64)
    kinds = rng.permutation((np.arange(n_bad) + d.toordinal()) % 5)
    b = bad[kinds == 0]                                   # unknown surface
    surface[b] = n_surf + rng.integers(0, len(BAD_SURFACES), len(b))
    b = bad[kinds == 1]                                   # negative ms_played
    ms_played[b] = -rng.integers(1, 60_000, len(b))
    b = bad[kinds == 2]                                   # malformed market: "se" or "SWE"
    market[b] += markets * rng.integers(1, 3, len(b)).astype(np.int32)
    b = bad[kinds == 3]                                   # event_ts days away from the partition
    ts[b] += rng.choice([-1, 1], len(b)) * rng.integers(2, 30, len(b)) * US_PER_DAY
    b = bad[kinds == 4]                                   # empty track_id
    track[b] = len(w.track_dict) - 1

    cols = {
        "event_id": hex_strings("", ev, 16),
        "event_ts": pa.array(ts, type=pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "user_id": w.user_dict.take(pa.array(user)),
        "track_id": w.track_dict.take(pa.array(track)),
        "market": w.market_dict.take(pa.array(market)),
        "surface": SURFACE_DICT.take(pa.array(surface)),
        "ms_played": pa.array(ms_played, type=pa.int64()),
        "duration_ms": pa.array(duration_ms, type=pa.int64()),
        "skipped": pa.array(skipped),
        "saved": pa.array(saved),
        "promoted": pa.array(campaign >= 0),
        "campaign_id": e.campaign_ids.take(pa.array(np.maximum(campaign, 0), mask=campaign < 0)),
        "holdout": pa.array(held),
    }
    names = [c for c in ENGAGEMENT.names if holdout or c != "holdout"]
    regular = pa.Table.from_arrays([cols[c] for c in names], schema=pa.schema(
        [ENGAGEMENT.arrow().field(c) for c in names]))
    table = pa.concat_tables([regular, regular.take(pa.array(src))])

    enrolled_now = np.zeros(len(w.pair_track), dtype=bool)
    months = np.isin(e.enr_month, [month_key(*month_add(d.year, d.month, k)) for k in (-1, 0)])
    enrolled_now[e.enr_pair[months]] = True
    stats = {"events": n0 + n_dup, "duplicates": n_dup, "bad_rows": n_bad, "promoted": int(promoted.sum()),
             "enrolled_plays": int(enrolled_now[cat_pair].sum()),
             "expected": plan.surface_totals(w.pair_market, markets), "exposures": len(decided),
             "ghost_exposures": int(exposed["ghost"].sum())}
    return table, stats, _exposure_table(w, e, ev[decided], exposed) if holdout else None


def _exposure_table(w: World, e: Enrollments, event_ids: np.ndarray, x: dict) -> pa.Table:
    order = np.argsort(x["ts"], kind="stable")
    xid = mix(event_ids[order] ^ np.uint64(0x5EED_E4B0_5E00_0001), 64)
    cols = {
        "exposure_id": hex_strings("x", xid, 16),
        "event_ts": pa.array(x["ts"][order], type=pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "user_id": w.user_dict.take(pa.array(x["user"][order])),
        "track_id": w.track_dict.take(pa.array(x["track"][order])),
        "campaign_id": e.campaign_ids.take(pa.array(x["campaign"][order])),
        "market": w.market_dict.take(pa.array(x["market"][order])),
        "surface": SURFACE_DICT.take(pa.array(x["surface"][order])),
        "arm": pa.array(np.where(x["ghost"][order], "ghost", "treated")),
    }
    return pa.Table.from_arrays([cols[c] for c in EXPOSURES.names], schema=EXPOSURES.arrow())
