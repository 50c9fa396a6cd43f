"""score_drift compares like with like (jobs.gates.drift): only rows eligible
in both snapshots with the same (track, market, surface, campaign), each
against its own previous score. Planted tables whose answer is known."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from jobs.gates import drift
from pipelines.config import Config

N = 400


def scores(campaign: str, score: np.ndarray, eligible: np.ndarray | None = None) -> pa.Table:
    n = len(score)
    return pa.table({"track_id": [f"t{i}" for i in range(n)], "market": ["US"] * n, "surface": ["radio"] * n,
                     "campaign_id": [campaign] * n,
                     "eligible": eligible if eligible is not None else np.ones(n, bool), "score": score})


def previous(t: pa.Table) -> drift.Previous:
    return drift.Previous("score_date=2026-10-31/x", "2026-10-31", {"promotion_scores": t.num_rows},
                          t.filter(t.column("eligible")).select(drift.MATCH + ["score"]))


def bimodal(rng, n=N) -> np.ndarray:
    """Like the sample's scores: mostly 0 or 1, some at the floor (~0.1)."""
    return rng.choice([0.0, 0.1, 1.0], size=n, p=[0.35, 0.1, 0.55])


def gate(before: pa.Table, now: pa.Table):
    return drift.score_drift(now, previous(before), "previous snapshot x", Config(), dt.date(2026, 11, 1))


def test_a_flight_change_is_left_out_and_said():
    """Every campaign replaced on the 1st with new floors and pacing: the scores
    move (all rows' PSI is far above 0.25), but none is comparable."""
    rng = np.random.default_rng(1)
    before = scores("cmp-2026-10", bimodal(rng))
    now = scores("cmp-2026-11", rng.choice([0.0, 0.25, 1.0], size=N, p=[0.3, 0.2, 0.5]))
    all_rows = drift.population_stability_index(before.column("score").to_numpy(), now.column("score").to_numpy())
    assert all_rows > 0.25
    r = gate(before, now)
    assert r.passed and r.measured is None
    assert r.basis["compared"] == 0 and r.basis["campaign_changed"] == N and r.basis["days_apart"] == 1
    assert "another campaign (a new flight)" in r.detail


def test_a_real_shift_of_unchanged_rows_fails_and_noise_does_not():
    rng = np.random.default_rng(2)
    s = bimodal(rng)
    before = scores("cmp-2026-11", s)
    # day-to-day noise: 3% of rows change state
    noisy = s.copy()
    flip = rng.random(N) < 0.03
    noisy[flip] = bimodal(rng, int(flip.sum()))
    r = gate(before, scores("cmp-2026-11", noisy))
    assert r.passed and 0.0 <= r.measured < 0.05 and r.basis["compared"] == N
    # a real shift: half the rows at their cap drop to 0 (e.g. capacity cut)
    shifted = s.copy()
    at_cap = np.flatnonzero(s == 1.0)
    shifted[at_cap[: len(at_cap) // 2]] = 0.0
    r = gate(before, scores("cmp-2026-11", shifted))
    assert not r.passed and r.measured > 0.25 and r.basis["compared"] == N


def test_rows_not_eligible_before_are_left_out_and_few_comparable_rows_are_not_compared():
    rng = np.random.default_rng(3)
    s = bimodal(rng)
    eligible_before = np.zeros(N, bool)
    eligible_before[: drift.PSI_MIN_ROWS - 1] = True
    r = gate(scores("c", s, eligible_before), scores("c", np.zeros(N)))
    assert r.passed and r.measured is None
    assert r.basis["compared"] == drift.PSI_MIN_ROWS - 1 and r.basis["not_eligible_before"] == N - r.basis["compared"]
    assert f"fewer than {drift.PSI_MIN_ROWS}" in r.detail


def test_the_gate_names_its_basis_and_compares_from_psi_min_rows_on():
    """The result word for word: name, threshold and basis (what was compared
    with what); exactly PSI_MIN_ROWS comparable rows are compared."""
    rng = np.random.default_rng(2)
    s = bimodal(rng)
    r = gate(scores("c", s), scores("c", s))
    assert (r.name, r.passed, r.measured, r.threshold) == ("score_drift", True, 0.0, Config().gate_max_score_psi)
    assert r.basis == {"previous": "score_date=2026-10-31/x", "previous_score_date": "2026-10-31",
                       "rows": "eligible in both, same track, market, surface and campaign", "eligible_now": N,
                       "eligible_before": N, "compared": N, "campaign_changed": 0, "not_eligible_before": 0,
                       "days_apart": 1}
    eligible_before = np.zeros(N, bool)
    eligible_before[: drift.PSI_MIN_ROWS] = True
    r = gate(scores("c", s, eligible_before), scores("c", s))
    assert r.basis["compared"] == drift.PSI_MIN_ROWS and r.measured == 0.0 and r.detail.startswith("PSI 0.0000")
    none = drift.score_drift(scores("c", s), None, "no previous snapshot to compare with", Config())
    assert (none.name, none.passed, none.measured, none.threshold, none.detail) == (
        "score_drift", True, None, Config().gate_max_score_psi, "not compared: no previous snapshot to compare with")
