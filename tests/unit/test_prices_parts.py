"""The prices table's parts on hand problems (pipelines/allocation/prices.py):
each test solves (or hand-builds) a 2-4 track LP whose optimal plan and dual
prices are derived by hand in its comments, and checks every published row
(constraint, key, bound, slack, price), the lookups serving/explain derive from
the rows, and the table's columns against the schema.

Conventions of the hand derivations: r_t = v_t - y_0 - y_a - y_l + z_c is a
track's reduced cost; at the optimum a track strictly between 0 and its cap has
r_t = 0 (that fixes the binding row's price), a track at its cap has track
price w_t = r_t >= 0, and a row with slack > 0 has price 0.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.allocation.prices import (CAPACITY_KEY, PRICE_COLUMNS, dual_bound, lookup_prices, price_columns,
                                         price_rows, reduced_costs)
from pipelines.allocation.problem import Problem, Solution, objective
from pipelines.allocation.solve import solve
from schemas import PRICE_CONSTRAINTS, PRICES
from tests.unit.test_prices import ids

TOL = 1e-7


def rows_of(p: Problem, sol: Solution, n_floor_rows: int | None = None) -> pd.DataFrame:
    """price_rows with ids a000i / l000i / c000i / t000i (distinct prefixes, so
    a family reading another family's ids shows)."""
    c = p.n_campaigns if n_floor_rows is None else n_floor_rows
    return price_rows(p, sol, ids("a", p.n_artists), ids("l", p.n_licensors), ids("c", c), ids("t", p.n))


def table(rows: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(constraint, key): (bound, slack, price)}; fails on a duplicated row."""
    out = {(c, k): (b, s, pr) for c, k, b, s, pr in rows[list(PRICE_COLUMNS)].itertuples(index=False)}
    assert len(out) == len(rows), rows
    return out


def assert_table(rows: pd.DataFrame, expected: dict[tuple[str, str], tuple[float, float, float]]) -> None:
    got = table(rows)
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, want in expected.items():
        assert got[key] == pytest.approx(want, abs=TOL), (key, got[key], want)
    # families come in PRICE_CONSTRAINTS order (the order docs/design.md's LP lists them)
    order = [PRICE_CONSTRAINTS.index(c) for c in rows["constraint"]]
    assert order == sorted(order)


# ----------------------------------------------------------------------------- hand problems

def capacity_problem() -> Problem:
    """3 tracks, each its own artist, licensor 0 = tracks 0, 1 and licensor 1 =
    track 2; v = (5, 3, 1), ub = 4 each, K = 6; artist cap 6 and licensor cap 10
    never bind; one campaign with floor 0."""
    return Problem(value=[5.0, 3.0, 1.0], upper=[4.0, 4.0, 4.0], artist=[0, 1, 2], licensor=[0, 0, 1],
                   campaign=[0, 0, 0], floors=[0.0], capacity=6.0, artist_cap=6.0, licensor_cap=10.0, penalty=50.0)


@pytest.mark.parametrize("method", ["exact", "dual"])
def test_capacity_price_is_the_marginal_tracks_value(method):
    """Greedy by value: x = (4, 2, 0) fills K = 6; track 1 sits strictly inside
    (0, 4) so y_0 = v_1 = 3; track 0 at its cap earns w_0 = 5 - 3 = 2; track 2
    (r = 1 - 3 < 0) gets nothing, w_2 = 0. Artist slacks 6-4, 6-2, 6-0;
    licensor slacks 10-6, 10-0; the floor-0 campaign has slack 6 + 0 - 0.
    Catches a wrong slack (sign, bound, which total), a price taken from the
    wrong family or position, and a family's rows keyed by another's ids."""
    p = capacity_problem()
    sol = solve(p, method=method)
    assert sol.x == pytest.approx([4.0, 2.0, 0.0], abs=1e-9)
    assert_table(rows_of(p, sol), {
        ("capacity", ""): (6.0, 0.0, 3.0),
        ("artist_cap", "a0000"): (6.0, 2.0, 0.0),
        ("artist_cap", "a0001"): (6.0, 4.0, 0.0),
        ("artist_cap", "a0002"): (6.0, 6.0, 0.0),
        ("licensor_cap", "l0000"): (10.0, 4.0, 0.0),
        ("licensor_cap", "l0001"): (10.0, 10.0, 0.0),
        ("campaign_floor", "c0000"): (0.0, 6.0, 0.0),
        ("track_cap", "t0000"): (4.0, 0.0, 2.0),
        ("track_cap", "t0001"): (4.0, 2.0, 0.0),
        ("track_cap", "t0002"): (4.0, 4.0, 0.0),
    })


def artist_problem() -> Problem:
    """Artist 0 = tracks 0, 1; artist 1 = track 2; licensor 0 = tracks 0, 2,
    licensor 1 = track 1 (not the artists' grouping); v = (5, 4, 3), ub = 4
    each, K = 10, artist cap 5, licensor cap 10."""
    return Problem(value=[5.0, 4.0, 3.0], upper=[4.0, 4.0, 4.0], artist=[0, 0, 1], licensor=[0, 1, 0],
                   campaign=[0, 0, 0], floors=[0.0], capacity=10.0, artist_cap=5.0, licensor_cap=10.0, penalty=50.0)


def test_a_binding_artist_cap_is_priced_at_its_marginal_tracks_value():
    """Artist 0 may take 5: track 0 (v 5) its full 4, track 1 (v 4) the 1 left;
    track 2 (artist 1) its full 4 (artist 1's slack 1). Total 9 < K = 10, so
    y_0 = 0; track 1 is interior so y_a0 = v_1 = 4; w_0 = 5 - 4 = 1,
    w_2 = 3 - 0 = 3. Licensor totals: l0 = 4 + 4 = 8 (slack 2), l1 = 1 (slack 9).
    Catches artist and licensor totals or prices swapped or mis-indexed."""
    p = artist_problem()
    sol = solve(p, method="exact")
    assert sol.x == pytest.approx([4.0, 1.0, 4.0], abs=1e-9)
    assert_table(rows_of(p, sol), {
        ("capacity", ""): (10.0, 1.0, 0.0),
        ("artist_cap", "a0000"): (5.0, 0.0, 4.0),
        ("artist_cap", "a0001"): (5.0, 1.0, 0.0),
        ("licensor_cap", "l0000"): (10.0, 2.0, 0.0),
        ("licensor_cap", "l0001"): (10.0, 9.0, 0.0),
        ("campaign_floor", "c0000"): (0.0, 9.0, 0.0),
        ("track_cap", "t0000"): (4.0, 0.0, 1.0),
        ("track_cap", "t0001"): (4.0, 3.0, 0.0),
        ("track_cap", "t0002"): (4.0, 0.0, 3.0),
    })


def test_a_binding_licensor_cap_is_priced_at_its_marginal_tracks_value():
    """Licensor 0 = tracks 0, 1 (artists 0, 1), licensor 1 = track 2 (artist 2);
    v = (6, 4, 2), ub = 4, K = 20, artist cap 20, licensor cap 5. Licensor 0
    takes 5: track 0 its 4, track 1 the 1 left (interior: y_l0 = v_1 = 4,
    w_0 = 6 - 4 = 2); track 2 its 4 (l1 slack 1, w_2 = 2). Total 9: capacity
    slack 11, price 0; artist slacks 20-4, 20-1, 20-4. Catches licensor
    prices or totals read from the artist family."""
    p = Problem(value=[6.0, 4.0, 2.0], upper=[4.0, 4.0, 4.0], artist=[0, 1, 2], licensor=[0, 0, 1],
                campaign=[0, 0, 0], floors=[0.0], capacity=20.0, artist_cap=20.0, licensor_cap=5.0, penalty=50.0)
    sol = solve(p, method="exact")
    assert sol.x == pytest.approx([4.0, 1.0, 4.0], abs=1e-9)
    assert_table(rows_of(p, sol), {
        ("capacity", ""): (20.0, 11.0, 0.0),
        ("artist_cap", "a0000"): (20.0, 16.0, 0.0),
        ("artist_cap", "a0001"): (20.0, 19.0, 0.0),
        ("artist_cap", "a0002"): (20.0, 16.0, 0.0),
        ("licensor_cap", "l0000"): (5.0, 0.0, 4.0),
        ("licensor_cap", "l0001"): (5.0, 1.0, 0.0),
        ("campaign_floor", "c0000"): (0.0, 9.0, 0.0),
        ("track_cap", "t0000"): (4.0, 0.0, 2.0),
        ("track_cap", "t0001"): (4.0, 3.0, 0.0),
        ("track_cap", "t0002"): (4.0, 0.0, 2.0),
    })


def floor_problem() -> Problem:
    """Campaign 0 (floor 10) = track 0 (v 1, ub 3); campaign 1 (floor 0) =
    track 1 (v 2, ub 5); K = 6, penalty 7; the artist/licensor caps (100) never bind."""
    return Problem(value=[1.0, 2.0], upper=[3.0, 5.0], artist=[0, 1], licensor=[0, 1], campaign=[0, 1],
                   floors=[10.0, 0.0], capacity=6.0, artist_cap=100.0, licensor_cap=100.0, penalty=7.0)


def test_an_unmet_floor_is_priced_at_the_penalty():
    """A play of track 0 is worth v + p = 8 while its floor is short, so it
    takes its full 3; the floor stays short by u = 7 > 0, hence z_0 = p = 7.
    Track 1 fills the remaining capacity, 3 of its 5: interior, so y_0 = 2;
    w_0 = 1 - 2 + 7 = 6. Floor rows: c0 slack 3 + 7 - 10 = 0 (the shortfall
    counts), c1 slack 3 + 0 - 0 = 3, price 0. Catches a floor slack without
    the shortfall or with the wrong sign, and floor prices mis-indexed."""
    p = floor_problem()
    sol = solve(p, method="exact")
    assert sol.x == pytest.approx([3.0, 3.0], abs=1e-9)
    assert sol.shortfall == pytest.approx([7.0, 0.0], abs=1e-9)
    rows = rows_of(p, sol)
    assert_table(rows, {
        ("capacity", ""): (6.0, 0.0, 2.0),
        ("artist_cap", "a0000"): (100.0, 97.0, 0.0),
        ("artist_cap", "a0001"): (100.0, 97.0, 0.0),
        ("licensor_cap", "l0000"): (100.0, 97.0, 0.0),
        ("licensor_cap", "l0001"): (100.0, 97.0, 0.0),
        ("campaign_floor", "c0000"): (10.0, 0.0, 7.0),
        ("campaign_floor", "c0001"): (0.0, 3.0, 0.0),
        ("track_cap", "t0000"): (3.0, 0.0, 6.0),
        ("track_cap", "t0001"): (5.0, 2.0, 0.0),
    })


def test_floor_rows_only_for_the_campaign_ids_given():
    """campaign_ids names only the floors that get rows (a problem may end
    with floor-less groups): with one id, floor_problem publishes c0's row
    alone (bound 10, slack 0, price 7), every other family unchanged. Catches
    rows for the groups past the ids, or the ids paired with the wrong floors."""
    p = floor_problem()
    sol = solve(p, method="exact")
    rows = rows_of(p, sol, n_floor_rows=1)
    floors = rows[rows["constraint"] == "campaign_floor"]
    assert list(floors["key"]) == ["c0000"]
    assert floors[["bound", "slack", "price"]].to_numpy().tolist() == [pytest.approx([10.0, 0.0, 7.0], abs=TOL)]
    assert len(rows) == 1 + 2 + 2 + 1 + 2
    # no floors at all: the family is empty, the others still there
    rows0 = rows_of(p, sol, n_floor_rows=0)
    assert "campaign_floor" not in set(rows0["constraint"])
    assert table(rows0) == {k: pytest.approx(v, abs=TOL) for k, v in table(rows).items() if k[0] != "campaign_floor"}


def test_ineligible_tracks_and_their_groups_get_no_rows():
    """Track 1 (ub 0) is the only track of artist 1 and of licensor 1: none of
    its track, artist or licensor rows are published ("a constraint over no
    track with ub > 0 cannot bind"); its campaign's floor row still is. Plan:
    track 0 (v 2, ub 3) takes 3 of K = 5; slacks capacity 2, a0/l0 caps 10-3.
    Catches rows selected by all tracks rather than eligible ones."""
    p = Problem(value=[2.0, 9.0], upper=[3.0, 0.0], artist=[0, 1], licensor=[0, 1], campaign=[0, 1],
                floors=[0.0, 4.0], capacity=5.0, artist_cap=10.0, licensor_cap=10.0, penalty=6.0)
    sol = solve(p, method="exact")
    assert sol.x == pytest.approx([3.0, 0.0], abs=1e-9)
    # c1's floor 4 can only be met by track 1, which is ineligible: short by 4, priced at p = 6
    assert_table(rows_of(p, sol), {
        ("capacity", ""): (5.0, 2.0, 0.0),
        ("artist_cap", "a0000"): (10.0, 7.0, 0.0),
        ("licensor_cap", "l0000"): (10.0, 7.0, 0.0),
        ("campaign_floor", "c0000"): (0.0, 3.0, 0.0),
        ("campaign_floor", "c0001"): (4.0, 0.0, 6.0),
        ("track_cap", "t0000"): (3.0, 0.0, 2.0),
    })


def test_no_eligible_track_publishes_capacity_and_floors_only():
    """Every ub = 0: x = 0, so the capacity row has slack K = 8 and price 0;
    the floors (3 and 1) are short by all of it (u > 0): prices p = 5, slacks
    0 + u - F = 0. No artist, licensor or track rows."""
    p = Problem(value=[4.0, 1.0], upper=[0.0, 0.0], artist=[0, 1], licensor=[0, 0], campaign=[0, 1],
                floors=[3.0, 1.0], capacity=8.0, artist_cap=2.0, licensor_cap=2.0, penalty=5.0)
    sol = solve(p, method="exact")
    assert_table(rows_of(p, sol), {
        ("capacity", ""): (8.0, 8.0, 0.0),
        ("campaign_floor", "c0000"): (3.0, 0.0, 5.0),
        ("campaign_floor", "c0001"): (1.0, 0.0, 5.0),
    })


def test_a_summation_overshoot_is_published_as_zero_slack():
    """A clean plan may overshoot a bound by summation rounding; the slack
    column is >= 0 (the schema's contract) and reads 0 there, while a true
    slack is kept. Hand-built solution: x = (0.5 + 1e-12, 0.5) on K = 1, one
    artist with cap 1 (both overshoot by 1e-12), licensor cap 3 (slack 2)."""
    p = Problem(value=[1.0, 1.0], upper=[1.0, 1.0], artist=[0, 0], licensor=[0, 0], campaign=[0, 0],
                floors=[0.0], capacity=1.0, artist_cap=1.0, licensor_cap=3.0, penalty=1.0)
    x = np.array([0.5 + 1e-12, 0.5])
    sol = Solution(x=x, shortfall=np.zeros(1), objective=1.0, capacity_price=1.0, artist_price=np.zeros(1),
                   licensor_price=np.zeros(1), floor_price=np.zeros(1), track_price=np.zeros(2), method="hand")
    got = table(rows_of(p, sol))
    assert got[("capacity", "")][1] == 0.0
    assert got[("artist_cap", "a0000")][1] == 0.0
    assert got[("licensor_cap", "l0000")][1] == pytest.approx(2.0, abs=1e-9)
    assert got[("track_cap", "t0000")][1] == pytest.approx(0.5, abs=1e-9)


def test_ids_given_as_lists_are_published_verbatim():
    """The ids are opaque strings, given as any sequence (explain passes the
    campaigns as a Python list): each key is the id exactly as given, even
    one numpy's fixed-width strings would alter (a trailing NUL is dropped by
    np.array(list_of_str)). Catches ids converted through a '<U' array."""
    p = artist_problem()
    sol = solve(p, method="exact")
    artist_ids, licensor_ids = ["art\x00", "artist é"], ["lic 0\x00", "lic 1"]
    campaign_ids, track_ids = ["camp\x00"], ["t\x00", "t1\x00\x00", "t2"]
    rows = price_rows(p, sol, artist_ids, licensor_ids, campaign_ids, track_ids)
    keys = {c: list(g["key"]) for c, g in rows.groupby("constraint", sort=False)}
    assert keys == {"capacity": [""], "artist_cap": artist_ids, "licensor_cap": licensor_ids,
                    "campaign_floor": campaign_ids, "track_cap": track_ids}


# ----------------------------------------------------------------------------- columns and schema

def test_columns_match_the_prices_schema():
    """price_columns gives the schema's constraint/key/bound/slack/price columns
    (names, order, numpy types: strings as objects, doubles as float64), every
    array of one length, and the capacity row's key is empty; the rows, with
    the table's partition columns added, conform to PRICES unchanged."""
    p = capacity_problem()
    sol = solve(p, method="exact")
    cols = price_columns(p, sol, ids("a", 3), ids("l", 2), ids("c", 1), ids("t", 3))
    schema_cols = [f.name for f in PRICES.fields if f.name not in ("score_date", "snapshot_id", "market", "surface")]
    assert tuple(cols) == PRICE_COLUMNS == tuple(schema_cols)
    assert {len(v) for v in cols.values()} == {1 + 3 + 2 + 1 + 3}
    assert cols["constraint"].dtype == object and cols["key"].dtype == object
    for c in ("bound", "slack", "price"):
        assert cols[c].dtype == np.float64, c
    assert cols["key"][list(cols["constraint"]).index("capacity")] == CAPACITY_KEY == ""
    rows = pd.DataFrame(cols).assign(score_date=dt.date(2026, 11, 25), snapshot_id="s", market="US", surface="radio")
    back = PRICES.conform(pa.Table.from_pandas(rows, preserve_index=False)).to_pandas()
    assert back[list(PRICE_COLUMNS)].equals(pd.DataFrame(cols))


# ----------------------------------------------------------------------------- lookups, reduced costs, dual bound

def test_lookup_prices_reads_each_family_by_its_key():
    """Hand rows: capacity 2, artist a1 3, licensor l1 5, floor c1 7, track
    t0 11. Track t0 (a1, l0, c1, t0) faces (2, 3, 0, 7, 11); track t1
    (a0, l1, c0, t1) faces (2, 0, 5, 0, 0): a key without a row (a0, l0, c0,
    t1) faces 0. Catches a missing key defaulting to anything but 0 and a
    family read under another name."""
    rows = pd.DataFrame({"constraint": ["capacity", "artist_cap", "licensor_cap", "campaign_floor", "track_cap"],
                         "key": ["", "a1", "l1", "c1", "t0"], "bound": [9.0] * 5, "slack": [0.0] * 5,
                         "price": [2.0, 3.0, 5.0, 7.0, 11.0]})
    tracks = pd.DataFrame({"track_id": ["t0", "t1"], "artist_id": ["a1", "a0"], "licensor_id": ["l0", "l1"],
                           "campaign_id": ["c1", "c0"]})
    faced = lookup_prices(rows, tracks)
    assert set(faced) == set(PRICE_CONSTRAINTS)
    expected = {"capacity": [2.0, 2.0], "artist_cap": [3.0, 0.0], "licensor_cap": [0.0, 5.0],
                "campaign_floor": [7.0, 0.0], "track_cap": [11.0, 0.0]}
    for family, want in expected.items():
        assert faced[family].tolist() == want, family
    # r = v - y0 - ya - yl + zc: 20 - 2 - 3 - 0 + 7 = 22 and 20 - 2 - 0 - 5 + 0 = 13
    assert reduced_costs(np.array([20.0, 20.0]), faced).tolist() == [22.0, 13.0]


def test_lookup_prices_without_rows_faces_zero_everywhere():
    """No price rows at all (e.g. a surface whose LP published none): every
    track faces price 0 in every family, the capacity included. Catches a
    lookup that assumes a capacity row or defaults a missing one to non-zero."""
    rows = pd.DataFrame({c: pd.Series([], dtype=object if c in ("constraint", "key") else float)
                         for c in PRICE_COLUMNS})
    tracks = pd.DataFrame({"track_id": ["t0", "t1", "t2"], "artist_id": ["a0"] * 3, "licensor_id": ["l0"] * 3,
                           "campaign_id": ["c0"] * 3})
    faced = lookup_prices(rows, tracks)
    for family in PRICE_CONSTRAINTS:
        assert faced[family].tolist() == [0.0, 0.0, 0.0], family


def test_round_trip_on_the_floor_problem_certifies_the_plan():
    """floor_problem's rows, looked up per track: r_0 = 1 - 2 + 7 = 6,
    r_1 = 2 - 2 = 0; the track rows faced are w = (6, 0). The dual bound is
    K*y_0 - F_0*z_0 + Σ ub*max(0, r) = 6*2 - 10*7 + 3*6 = -40, which equals
    the plan's objective 1*3 + 2*3 - 7*7 = -40 (an optimal plan)."""
    p = floor_problem()
    sol = solve(p, method="exact")
    rows = rows_of(p, sol)
    tracks = pd.DataFrame({"track_id": ids("t", 2), "artist_id": ids("a", 2), "licensor_id": ids("l", 2),
                           "campaign_id": ids("c", 2)})
    faced = lookup_prices(rows, tracks)
    assert faced["track_cap"] == pytest.approx([6.0, 0.0], abs=TOL)
    r = reduced_costs(p.value, faced)
    assert r == pytest.approx([6.0, 0.0], abs=TOL)
    assert dual_bound(rows, p.upper, r) == pytest.approx(-40.0, abs=1e-6)
    assert objective(p, sol.x, sol.shortfall) == pytest.approx(-40.0, abs=1e-9)
