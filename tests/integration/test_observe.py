"""Observability end to end, through the real CLI: run records, OpenLineage
events (the official client, file and HTTP transports), Prometheus metrics (the
text file and a real Pushgateway), and `oasis status`.

One module world; one published run followed by a run failing on a bad file,
into one output root, with lineage going to a file and metrics to the
Pushgateway; the HTTP and hanging-receiver tests use receivers they start.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobs.cli import main as cli
from jobs.observe.lineage import run_uuid
from tests.support import worlds

END = worlds.END.isoformat()
SCORE_DATE = (worlds.END + dt.timedelta(days=1)).isoformat()
JOB = "oasis-test-observe"
RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "oasis_alerts.yml"


def clean_env(mp: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith(("OPENLINEAGE", "OASIS_PUSHGATEWAY", "OASIS_LINEAGE")):
            mp.delenv(k)


def file_lineage(mp: pytest.MonkeyPatch, path: str) -> None:
    mp.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    mp.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", path)
    mp.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")


def call(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def read_events(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def records(out) -> dict[str, dict]:
    return {json.load(open(p))["run_id"]: json.load(open(p)) for p in glob.glob(f"{out}/runs/*.json")}


def textfile(out) -> dict[tuple[str, frozenset], float]:
    text = open(f"{out}/metrics/oasis.prom").read()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def day_seconds(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp()


def age_hours(day: str) -> float:
    return (time.time() - day_seconds(day)) / 3600


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("world")), days=4, tracks=60, events_per_day=3000,
                             markets=2)


@pytest.fixture(scope="module")
def bad_world(world, tmp_path_factory):
    """The world with one engagement file of the logs date replaced by bytes that are not Parquet."""
    w = worlds.copy_world(world, str(tmp_path_factory.mktemp("bad") / "world"))
    (bad,) = glob.glob(f"{w}/engagement/dt={END}/*.parquet")
    with open(bad, "wb") as f:
        f.write(b"not parquet at all")
    return w, bad


@pytest.fixture(scope="module")
def runs(world, bad_world, tmp_path_factory, request):
    """A published run, then a run failing on a bad file, into one output root;
    what the file transport, the text file, the gateway and `oasis status` show
    after each. Without a Pushgateway (not installable here) only the gateway
    checks skip, with the reason."""
    try:
        pushgateway, no_gateway = request.getfixturevalue("pushgateway"), None
    except pytest.skip.Exception as e:
        pushgateway, no_gateway = None, str(e)
    root = tmp_path_factory.mktemp("observe")
    out, events = str(root / "out"), str(root / "events.ndjson")
    mp = pytest.MonkeyPatch()
    clean_env(mp)
    file_lineage(mp, events)
    if pushgateway:
        mp.setenv("OASIS_PUSHGATEWAY_URL", pushgateway.url)
        mp.setenv("OASIS_PUSHGATEWAY_JOB", JOB)
    scrape = pushgateway.scrape if pushgateway else (lambda job: None)
    try:
        ok = call("run", "--date", END, "--input", world, "--output", out)
        after_ok = dict(gateway=scrape(JOB), textfile=textfile(out), events=read_events(events),
                        records=records(out),
                        fresh=call("status", "--output", out, "--max-age-hours", f"{age_hours(SCORE_DATE) + 24:.0f}"),
                        late=call("status", "--output", out, "--max-age-hours", "1"))
        bad = call("run", "--date", END, "--input", bad_world[0], "--output", out)
        after_bad = dict(gateway=scrape(JOB), textfile=textfile(out), events=read_events(events),
                         records=records(out),
                         status=call("status", "--output", out, "--max-age-hours",
                                     f"{age_hours(SCORE_DATE) + 24:.0f}"))
    finally:
        mp.undo()
        if pushgateway:
            with contextlib.suppress(OSError):
                pushgateway.delete(JOB)
    (snap,) = worlds.snapshot_dirs(out)
    return dict(out=out, ok=ok, bad=bad, after_ok=after_ok, after_bad=after_bad, snap=snap,
                manifest=worlds.manifest(snap), bad_file=bad_world[1], no_gateway=no_gateway)


def only(d: dict):
    (v,) = d.values()
    return v


# ---------------------------------------------------------------- records ---
def test_every_run_leaves_a_record_failed_ones_included(runs):
    assert runs["ok"][0] == 0, runs["ok"][2][-3000:]
    assert runs["bad"][0] == 1
    ok = only(runs["after_ok"]["records"])
    m = runs["manifest"]
    assert ok["status"] == "published" and ok["command"] == "run"
    assert ok["run_id"] == ok["snapshot_id"] == m["snapshot_id"]  # the run published under the id it was given
    assert (ok["logs_date"], ok["score_date"]) == (END, SCORE_DATE)
    assert ok["outputs"]["snapshot"] == runs["snap"] and ok["outputs"]["latest_moved"] is True
    assert ok["outputs"]["warehouse"] == f"duckdb://{runs['out']}/warehouse.duckdb"
    # the manifest's seconds are the phases plus the waits inside publish_wait (lock, warehouse)
    waits = {"wait_publish_lock", "wait_warehouse"}
    assert set(m["seconds"]) - waits <= set(ok["phase_seconds"]) and "publish" in ok["phase_seconds"]
    assert sum(ok["phase_seconds"].values()) <= ok["seconds"] + 0.05

    after = runs["after_bad"]["records"]
    assert after[ok["run_id"]] == ok  # an earlier record is never rewritten
    (failed,) = [r for r in after.values() if r["run_id"] != ok["run_id"]]
    assert failed["status"] == "failed" and failed["snapshot_id"] is None
    assert runs["bad_file"] in failed["reason"] and "cannot be read as Parquet" in failed["reason"]
    # and writing it changed nothing that is published
    assert worlds.latest(runs["out"]) == f"score_date={SCORE_DATE}/{m['snapshot_id']}"
    assert worlds.snapshot_dirs(runs["out"]) == [runs["snap"]]


# ---------------------------------------------------------------- lineage ---
def check_complete_matches_manifest(complete: dict, m: dict, snap: str, out: str) -> None:
    """The COMPLETE event names the manifest's inputs, outputs, row counts and gate results."""
    inputs = {i["name"]: i for i in complete["inputs"]}
    expected_parts: dict[str, dict] = {}
    for kind in ("enrollments", "engagement", "aggregates"):
        for f, fp in m["inputs"][kind].items():
            expected_parts.setdefault(os.path.dirname(f), {})[os.path.basename(f)] = fp
    assert set(inputs) == set(expected_parts)
    for folder, files in expected_parts.items():
        got = inputs[folder]
        assert got["namespace"] == "file"
        assert {x["file"]: x["fingerprint"] for x in got["inputFacets"]["oasisFiles"]["files"]} == files
        version = got["facets"]["version"]["datasetVersion"]
        assert version == (next(iter(files.values())) if len(files) == 1 else
                           "sha256:" + hashlib.sha256("\n".join(sorted(files.values())).encode()).hexdigest())
        day = folder.rsplit("dt=", 1)[-1]
        kind = "enrollments" if "/enrollments/" in folder else "engagement"
        assert got["inputFacets"]["inputStatistics"]["rowCount"] == m["bad_rows"][f"{kind}/{day}"]["rows"]
    outputs = {(o["namespace"], o["name"]): o for o in complete["outputs"]}
    gates = {g["name"]: g["passed"] for g in m["validation"]}
    assert len(gates) >= 10
    for table, meta in m["tables"].items():
        o = outputs[("file", os.path.join(snap, table))]
        assert o["outputFacets"]["outputStatistics"]["rowCount"] == meta["rows"]
        # a first run has no plan to reconcile and no flight with 10 days of logs: those tables may be empty
        assert meta["rows"] > 0 or table in ("delivery_reconciliation", "campaign_lift"), table
        assert o["outputFacets"]["outputStatistics"]["size"] == sum(f["bytes"] for f in meta["files"])
        assert o["facets"]["version"]["datasetVersion"] == f"sha256:{meta['content_sha256']}"
        assert {a["assertion"]: a["success"] for a in o["facets"]["dataQualityAssertions"]["assertions"]} == gates
        assert "score" in [f["name"] for f in o["facets"]["schema"]["fields"]] or table != "promotion_scores"
        w = outputs[(f"duckdb://{out}/warehouse.duckdb", table)]
        assert w["outputFacets"]["outputStatistics"]["rowCount"] == meta["rows"]
    assert len(outputs) == 2 * len(m["tables"])


def test_a_published_run_emits_exactly_start_and_complete_with_its_manifest(runs):
    events = runs["after_ok"]["events"]
    m = runs["manifest"]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    start, complete = events
    assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid(m["snapshot_id"])
    assert start["job"] == complete["job"] and complete["job"]["name"] == "daily_scores"
    assert complete["run"]["facets"]["nominalTime"]["nominalStartTime"] == f"{SCORE_DATE}T00:00:00Z"
    assert start["inputs"] == [] and start["outputs"] == []
    check_complete_matches_manifest(complete, m, runs["snap"], runs["out"])
    assert only(runs["after_ok"]["records"])["lineage_run_id"] == complete["run"]["runId"]


def test_a_run_failing_on_a_bad_file_emits_start_and_fail_naming_the_file(runs):
    events = runs["after_bad"]["events"][2:]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    (failed,) = [r for r in runs["after_bad"]["records"].values() if r["status"] == "failed"]
    assert {e["run"]["runId"] for e in events} == {run_uuid(failed["run_id"])}
    message = events[1]["run"]["facets"]["errorMessage"]["message"]
    assert runs["bad_file"] in message and "cannot be read as Parquet" in message
    assert events[1]["outputs"] == []


class Receiver:
    """A local OpenLineage HTTP endpoint: records every event POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_http_transport_delivers_the_same_pair_to_a_receiver(world, tmp_path, monkeypatch):
    clean_env(monkeypatch)
    receiver = Receiver()
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    out = str(tmp_path / "out")
    try:
        code, _, err = call("run", "--date", END, "--input", world, "--output", out)
    finally:
        receiver.close()
    assert code == 0, err[-3000:]
    assert [p for p, _ in receiver.received] == ["/api/v1/lineage"] * 2
    events = [e for _, e in receiver.received]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    (snap,) = worlds.snapshot_dirs(out)
    m = worlds.manifest(snap)
    assert {e["run"]["runId"] for e in events} == {run_uuid(m["snapshot_id"])}
    check_complete_matches_manifest(events[1], m, snap, out)


class Hanging:
    """Accepts connections and never answers (a lineage receiver that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        for c in self.held:
            c.close()
        self.sock.close()


def test_a_receiver_that_hangs_delays_a_run_by_at_most_the_timeout(runs, world, tmp_path, monkeypatch):
    """Without the bound, the client's own HTTP transport (timeout 5 s, 5 retries)
    blocks ~39 s per event and then raises into the run."""
    out = str(tmp_path / "out")
    shutil.copytree(runs["out"], out)
    clean_env(monkeypatch)
    args = ("run", "--date", END, "--input", world, "--output", out)  # already published: about a second

    started = time.monotonic()
    code, stdout, err = call(*args)
    baseline = time.monotonic() - started
    assert code == 0 and "already published" in stdout + err, err[-2000:]

    hanging = Hanging()
    timeout = 2.0
    monkeypatch.setenv("OPENLINEAGE_URL", hanging.url)
    monkeypatch.setenv("OASIS_LINEAGE_TIMEOUT_S", str(timeout))
    try:
        started = time.monotonic()
        code, stdout, err = call(*args)
        took = time.monotonic() - started
        assert hanging.held  # the receiver was really called
    finally:
        hanging.close()
    assert code == 0 and "already published" in stdout + err, err[-2000:]
    assert timeout <= took, "the run did not wait for the receiver at all"
    assert took - baseline <= timeout + 1.0, (took, baseline)  # START waited `timeout`; COMPLETE was skipped
    newest = max(records(out).values(), key=lambda r: r["finished_at"])
    assert newest["status"] == "already_published"  # the run's own record is written all the same


# ---------------------------------------------------------------- metrics ---
def labels(**kw) -> frozenset:
    return frozenset(kw.items())


def test_the_metrics_of_a_published_run_carry_its_manifests_values(runs):
    g, m = runs["after_ok"]["textfile"], runs["manifest"]
    ok = only(runs["after_ok"]["records"])
    assert g[("oasis_last_run_failed", labels())] == 0
    assert g[("oasis_last_run_status", labels(status="published"))] == 1
    assert g[("oasis_published_score_date_seconds", labels())] == day_seconds(SCORE_DATE)
    finished = dt.datetime.fromisoformat(ok["finished_at"]).timestamp()
    assert g[("oasis_last_success_timestamp_seconds", labels())] == pytest.approx(finished, abs=1e-3)
    assert g[("oasis_rows_read", labels(source="engagement"))] == m["metrics"]["rows_read/engagement"]
    dead = sum(v for k, v in m["metrics"].items() if k.startswith("dead_lettered/engagement/"))
    assert g[("oasis_rows_dead_lettered", labels(source="engagement"))] == dead > 0
    dupes = sum(v for k, v in m["metrics"].items() if k.startswith("duplicates_removed/"))
    assert g[("oasis_repeated_events_dropped", labels())] == dupes
    eligible = m["metrics"]["rows_eligible"]
    assert g[("oasis_eligible_share", labels())] == pytest.approx(
        eligible / (eligible + m["metrics"]["rows_ineligible"]))
    cap = worlds.table(runs["snap"], "capacity")
    assert len(cap) >= 4
    for row in cap.itertuples():
        assert g[("oasis_capacity_used_ratio", labels(market=row.market, surface=row.surface))] == \
            pytest.approx(row.planned_total / row.capacity)
    for gate in m["validation"]:
        assert g[("oasis_gate_passed", labels(gate=gate["name"]))] == (1 if gate["passed"] else 0)
    for phase, seconds in ok["phase_seconds"].items():
        assert g[("oasis_last_run_phase_seconds", labels(phase=phase))] == pytest.approx(seconds)


def test_after_a_failed_run_the_failure_shows_and_the_last_success_stays(runs):
    before, g = runs["after_ok"]["textfile"], runs["after_bad"]["textfile"]
    assert g[("oasis_last_run_failed", labels())] == 1
    assert g[("oasis_last_run_status", labels(status="failed"))] == 1
    for unchanged in ("oasis_last_success_timestamp_seconds", "oasis_published_score_date_seconds"):
        assert g[(unchanged, labels())] == before[(unchanged, labels())]
    assert g[("oasis_last_run_timestamp_seconds", labels())] > before[("oasis_last_run_timestamp_seconds",
                                                                        labels())]
    assert not any(name == "oasis_rows_read" for name, _ in g)  # a failed run reports no rows of its own


@pytest.mark.parametrize("after", ["after_ok", "after_bad"])
def test_the_pushgateway_serves_what_the_text_file_holds(runs, after):
    """After the published run and after the failed one, the real Pushgateway
    serves exactly the samples of the text file (whose values the two tests
    above check), plus its own push_time series."""
    if runs["no_gateway"]:
        pytest.skip(runs["no_gateway"])
    g = runs[after]["gateway"]
    assert {k: v for k, v in g.items() if not k[0].startswith("push_")} == runs[after]["textfile"]
    assert g[("oasis_last_run_failed", labels())] == (1 if after == "after_bad" else 0)
    last_success = ("oasis_last_success_timestamp_seconds", labels())
    assert g[last_success] == runs["after_ok"]["gateway"][last_success]  # unchanged by the failed run


def test_every_metric_the_alert_rules_use_is_exported(runs):
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = set(re.findall(r"\boasis_[a-z_]+\b", json.dumps([(r["expr"], r.get("annotations")) for r in rules])))
    exported = {name for name, _ in runs["after_ok"]["textfile"]}
    assert used and used <= exported, used - exported


# ----------------------------------------------------------------- status ---
def status_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = lines.index("") + 2  # a blank line, then the header
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip()]


def test_status_exits_0_on_a_fresh_publish_and_1_when_late(runs):
    code, stdout, err = runs["after_ok"]["fresh"]
    assert code == 0, err
    m = runs["manifest"]
    assert f"score date {SCORE_DATE}  snapshot {m['snapshot_id']}" in stdout
    assert "last failure: none recorded" in stdout
    code, stdout, err = runs["after_ok"]["late"]
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("oasis status: error: LATEST is late: score date") and "objective of 1 h" in line


def test_status_exits_1_after_a_failed_run_and_its_table_matches_the_records(runs):
    code, stdout, err = runs["after_bad"]["status"]
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "failed" in line and runs["bad_file"] in line
    recs = sorted(runs["after_bad"]["records"].values(), key=lambda r: r["finished_at"], reverse=True)
    rows = status_rows(stdout)
    assert [r[:7] for r in rows] == [[r["run_id"], r["command"], r["logs_date"], r["score_date"], r["status"],
                                      f"{r['seconds']:.1f}", r["snapshot_id"] or "-"] for r in recs]
    assert f"last failure: {recs[0]['run_id']}" in stdout
