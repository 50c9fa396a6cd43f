"""Arrow tables cross Beam boundaries with ArrowTableCoder, never pickled."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import coders

from jobs.run.options import RunOptions
from jobs.run.plan import make_plan
from pipelines.beam import pipeline as daily
from pipelines.beam.coders import ArrowTableCoder
from pipelines.config import Config
from tests.support import worlds


def test_round_trip_keeps_schema_values_and_nulls():
    t = pa.table({"a": pa.array([1, None, 3], pa.int64()), "s": ["x", None, "zé"],
                  "d": pa.array([dt.date(2026, 1, 1)] * 3, pa.date32())})
    c = ArrowTableCoder()
    back = c.decode(c.encode(t))
    assert back.schema == t.schema and back.equals(t)
    empty = t.schema.empty_table()
    assert c.decode(c.encode(empty)).equals(empty)


def test_size_estimate_does_not_encode(monkeypatch):
    def boom(*_):
        raise AssertionError("estimating a size must not serialise the table")

    monkeypatch.setattr(ArrowTableCoder, "encode", boom)
    t = pa.table({"a": list(range(1000))})
    impl = coders.TupleCoder([coders.StrUtf8Coder(), ArrowTableCoder()]).get_impl()
    size, _ = impl.get_estimated_size_and_observables(("part", t))
    assert size >= t.nbytes


def test_every_table_collection_of_the_daily_graph_uses_it(tmp_path):
    """Each PCollection whose elements hold a table declares it, so Beam never
    falls back to pickling tables (which it also does to sample sizes)."""
    w = worlds.make_world(str(tmp_path / "w"), days=2, tracks=20, events_per_day=500, markets=1)
    plan, _ = make_plan(worlds.END, w, str(tmp_path / "out"), Config.load(None), RunOptions())
    p = beam.Pipeline()
    daily.build(p, plan)
    labels = {}

    class Visit(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            for tag, pc in node.outputs.items():
                labels[f"{node.full_label}[{tag}]"] = beam.coders.registry.get_coder(pc.element_type)

    p.visit(Visit())

    def uses_arrow(coder):
        return isinstance(coder, ArrowTableCoder) or any(uses_arrow(c) for c in coder._get_component_coders())

    must = [label for label in labels if any(k in label for k in (
        "ReadBatches", "CheckRows", "KeepLatestPerKey", "AggregateShards", "SumTotals", "ReadFiles",
        "KeyEnrollments", "KeyAggregates", "KeyTotals", "ScoreAndAllocate", "SortDeadLetters"))]
    assert len(must) >= 11
    missing = [label for label in must if not uses_arrow(labels[label])]
    assert not missing, missing
