"""The pieces of `jobs.observe` that need no run: the bounded caller, run
records on disk, what counts as a configured lineage client, the status
verdict and the metrics of a failed run."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time

import pytest
from prometheus_client import generate_latest

from jobs import layout
from jobs.observe import hook, lineage, metrics, records, status
from jobs.observe.bounded import Breaker
from jobs.observe.records import RunRecord

T0 = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc)


def record(status_: str, minutes: int, **kw) -> RunRecord:
    started = T0 + dt.timedelta(minutes=minutes)
    run_id = layout.new_snapshot_id(started)
    kw = {"command": "run", "logs_date": "2026-11-24", "score_date": "2026-11-25", **kw}
    return RunRecord(run_id=run_id, status=status_, started_at=started,
                     finished_at=started + dt.timedelta(seconds=30), **kw)


# ---------------------------------------------------------------- breaker ---
def test_a_hung_call_costs_one_timeout_and_later_calls_are_skipped():
    release = threading.Event()
    b = Breaker("svc", timeout=0.3)
    started = time.monotonic()
    assert b.call("first", release.wait) is False
    assert 0.3 <= time.monotonic() - started < 1.0
    ran = []
    assert b.call("second", lambda: ran.append(1)) is False
    assert ran == [] and "did not finish within 0.3 s" in b.open_reason
    release.set()


def test_a_failing_call_is_reported_once_and_never_raises(caplog):
    b = Breaker("svc", timeout=1)

    def boom():
        raise ConnectionError("refused")

    with caplog.at_level(logging.WARNING):
        assert b.call("emit", boom) is False
        assert b.call("emit", boom) is False
    assert [r.getMessage() for r in caplog.records].count(
        "svc: emit failed: ConnectionError: refused; not used again by this process") == 1


def test_a_call_that_returns_in_time_succeeds():
    b = Breaker("svc", timeout=1)
    assert b.call("emit", lambda: None) is True and b.usable


# ---------------------------------------------------------------- records ---
def test_records_round_trip_and_list_newest_first_skipping_damaged_files(tmp_path):
    out = str(tmp_path)
    a, b = record("published", 0), record("failed", 60, reason="boom")
    for r in (a, b):
        records.write_record(out, r)
    (tmp_path / "runs" / f"{layout.new_snapshot_id(T0)}.json").write_text("{not json")
    (tmp_path / "runs" / "notes.txt").write_text("ignored")
    got = records.read_records(out)
    assert [r.run_id for r in got] == [b.run_id, a.run_id]
    assert got[1] == a
    assert records.last_success(out).run_id == a.run_id


def test_the_reason_is_scrubbed_of_secrets_and_cut():
    text = records.short_reason("failed with --token=SEKRET123 " + "x" * 5000, ["SEKRET123"])
    assert "SEKRET123" not in text and "<redacted>" in text
    assert len(text) == records.MAX_REASON_CHARS


def test_a_record_of_an_unknown_status_is_refused():
    doc = record("published", 0).to_dict()
    doc["status"] = "maybe"
    with pytest.raises(ValueError):
        RunRecord.from_dict(doc)


# ----------------------------------------------------------------- status ---
def test_a_backfill_with_a_failed_date_is_a_failed_last_run_even_if_its_last_date_published():
    runs = [record("published", 3, parent="B", logs_date="2026-11-24"),
            record("failed", 2, parent="B", logs_date="2026-11-23", reason="no engagement partition"),
            record("published", 1, parent="B", logs_date="2026-11-22"),
            record("failed", 0, logs_date="2026-11-20")]
    assert [r.logs_date for r in status.last_failures(runs)] == ["2026-11-23"]
    assert status.last_failures(runs[:1] + runs[3:]) == []  # a run of its own after an older failure: fine
    assert status.last_failures([runs[3]]) == [runs[3]]


def test_status_of_an_empty_output_root_says_nothing_is_published(tmp_path):
    s = status.check(str(tmp_path))
    assert not s.ok and s.problems == [f"nothing published: no LATEST under {tmp_path}"]


# ---------------------------------------------------------------- lineage ---
@pytest.fixture
def no_lineage_config(monkeypatch, tmp_path):
    for k in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.openlineage/openlineage.yml
    monkeypatch.chdir(tmp_path)                # no ./openlineage.yml
    return tmp_path


def test_lineage_is_off_unless_the_client_is_configured(no_lineage_config, monkeypatch, caplog):
    with caplog.at_level(logging.INFO):
        assert not lineage.configured()
        assert not lineage.Emitter().enabled
    assert not any("console" in r.getMessage() for r in caplog.records)  # the client's fallback never starts
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    assert lineage.configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not lineage.configured()
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")
    (no_lineage_config / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert lineage.configured()


def test_the_run_uuid_is_stable_per_run_id():
    rid = layout.new_snapshot_id(T0)
    assert lineage.run_uuid(rid) == lineage.run_uuid(rid) != lineage.run_uuid(layout.new_snapshot_id(T0))


# ---------------------------------------------------------------- metrics ---
def test_a_failed_run_that_never_succeeded_exports_no_last_success_rather_than_1970():
    text = generate_latest(metrics.build(record("failed", 0), last_success=None)).decode()
    assert "oasis_last_run_failed 1.0" in text
    assert "oasis_last_success_timestamp_seconds" not in text
    assert "oasis_published_score_date_seconds" not in text


# ------------------------------------------------- the serving-sync hook ---
def test_observed_step_records_a_command_without_a_date_and_its_failure(no_lineage_config, monkeypatch):
    """The hook `oasis serving sync` (issue 14) calls: a record and a lineage
    pair per call, FAIL with the reason when the body raises, and the daily
    run's metrics file left alone."""
    tmp = no_lineage_config
    events = tmp / "events.ndjson"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(events))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    out = str(tmp / "out")
    with hook.observed_step("serving sync", out) as outcome:
        outcome["status"] = "already_published"
    with pytest.raises(RuntimeError):
        with hook.observed_step("serving sync", out):
            raise RuntimeError("online store unreachable")
    done, failed = sorted(records.read_records(out), key=lambda r: r.started_at)
    assert (done.command, done.status, done.logs_date) == ("serving sync", "already_published", None)
    assert (failed.status, failed.reason) == ("failed", "RuntimeError: online store unreachable")
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["job"]["name"], e["eventType"]) for e in got] == [
        ("serving_sync", "START"), ("serving_sync", "COMPLETE"), ("serving_sync", "START"), ("serving_sync", "FAIL")]
    assert "online store unreachable" in got[3]["run"]["facets"]["errorMessage"]["message"]
    assert not (tmp / "out" / "metrics").exists()
