"""Enrollments and campaigns of docs/design.md §4: which enrollment row speaks for a
track, the candidates of a market, and each campaign's fair-delivery floor with
its pacing multiplier."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrays import group_sum, sorted_codes
from pipelines.config import Config
from pipelines.scoring.signals import dates, daynum, daynums
from schemas import PROMOTION_SURFACES


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
class Candidates:
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


def candidates(enrolled: pd.DataFrame, score_date: dt.date) -> Candidates:
    start, end = daynums(enrolled["start_date"]), daynums(enrolled["end_date"])
    pos = _chosen_positions(enrolled, start, end, daynum(score_date))

    def column(name):
        return enrolled[name].to_numpy()[pos]

    return Candidates(
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


def campaign_floors(campaign: np.ndarray, live: np.ndarray, eligible: np.ndarray, upper: np.ndarray,
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


DELIVERY_COLUMNS = ("campaign_id", "market", "surface", "flight_start", "flight_end", "delivered_to_date",
                    "floor", "planned", "shortfall", "pacing_multiplier", "licensor_id",
                    "eligible_tracks", "max_boost")


def delivery_frame(market: str, camp: dict, campaign_ids: np.ndarray,
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
