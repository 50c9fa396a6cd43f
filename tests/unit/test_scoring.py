"""Scoring math of docs/design.md §4: estimators, pacing and one market's scores."""
import datetime as dt
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from pipelines import arrays
from pipelines.config import Config
from pipelines.scoring import campaigns, estimation, signals
from pipelines.scoring import market as market_scoring
from schemas import DAILY_AGGREGATES, ENROLLMENTS, PROMOTION_SURFACES, SURFACE_TOTALS

UTC = dt.timezone.utc
AS_OF = dt.date(2024, 5, 20)
SCORE_DATE = AS_OF + dt.timedelta(days=1)
CFG = Config()
WINDOW = signals.window_days(AS_OF, CFG.window_days)

finite = dict(allow_nan=False, allow_infinity=False)


# ----------------------------------------------------------- decay_weights ---
def test_window_days_are_the_trailing_window_ending_on_as_of():
    days = signals.window_days(AS_OF, 28)  # called here: a module constant is computed before a mutant runs
    assert len(days) == 28
    assert days[-1] == AS_OF
    assert days[0] == AS_OF - dt.timedelta(days=27)
    assert all((b - a).days == 1 for a, b in zip(days, days[1:]))
    assert signals.window_days(AS_OF, 1) == [AS_OF]


@given(half_life=st.integers(1, 60), start=st.integers(0, 200))
def test_decay_weights_halve_every_half_life(half_life, start):
    as_of = signals.daynum(AS_OF)
    days = np.array([as_of - start - k * half_life for k in range(4)])
    w = signals.decay_weights(days, as_of, float(half_life))
    for k in range(3):
        assert w[k + 1] == pytest.approx(w[k] / 2, rel=1e-12)


def test_decay_weights_are_one_on_as_of_and_decreasing_with_age():
    as_of = signals.daynum(AS_OF)
    days = np.array([signals.daynum(d) for d in WINDOW])
    w = signals.decay_weights(days, as_of, 14.0)
    assert w[-1] == 1.0
    assert w[-15] == pytest.approx(0.5)
    assert np.all(np.diff(w) > 0)  # WINDOW runs oldest first


def test_weighted_plays_decay_with_the_half_life():
    """score_market's weighted_plays: one play a day on radio over the window
    sums to sum over ages a of 0.5 ** (a / half_life) (catches a wrong base,
    sign or half-life in the weights score_market uses)."""
    cfg = Config(half_life_days=7.0)
    scores = run_market([enroll_row("a")], daily("a", surfaces=["radio"], plays=1), cfg=cfg).scores
    radio = scores[(scores["surface"] == "radio")].iloc[0]
    assert radio["weighted_plays"] == pytest.approx(sum(0.5 ** (a / 7.0) for a in range(28)), rel=1e-12)
    assert radio["plays"] == 28


# -------------------------------------------------------------- estimation ---
@st.composite
def binomial(draw):
    trials = draw(st.floats(0.0, 1e5, **finite))
    successes = draw(st.floats(0.0, 1.0, **finite)) * trials
    return successes, trials


@given(binomial(), st.floats(0.001, 0.999), st.one_of(st.just(0.0), st.floats(1e-6, 1e4)))
def test_shrink_lies_between_raw_rate_and_baseline(obs, baseline, strength):
    successes, trials = obs
    assume(trials + strength > 0)
    s = float(estimation.shrink(successes, trials, baseline, strength))
    raw = successes / trials if trials > 0 else baseline
    eps = 1e-12
    assert min(raw, baseline) - eps <= s <= max(raw, baseline) + eps


def test_shrink_limits():
    assert estimation.shrink(3, 10, 0.5, 0.0) == pytest.approx(0.3)       # no prior: the raw rate
    assert estimation.shrink(0, 0, 0.2, 50.0) == pytest.approx(0.2)       # no data: the baseline
    near_raw = estimation.shrink(30_000, 100_000, 0.5, 10.0)
    near_base = estimation.shrink(3, 10, 0.5, 10_000.0)
    assert abs(near_raw - 0.3) < abs(near_base - 0.3)
    np.testing.assert_allclose(estimation.shrink(np.array([1, 5]), np.array([10, 10]), 0.3, 10.0),
                               [(1 + 3) / 20, (5 + 3) / 20])


@given(trials=st.integers(1, 2000), baseline=st.floats(0.01, 0.99), strength=st.floats(0.0, 1000.0),
       threshold=st.floats(0.0, 0.999), data=st.data())
def test_prob_above_increases_with_successes(trials, baseline, strength, threshold, data):
    s1 = data.draw(st.integers(0, trials))
    s2 = data.draw(st.integers(s1, trials))
    p1, p2 = (float(estimation.prob_above(s, trials, baseline, strength, threshold)) for s in (s1, s2))
    assert 0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0
    assert p1 <= p2 + 1e-12


def test_prob_above_separates_clear_cases():
    low = estimation.prob_above(10, 100, 0.2, 20.0, 0.25)
    high = estimation.prob_above(60, 100, 0.2, 20.0, 0.25)
    assert low < 0.1 < 0.9 < high
    assert estimation.prob_above(100, 100, 0.5, 10.0, 1.0) == 0.0  # no rate exceeds 1


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 500)), min_size=0, max_size=12),
       st.floats(0.01, 0.99), st.floats(0.0, 100.0), st.floats(100.0, 1e5))
def test_prior_strength_is_within_its_clip_bounds(pairs, baseline, lo, hi):
    successes = np.array([min(s, n) for s, n in pairs], dtype=float)
    trials = np.array([n for _, n in pairs], dtype=float)
    mean, k = estimation.fit_beta_prior(successes, trials, trials, lo, hi, baseline)
    assert lo <= k <= hi
    if len(pairs):   # the pool's mean lies among its rates
        rates = successes / trials
        assert rates.min() - 1e-12 <= mean <= rates.max() + 1e-12
    else:            # no pool: the fallback (the baseline)
        assert mean == baseline


def test_prior_strength_is_large_when_all_tracks_share_the_rate():
    trials = np.full(10, 200.0)
    same = estimation.fit_beta_prior(0.25 * trials, trials, trials, 5.0, 2000.0, 0.25)
    assert same == (pytest.approx(0.25), 2000.0)
    # Rates that differ far more than binomial noise: a weak prior.
    spread = np.array([0.05, 0.5, 0.1, 0.45, 0.2, 0.3, 0.02, 0.48, 0.25, 0.15]) * trials
    _, weak = estimation.fit_beta_prior(spread, trials, trials, 5.0, 2000.0, 0.25)
    assert 5.0 <= weak < 50.0
    # Too few tracks to estimate anything: the strongest prior.
    assert estimation.fit_beta_prior(np.array([1.0, 50.0]), np.array([100.0, 100.0]), np.array([100.0, 100.0]),
                                     5.0, 2000.0, 0.25)[1] == 2000.0


# ------------------------------------------------------------------ pacing ---
@given(base=st.floats(0.1, 1e4), flight=st.integers(2, 60), data=st.data())
def test_pacing_multiplier_behind_ahead_on_pace(base, flight, data):
    remaining = data.draw(st.integers(1, flight - 1))
    elapsed = flight - remaining
    on_pace = base * elapsed
    m = campaigns.pacing_multiplier(on_pace, base, flight, remaining, 0.5, 2.0)
    assert m == pytest.approx(1.0, rel=1e-9)
    behind = campaigns.pacing_multiplier(on_pace * 0.5, base, flight, remaining, 0.5, 2.0)
    ahead = campaigns.pacing_multiplier(on_pace * 1.5 + base, base, flight, remaining, 0.5, 2.0)
    assert behind > 1.0 or elapsed == 0
    assert ahead < 1.0
    assert 0.5 <= behind <= 2.0 and 0.5 <= ahead <= 2.0


def test_pacing_multiplier_values_and_clipping():
    # 10-day flight at 100/day, 5 days left, 300 delivered: 700 to go over 5 days.
    assert campaigns.pacing_multiplier(300.0, 100.0, 10, 5, 0.1, 5.0) == pytest.approx(1.4)
    assert campaigns.pacing_multiplier(0.0, 100.0, 30, 1, 0.5, 2.0) == 2.0      # far behind: clipped
    assert campaigns.pacing_multiplier(5000.0, 100.0, 10, 5, 0.5, 2.0) == 0.5   # far ahead: clipped
    assert campaigns.pacing_multiplier(0.0, 0.0, 10, 5, 0.5, 2.0) == 1.0        # nothing to pace
    assert campaigns.pacing_multiplier(0.0, 100.0, 10, 0, 0.5, 2.0) == 1.0      # flight over
    assert type(campaigns.pacing_multiplier(300.0, 100.0, 10, 5, 0.1, 5.0)) is float   # scalars in, a float out


# ------------------------------------------------------------ frames ---
def enroll_row(track, **over):
    row = dict(campaign_id=f"c-{track}", track_id=track, artist_id=f"a-{track}", licensor_id=f"l-{track}",
               market="SE", surfaces=list(PROMOTION_SURFACES), start_date=dt.date(2024, 5, 1),
               end_date=dt.date(2024, 5, 31), commission_rate=0.3, release_date=dt.date(2020, 1, 1),
               status="active", updated_at=dt.datetime(2024, 5, 1, tzinfo=UTC))
    row.update(over)
    return row


def frame(rows, table):
    """Build the pandas frame exactly as the pipeline does (Arrow -> pandas)."""
    return pa.Table.from_pylist(rows, schema=table.arrow()).to_pandas()


def agg_row(track, day, surface, plays, skips=0, saves=0, promoted=0, listeners=None):
    return dict(dt=day, track_id=track, market="SE", surface=surface, plays=plays,
                listeners=plays if listeners is None else listeners, skips=skips, saves=saves,
                promoted_plays=promoted, ms_played=plays * 100_000)


def totals_for(aggs, days, bg_plays=1000, bg_skips=250, bg_saves=50):
    """Surface totals: the enrolled tracks' plays plus background plays of other tracks."""
    out = []
    for day in days:
        for s in PROMOTION_SURFACES:
            mine = [a for a in aggs if a["dt"] == day and a["surface"] == s]
            out.append(dict(dt=day, market="SE", surface=s,
                            plays=bg_plays + sum(a["plays"] for a in mine),
                            skips=bg_skips + sum(a["skips"] for a in mine),
                            saves=bg_saves + sum(a["saves"] for a in mine),
                            promoted_plays=sum(a["promoted_plays"] for a in mine)))
    return out


def daily(track, surfaces=PROMOTION_SURFACES, days=WINDOW, **counts):
    return [agg_row(track, d, s, **counts) for d in days for s in surfaces]


def run_market(enrolled_rows, agg_rows, cfg=CFG, total_rows=None, observed=WINDOW, method="exact", **before):
    """score_market of market SE for AS_OF; `before`: what it reads of the previous snapshot
    (pulled_back_before, plan, state, plan_snapshot_id)."""
    enrolled = frame(enrolled_rows, ENROLLMENTS)
    aggregates = frame(agg_rows, DAILY_AGGREGATES)
    totals = frame(total_rows if total_rows is not None else totals_for(agg_rows, WINDOW), SURFACE_TOTALS)
    return market_scoring.score_market("SE", enrolled, aggregates, totals, observed, AS_OF, cfg, method, **before)


# ----------------------------------------------------------- eligibility ---
ALL_S = set(PROMOTION_SURFACES)
# track -> (enrollment overrides, aggregate rows, {surface: expected reason})
ELIGIBILITY = {
    "good": (dict(), daily("good", plays=10, skips=2, saves=1), {}),
    "cancelled": (dict(status="cancelled"), daily("cancelled", plays=10, skips=2, saves=1),
                  dict.fromkeys(ALL_S, "campaign_cancelled")),
    "paused": (dict(status="paused"), daily("paused", plays=10, skips=2, saves=1),
               dict.fromkeys(ALL_S, "campaign_paused")),
    "not_started": (dict(start_date=SCORE_DATE + dt.timedelta(days=1), end_date=dt.date(2024, 6, 30)),
                    daily("not_started", plays=10, skips=2, saves=1),
                    dict.fromkeys(ALL_S, "outside_flight")),
    "ended": (dict(end_date=AS_OF), daily("ended", plays=10, skips=2, saves=1),
              dict.fromkeys(ALL_S, "outside_flight")),
    "radio_only": (dict(surfaces=["radio"]), daily("radio_only", plays=10, skips=2, saves=1),
                   {"autoplay": "surface_not_enrolled", "mixes": "surface_not_enrolled"}),
    "too_new": (dict(release_date=SCORE_DATE - dt.timedelta(days=29)),
                daily("too_new", days=WINDOW[-20:], plays=10, skips=2, saves=1),
                dict.fromkeys(ALL_S, "too_new")),
    "just_old_enough": (dict(release_date=SCORE_DATE - dt.timedelta(days=30)),
                        daily("just_old_enough", days=WINDOW[-20:], plays=10, skips=2, saves=1), {}),
    # 19 plays on promotion surfaces in the window, plus plays before the window that do not count
    "too_few": (dict(), daily("too_few", surfaces=["radio"], days=WINDOW[-19:], plays=1)
                + daily("too_few", surfaces=["mixes"], days=[WINDOW[0] - dt.timedelta(days=3)], plays=500),
                dict.fromkeys(ALL_S, "too_few_plays")),
    "exactly_enough": (dict(), daily("exactly_enough", surfaces=["radio"], days=WINDOW[-20:], plays=1), {}),
    # many plays and a skip rate far above the ~25% baseline
    "disliked": (dict(), daily("disliked", plays=30, skips=27, saves=0),
                 dict.fromkeys(ALL_S, "listeners_dislike")),
    # several reasons at once: the first in REASONS order wins
    "cancelled_new_few": (dict(status="cancelled", release_date=SCORE_DATE, surfaces=["mixes"]), [],
                          dict.fromkeys(ALL_S, "campaign_cancelled")),
    "paused_outside": (dict(status="paused", end_date=AS_OF - dt.timedelta(days=2)), [],
                       dict.fromkeys(ALL_S, "campaign_paused")),
    "outside_not_enrolled": (dict(end_date=AS_OF, surfaces=["radio"]), [],
                             dict.fromkeys(ALL_S, "outside_flight")),
}


@pytest.fixture  # per test (cheap): mutation testing attributes a fixture's calls to the test that ran it
def eligibility_result():
    enrolled = [enroll_row(t, **o) for t, (o, _, _) in ELIGIBILITY.items()]
    aggs = [a for _, rows, _ in ELIGIBILITY.values() for a in rows]
    return run_market(enrolled, aggs)


def test_every_enrolled_track_gets_a_row_per_promotion_surface(eligibility_result):
    s = eligibility_result.scores
    assert len(s) == 3 * len(ELIGIBILITY)
    assert set(zip(s["track_id"], s["surface"])) == {(t, x) for t in ELIGIBILITY for x in PROMOTION_SURFACES}
    assert set(s["market"]) == {"SE"}


def test_ineligible_rows_have_their_reason_and_zero_plan(eligibility_result):
    s = eligibility_result.scores.set_index(["track_id", "surface"])
    for track, (_, _, expected) in ELIGIBILITY.items():
        for surface in PROMOTION_SURFACES:
            row = s.loc[(track, surface)]
            reason = expected.get(surface)
            assert row["reason"] == reason, (track, surface, row["reason"])
            assert bool(row["eligible"]) == (reason is None), (track, surface)
            if reason is not None:
                assert row["planned_promoted_plays"] == 0.0, (track, surface)
                assert row["score"] == 0.0, (track, surface)
                assert row["max_promoted_plays"] == 0.0, (track, surface)
                assert row["boost_probability"] == 0.0, (track, surface)


def test_eligible_tracks_with_positive_value_get_plays(eligibility_result):
    s = eligibility_result.scores.set_index(["track_id", "surface"])
    for surface in PROMOTION_SURFACES:
        good = s.loc[("good", surface)]
        assert good["value"] > 0  # fewer skips, more saves than the baseline
        assert good["planned_promoted_plays"] > 0
        assert good["max_promoted_plays"] == pytest.approx(CFG.track_boost_cap * good["supply_forecast"])
        disliked = s.loc[("disliked", surface)]
        assert disliked["value"] < 0
        assert disliked["skip_rate"] > good["skip_rate"]


def test_signals_count_only_the_window(eligibility_result):
    s = eligibility_result.scores.set_index(["track_id", "surface"])
    assert s.loc[("too_few", "radio"), "plays"] == 19
    assert s.loc[("too_few", "mixes"), "plays"] == 0   # its 500 mixes plays are before the window
    assert s.loc[("good", "radio"), "plays"] == 10 * 28
    assert s.loc[("good", "radio"), "skips"] == 2 * 28
    assert s.loc[("good", "radio"), "saves"] == 28
    # no promoted plays: the forecast of organic plays is the daily average (the model's within 1%: it
    # applies the surface's weekday factors, fitted on totals that step up when the young tracks start)
    assert s.loc[("good", "radio"), "supply_forecast"] == pytest.approx(10.0, rel=0.01)
    assert s.loc[("good", "radio"), "supply_forecast_low"] <= 10 <= s.loc[("good", "radio"), "supply_forecast_high"]


def test_capacity_rows_follow_the_config(eligibility_result):
    cap = eligibility_result.capacity.set_index("surface")
    assert sorted(cap.index) == sorted(PROMOTION_SURFACES)
    s = eligibility_result.scores
    for surface, row in cap.iterrows():
        assert row["promoted_share_cap"] == CFG.promoted_share_cap
        assert row["capacity"] == pytest.approx(CFG.promoted_share_cap * row["total_forecast"])
        assert row["artist_cap"] == pytest.approx(CFG.artist_share_cap * row["capacity"])
        assert row["licensor_cap"] == pytest.approx(CFG.licensor_share_cap * row["capacity"])
        mine = s[s["surface"] == surface]
        assert row["planned_total"] == pytest.approx(mine["planned_promoted_plays"].sum())
        assert row["candidates"] == len(mine)
        assert row["eligible_rows"] == int(mine["eligible"].sum())
        # the background has 25% skips and 5% saves; tracks move it only a little
        assert 0.2 < row["baseline_skip_rate"] < 0.3
        assert 0.03 < row["baseline_save_rate"] < 0.07


def test_choose_enrollments_prefers_the_live_campaign():
    rows = [
        enroll_row("t", campaign_id="old", start_date=dt.date(2024, 4, 1), end_date=dt.date(2024, 4, 30)),
        enroll_row("t", campaign_id="live", start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 5, 31)),
        enroll_row("t", campaign_id="next", start_date=dt.date(2024, 6, 1), end_date=dt.date(2024, 6, 30)),
        enroll_row("t", campaign_id="live_paused", status="paused"),
        enroll_row("u", campaign_id="u_old", start_date=dt.date(2024, 3, 1), end_date=dt.date(2024, 3, 31)),
        enroll_row("u", campaign_id="u_next", start_date=dt.date(2024, 6, 1), end_date=dt.date(2024, 6, 30)),
    ]
    chosen = campaigns.choose_enrollments(frame(rows, ENROLLMENTS), SCORE_DATE)
    assert dict(zip(chosen["track_id"], chosen["campaign_id"])) == {"t": "live", "u": "u_next"}


def test_one_row_per_track_even_with_two_campaigns():
    rows = [enroll_row("t", campaign_id="c1"), enroll_row("t", campaign_id="c2", status="cancelled")]
    result = run_market(rows, daily("t", plays=10, skips=2, saves=1))
    assert len(result.scores) == 3
    assert set(result.scores["campaign_id"]) == {"c1"}


def test_campaign_floor_is_met_even_for_a_track_of_negative_value():
    """A live campaign whose only track has a negative value still gets its floor:
    the shortfall penalty outweighs the value (docs/design.md §4)."""
    enrolled = [enroll_row("meh"), enroll_row("good")]
    aggs = daily("meh", plays=20, skips=6, saves=0) + daily("good", plays=20, skips=3, saves=2)
    result = run_market(enrolled, aggs)
    s = result.scores.set_index(["track_id", "surface"])
    d = result.delivery.set_index(["campaign_id", "surface"])
    for surface in PROMOTION_SURFACES:
        assert s.loc[("meh", surface), "eligible"]
        assert s.loc[("meh", surface), "value"] < 0
        row = d.loc[("c-meh", surface)]
        assert row["floor"] > 0
        assert row["shortfall"] == pytest.approx(0.0, abs=1e-9)
        assert s.loc[("meh", surface), "planned_promoted_plays"] == pytest.approx(row["floor"], rel=1e-6)


# ---------------------------------------------------- random small markets ---
@st.composite
def small_market(draw):
    """Mostly live, enrolled, old-enough tracks (so that the LP has work to do and
    caps bind), with a few of every kind of ineligible row."""
    n = draw(st.integers(1, 7))
    enrolled, aggs = [], []
    days = WINDOW[-draw(st.integers(1, 10)):]
    for i in range(n):
        track = f"t{i}"
        start = SCORE_DATE + dt.timedelta(days=draw(st.integers(-30, 1)))
        surfaces = draw(st.lists(st.sampled_from(PROMOTION_SURFACES), min_size=1, max_size=3, unique=True))
        enrolled.append(enroll_row(
            track,
            campaign_id=f"c{draw(st.integers(0, 2))}",
            artist_id=f"a{draw(st.integers(0, 2))}",
            licensor_id=f"l{draw(st.integers(0, 1))}",
            surfaces=surfaces,
            start_date=start,
            end_date=max(start, SCORE_DATE + dt.timedelta(days=draw(st.integers(-1, 30)))),
            release_date=SCORE_DATE - dt.timedelta(days=draw(st.integers(0, 400))),
            status=draw(st.sampled_from(["active"] * 6 + ["paused", "cancelled"])),
        ))
        played = draw(st.lists(st.sampled_from(PROMOTION_SURFACES), max_size=3, unique=True))
        for surface in sorted(set(played) | set(surfaces[:1])):
            for day in days:
                plays = draw(st.integers(0, 60))
                skips = draw(st.integers(0, plays))
                saves = draw(st.integers(0, plays - skips))
                promoted = draw(st.integers(0, plays // 3))
                aggs.append(agg_row(track, day, surface, plays, skips, saves, promoted))
    cfg = Config.from_mapping(dict(
        promoted_share_cap=draw(st.sampled_from([0.01, 0.05, 0.1, 0.5])),
        track_boost_cap=draw(st.sampled_from([0.2, 0.5, 1.0])),
        artist_share_cap=draw(st.sampled_from([0.1, 0.25, 1.0])),
        licensor_share_cap=draw(st.sampled_from([0.2, 0.4, 1.0])),
        floor_fraction=draw(st.sampled_from([0.0, 0.2, 0.9])),
        min_window_plays=draw(st.sampled_from([0, 20])),
    ))
    bg = draw(st.integers(0, 100))
    return enrolled, aggs, totals_for(aggs, days, bg_plays=bg, bg_skips=bg // 4, bg_saves=bg // 20), days, cfg


def _le(a, b):
    return a <= b + 1e-6 * max(1.0, abs(b))


@settings(max_examples=25, deadline=None)
@given(small_market())
def test_random_markets_respect_every_cap(market):
    enrolled, aggs, totals, days, cfg = market
    result = run_market(enrolled, aggs, cfg=cfg, total_rows=totals, observed=days)
    s, cap, d = result.scores, result.capacity.set_index("surface"), result.delivery

    assert len(s) == 3 * len({r["track_id"] for r in enrolled})
    assert not s.duplicated(["track_id", "surface"]).any()
    for surface in PROMOTION_SURFACES:
        r = s[s["surface"] == surface]
        c = cap.loc[surface]
        x = r["planned_promoted_plays"].to_numpy()
        E = r["supply_forecast"].to_numpy()
        ub = r["max_promoted_plays"].to_numpy()
        elig = r["eligible"].to_numpy(dtype=bool)

        assert c["capacity"] == pytest.approx(cfg.promoted_share_cap * c["total_forecast"])
        assert c["artist_cap"] == pytest.approx(cfg.artist_share_cap * c["capacity"])
        assert c["licensor_cap"] == pytest.approx(cfg.licensor_share_cap * c["capacity"])
        assert np.all(x >= 0)
        assert np.all(E >= 0)
        np.testing.assert_allclose(ub, np.where(elig, cfg.track_boost_cap * E, 0.0), rtol=1e-12)
        assert all(_le(xi, ui) for xi, ui in zip(x, ub)), "per-track cap"
        assert _le(x.sum(), c["capacity"]), "capacity"
        for _, total in r.groupby("artist_id")["planned_promoted_plays"].sum().items():
            assert _le(total, c["artist_cap"]), "artist cap"
        for _, total in r.groupby("licensor_id")["planned_promoted_plays"].sum().items():
            assert _le(total, c["licensor_cap"]), "licensor cap"
        assert np.all(x[~elig] == 0)
        assert r.loc[~elig, "reason"].isin(market_scoring.REASONS).all()
        assert r.loc[elig, "reason"].isna().all()

        score = r["score"].to_numpy()
        assert np.all((score >= 0) & (score <= 1))
        assert np.all(score[~elig] == 0)
        bp = r["boost_probability"].to_numpy()
        np.testing.assert_allclose(bp[E > 0], x[E > 0] / E[E > 0], rtol=1e-9, atol=1e-12)
        assert np.all(bp[E == 0] == 0)
        assert c["planned_total"] == pytest.approx(x.sum(), abs=1e-9)

        dm = d[d["surface"] == surface]
        for row in dm.itertuples():
            planned = r.loc[r["campaign_id"] == row.campaign_id, "planned_promoted_plays"].sum()
            assert row.planned == pytest.approx(planned, abs=1e-9)
            assert row.shortfall == pytest.approx(max(0.0, row.floor - row.planned), abs=1e-9)
            assert 0 <= row.floor <= row.max_boost + 1e-9
            assert cfg.pacing_min <= row.pacing_multiplier <= cfg.pacing_max


# ------------------------------------------------- array helpers of a market ---
def _pandas_group_sum(codes, values, n_groups):
    """The reference: what a pandas group-by sum gives (rows coded -1 dropped)."""
    df = pd.DataFrame({"g": codes, "v": values})
    return df[df["g"] >= 0].groupby("g")["v"].sum().reindex(range(n_groups), fill_value=0.0).to_numpy()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 6), st.floats(-1e6, 1e6, **finite)
                          | st.sampled_from([1e16, -1e16, 0.1, 1e-10, 3.0])), max_size=60))
def test_group_sum_is_bit_for_bit_a_pandas_group_by_sum(rows):
    """Kahan-compensated in row order, like pandas: a plain sum rounds
    differently (1e16 + 1 + 1 ...), so the scores would move."""
    codes = np.array([c for c, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=float)
    expected = _pandas_group_sum(codes, values, 7)
    np.testing.assert_array_equal(arrays.group_sum(codes, values, 7), expected)
    both = arrays.group_sum(codes, np.stack([values, -2.0 * values]), 7)
    np.testing.assert_array_equal(both[0], expected)
    np.testing.assert_array_equal(both[1], _pandas_group_sum(codes, -2.0 * values, 7))


def test_group_sum_differs_from_a_naive_sum_where_pandas_does():
    codes = np.zeros(5, dtype=np.int64)
    values = np.array([1e16, 1.0, 1.0, 1.0, 1.0])
    assert arrays.group_sum(codes, values, 1)[0] == 1e16 + 4.0   # compensated
    assert np.bincount(codes, weights=values)[0] == 1e16           # naive loses the ones


@given(st.lists(st.lists(st.floats(-1e9, 1e9, **finite) | st.just(1e16), min_size=4, max_size=4),
                min_size=1, max_size=6))
def test_compensated_sum_is_the_group_sum_of_terms_in_order(terms):
    terms = np.array(terms)          # (k terms, 4 groups)
    codes = np.tile(np.arange(4), len(terms))
    np.testing.assert_array_equal(arrays.compensated_sum(terms), _pandas_group_sum(codes, terms.ravel(), 4))


@given(st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=30))
def test_sorted_codes_is_pandas_factorize_sorted(values):
    values = np.array(values, dtype=object)
    codes, uniques = arrays.sorted_codes(values)
    want_codes, want_uniques = pd.factorize(values, sort=True)
    np.testing.assert_array_equal(codes, want_codes)
    assert list(uniques) == list(want_uniques)


@settings(deadline=None)
@given(successes=st.floats(0, 500), extra=st.floats(0, 500), baseline=st.floats(0.001, 0.999),
       strength=st.floats(0, 1000), threshold=st.floats(-0.5, 1.5))
def test_prob_above_is_the_beta_survival_function(successes, extra, baseline, strength, threshold):
    """`special.betaincc` directly: the values `stats.beta.sf` gives, ends of the support included."""
    trials = successes + extra
    a = max(baseline * strength + successes, 1e-9)
    b = max((1 - baseline) * strength + trials - successes, 1e-9)
    want = 0.0 if threshold >= 1.0 else scipy_stats.beta.sf(min(threshold, 1.0), a, b)
    assert estimation.prob_above(successes, trials, baseline, strength, threshold) == want


def test_daynums_of_dates_datetimes_and_strings():
    days = [dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(2024, 5, 21)]
    want = [-1, 0, 19864]
    assert signals.daynums(pd.Series(days, dtype=object)).tolist() == want
    assert signals.daynums(pd.Series(pd.to_datetime(days))).tolist() == want
    assert signals.daynums(pd.Series([d.isoformat() for d in days])).tolist() == want
    with_null = signals.daynums(pd.Series([days[2], None], dtype=object))
    assert with_null[0] == want[2] and with_null[1] == np.datetime64("NaT").astype(np.int64)
    assert signals.daynums(pd.Series([], dtype=object)).tolist() == []
    for values in (pd.Series(days, dtype=object), pd.Series(pd.to_datetime(days)), [d.isoformat() for d in days],
                   pd.Series([], dtype=object), np.array(days, dtype=object)):
        assert signals.daynums(values).dtype == np.int64   # day numbers index and compare as integers
    assert signals.daynums(np.array(days, dtype=object)).tolist() == want


def test_enrolled_on_reads_lists_and_arrays():
    surfaces = np.array([["radio", "mixes"], np.array(["autoplay"], dtype=object), [], ["search", "radio"]],
                        dtype=object)
    on = campaigns.enrolled_on(surfaces)
    assert on.shape == (len(PROMOTION_SURFACES), 4)
    got = {(PROMOTION_SURFACES[s], t) for s, t in zip(*np.nonzero(on))}
    assert got == {("radio", 0), ("mixes", 0), ("autoplay", 1), ("radio", 3)}
    # only empty lists: nothing to infer a type from, still strings to match (not an Arrow type error)
    empty = np.empty(2, dtype=object)
    empty[0], empty[1] = [], []
    assert not campaigns.enrolled_on(empty).any() and campaigns.enrolled_on(empty).shape == (3, 2)


def test_campaign_floors_of_no_track_are_empty():
    none = np.zeros((len(PROMOTION_SURFACES), 0))
    camp = campaigns.campaign_floors(np.zeros(0, dtype=np.int64), none.astype(bool), none.astype(bool), none, none,
                                     np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 10, CFG)
    assert len(camp["floor"]) == 0 and camp["offsets"].tolist() == [0, 0, 0, 0]
    assert campaigns.delivery_frame("SE", camp, np.array([], dtype=object), np.array([], dtype=object)).columns.tolist() \
        == list(campaigns.DELIVERY_COLUMNS)


def test_first_reason_takes_the_first_broken_rule():
    broken = np.zeros((len(market_scoring.REASONS), 4), dtype=bool)
    broken[2, 0] = broken[5, 0] = True      # outside_flight before too_few_plays
    broken[6, 1] = True
    broken[0, 3] = True
    assert market_scoring.first_reason(broken).tolist() == ["outside_flight", "listeners_dislike", None,
                                                     "campaign_cancelled"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["t", "u", "v"]), st.sampled_from(["c1", "c2", "c3", "c4"]),
                          st.integers(-40, 40), st.integers(0, 40),
                          st.sampled_from(["active", "active", "paused", "cancelled"])),
                min_size=1, max_size=12, unique_by=lambda r: (r[0], r[1])))
def test_choose_enrollments_is_the_sort_and_drop_duplicates_it_describes(rows):
    enrolled = frame([enroll_row(t, campaign_id=c, start_date=SCORE_DATE + dt.timedelta(days=s),
                                 end_date=SCORE_DATE + dt.timedelta(days=s + length), status=status)
                      for t, c, s, length, status in rows], ENROLLMENTS)
    e = enrolled.assign(_live=(enrolled["status"] == "active")
                        & (enrolled["start_date"] <= SCORE_DATE) & (enrolled["end_date"] >= SCORE_DATE))
    want = (e.sort_values(["track_id", "market", "_live", "start_date", "campaign_id"],
                          ascending=[True, True, False, False, True], kind="mergesort")
            .drop_duplicates(["track_id", "market"], keep="first").drop(columns="_live"))
    got = campaigns.choose_enrollments(enrolled, SCORE_DATE)
    assert list(got.index) == list(want.index)


def test_campaign_floors_group_live_rows_by_surface_then_campaign():
    campaign = np.array([0, 1, 0, 2])
    live = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=bool)
    eligible = live & np.array([True, False, True, True])
    upper = np.where(eligible, np.array([1.0, 2.0, 4.0, 8.0]), 0.0)
    delivered = np.full(live.shape, 10.0)
    start, end = np.array([0, 5, 2, 1]), np.array([30, 20, 25, 40])
    camp = campaigns.campaign_floors(campaign, live, eligible, upper, delivered, start, end, 10, CFG)
    assert camp["surface"].tolist() == [0, 0, 2, 2] and camp["campaign"].tolist() == [0, 1, 0, 2]
    assert camp["offsets"].tolist() == [0, 2, 2, 4]
    assert camp["first_row"].tolist() == [0, 1, 0, 3]
    assert camp["flight_start"].tolist() == [0, 5, 0, 1] and camp["flight_end"].tolist() == [30, 20, 30, 40]
    assert camp["max_boost"].tolist() == [5.0, 0.0, 1.0, 8.0]
    assert camp["eligible_tracks"].tolist() == [2, 0, 1, 1] and camp["eligible_tracks"].dtype == np.int64
    assert camp["delivered_to_date"].tolist() == [20.0, 10.0, 10.0, 10.0]
    # pacing by hand (floor_fraction 0.2): base 1.0 over a 31-day flight, 20 delivered, 21 days left;
    # no base; ahead of pace (clipped to pacing_min); base 1.6 over 40 days, 10 delivered, 31 days left
    assert (CFG.floor_fraction, CFG.pacing_min, CFG.pacing_max) == (0.2, 0.5, 2.0)
    np.testing.assert_allclose(camp["pacing_multiplier"], [(31 - 20) / 21, 1.0, 0.5, (1.6 * 40 - 10) / 31 / 1.6])
    np.testing.assert_array_equal(camp["floor"], np.minimum(
        CFG.floor_fraction * camp["max_boost"] * camp["pacing_multiplier"], camp["max_boost"]))
    # each row's campaign in its surface's problem; past the surface's campaigns: the floor-less group
    assert camp["group"].tolist() == [[0, 1, 0, 2], [0, 0, 0, 0], [0, 2, 0, 1]]


# ------------------------------------- score_market's own numbers, by hand ---
# (mutation testing found them unchecked: forecasts, the observed days, flight
# edges, the floors' surfaces, column names)
def _forecast_market(observed):
    enrolled = [enroll_row("t"), enroll_row("p"),
                enroll_row("starts", start_date=SCORE_DATE, end_date=dt.date(2024, 6, 30)),
                enroll_row("ends", start_date=dt.date(2024, 4, 21), end_date=SCORE_DATE),
                enroll_row("radio_only", surfaces=["radio"])]
    aggs = (daily("t", plays=10, skips=2, saves=3, promoted=2) + daily("p", plays=2, promoted=2)
            + daily("starts", plays=10) + daily("ends", plays=10) + daily("radio_only", plays=10))
    return run_market(enrolled, aggs, total_rows=totals_for(aggs, WINDOW), observed=observed)


def test_supply_and_total_forecasts_are_daily_averages_over_the_observed_days():
    """Organic plays 8 a day on every observed day: E = 8 whatever the weights; the
    surface total (1000 background + 42 enrolled a day) is S = 1042; a track with
    only promoted plays has E = 0. Also with one observed day (weights summing to
    exactly 1) and with a window day missing (its plays are not counted)."""
    missing = [d for d in WINDOW if d != WINDOW[3]]
    for observed, days in ((WINDOW, len(WINDOW)), ([AS_OF], 1), (missing, len(WINDOW) - 1)):
        r = _forecast_market(observed)
        s = r.scores.set_index(["track_id", "surface"])
        for surface in PROMOTION_SURFACES:
            # the forecast model's fit of a constant series converges to within 1e-6 of it
            assert s.loc[("t", surface), "supply_forecast"] == pytest.approx(8.0, rel=1e-6)
            assert s.loc[("p", surface), "supply_forecast"] == pytest.approx(0.0, abs=1e-9)  # promoted only
            assert s.loc[("t", surface), "plays"] == 10 * days
        cap = r.capacity.set_index("surface")
        np.testing.assert_allclose(cap["total_forecast"].to_numpy(), 1042.0, rtol=1e-6)  # the robust fit's stop
        assert set(r.capacity["market"]) == {"SE"} and set(r.scores["market"]) == {"SE"}
        assert (s["save_rate"] >= 0).all() and s.loc[("t", "radio"), "save_rate"] > s.loc[("p", "radio"), "save_rate"]


def test_no_observed_day_forecasts_nothing():
    r = _forecast_market([])
    assert (r.scores["supply_forecast"] == 0.0).all() and (r.capacity["total_forecast"] == 0.0).all()
    assert (r.scores["plays"] == 0).all() and not r.scores["eligible"].any()


def test_flights_starting_or_ending_on_the_score_date_are_live():
    s = _forecast_market(WINDOW).scores.set_index(["track_id", "surface"])
    for track in ("starts", "ends"):
        assert s.loc[(track, "radio"), "reason"] != "outside_flight", track
        assert s.loc[(track, "radio"), "eligible"], track


def test_a_campaign_has_floors_only_on_its_enrolled_surfaces():
    d = _forecast_market(WINDOW).delivery
    assert sorted(d.loc[d["campaign_id"] == "c-radio_only", "surface"]) == ["radio"]
    assert sorted(d.loc[d["campaign_id"] == "c-t", "surface"]) == sorted(PROMOTION_SURFACES)


def test_rows_pulled_back_yesterday_stay_pulled_back_inside_the_band():
    """The guardrail's hysteresis through score_market: three tracks with the
    same skip rate, inside the band (not confidently above baseline + delta,
    still above baseline + the reinstate delta). Fresh, all are eligible; with
    yesterday's pulled-back rows (a on radio and mixes, the first track and the
    first surface among them; a track and a surface this market does not know),
    exactly a's radio and mixes rows stay pulled back. Catches a hysteresis
    input that is ignored, rows mapped to the wrong track or surface (an
    off-by-one at code 0) and unknown keys marking a real row."""
    enrolled = [enroll_row(t) for t in ("a", "b", "c")]
    aggs = [r for t in ("a", "b", "c") for r in daily(t, plays=30, skips=9, saves=1)]
    fresh = run_market(enrolled, aggs).scores
    assert fresh["eligible"].all()
    assert (fresh["dislike_probability"] < CFG.guardrail_confidence).all()
    before = pd.DataFrame({"track_id": ["a", "a", "ghost", "c"], "surface": ["radio", "mixes", "radio", "tv"]})
    scores = run_market(enrolled, aggs, pulled_back_before=before).scores
    held = scores.loc[~scores["eligible"], ["track_id", "surface"]].apply(tuple, axis=1)
    assert set(held) == {("a", "radio"), ("a", "mixes")}
    assert set(scores.loc[~scores["eligible"], "reason"]) == {"listeners_dislike"}
    assert scores.loc[~scores["eligible"], "pulled_back"].all()
    assert (scores.loc[~scores["eligible"], "planned_promoted_plays"] == 0).all()
    assert not scores.loc[scores["eligible"], "pulled_back"].any()


def _market_with_a_radio_only_track():
    """Two tracks on every surface, one with few plays (a low forecast), and a
    radio-only track, so autoplay and mixes have an ineligible row."""
    enrolled = [enroll_row("a"), enroll_row("b"), enroll_row("r", surfaces=["radio"])]
    aggs = (daily("a", plays=30, skips=5, saves=3) + daily("b", plays=1, skips=0, saves=0)
            + daily("r", surfaces=["radio"], plays=12, skips=2, saves=1))
    return enrolled, aggs


def test_score_market_returns_every_column_of_its_tables():
    """Each frame score_market returns has exactly its table's columns but the
    two the run adds (score_date, snapshot_id); prices carry their market and
    surface. Catches a column dropped or misnamed on the way out."""
    import schemas
    from pipelines.scoring.delivery import RECONCILIATION_COLUMNS

    r = run_market(*_market_with_a_radio_only_track())
    for table, got in ((schemas.PROMOTION_SCORES, r.scores), (schemas.CAPACITY, r.capacity),
                       (schemas.PRICES, r.prices), (schemas.CAMPAIGN_DELIVERY, r.delivery)):
        want = [f.name for f in table.arrow() if f.name not in ("score_date", "snapshot_id")]
        assert sorted(got.columns) == sorted(want), table
    assert sorted(r.reconciliation.columns) == sorted(RECONCILIATION_COLUMNS)
    assert len(r.prices) and set(r.prices["market"]) == {"SE"} and set(r.delivery["market"]) == {"SE"}
    assert set(r.prices["surface"]) == set(PROMOTION_SURFACES)
    assert (r.capacity["surface"].tolist() == list(PROMOTION_SURFACES)) and set(r.capacity["market"]) == {"SE"}
    # score = planned / max promoted plays where a row may get plays (also below one play), else 0
    x, upper = r.scores["planned_promoted_plays"].to_numpy(float), r.scores["max_promoted_plays"].to_numpy(float)
    assert ((upper > 0) & (upper <= 1) & (x > 0)).any()
    np.testing.assert_allclose(r.scores["score"], np.where(upper > 0, x / np.where(upper > 0, upper, 1), 0.0))
    # dates come back as dates (the enrollments' flight)
    assert set(r.scores["flight_end"]) == set(r.delivery["flight_end"]) == {dt.date(2024, 5, 31)}
    assert set(r.delivery["flight_start"]) == {dt.date(2024, 5, 1)}
    assert all(type(d) is dt.date for d in r.scores["flight_end"])


def test_shortfall_penalty_scales_with_the_largest_eligible_value():
    """capacity.shortfall_penalty = factor * (max |value| of the surface's
    eligible rows + 1e-6): 1e-6 * factor where no row is eligible."""
    enrolled, aggs = _market_with_a_radio_only_track()
    enrolled = [dict(e, status="paused") if e["track_id"] != "r" else e for e in enrolled]
    r = run_market(enrolled, aggs)
    for _, row in r.capacity.iterrows():
        mine = r.scores[(r.scores["surface"] == row["surface"]) & r.scores["eligible"]]
        vmax = float(mine["value"].abs().max()) if len(mine) else 0.0
        assert row["shortfall_penalty"] == pytest.approx(CFG.shortfall_penalty_factor * (vmax + 1e-6), rel=1e-12)
    assert r.capacity.set_index("surface").loc["mixes", "shortfall_penalty"] == pytest.approx(
        CFG.shortfall_penalty_factor * 1e-6)


def test_the_lower_cap_basis_caps_at_rho_times_the_low_end():
    """track_cap_basis = "lower": max_promoted_plays = rho * max(low, 0) on
    eligible rows (a track with few plays has a low end near or below 1);
    "point": rho * supply_forecast."""
    enrolled, aggs = _market_with_a_radio_only_track()
    for basis, column in (("lower", "supply_forecast_low"), ("point", "supply_forecast")):
        s = run_market(enrolled, aggs, cfg=Config(track_cap_basis=basis)).scores
        ok = s[s["eligible"]]
        want = CFG.track_boost_cap * np.maximum(ok[column].to_numpy(float), 0.0)
        np.testing.assert_allclose(ok["max_promoted_plays"].to_numpy(float), want, rtol=1e-12)
        assert (s.loc[~s["eligible"], "max_promoted_plays"] == 0).all()
    low = run_market(enrolled, aggs, cfg=Config(track_cap_basis="lower")).scores
    assert (low.loc[low["eligible"], "supply_forecast_low"] < 1).any()  # the clip at 0, not at 1, shows


def test_an_unknown_allocation_method_is_refused():
    with pytest.raises(ValueError, match="unknown allocation method"):
        run_market([enroll_row("a")], daily("a", plays=30, skips=5), method="simplex")


def test_score_market_reconciles_the_plan_and_updates_the_gain_from_the_state():
    """The wiring of delivery into score_market: the plan and state passed in
    reach `reconcile` and `serving_gain` (each tested on its own in
    test_delivery.py) with this market, the logs day as_of and the plan's
    snapshot id; the gain lands in the capacity rows and divides the boost."""
    from pipelines.scoring import delivery

    enrolled = [enroll_row("a"), enroll_row("b")]
    aggs = daily("a", days=WINDOW[:-1], plays=30, skips=5, saves=3) + daily("b", plays=30, skips=6, saves=2)
    aggs += [agg_row("a", AS_OF, s, plays=34, skips=5, saves=3, promoted=4) for s in PROMOTION_SURFACES]
    plan = pd.DataFrame({"track_id": ["a", "a", "b"], "market": "SE", "surface": ["radio", "mixes", "radio"],
                         "campaign_id": ["c-a", "c-a", "c-b"], "planned_promoted_plays": [10.0, 3.0, 0.0],
                         "boost_probability": [0.5, 0.1, 0.0], "supply_forecast": [20.0, 30.0, 30.0]})
    state = pd.DataFrame({"market": "SE", "surface": list(PROMOTION_SURFACES), "gain_realised": [100.0, 50.0, 9.0],
                          "gain_requested": [50.0, 50.0, 30.0], "gain_requested_organic": [40.0, 45.0, 20.0],
                          "delivery_miss_days": [1, 0, 2]})
    r = run_market(enrolled, aggs, plan=plan, state=state, plan_snapshot_id="snap-prev")
    want, sums = delivery.reconcile("SE", plan, frame(aggs, DAILY_AGGREGATES), signals.daynum(AS_OF), "snap-prev")
    pd.testing.assert_frame_equal(r.reconciliation, want)
    got = r.reconciliation.set_index(["track_id", "surface"])
    assert got.loc[("a", "radio"), "realised_promoted_plays"] == 4
    assert got.loc[("a", "radio"), "planned_promoted_plays"] == 10.0
    assert set(r.reconciliation["market"]) == {"SE"} and set(r.reconciliation["plan_snapshot_id"]) == {"snap-prev"}
    gain = delivery.serving_gain(state, sums, CFG)
    for column in ("serving_gain", "gain_realised", "gain_requested", "delivery_miss_days"):
        np.testing.assert_allclose(r.capacity[column].to_numpy(float), np.asarray(gain[column], float))
    assert r.capacity["gain_realised"].iloc[0] > 100.0 * 0.5 ** (1 / CFG.gain_half_life_days)  # the state counted
    np.testing.assert_allclose(
        r.scores["boost_probability"].to_numpy(float),
        delivery.boost_probability(r.scores["planned_promoted_plays"].to_numpy(float).reshape(3, -1),
                                   r.scores["supply_forecast"].to_numpy(float).reshape(3, -1),
                                   np.asarray(gain["serving_gain"])).ravel())


def test_a_campaign_starting_or_ending_on_the_score_date_is_the_live_one_chosen():
    """choose_enrollments prefers the campaign live on the score date over a
    later flight, also when that flight starts or ends on the score date."""
    rows = [enroll_row("s", campaign_id="c-live", start_date=SCORE_DATE, end_date=dt.date(2024, 6, 30)),
            enroll_row("s", campaign_id="c-later", start_date=dt.date(2024, 7, 1), end_date=dt.date(2024, 7, 31)),
            enroll_row("e", campaign_id="c-live", start_date=dt.date(2024, 5, 1), end_date=SCORE_DATE),
            enroll_row("e", campaign_id="c-later", start_date=dt.date(2024, 7, 1), end_date=dt.date(2024, 7, 31))]
    chosen = campaigns.choose_enrollments(frame(rows, ENROLLMENTS), SCORE_DATE)
    assert dict(zip(chosen["track_id"], chosen["campaign_id"])) == {"s": "c-live", "e": "c-live"}


def _signals_frame(promoted_skips):
    d0 = signals.daynum(AS_OF) - 5
    rows = [  # (day, track, surface, plays, skips, saves, promoted)
        (d0, "a", "radio", 10, 1, 1, 2),        # not an observed day, and before a's flight start
        (d0 + 2, "a", "radio", 20, 2, 2, 4),    # a's flight start
        (d0 + 5, "a", "radio", 30, 3, 3, 6),    # as_of
        (d0 + 6, "a", "radio", 40, 4, 4, 8),    # after as_of
        (d0 + 3, "z", "mixes", 50, 5, 5, 5),    # a track not in the market
        (d0 + 3, "b", "tv", 60, 6, 6, 6),       # not a promotion surface
        (d0 + 4, "b", "autoplay", 70, 7, 7, 7),
    ]
    f = pd.DataFrame(rows, columns=["day", "track_id", "surface", "plays", "skips", "saves", "promoted_plays"])
    f["dt"] = f.pop("day").to_numpy().astype("datetime64[D]")
    if promoted_skips is not None:
        f["promoted_skips"] = pd.array(promoted_skips, dtype="Int64")
    return f, d0


@pytest.mark.parametrize("layout", ["format 2, one row unknown", "format 1 (no promoted_skips)"])
def test_track_signals_by_hand(layout):
    """Every sum of track_signals on seven hand-made rows: only known tracks on
    promotion surfaces, only observed days in the window sums, promoted plays
    delivered from the flight start through as_of (both ends included), the
    promoted-vs-organic sums only over rows that know their promoted skips."""
    known_skips = layout.startswith("format 2")
    agg, d0 = _signals_frame([1, 2, None, 3, 5, 6, 1] if known_skips else None)
    as_of = d0 + 5
    weight = signals.decay_weights(np.arange(d0, d0 + 7), as_of, 2.0)
    w = dict(zip(range(d0, d0 + 7), weight))
    sig, delivered = signals.track_signals(np.array(["a", "b"], dtype=object), np.array([d0 + 2, d0]), agg,
                                           np.arange(d0 + 1, as_of + 1), partial(signals.decay_weights,
                                           as_of_num=as_of, half_life_days=2.0), as_of)
    a_radio, b_autoplay = (0, 0), (1, 1)
    want = {"plays": {a_radio: 50, b_autoplay: 70}, "skips": {a_radio: 5, b_autoplay: 7},
            "saves": {a_radio: 5, b_autoplay: 7}, "promoted_plays": {a_radio: 10, b_autoplay: 7},
            "w_plays": {a_radio: 20 * w[d0 + 2] + 30 * w[d0 + 5], b_autoplay: 70 * w[d0 + 4]},
            "w_organic": {a_radio: 16 * w[d0 + 2] + 24 * w[d0 + 5], b_autoplay: 63 * w[d0 + 4]},
            "w2_plays": {a_radio: 20 * w[d0 + 2] ** 2 + 30 * w[d0 + 5] ** 2, b_autoplay: 70 * w[d0 + 4] ** 2}}
    if known_skips:   # a's as_of row does not know its promoted skips: left out of those sums
        want.update({
            "promoted_skips": {a_radio: 2, b_autoplay: 1},
            "w_promoted_plays": {a_radio: 4 * w[d0 + 2], b_autoplay: 7 * w[d0 + 4]},
            "w_promoted_skips": {a_radio: 2 * w[d0 + 2], b_autoplay: 1 * w[d0 + 4]},
            "w2_promoted_plays": {a_radio: 4 * w[d0 + 2] ** 2, b_autoplay: 7 * w[d0 + 4] ** 2},
            "w_known_plays": {a_radio: 20 * w[d0 + 2], b_autoplay: 70 * w[d0 + 4]},
            "w_known_skips": {a_radio: 2 * w[d0 + 2], b_autoplay: 7 * w[d0 + 4]},
            "w2_known_plays": {a_radio: 20 * w[d0 + 2] ** 2, b_autoplay: 70 * w[d0 + 4] ** 2}})
    else:
        want.update(dict.fromkeys(("promoted_skips", "w_promoted_plays", "w_promoted_skips", "w2_promoted_plays",
                                   "w_known_plays", "w_known_skips", "w2_known_plays"), {}))
    for name, cells in want.items():
        expected = np.zeros((3, 2))
        for cell, value in cells.items():
            expected[cell] = value
        assert sig[name].shape == (3, 2), name
        np.testing.assert_allclose(sig[name], expected, rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(delivered, [[10.0, 0.0], [0.0, 7.0], [0.0, 0.0]])
