"""NaN, infinity and out-of-range numbers, wherever a number comes in: the
input columns (dead-lettered with a reason), the sums kept from them (cannot
overflow int64), config values and command-line options (refused by name).
On the previous main a NaN commission_rate kept the contract (NaN compares
false with both bounds), two plays of 2**62 ms summed to a negative
ms_played, and `--workers 1000000`, `--seed -1` or `--bad-row-share nan`
got through to the code (or to a traceback)."""
from __future__ import annotations

import datetime as dt
import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main as cli
from pipelines import arrays
from pipelines.beam import transforms
from pipelines.beam.transforms import AggregateShardFn
from pipelines.config import Config, ConfigError
from pipelines.contract import MAX_PLAY_MS, check_engagement, check_enrollments
from schemas import ENGAGEMENT, ENROLLMENTS

UTC = dt.timezone.utc
DAY = dt.date(2024, 5, 10)


def event(**over):
    row = dict(event_id="e", event_ts=dt.datetime(2024, 5, 10, 12, tzinfo=UTC), user_id="u", track_id="t",
               market="US", surface="radio", ms_played=1000, duration_ms=2000, skipped=False, saved=False,
               promoted=False, campaign_id=None)
    row.update(over)
    return row


def enrollment(**over):
    row = dict(campaign_id="c", track_id="t", artist_id="a", licensor_id="l", market="US", surfaces=["radio"],
               start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 5, 31), commission_rate=0.3,
               release_date=dt.date(2020, 1, 1), status="active", updated_at=dt.datetime(2024, 5, 1, tzinfo=UTC))
    row.update(over)
    return row


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), float("-inf"), 1e308, -0.0])
def test_a_commission_rate_that_is_not_a_number_in_range_is_dead_lettered(rate):
    t = pa.Table.from_pylist([enrollment(), enrollment(commission_rate=rate)], schema=ENROLLMENTS.arrow())
    assert check_enrollments(t).to_pylist() == [None, "commission_rate_out_of_range"]


@pytest.mark.parametrize("column, value, reason", [
    ("ms_played", MAX_PLAY_MS + 1, "ms_played_over_a_day"),
    ("ms_played", 2**62, "ms_played_over_a_day"),
    ("ms_played", 2**63 - 1, "ms_played_over_a_day"),
    ("duration_ms", MAX_PLAY_MS + 1, "duration_ms_over_a_day"),
    ("duration_ms", 2**63 - 1, "duration_ms_over_a_day"),
])
def test_a_play_longer_than_a_day_is_dead_lettered(column, value, reason):
    t = pa.Table.from_pylist([event(), event(**{column: value}), event(**{column: MAX_PLAY_MS})],
                             schema=ENGAGEMENT.arrow())
    assert check_engagement(t, DAY, 6.0).to_pylist() == [None, reason, None]


def test_the_largest_plays_the_contract_lets_in_sum_without_overflow(monkeypatch):
    """Aggregating plays at the contract's bound cannot wrap: 10,000 plays of a
    day each sum exactly (main summed 2 plays of 2**62 to a negative number)."""
    n = 10_000
    table = pa.table({"event_id": [f"e{i}" for i in range(n)], "user_id": ["u"] * n, "track_id": ["t"] * n,
                      "market": ["US"] * n, "surface": ["radio"] * n, "ms_played": [MAX_PLAY_MS] * n,
                      "skipped": [False] * n, "saved": [False] * n, "promoted": [False] * n})
    fn = AggregateShardFn(DAY, None)
    fn.setup()
    monkeypatch.setattr(transforms, "read_spilled", lambda refs: table)  # the shard's rows, without a spill file
    out = list(fn.process((0, [])))
    (name, agg), = [o for o in out if isinstance(o, tuple)]
    assert agg.column("ms_played").to_pylist() == [n * MAX_PLAY_MS] and agg.column("plays").to_pylist() == [n]


def test_int64_group_sums_refuse_to_wrap():
    assert arrays.int_group_sum(np.array([0, 0, 1]), np.array([2**40, 2**40, 5]), 2).tolist() == [2**41, 5]
    with pytest.raises(arrays.SumOverflow, match="over 2\\*\\*62"):
        arrays.int_group_sum(np.array([0, 0]), np.array([2**62, 2**62]), 1)


@pytest.mark.parametrize("key, value", [("half_life_days", float("nan")), ("skip_penalty", float("inf")),
                                        ("window_days", 10**30), ("min_window_plays", -(10**400)),
                                        ("dedupe_lookback_days", 8), ("dedupe_lookback_days", 1.5)])
def test_config_values_out_of_range_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        Config.from_mapping({key: value})


def oasis(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("args, option", [
    (["backfill", "--start", "2026-01-01", "--end", "2026-01-02", "--input", "i", "--output", "o", "--workers", v],
     "--workers") for v in ("0", "65", "1000000", "nan", "inf", "1e3", "9" * 40)
] + [
    (["snapshots", "gc", "--keep", "1", "--output", "o", flag, v], flag)
    for flag in ("--grace-minutes", "--dead-letter-days") for v in ("nan", "inf", "-1", "1e400")
] + [
    (["sample", "--out", "x", flag, v], flag)
    for flag, v in (("--seed", "-1"), ("--seed", str(2**32)), ("--days", "0"), ("--days", "100000"),
                    ("--tracks", "5"), ("--events-per-day", "-3"), ("--markets", "0"), ("--bad-row-share", "nan"),
                    ("--bad-row-share", "0.5"), ("--bad-row-share", "inf"))
] + [
    (["validate", "--date", "2026-01-01", "--input", "i", "--batch-rows", v], "--batch-rows") for v in ("1", "nan")
])
def test_numeric_options_out_of_range_are_usage_errors(args, option):
    code, err = oasis(*args)
    assert code == 2 and f"argument {option}" in err.splitlines()[-1] and "Traceback" not in err, err
