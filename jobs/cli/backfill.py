"""`oasis backfill`: run and publish every logs date of a range, oldest first."""
from __future__ import annotations

import time

from jobs.cli import args as a
from jobs.observe.hook import BackfillWatch
from jobs.run import backfill
from jobs.run.options import RunOptions
from pipelines.errors import OasisError


def register(sub) -> None:
    p = sub.add_parser(
        "backfill", help="run and publish every date of a range (oldest first)",
        description="Run the daily job for every logs date from --start to --end (both inclusive) and "
                    "publish each date's snapshot (score date = logs date + 1); dates already published with "
                    "the same inputs, config, code and method are skipped unless --force. LATEST never moves "
                    "back to an older score date. Arguments not listed here are passed to Apache Beam as "
                    "pipeline options.")
    p.add_argument("--start", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="first logs date (YYYY-MM-DD), inclusive")
    p.add_argument("--end", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="last logs date (YYYY-MM-DD), inclusive")
    a.add_input(p)
    a.add_output(p)
    p.add_argument("--workers", type=a.WORKERS, default=1,
                   help="dates run at once (1-64), each in its own process; warehouse loads and LATEST stay one at "
                        "a time, in date order (default 1: one date after the other, in this process)")
    a.add_config(p)
    a.add_warehouse(p)
    a.add_run_options(p)
    p.set_defaults(func=main, beam=True)


def main(args, beam_args: list[str]) -> int:
    options = RunOptions(method=args.method, skip_gates=tuple(args.skip_gate), force=args.force,
                         republish=args.republish)
    req = backfill.BackfillRequest(start=args.start, end=args.end, input_root=args.input, output_root=args.output,
                                   workers=args.workers, config_path=args.config, warehouse=args.warehouse,
                                   beam_args=beam_args, options=options)
    started = time.monotonic()
    watch = BackfillWatch(args.output, args.warehouse, beam_args)
    try:
        outcomes = backfill.backfill(req, watch=watch)
    finally:
        watch.close()
    print(backfill.summary_table(req, outcomes, time.monotonic() - started), flush=True)
    failed = [o.date.isoformat() for o in outcomes if o.status == "failed"]
    if failed:
        raise OasisError(f"{len(failed)} of {len(outcomes)} date(s) failed ({', '.join(failed)}); "
                         "the table above says why")
    return 0
