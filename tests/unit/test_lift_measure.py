"""Following exposed listeners (pipelines.lift.measure) on hand-built facts whose
answer is worked out below, and the rules that decide when a campaign_lift row
appears."""
from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.config import Config
from pipelines.lift import estimator as est
from pipelines.lift import measure
from schemas import CAMPAIGN_LIFT, ENROLLMENTS, EXPOSURE_DAYS, LISTENER_DAYS, MARKET_LISTENERS

D = dt.date(2026, 10, 20)
W, P = 7, 7
UTC = dt.timezone.utc


def day(s: str) -> dt.date:
    return dt.date.fromisoformat(f"2026-{s}")


def enrollments(rows) -> pa.Table:
    base = dict(artist_id="a", licensor_id="lic1", surfaces=["radio"], commission_rate=0.3,
                release_date=dt.date(2020, 1, 1), status="active",
                updated_at=dt.datetime(2026, 9, 1, tzinfo=UTC))
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=ENROLLMENTS.arrow())


ENROLLED = enrollments([
    dict(campaign_id="C1", track_id="T1", market="US", start_date=day("10-05"), end_date=day("10-31")),
    dict(campaign_id="C2", track_id="T2", market="GB", start_date=day("10-12"), end_date=day("10-31")),
    dict(campaign_id="C3", track_id="T3", market="US", start_date=day("09-01"), end_date=day("09-30")),  # over
])
EXPOSURE_INPUT_DAYS = [day("10-10")]  # C1's flight has an exposure log, C2's (from 10-12) none


def listener_days(rows) -> pa.Table:
    return pa.Table.from_pylist([{"saves": 0, "holdout": False, **r} for r in rows], schema=LISTENER_DAYS.arrow())


def exposure_days(rows) -> pa.Table:
    return pa.Table.from_pylist([dict(exposures=1, saves_after=0, **r) for r in rows], schema=EXPOSURE_DAYS.arrow())


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2026-{s}").replace(tzinfo=UTC)


def x(key, dt_, arm, first, streams_after=0, campaign="C1", track="T1", market="US", surface="radio"):
    return dict(dt=day(dt_), campaign_id=campaign, market=market, surface=surface, track_id=track,
                listener_key=key, arm=arm, first_ts=ts(first), streams_after=streams_after)


def l(key, dt_, streams, track="T1", market="US", **kw):
    return dict(dt=day(dt_), track_id=track, market=market, listener_key=key, streams=streams, **kw)


def campaigns():
    return measure.lift_campaigns(ENROLLED, D, W, EXPOSURE_INPUT_DAYS)


def test_campaigns_measurable_and_their_method():
    c = campaigns().to_pandas()
    assert c[["campaign_id", "market", "track_id", "method"]].values.tolist() == [
        ["C1", "US", "T1", "exposures"], ["C2", "GB", "T2", "intent_to_treat"]]
    # the attribution windows of a flight that ended stay open W - 1 days after it
    assert measure.lift_campaigns(ENROLLED, day("11-07"), W, EXPOSURE_INPUT_DAYS).num_rows == 0
    assert measure.lift_campaigns(ENROLLED, day("11-06"), W, EXPOSURE_INPUT_DAYS).num_rows == 2


def shard():
    L = listener_days([
        l(1, "10-04", 1),                 # k1's pre-period (d0 - 7 .. d0 - 1 = 10-03 .. 10-09)
        l(1, "10-10", 3),                 # the exposure day: only streams_after counts
        l(1, "10-11", 1, saves=1),
        l(1, "10-16", 2),                 # d0 + 6: the window's last day
        l(1, "10-17", 5),                 # after the window
        l(5, "10-08", 4, track="T2", market="GB"),            # before C2's flight
        l(5, "10-13", 2, track="T2", market="GB"),
        l(5, "10-14", 1, track="T2", market="GB"),
        l(6, "10-15", 3, track="T2", market="GB", holdout=True),
    ])
    E = exposure_days([
        x(1, "10-10", "treated", "10-10T12:00:00", streams_after=2),
        x(1, "10-12", "treated", "10-12T08:00:00", streams_after=0),   # not the first exposure
        x(2, "10-11", "ghost", "10-11T00:00:00"),
        x(3, "10-11", "treated", "10-11T09:00:00"),                     # logged in both arms: dropped
        x(3, "10-13", "ghost", "10-13T09:00:00"),
        x(4, "10-03", "treated", "10-03T09:00:00"),                     # before the flight
        x(7, "10-11", "treated", "10-11T09:00:00", campaign="C9"),      # not an enrolled campaign
    ])
    return measure.measure_shard(L, E, campaigns(), D, W, P)


def test_one_shard_follows_each_listener_over_its_window():
    part = shard()
    arms = part["arms"].to_pandas().set_index(["campaign_id", "surface", "arm"])
    t = arms.loc[("C1", "radio", "treated")]
    # k1: Y = 2 after the exposure on 10-10 + 1 (10-11) + 2 (10-16) = 5; X = 1; a save in the window
    assert (t.n, t.sy, t.syy, t.sx, t.sxx, t.sxy, t.new, t.savers) == (1, 5, 25, 1, 1, 5, 0, 1)
    assert t.window_s == int(6.5 * 86_400)        # 10-10 12:00 to the end of 10-16
    assert t.first_day == measure.daynum(day("10-10")) and t.conflicts == 1
    g = arms.loc[("C1", "radio", "ghost")]
    assert (g.n, g.sy, g.new, g.savers) == (1, 0, 1, 0)
    # intent to treat on C2: the flight's streams per listener, arms by the logged flag
    assert (arms.loc[("C2", "all", "treated")][["n", "sy", "syy"]].tolist() == [1, 3, 9])
    assert (arms.loc[("C2", "all", "ghost")][["n", "sy", "syy"]].tolist() == [1, 3, 9])
    days = part["days"].to_pandas()
    c1 = days[days.campaign_id == "C1"].set_index("day").streams
    assert c1.to_dict() == {measure.daynum(day(d)): n for d, n in
                            (("10-04", 1), ("10-10", 3), ("10-11", 1), ("10-16", 2), ("10-17", 5))}
    c2 = days[days.campaign_id == "C2"].set_index("day").streams
    assert c2[measure.daynum(day("10-08"))] == 4          # before the flight: the historical baseline
    assert part["tracks"].to_pylist() == [dict(campaign_id="C1", market="US", surface="radio", track_id="T1")]


def test_a_truncated_window_ends_with_the_logs():
    L = listener_days([l(1, "10-19", 1), l(1, "10-20", 2)])
    E = exposure_days([x(1, "10-18", "treated", "10-18T18:00:00", streams_after=1)])
    t = measure.measure_shard(L, E, campaigns(), D, W, P)["arms"].to_pandas().iloc[0]
    assert t.sy == 4 and t.window_s == int(2.25 * 86_400)   # 10-18 18:00 to the end of 10-20 (= D)


def _partials(n_shards: int, rng):
    """Random partial sums of one campaign row over n shards."""
    out = []
    for _ in range(n_shards):
        arms = pd.DataFrame({"campaign_id": ["C1", "C1"], "market": ["US", "US"], "surface": ["radio", "radio"],
                             "arm": ["treated", "ghost"]})
        for c in measure.ARMS_SCHEMA.names[4:]:
            arms[c] = rng.integers(0, 1000, 2)
        days = pd.DataFrame({"campaign_id": "C1", "market": "US", "surface": "radio",
                             "day": rng.integers(20_000, 20_010, 3), "streams": rng.integers(0, 50, 3)})
        out.append((pa.Table.from_pandas(arms, schema=measure.ARMS_SCHEMA, preserve_index=False),
                    pa.Table.from_pandas(days, schema=measure.DAYS_SCHEMA, preserve_index=False)))
    return out


def test_combining_shards_in_any_order_gives_identical_sums():
    """Integer partial sums: a rerun whose shards finish in another order
    publishes identical rows (content fingerprints)."""
    parts = _partials(8, np.random.default_rng(4))
    a = measure.combine([p[0] for p in parts], [p[1] for p in parts], [])
    random.Random(1).shuffle(parts)
    b = measure.combine([p[0] for p in parts], [p[1] for p in parts], [])
    for k in ("arms", "days"):
        pd.testing.assert_frame_equal(a[k], b[k])


def combined(n_t=2000, n_g=220, sy_t=3000, sy_g=280, first="10-10", surface="radio", campaign="C1", market="US"):
    arms = pd.DataFrame([
        dict(campaign_id=campaign, market=market, surface=surface, arm="treated", n=n_t, units=n_t, sy=sy_t,
             syy=sy_t * 4, sx=n_t, sxx=3 * n_t, sxy=2 * sy_t, new=n_t // 3, savers=n_t // 10,
             window_s=n_t * 7 * 86_400, first_day=measure.daynum(day(first)), conflicts=0),
        dict(campaign_id=campaign, market=market, surface=surface, arm="ghost", n=n_g, units=n_g, sy=sy_g,
             syy=sy_g * 4, sx=n_g, sxx=3 * n_g, sxy=2 * sy_g, new=n_g // 3, savers=n_g // 10,
             window_s=n_g * 7 * 86_400, first_day=measure.daynum(day(first)), conflicts=0)])
    before = pd.DataFrame({"campaign_id": campaign, "market": market, "surface": surface,
                           "day": [measure.daynum(day(first)) - k for k in range(1, P + 1)], "streams": 100})
    return {"arms": arms, "days": before, "tracks": pd.DataFrame({"campaign_id": [campaign], "market": [market],
                                                                  "surface": [surface], "track_id": ["T1"]})}


def table(comb, observed=None, as_of=D, **cfg):
    config = Config(lift_pre_days=P, lift_window_days=W, **cfg)
    observed = observed or [day("10-10") - dt.timedelta(days=k) for k in range(30)] + [day("10-11") + dt.timedelta(
        days=k) for k in range(10)]
    return measure.lift_table(comb, campaigns(), MARKET_LISTENERS.empty(), observed, as_of,
                              as_of + dt.timedelta(days=1), "snap", config).to_pandas()


def test_a_row_carries_the_published_estimators():
    t = table(combined())
    assert len(t) == 1 and list(t.columns) == CAMPAIGN_LIFT.names
    r = t.iloc[0]
    lift = est.lift_interval_adjusted(2000, 3000, 12000, 2000, 6000, 6000, 220, 280, 1120, 220, 660, 560)
    assert (r.lift, r.lift_low, r.lift_high) == pytest.approx([float(v) for v in lift])
    plain = est.lift_interval(2000, 3000, 12000, 220, 280, 1120)
    assert (r.lift_unadjusted, r.lift_unadjusted_low, r.lift_unadjusted_high) == pytest.approx(
        [float(v) for v in plain])
    assert (r.method, r.exposed_listeners_treated, r.exposed_listeners_holdout) == ("exposures", 2000, 220)
    # before: 7 days x 100 streams over 2000 units x 7 days; after: 3000 streams over 2000 x 7 unit-days
    assert r.historical_lift == pytest.approx((3000 / 14_000) / (700 / 14_000) - 1)
    assert r.first_exposure_date == day("10-10") and r.flight_days == 16
    assert r.intent_rate_treated == pytest.approx(0.1) and r.new_listeners_holdout == 73


def test_rows_appear_only_with_enough_flight_days_and_data():
    early = D - dt.timedelta(days=7)   # 9 days of flight by then (10-05 .. 10-13)
    assert table(combined(), as_of=early).empty
    assert len(table(combined(), as_of=early, lift_min_flight_days=9)) == 1
    assert table(combined(n_g=99)).empty                    # fewer than 100 holdout listeners
    assert table(combined(sy_g=19)).empty                   # fewer than 20 holdout streams
    assert table(combined(sy_t=0)).empty
    assert len(table(combined(n_g=99), lift_min_listeners=50)) == 1


def test_historical_lift_is_null_when_its_baseline_days_are_missing():
    observed = [day("10-10") + dt.timedelta(days=k) for k in range(11)]  # nothing before the first selection
    r = table(combined(), observed=observed).iloc[0]
    assert np.isnan(r.historical_lift) and np.isnan(r.streams_per_day_before)
    assert np.isfinite(r.lift)


def test_intent_to_treat_rows_use_active_listener_days():
    comb = combined(n_t=50, n_g=6, sy_t=4500, sy_g=450, surface="all", campaign="C2", market="GB")
    ml = pa.Table.from_pylist([dict(dt=day("10-12") + dt.timedelta(days=k), market="GB", holdout=h,
                                    listeners=1000 if h else 9000) for k in range(9) for h in (False, True)],
                              schema=MARKET_LISTENERS.arrow())
    config = Config(lift_pre_days=P, lift_window_days=W, lift_min_flight_days=9)  # 10-12 .. 10-20
    t = measure.lift_table(comb, campaigns(), ml, [day("10-12") + dt.timedelta(days=k) for k in range(9)], D,
                           D + dt.timedelta(days=1), "snap", config).to_pandas()
    r = t.iloc[0]
    assert (r.method, r.surface, r.exposed_listeners_treated, r.exposed_listeners_holdout) == (
        "intent_to_treat", "all", 9000, 1000)
    assert r.lift == pytest.approx((4500 / 81_000) / (450 / 9_000) - 1)
    assert r.lift == r.lift_unadjusted
    assert pd.isna(r.new_listeners_treated) and r.first_exposure_date is None


def test_an_empty_measurement_is_an_empty_table_with_the_contract_schema():
    empty = measure.combine([], [], [])
    out = measure.lift_table(empty, campaigns(), MARKET_LISTENERS.empty(), [], D, D, "s",
                             Config(lift_pre_days=P, lift_window_days=W))
    assert out.schema == CAMPAIGN_LIFT.arrow() and out.num_rows == 0

