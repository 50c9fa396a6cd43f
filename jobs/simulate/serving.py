"""One simulated day of engagement: the sample world's organic plays
(`jobs.sample.events`), then serving's answer to the day's boosts.

`serve_day(world, enrollments, truth, boosts, day, ...)` is a function of the
world, the day's boosts (the published plan's boost probabilities,
`plan_boosts`, or the warm-up's flat share, `warm_up_boosts`), the day and the
planted truth, and nothing else: seeded by (seed, day), so a day regenerated
from the same plan is the same table.

Serving's model, per boosted (track, market, surface) cell with O organic
plays that day (the plays the track would have had without the boost: the
opportunities), response a = g * h(b) (`jobs.simulate.truth`) and campaign
lift l: it delivers about a promoted plays per organic play that is left,
P / (O - D) = a, where

* D ~ Binomial(O, a(1 - l) / (1 + a(1 - l))) organic plays are displaced: the
  listener plays the track anyway, now as a promoted play (the row is
  relabelled promoted, with the plan's campaign);
* I ~ Poisson(l * a * O / (1 + a(1 - l))) promoted plays are incremental: new
  rows, copies of a random organic play of the cell (same listener, a minute
  or two later) with a new event id.

So promoted plays are P = D + I, a share l of them incremental, and the
organic plays the pipeline sees, O - D, are what the next forecast learns
from. Only rows that keep the input contract are candidates (bad rows are
dead-lettered by the pipeline anyway), and a resent duplicate carries its
original's labels.

Extension points (the campaign-lift issue: holdout listeners, exposures):

* `listener_ok` (a row mask, default all): rows whose listener may be boosted.
  A holdout assignment (a hash of salt, user, market and month) plugs in here:
  holdout rows are never displaced and never copied into incremental plays.
* `ServedDay.promoted_rows` / `candidate_rows`: the row indexes serving
  boosted and the candidates of boosted cells; an exposures table (`treated`
  for promoted rows, `ghost` for the holdout candidates that would have been
  boosted) is built from them and the events table.
* `Truth.lift` (per campaign) is the planted incremental share; a holdout
  estimate of lift compares the candidates' plays with and without boosts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.sample.draws import EPOCH, hex_strings, mix
from jobs.sample.events import events_for_day
from jobs.sample.supply import day_plan
from jobs.sample.world import Enrollments, World, active_for_day
from jobs.simulate.truth import Truth
from pipelines import contract
from schemas import PROMOTION_SURFACES

N_PROMO = len(PROMOTION_SURFACES)
US = 1_000_000
CELL_COLUMNS = ("track_id", "market", "surface", "campaign_id", "boost_probability", "gain", "response", "lift",
                "organic", "displaced", "incremental")


@dataclass
class Boosts:
    """The boosted (track, market, surface) cells of one day, sorted by `key`."""
    track: np.ndarray          # index into World.track_dict
    market: np.ndarray         # index into World.codes
    surface: np.ndarray        # index into PROMOTION_SURFACES
    campaign: np.ndarray       # index into Enrollments.campaign_ids
    boost: np.ndarray          # the boost probability serving read (NaN during the warm-up)
    gain: np.ndarray           # the planted gain of the cell's (market, surface) that day
    response: np.ndarray       # a: promoted plays per organic play
    lift: np.ndarray           # the campaign's planted incremental share

    @property
    def key(self) -> np.ndarray:
        return cell_key(self.track, self.market, self.surface, self.markets)

    markets: int = 0

    @classmethod
    def build(cls, truth: Truth, day: dt.date, track, market, surface, campaign, boost, response=None,
              markets: int = 0) -> "Boosts":
        gain = truth.gain_on(day)[market, surface]
        response = truth.response(boost, gain) if response is None else response
        lift = np.where(campaign >= 0, truth.lift[np.maximum(campaign, 0)], 0.0)
        b = cls(track.astype(np.int64), market.astype(np.int64), surface.astype(np.int64), campaign.astype(np.int64),
                np.asarray(boost, float), gain, np.asarray(response, float), lift, markets)
        order = np.argsort(b.key, kind="stable")
        return cls(*(getattr(b, f)[order] for f in ("track", "market", "surface", "campaign", "boost", "gain",
                                                     "response", "lift")), markets)


def cell_key(track, market, surface, markets: int) -> np.ndarray:
    return (np.asarray(track, np.int64) * markets + market) * N_PROMO + surface


def plan_boosts(w: World, e: Enrollments, truth: Truth, scores: pa.Table, day: dt.date) -> Boosts:
    """The cells a published plan boosts on `day` (promotion_scores rows with a
    boost probability above 0), with serving's response to each."""
    rows = scores.filter(pc.greater(scores.column("boost_probability"), 0.0))
    track = _index(rows.column("track_id"), w.track_dict)
    market = _index(rows.column("market"), pa.array(w.codes))
    surface = _index(rows.column("surface"), pa.array(PROMOTION_SURFACES))
    campaign = _index(rows.column("campaign_id"), e.campaign_ids)
    known = (track >= 0) & (market >= 0) & (surface >= 0)
    boost = rows.column("boost_probability").to_numpy()
    return Boosts.build(truth, day, track[known], market[known], surface[known], campaign[known], boost[known],
                        markets=len(w.codes))


def warm_up_boosts(w: World, e: Enrollments, truth: Truth, day: dt.date) -> Boosts:
    """Before the loop: every (track, market) whose campaign is active on `day`,
    on each surface it is enrolled on, at the flat warm-up share."""
    pair_camp, pair_surf = active_for_day(w, e, day)
    pair, surface = np.nonzero((pair_camp[:, None] >= 0) & (((pair_surf[:, None] >> np.arange(N_PROMO)) & 1) == 1))
    n = len(pair)
    return Boosts.build(truth, day, w.pair_track[pair], w.pair_market[pair], surface, pair_camp[pair],
                        np.full(n, np.nan), response=np.full(n, truth.warm_up_share), markets=len(w.codes))


def _index(column, values: pa.Array) -> np.ndarray:
    return pc.index_in(column, value_set=values).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass
class ServedDay:
    events: pa.Table
    cells: pa.Table                       # the day's truth per boosted cell (CELL_COLUMNS)
    stats: dict = field(default_factory=dict)
    promoted_rows: np.ndarray | None = None   # rows of `events` serving boosted (relabelled or added)
    candidate_rows: np.ndarray | None = None  # organic rows of boosted cells that could be boosted


def organic_events(w: World, e: Enrollments, day: dt.date, events_per_day: int, bad_row_share: float) -> pa.Table:
    """The sample world's plays of `day` without any promotion: the sample
    generator adds promoted plays on top of the organic ones, so it is asked
    for the day's plan with none (`jobs.sample.supply.day_plan`); the labels are
    cleared as well, so no play arrives promoted whatever the generator does."""
    pair_camp, pair_surf = active_for_day(w, e, day)
    plan = day_plan(w, events_per_day, day, pair_camp, pair_surf)
    plan = dataclasses.replace(plan, promoted=np.zeros_like(plan.promoted))
    table, _, _ = events_for_day(w, e, day, events_per_day, bad_row_share, plan=plan)
    i_promoted, i_campaign = table.schema.get_field_index("promoted"), table.schema.get_field_index("campaign_id")
    table = table.set_column(i_promoted, table.schema.field(i_promoted),
                             pa.array(np.zeros(table.num_rows, dtype=bool)))
    return table.set_column(i_campaign, table.schema.field(i_campaign), pa.nulls(table.num_rows, pa.string()))


def serve_day(w: World, e: Enrollments, truth: Truth, boosts: Boosts, day: dt.date, *, events_per_day: int,
              bad_row_share: float, slack_hours: float, listener_ok: np.ndarray | None = None) -> ServedDay:
    table = organic_events(w, e, day, events_per_day, bad_row_share)
    rng = np.random.default_rng([w.seed, 12, 1, day.toordinal()])
    n = table.num_rows

    # candidates: rows that keep the contract, first of their event id, in a boosted cell
    valid = pc.is_null(contract.check_engagement(table, day, slack_hours)).to_numpy(zero_copy_only=False)
    event = table.column("event_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    first_of = np.unique(event, return_index=True)[1]      # the first row of each event id (codes are 0..k-1)
    first = first_of[event] == np.arange(n)
    track = _index(table.column("track_id"), w.track_dict)
    market = _index(table.column("market"), pa.array(w.codes))
    surface = _index(table.column("surface"), pa.array(PROMOTION_SURFACES))
    keys = boosts.key
    row_key = cell_key(track, market, surface, len(w.codes))
    pos = np.minimum(np.searchsorted(keys, row_key), max(len(keys) - 1, 0))
    in_cell = (track >= 0) & (market >= 0) & (surface >= 0) & (len(keys) > 0)
    in_cell &= keys[pos] == row_key if len(keys) else False
    ok = valid & first & in_cell & (listener_ok if listener_ok is not None else True)
    candidate = np.flatnonzero(ok)
    cell = pos[candidate]
    organic = np.bincount(cell, minlength=len(keys))

    # displaced organic plays: relabelled promoted, with the cell's campaign
    a, lift = boosts.response, boosts.lift
    keep = a * (1.0 - lift)
    p_displace = keep / (1.0 + keep)
    displaced = candidate[rng.random(len(candidate)) < p_displace[cell]]
    campaign = np.full(n, -1, dtype=np.int64)
    campaign[displaced] = boosts.campaign[pos[displaced]]
    dup = ~first
    campaign[dup] = campaign[first_of[event[dup]]]          # a resent copy says what its original says

    # incremental promoted plays: copies of a random candidate of the cell, a little later
    n_inc = rng.poisson(lift * a * organic / (1.0 + keep))
    starts = np.concatenate([[0], np.cumsum(organic)[:-1]])
    by_cell = candidate[np.argsort(cell, kind="stable")]
    inc_cell = np.repeat(np.arange(len(keys)), n_inc)
    src = by_cell[starts[inc_cell] + (rng.random(len(inc_cell)) * organic[inc_cell]).astype(np.int64)]
    promoted = campaign >= 0
    events = _with_campaign(table, promoted, campaign, e)
    added = _incremental_rows(table, src, boosts.campaign[inc_cell], e, day, rng)
    out = pa.concat_tables([events, added])

    n_disp = np.bincount(pos[displaced], minlength=len(keys))
    cells = pa.table({
        "track_id": w.track_dict.take(pa.array(boosts.track)),
        "market": pa.array(w.codes).take(pa.array(boosts.market)),
        "surface": pa.array(PROMOTION_SURFACES).take(pa.array(boosts.surface)),
        "campaign_id": e.campaign_ids.take(pa.array(np.maximum(boosts.campaign, 0), mask=boosts.campaign < 0)),
        "boost_probability": pa.array(boosts.boost, pa.float64(), from_pandas=True),
        "gain": pa.array(boosts.gain), "response": pa.array(boosts.response), "lift": pa.array(lift),
        "organic": pa.array(organic.astype(np.int64)), "displaced": pa.array(n_disp.astype(np.int64)),
        "incremental": pa.array(n_inc.astype(np.int64)),
    })
    stats = {"events": out.num_rows, "promoted": int(promoted[first & valid].sum()) + len(src),
             "displaced": len(displaced), "incremental": len(src), "boosted_cells": len(keys)}
    return ServedDay(out, cells, stats,
                     promoted_rows=np.concatenate([np.flatnonzero(promoted), n + np.arange(len(src))]),
                     candidate_rows=candidate)


def _with_campaign(table: pa.Table, promoted: np.ndarray, campaign: np.ndarray, e: Enrollments) -> pa.Table:
    i_promoted, i_campaign = table.schema.get_field_index("promoted"), table.schema.get_field_index("campaign_id")
    table = table.set_column(i_promoted, table.schema.field(i_promoted), pa.array(promoted))
    return table.set_column(i_campaign, table.schema.field(i_campaign),
                            e.campaign_ids.take(pa.array(np.maximum(campaign, 0), mask=campaign < 0)))


def _incremental_rows(table: pa.Table, src: np.ndarray, campaign: np.ndarray, e: Enrollments, day: dt.date,
                      rng: np.random.Generator) -> pa.Table:
    """New promoted plays copied from organic rows `src`: a new event id (its own
    name space, "s" + 16 hex), 5 to 120 s after the original."""
    rows = table.take(pa.array(src, pa.int64()))
    k = len(src)
    day_num = np.uint64((day - EPOCH).days)
    ids = hex_strings("s", mix((day_num << np.uint64(32)) | np.arange(k, dtype=np.uint64), 64), 16)
    ts = rows.column("event_ts").cast(pa.int64()).to_numpy() + rng.integers(5 * US, 120 * US, k)
    cols = {name: rows.column(name) for name in table.column_names}  # the day's columns (no holdout flag here)
    cols.update({"event_id": ids, "event_ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                 "promoted": pa.array(np.ones(k, dtype=bool)),
                 "campaign_id": e.campaign_ids.take(pa.array(np.maximum(campaign, 0), mask=campaign < 0))})
    return pa.Table.from_arrays([cols[c] for c in table.column_names], schema=table.schema)
