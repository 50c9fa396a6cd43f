"""The holdout assignment (pipelines.holdout): deterministic, the configured
share, reshuffled per market and month, the same in serving's scalar call and
the batch's vectorised one; the listener key is neither the id nor a common
digest of it."""
from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobs.serving
from jobs.gates import checks
from jobs.sample.draws import ids
from pipelines import holdout

USERS = ids("u", 400_000, 12345, 16)


def test_deterministic_and_the_configured_share():
    months = np.full(len(USERS), holdout.month_number(dt.date(2026, 10, 1)))
    markets = pa.array(["US"] * len(USERS))
    a = holdout.in_holdout(USERS, markets, months, salt=7, share=0.05)
    b = holdout.in_holdout(USERS, markets, months, salt=7, share=0.05)
    assert np.array_equal(a, b)
    # binomial sd of the share on 400k listeners: 0.00034; 4 sd
    assert abs(a.mean() - 0.05) < 0.0014
    ten = holdout.in_holdout(USERS, markets, months, salt=7, share=0.10)
    assert abs(ten.mean() - 0.10) < 0.002
    assert not (a & ~ten).any(), "a larger share only adds listeners (the same uniform draw)"
    assert not holdout.in_holdout(USERS, markets, months, salt=7, share=0.0).any()


@pytest.mark.parametrize("change", ["month", "market", "salt"])
def test_each_market_month_and_salt_reshuffles_the_holdout(change):
    """Independent draws: the overlap of two 10% holdouts is ~1%, not ~10%."""
    n = len(USERS)
    base = dict(markets=pa.array(["US"] * n), months=np.full(n, 2026 * 12 + 9), salt=7)
    other = dict(base)
    if change == "month":
        other["months"] = base["months"] + 1
    elif change == "market":
        other["markets"] = pa.array(["GB"] * n)
    else:
        other["salt"] = 8
    a = holdout.in_holdout(USERS, share=0.10, **base)
    b = holdout.in_holdout(USERS, share=0.10, **other)
    assert abs((a & b).mean() - 0.01) < 0.002


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sampled_from(["US", "GB", "SE", "JP"]),
       st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31),
                    timezones=st.just(dt.timezone.utc)),
       st.integers(0, 2**63 - 1), st.sampled_from([0.01, 0.05, 0.1, 0.5]))
def test_serving_scalar_call_agrees_with_the_batch(user, market, when, salt, share):
    """Serving (jobs.serving.is_in_holdout) and the batch (vectorised, keys
    hashed per distinct id, months from Arrow timestamps) decide alike."""
    ts = pa.array([when], pa.timestamp("us", tz="UTC"))
    batch = holdout.in_holdout(pa.array([user, "other-user", user]), pa.array([market, market, market]),
                               np.repeat(holdout.month_numbers(ts), 3), salt, share)
    assert jobs.serving.is_in_holdout(user, market, when, salt, share) == batch[0] == batch[2]


def test_serving_reexports_the_batch_function():
    assert jobs.serving.is_in_holdout is holdout.is_in_holdout


def test_month_numbers_are_utc_months():
    ts = pa.array([dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.timezone.utc),
                   dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))
    assert holdout.month_numbers(ts).tolist() == [2026 * 12 + 9, 2026 * 12 + 10]
    local = dt.datetime(2026, 11, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 23:00 UTC on Oct 31
    assert holdout.month_number(local) == 2026 * 12 + 9


def test_listener_key_is_not_the_id_or_a_common_digest_of_it():
    keys = holdout.listener_keys(USERS.slice(0, 1000))
    assert len(np.unique(keys)) == 1000
    digests = set()
    for u in USERS.slice(0, 1000).to_pylist():
        for h in (hashlib.md5, hashlib.sha1, hashlib.sha256):
            d = h(u.encode()).digest()
            digests.add(int.from_bytes(d[:8], "big"))
            digests.add(int.from_bytes(d[:8], "little"))
    assert not digests & {int(k) for k in keys}


def test_the_holdout_gate_reads_the_runs_counters():
    """jobs.gates.checks.holdout: passes on zero counts, fails naming the day and
    the kind of breach, and says so when no counters were given."""
    clean = {"holdout_promoted/2026-10-01": 0, "holdout_flag_mismatch/2026-10-01": 0, "rows_read/engagement": 9}
    ok = checks.holdout(clean)
    assert ok.passed and ok.measured == 0
    bad = checks.holdout({**clean, "holdout_promoted/2026-10-02": 3, "holdout_arm_mismatch/2026-10-01": 1})
    assert not bad.passed and bad.measured == 4
    assert "promoted plays of holdout listeners: 2026-10-02: 3" in bad.detail
    assert "exposures whose arm disagrees with the assignment: 2026-10-01: 1" in bad.detail
    assert checks.holdout(None).passed and "not checked" in checks.holdout(None).detail
    # word for word, with the gate's name and threshold
    none = checks.holdout(None)
    assert (none.name, none.passed, none.detail, none.measured, none.threshold) == (
        "holdout", True, "not checked: no run counters given", None, 0)
    assert (ok.name, ok.detail, ok.threshold) == (
        "holdout", "no holdout listener promoted; flags and arms agree with the assignment", 0)
    assert bad.detail == ("exposures whose arm disagrees with the assignment: 2026-10-01: 1; "
                          "promoted plays of holdout listeners: 2026-10-02: 3")
    two = checks.holdout({"holdout_promoted/2026-10-01": 1, "holdout_promoted/2026-10-02": 2, "rows/x": 5})
    assert two.detail == "promoted plays of holdout listeners: 2026-10-01: 1, 2026-10-02: 2" and two.measured == 3
