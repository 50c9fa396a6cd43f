"""The input contract of docs/design.md §3 as checks over Arrow batches."""
import datetime as dt
import json
import random

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.contract import (MAX_PLAY_MS, InputFileError, check_batch, check_engagement, check_enrollments,
                                check_exposures, conform_batch, latest_enrollments, split_good_bad)
from schemas import DEAD_LETTERS, ENGAGEMENT, ENROLLMENTS, EXPOSURES

UTC = dt.timezone.utc
DAY = dt.date(2024, 5, 10)
SLACK = 6.0


def event(**over):
    row = dict(event_id="e1", event_ts=dt.datetime(2024, 5, 10, 12, 0, tzinfo=UTC), user_id="u1",
               track_id="t1", market="US", surface="radio", ms_played=120_000, duration_ms=200_000,
               skipped=False, saved=False, promoted=False, campaign_id=None, holdout=None)
    row.update(over)
    return row


def events(rows):
    # Nullable schema so that rows breaking the not-null rules can be built at all.
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in ENGAGEMENT.arrow()])
    return pa.Table.from_pylist(rows, schema=schema)


def enrollment(**over):
    row = dict(campaign_id="c1", track_id="t1", artist_id="a1", licensor_id="l1", market="US",
               surfaces=["radio", "mixes"], start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 5, 31),
               commission_rate=0.3, release_date=dt.date(2020, 1, 1), status="active",
               updated_at=dt.datetime(2024, 5, 1, 8, 0, tzinfo=UTC))
    row.update(over)
    return row


def enrollments(rows):
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in ENROLLMENTS.arrow()])
    return pa.Table.from_pylist(rows, schema=schema)


def engagement_reasons(rows):
    return check_engagement(events(rows), DAY, SLACK).to_pylist()


# ------------------------------------------------------------ engagement ---
ENGAGEMENT_CASES = [
    (dict(event_id=None), "null_event_id"),
    (dict(user_id=None), "null_user_id"),
    (dict(track_id=None), "null_track_id"),
    (dict(event_ts=None), "null_event_ts"),
    (dict(skipped=None), "null_skipped"),
    (dict(event_id=""), "empty_event_id"),
    (dict(user_id=""), "empty_user_id"),
    (dict(track_id=""), "empty_track_id"),
    (dict(market="us"), "malformed_market"),
    (dict(market="USA"), "malformed_market"),
    (dict(market="U1"), "malformed_market"),
    (dict(surface="tv"), "unknown_surface"),
    (dict(surface="Radio"), "unknown_surface"),
    (dict(ms_played=-1), "negative_ms_played"),
    (dict(ms_played=MAX_PLAY_MS + 1, duration_ms=MAX_PLAY_MS), "ms_played_over_a_day"),
    (dict(duration_ms=MAX_PLAY_MS + 1), "duration_ms_over_a_day"),
    (dict(duration_ms=0), "nonpositive_duration_ms"),
    (dict(duration_ms=-5), "nonpositive_duration_ms"),
    (dict(event_ts=dt.datetime(2024, 5, 8, 12, 0, tzinfo=UTC)), "event_ts_outside_partition"),
    (dict(event_ts=dt.datetime(2024, 5, 12, 0, 0, tzinfo=UTC)), "event_ts_outside_partition"),
    (dict(promoted=True, campaign_id=None), "promoted_without_campaign"),
]


@pytest.mark.parametrize("override, reason", ENGAGEMENT_CASES)
def test_engagement_rule_gives_its_reason_and_good_rows_stay_good(override, reason):
    rows = [event(event_id="good1"), event(**override), event(event_id="good2", surface="search")]
    assert engagement_reasons(rows) == [None, reason, None]


def test_all_engagement_rules_at_once():
    rows = [event(event_id=f"e{i}", **o) for i, (o, _) in enumerate(ENGAGEMENT_CASES)
            if "event_id" not in o]
    expected = [r for o, r in ENGAGEMENT_CASES if "event_id" not in o]
    assert engagement_reasons(rows) == expected


@pytest.mark.parametrize("override", [
    dict(surface=s) for s in ("radio", "autoplay", "mixes", "search", "playlist", "library", "other")
] + [
    dict(ms_played=0),
    dict(promoted=True, campaign_id="c1"),
    dict(promoted=False, campaign_id="c1"),
    dict(market="GB"),
    # inside the slack: day starts 2024-05-10T00:00Z, slack 6 h on both sides
    dict(event_ts=dt.datetime(2024, 5, 9, 18, 0, tzinfo=UTC)),
    dict(event_ts=dt.datetime(2024, 5, 11, 5, 59, 59, tzinfo=UTC)),
])
def test_engagement_rows_keeping_the_contract_pass(override):
    assert engagement_reasons([event(**override)]) == [None]


def test_event_ts_window_edges_follow_the_slack():
    just_before = dt.datetime(2024, 5, 9, 17, 59, 59, tzinfo=UTC)
    at_end = dt.datetime(2024, 5, 11, 6, 0, tzinfo=UTC)
    assert engagement_reasons([event(event_ts=just_before), event(event_ts=at_end)]) == [
        "event_ts_outside_partition", "event_ts_outside_partition"]
    # With no slack, only the day itself is inside.
    t = events([event(event_ts=dt.datetime(2024, 5, 9, 23, 0, tzinfo=UTC)),
                event(event_ts=dt.datetime(2024, 5, 10, 23, 59, tzinfo=UTC))])
    assert check_engagement(t, DAY, 0.0).to_pylist() == ["event_ts_outside_partition", None]


@pytest.mark.parametrize("override, reason", [
    # a null key comes before anything else
    (dict(user_id=None, market="usa", ms_played=-3), "null_user_id"),
    (dict(track_id="", surface="tv"), "empty_track_id"),
    (dict(market="us", surface="tv"), "malformed_market"),
    (dict(surface="tv", ms_played=-1, promoted=True), "unknown_surface"),
    (dict(ms_played=-1, duration_ms=0), "negative_ms_played"),
    (dict(duration_ms=0, event_ts=dt.datetime(2024, 1, 1, tzinfo=UTC)), "nonpositive_duration_ms"),
    (dict(event_ts=dt.datetime(2024, 1, 1, tzinfo=UTC), promoted=True), "event_ts_outside_partition"),
])
def test_first_broken_rule_wins(override, reason):
    assert engagement_reasons([event(**override)]) == [reason]


def test_empty_batch_has_no_reasons():
    assert engagement_reasons([]) == []


# ----------------------------------------------------------- enrollments ---
ENROLLMENT_CASES = [
    (dict(campaign_id=None), "null_campaign_id"),
    (dict(surfaces=None), "null_surfaces"),
    (dict(updated_at=None), "null_updated_at"),
    (dict(campaign_id=""), "empty_campaign_id"),
    (dict(track_id=""), "empty_track_id"),
    (dict(market="de"), "malformed_market"),
    (dict(surfaces=[]), "no_surfaces"),
    (dict(surfaces=["radio", "search"]), "unknown_surface"),
    (dict(start_date=dt.date(2024, 6, 1), end_date=dt.date(2024, 5, 31)), "flight_ends_before_start"),
    (dict(commission_rate=0.0), "commission_rate_out_of_range"),
    (dict(commission_rate=1.0), "commission_rate_out_of_range"),
    (dict(commission_rate=-0.2), "commission_rate_out_of_range"),
    (dict(status="ended"), "unknown_status"),
    # order: a malformed market is reported before the bad surface and status
    (dict(market="XYZ", surfaces=["tv"], status="x"), "malformed_market"),
]


@pytest.mark.parametrize("override, reason", ENROLLMENT_CASES)
def test_enrollment_rule_gives_its_reason_and_good_rows_stay_good(override, reason):
    rows = [enrollment(track_id="good1"), enrollment(**override),
            enrollment(track_id="good2", surfaces=["autoplay"], status="paused")]
    assert check_enrollments(enrollments(rows)).to_pylist() == [None, reason, None]


def test_unknown_surface_is_attributed_to_its_own_row():
    rows = [enrollment(surfaces=["radio"]), enrollment(surfaces=["mixes", "tv"]), enrollment(surfaces=[]),
            enrollment(surfaces=["radio", "autoplay", "mixes"]), enrollment(surfaces=["podcast"])]
    assert check_enrollments(enrollments(rows)).to_pylist() == [
        None, "unknown_surface", "no_surfaces", None, "unknown_surface"]


def test_enrollment_checks_accept_a_chunked_column():
    t = pa.concat_tables([enrollments([enrollment()]), enrollments([enrollment(surfaces=["tv"])])])
    assert t.column("surfaces").num_chunks == 2
    assert check_enrollments(t).to_pylist() == [None, "unknown_surface"]


# --------------------------------------------------------- split_good_bad ---
def test_split_good_bad_keeps_good_rows_and_dead_letters_carry_the_raw_row():
    rows = [event(event_id="a"), event(event_id="b", ms_played=-7, campaign_id=None),
            event(event_id="c", surface="mixes"), event(event_id="d", market="usa", promoted=True,
                                                        campaign_id="c9")]
    table = events(rows)
    reasons = check_engagement(table, DAY, SLACK)
    good, dead = split_good_bad(table, reasons, day=DAY, source="engagement", source_file="gs://b/f.parquet")
    assert good.schema == table.schema
    assert good.to_pylist() == [rows[0], rows[2]]
    assert dead.schema == DEAD_LETTERS.arrow()
    assert dead.column("dt").to_pylist() == [DAY, DAY]
    assert dead.column("source").to_pylist() == ["engagement", "engagement"]
    assert dead.column("source_file").to_pylist() == ["gs://b/f.parquet"] * 2
    assert dead.column("reason").to_pylist() == ["negative_ms_played", "malformed_market"]
    raw = [json.loads(s) for s in dead.column("row_json").to_pylist()]
    for got, original in zip(raw, [rows[1], rows[3]]):
        assert set(got) == set(ENGAGEMENT.names)
        for k, v in original.items():
            if isinstance(v, dt.datetime):
                assert dt.datetime.fromisoformat(got[k]) == v
            else:
                assert got[k] == v, k


def test_split_good_bad_all_good_gives_empty_dead_letters():
    table = events([event(event_id="a"), event(event_id="b")])
    good, dead = split_good_bad(table, check_engagement(table, DAY, SLACK), day=DAY, source="engagement",
                                source_file="f")
    assert good.equals(table)
    assert dead.num_rows == 0 and dead.schema == DEAD_LETTERS.arrow()


# ---------------------------------------------------------- conform_batch ---
def test_conform_batch_casts_compatible_types_and_drops_extra_columns():
    t = events([event()])
    t = t.set_column(t.schema.get_field_index("event_ts"), "event_ts",
                     t.column("event_ts").cast(pa.timestamp("ns", tz="UTC")))
    t = t.set_column(t.schema.get_field_index("user_id"), "user_id", t.column("user_id").cast(pa.large_string()))
    t = t.append_column("extra", pa.array([1]))
    out = conform_batch(t.select(list(reversed(t.column_names))), ENGAGEMENT, "f.parquet")
    assert out.column_names == ENGAGEMENT.names
    assert [f.type for f in out.schema] == [f.type for f in ENGAGEMENT.arrow()]
    assert out.to_pylist() == [event()]


def test_conform_batch_reads_a_missing_holdout_column_as_nulls():
    """An engagement file written before the holdout existed has no `holdout`
    column: it keeps the contract, and the flag reads as null (= false)."""
    old = events([event(), event(event_id="e2")]).drop_columns(["holdout"])
    out = conform_batch(old, ENGAGEMENT, "old.parquet")
    assert out.column_names == ENGAGEMENT.names
    assert out.column("holdout").to_pylist() == [None, None]
    assert check_engagement(out, DAY, SLACK).to_pylist() == [None, None]


def exposure(**over):
    row = dict(exposure_id="x1", event_ts=dt.datetime(2024, 5, 10, 12, 0, tzinfo=UTC), user_id="u1",
               track_id="t1", campaign_id="c1", market="US", surface="radio", arm="treated")
    row.update(over)
    return row


@pytest.mark.parametrize("over, reason", [
    (dict(), None),
    (dict(arm="ghost"), None),
    (dict(exposure_id=None), "null_exposure_id"),
    (dict(campaign_id=None), "null_campaign_id"),
    (dict(exposure_id=""), "empty_exposure_id"),
    (dict(user_id=""), "empty_user_id"),
    (dict(track_id=""), "empty_track_id"),
    (dict(campaign_id=""), "empty_campaign_id"),
    (dict(market="us"), "malformed_market"),
    (dict(surface="search"), "unknown_surface"),    # exposures are decisions on promotion surfaces only
    (dict(arm="control"), "unknown_arm"),
    (dict(arm="Treated"), "unknown_arm"),
    (dict(event_ts=dt.datetime(2024, 5, 12, 12, 0, tzinfo=UTC)), "event_ts_outside_partition"),
])
def test_exposure_rules(over, reason):
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in EXPOSURES.arrow()])
    t = pa.Table.from_pylist([exposure(exposure_id="ok"), exposure(**over)], schema=schema)
    assert check_exposures(t, DAY, SLACK).to_pylist() == [None, reason]
    assert check_batch("exposures", t, DAY, SLACK).to_pylist() == [None, reason]


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.drop_columns(["surface"]), "missing column 'surface'"),
    (lambda t: t.set_column(t.schema.get_field_index("ms_played"), "ms_played",
                            pa.array(["12"])), "'ms_played' has type string"),
])
def test_conform_batch_names_the_file_and_the_problem(mutate, message):
    with pytest.raises(InputFileError) as e:
        conform_batch(mutate(events([event()])), ENGAGEMENT, "gs://in/engagement/dt=2024-05-10/part-7.parquet")
    assert "gs://in/engagement/dt=2024-05-10/part-7.parquet" in str(e.value)
    assert message in str(e.value)


# ---------------------------------------------------- latest_enrollments ---
KEYS = [("c1", "t1", "US"), ("c1", "t1", "GB"), ("c1", "t2", "US"), ("c2", "t1", "US")]
BASE_TS = dt.datetime(2024, 5, 1, tzinfo=UTC)


@st.composite
def enrollment_history(draw):
    """Several versions per key with distinct updated_at; the expected winner is
    the version with the greatest updated_at."""
    rows, expected = [], {}
    for c, t, m in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True)):
        hours = draw(st.lists(st.integers(0, 200), min_size=1, max_size=5, unique=True))
        versions = []
        for h in hours:
            versions.append(enrollment(
                campaign_id=c, track_id=t, market=m, updated_at=BASE_TS + dt.timedelta(hours=h),
                status=draw(st.sampled_from(["active", "paused", "cancelled"])),
                commission_rate=draw(st.sampled_from([0.2, 0.3, 0.4])),
                surfaces=draw(st.sampled_from([["radio"], ["mixes", "autoplay"]]))))
        rows.extend(versions)
        expected[(c, t, m)] = max(versions, key=lambda r: r["updated_at"])
    seed = draw(st.integers(0, 2**32 - 1))
    return rows, expected, seed


def _by_key(table):
    return {(r["campaign_id"], r["track_id"], r["market"]): r for r in table.to_pylist()}


@settings(max_examples=60, deadline=None)
@given(enrollment_history())
def test_latest_enrollments_keeps_the_latest_row_per_key_whatever_the_order(history):
    rows, expected, seed = history
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    out = latest_enrollments(enrollments(shuffled))
    assert out.num_rows == len(expected)
    assert _by_key(out) == expected
    assert out.schema == enrollments(rows).schema


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(4))))
def test_latest_enrollments_ties_on_updated_at_are_order_independent(perm):
    # Same key and updated_at, rows differing in status/start_date (the
    # documented tie breakers): the pick must not depend on input order.
    rows = [enrollment(status="paused"), enrollment(status="active"),
            enrollment(status="active", start_date=dt.date(2024, 5, 2)),
            enrollment(status="cancelled", start_date=dt.date(2024, 5, 3))]
    out = latest_enrollments(enrollments([rows[i] for i in perm]))
    ref = latest_enrollments(enrollments(rows))
    assert out.num_rows == 1
    assert out.to_pylist() == ref.to_pylist()


def test_latest_enrollments_of_nothing_is_empty():
    assert latest_enrollments(enrollments([])).num_rows == 0


def test_latest_enrollments_ties_do_not_depend_on_input_order():
    """Two rows with the same key and updated_at that differ elsewhere: the same
    one wins whichever comes first."""
    import datetime as _dt

    import pyarrow as _pa

    from pipelines.contract import latest_enrollments as _latest
    from schemas import ENROLLMENTS as _E

    base = dict(campaign_id="c1", track_id="t1", artist_id="a", licensor_id="l", market="SE",
                surfaces=["radio"], start_date=_dt.date(2026, 11, 1), end_date=_dt.date(2026, 11, 30),
                commission_rate=0.3, release_date=_dt.date(2020, 1, 1), status="active",
                updated_at=_dt.datetime(2026, 11, 2, tzinfo=_dt.timezone.utc))
    for other in (dict(base, commission_rate=0.4), dict(base, surfaces=["mixes", "radio"])):
        rows = [base, other]
        a = _latest(_pa.Table.from_pylist(rows, schema=_E.arrow())).to_pylist()
        b = _latest(_pa.Table.from_pylist(rows[::-1], schema=_E.arrow())).to_pylist()
        assert a == b and len(a) == 1


# ---- edges found by mutation testing (docs/testing.md) -------------------------------------------
# the error message of a file with several schema problems, casting a compatible column to
# the contract's type, the type of an all-clean reasons array, the columns kept for good rows,
# and deduplication keys that only a separator keeps apart.
def test_every_schema_problem_is_named_in_one_message():
    t = events([event()]).drop_columns(["user_id", "market"])
    with pytest.raises(InputFileError) as e:
        conform_batch(t, ENGAGEMENT, "f.parquet")
    assert str(e.value) == ("f.parquet: schema does not match the engagement contract: "
                            "missing column 'user_id'; missing column 'market'")


def test_a_compatible_column_is_cast_to_the_contract_type():
    """large_string and a millisecond timestamp are accepted and cast (catches a
    conform that keeps the producer's types, or casts the wrong columns)."""
    t = events([event(), event(event_id="e2")])
    i = t.schema.get_field_index("track_id")
    t = t.set_column(i, pa.field("track_id", pa.large_string()), t.column("track_id").cast(pa.large_string()))
    j = t.schema.get_field_index("event_ts")
    t = t.set_column(j, pa.field("event_ts", pa.timestamp("ms", tz="UTC")),
                     t.column("event_ts").cast(pa.timestamp("ms", tz="UTC")))
    out = conform_batch(t, ENGAGEMENT, "f.parquet")
    assert out.schema.types == [f.type for f in ENGAGEMENT.arrow()]
    assert out.column("track_id").to_pylist() == ["t1", "t1"]


def test_clean_rows_give_a_string_reasons_array():
    reasons = check_engagement(events([event(), event(event_id="e2")]), DAY, SLACK)
    assert reasons.type == pa.string() and reasons.null_count == 2


def test_good_rows_keep_only_the_columns_asked_for():
    t = events([event(), event(event_id="e2", ms_played=-1)])
    reasons = check_engagement(t, DAY, SLACK)
    good, dead = split_good_bad(t, reasons, day=DAY, source="engagement", source_file="f",
                                good_columns=["track_id", "surface"])
    assert good.column_names == ["track_id", "surface"] and good.num_rows == 1
    assert dead.num_rows == 1 and dead.column("reason").to_pylist() == ["negative_ms_played"]
    clean = split_good_bad(t.slice(0, 1), reasons.slice(0, 1), day=DAY, source="engagement", source_file="f",
                           good_columns=["track_id"])[0]
    assert clean.column_names == ["track_id"]


def test_keys_that_only_the_separator_keeps_apart_stay_apart():
    """(campaign "aUSb", track "c") and (campaign "a", track "bUSc") in market US are
    two enrollments: joined without a separator (or with the market as one) they
    would be the same key and one would be lost."""
    rows = [enrollment(campaign_id="aUSb", track_id="c"), enrollment(campaign_id="a", track_id="bUSc")]
    out = latest_enrollments(enrollments(rows))
    assert sorted(zip(out.column("campaign_id").to_pylist(), out.column("track_id").to_pylist())) == [
        ("a", "bUSc"), ("aUSb", "c")]


def test_exposure_window_edges_and_the_batch_dispatch():
    """An exposure's event_ts is inside [day - slack, day + 1 day + slack): the
    first instant in, the last out; check_batch gives each source its own rules."""
    lo = dt.datetime.combine(DAY, dt.time(), tzinfo=UTC) - dt.timedelta(hours=SLACK)
    hi = lo + dt.timedelta(days=1, hours=2 * SLACK)
    second = dt.timedelta(seconds=1)
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in EXPOSURES.arrow()])
    t = pa.Table.from_pylist([exposure(event_ts=ts) for ts in (lo - second, lo, hi - second, hi)], schema=schema)
    outside = "event_ts_outside_partition"
    assert check_exposures(t, DAY, SLACK).to_pylist() == [outside, None, None, outside]
    bad_events = events([event(), event(ms_played=-1), event(event_ts=hi)])
    assert check_batch("engagement", bad_events, DAY, SLACK).to_pylist() == [None, "negative_ms_played", outside]
    bad_enrollments = enrollments([enrollment(), enrollment(track_id=None)])
    assert check_batch("enrollments", bad_enrollments, DAY, SLACK).to_pylist() == \
        check_enrollments(bad_enrollments).to_pylist() == [None, "null_track_id"]
