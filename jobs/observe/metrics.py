"""Prometheus metrics of the last run, through `prometheus-client`: written in
the text exposition format to `OUT/metrics/oasis.prom` (for a node exporter's
textfile collector) after every run, failed ones included, and pushed to a
Pushgateway when `OASIS_PUSHGATEWAY_URL` is set (grouping key
`job=$OASIS_PUSHGATEWAY_JOB`, default `oasis`; a push replaces the group, so
the gateway serves what the file holds).

Each run builds a fresh registry (never the global one: no process metrics,
nothing left over between runs). The published score date is read from
LATEST and the last success from the run records, so both stay right after a
failed run. Labels hold only table, gate, phase, market and surface names.
A push waits at most `OASIS_PUSHGATEWAY_TIMEOUT_S` seconds (default 5) and
never fails a run.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from collections import defaultdict

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from jobs import layout
from jobs.manifest import Manifest
from jobs.observe.bounded import Breaker
from jobs.observe.records import FAILED, QUARANTINED, STATUSES, RunRecord
from pipelines import storage

log = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "OASIS_PUSHGATEWAY_URL"
PUSHGATEWAY_JOB_ENV = "OASIS_PUSHGATEWAY_JOB"
PUSHGATEWAY_TIMEOUT_ENV = "OASIS_PUSHGATEWAY_TIMEOUT_S"
DEFAULT_PUSH_TIMEOUT_S = 5.0


def day_seconds(day: dt.date) -> float:
    """A date as Unix time at 00:00 UTC (how the score date is exported)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def build(record: RunRecord, *, manifest: Manifest | None = None, capacity: list[tuple[str, str, float]] = (),
          published_score_date: dt.date | None = None, last_success: dt.datetime | None = None,
          failed: bool | None = None) -> CollectorRegistry:
    """The registry of one run. `manifest`: the snapshot the run published or
    found (its rows, gates, eligibility); `capacity`: (market, surface, used
    share); `failed` overrides "the last run failed" (a backfill reports 1 once
    any of its dates failed)."""
    r = CollectorRegistry(auto_describe=True)

    def gauge(name, doc, labels=()):
        return Gauge(name, doc, list(labels), registry=r)

    failed = record.status in (FAILED, QUARANTINED) if failed is None else failed
    gauge("oasis_last_run_failed", "1 when the last run (any date of the last backfill) failed or was quarantined"
          ).set(1 if failed else 0)
    gauge("oasis_last_run_timestamp_seconds", "Unix time the last run ended").set(record.finished_at.timestamp())
    status = gauge("oasis_last_run_status", "1 for the status the last run ended with", ["status"])
    for s in STATUSES:
        status.labels(s).set(1 if s == record.status else 0)
    gauge("oasis_last_run_duration_seconds", "Wall time of the last run").set(record.seconds)
    phases = gauge("oasis_last_run_phase_seconds", "Seconds per phase of the last run", ["phase"])
    for phase, seconds in record.phase_seconds.items():
        phases.labels(phase).set(seconds)
    if last_success is not None:
        gauge("oasis_last_success_timestamp_seconds",
              "Unix time the last successful run ended (published, or found already published)"
              ).set(last_success.timestamp())
    if published_score_date is not None:
        gauge("oasis_published_score_date_seconds",
              "Score date LATEST points to, as Unix time at 00:00 UTC").set(day_seconds(published_score_date))
    if manifest is not None:
        _snapshot_metrics(gauge, manifest, capacity)
    return r


def _snapshot_metrics(gauge, m: Manifest, capacity) -> None:
    read = gauge("oasis_rows_read", "Input rows read by the snapshot's run", ["source"])
    for key, n in m.metrics.items():
        if key.startswith("rows_read/"):
            read.labels(key.split("/", 1)[1]).set(n)
    dead: dict[str, int] = defaultdict(int)
    for key, n in m.metrics.items():
        if key.startswith("dead_lettered/"):
            dead[key.split("/")[1]] += n
    dead_gauge = gauge("oasis_rows_dead_lettered", "Input rows dead-lettered (broke the contract)", ["source"])
    for source, n in sorted(dead.items()):
        dead_gauge.labels(source).set(n)
    gauge("oasis_repeated_events_dropped", "Engagement events dropped as repeats of an event id").set(
        sum(n for k, n in m.metrics.items() if k.startswith("duplicates_removed/")))
    eligible, ineligible = m.metrics.get("rows_eligible", 0), m.metrics.get("rows_ineligible", 0)
    if eligible + ineligible:
        gauge("oasis_eligible_share", "Share of enrolled (track, market, surface) rows that are eligible").set(
            eligible / (eligible + ineligible))
    used = gauge("oasis_capacity_used_ratio", "Planned promoted plays / capacity", ["market", "surface"])
    for market, surface, share in capacity:
        used.labels(market, surface).set(share)
    gates = gauge("oasis_gate_passed", "1 when the gate passed (its own verdict, even if skipped by hand)",
                  ["gate"])
    for g in m.validation:
        gates.labels(g.name).set(1 if g.passed else 0)
    gauge("oasis_snapshot_created_timestamp_seconds", "When the snapshot's run created it").set(
        m.created_at.timestamp())


def push_timeout_s() -> float:
    try:
        value = float(os.environ.get(PUSHGATEWAY_TIMEOUT_ENV, DEFAULT_PUSH_TIMEOUT_S))
    except ValueError:
        return DEFAULT_PUSH_TIMEOUT_S
    return value if value > 0 else DEFAULT_PUSH_TIMEOUT_S


class Exporter:
    """Writes the textfile and pushes; one per process, so a gateway that is
    down costs the process at most one timeout."""

    def __init__(self):
        self.gateway = os.environ.get(PUSHGATEWAY_ENV) or None
        self.job = os.environ.get(PUSHGATEWAY_JOB_ENV) or "oasis"
        self.breaker = Breaker("pushgateway", push_timeout_s())

    def export(self, output_root: str, registry: CollectorRegistry) -> None:
        """Never raises: a metrics problem is logged, the run's outcome stands."""
        try:
            storage.write_bytes(layout.metrics_textfile(output_root), generate_latest(registry))
        except Exception as e:  # noqa: BLE001
            log.warning("could not write %s: %s", layout.metrics_textfile(output_root), e)
        if self.gateway:
            self.breaker.call("push", lambda: push_to_gateway(self.gateway, job=self.job, registry=registry,
                                                              timeout=self.breaker.timeout))
