"""The sample world's catalogue and enrollments: markets, licensors, artists,
tracks with their planted skip and save probabilities, monthly campaigns and
the daily enrollment export (see `jobs.sample.generate` for what is planted)."""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.sample.draws import (EPOCH, US_PER_DAY, US_PER_HOUR, cdf, day_start_us, draw, hex_strings, ids, lut, mix,
                               month_add, month_key, near_month_end, zipf_weights)
from jobs.sample.supply import Supply, SupplyParams, build_supply, finish_supply
from pipelines import holdout
from pipelines.config import Config
from schemas import ALL_SURFACES, ENROLLMENT_STATUSES, ENROLLMENTS, PROMOTION_SURFACES

MARKETS = (
    ("US", "USA", 1.00, -300), ("GB", "GBR", 0.36, 0), ("DE", "DEU", 0.30, 60),
    ("BR", "BRA", 0.42, -180), ("SE", "SWE", 0.11, 60), ("JP", "JPN", 0.22, 540),
    ("FR", "FRA", 0.25, 60), ("MX", "MEX", 0.33, -360), ("IN", "IND", 0.28, 330),
    ("CA", "CAN", 0.17, -300), ("AU", "AUS", 0.14, 600), ("ES", "ESP", 0.18, 60),
    ("IT", "ITA", 0.15, 60), ("NL", "NLD", 0.09, 60), ("PL", "POL", 0.10, 60),
    ("KR", "KOR", 0.08, 540), ("ID", "IDN", 0.20, 420), ("TR", "TUR", 0.10, 180),
    ("AR", "ARG", 0.12, -180), ("PH", "PHL", 0.13, 480),
)


N_PROMO = len(PROMOTION_SURFACES)                       # radio, autoplay, mixes first
SURFACE_SHARE = np.array([0.13, 0.15, 0.12, 0.10, 0.26, 0.19, 0.05])   # order of ALL_SURFACES
SURFACE_SKIP = np.array([0.30, 0.33, 0.27, 0.12, 0.22, 0.10, 0.28])    # baseline skip prob
SURFACE_SAVE_MULT = np.array([1.00, 0.80, 1.15, 1.60, 1.00, 0.35, 0.70])
SURFACE_SAVE_MULT32 = SURFACE_SAVE_MULT.astype(np.float32)
BAD_SURFACES = ("podcast", "Radio", "radio_v2", "unknown")
SURFACE_DICT = pa.array(list(ALL_SURFACES) + list(BAD_SURFACES))
ACTIVE, PAUSED, CANCELLED = 0, 1, 2                     # indexes into ENROLLMENT_STATUSES
# status histories of one enrollment: (probability, statuses in time order); the last one wins
HISTORIES = (
    (0.74, (ACTIVE,)), (0.03, (PAUSED,)), (0.07, (ACTIVE, PAUSED)), (0.05, (ACTIVE, CANCELLED)),
    (0.05, (PAUSED, ACTIVE)), (0.04, (ACTIVE, PAUSED, ACTIVE)), (0.02, (PAUSED, CANCELLED)),
)
LOCAL_HOUR_WEIGHT = np.array([0.35, 0.25, 0.18, 0.14, 0.12, 0.15, 0.30, 0.55, 0.75, 0.80, 0.80, 0.85,
                              0.90, 0.90, 0.88, 0.90, 0.95, 1.00, 1.05, 1.10, 1.05, 0.95, 0.75, 0.50])

DUPLICATE_SHARE = 0.005
MAX_ROWS_PER_FILE = 1_000_000
ROW_GROUP_SIZE = 128 * 1024
DICTIONARY_COLUMNS = ["user_id", "track_id", "market", "surface", "campaign_id"]

assert tuple(ALL_SURFACES[:N_PROMO]) == tuple(PROMOTION_SURFACES)
assert tuple(ENROLLMENT_STATUSES) == ("active", "paused", "cancelled")


@dataclass
class World:
    seed: int
    codes: list[str]
    m_weight: np.ndarray           # normalised market sizes
    m_offset_min: np.ndarray
    market_dict: pa.Array          # codes, lower-case codes, alpha-3 codes
    n_cat: int                     # campaign tracks are 0..n_cat-1, tail tracks after
    track_dict: pa.Array           # all track ids + "" (for bad rows)
    release_days: np.ndarray       # catalogue release dates, days since epoch
    duration: np.ndarray           # all tracks, ms
    pop: np.ndarray                # catalogue popularity (sums to 1)
    tail_by_rank: np.ndarray       # tail track (global index) of each popularity rank
    track_artist: np.ndarray
    artist_lic: np.ndarray
    artist_ids: pa.Array
    licensor_ids: pa.Array
    lic_hex: list[str]
    pair_track: np.ndarray         # (track, market) pairs a campaign track is enrolled in
    pair_market: np.ndarray
    skip_all: np.ndarray           # per track: skip offset against the (market, surface) baseline
    save_all: np.ndarray           # per track: save probability scale
    base_skip: np.ndarray          # (markets, 7)
    truth_skip: np.ndarray         # (pairs, 3)
    truth_save: np.ndarray         # (pairs, 3)
    disliked: np.ndarray           # catalogue tracks
    user_dict: pa.Array
    user_pool: np.ndarray
    user_offset: np.ndarray
    hour_lut: np.ndarray
    surface_share: np.ndarray      # (markets, all surfaces): each market's surface mix on an average day
    supply: Supply                 # planted weekday factors, decay, holiday, first-time enrollees
    truth_promoted_skip: np.ndarray  # (pairs, 3): skip probability of a promoted play
    promoted_disliked: np.ndarray  # catalogue tracks whose promoted plays are skipped more than organic ones

    def __post_init__(self):        # float32 copies for the per-event arithmetic
        self.base_skip32 = self.base_skip.astype(np.float32).ravel()
        self.skip32 = self.skip_all.astype(np.float32)
        self.save32 = self.save_all.astype(np.float32)
        self.truth_skip32 = self.truth_skip.astype(np.float32)
        self.truth_promoted_skip32 = self.truth_promoted_skip.astype(np.float32)
        self.truth_save32 = self.truth_save.astype(np.float32)
        self.duration32 = self.duration.astype(np.float32)
        markets = len(self.codes)
        self.pair_of = np.full(self.n_cat * markets, -1, dtype=np.int32)   # (track, market) -> pair
        self.pair_of[self.pair_track * markets + self.pair_market] = np.arange(len(self.pair_track))


def build_world(*, seed: int, tracks: int, events_per_day: int, markets: int,
                 end_date: dt.date, first_day: dt.date | None = None,
                 supply: SupplyParams = SupplyParams(), codes: tuple[str, ...] | None = None) -> World:
    """codes: which of MARKETS (in their order) instead of the first `markets`."""
    rng = np.random.default_rng([seed, 0])
    first_day = first_day or end_date
    info = [m for m in MARKETS if m[0] in codes] if codes else MARKETS[:markets]
    markets = len(info)
    codes = [c for c, _, _, _ in info]
    size = np.array([w for _, _, w, _ in info]) * rng.uniform(0.85, 1.15, markets)
    m_weight = size / size.sum()
    m_offset_min = np.array([o for _, _, _, o in info], dtype=np.int64)
    market_dict = pa.array(codes + [c.lower() for c in codes] + [a for _, a, _, _ in info])

    # licensors, artists, tracks
    # a few big labels and many small distributors: artists go to licensors by Zipf(1.5) over
    # licensor rank (rank 0 is the biggest), after each licensor got one artist
    n_lic = max(8, round(tracks / 6))
    n_art = max(5, round(tracks / 3))
    n_tail = max(10 * tracks, min(200_000, events_per_day // 20))
    artist_lic = draw(cdf(np.arange(1, n_lic + 1, dtype=float) ** -1.5), rng.random(n_art))
    seeded = min(n_lic, n_art // 2)
    artist_lic[rng.permutation(n_art)[:seeded]] = np.arange(seeded)
    track_artist = draw(cdf(zipf_weights(n_art, 0.7, rng)), rng.random(tracks))
    lic_vals = mix(np.arange(n_lic, dtype=np.uint64) + np.uint64(seed * 7919 % (1 << 24)), 24)
    licensor_ids = hex_strings("lic-", lic_vals, 6)
    lic_hex = [s[4:] for s in licensor_ids.to_pylist()]
    artist_ids = ids("art-", n_art, seed * 104729 + 17, 10)
    track_dict = pa.concat_arrays([ids("trk-", tracks + n_tail, seed * 1299709 + 31, 12), pa.array([""])])

    # release dates of the campaign tracks: ~7% in the last 30 days, some within a year, most long ago
    end_days = (end_date - EPOCH).days
    ago = rng.integers(365, 15 * 365, tracks)
    order = rng.permutation(tracks)
    n_young = max(2, round(0.07 * tracks))
    n_recent = round(0.08 * tracks)
    ago[order[:n_young]] = rng.integers(0, 30, n_young)
    ago[order[n_young:n_young + n_recent]] = rng.integers(30, 200, n_recent)   # decaying after release
    release_days = end_days - ago
    # planted supply (own stream: the draws above and below stay those of a world without it)
    sup_rng = np.random.default_rng([seed, 5])
    planted = build_supply(sup_rng, supply, markets=markets, surfaces=len(ALL_SURFACES), n_cat=tracks,
                           first_day=first_day, end_date=end_date)
    # first-time enrollees: half were released in the three weeks before their first campaign
    first_time = np.flatnonzero(planted.first_month >= 0)
    fresh = first_time[sup_rng.random(len(first_time)) < 0.5]
    month = planted.first_month[fresh]
    starts = np.array([(dt.date(k // 12, k % 12 + 1, 1) - EPOCH).days for k in month], dtype=np.int64)
    release_days[fresh] = starts - sup_rng.integers(0, 21, len(fresh))

    duration = np.clip(rng.lognormal(np.log(205_000), 0.25, tracks + n_tail), 45_000, 720_000).astype(np.int64)
    pop = zipf_weights(tracks, 0.8, rng)
    pop /= pop.sum()
    tail_by_rank = (tracks + rng.permutation(n_tail)).astype(np.int32)

    # each campaign track is enrolled in a few markets, bigger markets more often (Gumbel top-k)
    k = 1 + rng.binomial(min(markets, 4) - 1, 0.45, tracks)
    keys = np.log(m_weight)[None, :] + rng.gumbel(size=(tracks, markets))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    pair_track, pair_market = np.nonzero(rank < k[:, None])

    # listener response: per-track offsets around (market, surface) baselines
    base_skip = np.clip(SURFACE_SKIP[None, :] + rng.uniform(-0.03, 0.03, (markets, 1))
                        + rng.normal(0, 0.01, (markets, len(ALL_SURFACES))), 0.05, 0.6)
    n_all = tracks + n_tail
    skip_all = np.clip(rng.normal(0, 0.06, n_all), -0.15, 0.15)
    save_all = np.clip(rng.lognormal(np.log(0.045), 0.35, n_all), 0.015, 0.12)
    disliked_all = np.zeros(n_all, dtype=bool)
    n_dis = max(1, round(0.08 * tracks))
    disliked_all[order[rng.permutation(tracks)[:n_dis]]] = True          # campaign tracks
    disliked_all[tracks + rng.choice(n_tail, round(0.05 * n_tail), replace=False)] = True
    skip_all[disliked_all] = rng.uniform(0.28, 0.42, int(disliked_all.sum()))
    save_all[disliked_all] *= 0.5
    n_pairs = len(pair_track)
    t_skip = (base_skip[pair_market, :N_PROMO] + skip_all[pair_track, None]
              + rng.normal(0, 0.02, (n_pairs, N_PROMO)))
    floor = base_skip[pair_market, :N_PROMO] + 0.26
    dis = disliked_all[pair_track]
    t_skip[dis] = np.maximum(t_skip[dis], floor[dis])
    truth_skip = np.clip(t_skip, 0.02, 0.95)
    # tracks whose promoted plays are skipped more than their organic ones (never a disliked track)
    liked = np.flatnonzero(~disliked_all[:tracks])
    promoted_disliked = np.zeros(tracks, dtype=bool)
    promoted_disliked[sup_rng.permutation(liked)[:round(supply.promoted_disliked_share * tracks)]] = True
    truth_promoted_skip = np.clip(truth_skip + np.where(promoted_disliked[pair_track], supply.promoted_skip_lift,
                                                        0.0)[:, None], 0.02, 0.95)
    truth_save = np.clip(save_all[pair_track, None] * SURFACE_SAVE_MULT[None, :N_PROMO]
                         * rng.lognormal(0, 0.08, (n_pairs, N_PROMO)), 0.002, 0.30)

    surf_p = rng.dirichlet(SURFACE_SHARE * 400, markets)

    # listeners: a pool per market, Zipf-ish activity
    user_pool = np.maximum(200, np.round(max(events_per_day, 1) * m_weight / 5)).astype(np.int64)
    user_offset = np.concatenate([[0], np.cumsum(user_pool)[:-1]])
    user_dict = ids("u", int(user_pool.sum()), seed * 15485863 + 101, 16)

    w = World(
        seed=seed, codes=codes, m_weight=m_weight, m_offset_min=m_offset_min, market_dict=market_dict,
        n_cat=tracks, track_dict=track_dict, release_days=release_days, duration=duration, pop=pop,
        tail_by_rank=tail_by_rank, track_artist=track_artist, artist_lic=artist_lic, artist_ids=artist_ids,
        licensor_ids=licensor_ids, lic_hex=lic_hex, pair_track=pair_track, pair_market=pair_market,
        skip_all=skip_all, save_all=save_all, base_skip=base_skip,
        truth_skip=truth_skip, truth_save=truth_save, disliked=disliked_all[:tracks],
        user_dict=user_dict, user_pool=user_pool, user_offset=user_offset,
        hour_lut=lut(cdf(LOCAL_HOUR_WEIGHT)), surface_share=surf_p, supply=planted,
        truth_promoted_skip=truth_promoted_skip, promoted_disliked=promoted_disliked,
    )
    finish_supply(w, end_date)
    return w


# -------------------------------------------------------------- enrollments ---
@dataclass
class Enrollments:
    table: pa.Table                # every history row of every enrollment of every month
    row_month: np.ndarray          # month key of each row
    row_time: np.ndarray           # updated_at (us) of each row
    row_enr: np.ndarray
    row_status: np.ndarray
    first_row: np.ndarray          # per enrollment
    enr_month: np.ndarray
    enr_pair: np.ndarray
    enr_campaign: np.ndarray
    enr_surfaces: np.ndarray       # bit mask over PROMOTION_SURFACES
    campaign_ids: pa.Array


def build_enrollments(w: World, first_day: dt.date, last_day: dt.date) -> Enrollments:
    n_lic = len(w.licensor_ids)
    track_lic = w.artist_lic[w.track_artist]
    n_pairs = len(w.pair_track)
    y, m = month_add(first_day.year, first_day.month, -1)
    y_end, m_end = month_add(last_day.year, last_day.month, 1)
    camp_ids, camp_lic, camp_start, camp_end, camp_created, camp_rate = [], [], [], [], [], []
    e_pair, e_camp, e_month, e_surf = [], [], [], []
    while (y, m) <= (y_end, m_end):
        key = month_key(y, m)
        rng = np.random.default_rng([w.seed, 2, key])
        start = dt.date(y, m, 1)
        end = dt.date(y, m, calendar.monthrange(y, m)[1])
        runs = rng.random(n_lic) < np.where(np.arange(n_lic) < 3, 1.0, 0.85)
        created = day_start_us(start) - rng.integers(3, 10, n_lic) * US_PER_DAY + rng.integers(0, US_PER_DAY, n_lic)
        rate = np.where(rng.random(n_lic) < 0.7, 0.30, rng.choice([0.20, 0.25, 0.35, 0.40], n_lic))
        first = w.supply.first_month
        included = (((rng.random(w.n_cat) < 0.85) | (first == key)) & runs[track_lic]
                    & (w.release_days <= (end - EPOCH).days) & (first <= key))
        surf = np.where(rng.random(n_pairs) < 0.8, 7, rng.integers(1, 7, n_pairs))
        camp_index = np.full(n_lic, -1)
        for lic in np.flatnonzero(runs):
            camp_index[lic] = len(camp_ids)
            camp_ids.append(f"cmp-{w.lic_hex[lic]}-{y:04d}-{m:02d}")
            camp_lic.append(lic)
            camp_start.append(start)
            camp_end.append(end)
            camp_created.append(created[lic])
            camp_rate.append(rate[lic])
        sel = np.flatnonzero(included[w.pair_track])
        e_pair.append(sel)
        e_camp.append(camp_index[track_lic[w.pair_track[sel]]])
        e_month.append(np.full(len(sel), key))
        e_surf.append(surf[sel])
        y, m = month_add(y, m, 1)

    enr_pair = np.concatenate(e_pair)
    enr_campaign = np.concatenate(e_camp)
    enr_month = np.concatenate(e_month)
    enr_surf = np.concatenate(e_surf)
    n_enr = len(enr_pair)
    camp_created = np.array(camp_created, dtype=np.int64)
    camp_start_us = np.array([day_start_us(d) for d in camp_start], dtype=np.int64)
    camp_end_us = np.array([day_start_us(d) + US_PER_DAY for d in camp_end], dtype=np.int64)

    # status histories
    rng = np.random.default_rng([w.seed, 3])
    probs = np.array([p for p, _ in HISTORIES])
    kind = draw(cdf(probs), rng.random(n_enr))
    lengths = np.array([len(s) for _, s in HISTORIES])
    seq = np.zeros((len(HISTORIES), 3), dtype=np.int8)
    for i, (_, s) in enumerate(HISTORIES):
        seq[i, :len(s)] = s
    t0 = camp_created[enr_campaign] + rng.integers(0, 6 * US_PER_HOUR, n_enr)
    c0 = camp_start_us[enr_campaign]
    c1 = camp_end_us[enr_campaign]
    t1 = c0 + (rng.random(n_enr) * (c1 - c0)).astype(np.int64)
    t2 = t1 + rng.integers(US_PER_HOUR, 7 * US_PER_DAY, n_enr)
    times = np.stack([t0, t1, t2], axis=1)
    counts = lengths[kind]
    row_enr = np.repeat(np.arange(n_enr), counts)
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    pos = np.arange(len(row_enr)) - first_row[row_enr]
    row_status = seq[kind[row_enr], pos]
    row_time = times[row_enr, pos]

    campaign_ids = pa.array(camp_ids, type=pa.string())
    row_camp = enr_campaign[row_enr]
    row_pair = enr_pair[row_enr]
    row_track = w.pair_track[row_pair]
    camp_lic = np.array(camp_lic, dtype=np.int64)
    surf_lists = pa.array([[s for i, s in enumerate(PROMOTION_SURFACES) if mask >> i & 1] for mask in range(8)],
                          type=pa.list_(pa.string()))
    start_days = np.array([(d - EPOCH).days for d in camp_start], dtype=np.int32)
    end_days = np.array([(d - EPOCH).days for d in camp_end], dtype=np.int32)
    cols = {
        "campaign_id": campaign_ids.take(pa.array(row_camp)),
        "track_id": w.track_dict.take(pa.array(row_track)),
        "artist_id": w.artist_ids.take(pa.array(w.track_artist[row_track])),
        "licensor_id": w.licensor_ids.take(pa.array(camp_lic[row_camp])),
        "market": w.market_dict.take(pa.array(w.pair_market[row_pair])),
        "surfaces": surf_lists.take(pa.array(enr_surf[row_enr])),
        "start_date": pa.array(start_days[row_camp], type=pa.int32()).view(pa.date32()),
        "end_date": pa.array(end_days[row_camp], type=pa.int32()).view(pa.date32()),
        "commission_rate": pa.array(np.array(camp_rate, dtype=np.float64)[row_camp]),
        "release_date": pa.array(w.release_days[row_track].astype(np.int32)).view(pa.date32()),
        "status": pa.array(list(ENROLLMENT_STATUSES)).take(pa.array(row_status)),
        "updated_at": pa.array(row_time, type=pa.int64()).view(pa.timestamp("us", tz="UTC")),
    }
    table = pa.Table.from_arrays([cols[n] for n in ENROLLMENTS.names], schema=ENROLLMENTS.arrow())
    return Enrollments(table=table, row_month=enr_month[row_enr], row_time=row_time, row_enr=row_enr,
                        row_status=row_status, first_row=first_row, enr_month=enr_month, enr_pair=enr_pair,
                        enr_campaign=enr_campaign, enr_surfaces=enr_surf, campaign_ids=campaign_ids)


def export_for_day(e: Enrollments, d: dt.date) -> pa.Table:
    """The campaign system's full export as of the end of day d."""
    months = [month_key(*month_add(d.year, d.month, -1)), month_key(d.year, d.month)]
    if near_month_end(d):
        months.append(month_key(*month_add(d.year, d.month, 1)))
    mask = np.isin(e.row_month, months) & (e.row_time < day_start_us(d) + US_PER_DAY)
    return e.table.filter(pa.array(mask))


def active_for_day(w: World, e: Enrollments, d: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Per (track, market) pair: the campaign index active at the start of day d (or -1) and its surfaces."""
    seen = e.row_time < day_start_us(d)
    count = np.bincount(e.row_enr[seen], minlength=len(e.enr_pair))
    last = e.first_row + np.maximum(count, 1) - 1
    active = (count > 0) & (e.row_status[last] == ACTIVE) & (e.enr_month == month_key(d.year, d.month))
    n_pairs = len(w.pair_track)
    pair_camp = np.full(n_pairs, -1, dtype=np.int64)
    pair_surf = np.zeros(n_pairs, dtype=np.int64)
    pair_camp[e.enr_pair[active]] = e.enr_campaign[active]
    pair_surf[e.enr_pair[active]] = e.enr_surfaces[active]
    return pair_camp, pair_surf


def holdout_users(w: World, d: dt.date) -> np.ndarray:
    """Per listener of the pool: in the holdout in d's month, by `pipelines.holdout`
    with the default config's salt and share (what `oasis run` checks against).
    Computed once per month."""
    month = holdout.month_number(d)
    cache = w.__dict__.setdefault("_holdout", {})
    if month not in cache:
        if "_user_keys" not in w.__dict__:
            w._user_keys = holdout.listener_keys(w.user_dict)
            w._user_market = w.market_dict.take(pa.array(
                np.repeat(np.arange(len(w.codes)), w.user_pool).astype(np.int32)))
        cfg = Config()
        cache[month] = holdout.in_holdout_keys(w._user_keys, w._user_market, np.full(len(w._user_keys), month),
                                               cfg.holdout_salt, cfg.holdout_share)
    return cache[month]


def truth_tables(w: World) -> dict[str, pa.Table]:
    """The planted truth, by table name: `tracks` (per enrolled (track, market,
    surface)), `weekday` (per (market, surface, weekday)), `holidays` (per
    (market, day))."""
    n_pairs = len(w.pair_track)
    pt = np.repeat(w.pair_track, N_PROMO)
    pm = np.repeat(w.pair_market, N_PROMO)
    ps = np.tile(np.arange(N_PROMO), n_pairs)
    first = w.supply.first_month[pt]
    first_days = np.array([(dt.date(k // 12, k % 12 + 1, 1) - EPOCH).days if k >= 0 else 0 for k in first],
                          dtype=np.int32)
    tracks = pa.table({
        "track_id": w.track_dict.take(pa.array(pt)),
        "market": w.market_dict.take(pa.array(pm)),
        "surface": pa.array(list(PROMOTION_SURFACES)).take(pa.array(ps)),
        "artist_id": w.artist_ids.take(pa.array(w.track_artist[pt])),
        "licensor_id": w.licensor_ids.take(pa.array(w.artist_lic[w.track_artist[pt]])),
        "skip_prob": pa.array(w.truth_skip.ravel()),
        "save_prob": pa.array(w.truth_save.ravel()),
        "baseline_skip_prob": pa.array(w.base_skip[pm, ps]),
        "disliked": pa.array(w.disliked[pt]),
        "release_date": pa.array(w.release_days[pt].astype(np.int32)).view(pa.date32()),
        "popularity": pa.array(w.pop[pt]),
        "duration_ms": pa.array(w.duration[pt]),
        "promoted_skip_prob": pa.array(w.truth_promoted_skip.ravel()),
        "promoted_disliked": pa.array(w.promoted_disliked[pt]),
        "decay_rate": pa.array(w.supply.decay[pt]),
        "first_flight_start": pa.array(first_days, mask=first < 0).view(pa.date32()),
    })
    m, s, k = np.meshgrid(np.arange(len(w.codes)), np.arange(len(ALL_SURFACES)), np.arange(7), indexing="ij")
    weekday = pa.table({
        "market": w.market_dict.take(pa.array(m.ravel())),
        "surface": pa.array(list(ALL_SURFACES)).take(pa.array(s.ravel())),
        "weekday": pa.array(k.ravel().astype(np.int64)),
        "factor": pa.array(w.supply.weekday.ravel()),
    })
    keys = sorted(w.supply.holidays)
    holidays = pa.table({
        "market": w.market_dict.take(pa.array([mk for mk, _ in keys], type=pa.int64())),
        "dt": pa.array([d for _, d in keys], type=pa.int32()).view(pa.date32()),
        "lift": pa.array([w.supply.holidays[key] for key in keys], type=pa.float64()),
    })
    return {"tracks": tracks, "weekday": weekday, "holidays": holidays}


def surface_days_table(w: World, first_day: dt.date, expected: list[np.ndarray]) -> pa.Table:
    """Expected plays of every (day, market, surface), all tracks: the planted S."""
    days, markets, surfaces = len(expected), len(w.codes), len(ALL_SURFACES)
    if not days:
        return pa.table({"dt": pa.array([], pa.date32()), "market": pa.array([], pa.string()),
                         "surface": pa.array([], pa.string()), "expected_plays": pa.array([], pa.float64())})
    d, m, s = np.meshgrid(np.arange(days), np.arange(markets), np.arange(surfaces), indexing="ij")
    return pa.table({
        "dt": pa.array((d.ravel() + (first_day - EPOCH).days).astype(np.int32)).view(pa.date32()),
        "market": w.market_dict.take(pa.array(m.ravel())),
        "surface": pa.array(list(ALL_SURFACES)).take(pa.array(s.ravel())),
        "expected_plays": pa.array(np.stack(expected).ravel()),
    })
