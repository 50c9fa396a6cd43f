"""Beam metrics of the daily job: counters in one namespace, and reading a
finished pipeline's counters back (they go into the manifest and the summary)."""
from __future__ import annotations

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "oasis"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def counters(result) -> dict[str, int]:
    """Every counter of a finished pipeline, summed over steps, by name."""
    out = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(out.items()))
