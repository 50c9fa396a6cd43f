"""Fair exposure: who gets the planned promotion, from `promotion_scores` alone.

Per (score date, market, surface), over the artists with at least one eligible
row there:

* an artist's size is the forecast organic plays (`supply_forecast`) of its
  enrolled tracks on the surface; artists fall into size deciles 1 (smallest)
  to 10 as SQL's `NTILE(10) OVER (ORDER BY size, artist_id)` puts them (the
  first n mod 10 deciles get one artist more; with fewer than 10 artists only
  the first n deciles exist);
* per decile: its share of the planned promoted plays against its share of the
  eligible enrolled tracks (a decile that gets more plays than tracks is
  favoured by the plan);
* the Gini coefficient of planned promoted plays across those artists,
  G = Σ_i (2i − n − 1)·x_(i) / (n·Σ x) with x ascending (0: every artist gets
  the same; near 1: one artist gets it all); undefined when nothing is planned.

The warehouse view `fair_exposure` computes the same with the same rules
(`jobs.warehouse.base`); the run report shows it per (market, surface).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DECILES = 10
SCORE_COLUMNS = ["score_date", "market", "surface", "artist_id", "eligible", "supply_forecast",
                 "planned_promoted_plays"]
GROUP = ["score_date", "market", "surface"]


def ntile(n: int, buckets: int = DECILES) -> np.ndarray:
    """SQL's NTILE(buckets) over n ordered rows: bucket numbers from 1, the
    first n mod buckets buckets one row larger than the rest."""
    size, extra = divmod(n, buckets)
    sizes = np.array([size + 1] * extra + [size] * (buckets - extra))
    return np.repeat(np.arange(1, buckets + 1), sizes)[:n]


def gini(planned: np.ndarray) -> float | None:
    x = np.sort(np.asarray(planned, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total <= 0:
        return None
    return float(np.dot(2 * np.arange(1, n + 1) - n - 1, x) / (n * total))


def artists(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (score date, market, surface, artist with an eligible row): size,
    eligible tracks, planned plays and size decile."""
    s = scores[SCORE_COLUMNS]
    per = (s.assign(eligible_tracks=s["eligible"].astype(np.int64))
           .groupby(GROUP + ["artist_id"], as_index=False, sort=True)
           .agg(organic_plays=("supply_forecast", "sum"), eligible_tracks=("eligible_tracks", "sum"),
                planned=("planned_promoted_plays", "sum")))
    per = per[per["eligible_tracks"] > 0].sort_values(GROUP + ["organic_plays", "artist_id"])
    per["size_decile"] = np.concatenate([ntile(len(g)) for _, g in per.groupby(GROUP, sort=False)]
                                        or [np.zeros(0, np.int64)])
    return per.reset_index(drop=True)


def fair_exposure(scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per (score date, market, surface, size decile), one row per
    (score date, market, surface) with its Gini coefficient and artists)."""
    per = artists(scores)
    by_decile = (per.groupby(GROUP + ["size_decile"], as_index=False)
                 .agg(artists=("artist_id", "size"), eligible_tracks=("eligible_tracks", "sum"),
                      planned_promoted_plays=("planned", "sum")))
    totals = by_decile.groupby(GROUP)[["eligible_tracks", "planned_promoted_plays"]].transform("sum")
    by_decile["eligible_track_share"] = by_decile["eligible_tracks"] / totals["eligible_tracks"]
    by_decile["planned_share"] = (by_decile["planned_promoted_plays"]
                                  / totals["planned_promoted_plays"].where(totals["planned_promoted_plays"] > 0))
    summary = (per.groupby(GROUP, as_index=False)
               .agg(artists=("artist_id", "size"), planned_promoted_plays=("planned", "sum"),
                    gini=("planned", lambda x: gini(x.to_numpy()))))
    return by_decile, summary
