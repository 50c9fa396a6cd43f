"""Every publish gate (jobs/gates/checks.py, drift.py) seen passing AND failing
on small hand-made tables, each failure asserting the gate's name, its measured
value and its threshold, and the edges of each comparison (a value just inside
the tolerance passes, one just outside fails). The same gates run on a real
run's tables in tests/integration/test_gates.py; here they are fast enough for
`make mutation`, and every case names the broken gate it catches."""
from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import layout
from jobs.gates import checks, drift, suite
from jobs.manifest import GateResult, Inputs, Manifest, blocking_gates
from jobs.snapshots import store
from pipelines.config import Config
from pipelines.contract import InputFileError
from schemas import ENROLLMENTS, OUTPUTS

SCORE_DATE = dt.date(2026, 11, 25)
TOL = checks.TOL


def scores_table(**cols) -> pa.Table:
    """promotion_scores of 6 rows, 2 tracks x 3 surfaces in market XX: track a
    eligible (x below its cap), track b ineligible (x = 0, score 0, a reason)."""
    n = 6
    base = dict(
        score_date=[SCORE_DATE] * n, snapshot_id=["s1"] * n,
        track_id=["a", "a", "a", "b", "b", "b"], market=["XX"] * n,
        surface=["radio", "autoplay", "mixes"] * 2, campaign_id=["c1"] * 3 + ["c2"] * 3,
        artist_id=["ar1"] * 3 + ["ar2"] * 3, licensor_id=["l1"] * n,
        eligible=[True] * 3 + [False] * 3, reason=[None] * 3 + ["too_few_plays"] * 3,
        plays=[100] * 3 + [3] * 3, skip_rate=[0.2] * n, save_rate=[0.1] * n, value=[0.01] * n,
        supply_forecast=[50.0] * n, max_promoted_plays=[10.0] * 3 + [0.0] * 3,
        planned_promoted_plays=[5.0, 10.0, 0.0, 0.0, 0.0, 0.0], boost_probability=[0.1, 0.2, 0, 0, 0, 0],
        score=[0.5, 1.0, 0.0, 0.0, 0.0, 0.0], skips=[20] * n, saves=[10] * n, weighted_plays=[80.0] * n,
        release_date=[dt.date(2026, 1, 1)] * n, flight_end=[dt.date(2026, 11, 30)] * n)
    base.update(cols)
    schema = OUTPUTS["promotion_scores"].arrow()  # the nullable extras these gates do not read: null
    return pa.table({f.name: pa.array(base[f.name] if f.name in base else [None] * n, f.type) for f in schema},
                    schema=schema)


def capacity_table(**cols) -> pa.Table:
    n = 3
    base = dict(score_date=[SCORE_DATE] * n, snapshot_id=["s1"] * n, market=["XX"] * n,
                surface=["radio", "autoplay", "mixes"], total_forecast=[1000.0] * n,
                promoted_share_cap=[0.05] * n, capacity=[50.0] * n, artist_cap=[10.0] * n,
                licensor_cap=[20.0] * n, shortfall_penalty=[100.0] * n, planned_total=[5.0, 10.0, 0.0],
                shadow_price=[0.0] * n, baseline_skip_rate=[0.2] * n, baseline_save_rate=[0.1] * n,
                prior_strength_skip=[50.0] * n, prior_strength_save=[50.0] * n, candidates=[2] * n,
                eligible_rows=[1] * n)
    base.update(cols)
    schema = OUTPUTS["capacity"].arrow()  # the nullable extras these gates do not read: null
    return pa.table({f.name: pa.array(base[f.name] if f.name in base else [None] * n, f.type) for f in schema},
                    schema=schema)


def delivery_table(**cols) -> pa.Table:
    base = dict(score_date=[SCORE_DATE], snapshot_id=["s1"], campaign_id=["c1"], market=["XX"],
                surface=["radio"], flight_start=[dt.date(2026, 11, 1)], flight_end=[dt.date(2026, 11, 30)],
                delivered_to_date=[40.0], floor=[3.0], planned=[5.0], shortfall=[0.0],
                pacing_multiplier=[1.0], licensor_id=["l1"], eligible_tracks=[1], max_boost=[10.0])
    base.update(cols)
    return pa.table(base, schema=OUTPUTS["campaign_delivery"].arrow())


def tables(**changes) -> dict[str, pa.Table]:
    t = {"promotion_scores": scores_table(), "campaign_delivery": delivery_table(), "capacity": capacity_table()}
    t.update(changes)
    return t


def expected_keys(pairs=(("a", "XX"), ("b", "XX"))) -> pa.Table:
    rows = [(t, m, s) for t, m in pairs for s in ("radio", "autoplay", "mixes")]
    return pa.table({"track_id": [r[0] for r in rows], "market": [r[1] for r in rows],
                     "surface": [r[2] for r in rows]})


def gates(cfg=None, previous=None, expected=True, skip=(), **changes) -> dict[str, GateResult]:
    res = suite.check_snapshot(tables(**changes), cfg or Config(), previous=previous,
                               expected_keys=expected_keys() if expected is True else expected, skip=skip)
    return {r.name: r for r in res}


def only_failed(res: dict[str, GateResult]) -> list[str]:
    return blocking_gates(list(res.values()))


PREV_NAME = "score_date=2026-11-24/s0"  # as LATEST names the previous snapshot of _previous below


def eligible_scores_table(scores) -> pa.Table:
    """promotion_scores with one eligible radio row per score (tracks t0, t1, ...):
    enough rows for score_drift to compare (it needs drift.PSI_MIN_ROWS)."""
    base = scores_table().slice(0, 1).to_pylist()[0]
    rows = [dict(base, track_id=f"t{i}", surface="radio", score=float(v)) for i, v in enumerate(scores)]
    return pa.Table.from_pylist(rows, schema=OUTPUTS["promotion_scores"].arrow())


def prev_of(rows=None, table=None) -> drift.Previous:
    """What the drift gates read of a previous snapshot, built in memory: its row
    counts and its eligible rows (of `table`, by default scores_table())."""
    t = table if table is not None else scores_table()
    eligible = t.filter(pc.fill_null(t.column("eligible"), False)).select(drift.MATCH + ["score"])
    return drift.Previous(PREV_NAME, "2026-11-24", rows if rows is not None else {"promotion_scores": 6}, eligible)


# ------------------------------------------------------------- the clean day ---
def test_clean_tables_pass_every_gate_in_registry_order():
    res = suite.check_snapshot(tables(), Config(), expected_keys=expected_keys())
    assert [r.name for r in res] == list(checks.GATES)
    assert all(r.passed and not r.skipped for r in res), [r for r in res if not r.passed]
    by = {r.name: r for r in res}
    assert by["finite_values"].measured == 0 and by["finite_values"].threshold == 0
    assert by["finite_values"].detail == "no NaN or infinite value"
    assert by["unique_rows"].measured == 0 and by["unique_rows"].detail.startswith("0 duplicate")
    assert by["enrolled_keys"].measured == 0 and by["enrolled_keys"].detail == "6 expected keys, 6 rows"
    for name in ("track_caps", "ineligible_zero", "score_range", "reasons", "capacity"):
        assert by[name].measured == 0 and by[name].threshold == 0, name
    assert by["capacity"].detail == "planned_total <= capacity in all 3 (market, surface)"
    assert by["capacity_use"].measured == pytest.approx(15 / 150) and by["capacity_use"].threshold == 0.0
    assert by["eligible_share"].measured == 0.5
    assert by["eligible_share"].threshold == {"min": 0.05, "max": 0.99}
    assert "3 of 6 enrolled rows eligible = 50.00%" in by["eligible_share"].detail
    for name in ("row_count", "score_drift"):
        assert by[name].measured is None and by[name].detail == "not compared: no previous snapshot to compare with"
    assert by["row_count"].threshold == 0.5 and by["score_drift"].threshold == 0.25


def test_measured_numpy_numbers_become_python_numbers():
    r = checks.result("x", np.bool_(True), "d", np.float64(0.5), 1)
    assert type(r.measured) is float and r.passed is True and type(r.passed) is bool
    assert type(checks.result("x", True, "d", np.int64(3)).measured) is int
    assert checks.result("x", False, "d").measured is None


# ---------------------------------------------------- each gate seen failing ---
def test_finite_values_counts_nan_and_inf_in_every_table():
    """Catches a gate that looks at one table only, or at NaN but not inf."""
    s = scores_table(value=[0.01, np.nan, 0.01, np.inf, 0.01, 0.01])
    d = delivery_table(floor=[-np.inf])
    res = gates(promotion_scores=s, campaign_delivery=d)
    r = res["finite_values"]
    assert only_failed(res) == ["finite_values"]
    assert r.measured == 3 and r.threshold == 0
    assert r.detail == "promotion_scores.value: 2; campaign_delivery.floor: 1"


def test_unique_rows_counts_duplicated_keys():
    s = scores_table()
    twice = pa.concat_tables([s, s.slice(1, 2)])
    r = checks.unique_rows(twice)
    assert (r.name, r.passed, r.measured, r.threshold) == ("unique_rows", False, 2, 0)
    assert r.detail == "2 duplicate (track, market, surface) rows"
    # the same track on another surface is not a duplicate
    assert checks.unique_rows(s).passed


def test_enrolled_keys_finds_missing_unexpected_and_repeated_rows():
    s = scores_table()
    r = checks.enrolled_keys(s.slice(1), expected_keys())
    assert (r.passed, r.measured, r.threshold) == (False, 1, 0)
    assert r.detail == "6 expected keys, 5 rows; 1 missing (e.g. a/XX/radio)"
    r = checks.enrolled_keys(s, expected_keys([("a", "XX")]))
    assert (r.passed, r.measured) == (False, 3)
    assert "3 not in the enrollment export (e.g. b/XX/radio, b/XX/autoplay, b/XX/mixes)" in r.detail
    r = checks.enrolled_keys(pa.concat_tables([s, s.slice(0, 1), s.slice(0, 1)]), expected_keys())
    assert (r.passed, r.measured) == (False, 2)
    assert r.detail.endswith("2 extra rows for 1 repeated keys (e.g. a/XX/radio)")
    r = checks.enrolled_keys(s, None)
    assert r.passed and r.measured is None and r.detail == "not checked: no enrollment export given"


def test_track_caps_fails_above_rho_e_and_allows_solver_tolerance():
    """Catches a track_caps gate that never fails (the issue's first unseen gate)."""
    res = gates(promotion_scores=scores_table(planned_promoted_plays=[10.5, 10.0, 0, 0, 0, 0],
                                              score=[1.0, 1.0, 0, 0, 0, 0]))
    r = res["track_caps"]
    assert only_failed(res) == ["track_caps"]
    assert (r.measured, r.threshold, r.detail) == (1, 0, "1 rows above rho*E")
    edge = 10.0 * (1 + TOL) + TOL
    inside = checks.row_checks(scores_table(planned_promoted_plays=[edge * (1 - 1e-12), 0, 0, 0, 0, 0]))
    outside = checks.row_checks(scores_table(planned_promoted_plays=[edge * (1 + 1e-9), 0, 0, 0, 0, 0]))
    assert inside[0].passed and not outside[0].passed and outside[0].measured == 1
    # an absolute tolerance only: a cap of 0 allows 1e-6, no more
    zero = checks.row_checks(scores_table(max_promoted_plays=[0.0] * 6, planned_promoted_plays=[2 * TOL] + [0] * 5))
    assert not zero[0].passed


def test_ineligible_zero_fails_on_a_boosted_or_scored_ineligible_row():
    """Catches an ineligible_zero gate that never fails, or checks x but not the score."""
    res = gates(promotion_scores=scores_table(planned_promoted_plays=[5.0, 10.0, 0, 1e-3, 0, 0],
                                              max_promoted_plays=[10.0] * 6))
    r = res["ineligible_zero"]
    assert only_failed(res) == ["ineligible_zero"]
    assert (r.measured, r.threshold, r.detail) == (1, 0, "1 ineligible rows with a boost")
    r = checks.row_checks(scores_table(score=[0.5, 1.0, 0, 0, 0.2, 0.3]))[1]
    assert (r.name, r.passed, r.measured) == ("ineligible_zero", False, 2)
    # eligible rows may have x > 0 and a score
    assert checks.row_checks(scores_table())[1].passed


def test_score_range_fails_outside_zero_one():
    """Catches a score_range gate that never fails, or checks one side only."""
    res = gates(promotion_scores=scores_table(score=[1.01, 1.0, -0.01, 0, 0, 0]))
    r = res["score_range"]
    assert only_failed(res) == ["score_range"]
    assert (r.measured, r.threshold, r.detail) == (2, 0, "2 scores outside [0, 1]")
    ok = checks.row_checks(scores_table(score=[1 + TOL * 0.5, 1.0, 0.0, 0, 0, 0]))[2]
    assert ok.passed
    below = checks.row_checks(scores_table(score=[0.5, 1.0, -1e-12, 0, 0, 0]))[2]
    assert not below.passed and below.measured == 1


def test_reasons_fails_on_a_missing_or_a_stray_reason():
    """Catches a reasons gate that never fails, or checks one direction only."""
    res = gates(promotion_scores=scores_table(reason=["too_few_plays", None, None, None, "x", "x"]))
    r = res["reasons"]
    assert only_failed(res) == ["reasons"]
    assert (r.measured, r.threshold, r.detail) == (2, 0, "2 rows whose reason disagrees with eligible")


def test_capacity_fails_on_planned_total_or_row_sum_above_capacity():
    cap = capacity_table(planned_total=[50.0 * (1 + TOL) + 2 * TOL, 10.0, 0.0])
    res = gates(capacity=cap)
    r = res["capacity"]
    assert only_failed(res) == ["capacity"]
    assert (r.measured, r.threshold) == (1, 0)
    assert r.detail == "XX radio: planned 50.0 (rows sum 5.0) > capacity 50.0"
    # rows that add up past the capacity, whatever planned_total says
    cap = capacity_table(capacity=[4.0, 50.0, 50.0], planned_total=[4.0, 10.0, 0.0])
    r = checks.capacity_within(scores_table(), cap)
    assert (r.passed, r.measured) == (False, 1) and "rows sum 5.0" in r.detail
    # at the capacity (within tolerance) is fine
    cap = capacity_table(capacity=[5.0, 10.0, 0.0], planned_total=[5.0, 10.0 * (1 + TOL * 0.5), 0.0])
    assert checks.capacity_within(scores_table(), cap).passed
    # a (market, surface) without rows counts 0 planned
    empty = checks.capacity_within(scores_table().slice(0, 0), capacity_table(planned_total=[0.0] * 3))
    assert empty.passed and empty.measured == 0
    r = checks.capacity_within(scores_table(), capacity_table().slice(0, 0))
    assert r.passed and r.detail == "no (market, surface) in the capacity table"


def test_capacity_use_fails_below_the_configured_minimum():
    res = gates(cfg=Config(gate_min_capacity_use=0.2))
    r = res["capacity_use"]
    assert only_failed(res) == ["capacity_use"]
    assert r.measured == pytest.approx(0.1) and r.threshold == 0.2
    assert r.detail == "15.0 of 150.0 planned = 10.00% (minimum 20.00%)"
    assert gates(cfg=Config(gate_min_capacity_use=0.1))["capacity_use"].passed  # exactly at the minimum
    zero = checks.capacity_use(capacity_table(capacity=[0.0] * 3, planned_total=[0.0] * 3),
                               Config(gate_min_capacity_use=0.0))
    assert zero.passed and zero.measured == 0.0


def test_eligible_share_fails_outside_its_bounds():
    res = gates(cfg=Config(gate_min_eligible_share=0.6))
    r = res["eligible_share"]
    assert only_failed(res) == ["eligible_share"]
    assert r.measured == 0.5 and r.threshold == {"min": 0.6, "max": 0.99}
    assert not gates(cfg=Config(gate_max_eligible_share=0.4))["eligible_share"].passed
    assert gates(cfg=Config(gate_min_eligible_share=0.5, gate_max_eligible_share=0.5))["eligible_share"].passed
    r = gates(cfg=Config(gate_min_eligible_share=0.6, gate_max_eligible_share=0.55))["eligible_share"]
    assert not r.passed and r.detail.endswith("the config's minimum exceeds its maximum, so no share can pass")
    r = checks.eligible_share(scores_table().slice(0, 0), Config())
    assert not r.passed and r.measured == 0.0 and "0 of 0 enrolled rows" in r.detail


# -------------------------------------------------- against the previous one ---
def _previous(tmp_path, scores: pa.Table, rows: dict | None = None) -> tuple[str, Manifest]:
    """A previous snapshot on disk: its promotion_scores files and a manifest listing them."""
    folder = str(tmp_path / "prev")
    for name, t in {**tables(), "promotion_scores": scores}.items():
        os.makedirs(layout.table_dir(folder, name), exist_ok=True)
        pq.write_table(t, os.path.join(layout.table_dir(folder, name), "part-0.parquet"))
    entries, _ = store.describe_tables(folder)
    for name, n in (rows or {}).items():
        entries[name].rows = n
    m = Manifest("s0", SCORE_DATE - dt.timedelta(days=1), as_of=SCORE_DATE - dt.timedelta(days=2),
                 created_at=dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc), code_version="v",
                 run_fingerprint="f", config={}, config_sha256="c",
                 inputs=Inputs({}, {}, {}, {}, [], [], []), tables=entries, validation=[])
    return folder, m


def test_row_count_fails_when_a_table_loses_more_than_allowed(tmp_path):
    """Catches a row_count gate that compares the wrong way, or only one table."""
    prev = _previous(tmp_path, scores_table(), rows={"promotion_scores": 13, "campaign_delivery": 1, "capacity": 3})
    res = gates(previous=prev)
    r = res["row_count"]
    assert only_failed(res) == ["row_count"]
    assert r.measured == pytest.approx(1 - 6 / 13) and r.threshold == 0.5
    assert "promotion_scores 13 -> 6 (-53.8%)" in r.detail and r.detail.endswith("dropped too far: promotion_scores")
    assert f"vs previous snapshot {PREV_NAME}" in r.detail and "campaign_delivery 1 -> 1," in r.detail
    # exactly half lost is still allowed; growth is no drop
    assert gates(previous=_previous(tmp_path / "b", scores_table(), rows={"promotion_scores": 12}))["row_count"].passed
    grown = gates(previous=_previous(tmp_path / "c", scores_table(), rows={"promotion_scores": 2}))["row_count"]
    assert grown.passed and grown.measured == 0.0 and "promotion_scores 2 -> 6," in grown.detail
    # a table the previous snapshot did not have is not compared
    prev_rows = {"promotion_scores": 6, "capacity": 0}
    r = drift.row_count(tables(), prev_of(rows=prev_rows), "previous snapshot x", Config())
    assert r.passed and "capacity 3 (none before)" in r.detail and "campaign_delivery 1 (none before)" in r.detail


def test_score_drift_fails_when_the_eligible_scores_move():
    """Each eligible row's score against its own previous score, binned: catches a
    gate that compares the wrong rows, the wrong way, or ineligible scores."""
    now = np.linspace(0.3, 0.9, 30)
    cur = eligible_scores_table(now)
    r = drift.score_drift(cur, prev_of(table=eligible_scores_table(np.full(30, 0.05))), "previous snapshot x",
                          Config())
    want = drift.population_stability_index(np.full(30, 0.05), now)
    assert not r.passed and r.measured == pytest.approx(want) and r.measured > 0.25 and r.threshold == 0.25
    assert "on 30 of 30 eligible rows, each against its score in the previous snapshot x" in r.detail
    # the same scores: no drift; ineligible rows' scores are not compared
    extra = scores_table(track_id=["x"] * 6, eligible=[False] * 6, reason=["x"] * 6, score=[0.9] * 6)
    same = drift.score_drift(pa.concat_tables([cur, extra]), prev_of(table=cur), "prev", Config())
    assert same.passed and same.measured == 0.0 and same.basis["compared"] == 30
    # nothing eligible now: not compared, pointing at eligible_share
    none = drift.score_drift(scores_table(eligible=[False] * 6, reason=["x"] * 6), prev_of(table=cur), "prev",
                             Config())
    assert none.passed and none.measured is None and "(see eligible_share)" in none.detail


def test_drift_gates_compare_with_the_previous_snapshot_on_disk(tmp_path):
    """drift_gates reads the previous snapshot once and hands it, with the score date,
    to both gates: catches score_drift given no previous snapshot (it would say "not
    compared") or not given the score date (no days_apart in its basis)."""
    prev = _previous(tmp_path, eligible_scores_table(np.full(30, 0.05)))
    now = eligible_scores_table(np.linspace(0.3, 0.9, 30))
    res = {r.name: r for r in drift.drift_gates(tables(promotion_scores=now), prev, Config(),
                                                 SCORE_DATE)}
    assert list(res) == ["row_count", "score_drift"]
    s = res["score_drift"]
    assert not s.passed and s.measured == pytest.approx(
        drift.population_stability_index(np.full(30, 0.05), np.linspace(0.3, 0.9, 30)))
    assert s.basis["previous"] == PREV_NAME and s.basis["compared"] == 30
    assert s.basis["days_apart"] == 1          # SCORE_DATE against the previous score date, a day before
    assert res["row_count"].basis == {"previous": PREV_NAME, "previous_score_date": "2026-11-24"}


def test_row_count_skips_only_the_tables_that_follow_eligibility_or_the_plan():
    """prices and campaign_lift follow eligibility and delivery_reconciliation the
    plan: a fall in them is not judged, whichever comes first in the snapshot. Catches
    a skip of only the tables in both lists, a skip that stops at the first skipped
    table (the tables after it not compared), and a basis under other names."""
    few = pa.table({"x": [1]})
    now = {"prices": few, "delivery_reconciliation": few, "campaign_lift": few, **tables()}
    before = {"prices": 100, "delivery_reconciliation": 100, "campaign_lift": 100, "promotion_scores": 6,
              "campaign_delivery": 1, "capacity": 3}
    r = drift.row_count(now, prev_of(rows=before), "previous snapshot x", Config())
    assert r.passed and r.measured == 0.0
    assert r.detail == ("vs previous snapshot x: promotion_scores 6 -> 6, campaign_delivery 1 -> 1, "
                        "capacity 3 -> 3; max drop allowed 50%")
    assert r.basis == {"previous": PREV_NAME, "previous_score_date": "2026-11-24"}
    # a counted table after the skipped ones that drops too far still fails
    r = drift.row_count({**now, "capacity": capacity_table().slice(0, 1)}, prev_of(rows=before), "p", Config())
    assert not r.passed and r.measured == pytest.approx(2 / 3) and r.detail.endswith("dropped too far: capacity")


def test_score_drift_not_compared_still_names_its_threshold():
    """A gate that did not compare publishes the threshold it would have used (the
    report shows it beside the measurement): with nothing eligible, and with fewer
    comparable rows than PSI_MIN_ROWS."""
    cfg = Config(gate_max_score_psi=0.125)
    cur = eligible_scores_table(np.full(30, 0.5))
    none = drift.score_drift(scores_table(eligible=[False] * 6, reason=["x"] * 6), prev_of(table=cur), "p", cfg)
    few = drift.score_drift(cur, prev_of(table=cur.slice(0, drift.PSI_MIN_ROWS - 1)), "p", cfg)
    for r in (none, few):
        assert r.passed and r.measured is None and r.threshold == 0.125, r


def test_score_drift_compares_only_rows_with_a_finite_score_on_both_sides():
    """comparable_rows drops a row whose score is not finite on either side (counted
    out of "compared"); catches a test that keeps rows finite on one side only."""
    before = np.full(30, 0.5)
    before[:3] = np.nan
    now = np.full(30, 0.5)
    now[3:5] = np.inf
    b, n, counts = drift.comparable_rows(eligible_scores_table(now), prev_of(table=eligible_scores_table(before)))
    assert counts["compared"] == 25 and b.size == n.size == 25
    assert np.isfinite(b).all() and np.isfinite(n).all()


def test_an_unreadable_previous_snapshot_is_not_compared(tmp_path):
    folder, m = _previous(tmp_path, scores_table())
    for f in m.table_files("promotion_scores"):
        os.remove(layout.listed_file(folder, f.path))
    prev, note = drift.load_previous((folder, m))
    assert prev is None
    assert note.startswith(f"previous snapshot {PREV_NAME} cannot be read (") and note.endswith("); not compared")
    res = gates(previous=(folder, m))
    assert res["row_count"].passed and res["row_count"].measured is None
    assert res["score_drift"].passed and "cannot be read" in res["score_drift"].detail


def test_load_previous_reads_rows_and_eligible_scores(tmp_path):
    prev, note = drift.load_previous(_previous(tmp_path, scores_table(score=[0.5, 1.0, 0.0, 0.0, 0.0, 0.0])))
    assert {k: v for k, v in prev.rows.items() if k in ("promotion_scores", "campaign_delivery", "capacity")} == {
        "promotion_scores": 6, "campaign_delivery": 1, "capacity": 3}
    assert prev.eligible.column_names == drift.MATCH + ["score"]
    assert sorted(prev.eligible.column("score").to_pylist()) == [0.0, 0.5, 1.0]
    assert (prev.name, prev.score_date, note) == (PREV_NAME, "2026-11-24", f"previous snapshot {PREV_NAME}")


def test_psi_matches_its_formula_on_a_hand_computed_case():
    """Two bins' worth of scores: the PSI written out by hand (pseudocount 0.5 per bin)."""
    a = np.array([0.05, 0.05, 0.95, 0.95])
    b = np.array([0.05, 0.95, 0.95, 0.95])
    p = np.full(10, 0.5)
    q = np.full(10, 0.5)
    p[0] += 2
    p[9] += 2
    q[0] += 1
    q[9] += 3
    p, q = p / p.sum(), q / q.sum()
    want = float(np.sum((q - p) * np.log(q / p)))
    assert drift.population_stability_index(a, b) == pytest.approx(want, rel=1e-12)
    # scores outside [0, 1] are clipped into the end bins, not dropped
    assert drift.population_stability_index(a, np.array([-1.0, 0.95, 2.0, 0.95])) == pytest.approx(want)
    assert drift.population_stability_index(a, a) == 0.0


# ------------------------------------------------------------ the suite ---
def test_skip_records_but_does_not_block():
    res = gates(cfg=Config(gate_min_capacity_use=0.2), skip=("capacity_use",))
    r = res["capacity_use"]
    assert r.skipped and not r.passed and not r.blocking and only_failed(res) == []
    assert not any(x.skipped for n, x in res.items() if n != "capacity_use")


def test_failure_message_names_the_gates_and_how_to_skip():
    res = list(gates(cfg=Config(gate_min_capacity_use=0.2, gate_min_eligible_share=0.6)).values())
    msg = suite.failure_message(res, "/q/x", "a problem", retry_hint="rerun with")
    lines = msg.split("\n")
    assert lines[0] == "validation failed (capacity_use, eligible_share): nothing published"
    assert lines[1].startswith("  capacity_use: 15.0 of 150.0") and lines[2].startswith("  eligible_share: 3 of 6")
    assert lines[3] == f"  the would-be snapshot is quarantined in /q/x (see {layout.QUARANTINE_RECORD})"
    assert lines[4] == "  a problem"
    assert lines[5] == "  after checking by hand, rerun with --skip-gate capacity_use --skip-gate eligible_share"
    short = suite.failure_message(res, None).split("\n")
    assert len(short) == 4 and "quarantined" not in "".join(short)


# ------------------------------------------------------ expected keys ---
def _enrollment_rows(rows: list[tuple[str, str]]) -> pa.Table:
    n = len(rows)
    data = dict(campaign_id=["c1"] * n, track_id=[r[0] for r in rows], artist_id=["ar"] * n,
                licensor_id=["l"] * n, market=[r[1] for r in rows], surfaces=[["radio"]] * n,
                start_date=[dt.date(2026, 11, 1)] * n, end_date=[dt.date(2026, 11, 30)] * n,
                commission_rate=[0.2] * n, release_date=[dt.date(2025, 1, 1)] * n, status=["active"] * n,
                updated_at=[dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)] * n)
    return pa.table({f.name: pa.array(data[f.name], f.type) for f in ENROLLMENTS.arrow()})


def test_expected_keys_are_valid_pairs_times_three_surfaces(tmp_path):
    f1, f2 = str(tmp_path / "1.parquet"), str(tmp_path / "2.parquet")
    pq.write_table(_enrollment_rows([("t1", "US"), ("t1", "US"), ("t2", "US"), ("bad", "us")]), f1)
    pq.write_table(_enrollment_rows([("t1", "GB"), ("t2", "US")]), f2)
    keys = checks.expected_enrollment_keys([f1, f2], batch_rows=2)
    got = sorted(zip(*(keys.column(k).to_pylist() for k in ("track_id", "market", "surface"))))
    want = sorted((t, m, s) for t, m in [("t1", "US"), ("t2", "US"), ("t1", "GB")]
                  for s in ("radio", "autoplay", "mixes"))
    assert got == want
    empty = checks.expected_enrollment_keys([], batch_rows=2)
    assert empty.num_rows == 0 and empty.column_names == ["track_id", "market", "surface"]


# ---------------------------------------- edges found by mutation testing ---
def test_row_count_edges():
    """A drop exactly at the limit (plus tolerance) passes; two tables over it are
    both named; nothing compared measures 0; a passing detail has no verdict tail."""
    exactly = drift.row_count(tables(), prev_of(rows={"promotion_scores": 12}), "prev",
                              Config(gate_max_row_drop=0.5 - 1e-6))
    assert exactly.passed and exactly.measured == 0.5
    two = drift.row_count(tables(), prev_of(rows={"promotion_scores": 100, "capacity": 100}), "prev", Config())
    assert not two.passed and two.detail.endswith("; dropped too far: promotion_scores, capacity")
    nothing = drift.row_count(tables(), prev_of(rows={"capacity": 0}), "prev", Config())
    assert nothing.passed and nothing.measured == 0.0
    assert nothing.detail.endswith("; max drop allowed 50%")


def test_psi_clips_both_sides_and_honours_its_bins():
    a = np.array([0.35, 0.4, 0.45, 0.45])
    b = np.array([0.35, 0.35, 0.4, 0.45])
    # the histogram is over [0, 1] whatever the data span: bins of width 0.1 (0.2 with 5 bins)
    for bins in (10, 5):
        edges = np.linspace(0.0, 1.0, bins + 1)
        p = np.histogram(a, edges)[0] + 0.5
        q = np.histogram(b, edges)[0] + 0.5
        p, q = p / p.sum(), q / q.sum()
        want = float(np.sum((q - p) * np.log(q / p)))
        assert drift.population_stability_index(a, b, bins=bins) == pytest.approx(want, rel=1e-12), bins
    # the previous scores are clipped into [0, 1] too (not dropped, not binned past 1)
    ref = drift.population_stability_index(np.array([0.0, 1.0, 0.5, 0.5]), b)
    assert drift.population_stability_index(np.array([-3.0, 1.5, 0.5, 0.5]), b) == pytest.approx(ref)


def test_score_drift_edges():
    none_before = drift.score_drift(scores_table(), prev_of(table=scores_table(eligible=[False] * 6,
                                                                                reason=["x"] * 6)), "prev", Config())
    assert (none_before.name, none_before.passed, none_before.measured, none_before.threshold) == (
        "score_drift", True, None, 0.25)
    assert none_before.detail == "not compared: 0 eligible rows in the prev, 3 now (see eligible_share)"
    # a row whose eligibility is unknown (null) is not an eligible score
    t = scores_table()
    schema = t.schema.set(t.schema.get_field_index("eligible"), pa.field("eligible", pa.bool_(), nullable=True))
    t = t.cast(schema).set_column(schema.get_field_index("eligible"), schema.field("eligible"),
                                  pa.array([True, True, True, None, None, None], pa.bool_()))
    t = t.set_column(t.schema.get_field_index("score"), "score", pa.array([0.5, 1.0, 0.0, 0.9, 0.9, 0.9]))
    same = drift.score_drift(t, prev_of(), "prev", Config())
    assert same.basis["eligible_now"] == 3 and same.basis["compared"] == 3
    # fewer comparable rows than PSI_MIN_ROWS say little: not compared, and the detail says why
    assert same.passed and same.measured is None and f"(fewer than {drift.PSI_MIN_ROWS})" in same.detail


def test_examples_show_three_keys():
    r = checks.enrolled_keys(scores_table().slice(5), expected_keys())
    assert r.detail == "6 expected keys, 1 rows; 5 missing (e.g. a/XX/radio, a/XX/autoplay, a/XX/mixes)"


def test_expected_keys_edges(tmp_path):
    empty = checks.expected_enrollment_keys([], batch_rows=2)
    assert empty.schema.types == [pa.string()] * 3
    bad = str(tmp_path / "bad.parquet")
    pq.write_table(_enrollment_rows([("t1", "US")]).drop_columns(["status"]), bad)
    with pytest.raises(InputFileError, match="bad.parquet: schema does not match"):
        checks.expected_enrollment_keys([bad], batch_rows=2)


def _exactly(target: float) -> float:
    """A capacity c whose gate limit c * (1 + TOL) + TOL is exactly `target` in floats."""
    c = (target - TOL) / (1 + TOL)
    for _ in range(200):
        got = c * (1 + TOL) + TOL
        if got == target:
            return c
        c = np.nextafter(c, np.inf if got < target else -np.inf)
    raise AssertionError("no float capacity hits the limit exactly")


def test_capacity_edges():
    # the row sum (5.0 on radio) or planned_total exactly at the limit passes
    c = _exactly(5.0)
    at = checks.capacity_within(scores_table(), capacity_table(capacity=[c, 50.0, 50.0], planned_total=[5.0, 10, 0]))
    assert at.passed, at.detail
    limit = 50.0 * (1 + TOL) + TOL
    assert checks.capacity_within(scores_table(), capacity_table(planned_total=[limit, 10.0, 0.0])).passed
    # a (market, surface) without rows has planned 0, even under a capacity below 1
    alone = capacity_table(market=["XX", "XX", "YY"], capacity=[50.0, 50.0, 0.5], planned_total=[5.0, 10.0, 0.0])
    assert checks.capacity_within(scores_table(), alone).passed
    # at most five examples, comma separated
    six = pa.concat_tables([capacity_table(), capacity_table(market=["YY"] * 3)])
    six = six.set_column(six.schema.get_field_index("capacity"), "capacity", pa.array([0.5] * 6))
    six = six.set_column(six.schema.get_field_index("planned_total"), "planned_total", pa.array([1.0] * 6))
    r = checks.capacity_within(scores_table(), six)
    assert r.measured == 6 and r.detail.count("planned 1.0") == 5
    assert r.detail.startswith("XX radio: planned 1.0 (rows sum 5.0) > capacity 0.5, XX autoplay: planned 1.0")
    empty = checks.capacity_within(scores_table(), capacity_table().slice(0, 0))
    assert (empty.name, empty.measured, empty.threshold) == ("capacity", 0, 0)


def test_capacity_use_edges():
    none_planned = checks.capacity_use(capacity_table(planned_total=[0.0] * 3), Config())
    assert none_planned.measured == 0.0
    no_capacity = checks.capacity_use(capacity_table(capacity=[0.0] * 3, planned_total=[1.0, 0, 0]), Config())
    assert no_capacity.measured == 0.0
    small = checks.capacity_use(capacity_table(capacity=[0.25, 0.25, 0.0], planned_total=[0.25, 0, 0]), Config())
    assert small.measured == 0.5
    at = checks.capacity_use(capacity_table(planned_total=[75.0, 0, 0]), Config(gate_min_capacity_use=0.5 + TOL))
    assert at.passed and at.measured == 0.5


def test_eligible_share_edges():
    none = checks.eligible_share(scores_table(eligible=[False] * 6, reason=["x"] * 6), Config())
    assert none.measured == 0.0 and none.detail.startswith("0 of 6 enrolled rows eligible")
    equal = checks.eligible_share(scores_table(), Config(gate_min_eligible_share=0.5, gate_max_eligible_share=0.5))
    assert equal.passed and equal.detail == "3 of 6 enrolled rows eligible = 50.00% (allowed 50.00% to 50.00%)"
    crossed = checks.eligible_share(scores_table(), Config(gate_min_eligible_share=0.6, gate_max_eligible_share=0.55))
    assert crossed.detail.startswith("3 of 6 enrolled rows eligible = 50.00% (allowed 60.00% to 55.00%); ")


def test_enrolled_keys_edges():
    r = checks.enrolled_keys(scores_table(), None)
    assert (r.name, r.measured, r.threshold) == ("enrolled_keys", None, 0)
    s = scores_table()
    twice = checks.enrolled_keys(pa.concat_tables([s, s.slice(0, 1)]), expected_keys())
    assert twice.measured == 1 and twice.detail.endswith("1 extra rows for 1 repeated keys (e.g. a/XX/radio)")


def test_row_checks_at_their_exact_edges():
    edge = 10.0 * (1 + TOL) + TOL
    caps = checks.row_checks(scores_table(planned_promoted_plays=[edge, 0, 0, 0, 0, 0]))[0]
    assert caps.passed
    top = checks.row_checks(scores_table(score=[1 + TOL, 1.0, 0.0, 0, 0, 0]))[2]
    assert top.passed


def test_unique_rows_keys_only_the_separator_keeps_apart():
    """("a", "radioY", "radio") and ("aradio", "Y", "radio") are two keys; joined
    without a separator (or with the surface as one) they are the same string."""
    t = scores_table(track_id=["a", "aradio", "b", "c", "d", "e"], market=["radioY", "Y", "XX", "XX", "XX", "XX"],
                     surface=["radio"] * 6)
    assert checks.unique_rows(t).measured == 0


def test_score_drift_at_its_exact_limit():
    a = np.tile([0.35, 0.4, 0.45, 0.45], 6)
    b = np.tile([0.35, 0.35, 0.4, 0.45], 6)
    psi = drift.population_stability_index(a, b)
    at = drift.score_drift(eligible_scores_table(b), prev_of(table=eligible_scores_table(a)), "prev",
                           Config(gate_max_score_psi=psi - TOL))
    assert at.measured == pytest.approx(psi) and at.passed
    cur = eligible_scores_table(b)
    same = drift.score_drift(cur, prev_of(table=cur), "prev", Config(gate_max_score_psi=0.0))
    assert same.measured == 0.0 and same.passed


def test_an_unreadable_previous_snapshot_is_logged_with_its_error(tmp_path, caplog):
    folder, m = _previous(tmp_path, scores_table())
    for f in m.table_files("promotion_scores"):
        os.remove(layout.listed_file(folder, f.path))
    with caplog.at_level("WARNING", logger="jobs.gates.drift"):
        _, note = drift.load_previous((folder, m))
    assert "(FileNotFoundError: " in note, note
    (rec,) = [r for r in caplog.records if r.name == "jobs.gates.drift"]
    assert rec.getMessage().startswith(f"previous snapshot {PREV_NAME} cannot be read for comparison: ")
    assert len(rec.getMessage()) > len(f"previous snapshot {PREV_NAME} cannot be read for comparison: ") + 5

