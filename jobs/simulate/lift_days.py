"""The planted-lift world (`jobs.simulate.lift_world`) as input files: engagement
with the holdout flag, serving's exposure log (treated and ghost) and the daily
enrollment export, one UTC day at a time, plus the truth.

`day_tables(world, events, exposures, day)` is the day generator: it returns one
day's (engagement, exposures, enrollments) in the input contract from the
world's drawn plays, so a closed-loop simulator can ask for a day at a time (the
plays here do not depend on the published plan: the planted lift is the
campaign's, whatever the allocation). `write_lift_world` draws every campaign's
plays once and writes all days.

What the files hold, per campaign (one track, one market, one surface):

* every stream (a play of at least 30 s) of the campaign's listeners, organic
  at their rate and, for a treated listener from the first exposure on, at the
  boosted rate; half of a treated listener's post-exposure streams are logged
  as promoted plays on the campaign's surface (a holdout listener's never are);
* short plays (under 30 s, skipped: not streams) at a quarter of that rate,
  saves on 4% of streams, 0.3% of plays resent as exact duplicates;
* exposures: the first at the listener's exposure time, then Poisson(1) more
  within the next week, `treated` or `ghost` by the holdout assignment; 1%
  resent;
* background plays of tracks that are never enrolled by every listener of the
  market pool (30% of listeners a day), so the markets' active listeners exist
  for the intent-to-treat populations.

Written under `out`: enrollments/, engagement/, exposures/ (dt=YYYY-MM-DD/
part-00000.parquet; every day has an exposure file, empty before the flight),
truth/lift.parquet, oasis.toml (the run config matching the world: holdout salt
and share, window and pre-period) and LAST_DAY.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.sample.draws import hex_strings, mix
from jobs.simulate.lift_world import LiftWorld, LiftWorldSpec, build_world, latent, trend_integral
from pipelines import holdout
from schemas import ALL_SURFACES, ENGAGEMENT, ENROLLMENTS, EXPOSURES

US_DAY = 86_400_000_000
SURFACE_SHARE = np.array([0.13, 0.15, 0.12, 0.10, 0.26, 0.19, 0.05])  # order of ALL_SURFACES
PROMOTED_SHARE = 0.5      # of a treated listener's post-exposure streams
SHORT_RATE = 0.25         # short plays per stream
SAVE_SHARE = 0.04
DUPLICATE_SHARE = 0.003
BACKGROUND_RATE = 0.3     # background plays per pool listener and day
TAIL_TRACKS = 40          # never-enrolled tracks per market
DURATION_MS = 200_000
LICENSORS, ARTISTS = 6, 16


@dataclass
class Drawn:
    """Every play and exposure of the world, as flat numpy columns (ts in us)."""
    plays: dict[str, np.ndarray]
    exposures: dict[str, np.ndarray]


def day_us(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * US_DAY


def _segments(lat, P: int, end: int) -> tuple[np.ndarray, ...]:
    """(listener, start, stop, rate, boosted) of every stretch of constant rate,
    cut at day boundaries and at the exposure time, days from the flight start."""
    days = np.arange(-P, end)
    exposed = np.flatnonzero(lat.exposed)
    d = np.full(len(lat.lam), np.inf)
    d[exposed] = lat.d
    post = np.zeros(len(lat.lam))
    post[exposed] = lat.rate_post
    who = np.flatnonzero((lat.lam > 0) | (post > 0))
    i = np.repeat(who, len(days))
    k = np.tile(days, len(who)).astype(float)
    cut = np.clip(d[i], k, k + 1)
    parts = [(i, k, cut, lat.lam[i], np.zeros(len(i), bool)), (i, cut, k + 1, post[i], np.ones(len(i), bool))]
    out = [np.concatenate(c) for c in zip(*parts)]
    keep = (out[2] > out[1]) & (out[3] > 0)
    return tuple(c[keep] for c in out)


def draw_plays(w: LiftWorld) -> Drawn:
    s = w.spec
    P, end, start_us = s.pre_days, s.end, day_us(s.flight_start)
    plays, exps = [], []
    for c in range(len(w.params)):
        p, lat = w.params.iloc[c], latent(w, c)
        rng = np.random.default_rng([s.seed, 3, c])
        i, a, b, rate, boosted = _segments(lat, P, end)
        expected = rate * trend_integral(a, b, lat.g)
        for kind, n in (("stream", rng.poisson(expected)), ("short", rng.poisson(SHORT_RATE * expected))):
            seg = np.repeat(np.arange(len(i)), n)
            t = a[seg] + rng.random(len(seg)) * (b[seg] - a[seg])
            member = lat.members[i[seg]]
            treated = boosted[seg] & ~lat.holdout[i[seg]]
            promoted = treated & (rng.random(len(seg)) < PROMOTED_SHARE)
            surface = np.where(promoted, ALL_SURFACES.index(p.surface),
                               np.searchsorted(np.cumsum(SURFACE_SHARE), rng.random(len(seg)) * 0.999999))
            ms = (rng.integers(30_000, DURATION_MS, len(seg)) if kind == "stream"
                  else rng.integers(1_000, 30_000, len(seg)))
            plays.append(dict(ts=start_us + (t * US_DAY).astype(np.int64), user=member, campaign=np.full(len(seg), c),
                              surface=surface, ms=ms, promoted=promoted,
                              saved=(rng.random(len(seg)) < SAVE_SHARE) & (kind == "stream")))
        ex = np.flatnonzero(lat.exposed)
        more = rng.poisson(1.0, len(ex))
        who = np.concatenate([np.arange(len(ex)), np.repeat(np.arange(len(ex)), more)])
        t = np.concatenate([lat.d, np.repeat(lat.d, more) + rng.random(int(more.sum()))
                            * np.minimum(7.0, end - np.repeat(lat.d, more))])
        exps.append(dict(ts=start_us + (t * US_DAY).astype(np.int64), user=lat.members[ex[who]],
                         campaign=np.full(len(who), c), ghost=lat.holdout[ex[who]]))
    cat = {k: np.concatenate([x[k] for x in plays]) for k in plays[0]}
    return Drawn(cat, {k: np.concatenate([x[k] for x in exps]) for k in exps[0]})


def _background(w: LiftWorld, d: dt.date, rng) -> dict[str, pa.Array]:
    cols = {k: [] for k in ("user_id", "market", "track_id", "ts", "surface")}
    for m, ids in w.pool_ids.items():
        who = np.flatnonzero(rng.random(len(ids)) < BACKGROUND_RATE)
        cols["user_id"].append(ids.take(pa.array(who)))
        cols["market"].append(pa.array([m] * len(who), pa.string()))
        cols["track_id"].append(pa.array([f"trk-tail-{m.lower()}-{t:03d}" for t in rng.integers(0, TAIL_TRACKS,
                                                                                             len(who))]))
        cols["ts"].append(day_us(d) + rng.integers(0, US_DAY, len(who)))
        cols["surface"].append(np.searchsorted(np.cumsum(SURFACE_SHARE), rng.random(len(who)) * 0.999999))
    return {k: (pa.concat_arrays(v) if isinstance(v[0], pa.Array) else np.concatenate(v)) for k, v in cols.items()}


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return hex_strings(prefix, mix(values.astype(np.uint64), 64), 16)


def campaign_columns(w: LiftWorld) -> dict[str, np.ndarray]:
    n = len(w.params)
    rng = np.random.default_rng([w.spec.seed, 4])
    artist = np.minimum((rng.pareto(1.2, n) * 2).astype(int), ARTISTS - 1)  # a few artists with many campaigns
    return {"campaign_id": np.array([f"cmp-sim-{c:04d}" for c in range(n)]),
            "track_id": np.array([f"trk-sim-{c:04d}" for c in range(n)]),
            "artist_id": np.array([f"art-sim-{a:03d}" for a in artist]),
            "licensor_id": np.array([f"lic-sim-{a % LICENSORS:02d}" for a in artist])}


def day_tables(w: LiftWorld, drawn: Drawn, d: dt.date) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One day's (engagement, exposures, enrollments) in the input contract."""
    s, camp = w.spec, campaign_columns(w)
    rng = np.random.default_rng([s.seed, 5, d.toordinal()])
    lo, hi = day_us(d), day_us(d) + US_DAY
    p = drawn.plays
    sel = np.flatnonzero((p["ts"] >= lo) & (p["ts"] < hi))
    users, order = _user_ids(w, w.params.market.to_numpy()[p["campaign"][sel]], p["user"][sel])
    sel = sel[order]
    c = p["campaign"][sel]
    markets = w.params.market.to_numpy()[c]
    bg = _background(w, d, rng)
    n_bg = len(bg["ts"])
    surface = np.concatenate([p["surface"][sel], bg["surface"]])
    short = rng.random(n_bg) < SHORT_RATE / (1 + SHORT_RATE)  # as skippy as the campaign tracks' plays
    ms = np.concatenate([p["ms"][sel], np.where(short, rng.integers(1_000, 30_000, n_bg), DURATION_MS)])
    promoted = np.concatenate([p["promoted"][sel], np.zeros(n_bg, bool)])
    market_col = pa.concat_arrays([pa.array(markets, pa.string()), bg["market"]])
    user_col = pa.concat_arrays([users, bg["user_id"]])
    n = len(ms)
    table = pa.table({
        "event_id": _ids("e", (np.uint64(d.toordinal()) << np.uint64(32)) | np.arange(n, dtype=np.uint64)),
        "event_ts": pa.array(np.concatenate([p["ts"][sel], bg["ts"]]), pa.int64()).cast(pa.timestamp("us", "UTC")),
        "user_id": user_col,
        "track_id": pa.concat_arrays([pa.array(camp["track_id"][c], pa.string()), bg["track_id"]]),
        "market": market_col,
        "surface": pa.array(np.array(ALL_SURFACES)[surface], pa.string()),
        "ms_played": pa.array(ms, pa.int64()), "duration_ms": pa.array(np.full(n, DURATION_MS), pa.int64()),
        "skipped": pa.array(ms < 30_000), "saved": pa.array(np.concatenate([p["saved"][sel], np.zeros(n_bg, bool)])),
        "promoted": pa.array(promoted),
        "campaign_id": pa.array(np.where(promoted, np.concatenate([camp["campaign_id"][c], np.full(n_bg, "")]), None),
                                pa.string()),
    })
    flags = holdout.in_holdout(user_col, market_col, np.full(n, holdout.month_number(d)), s.holdout_salt,
                               s.holdout_share)
    table = table.append_column("holdout", pa.array(flags))
    dup = rng.choice(n, int(n * DUPLICATE_SHARE), replace=False) if n else np.zeros(0, int)
    table = pa.concat_tables([table, table.take(pa.array(np.sort(dup)))]).select(ENGAGEMENT.names)
    return table.cast(ENGAGEMENT.arrow()), _exposures(w, drawn, d, rng), _enrollments(w, camp)


def _user_ids(w: LiftWorld, markets: np.ndarray, members: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """(user ids, order): the ids of (market, pool index) pairs, grouped by market;
    `order` puts any per-row column in the same order."""
    if not len(markets):
        return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    order = np.concatenate([np.flatnonzero(markets == m) for m in sorted(set(markets))])
    ids = pa.concat_arrays([w.pool_ids[m].take(pa.array(members[markets == m])) for m in sorted(set(markets))])
    return ids, order


def _exposures(w: LiftWorld, drawn: Drawn, d: dt.date, rng) -> pa.Table:
    camp = campaign_columns(w)
    x = drawn.exposures
    sel = np.flatnonzero((x["ts"] >= day_us(d)) & (x["ts"] < day_us(d) + US_DAY))
    users, order = _user_ids(w, w.params.market.to_numpy()[x["campaign"][sel]], x["user"][sel])
    sel = sel[order]
    c = x["campaign"][sel]
    markets = w.params.market.to_numpy()[c]
    table = pa.table({
        "exposure_id": _ids("x", (np.uint64(d.toordinal()) << np.uint64(32)) | np.arange(len(sel), dtype=np.uint64)),
        "event_ts": pa.array(x["ts"][sel], pa.int64()).cast(pa.timestamp("us", "UTC")),
        "user_id": users,
        "track_id": pa.array(camp["track_id"][c], pa.string()),
        "campaign_id": pa.array(camp["campaign_id"][c], pa.string()),
        "market": pa.array(markets, pa.string()),
        "surface": pa.array(w.params.surface.to_numpy()[c], pa.string()),
        "arm": pa.array(np.where(x["ghost"][sel], "ghost", "treated"), pa.string()),
    })
    table = table.take(pa.array(np.argsort(x["ts"][sel], kind="stable")))  # serving logs in time order
    dup = rng.choice(len(sel), int(len(sel) * 0.01), replace=False) if len(sel) else np.zeros(0, int)
    return pa.concat_tables([table, table.take(pa.array(np.sort(dup)))]).cast(EXPOSURES.arrow())


def _enrollments(w: LiftWorld, camp: dict) -> pa.Table:
    s = w.spec
    n = len(w.params)
    start = s.flight_start
    return pa.table({
        "campaign_id": camp["campaign_id"], "track_id": camp["track_id"], "artist_id": camp["artist_id"],
        "licensor_id": camp["licensor_id"], "market": w.params.market.to_numpy(),
        "surfaces": pa.array([[x] for x in w.params.surface], pa.list_(pa.string())),
        "start_date": pa.array([start] * n, pa.date32()),
        "end_date": pa.array([start + dt.timedelta(days=s.flight_days - 1)] * n, pa.date32()),
        "commission_rate": np.full(n, 0.3),
        "release_date": pa.array([start - dt.timedelta(days=400)] * n, pa.date32()),
        "status": ["active"] * n,
        "updated_at": pa.array([day_us(start - dt.timedelta(days=5))] * n, pa.int64()).cast(
            pa.timestamp("us", "UTC")),
    }).cast(ENROLLMENTS.arrow())


def truth(w: LiftWorld) -> pa.Table:
    camp = campaign_columns(w)
    prm = w.params
    return pa.table({**{k: pa.array(v) for k, v in camp.items()}, "market": prm.market.to_numpy(),
                     "surface": prm.surface.to_numpy(), "planted_lift": prm.planted_lift.to_numpy(),
                     "trended": prm.trended.to_numpy(), "population": prm.pop_size.to_numpy()})


def config_toml(spec: LiftWorldSpec, **extra) -> str:
    values = {"holdout_share": spec.holdout_share, "holdout_salt": spec.holdout_salt,
              "lift_window_days": spec.window_days, "lift_pre_days": spec.pre_days, **extra}
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


def write_lift_world(out: str, spec: LiftWorldSpec, **config_extra) -> dict:
    """Write every day from `pre_days` before the flight to `spec.as_of`."""
    w = build_world(spec)
    drawn = draw_plays(w)
    first = spec.flight_start - dt.timedelta(days=spec.pre_days)
    days = [first + dt.timedelta(days=i) for i in range((spec.as_of - first).days + 1)]
    rows = {"engagement": 0, "exposures": 0}
    for d in days:
        engagement, exposures, enrollments = day_tables(w, drawn, d)
        for name, table in (("engagement", engagement), ("exposures", exposures), ("enrollments", enrollments)):
            folder = os.path.join(out, name, f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            pq.write_table(table, os.path.join(folder, "part-00000.parquet"))
            rows[name] = rows.get(name, 0) + table.num_rows
    os.makedirs(os.path.join(out, "truth"), exist_ok=True)
    pq.write_table(truth(w), os.path.join(out, "truth", "lift.parquet"))
    with open(os.path.join(out, "oasis.toml"), "w") as f:
        f.write(config_toml(spec, **config_extra))
    with open(os.path.join(out, "LAST_DAY"), "w") as f:
        f.write(spec.as_of.isoformat() + "\n")
    return {"out": out, "first_day": first.isoformat(), "last_day": spec.as_of.isoformat(), "days": len(days),
            "campaigns": len(w.params), **rows}
