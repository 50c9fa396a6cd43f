"""The published plan against the exact LP optimum, and the estimates against
a sample world's planted truth."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from jobs.cli import main as cli
from pipelines.allocation import problem as allocation
from pipelines.allocation import verify as yardstick
from pipelines.allocation.instances import random_problem
from pipelines.allocation.solve import solve
from tests.support import worlds

DAY = worlds.END.isoformat()
SCORE_DATE = worlds.END + dt.timedelta(days=1)
TOL = 1e-6

# Tight caps and high floors so that every constraint family binds somewhere.
TIGHT = """
promoted_share_cap = 0.03
artist_share_cap = 0.12
licensor_share_cap = 0.3
floor_fraction = 0.6
min_window_plays = 5
"""


def _binding(rb: yardstick.Rebuilt) -> set[str]:
    p, x = rb.problem, rb.x
    fam = set()
    if p.capacity > 0 and x.sum() >= p.capacity * (1 - 1e-6):
        fam.add("capacity")
    if np.any((p.upper > 0) & (x >= p.upper * (1 - 1e-6))):
        fam.add("track")
    if len(x) and np.bincount(p.artist, weights=x).max() >= p.artist_cap * (1 - 1e-6) > 0:
        fam.add("artist")
    if len(x) and np.bincount(p.licensor, weights=x).max() >= p.licensor_cap * (1 - 1e-6) > 0:
        fam.add("licensor")
    per_c = np.bincount(p.campaign, weights=x, minlength=len(p.floors))
    if np.any((p.floors > 0) & (per_c <= p.floors * (1 + 1e-6))):
        fam.add("floor")
    return fam


def test_published_plan_is_within_half_a_percent_of_the_exact_optimum(tmp_path):
    w = worlds.make_world(str(tmp_path / "w"), days=6, tracks=160, events_per_day=12000, seed=3)
    cfg = tmp_path / "tight.toml"
    cfg.write_text(TIGHT)
    out = str(tmp_path / "out")
    assert cli.main(["run", "--date", DAY, "--input", w, "--output", out, "--config", str(cfg)]) == 0
    (snap,) = worlds.snapshot_dirs(out)
    rebuilt = yardstick.rebuild(worlds.table(snap, "promotion_scores"), worlds.table(snap, "campaign_delivery"),
                                worlds.table(snap, "capacity"))
    assert len(rebuilt) >= 6
    seen = set()
    for rb in rebuilt:
        published, optimum, violations = yardstick.gap(rb)
        assert violations == [], (rb.market, rb.surface, violations)
        assert yardstick.relative_gap(published, optimum) <= 0.005, (rb.market, rb.surface, published, optimum)
        seen |= _binding(rb)
    assert seen == {"capacity", "track", "artist", "licensor", "floor"}


def _publish_random(problem: allocation.Problem, method: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The published columns of one (market, surface) solved by the production
    solver, in the shape of DESIGN §5."""
    sol = solve(problem, method=method)
    n = len(problem.value)
    scores = pd.DataFrame({
        "market": "XX", "surface": "radio", "track_id": [f"t{i:05d}" for i in range(n)],
        "artist_id": [f"a{c:04d}" for c in problem.artist], "licensor_id": [f"l{c:04d}" for c in problem.licensor],
        "campaign_id": [f"c{c:04d}" for c in problem.campaign], "value": problem.value,
        "max_promoted_plays": problem.upper, "planned_promoted_plays": sol.x})
    delivery = pd.DataFrame({"market": "XX", "surface": "radio",
                             "campaign_id": [f"c{c:04d}" for c in range(len(problem.floors))],
                             "floor": problem.floors, "shortfall": sol.shortfall})
    capacity = pd.DataFrame([{"market": "XX", "surface": "radio", "capacity": problem.capacity,
                              "artist_cap": problem.artist_cap, "licensor_cap": problem.licensor_cap,
                              "shortfall_penalty": problem.penalty}])
    return scores, delivery, capacity


@pytest.mark.parametrize("seed", range(6))
def test_random_binding_instances_rebuilt_from_columns_meet_the_optimum(seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, n_tracks=300, n_artists=40, n_licensors=8, n_campaigns=12,
                                        binding=True)
    (rb,) = yardstick.rebuild(*_publish_random(problem, "exact"))
    published, optimum, violations = yardstick.gap(rb)
    assert violations == []
    assert yardstick.relative_gap(published, optimum) <= 0.005
    assert _binding(rb) == {"capacity", "track", "artist", "licensor", "floor"}


@pytest.fixture(scope="module")
def estimation_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("est")
    w = worlds.make_world(str(root / "w"), days=21, tracks=120, events_per_day=30000, seed=21, markets=3)
    out = str(root / "out")
    assert cli.main(["run", "--date", DAY, "--input", w, "--output", out]) == 0
    (snap,) = worlds.snapshot_dirs(out)
    scores = worlds.table(snap, "promotion_scores")
    truth = pq.read_table(f"{w}/truth/tracks.parquet").to_pandas()
    return scores.merge(truth, on=["track_id", "market", "surface"], suffixes=("", "_truth"))


def test_skip_rate_ranks_like_the_planted_skip_probability(estimation_run):
    rows = estimation_run[estimation_run["plays"] >= 150]
    assert len(rows) >= 30
    rho = spearmanr(rows["skip_rate"], rows["skip_prob"]).statistic
    assert rho >= 0.85, rho


def test_planted_disliked_tracks_are_pulled_back(estimation_run):
    m = estimation_run
    # tracks that would be eligible but for their listeners: campaign live, surface enrolled, old enough
    candidates = m[m["disliked"] & (m["reason"].isna() | (m["reason"] == "listeners_dislike"))]
    per_track = candidates.groupby(["track_id", "market"])["reason"].apply(
        lambda r: bool((r == "listeners_dislike").all()))
    assert len(per_track) >= 5
    assert per_track.mean() >= 0.9, per_track


def test_young_tracks_are_never_eligible(estimation_run):
    m = estimation_run
    young = m[(SCORE_DATE - pd.to_datetime(m["release_date"]).dt.date).map(lambda d: d.days) < 30]
    assert len(young) > 0
    assert not young["eligible"].any()
    assert (young["planned_promoted_plays"] == 0).all()
