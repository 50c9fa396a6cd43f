"""`oasis sample`: a synthetic but realistic world of inputs (DESIGN §3).

The world is one catalogue of *campaign tracks* (``--tracks``) that licensors
enroll in monthly campaigns, plus a long tail of tracks that are never
enrolled. Everything is drawn from numpy Generators seeded by ``--seed`` (and
the day or month being generated), column-wise, so the same arguments give
byte-identical files and 6M events a day take a few seconds.

What is planted, so tests and analysts can check the pipeline against it:

* markets of very different sizes, each with its time zone (diurnal traffic);
* licensors of very different sizes (Zipf over artists), artists belonging to
  one licensor, each track with one artist; Zipf-like track popularity;
* each campaign track enrolled in a few markets (weighted by market size);
* monthly campaigns (one per licensor and month, 1st to last day) whose export
  holds the ended previous month, the current month and, during the last week
  of a month, the next month's campaigns already created;
* enrollment status history: mostly active, some paused, some cancelled, and
  superseded rows (the same key twice or three times; the latest wins and is
  sometimes active, sometimes paused or cancelled);
* tracks released in the last 30 days (no plays before their release day);
* per (track, market, surface) skip and save probabilities around a
  (market, surface) baseline; ~8% of the campaign tracks are *disliked*: their
  skip probability is at least 0.25 above the baseline. The truth is written to
  ``truth/tracks.parquet``;
* promoted plays (with their campaign id) only for tracks whose campaign is
  active in that market on an enrolled promotion surface;
* resent duplicate events (~0.5%, exact copies arriving a bit later) and
  contract-breaking rows at ``--bad-row-share``: unknown surface, negative
  ms_played, malformed market (lower case or alpha-3), event_ts days away from
  the partition day, empty track_id.

Layout written under ``out``::

    enrollments/dt=YYYY-MM-DD/part-00000.parquet   (one per day: the full export)
    engagement/dt=YYYY-MM-DD/part-NNNNN.parquet    (<= 1M rows a file, 128k row groups)
    truth/tracks.parquet
    LAST_DAY
"""
from __future__ import annotations

import argparse
import calendar
import datetime as dt
import glob
import math
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import ALL_SURFACES, ENGAGEMENT, ENROLLMENT_STATUSES, ENROLLMENTS, PROMOTION_SURFACES

# code, ISO alpha-3 (used for malformed rows), relative size, UTC offset in minutes
MARKETS = (
    ("US", "USA", 1.00, -300), ("GB", "GBR", 0.36, 0), ("DE", "DEU", 0.30, 60),
    ("BR", "BRA", 0.42, -180), ("SE", "SWE", 0.11, 60), ("JP", "JPN", 0.22, 540),
    ("FR", "FRA", 0.25, 60), ("MX", "MEX", 0.33, -360), ("IN", "IND", 0.28, 330),
    ("CA", "CAN", 0.17, -300), ("AU", "AUS", 0.14, 600), ("ES", "ESP", 0.18, 60),
    ("IT", "ITA", 0.15, 60), ("NL", "NLD", 0.09, 60), ("PL", "POL", 0.10, 60),
    ("KR", "KOR", 0.08, 540), ("ID", "IDN", 0.20, 420), ("TR", "TUR", 0.10, 180),
    ("AR", "ARG", 0.12, -180), ("PH", "PHL", 0.13, 480),
)

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
EPOCH = dt.date(1970, 1, 1)

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

CATALOGUE_PLAY_SHARE = 0.38   # share of plays on campaign tracks in their enrolled markets
PROMOTED_SHARE = 0.25         # share of eligible plays that come from a promotion boost
DUPLICATE_SHARE = 0.005
MAX_ROWS_PER_FILE = 1_000_000
ROW_GROUP_SIZE = 128 * 1024
DICTIONARY_COLUMNS = ["user_id", "track_id", "market", "surface", "campaign_id"]

assert tuple(ALL_SURFACES[:N_PROMO]) == tuple(PROMOTION_SURFACES)
assert tuple(ENROLLMENT_STATUSES) == ("active", "paused", "cancelled")


# ------------------------------------------------------------------ helpers ---
def _mix(x: np.ndarray, bits: int) -> np.ndarray:
    """A bijection of the integers mod 2**bits (xor-shift / odd-multiply rounds)."""
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    h = np.uint64(bits // 2)
    x = x.astype(np.uint64) & mask
    x ^= x >> h
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x &= mask
    x ^= x >> np.uint64(bits // 2 - 3)
    x *= np.uint64(0x94D049BB133111EB)
    x &= mask
    x ^= x >> h
    return x


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# byte -> its two hex characters, as one little-endian uint16 (first char in the low byte)
_HEX2 = (_HEX[np.arange(256) >> 4].astype(np.uint16)
         | (_HEX[np.arange(256) & 15].astype(np.uint16) << np.uint16(8)))


def _hex_strings(prefix: str, values: np.ndarray, nhex: int) -> pa.Array:
    """pyarrow strings ``prefix + lowercase hex of values`` (nhex even, <= 16), built without Python loops."""
    n = len(values)
    nb = nhex // 2
    raw = values.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - nb:]
    chars = _HEX2[raw].view(np.uint8).reshape(n, nhex)
    p = prefix.encode()
    width = len(p) + nhex
    if n * width >= 2**31:
        raise ValueError("too many strings for one array")
    out = np.empty((n, width), dtype=np.uint8)
    out[:, :len(p)] = np.frombuffer(p, dtype=np.uint8)
    out[:, len(p):] = chars
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def _ids(prefix: str, n: int, salt: int, nhex: int) -> pa.Array:
    """n distinct pseudo-random ids (a bijection of 0..n-1, so never a collision)."""
    bits = 4 * nhex
    vals = _mix(np.arange(n, dtype=np.uint64) + np.uint64(salt % (1 << bits)), bits)
    return _hex_strings(prefix, vals, nhex)


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Weights proportional to rank**-s, ranks shuffled over the n items."""
    w = (np.arange(1, n + 1, dtype=np.float64)) ** -s
    return w[rng.permutation(n)]


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


LUT_SIZE = 1 << 14


def _lut(cdf: np.ndarray) -> np.ndarray:
    """A look-up table for drawing from a small categorical: category = lut[int(u * LUT_SIZE)]."""
    return _draw(cdf, (np.arange(LUT_SIZE) + 0.5) / LUT_SIZE).astype(np.int32)


def _lut_index(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, LUT_SIZE, n, dtype=np.int32)


def _pow15(u: np.ndarray) -> np.ndarray:
    """u ** 1.5, faster."""
    return u * np.sqrt(u)


def _retain_freed_memory() -> None:
    """Let glibc keep freed buffers for reuse instead of returning them to the OS.

    Each day allocates and frees a few GB of large numpy/Arrow buffers; with glibc's
    defaults every one is a fresh mmap whose pages are faulted in again, which costs
    more than the generation itself. Best effort: a no-op off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)            # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2**31 - 1)          # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _day_us(d: dt.date) -> int:
    return (d - EPOCH).days * US_PER_DAY


def _month_add(year: int, month: int, k: int) -> tuple[int, int]:
    i = year * 12 + (month - 1) + k
    return i // 12, i % 12 + 1


def _month_key(year: int, month: int) -> int:
    return year * 12 + month - 1


def _near_month_end(d: dt.date) -> bool:
    """The export carries next month's campaigns during the last week of a month."""
    return d.day > calendar.monthrange(d.year, d.month)[1] - 7


# -------------------------------------------------------------------- world ---
@dataclass
class _World:
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
    market_lut: np.ndarray
    surface_lut: np.ndarray        # (markets * LUT_SIZE): per-market surface mix
    truth_skip: np.ndarray         # (pairs, 3)
    truth_save: np.ndarray         # (pairs, 3)
    disliked: np.ndarray           # catalogue tracks
    user_dict: pa.Array
    user_pool: np.ndarray
    user_offset: np.ndarray
    hour_lut: np.ndarray

    def __post_init__(self):        # float32 copies for the per-event arithmetic
        self.base_skip32 = self.base_skip.astype(np.float32).ravel()
        self.skip32 = self.skip_all.astype(np.float32)
        self.save32 = self.save_all.astype(np.float32)
        self.truth_skip32 = self.truth_skip.astype(np.float32)
        self.truth_save32 = self.truth_save.astype(np.float32)
        self.duration32 = self.duration.astype(np.float32)
        markets = len(self.codes)
        self.pair_of = np.full(self.n_cat * markets, -1, dtype=np.int32)   # (track, market) -> pair
        self.pair_of[self.pair_track * markets + self.pair_market] = np.arange(len(self.pair_track))


def _build_world(*, seed: int, tracks: int, events_per_day: int, markets: int,
                 end_date: dt.date) -> _World:
    rng = np.random.default_rng([seed, 0])
    info = MARKETS[:markets]
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
    artist_lic = _draw(_cdf(np.arange(1, n_lic + 1, dtype=float) ** -1.5), rng.random(n_art))
    seeded = min(n_lic, n_art // 2)
    artist_lic[rng.permutation(n_art)[:seeded]] = np.arange(seeded)
    track_artist = _draw(_cdf(_zipf_weights(n_art, 0.7, rng)), rng.random(tracks))
    lic_vals = _mix(np.arange(n_lic, dtype=np.uint64) + np.uint64(seed * 7919 % (1 << 24)), 24)
    licensor_ids = _hex_strings("lic-", lic_vals, 6)
    lic_hex = [s[4:] for s in licensor_ids.to_pylist()]
    artist_ids = _ids("art-", n_art, seed * 104729 + 17, 10)
    track_dict = pa.concat_arrays([_ids("trk-", tracks + n_tail, seed * 1299709 + 31, 12), pa.array([""])])

    # release dates of the campaign tracks: ~7% in the last 30 days, some within a year, most long ago
    end_days = (end_date - EPOCH).days
    ago = rng.integers(365, 15 * 365, tracks)
    order = rng.permutation(tracks)
    n_young = max(2, round(0.07 * tracks))
    n_recent = round(0.08 * tracks)
    ago[order[:n_young]] = rng.integers(0, 30, n_young)
    ago[order[n_young:n_young + n_recent]] = rng.integers(30, 365, n_recent)
    release_days = end_days - ago

    duration = np.clip(rng.lognormal(np.log(205_000), 0.25, tracks + n_tail), 45_000, 720_000).astype(np.int64)
    pop = _zipf_weights(tracks, 0.8, rng)
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
    truth_save = np.clip(save_all[pair_track, None] * SURFACE_SAVE_MULT[None, :N_PROMO]
                         * rng.lognormal(0, 0.08, (n_pairs, N_PROMO)), 0.002, 0.30)

    surf_p = rng.dirichlet(SURFACE_SHARE * 400, markets)
    surface_lut = np.concatenate([_lut(_cdf(row)) for row in surf_p])

    # listeners: a pool per market, Zipf-ish activity
    user_pool = np.maximum(200, np.round(max(events_per_day, 1) * m_weight / 5)).astype(np.int64)
    user_offset = np.concatenate([[0], np.cumsum(user_pool)[:-1]])
    user_dict = _ids("u", int(user_pool.sum()), seed * 15485863 + 101, 16)

    return _World(
        seed=seed, codes=codes, m_weight=m_weight, m_offset_min=m_offset_min, market_dict=market_dict,
        n_cat=tracks, track_dict=track_dict, release_days=release_days, duration=duration, pop=pop,
        tail_by_rank=tail_by_rank, track_artist=track_artist, artist_lic=artist_lic, artist_ids=artist_ids,
        licensor_ids=licensor_ids, lic_hex=lic_hex, pair_track=pair_track, pair_market=pair_market,
        skip_all=skip_all, save_all=save_all, base_skip=base_skip,
        market_lut=_lut(_cdf(m_weight)), surface_lut=surface_lut,
        truth_skip=truth_skip, truth_save=truth_save, disliked=disliked_all[:tracks],
        user_dict=user_dict, user_pool=user_pool, user_offset=user_offset,
        hour_lut=_lut(_cdf(LOCAL_HOUR_WEIGHT)),
    )


# -------------------------------------------------------------- enrollments ---
@dataclass
class _Enrollments:
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


def _build_enrollments(w: _World, first_day: dt.date, last_day: dt.date) -> _Enrollments:
    n_lic = len(w.licensor_ids)
    track_lic = w.artist_lic[w.track_artist]
    n_pairs = len(w.pair_track)
    y, m = _month_add(first_day.year, first_day.month, -1)
    y_end, m_end = _month_add(last_day.year, last_day.month, 1)
    camp_ids, camp_lic, camp_start, camp_end, camp_created, camp_rate = [], [], [], [], [], []
    e_pair, e_camp, e_month, e_surf = [], [], [], []
    while (y, m) <= (y_end, m_end):
        key = _month_key(y, m)
        rng = np.random.default_rng([w.seed, 2, key])
        start = dt.date(y, m, 1)
        end = dt.date(y, m, calendar.monthrange(y, m)[1])
        runs = rng.random(n_lic) < np.where(np.arange(n_lic) < 3, 1.0, 0.85)
        created = _day_us(start) - rng.integers(3, 10, n_lic) * US_PER_DAY + rng.integers(0, US_PER_DAY, n_lic)
        rate = np.where(rng.random(n_lic) < 0.7, 0.30, rng.choice([0.20, 0.25, 0.35, 0.40], n_lic))
        included = ((rng.random(w.n_cat) < 0.85) & runs[track_lic]
                    & (w.release_days <= (end - EPOCH).days))
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
        y, m = _month_add(y, m, 1)

    enr_pair = np.concatenate(e_pair)
    enr_campaign = np.concatenate(e_camp)
    enr_month = np.concatenate(e_month)
    enr_surf = np.concatenate(e_surf)
    n_enr = len(enr_pair)
    camp_created = np.array(camp_created, dtype=np.int64)
    camp_start_us = np.array([_day_us(d) for d in camp_start], dtype=np.int64)
    camp_end_us = np.array([_day_us(d) + US_PER_DAY for d in camp_end], dtype=np.int64)

    # status histories
    rng = np.random.default_rng([w.seed, 3])
    probs = np.array([p for p, _ in HISTORIES])
    kind = _draw(_cdf(probs), rng.random(n_enr))
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
    return _Enrollments(table=table, row_month=enr_month[row_enr], row_time=row_time, row_enr=row_enr,
                        row_status=row_status, first_row=first_row, enr_month=enr_month, enr_pair=enr_pair,
                        enr_campaign=enr_campaign, enr_surfaces=enr_surf, campaign_ids=campaign_ids)


def _export_for_day(e: _Enrollments, d: dt.date) -> pa.Table:
    """The campaign system's full export as of the end of day d."""
    months = [_month_key(*_month_add(d.year, d.month, -1)), _month_key(d.year, d.month)]
    if _near_month_end(d):
        months.append(_month_key(*_month_add(d.year, d.month, 1)))
    mask = np.isin(e.row_month, months) & (e.row_time < _day_us(d) + US_PER_DAY)
    return e.table.filter(pa.array(mask))


def _active_for_day(w: _World, e: _Enrollments, d: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Per (track, market) pair: the campaign index active at the start of day d (or -1) and its surfaces."""
    seen = e.row_time < _day_us(d)
    count = np.bincount(e.row_enr[seen], minlength=len(e.enr_pair))
    last = e.first_row + np.maximum(count, 1) - 1
    active = (count > 0) & (e.row_status[last] == ACTIVE) & (e.enr_month == _month_key(d.year, d.month))
    n_pairs = len(w.pair_track)
    pair_camp = np.full(n_pairs, -1, dtype=np.int64)
    pair_surf = np.zeros(n_pairs, dtype=np.int64)
    pair_camp[e.enr_pair[active]] = e.enr_campaign[active]
    pair_surf[e.enr_pair[active]] = e.enr_surfaces[active]
    return pair_camp, pair_surf


# --------------------------------------------------------------- engagement ---
def _events_for_day(w: _World, e: _Enrollments, d: dt.date, n: int, bad_row_share: float) -> tuple[pa.Table, dict]:
    """One UTC day of `n` engagement rows (resent duplicates and bad rows included), in arrival order."""
    rng = np.random.default_rng([w.seed, 1, d.toordinal()])
    n_dup = int(round(n * DUPLICATE_SHARE))
    n0 = n - n_dup
    day_days = (d - EPOCH).days
    day_us = _day_us(d)
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
        pair = _draw(_cdf(pair_w), rng.random(len(cat)))
        market[cat] = w.pair_market[pair]
        track[cat] = w.pair_track[pair]
    market[tail] = w.market_lut[_lut_index(rng, len(tail))]
    n_tail = len(w.tail_by_rank)      # Zipf(1) ranks by inversion: P(rank = k) ~ log(1 + 1/k)
    rank = np.exp(uniform(len(tail)) * np.float32(math.log(n_tail + 1))).astype(np.int64) - 1
    track[tail] = w.tail_by_rank[np.clip(rank, 0, n_tail - 1)]
    del is_cat, cat, tail, rank

    # when: the market's local diurnal curve, shifted to UTC; rows arrive in event-time order (2 s buckets)
    offset_us = np.mod(w.hour_lut[_lut_index(rng, n0)].astype(np.int64) * US_PER_HOUR
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
    surface = w.surface_lut[market * LUT_SIZE + _lut_index(rng, n0)]
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
    user = (w.user_offset[market] + (w.user_pool[market] * _pow15(uniform(n0))).astype(np.int32)).astype(np.int32)

    # promoted plays: the track's campaign is active in this market on this (enrolled) promotion surface
    pair_camp, pair_surf = _active_for_day(w, e, d)
    campaign = np.full(n0, -1, dtype=np.int32)
    boostable = on_promo & (pair_camp[cat_pair] >= 0) & (((pair_surf[cat_pair] >> s_cat) & 1) == 1)
    promoted_cat = boostable & (uniform(len(cat)) < PROMOTED_SHARE)
    campaign[cat[promoted_cat]] = pair_camp[cat_pair[promoted_cat]]

    salt = np.uint64(_mix(np.array([w.seed], dtype=np.uint64), 64)[0])
    ev = _mix((np.uint64(day_days) << np.uint64(32)) | np.arange(n0, dtype=np.uint64), 64) ^ salt

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
        "event_id": _hex_strings("", ev, 16),
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
    }
    regular = pa.Table.from_arrays([cols[c] for c in ENGAGEMENT.names], schema=ENGAGEMENT.arrow())
    table = pa.concat_tables([regular, regular.take(pa.array(src))])

    enrolled_now = np.zeros(len(w.pair_track), dtype=bool)
    months = np.isin(e.enr_month, [_month_key(*_month_add(d.year, d.month, k)) for k in (-1, 0)])
    enrolled_now[e.enr_pair[months]] = True
    stats = {"events": n, "duplicates": n_dup, "bad_rows": n_bad, "promoted": int(promoted_cat.sum()),
             "enrolled_plays": int(enrolled_now[cat_pair].sum())}
    return table, stats


# ------------------------------------------------------------------- output ---
def _write(table: pa.Table, path: str, dictionary: list[str] | bool) -> None:
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=1,
                   use_dictionary=dictionary, write_statistics=True)
    os.replace(tmp, path)


def _clear(out: str) -> None:
    """Remove the files an earlier run wrote here (only our own layout), so no stale part survives."""
    for pattern in ("enrollments/dt=*/part-*.parquet", "engagement/dt=*/part-*.parquet",
                    "enrollments/dt=*/part-*.parquet.tmp", "engagement/dt=*/part-*.parquet.tmp",
                    "truth/tracks.parquet", "LAST_DAY"):
        for f in glob.glob(os.path.join(out, pattern)):
            os.remove(f)
    for pattern in ("enrollments/dt=*", "engagement/dt=*"):
        for folder in glob.glob(os.path.join(out, pattern)):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


def _truth_table(w: _World) -> pa.Table:
    n_pairs = len(w.pair_track)
    pt = np.repeat(w.pair_track, N_PROMO)
    pm = np.repeat(w.pair_market, N_PROMO)
    ps = np.tile(np.arange(N_PROMO), n_pairs)
    return pa.table({
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
    })


def generate_world(out: str, *, days: int, tracks: int, events_per_day: int, seed: int,
                   end_date: dt.date, bad_row_share: float = 0.002, markets: int = 6,
                   progress: bool = True) -> dict:
    """Write a synthetic world of `days` days ending on `end_date` under the local folder `out`."""
    if days < 1:
        raise ValueError("days must be >= 1")
    if not 10 <= tracks <= 100_000:
        raise ValueError("tracks must be between 10 and 100000")
    if not 0 <= events_per_day <= 100_000_000:
        raise ValueError("events_per_day must be between 0 and 100000000")
    if not 1 <= markets <= len(MARKETS):
        raise ValueError(f"markets must be between 1 and {len(MARKETS)}")
    if not 0.0 <= bad_row_share < 0.5:
        raise ValueError("bad_row_share must be in [0, 0.5)")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    started = time.monotonic()
    if events_per_day >= 500_000:
        _retain_freed_memory()
    first_day = end_date - dt.timedelta(days=days - 1)
    os.makedirs(out, exist_ok=True)
    _clear(out)
    w = _build_world(seed=seed, tracks=tracks, events_per_day=events_per_day, markets=markets, end_date=end_date)
    e = _build_enrollments(w, first_day, end_date)
    os.makedirs(os.path.join(out, "truth"), exist_ok=True)
    _write(_truth_table(w), os.path.join(out, "truth", "tracks.parquet"), True)

    totals = {"events": 0, "duplicates": 0, "bad_rows": 0, "promoted": 0, "enrolled_plays": 0}
    enrollment_rows = 0
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(days):
            t_day = time.monotonic()
            d = first_day + dt.timedelta(days=i)
            export = _export_for_day(e, d)
            events, stats = _events_for_day(w, e, d, events_per_day, bad_row_share)
            for f in pending:            # at most one day being written while the next is generated
                f.result()
            pending = []
            folder = os.path.join(out, "enrollments", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            pending.append(pool.submit(_write, export, os.path.join(folder, "part-00000.parquet"), True))
            folder = os.path.join(out, "engagement", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            n_files = max(1, math.ceil(events.num_rows / MAX_ROWS_PER_FILE))
            bounds = np.linspace(0, events.num_rows, n_files + 1).round().astype(int)
            for j in range(n_files):
                part = events.slice(bounds[j], bounds[j + 1] - bounds[j])
                pending.append(pool.submit(_write, part, os.path.join(folder, f"part-{j:05d}.parquet"),
                                           DICTIONARY_COLUMNS))
            enrollment_rows += export.num_rows
            for k in totals:
                totals[k] += stats[k]
            if progress:
                print(f"sample: {d.isoformat()} ({i + 1}/{days})  engagement {events.num_rows:,} rows in "
                      f"{n_files} file(s), {stats['duplicates']:,} resent, {stats['bad_rows']:,} bad; "
                      f"enrollments {export.num_rows:,} rows  [{time.monotonic() - t_day:.1f}s]",
                      file=sys.stderr, flush=True)
        for f in pending:
            f.result()
    with open(os.path.join(out, "LAST_DAY"), "w") as fh:
        fh.write(end_date.isoformat() + "\n")

    return {
        "out": out,
        "first_day": first_day.isoformat(),
        "last_day": end_date.isoformat(),
        "days": days,
        "markets": list(w.codes),
        "campaign_tracks": tracks,
        "tail_tracks": len(w.track_dict) - 1 - tracks,
        "artists": len(w.artist_ids),
        "licensors": len(w.licensor_ids),
        "campaigns": len(e.campaign_ids),
        "enrolled_pairs": int(len(w.pair_track)),
        "disliked_tracks": int(w.disliked.sum()),
        "young_tracks": int(((end_date - EPOCH).days - w.release_days < 30).sum()),
        "enrollment_rows": enrollment_rows,
        "engagement_rows": totals["events"],
        "duplicate_events": totals["duplicates"],
        "bad_rows": totals["bad_rows"],
        "promoted_plays": totals["promoted"],
        "enrolled_play_share": round(totals["enrolled_plays"] / max(totals["events"], 1), 4),
        "seconds": round(time.monotonic() - started, 2),
    }


# ---------------------------------------------------------------------- CLI ---
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="local folder to write the world into")
    parser.add_argument("--days", type=int, default=35, help="number of days (default 35)")
    parser.add_argument("--tracks", type=int, default=400, help="campaign tracks in the catalogue (default 400)")
    parser.add_argument("--events-per-day", type=int, default=40000, help="engagement rows per day (default 40000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 24),
                        help="last day, YYYY-MM-DD (default 2026-11-24)")
    parser.add_argument("--bad-row-share", type=float, default=0.002,
                        help="share of contract-breaking engagement rows (default 0.002)")
    parser.add_argument("--markets", type=int, default=6, help=f"number of markets, 1-{len(MARKETS)} (default 6)")


def main(args) -> int:
    summary = generate_world(args.out, days=args.days, tracks=args.tracks, events_per_day=args.events_per_day,
                             seed=args.seed, end_date=args.end_date, bad_row_share=args.bad_row_share,
                             markets=args.markets, progress=True)
    print(f"sample world {summary['first_day']}..{summary['last_day']} written to {summary['out']} "
          f"in {summary['seconds']}s")
    print(f"  markets {', '.join(summary['markets'])}; {summary['campaign_tracks']} campaign tracks "
          f"({summary['disliked_tracks']} disliked, {summary['young_tracks']} released in the last 30 days), "
          f"{summary['tail_tracks']:,} tail tracks, {summary['artists']} artists, {summary['licensors']} licensors, "
          f"{summary['campaigns']} campaigns")
    print(f"  engagement {summary['engagement_rows']:,} rows ({summary['enrolled_play_share']:.0%} on enrolled "
          f"tracks, {summary['promoted_plays']:,} promoted, {summary['duplicate_events']:,} resent, "
          f"{summary['bad_rows']:,} bad); enrollments {summary['enrollment_rows']:,} export rows")
    print(f"  truth: {os.path.join(summary['out'], 'truth', 'tracks.parquet')}; last day in "
          f"{os.path.join(summary['out'], 'LAST_DAY')}")
    return 0
