"""The lift stage alone on one day of a bench world, for `make bench`.

    python -m bench.lift WORLD DATE SCRATCH --mode read|lift

`read` runs what the lift shares with the aggregation (read the day's
engagement and exposure files in Arrow batches and check the contract);
`lift` adds the lift stage on top: `BuildLiftFacts` (listener keys, the holdout
checks, the spill by listener shard and the day's facts) and
`MeasureCampaignLift` over those facts with the world's latest enrollments.
The difference between the two, measured by bench/run.py in separate
processes, is the lift stage's cost. Prints a JSON line of what it processed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from jobs import layout
from pipelines import storage
from pipelines.beam.io import ReadInputBatches, WriteParquetParts
from pipelines.beam.lift import BuildLiftFacts, MeasureCampaignLift
from pipelines.beam.pipeline import LIFT_COLUMNS
from pipelines.beam.transforms import AGGREGATE_COLUMNS, CheckContract, LatestEnrollments
from pipelines.config import Config
from pipelines.metrics import counters
from schemas import ENGAGEMENT, ENROLLMENTS, EXPOSURES

SHARDS = 16


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("world")
    ap.add_argument("date", type=dt.date.fromisoformat)
    ap.add_argument("scratch")
    ap.add_argument("--mode", choices=["read", "lift"], required=True)
    args = ap.parse_args(argv)
    cfg, day = Config(), args.date
    shutil.rmtree(args.scratch, ignore_errors=True)
    files = {t: storage.list_files(layout.input_partition(args.world, t, day), ".parquet")
             for t in ("engagement", "exposures", "enrollments")}
    enrolled = sorted({t for f in files["enrollments"]
                       for t in pq.read_table(f, columns=["track_id"]).column("track_id").to_pylist()})
    p = beam.Pipeline(options=PipelineOptions([]))
    plays = (p | "ReadEngagement" >> ReadInputBatches(files["engagement"], ENGAGEMENT, "engagement", 262_144)
             | "CheckEngagement" >> CheckContract("engagement", day, cfg.event_ts_slack_hours,
                                                  keep=AGGREGATE_COLUMNS + LIFT_COLUMNS))
    exposures = (p | "ReadExposures" >> ReadInputBatches(files["exposures"], EXPOSURES, "exposures", 262_144)
                 | "CheckExposures" >> CheckContract("exposures", day, cfg.event_ts_slack_hours))
    if args.mode == "read":
        _ = (plays.good, exposures.good) | beam.Flatten() | beam.Map(lambda kv: kv[1].num_rows)
    else:
        built = ({"plays": plays.good, "exposures": exposures.good}
                 | BuildLiftFacts(day, SHARDS, enrolled, os.path.join(args.scratch, "spill"), cfg.holdout_salt,
                                  cfg.holdout_share))
        uris = {kind: built[kind] | f"Write{kind}" >> WriteParquetParts(os.path.join(args.scratch, kind))
                | f"Uris{kind}" >> beam.Keys() for kind in ("listeners", "exposures")}
        latest = (p | "ReadEnrollments" >> ReadInputBatches(files["enrollments"], ENROLLMENTS, "enrollments",
                                                             262_144)
                  | "CheckEnrollments" >> CheckContract("enrollments", day, 6.0)).good | LatestEnrollments()
        lift = ({**uris, "market_listeners": built["market_listeners"], "enrollments": latest}
                | MeasureCampaignLift(day, cfg, [day], [day], "bench"))
        _ = lift | "WriteLift" >> WriteParquetParts(os.path.join(args.scratch, "campaign_lift"))
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    print(json.dumps({"events": c.get("rows_read/engagement", 0), "exposures": c.get("rows_read/exposures", 0),
                      "listener_fact_rows": _rows(os.path.join(args.scratch, "listeners")),
                      "exposure_fact_rows": _rows(os.path.join(args.scratch, "exposures")),
                      "lift_rows": _rows(os.path.join(args.scratch, "campaign_lift"))}))
    shutil.rmtree(args.scratch, ignore_errors=True)
    return 0


def _rows(folder: str) -> int:
    if not os.path.isdir(folder):
        return 0
    return sum(pq.ParquetFile(os.path.join(folder, f)).metadata.num_rows for f in os.listdir(folder))


if __name__ == "__main__":
    raise SystemExit(main())
