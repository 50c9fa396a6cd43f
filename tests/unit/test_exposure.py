"""Fair exposure (jobs/report/exposure.py): the deciles are SQL's NTILE(10), the
Gini coefficient is the mean absolute difference over all pairs, and the
shares add up."""
from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.report import exposure


@given(n=st.integers(0, 45))
@settings(max_examples=46, deadline=None)
def test_ntile_is_sqls(n):
    sql = duckdb.sql(f"SELECT NTILE(10) OVER (ORDER BY i) FROM range({n}) AS t(i) ORDER BY i").fetchall()
    assert list(exposure.ntile(n)) == [r[0] for r in sql]


@given(x=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_gini_is_the_mean_absolute_difference(x):
    x = np.array(x)
    if x.sum() <= 0:
        assert exposure.gini(x) is None
        return
    pairs = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) * x.sum())
    assert exposure.gini(x) == pytest.approx(pairs, abs=1e-12)


def test_known_values():
    assert exposure.gini(np.ones(5)) == 0.0
    assert exposure.gini(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(0.75)  # (n-1)/n: all to one
    assert exposure.gini(np.zeros(3)) is None


def test_shares_add_up_and_deciles_follow_size():
    rng = np.random.default_rng(4)
    n = 400
    scores = pd.DataFrame({
        "score_date": dt.date(2026, 11, 25), "market": rng.choice(["GB", "US"], n),
        "surface": rng.choice(["radio", "mixes"], n), "artist_id": [f"a{i}" for i in rng.integers(0, 60, n)],
        "eligible": rng.random(n) < 0.6, "supply_forecast": rng.lognormal(2, 1, n)})
    scores["planned_promoted_plays"] = np.where(scores["eligible"], rng.random(n), 0.0)
    deciles, summary = exposure.fair_exposure(scores)
    for _, g in deciles.groupby(["market", "surface"]):
        assert g["planned_share"].sum() == pytest.approx(1.0)
        assert g["eligible_track_share"].sum() == pytest.approx(1.0)
        assert list(g["size_decile"]) == list(range(1, len(g) + 1))
    per = exposure.artists(scores)
    for _, g in per.groupby(["market", "surface"]):
        # a larger decile number never holds a smaller artist
        top_of = g.groupby("size_decile")["organic_plays"].max()
        bottom_of = g.groupby("size_decile")["organic_plays"].min()
        assert (bottom_of.to_numpy()[1:] >= top_of.to_numpy()[:-1]).all()
    assert (summary["artists"] == per.groupby(["market", "surface"]).size().to_numpy()).all()
