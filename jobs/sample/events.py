"""One day of the sample world's engagement events, drawn column by column."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa

from jobs.sample.draws import (EPOCH, LUT_SIZE, US_PER_DAY, US_PER_HOUR, cdf, day_start_us, draw, hex_strings,
                               lut_index, mix, month_add, month_key, pow15)
from jobs.sample.world import (BAD_SURFACES, CATALOGUE_PLAY_SHARE, DUPLICATE_SHARE, N_PROMO, PROMOTED_SHARE,
                               SURFACE_DICT, SURFACE_SAVE_MULT32, Enrollments, World, active_for_day, holdout_users)
from schemas import ALL_SURFACES, ENGAGEMENT, EXPOSURES


def events_for_day(w: World, e: Enrollments, d: dt.date, n: int, bad_row_share: float,
                   holdout: bool = False) -> tuple[pa.Table, dict, pa.Table | None]:
    """One UTC day of `n` engagement rows (resent duplicates and bad rows included), in arrival order.
    With `holdout`: every row carries its listener's holdout flag, and serving's exposure log of that
    day comes with it: one row per promotion decision, `treated` for a promoted play and `ghost` for a
    holdout listener's play that would have been promoted (it stays organic). Without: the engagement
    has no holdout column (as before the holdout existed) and there is no exposure log (None)."""
    rng = np.random.default_rng([w.seed, 1, d.toordinal()])
    n_dup = int(round(n * DUPLICATE_SHARE))
    n0 = n - n_dup
    day_days = (d - EPOCH).days
    day_us = day_start_us(d)
    markets = len(w.codes)
    n_surf = len(ALL_SURFACES)

    def uniform(k: int) -> np.ndarray:
        return rng.random(k, dtype=np.float32)

    # who plays what where: campaign tracks in their enrolled markets (once released), else the long tail
    pair_w = w.pop[w.pair_track] * w.m_weight[w.pair_market] * (w.release_days[w.pair_track] <= day_days)
    is_cat = uniform(n0) < (CATALOGUE_PLAY_SHARE if pair_w.sum() > 0 else 0.0)
    cat = np.flatnonzero(is_cat)
    tail = np.flatnonzero(~is_cat)
    market = np.empty(n0, dtype=np.int64)
    track = np.empty(n0, dtype=np.int64)
    if len(cat):
        pair = draw(cdf(pair_w), rng.random(len(cat)))
        market[cat] = w.pair_market[pair]
        track[cat] = w.pair_track[pair]
    market[tail] = w.market_lut[lut_index(rng, len(tail))]
    n_tail = len(w.tail_by_rank)      # Zipf(1) ranks by inversion: P(rank = k) ~ log(1 + 1/k)
    rank = np.exp(uniform(len(tail)) * np.float32(math.log(n_tail + 1))).astype(np.int64) - 1
    track[tail] = w.tail_by_rank[np.clip(rank, 0, n_tail - 1)]
    del is_cat, cat, tail, rank

    # when: the market's local diurnal curve, shifted to UTC; rows arrive in event-time order (2 s buckets)
    offset_us = np.mod(w.hour_lut[lut_index(rng, n0)].astype(np.int64) * US_PER_HOUR
                       + rng.integers(0, US_PER_HOUR, n0) - w.m_offset_min[market] * 60_000_000, US_PER_DAY)
    bucket = (offset_us // 2_000_000).astype(np.uint16)
    order = np.argsort(bucket, kind="stable")
    packed = (offset_us << 26) | (track << 5) | market      # 37 + 21 + 5 bits: one gather instead of three
    del offset_us, track, market
    packed = packed[order]
    bucket = bucket[order]
    del order
    ts = day_us + (packed >> 26)
    track = ((packed >> 5) & 0x1FFFFF).astype(np.int32)
    market = (packed & 31).astype(np.int32)
    del packed
    cat = np.flatnonzero(track < w.n_cat)
    cat_pair = w.pair_of[track[cat] * markets + market[cat]]

    # everything else is drawn in arrival order
    surface = w.surface_lut[market * LUT_SIZE + lut_index(rng, n0)]
    p_skip = w.base_skip32[market * n_surf + surface] + w.skip32[track]
    p_save = w.save32[track] * SURFACE_SAVE_MULT32[surface]
    s_cat = surface[cat]
    on_promo = s_cat < N_PROMO
    cp, sp = cat[on_promo], s_cat[on_promo]
    p_skip[cp] = w.truth_skip32[cat_pair[on_promo], sp]
    p_save[cp] = w.truth_save32[cat_pair[on_promo], sp]
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
    user = (w.user_offset[market] + (w.user_pool[market] * pow15(uniform(n0))).astype(np.int32)).astype(np.int32)

    # promoted plays: the track's campaign is active in this market on this (enrolled) promotion surface
    pair_camp, pair_surf = active_for_day(w, e, d)
    campaign = np.full(n0, -1, dtype=np.int32)
    boostable = on_promo & (pair_camp[cat_pair] >= 0) & (((pair_surf[cat_pair] >> s_cat) & 1) == 1)
    promoted_cat = boostable & (uniform(len(cat)) < PROMOTED_SHARE)
    campaign[cat[promoted_cat]] = pair_camp[cat_pair[promoted_cat]]
    # the holdout (the default config's salt and share): serving never boosts a holdout listener, it
    # logs a ghost exposure and the play stays organic
    held = holdout_users(w, d)[user] if holdout else np.zeros(n0, dtype=bool)
    decided = cat[promoted_cat]
    decided_campaign = campaign[decided].copy()
    ghost = held[decided]
    campaign[decided[ghost]] = -1
    promoted_cat[promoted_cat] = ~ghost
    lead = np.random.default_rng([w.seed, 6, d.toordinal()]).integers(1_000_000, 120_000_000, len(decided))
    exposed = dict(ts=ts[decided] - lead,  # decided just before the play (own generator: plays as before)
                   user=user[decided], track=track[decided], market=market[decided].copy(),
                   surface=surface[decided].copy(), campaign=decided_campaign, ghost=ghost)

    salt = np.uint64(mix(np.array([w.seed], dtype=np.uint64), 64)[0])
    ev = mix((np.uint64(day_days) << np.uint64(32)) | np.arange(n0, dtype=np.uint64), 64) ^ salt

    # resent duplicates: exact copies that arrive late (1 min to 3 h after the original), appended in
    # arrival order after the day's regular rows, like a late batch
    src = rng.integers(0, n0, n_dup)
    src = src[np.argsort(bucket[src].astype(np.int64) + rng.integers(30, 5400, n_dup), kind="stable")]
    used = np.zeros(n0, dtype=bool)
    used[src] = True

    # contract-breaking rows (never a resent row or the original of one)
    n_bad = int(round(n * bad_row_share))
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
    stats = {"events": n, "duplicates": n_dup, "bad_rows": n_bad, "promoted": int(promoted_cat.sum()),
             "enrolled_plays": int(enrolled_now[cat_pair].sum()), "exposures": len(decided),
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
