"""Every reader of state, fed arbitrary bytes and arbitrary JSON (hypothesis):
the manifest, LATEST, the rollback records, the warehouse registry rows, the
config and the aggregate markers. Each must give a result, a fallback with a
warning, or the project's error type (`OasisError`) with a message -- never
another exception. On the previous main a LATEST that was not UTF-8 raised
UnicodeDecodeError, a config integer past 2**1024 OverflowError, an aggregate
marker's non-text sources TypeError, and there was no registry reader."""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import layout, serving
from jobs.cli import snapshots as cli_snapshots
from jobs.manifest import Manifest
from jobs.run import aggregates
from jobs.snapshots import admin, pulls, repair
from jobs.warehouse.base import RegistryRow, parse_registry
from pipelines import storage
from pipelines.config import Config
from pipelines.errors import OasisError

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "manifest.json")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
hostile_bytes = st.one_of(st.binary(max_size=300),
                          json_values.map(lambda v: json.dumps(v).encode()),
                          st.text(max_size=200).map(str.encode),
                          st.just(b"[" * 100_000))  # nesting deeper than the parser's recursion limit


def project_error_or_result(call):
    """Run `call`; an OasisError must carry a message. Anything else propagates
    (and fails the test)."""
    try:
        return call()
    except OasisError as e:
        assert str(e).strip()
        return None


# ---------------------------------------------------------------- manifest ---
@SETTINGS
@given(hostile_bytes)
def test_manifest_reader_on_any_bytes(data):
    m = project_error_or_result(lambda: Manifest.from_json(data, where="x/_MANIFEST.json"))
    if m is not None:
        m.to_json()


def _golden() -> dict:
    with open(GOLDEN) as f:
        return json.load(f)


@SETTINGS
@given(st.data(), json_values)
def test_manifest_reader_and_its_printers_on_a_manifest_with_one_field_replaced(data, value):
    """A golden manifest with any one field (or field of a field) replaced by any
    JSON value: parsed or refused, and `snapshots list`/`show` print what parses."""
    doc = _golden()
    key = data.draw(st.sampled_from(sorted(doc)))
    target = doc
    if isinstance(doc[key], dict) and doc[key] and data.draw(st.booleans()):
        target, key = doc[key], data.draw(st.sampled_from(sorted(doc[key])))
    target[key] = value
    m = project_error_or_result(lambda: Manifest.from_dict(doc))
    if m is not None:
        cli_snapshots.render_show(admin.Shown("/out/x", m, False, []))
        cli_snapshots.render_list(admin.Listing([("/out/x", m)], None), "/out")


# ------------------------------------------------------------------ LATEST ---
@SETTINGS
@given(hostile_bytes)
def test_latest_readers_on_any_bytes(data):
    """LATEST holding anything: the pointer reads as text, `snapshots list` and
    the repair survey work, and the serving reader says why it cannot serve."""
    with tempfile.TemporaryDirectory() as out:
        storage.write_bytes(layout.latest_uri(out), data)
        pointer = storage.read_pointer(layout.latest_uri(out))
        assert pointer.content is None or isinstance(pointer.content, str)
        admin.list_snapshots(out)
        repair.survey(out, None)
        project_error_or_result(lambda: serving.load_latest(out))


# ---------------------------------------------------------- rollback records ---
@SETTINGS
@given(hostile_bytes)
def test_rollback_record_reader_on_any_bytes(data):
    """A record of any bytes reads (never raises) and still pulls its snapshot."""
    sid = "20261125T010203Z-abcdef"
    pull = pulls.Pull.from_json(data, sid)
    assert pull.snapshot_id == sid
    with tempfile.TemporaryDirectory() as out:
        storage.write_bytes(layout.pulled_record(out, sid), data)
        assert sid in pulls.read_pulls(out)
        pulls.describe(pull)


# ------------------------------------------------------------ registry rows ---
registry_values = st.one_of(json_values, st.dates(), st.datetimes(), st.datetimes(timezones=st.just(dt.timezone.utc)))


@SETTINGS
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(
    ["snapshot_id", "score_date", "created_at", "run_fingerprint", "is_current", "pulled_at", "validation",
     "skipped_gates", "other"]), registry_values, max_size=9)))
def test_registry_row_reader_on_any_row(row):
    r = project_error_or_result(lambda: RegistryRow.parse(row))
    if r is not None:
        assert isinstance(r.score_date, dt.date) and isinstance(r.is_current, bool)
    good, problems = parse_registry([row, row])
    assert len(good) + len(problems) == 2


def test_registry_row_reader_keeps_sound_rows():
    now = dt.datetime(2026, 11, 25, 1, tzinfo=dt.timezone.utc)
    row = {"snapshot_id": "20261125T010000Z-abcdef", "score_date": dt.date(2026, 11, 25), "created_at": now,
           "run_fingerprint": "f", "is_current": None, "pulled_at": None, "validation": "all passed",
           "skipped_gates": "score_drift,row_count"}
    r = RegistryRow.parse(row)
    assert (r.is_current, r.skipped_gates) == (False, ("score_drift", "row_count"))
    good, problems = parse_registry([row, dict(row, snapshot_id="x'); DROP TABLE s; --")])
    assert [g.snapshot_id for g in good] == [row["snapshot_id"]] and len(problems) == 1


# ------------------------------------------------------------------- config ---
@SETTINGS
@given(st.dictionaries(st.sampled_from(["window_days", "half_life_days", "max_bad_row_share", "nope"]),
                       st.one_of(json_values, st.integers(min_value=-10**400, max_value=10**400)), max_size=3))
def test_config_from_any_values(values):
    project_error_or_result(lambda: Config.from_mapping(values))


@SETTINGS
@given(hostile_bytes)
def test_config_file_of_any_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "oasis.toml")
        with open(path, "wb") as f:
            f.write(data)
        project_error_or_result(lambda: Config.load(path))


def test_config_integers_past_any_range_are_refused_by_name():
    for text in ("window_days = 1" + "0" * 400, "half_life_days = -1" + "0" * 400, "half_life_days = nan"):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "oasis.toml")
            with open(path, "w") as f:
                f.write(text)
            try:
                Config.load(path)
            except OasisError as e:
                assert text.split(" ")[0] in str(e)
            else:
                raise AssertionError(f"accepted {text[:40]}")


# -------------------------------------------------------- aggregate markers ---
@SETTINGS
@given(hostile_bytes, hostile_bytes)
def test_aggregate_marker_readers_on_any_bytes(marker, detail):
    """A marker naming no complete build counts as no build (the day is built
    again); the build's detail gives only text-to-text sources."""
    day = dt.date(2026, 11, 24)
    with tempfile.TemporaryDirectory() as out:
        folder = layout.aggregates_day(out, day)
        storage.write_bytes(os.path.join(folder, layout.AGGREGATE_MARKER), marker)
        storage.write_bytes(os.path.join(folder, layout.AGGREGATE_MARKER_DETAIL), detail)
        assert aggregates.stored_build(out, day) is None
        sources = aggregates.built_from(out, day)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in sources.items())
        sorted(sources.values())  # what the run fingerprint does with them
